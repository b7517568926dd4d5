"""The field-by-field accumulator :class:`SegmentationScores` and :func:`evaluate_masks`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from phagoflow.core.evaluation._common import IntArray, _validate_label_pair, _weighted_mean
from phagoflow.core.evaluation.boundary import (
    _BOUNDARY_FIELDS,
    _boundary_counts,
    _boundary_metrics,
    _class_boundaries,
)
from phagoflow.core.evaluation.config import (
    BOUNDARY_METRICS,
    CLASS_NAMES,
    DEFAULT_EXTRA_BF_TOLERANCES_PX,
    PIXEL_METRICS,
    EvaluationConfig,
    default_bf_tolerance,
)
from phagoflow.core.evaluation.matching import _BOX_FIELDS, BoxStats, match_boxes
from phagoflow.core.evaluation.pixel import _confusion, _pixel_metrics
from phagoflow.core.evaluation.result import EvaluationResult


@dataclass
class SegmentationScores:
    """Accumulator of everything the evaluation needs, field by field.

    ``add(truth, pred)`` per field; accumulators of different wells, plates or workers combine
    with :meth:`merge` (or ``+``), and travel as JSON through :meth:`to_dict` /
    :meth:`from_dict`. :meth:`result` turns the counts into an :class:`EvaluationResult`.

    Attributes
    ----------
    config : EvaluationConfig
        Class names, BF tolerance and box IoU threshold; must match to merge.
    confusion : (C, C) ndarray of int64
        Summed pixel confusion matrix (rows = truth, columns = prediction).
    boundary_counts : list of (C, 4) ndarray of int64
        Per field and class: matched predicted boundary px, predicted boundary px, matched true
        boundary px, true boundary px.
    box_counts : (C, 5) ndarray of int64
        Per class: true objects, predicted objects, matches, matches with IoU < 0.5, matches with
        IoU >= 0.5 (row 0, background, stays zero).
    extra_boundary_counts : list of (K, C, 4) ndarray of int64
        Per field, the boundary counts at each of the ``K`` tolerances of
        ``config.extra_bf_tolerances_px``.
    """

    config: EvaluationConfig = field(default_factory=EvaluationConfig)
    confusion: IntArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    boundary_counts: list[IntArray] = field(default_factory=list)
    box_counts: IntArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    extra_boundary_counts: list[IntArray] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = self.config.n_classes
        if self.confusion.size == 0:
            self.confusion = np.zeros((c, c), dtype=np.int64)
        if self.box_counts.size == 0:
            self.box_counts = np.zeros((c, len(_BOX_FIELDS)), dtype=np.int64)
        if self.confusion.shape != (c, c) or self.box_counts.shape != (c, len(_BOX_FIELDS)):
            raise ValueError(
                f"confusion {self.confusion.shape} / box_counts {self.box_counts.shape} do not"
                f" fit {c} classes: expected {(c, c)} / {(c, len(_BOX_FIELDS))}"
            )
        for counts in self.boundary_counts:
            if counts.shape != (c, _BOUNDARY_FIELDS):
                raise ValueError(
                    f"boundary counts of shape {counts.shape}, expected {(c, _BOUNDARY_FIELDS)}"
                )
        extra = (len(self.config.extra_bf_tolerances_px), c, _BOUNDARY_FIELDS)
        if len(self.extra_boundary_counts) != len(self.boundary_counts):
            raise ValueError(
                f"{len(self.extra_boundary_counts)} fields of extra boundary counts for"
                f" {len(self.boundary_counts)} fields"
            )
        for counts in self.extra_boundary_counts:
            if counts.shape != extra:
                raise ValueError(f"extra boundary counts of shape {counts.shape}, expected {extra}")

    @property
    def n_images(self) -> int:
        """Number of fields added."""
        return len(self.boundary_counts)

    def add(self, truth: ArrayLike, pred: ArrayLike) -> SegmentationScores:
        """Add one field pair (in place) and return ``self``.

        Parameters
        ----------
        truth, pred : (H, W) array_like of int
            Reference and predicted label masks, values ``0..C-1``.

        Raises
        ------
        ValueError
            If the shapes differ (both are quoted), masks are not 2-D, or labels are out of range.
        """
        n_classes = self.config.n_classes
        t, p = _validate_label_pair(truth, pred, n_classes)
        self.confusion += _confusion(t, p, n_classes)

        tol = self.config.bf_tolerance_px
        tol = default_bf_tolerance(t.shape) if tol is None else tol
        shape = (int(t.shape[0]), int(t.shape[1]))
        t_bounds, p_bounds = _class_boundaries(t, n_classes), _class_boundaries(p, n_classes)
        counts = np.zeros((n_classes, _BOUNDARY_FIELDS), dtype=np.int64)
        extras = self.config.extra_bf_tolerances_px
        extra = np.zeros((len(extras), n_classes, _BOUNDARY_FIELDS), dtype=np.int64)
        for c in range(n_classes):
            counts[c] = _boundary_counts(t_bounds[c], p_bounds[c], shape, tol)
            for k, extra_tol in enumerate(extras):
                extra[k, c] = _boundary_counts(t_bounds[c], p_bounds[c], shape, extra_tol)
            if c > 0:
                threshold = self.config.box_iou_threshold
                stats = match_boxes(t == c, p == c, iou_threshold=threshold).stats()
                self.box_counts[c] += [getattr(stats, f) for f in _BOX_FIELDS]
        self.boundary_counts.append(counts)
        self.extra_boundary_counts.append(extra)
        return self

    def merge(self, other: SegmentationScores) -> SegmentationScores:
        """A new accumulator holding both (fields of ``self`` first).

        Raises
        ------
        ValueError
            If the two configurations differ.
        """
        if other.config != self.config:
            raise ValueError(
                f"cannot merge evaluations with different configs: {self.config!r} vs"
                f" {other.config!r}"
            )
        return SegmentationScores(
            config=self.config,
            confusion=self.confusion + other.confusion,
            boundary_counts=[*self.boundary_counts, *other.boundary_counts],
            box_counts=self.box_counts + other.box_counts,
            extra_boundary_counts=[*self.extra_boundary_counts, *other.extra_boundary_counts],
        )

    def __add__(self, other: SegmentationScores) -> SegmentationScores:
        return self.merge(other)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (integers only); inverse of :meth:`from_dict`."""
        return {
            "config": self.config.model_dump(mode="json"),
            "confusion": self.confusion.tolist(),
            "boundary_counts": [c.tolist() for c in self.boundary_counts],
            "box_counts": self.box_counts.tolist(),
            "extra_boundary_counts": [c.tolist() for c in self.extra_boundary_counts],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentationScores:
        """Rebuild an accumulator written by :meth:`to_dict`.

        A dict written before the extra BF tolerances existed (no ``extra_boundary_counts``)
        is restored with no extra tolerances.
        """
        config = EvaluationConfig.model_validate(data["config"])
        c = config.n_classes
        if "extra_boundary_counts" not in data:
            config = config.model_copy(update={"extra_bf_tolerances_px": ()})
        shape = (len(config.extra_bf_tolerances_px), c, _BOUNDARY_FIELDS)
        extra = data.get("extra_boundary_counts", [[] for _ in data["boundary_counts"]])
        return cls(
            config=config,
            confusion=np.asarray(data["confusion"], dtype=np.int64),
            boundary_counts=[np.asarray(b, dtype=np.int64) for b in data["boundary_counts"]],
            box_counts=np.asarray(data["box_counts"], dtype=np.int64),
            extra_boundary_counts=[np.asarray(e, dtype=np.int64).reshape(shape) for e in extra],
        )

    def result(self) -> EvaluationResult:
        """Compute every metric from the accumulated counts (see the module docstring)."""
        names = self.config.class_names
        c = len(names)
        per_class, global_, mean = _pixel_metrics(self.confusion)
        support = self.confusion.astype(np.float64).sum(axis=1)
        # boundary metrics: per field and class (nan = nothing to score), then averages
        bc = _stack_counts(self.boundary_counts, (c, _BOUNDARY_FIELDS))
        for name, values in _boundary_metrics(bc, ("bf_precision", "bf_recall", "bf")).items():
            per_class[name], mean[name], global_[name] = values
        extra_names = self.config.extra_bf_metrics
        ebc = _stack_counts(self.extra_boundary_counts, (len(extra_names), c, _BOUNDARY_FIELDS))
        for k, metric in enumerate(extra_names):
            values = _boundary_metrics(ebc[:, k], (None, None, metric))[metric]
            per_class[metric], mean[metric], global_[metric] = values

        metrics = (*PIXEL_METRICS, *BOUNDARY_METRICS, *extra_names)
        aggregate = {
            k: {
                "global": global_[k],
                "mean": mean[k],
                "weighted": _weighted_mean(per_class[k], support),
            }
            for k in metrics
        }
        matlab = {
            "GlobalAccuracy": global_["accuracy"],
            "MeanAccuracy": mean["recall"],
            "MeanIoU": mean["iou"],
            "WeightedIoU": aggregate["iou"]["weighted"],
            "MeanBFScore": mean["bf"],
        }
        boxes = {names[k]: BoxStats(*(int(v) for v in self.box_counts[k])) for k in range(1, c)}
        return EvaluationResult(
            class_names=names,
            n_images=self.n_images,
            confusion=self.confusion.copy(),
            per_class={k: per_class[k] for k in metrics},
            aggregate=aggregate,
            matlab=matlab,
            boxes=boxes,
            bf_tolerance_px=self.config.bf_tolerance_px,
            box_iou_threshold=self.config.box_iou_threshold,
            extra_bf_tolerances_px=self.config.extra_bf_tolerances_px,
        )


def _stack_counts(counts: Sequence[IntArray], shape: tuple[int, ...]) -> IntArray:
    """``(F, *shape)`` stack of per-field counts (``F = 0`` when there is none)."""
    return np.stack(counts) if counts else np.zeros((0, *shape), dtype=np.int64)


def evaluate_masks(
    pairs: Iterable[tuple[ArrayLike, ArrayLike]],
    *,
    bf_tolerance: float | None = None,
    box_iou_threshold: float = 0.1,
    class_names: Sequence[str] = CLASS_NAMES,
    extra_bf_tolerances: Sequence[float] = DEFAULT_EXTRA_BF_TOLERANCES_PX,
) -> EvaluationResult:
    """Evaluate predicted masks against reference masks over many fields.

    Parameters
    ----------
    pairs : iterable of ((H, W) ndarray, (H, W) ndarray)
        ``(truth, prediction)`` label masks per field (values ``0..C-1``); fields may differ in
        size.
    bf_tolerance : float, optional
        BF distance tolerance in **pixels**; default 0.75 % of each field's diagonal (MATLAB).
    box_iou_threshold : float
        Box IoU needed for an object match (paper: 0.1).
    class_names : sequence of str
        Name per label value; default background, phagophore, autolysosome.
    extra_bf_tolerances : sequence of float
        Further BF tolerances in **pixels** (default 1 and 2), metrics ``bf_1px``, ``bf_2px``.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    ValueError
        On a shape mismatch within a pair (both shapes quoted), non-2-D masks or labels out of
        range.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((8, 8), np.uint8); t[2:5, 2:5] = 1
    >>> r = evaluate_masks([(t, t)])
    >>> r.matlab["GlobalAccuracy"], r.boxes["phagophore"].n_matched
    (1.0, 1)
    """
    config = EvaluationConfig(
        class_names=tuple(class_names),
        bf_tolerance_px=bf_tolerance,
        box_iou_threshold=box_iou_threshold,
        extra_bf_tolerances_px=tuple(float(t) for t in extra_bf_tolerances),
    )
    scores = SegmentationScores(config=config)
    for truth, pred in pairs:
        scores.add(truth, pred)
    return scores.result()
