"""The metrics of one method over many fields: :class:`EvaluationResult`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from phagoflow.core.evaluation._common import FloatArray, IntArray, _json_float
from phagoflow.core.evaluation.matching import BoxStats
from phagoflow.core.evaluation.pixel import normalized_confusion


@dataclass(frozen=True)
class EvaluationResult:
    """Every metric of one method over a set of fields (one column of the paper's Table 1).

    Attributes
    ----------
    class_names : tuple of str
        Class name per label value.
    n_images : int
        Number of fields evaluated.
    confusion : (C, C) ndarray of int64
        Pixel confusion matrix, rows = truth, columns = prediction.
    per_class : dict of str to (C,) ndarray of float64
        ``accuracy`` (one-vs-rest), ``precision``, ``recall``, ``specificity``, ``iou``, ``bf``,
        ``bf_precision``, ``bf_recall``, then one BF F1 per extra tolerance (``bf_1px``,
        ``bf_2px``); ``nan`` where undefined.
    aggregate : dict of str to dict of str to float
        ``aggregate[metric][aggregation]`` for aggregations ``global``, ``mean``, ``weighted``.
    matlab : dict of str to float
        MATLAB ``DataSetMetrics``: GlobalAccuracy, MeanAccuracy, MeanIoU, WeightedIoU,
        MeanBFScore.
    boxes : dict of str to BoxStats
        Detection surrogate per foreground class name.
    bf_tolerance_px : float or None
        BF tolerance in pixels (``None``: 0.75 % of each field's diagonal).
    box_iou_threshold : float
        Box IoU needed for a match.
    extra_bf_tolerances_px : tuple of float
        Tolerances (px) of the extra BF metrics (``bf_1px``, ...) in ``per_class`` and
        ``aggregate``.
    """

    class_names: tuple[str, ...]
    n_images: int
    confusion: IntArray
    per_class: Mapping[str, FloatArray]
    aggregate: Mapping[str, Mapping[str, float]]
    matlab: Mapping[str, float]
    boxes: Mapping[str, BoxStats]
    bf_tolerance_px: float | None
    box_iou_threshold: float
    extra_bf_tolerances_px: tuple[float, ...] = ()

    @property
    def n_pixels(self) -> int:
        """Total number of pixels evaluated."""
        return int(self.confusion.sum())

    @property
    def normalized_confusion(self) -> FloatArray:
        """Confusion matrix divided by the number of true pixels of each class (row sums).

        Rows of classes absent from the truth are ``nan``.
        """
        return normalized_confusion(self.confusion)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (``nan`` -> ``None``); ``json.dumps`` accepts it."""
        return {
            "class_names": list(self.class_names),
            "n_images": self.n_images,
            "n_pixels": self.n_pixels,
            "bf_tolerance_px": self.bf_tolerance_px,
            "box_iou_threshold": self.box_iou_threshold,
            "extra_bf_tolerances_px": list(self.extra_bf_tolerances_px),
            "confusion": self.confusion.tolist(),
            "normalized_confusion": [
                [_json_float(float(v)) for v in row] for row in self.normalized_confusion
            ],
            "per_class": {
                metric: {
                    name: _json_float(float(v))
                    for name, v in zip(self.class_names, values, strict=True)
                }
                for metric, values in self.per_class.items()
            },
            "aggregate": {
                metric: {agg: _json_float(v) for agg, v in aggs.items()}
                for metric, aggs in self.aggregate.items()
            },
            "matlab": {k: _json_float(v) for k, v in self.matlab.items()},
            "boxes": {name: stats.to_dict() for name, stats in self.boxes.items()},
        }
