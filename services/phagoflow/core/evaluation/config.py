"""Options and metric names of the evaluation suite (:class:`EvaluationConfig`)."""

from __future__ import annotations

import math
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from phagoflow.core.classes import CLASS_NAMES

__all__ = [
    "AGGREGATIONS",
    "BOUNDARY_METRICS",
    "CLASS_NAMES",
    "DEFAULT_BF_TOLERANCE_FRACTION",
    "DEFAULT_EXTRA_BF_TOLERANCES_PX",
    "PIXEL_METRICS",
    "EvaluationConfig",
    "bf_metric_name",
    "default_bf_tolerance",
]

#: Per-class pixel metrics computed from the confusion matrix.
PIXEL_METRICS: Final[tuple[str, ...]] = ("accuracy", "precision", "recall", "specificity", "iou")
#: Per-class boundary metrics (MATLAB ``bfscore``), averaged over fields.
BOUNDARY_METRICS: Final[tuple[str, ...]] = ("bf", "bf_precision", "bf_recall")
#: Aggregations over classes (see the module docstring for each formula).
AGGREGATIONS: Final[tuple[str, ...]] = ("global", "mean", "weighted")
#: MATLAB ``bfscore`` default tolerance: 0.75 % of the image diagonal.
DEFAULT_BF_TOLERANCE_FRACTION: Final[float] = 0.0075
#: Further BF tolerances (px) scored by default beside the paper's (metrics ``bf_1px``, ``bf_2px``).
DEFAULT_EXTRA_BF_TOLERANCES_PX: Final[tuple[float, ...]] = (1.0, 2.0)


class EvaluationConfig(BaseModel):
    """Options of the evaluation suite (frozen).

    Attributes
    ----------
    class_names : tuple of str
        Name of each label value, index = label (default background, phagophore, autolysosome).
        Label 0 is background: it gets pixel and boundary metrics but no box surrogate.
    bf_tolerance_px : float or None
        Distance tolerance of the BF score in **pixels**; ``None`` (default) uses MATLAB's
        default, 0.75 % of each field's diagonal (≈ 6.4 px for 512 x 680 fields).
    box_iou_threshold : float
        Minimum box IoU for a predicted object to match a true object (paper: 0.1).
    extra_bf_tolerances_px : tuple of float
        Further BF tolerances in **pixels** (default 1 and 2 px), reported as the metrics
        ``bf_1px``, ``bf_2px`` (:func:`bf_metric_name`) beside the paper's ``bf``: the paper's
        tolerance (≈ 6.4 px) is wider than the objects (2–7 px), so it saturates.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    class_names: tuple[str, ...] = CLASS_NAMES
    bf_tolerance_px: float | None = Field(default=None, ge=0.0)
    box_iou_threshold: float = Field(default=0.1, gt=0.0, le=1.0)
    extra_bf_tolerances_px: tuple[float, ...] = DEFAULT_EXTRA_BF_TOLERANCES_PX

    @field_validator("extra_bf_tolerances_px")
    @classmethod
    def _distinct_non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not (math.isfinite(t) and t >= 0) for t in value) or len(set(value)) != len(value):
            raise ValueError(f"extra_bf_tolerances_px must be distinct values >= 0, got {value!r}")
        names = [bf_metric_name(t) for t in value]
        if len(set(names)) != len(names):
            raise ValueError(f"extra_bf_tolerances_px {value!r} give the same metric names {names}")
        return value

    @property
    def extra_bf_metrics(self) -> tuple[str, ...]:
        """Metric names of :attr:`extra_bf_tolerances_px` (e.g. ``("bf_1px", "bf_2px")``)."""
        return tuple(bf_metric_name(t) for t in self.extra_bf_tolerances_px)

    @field_validator("class_names")
    @classmethod
    def _two_or_more_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < 2 or len(set(value)) != len(value):
            raise ValueError(f"class_names must hold >= 2 unique names, got {value!r}")
        return value

    @property
    def n_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.class_names)


def bf_metric_name(tolerance_px: float) -> str:
    """Metric name of the BF score at a fixed tolerance: ``bf_1px``, ``bf_2px``, ``bf_1.5px``."""
    return f"bf_{tolerance_px:g}px"


def default_bf_tolerance(shape: tuple[int, ...]) -> float:
    """MATLAB ``bfscore`` default tolerance for a field of this shape, in pixels.

    Parameters
    ----------
    shape : (H, W) tuple of int
        Field shape in pixels.

    Returns
    -------
    float
        ``0.0075 * sqrt(H**2 + W**2)`` pixels (6.38 px for a 512 x 680 field).
    """
    return DEFAULT_BF_TOLERANCE_FRACTION * math.hypot(*shape)
