"""A random-init U-Net model folder for tests that exercise the CDL path, not its quality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from phagoflow.core.model_dir import save_model_dir
from phagoflow.core.normalisation import NormalisationConfig
from phagoflow.core.unet import UNet, UNetConfig


def random_unet_dir(path: Path, training: dict[str, Any] | None = None) -> Path:
    """Write a seeded, random-init U-Net (base width 4) model folder at ``path``; returns it.

    ``training`` becomes the card's ``training`` section (e.g. ``{"pixel_size_um": 0.2}``).
    """
    torch.manual_seed(0)
    config = UNetConfig(base_channels=4)
    save_model_dir(
        path, UNet(config).eval(), config, NormalisationConfig(), training, name="test-unet"
    )
    return path
