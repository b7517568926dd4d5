"""Run-time settings, read from ``PHAGOFLOW_*`` environment variables.

Every tunable lives here or in a model it nests (CIP parameters), never as a constant buried in
code. Nested values use ``__``: ``PHAGOFLOW_CIP__THRESHOLD_K=5`` sets ``CipParameters.threshold_k``.
Command-line flags override settings; settings override defaults.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from phagoflow.core.cip import CipParameters

__all__ = ["RunSettings"]


class RunSettings(BaseSettings):
    """Settings of the embedded runner (``phagoflow run``).

    Attributes
    ----------
    workers : int
        Worker processes for per-field work (``--workers``).
    model_dir : Path or None
        U-Net model folder for ``cdl``; ``None`` uses the packaged default model.
    inference_backend : {'onnxruntime', 'torch'}
        U-Net backend.
    inference_batch_size : int
        Tiles (256 × 256 px) per forward pass.
    inference_threads : int or None
        Intra-op threads per worker; ``None`` divides the machine's cores among workers.
    overlays : int
        Number of field overlays embedded in ``report.html``.
    cip : CipParameters
        Every CIP parameter (physical ones in µm); recorded in ``run.json``.
    """

    model_config = SettingsConfigDict(
        env_prefix="PHAGOFLOW_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    workers: int = Field(default=1, ge=1, le=64)
    model_dir: Path | None = None
    inference_backend: str = Field(default="onnxruntime", pattern="^(onnxruntime|torch)$")
    inference_batch_size: int = Field(default=8, ge=1, le=256)
    inference_threads: int | None = Field(default=None, ge=1)
    overlays: int = Field(default=4, ge=0, le=48)
    cip: CipParameters = CipParameters()
