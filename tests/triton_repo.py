"""A Triton model repository with several versions of the local CPU model, and promotion.

Each version folder holds the local ``model.py`` (ONNX Runtime in Triton's Python backend) and
its own ``model.onnx`` (the model falls back to the file next to it when
``PHAGOFLOW_MODEL_ONNX`` is unset). :func:`serve_version` promotes the way
``phagoflow model promote --triton-http`` does: ``version_policy`` pinned with the registry's
:func:`~phagoflow.registry.triton.pin_version`, then Triton asked to reload the model.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from phagoflow.registry.cli import notify_triton
from phagoflow.registry.triton import pin_version

ROOT = Path(__file__).resolve().parents[1]
MODEL = "autophagy_unet_cpu"
SOURCE = ROOT / "model_repository" / MODEL


def versioned_repository(dest: Path, models: dict[int, Path], *, serving: int) -> Path:
    """``dest/<MODEL>/<v>/{model.py,model.onnx}`` for each version, serving ``serving``."""
    folder = dest / MODEL
    for version, model_dir in models.items():
        vdir = folder / str(version)
        vdir.mkdir(parents=True)
        shutil.copy(SOURCE / "1" / "model.py", vdir / "model.py")
        shutil.copy(model_dir / "model.onnx", vdir / "model.onnx")
    (folder / "config.pbtxt").write_text(
        pin_version((SOURCE / "config.pbtxt").read_text(), serving)
    )
    return dest


def serve_version(repository: Path, version: int, http_url: str) -> None:
    """Promote ``version``: pin it in ``config.pbtxt`` and make Triton reload (blocking)."""
    config = repository / MODEL / "config.pbtxt"
    config.write_text(pin_version(config.read_text(), version))
    notify_triton(http_url, MODEL)


def wait_unloaded(client: object, version: str, timeout_s: float = 30.0) -> None:
    """Wait until Triton no longer serves ``version`` (it unloads after the new one is ready)."""
    deadline = time.monotonic() + timeout_s
    while client.is_model_ready(MODEL, version):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"version {version} still served"
        time.sleep(0.05)
