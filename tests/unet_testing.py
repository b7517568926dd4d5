"""A random-init U-Net model folder for tests that exercise the CDL path, not its quality."""

from __future__ import annotations

from pathlib import Path

import torch

from phagoflow.core.model_dir import save_model_dir
from phagoflow.core.normalisation import NormalisationConfig
from phagoflow.core.unet import UNet, UNetConfig


def random_unet_dir(path: Path) -> Path:
    """Write a seeded, random-init U-Net (base width 4) model folder at ``path``; returns it."""
    torch.manual_seed(0)
    config = UNetConfig(base_channels=4)
    save_model_dir(path, UNet(config).eval(), config, NormalisationConfig(), name="test-unet")
    return path
