"""Run-time settings, read from ``PHAGOFLOW_*`` environment variables.

Every tunable lives here or in a model it nests (CIP, cell and screening parameters), never as a
constant buried in code. Nested values use ``__``: ``PHAGOFLOW_CIP__THRESHOLD_K=5`` sets
``CipParameters.threshold_k``, ``PHAGOFLOW_SCREENING__HIT_Z=4`` sets ``ScreeningParameters.hit_z``
and ``PHAGOFLOW_CELLS__SPLIT_H_UM=1`` sets ``CellParameters.split_h_um``.
Command-line flags override settings; settings override defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from phagoflow.core.cells import CellParameters
from phagoflow.core.cip import CipParameters
from phagoflow.core.opera.roles import parse_channel_roles, parse_role_override
from phagoflow.core.screening import ScreeningParameters

__all__ = ["CellReadoutSettings", "ChannelRolesSetting", "RunSettings"]


def _channel_roles_value(value: Any) -> dict[str, str]:
    """``PHAGOFLOW_CHANNEL_ROLES``: ``"Alexa 568=dsred,Alexa 488=phluorin"`` or a JSON object."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        value = json.loads(text) if text.startswith("{") else parse_channel_roles([text])
    if not isinstance(value, dict):
        raise ValueError(f"channel roles must be NAME=ROLE items or a JSON object, got {value!r}")
    out = {str(k).strip(): str(v).strip() for k, v in value.items()}
    for role in out.values():
        parse_role_override(role)
    return out


#: A channel-role override setting (``PHAGOFLOW_CHANNEL_ROLES``), the same form as
#: ``--channel-role``: ``NAME=ROLE[,NAME=ROLE]`` (or a JSON object); ROLE is ``dsred``,
#: ``phluorin``, ``both`` or ``none``; NAME a channel name or id.
ChannelRolesSetting = Annotated[dict[str, str], NoDecode, BeforeValidator(_channel_roles_value)]


class CellReadoutSettings(BaseSettings):
    """Cell readouts, shared by ``phagoflow run`` and the segmentation services (cip, inference).

    Both paths measure a field's cells with the same parameters, so a plate gives the same
    per-cell and per-area numbers through the stack as through ``phagoflow run``.

    Attributes
    ----------
    cell_readouts : bool
        Measure each field's cells (nuclei when the plate has a nuclear stain, and the
        cytoplasm area) for the per-cell and per-area readouts; ``PHAGOFLOW_CELL_READOUTS=false``
        leaves those ``wells.csv`` columns empty and saves ~0.1–0.4 s per field.
    cells : CellParameters
        Nuclei and cytoplasm segmentation (µm); recorded in ``run.json``.
    """

    model_config = SettingsConfigDict(
        env_prefix="PHAGOFLOW_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    cell_readouts: bool = True
    cells: CellParameters = CellParameters()

    @property
    def cell_parameters(self) -> CellParameters | None:
        """The cell parameters when cell readouts are on, else ``None``."""
        return self.cells if self.cell_readouts else None


class RunSettings(CellReadoutSettings):
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
    channel_roles : dict of str to str
        Channel-role override used when no ``--channel-role`` is given
        (:data:`ChannelRolesSetting`).
    cell_readouts, cells
        As :class:`CellReadoutSettings`.
    screening : ScreeningParameters
        Plate statistics (hit threshold and direction, hit readout, Z′ threshold, 4PL);
        recorded in ``run.json``.
    """

    workers: int = Field(default=1, ge=1, le=64)
    model_dir: Path | None = None
    inference_backend: str = Field(default="onnxruntime", pattern="^(onnxruntime|torch)$")
    inference_batch_size: int = Field(default=8, ge=1, le=256)
    inference_threads: int | None = Field(default=None, ge=1)
    overlays: int = Field(default=4, ge=0, le=48)
    cip: CipParameters = CipParameters()
    channel_roles: ChannelRolesSetting = Field(default_factory=dict)
    screening: ScreeningParameters = ScreeningParameters()
