"""Per-channel robust intensity normalisation, identical at training and inference.

Units: the input is a raw field in camera counts (ADU; 12-bit values stored in uint16, already
multiplied by any ``.flex`` ``Factor``), float32 ``(2, H, W)`` ordered ``[DsRed, pHluorin]``. The
output is dimensionless float32 ``(2, H, W)``: for each channel ``c``

    out_c = (in_c − low_c) / (high_c − low_c)

so ``low_c`` maps to 0 and ``high_c`` to 1, then optionally clipped to ``clip``.

- ``mode="per_image_percentile"`` (default): ``low_c`` / ``high_c`` are the ``low_percentile`` /
  ``high_percentile`` (1 and 99.8) of that channel *in that field*, like the CIP's per-field
  adaptivity: exposure, expression level and bleaching differences between wells and plates are
  absorbed. Puncta are a few per cent of the pixels, so p99.8 sits inside the bright objects;
  values above it are kept (not clipped to 1) up to ``clip[1]`` so the DsRed/pHluorin ratio of the
  brightest objects — what separates phagophores from autolysosomes — survives.
- ``mode="fixed"``: ``low_c`` / ``high_c`` are given in camera counts (``fixed_low``,
  ``fixed_high``), e.g. for plates where a whole field can be empty.

A channel whose range ``high_c − low_c`` is below ``min_range`` counts (a blank or saturated
channel) becomes all zeros instead of amplifying noise. The configuration is written into every
model card, and :func:`normalise` is the only normalisation used by training and inference.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["NormalisationConfig", "normalise"]


class NormalisationConfig(BaseModel):
    """How raw camera counts become network inputs (see module docstring for units).

    Attributes
    ----------
    mode : {'per_image_percentile', 'fixed'}
        Per-field percentiles or fixed per-channel bounds.
    low_percentile, high_percentile : float
        Percentiles (0–100) mapped to 0 and 1 in ``per_image_percentile`` mode.
    fixed_low, fixed_high : tuple of float, optional
        Per-channel bounds in camera counts (one value per channel), required in ``fixed`` mode.
    clip : tuple of float, optional
        ``(min, max)`` applied after scaling (dimensionless); ``None`` disables clipping.
    min_range : float
        Channels whose ``high − low`` is below this many counts are set to 0.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["per_image_percentile", "fixed"] = "per_image_percentile"
    low_percentile: float = Field(default=1.0, ge=0.0, le=100.0)
    high_percentile: float = Field(default=99.8, ge=0.0, le=100.0)
    fixed_low: tuple[float, ...] | None = None
    fixed_high: tuple[float, ...] | None = None
    clip: tuple[float, float] | None = (-1.0, 10.0)
    min_range: float = Field(default=1e-3, ge=0.0)

    @model_validator(mode="after")
    def _check(self) -> NormalisationConfig:
        if self.low_percentile >= self.high_percentile:
            raise ValueError(
                f"low_percentile ({self.low_percentile}) must be < high_percentile "
                f"({self.high_percentile})"
            )
        if self.mode == "fixed":
            if self.fixed_low is None or self.fixed_high is None:
                raise ValueError("mode 'fixed' needs fixed_low and fixed_high (camera counts)")
            if len(self.fixed_low) != len(self.fixed_high):
                raise ValueError(
                    f"fixed_low has {len(self.fixed_low)} values, fixed_high "
                    f"{len(self.fixed_high)}; give one per channel"
                )
        if self.clip is not None and self.clip[0] >= self.clip[1]:
            raise ValueError(f"clip must be (min, max) with min < max, got {self.clip}")
        return self


def normalise(
    image: NDArray[Any], config: NormalisationConfig | None = None
) -> NDArray[np.float32]:
    """Normalise every channel of one field.

    Parameters
    ----------
    image : (C, H, W) ndarray
        Raw field in camera counts (any real dtype; float32 ``(2, H, W)`` ``[DsRed, pHluorin]``
        in practice). Must be finite.
    config : NormalisationConfig, optional
        Defaults to ``NormalisationConfig()`` (per-field p1 → 0, p99.8 → 1, clip to [-1, 10]).

    Returns
    -------
    (C, H, W) float32 ndarray
        Dimensionless intensities; a new array (the input is not modified).
    """
    cfg = config if config is not None else NormalisationConfig()
    img = _validate_image(image, cfg)
    out = np.empty(img.shape, dtype=np.float32)
    for c in range(img.shape[0]):
        if cfg.mode == "fixed":
            assert cfg.fixed_low is not None and cfg.fixed_high is not None
            low, high = float(cfg.fixed_low[c]), float(cfg.fixed_high[c])
        else:
            low, high = (
                float(v) for v in np.percentile(img[c], [cfg.low_percentile, cfg.high_percentile])
            )
        span = high - low
        if span < cfg.min_range:
            out[c] = 0.0
            continue
        np.subtract(img[c], np.float32(low), out=out[c], dtype=np.float32)
        out[c] *= np.float32(1.0 / span)
    if cfg.clip is not None:
        np.clip(out, cfg.clip[0], cfg.clip[1], out=out)
    return out


def _validate_image(image: NDArray[Any], cfg: NormalisationConfig) -> NDArray[np.float32]:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"image must be a non-empty (C, H, W) array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"image must have a real dtype, got {arr.dtype}")
    img = arr.astype(np.float32, copy=False)
    if not np.isfinite(img).all():
        raise ValueError(f"image {arr.shape} contains NaN or inf values")
    if cfg.mode == "fixed":
        assert cfg.fixed_low is not None
        if len(cfg.fixed_low) != img.shape[0]:
            raise ValueError(
                f"fixed bounds have {len(cfg.fixed_low)} channels, image has shape {arr.shape}"
            )
    return img
