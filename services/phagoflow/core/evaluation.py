"""Evaluation of semantic masks against reference masks (Garcia Santa Cruz et al. 2022, Table 1).

Masks are ``(H, W)`` integer arrays of class labels: 0 background, 1 phagophore, 2 autolysosome
(any number of classes ``C >= 2`` is accepted through :class:`EvaluationConfig.class_names`).
All distances are in **pixels**.

The suite follows MATLAB's ``evaluateSemanticSegmentation`` / ``semanticSegmentationMetrics`` and
``bfscore``, which the paper used, and adds the paper's bounding-box detection surrogate:

* a ``C x C`` **confusion matrix** (rows = truth, columns = prediction) summed over fields, so a
  plate is evaluated by adding per-field matrices (:class:`SegmentationScores` is that
  accumulator: ``add`` a field, ``merge`` two accumulators, ``to_dict``/``from_dict``);
* **per-class one-vs-rest pixel metrics** from that matrix, with ``TP = M[c, c]``,
  ``FN = sum(M[c, :]) - TP``, ``FP = sum(M[:, c]) - TP``, ``TN = N - TP - FN - FP``
  (``N`` = all pixels of all fields):

  - ``accuracy    = (TP + TN) / N``  (one-vs-rest; **not** MATLAB's class accuracy, see below)
  - ``precision   = TP / (TP + FP)``
  - ``recall      = TP / (TP + FN)``  (sensitivity; this *is* MATLAB's ``ClassMetrics.Accuracy``)
  - ``specificity = TN / (TN + FP)``
  - ``iou         = TP / (TP + FP + FN)``  (Jaccard)

  A ratio whose denominator is 0 (e.g. precision of a class never predicted) is ``nan``.
* the **boundary F1 (BF) score** per class and field, as MATLAB ``bfscore`` (see
  :func:`bf_score`), averaged over fields;
* **aggregations** of each metric ``m`` over classes, in :attr:`EvaluationResult.aggregate`:

  - ``global``: pooled over all pixels. ``accuracy = trace(M) / N`` (MATLAB ``GlobalAccuracy``);
    the other pixel metrics are micro-averages of the one-vs-rest counts summed over classes —
    ``precision = recall = sum(TP) / N = trace(M) / N``,
    ``specificity = sum(TN) / (sum(TN) + sum(FP))``, ``iou = sum(TP) / (sum(TP + FP + FN))``;
    the BF metrics pool boundary pixels over classes and fields
    (``bf_precision = sum(matched predicted boundary px) / sum(predicted boundary px)``, likewise
    ``bf_recall``; ``bf`` is their harmonic mean).
  - ``mean``: pixel metrics — unweighted mean of the per-class values, skipping ``nan`` classes
    (so ``mean`` of ``recall`` is MATLAB ``MeanAccuracy`` and of ``iou`` MATLAB ``MeanIoU``).
    BF metrics — MATLAB ``MeanBFScore``: per field, the mean over classes (skipping ``nan``
    classes) — that is ``ImageMetrics.MeanBFScore`` — then the mean over fields (skipping ``nan``
    fields). This can differ from the class mean of per-class BF when classes are absent from
    some fields.
  - ``weighted``: ``sum_c w_c m_c / sum_c w_c`` with ``w_c`` = number of *truth* pixels of class
    ``c``, over classes whose ``m_c`` is defined (``weighted`` of ``iou`` is MATLAB
    ``WeightedIoU``; ``weighted`` of ``recall`` equals ``trace(M) / N``).

  :attr:`EvaluationResult.matlab` repeats the five MATLAB ``DataSetMetrics`` under their MATLAB
  names (``GlobalAccuracy``, ``MeanAccuracy``, ``MeanIoU``, ``WeightedIoU``, ``MeanBFScore``).
* the **bounding-box detection surrogate** per foreground class (:func:`match_boxes`): objects
  are 8-connected components, one box each, matched one-to-one at box IoU >= 0.1.

References
----------
.. [1] Garcia Santa Cruz, B., et al. "Generalising from conventional pipelines using deep
   learning in high-throughput screening workflows." Sci Rep 12, 11465 (2022).
   :doi:`10.1038/s41598-022-15623-7`
.. [2] Csurka, G., Larlus, D., Perronnin, F. "What is a good evaluation measure for semantic
   segmentation?" BMVC 2013, 32.1-32.11 (the BF score behind MATLAB ``bfscore``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

__all__ = [
    "AGGREGATIONS",
    "BOUNDARY_METRICS",
    "BOX_LOW_IOU_MAX",
    "CLASS_NAMES",
    "CONDITION_COLUMNS",
    "DEFAULT_BF_TOLERANCE_FRACTION",
    "DEFAULT_EXTRA_BF_TOLERANCES_PX",
    "PIXEL_METRICS",
    "BoxMatch",
    "BoxStats",
    "ConditionScores",
    "CountErrors",
    "EvaluationConfig",
    "EvaluationResult",
    "SegmentationScores",
    "bf_metric_name",
    "bf_score",
    "condition_scores",
    "confusion_matrix",
    "count_errors",
    "default_bf_tolerance",
    "evaluate_masks",
    "format_condition_table",
    "format_table",
    "match_boxes",
]

#: Class names of the phagoflow masks, index = label value.
CLASS_NAMES: Final[tuple[str, ...]] = ("background", "phagophore", "autolysosome")
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
#: Matches with ``threshold <= IoU < BOX_LOW_IOU_MAX`` fall in the paper's "0.1-0.49" bin, the
#: rest (``IoU >= 0.5``) in the "0.5-1" bin.
BOX_LOW_IOU_MAX: Final[float] = 0.5

# Up to this BF tolerance (px) boundary matching probes disk offsets in an image, above it a
# KD-tree is faster (both exact). Measured on a 512 x 680 field, 3 classes: 2.0 vs 5.6 ms at the
# default 6.4 px, 4.1 vs 5.6 ms at 12 px, 7.6 vs 6.0 ms at 18 px.
_MAX_OFFSET_RADIUS: Final[float] = 15.0
# Box pairs are screened in blocks of at most this many (true x predicted) entries.
_PAIR_BLOCK: Final[int] = 1 << 20
# Distances are square roots of integers: compare with a tiny slack so ``d == tolerance`` counts.
_DIST_EPS: Final[float] = 1e-9
_EIGHT_CONNECTED: Final[NDArray[np.bool_]] = np.ones((3, 3), dtype=bool)
_BOUNDARY_FIELDS: Final[int] = 4  # matched_pred, n_pred, matched_true, n_true
_BOX_FIELDS: Final[tuple[str, ...]] = ("n_true", "n_pred", "n_matched", "n_low_iou", "n_high_iou")

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# validation and small numeric helpers
# --------------------------------------------------------------------------------------------


def _validate_label_pair(
    truth: ArrayLike, pred: ArrayLike, n_classes: int
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Return ``truth`` and ``pred`` as ``(H, W)`` integer arrays with labels in ``0..C-1``."""
    t = np.asarray(truth)
    p = np.asarray(pred)
    if t.shape != p.shape:
        raise ValueError(
            f"truth and prediction masks differ in shape: truth {t.shape}, prediction {p.shape}"
        )
    if t.ndim != 2:
        raise ValueError(f"masks must be 2-D (H, W), got shape {t.shape}")
    for name, a in (("truth", t), ("prediction", p)):
        if a.dtype == bool:
            continue
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} mask must hold integer labels, got dtype {a.dtype}")
        if a.size and (int(a.min()) < 0 or int(a.max()) >= n_classes):
            raise ValueError(
                f"{name} mask of shape {a.shape} has labels in [{int(a.min())}, {int(a.max())}],"
                f" expected 0..{n_classes - 1}"
            )
    return t, p


def _validate_binary_pair(
    truth: ArrayLike, pred: ArrayLike
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Return two ``(H, W)`` boolean masks of equal shape."""
    t = np.asarray(truth)
    p = np.asarray(pred)
    if t.shape != p.shape:
        raise ValueError(
            f"truth and prediction masks differ in shape: truth {t.shape}, prediction {p.shape}"
        )
    if t.ndim != 2:
        raise ValueError(f"masks must be 2-D (H, W), got shape {t.shape}")
    return t.astype(bool, copy=False), p.astype(bool, copy=False)


def _ratio(num: ArrayLike, den: ArrayLike) -> FloatArray:
    """Element-wise ``num / den`` as float64, ``nan`` where ``den == 0``."""
    n = np.asarray(num, dtype=np.float64)
    d = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(n, d).shape, np.nan)
    np.divide(n, d, out=out, where=d != 0)
    return out


def _scalar_ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def _harmonic(p: float, r: float) -> float:
    """F1 of precision ``p`` and recall ``r``; ``nan`` if either is ``nan``, 0 if both are 0."""
    if math.isnan(p) or math.isnan(r):
        return math.nan
    return 2.0 * p * r / (p + r) if p + r > 0 else 0.0


def _nanmean(values: ArrayLike) -> float:
    """Mean of the finite entries; ``nan`` when there is none (no RuntimeWarning)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    return float(v[ok].mean()) if ok.any() else math.nan


def _weighted_mean(values: ArrayLike, weights: ArrayLike) -> float:
    """``sum(w * v) / sum(w)`` over entries with finite ``v`` and ``w > 0``; else ``nan``."""
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    ok = np.isfinite(v) & (w > 0)
    return float((w[ok] * v[ok]).sum() / w[ok].sum()) if ok.any() else math.nan


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else float(x)


# --------------------------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------------------------


def confusion_matrix(truth: ArrayLike, pred: ArrayLike, n_classes: int = 3) -> IntArray:
    """Pixel confusion matrix of one field.

    Parameters
    ----------
    truth, pred : (H, W) ndarray of int
        Reference and predicted label masks (values ``0..n_classes-1``).
    n_classes : int
        Number of classes ``C``.

    Returns
    -------
    (C, C) ndarray of int64
        ``M[i, j]`` = number of pixels of true class ``i`` predicted as class ``j``.

    Raises
    ------
    ValueError
        If the shapes differ (both are quoted), masks are not 2-D or labels are out of range.
    """
    t, p = _validate_label_pair(truth, pred, n_classes)
    return _confusion(t, p, n_classes)


def _confusion(t: NDArray[Any], p: NDArray[Any], n_classes: int) -> IntArray:
    if n_classes * n_classes <= 256:  # labels are validated: uint8 codes cannot overflow
        codes = t.astype(np.uint8).ravel() * np.uint8(n_classes) + p.astype(np.uint8).ravel()
    else:
        codes = t.astype(np.intp).ravel() * n_classes + p.astype(np.intp).ravel()
    counts = np.bincount(codes, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


# --------------------------------------------------------------------------------------------
# boundary F1 (BF) score
# --------------------------------------------------------------------------------------------


def _label_edges(labels: NDArray[Any]) -> NDArray[np.bool_]:
    """Pixels with at least one 4-neighbour (inside the image) of a different label."""
    edge = np.zeros(labels.shape, dtype=bool)
    d = labels[1:, :] != labels[:-1, :]
    edge[1:, :] |= d
    edge[:-1, :] |= d
    d = labels[:, 1:] != labels[:, :-1]
    edge[:, 1:] |= d
    edge[:, :-1] |= d
    return edge


def _flat_coords(flat: IntArray, width: int) -> IntArray:
    """``(n, 2)`` row/col coordinates of flat pixel indices."""
    rows, cols = np.divmod(flat, width)
    return np.column_stack((rows, cols))


def _disk_offsets(tolerance: float) -> tuple[IntArray, IntArray]:
    """Non-zero ``(dy, dx)`` with ``dy**2 + dx**2 <= tolerance**2``, nearest first."""
    radius = math.floor(tolerance + _DIST_EPS)
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    d2 = dy * dy + dx * dx
    keep = (d2 > 0) & (np.sqrt(d2) <= tolerance + _DIST_EPS)
    order = np.argsort(d2[keep], kind="stable")
    return dy[keep][order].astype(np.int64), dx[keep][order].astype(np.int64)


def _count_matched(
    src: IntArray,
    dst: IntArray,
    shape: tuple[int, int],
    tolerance: float,
    *,
    method: str = "auto",
) -> int:
    """Number of ``src`` pixels within ``tolerance`` px (Euclidean, ``<=``) of a ``dst`` pixel.

    ``src`` and ``dst`` are sorted, non-empty flat pixel indices into an image of ``shape``.
    Pixels present in both match at once; distinct pixels lie >= 1 px apart, so with
    ``tolerance < 1`` nothing else matches. The remaining pixels are looked up exactly, either
    (``"offsets"``) in a padded boolean image of ``dst`` at every integer offset of the disk of
    radius ``tolerance``, nearest offsets first and dropping pixels once matched — fastest for
    the default tolerance (≈ 130 offsets) — or (``"kdtree"``) in a KD-tree of ``dst``, used by
    ``"auto"`` for large tolerances. A distance transform of the whole field (~12 ms each, six
    per field) was measured slower than both.
    """
    pos = np.minimum(np.searchsorted(dst, src), dst.size - 1)
    same = dst[pos] == src
    n_same = int(np.count_nonzero(same))
    rest = src[~same]
    if rest.size == 0 or tolerance + _DIST_EPS < 1.0:
        return n_same
    height, width = shape
    if method == "auto":
        method = "offsets" if tolerance <= _MAX_OFFSET_RADIUS else "kdtree"
    if method == "kdtree":
        tree = cKDTree(_flat_coords(dst, width), balanced_tree=False, compact_nodes=False)
        d, _ = tree.query(
            _flat_coords(rest, width), k=1, distance_upper_bound=tolerance + _DIST_EPS
        )
        return n_same + int(np.count_nonzero(np.isfinite(d)))
    if method != "offsets":
        raise ValueError(f"unknown method {method!r}")
    dy, dx = _disk_offsets(tolerance)
    pad = int(max(np.abs(dy).max(), np.abs(dx).max()))
    padded_width = width + 2 * pad
    image = np.zeros((height + 2 * pad) * padded_width, dtype=bool)
    rows, cols = np.divmod(dst, width)
    image[(rows + pad) * padded_width + cols + pad] = True
    rows, cols = np.divmod(rest, width)
    todo = (rows + pad) * padded_width + cols + pad
    n = n_same
    for step in dy * padded_width + dx:
        hit = image[todo + step]
        if hit.any():
            n += int(np.count_nonzero(hit))
            todo = todo[~hit]
            if todo.size == 0:
                break
    return n


def _boundary_counts(
    truth_boundary: IntArray, pred_boundary: IntArray, shape: tuple[int, int], tolerance: float
) -> tuple[int, int, int, int]:
    """``(matched_pred, n_pred, matched_true, n_true)`` from sorted flat boundary indices."""
    n_pred, n_true = int(pred_boundary.size), int(truth_boundary.size)
    if n_pred == 0 or n_true == 0:
        return 0, n_pred, 0, n_true
    matched_pred = _count_matched(pred_boundary, truth_boundary, shape, tolerance)
    matched_true = _count_matched(truth_boundary, pred_boundary, shape, tolerance)
    return matched_pred, n_pred, matched_true, n_true


def _class_boundaries(labels: NDArray[Any], n_classes: int) -> list[IntArray]:
    """Sorted flat indices of the boundary pixels of each class (one scan of the image)."""
    flat = np.flatnonzero(_label_edges(labels)).astype(np.int64)
    values = labels.ravel()[flat]
    return [flat[values == c] for c in range(n_classes)]


def _bf_from_counts(
    matched_pred: float, n_pred: float, matched_true: float, n_true: float
) -> tuple[float, float, float]:
    """(precision, recall, F1) of boundary counts with the conventions of :func:`bf_score`."""
    if n_pred == 0 and n_true == 0:
        return math.nan, math.nan, math.nan
    if n_pred == 0 or n_true == 0:
        return 0.0, 0.0, 0.0
    precision = matched_pred / n_pred
    recall = matched_true / n_true
    return precision, recall, _harmonic(precision, recall)


def bf_score(
    truth: ArrayLike, pred: ArrayLike, *, tolerance_px: float | None = None
) -> tuple[float, float, float]:
    """Boundary F1 (BF) contour matching score of one binary region, as MATLAB ``bfscore``.

    The boundary of a region is the set of its pixels with at least one 4-connected neighbour
    outside it (MATLAB ``bwperim`` with its default 4-connectivity); the image frame is **not**
    a boundary, so a region touching the frame is not outlined there. Then, with ``theta`` the
    tolerance::

        precision = #{predicted boundary px within theta of a true boundary px} / #{predicted}
        recall    = #{true boundary px within theta of a predicted boundary px} / #{true}
        BF        = 2 * precision * recall / (precision + recall)   (0 when both are 0)

    "Within" means Euclidean distance ``<= theta`` (so ``theta = 0`` demands coinciding pixels;
    MATLAB compares with ``<``, which differs only when a distance equals ``theta`` exactly, never
    for the default ``theta``).

    Empty boundaries: both empty (region absent from both masks, or covering both completely)
    gives ``(nan, nan, nan)`` — nothing to score, and :class:`SegmentationScores` skips it in
    every mean; exactly one empty (a missed or a spurious region) gives ``(0, 0, 0)``.

    Parameters
    ----------
    truth, pred : (H, W) array_like of bool
        True and predicted region masks (non-zero = inside).
    tolerance_px : float, optional
        Tolerance ``theta`` in **pixels**; default 0.75 % of the image diagonal (MATLAB).

    Returns
    -------
    precision, recall, f1 : float
        In [0, 1], or ``nan`` as described above.

    Raises
    ------
    ValueError
        If the shapes differ (both are quoted) or the masks are not 2-D, or the tolerance < 0.
    """
    t, p = _validate_binary_pair(truth, pred)
    tol = default_bf_tolerance(t.shape) if tolerance_px is None else float(tolerance_px)
    if tol < 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tol}")
    shape = (int(t.shape[0]), int(t.shape[1]))
    counts = _boundary_counts(_class_boundaries(t, 2)[1], _class_boundaries(p, 2)[1], shape, tol)
    return _bf_from_counts(*counts)


# --------------------------------------------------------------------------------------------
# bounding-box detection surrogate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxMatch:
    """One-to-one matching of true and predicted object boxes in one field.

    Attributes
    ----------
    true_boxes, pred_boxes : (T, 4), (P, 4) ndarray of int64
        Boxes ``(row_start, col_start, row_stop, col_stop)`` in pixels, stops exclusive, one per
        8-connected component, in ``scipy.ndimage.label`` order.
    pairs : tuple of (int, int, float)
        Matched ``(true_index, pred_index, box_iou)``, by decreasing IoU.
    iou_threshold : float
        Minimum IoU used for matching.
    """

    true_boxes: IntArray
    pred_boxes: IntArray
    pairs: tuple[tuple[int, int, float], ...]
    iou_threshold: float

    @property
    def n_true(self) -> int:
        """Number of true objects."""
        return int(self.true_boxes.shape[0])

    @property
    def n_pred(self) -> int:
        """Number of predicted objects."""
        return int(self.pred_boxes.shape[0])

    @property
    def n_matched(self) -> int:
        """Number of matched pairs."""
        return len(self.pairs)

    def stats(self) -> BoxStats:
        """Counts of this field as a :class:`BoxStats`."""
        low = sum(1 for *_, iou in self.pairs if iou < BOX_LOW_IOU_MAX)
        return BoxStats(
            n_true=self.n_true,
            n_pred=self.n_pred,
            n_matched=self.n_matched,
            n_low_iou=low,
            n_high_iou=self.n_matched - low,
        )


@dataclass(frozen=True)
class BoxStats:
    """Detection surrogate counts of one class (summable over fields).

    Attributes
    ----------
    n_true, n_pred : int
        True and predicted objects (8-connected components).
    n_matched : int
        One-to-one matches at box IoU >= threshold.
    n_low_iou : int
        Matches with ``threshold <= IoU < 0.5`` (the paper's "0.1-0.49" bin).
    n_high_iou : int
        Matches with ``IoU >= 0.5`` (the paper's "0.5-1" bin).
    """

    n_true: int = 0
    n_pred: int = 0
    n_matched: int = 0
    n_low_iou: int = 0
    n_high_iou: int = 0

    def __add__(self, other: BoxStats) -> BoxStats:
        return BoxStats(*(getattr(self, f) + getattr(other, f) for f in _BOX_FIELDS))

    @property
    def false_positive_ratio(self) -> float:
        """Unmatched predicted / predicted objects (``nan`` if none predicted)."""
        return _scalar_ratio(self.n_pred - self.n_matched, self.n_pred)

    @property
    def false_negative_ratio(self) -> float:
        """Unmatched true / true objects (``nan`` if no true object)."""
        return _scalar_ratio(self.n_true - self.n_matched, self.n_true)

    @property
    def precision(self) -> float:
        """Object precision: matched / predicted."""
        return _scalar_ratio(self.n_matched, self.n_pred)

    @property
    def recall(self) -> float:
        """Object recall: matched / true."""
        return _scalar_ratio(self.n_matched, self.n_true)

    @property
    def f1(self) -> float:
        """Object F1: ``2 * matched / (true + predicted)`` (``nan`` if there is no object)."""
        return _scalar_ratio(2 * self.n_matched, self.n_true + self.n_pred)

    def to_dict(self) -> dict[str, int | float | None]:
        """Counts and ratios as a JSON-serialisable dict (``nan`` -> ``None``)."""
        out: dict[str, int | float | None] = {f: getattr(self, f) for f in _BOX_FIELDS}
        for name in ("false_positive_ratio", "false_negative_ratio", "precision", "recall", "f1"):
            out[name] = _json_float(getattr(self, name))
        return out


def _object_boxes(mask: NDArray[np.bool_]) -> IntArray:
    """``(K, 4)`` boxes of the 8-connected components of ``mask``."""
    labels, _ = ndi.label(mask, structure=_EIGHT_CONNECTED)
    slices = ndi.find_objects(labels)
    boxes = [(r.start, c.start, r.stop, c.stop) for r, c in slices]
    return np.asarray(boxes, dtype=np.int64).reshape(len(boxes), 4)


def _box_iou(a: IntArray, b: IntArray) -> FloatArray:
    """``(len(a), len(b))`` IoU matrix of pixel boxes with exclusive stops."""
    r0 = np.maximum(a[:, None, 0], b[None, :, 0])
    c0 = np.maximum(a[:, None, 1], b[None, :, 1])
    r1 = np.minimum(a[:, None, 2], b[None, :, 2])
    c1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(r1 - r0, 0) * np.maximum(c1 - c0, 0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return _ratio(inter, area_a[:, None] + area_b[None, :] - inter)


def _candidate_pairs(
    true_boxes: IntArray, pred_boxes: IntArray, threshold: float
) -> tuple[IntArray, IntArray, FloatArray]:
    """``(true_index, pred_index, iou)`` of every pair with IoU >= threshold, in blocks."""
    step = max(1, _PAIR_BLOCK // max(len(pred_boxes), 1))
    ts: list[IntArray] = []
    ps: list[IntArray] = []
    vs: list[FloatArray] = []
    for start in range(0, len(true_boxes), step):
        iou = _box_iou(true_boxes[start : start + step], pred_boxes)
        ti, pi = np.nonzero(iou >= threshold)
        ts.append(ti.astype(np.int64) + start)
        ps.append(pi.astype(np.int64))
        vs.append(iou[ti, pi])
    if not ts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(ts), np.concatenate(ps), np.concatenate(vs)


def _greedy_match(
    ti: IntArray, pi: IntArray, values: FloatArray
) -> tuple[tuple[int, int, float], ...]:
    """One-to-one pairs, greedily by decreasing IoU (ties: lower true, then pred index)."""
    used_t: set[int] = set()
    used_p: set[int] = set()
    pairs: list[tuple[int, int, float]] = []
    for k in np.lexsort((pi, ti, -values)):
        t, p = int(ti[k]), int(pi[k])
        if t in used_t or p in used_p:
            continue
        used_t.add(t)
        used_p.add(p)
        pairs.append((t, p, float(values[k])))
    return tuple(pairs)


def match_boxes(truth: ArrayLike, pred: ArrayLike, *, iou_threshold: float = 0.1) -> BoxMatch:
    """Bounding-box detection surrogate for one class of one field (paper, Table 1).

    Objects are the 8-connected components of each binary mask, each reduced to its bounding
    box. Pairs with box IoU ``>= iou_threshold`` are matched one-to-one **greedily by decreasing
    IoU** (ties broken by lower true index, then lower predicted index): the best-overlapping
    pair is accepted first and both boxes leave the pool. Greedy matching, unlike a Hungarian
    assignment maximising the IoU sum, never trades a good match for two mediocre ones.

    Parameters
    ----------
    truth, pred : (H, W) array_like of bool
        True and predicted masks of one class (non-zero = class).
    iou_threshold : float
        Minimum box IoU of a match, in (0, 1]; the paper uses 0.1.

    Returns
    -------
    BoxMatch
        Boxes and matched pairs; :meth:`BoxMatch.stats` gives the counts and ratios.

    Raises
    ------
    ValueError
        If the shapes differ (both are quoted), masks are not 2-D or the threshold is not in
        (0, 1].
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in (0, 1], got {iou_threshold}")
    t, p = _validate_binary_pair(truth, pred)
    tb, pb = _object_boxes(t), _object_boxes(p)
    pairs = _greedy_match(*_candidate_pairs(tb, pb, iou_threshold))
    return BoxMatch(true_boxes=tb, pred_boxes=pb, pairs=pairs, iou_threshold=iou_threshold)


# --------------------------------------------------------------------------------------------
# accumulator
# --------------------------------------------------------------------------------------------


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


def _pixel_metrics(
    confusion: IntArray,
) -> tuple[dict[str, FloatArray], dict[str, float], dict[str, float]]:
    """Per-class, global and mean pixel metrics of a confusion matrix (module docstring)."""
    m = confusion.astype(np.float64)
    n = float(m.sum())
    tp = np.diag(m)
    fn = m.sum(axis=1) - tp
    fp = m.sum(axis=0) - tp
    tn = n - tp - fn - fp
    per_class: dict[str, FloatArray] = {
        "accuracy": _ratio(tp + tn, np.full_like(tp, n)),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "iou": _ratio(tp, tp + fp + fn),
    }
    global_: dict[str, float] = {
        "accuracy": _scalar_ratio(tp.sum(), n),
        "precision": _scalar_ratio(tp.sum(), tp.sum() + fp.sum()),
        "recall": _scalar_ratio(tp.sum(), tp.sum() + fn.sum()),
        "specificity": _scalar_ratio(tn.sum(), tn.sum() + fp.sum()),
        "iou": _scalar_ratio(tp.sum(), tp.sum() + fp.sum() + fn.sum()),
    }
    return per_class, global_, {k: _nanmean(v) for k, v in per_class.items()}


def _boundary_metrics(
    counts: IntArray, names: tuple[str | None, str | None, str | None]
) -> dict[str, tuple[FloatArray, float, float]]:
    """BF precision, recall and F1 from ``(F, C, 4)`` boundary counts.

    Returns ``{name: (per-class mean over fields, MATLAB mean, pooled global)}`` for each of
    the (precision, recall, F1) ``names`` that is not ``None``.
    """
    n_fields, c = counts.shape[0], counts.shape[1]
    prf = np.array(
        [[_bf_from_counts(*row) for row in image] for image in counts.tolist()],
        dtype=np.float64,
    ).reshape(n_fields, c, 3)
    pooled = counts.sum(axis=(0, 1))
    precision = _scalar_ratio(pooled[0], pooled[1])
    recall = _scalar_ratio(pooled[2], pooled[3])
    pooled_values = (precision, recall, _harmonic(precision, recall))
    out: dict[str, tuple[FloatArray, float, float]] = {}
    for j, name in enumerate(names):
        if name is None:
            continue
        per_class = np.array([_nanmean(prf[:, k, j]) for k in range(c)])
        per_image = [_nanmean(prf[i, :, j]) for i in range(n_fields)]
        out[name] = (per_class, _nanmean(per_image), pooled_values[j])
    return out


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


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
        return _ratio(self.confusion, self.confusion.sum(axis=1, keepdims=True))

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


# --------------------------------------------------------------------------------------------
# per-well counts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CountErrors:
    """Per-well count errors per class.

    Attributes
    ----------
    mae : (K,) ndarray of float64
        Mean absolute error ``mean_w |pred - true|`` per count column.
    mre : (K,) ndarray of float64
        Mean relative error ``mean_w |pred - true| / true`` over wells with ``true > 0``
        (``nan`` when there is none).
    n_wells : int
        Wells compared.
    n_relative : (K,) ndarray of int64
        Wells that entered ``mre`` (``true > 0``) per column.
    relative : (W, K) ndarray of float64
        Each well's error relative to its own true count, ``|pred - true| / true`` (``nan``
        where ``true == 0``), wells in the order of the input (sorted names for mappings).
    pooled_relative : (K,) ndarray of float64
        ``sum_w |pred - true| / sum_w true`` (``nan`` when no true object at all): the
        relative error of a typical object, not of a typical well.
    wells : tuple of str
        Well names of ``relative``'s rows (empty for array input).
    """

    mae: FloatArray
    mre: FloatArray
    n_wells: int
    n_relative: IntArray
    relative: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    pooled_relative: FloatArray = field(default_factory=lambda: np.zeros(0))
    wells: tuple[str, ...] = ()

    @property
    def max_relative(self) -> FloatArray:
        """Largest per-well relative error per column (``nan`` if no well has ``true > 0``)."""
        rel = self.relative
        ok = np.isfinite(rel)
        out = np.full(rel.shape[1] if rel.ndim == 2 else 0, np.nan)
        for k in range(out.size):
            if ok[:, k].any():
                out[k] = float(rel[ok[:, k], k].max())
        return out

    def to_dict(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-serialisable dict keyed by column ``names`` (default ``"0"``, ``"1"``, ...)."""
        keys = [str(i) for i in range(len(self.mae))] if names is None else list(names)
        if len(keys) != len(self.mae):
            raise ValueError(f"{len(keys)} names for {len(self.mae)} count columns")

        def per_column(values: FloatArray) -> dict[str, float | None]:
            return {k: _json_float(float(v)) for k, v in zip(keys, values, strict=True)}

        out: dict[str, Any] = {
            "n_wells": self.n_wells,
            "mae": per_column(self.mae),
            "mre": per_column(self.mre),
            "n_relative": {k: int(v) for k, v in zip(keys, self.n_relative, strict=True)},
        }
        if self.pooled_relative.size:
            out["pooled_relative"] = per_column(self.pooled_relative)
            out["max_relative"] = per_column(self.max_relative)
        return out


def _as_count_matrix(
    counts: Mapping[str, Sequence[float]] | ArrayLike, wells: Sequence[str]
) -> FloatArray:
    """``(W, K)`` float table; a mapping is read in the order of ``wells``, 1-D becomes K = 1."""
    if isinstance(counts, Mapping):
        table = np.asarray([counts[w] for w in wells], dtype=np.float64)
    else:
        table = np.asarray(counts, dtype=np.float64)
    return table[:, None] if table.ndim == 1 else table


def count_errors(
    true_counts: Mapping[str, Sequence[float]] | ArrayLike,
    pred_counts: Mapping[str, Sequence[float]] | ArrayLike,
) -> CountErrors:
    """Mean absolute and mean relative error of per-well object counts, per class.

    Parameters
    ----------
    true_counts, pred_counts : mapping of well -> (K,) counts, or (W, K) array_like
        Counts per well and class column (e.g. ``K = 2``: phagophores, autolysosomes). Mappings
        must have the same wells; arrays the same shape.

    Returns
    -------
    CountErrors
        ``mae = mean_w |p - t|``; ``mre = mean_w |p - t| / t`` over wells with ``t > 0`` only
        (a well with no true object has no relative error); every well's relative error
        ``|p - t| / t`` and the pooled ``sum |p - t| / sum t``.

    Raises
    ------
    ValueError
        If the wells or the shapes differ (both shapes quoted), or there is no well.
    """
    wells: list[str] = []
    if isinstance(true_counts, Mapping) or isinstance(pred_counts, Mapping):
        if not (isinstance(true_counts, Mapping) and isinstance(pred_counts, Mapping)):
            raise ValueError("true_counts and pred_counts must both be mappings or both arrays")
        if set(true_counts) != set(pred_counts):
            only_t = sorted(set(true_counts) - set(pred_counts))
            only_p = sorted(set(pred_counts) - set(true_counts))
            raise ValueError(f"wells differ: only in truth {only_t}, only in prediction {only_p}")
        wells = sorted(true_counts)
    t = _as_count_matrix(true_counts, wells)
    p = _as_count_matrix(pred_counts, wells)
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(
            f"count tables must be (wells, classes) of equal shape: truth {t.shape},"
            f" prediction {p.shape}"
        )
    if t.shape[0] == 0:
        raise ValueError(f"no well to compare: truth {t.shape}, prediction {p.shape}")
    abs_err = np.abs(p - t)
    has = t > 0
    rel = np.where(has, abs_err / np.where(has, t, 1.0), 0.0)
    n_rel = has.sum(axis=0)
    return CountErrors(
        mae=abs_err.mean(axis=0),
        mre=_ratio(rel.sum(axis=0), n_rel),
        n_wells=int(t.shape[0]),
        n_relative=n_rel.astype(np.int64),
        relative=np.where(has, rel, np.nan),
        pooled_relative=_ratio(abs_err.sum(axis=0), t.sum(axis=0)),
        wells=tuple(wells),
    )


# --------------------------------------------------------------------------------------------
# table
# --------------------------------------------------------------------------------------------


def _fmt(value: float | int) -> str:
    if isinstance(value, int | np.integer):
        return str(int(value))
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def format_table(results: Mapping[str, EvaluationResult]) -> str:
    """Paper-style text table: one column per method, one row per metric and aggregation.

    Rows: for each metric (accuracy, precision, recall, specificity, IoU, BF, BF precision, BF
    recall, then the extra-tolerance BF scores every method has) the ``global``, ``mean`` and
    ``weighted`` aggregations then one row per class; the
    five MATLAB ``DataSetMetrics``; the box surrogate per foreground class. ``n/a`` marks an
    undefined value.

    Parameters
    ----------
    results : mapping of str to EvaluationResult
        Method name (e.g. ``"cip"``, ``"cdl"``) to its result; all with the same classes.

    Returns
    -------
    str
        Fixed-width table, newline-terminated lines.

    Raises
    ------
    ValueError
        If ``results`` is empty or the methods use different classes.
    """
    if not results:
        raise ValueError("format_table needs at least one method")
    methods = list(results)
    names = results[methods[0]].class_names
    for method in methods:
        if results[method].class_names != names:
            raise ValueError(
                f"methods use different classes: {methods[0]} {names}, "
                f"{method} {results[method].class_names}"
            )

    rows: list[tuple[str, str, list[str]]] = [
        ("fields", "", [str(results[m].n_images) for m in methods]),
        ("pixels", "", [str(results[m].n_pixels) for m in methods]),
    ]
    extra = [
        k for k in results[methods[0]].per_class if k not in (*PIXEL_METRICS, *BOUNDARY_METRICS)
    ]
    for metric in (*PIXEL_METRICS, *BOUNDARY_METRICS, *extra):
        if any(metric not in results[m].per_class for m in methods):
            continue
        for agg in AGGREGATIONS:
            rows.append((metric, agg, [_fmt(results[m].aggregate[metric][agg]) for m in methods]))
        for k, name in enumerate(names):
            rows.append(
                (metric, name, [_fmt(float(results[m].per_class[metric][k])) for m in methods])
            )
    for key in results[methods[0]].matlab:
        rows.append(("MATLAB", key, [_fmt(results[m].matlab[key]) for m in methods]))
    box_rows = (
        ("true objects", "n_true"),
        ("predicted objects", "n_pred"),
        ("matches", "n_matched"),
        ("matches IoU 0.1-0.49", "n_low_iou"),
        ("matches IoU 0.5-1", "n_high_iou"),
        ("false positive ratio", "false_positive_ratio"),
        ("false negative ratio", "false_negative_ratio"),
        ("object precision", "precision"),
        ("object recall", "recall"),
        ("object F1", "f1"),
    )
    for name in names[1:]:
        for label, attr in box_rows:
            rows.append(
                (
                    f"boxes {name}",
                    label,
                    [_fmt(getattr(results[m].boxes[name], attr)) for m in methods],
                )
            )

    w0 = max(len("metric"), *(len(r[0]) for r in rows))
    w1 = max(len("aggregation"), *(len(r[1]) for r in rows))
    wc = [max(len(m), 9, *(len(r[2][i]) for r in rows)) for i, m in enumerate(methods)]
    header = f"{'metric':<{w0}}  {'aggregation':<{w1}}  " + "  ".join(
        f"{m:>{w}}" for m, w in zip(methods, wc, strict=True)
    )
    lines = [header, "-" * len(header)]
    for a, b, vals in rows:
        cells = "  ".join(f"{v:>{w}}" for v, w in zip(vals, wc, strict=True))
        lines.append(f"{a:<{w0}}  {b:<{w1}}  {cells}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# per-condition summary (stress suite)
# --------------------------------------------------------------------------------------------

#: Columns of :func:`format_condition_table`: attribute of :class:`ConditionScores` -> header.
CONDITION_COLUMNS: Final[dict[str, str]] = {
    "f1_merged": "object F1 (classes merged)",
    "f1_phagophore": "object F1 phagophore",
    "f1_autolysosome": "object F1 autolysosome",
    "miou": "mean IoU (3 classes)",
    "iou_merged": "IoU (classes merged)",
    "bf": "BF (0.75 % diagonal)",
    "bf_1px": "BF 1 px",
    "bf_2px": "BF 2 px",
    "count_mre_phagophore": "per-well count error phagophore",
    "count_mre_autolysosome": "per-well count error autolysosome",
    "cpu_s_per_field": "CPU s / field",
}


@dataclass(frozen=True)
class ConditionScores:
    """One method's scores on one stress condition (one cell of the per-condition table).

    Attributes
    ----------
    n_fields, n_true_objects : int
        Fields scored and true objects (8-connected components, classes merged).
    f1_merged : float
        Box-surrogate object F1 with both classes merged into one foreground.
    f1_phagophore, f1_autolysosome : float
        Per-class object F1 (a misclassified object counts as a miss and a false positive).
    miou : float
        3-class mean IoU (the paper's "Mean"); meaningful only for a method that classifies.
    iou_merged : float
        Foreground IoU with the classes merged.
    bf, bf_1px, bf_2px : float
        Mean BF score at the paper's tolerance and at 1 and 2 px (3 classes, MATLAB mean).
    count_mre_phagophore, count_mre_autolysosome : float
        Mean over wells of ``|pred - true| / true`` of the per-well counts (``nan`` without
        counts).
    cpu_s_per_field : float
        CPU seconds per field as measured by the caller (``nan`` when not given).
    """

    n_fields: int
    n_true_objects: int
    f1_merged: float
    f1_phagophore: float
    f1_autolysosome: float
    miou: float
    iou_merged: float
    bf: float
    bf_1px: float
    bf_2px: float
    count_mre_phagophore: float = math.nan
    count_mre_autolysosome: float = math.nan
    cpu_s_per_field: float = math.nan

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-serialisable dict (``nan`` -> ``None``)."""
        out: dict[str, float | int | None] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = value if isinstance(value, int) else _json_float(float(value))
        return out


def _class_counts(mask: NDArray[Any]) -> tuple[int, int]:
    """Phagophores and autolysosomes of a mask: 8-connected components per class."""
    return (
        int(ndi.label(mask == 1, structure=_EIGHT_CONNECTED)[1]),
        int(ndi.label(mask == 2, structure=_EIGHT_CONNECTED)[1]),
    )


def _well_count_errors(
    wells: Sequence[str],
    true_counts: Sequence[tuple[int, int]],
    pred_counts: Sequence[tuple[int, int]],
) -> CountErrors:
    """:func:`count_errors` of per-field counts summed per well."""
    t_w: dict[str, list[float]] = {}
    p_w: dict[str, list[float]] = {}
    for w, tc, pc in zip(wells, true_counts, pred_counts, strict=True):
        t_w[w] = [a + b for a, b in zip(t_w.get(w, [0.0, 0.0]), tc, strict=True)]
        p_w[w] = [a + b for a, b in zip(p_w.get(w, [0.0, 0.0]), pc, strict=True)]
    return count_errors(t_w, p_w)


def condition_scores(
    pairs: Iterable[tuple[ArrayLike, ArrayLike]],
    *,
    wells: Sequence[str] | None = None,
    true_counts: Sequence[tuple[int, int]] | None = None,
    cpu_seconds: float | None = None,
) -> ConditionScores:
    """Score one method on one condition's fields (3-class masks against truth).

    Parameters
    ----------
    pairs : iterable of ((H, W) ndarray, (H, W) ndarray)
        ``(truth, prediction)`` label masks (0, 1, 2) per field.
    wells : sequence of str, optional
        Well of each field; with ``true_counts`` the per-well count errors are computed.
    true_counts : sequence of (int, int), optional
        True (phagophores, autolysosomes) of each field (instance counts). Predicted counts are
        the 8-connected components per class of each predicted mask.
    cpu_seconds : float, optional
        Total CPU seconds the method spent on these fields.

    Returns
    -------
    ConditionScores

    Raises
    ------
    ValueError
        If ``wells`` and ``true_counts`` are not both given or both omitted, or their lengths
        differ from the number of fields.
    """
    if (wells is None) != (true_counts is None):
        raise ValueError("give both wells and true_counts, or neither")
    three = SegmentationScores()
    merged = SegmentationScores(config=EvaluationConfig(class_names=("background", "object")))
    pred_counts: list[tuple[int, int]] = []
    for truth, pred in pairs:
        t, p = np.asarray(truth), np.asarray(pred)
        three.add(t, p)
        merged.add(t > 0, p > 0)
        pred_counts.append(_class_counts(p))
    r3, rm = three.result(), merged.result()
    n = r3.n_images
    mre = np.full(2, np.nan)
    if wells is not None and true_counts is not None:
        if len(wells) != n or len(true_counts) != n:
            raise ValueError(
                f"{n} fields but {len(wells)} wells and {len(true_counts)} true counts"
            )
        mre = _well_count_errors(wells, true_counts, pred_counts).mre
    box = rm.boxes["object"]
    return ConditionScores(
        n_fields=n,
        n_true_objects=box.n_true,
        f1_merged=box.f1,
        f1_phagophore=r3.boxes[CLASS_NAMES[1]].f1,
        f1_autolysosome=r3.boxes[CLASS_NAMES[2]].f1,
        miou=r3.aggregate["iou"]["mean"],
        iou_merged=float(rm.per_class["iou"][1]),
        bf=r3.aggregate["bf"]["mean"],
        bf_1px=r3.aggregate[bf_metric_name(1.0)]["mean"],
        bf_2px=r3.aggregate[bf_metric_name(2.0)]["mean"],
        count_mre_phagophore=float(mre[0]),
        count_mre_autolysosome=float(mre[1]),
        cpu_s_per_field=math.nan if cpu_seconds is None or n == 0 else cpu_seconds / n,
    )


def format_condition_table(
    table: Mapping[str, Mapping[str, ConditionScores]],
    *,
    columns: Sequence[str] = ("f1_merged", "miou", "cpu_s_per_field"),
    digits: int = 3,
) -> str:
    """Markdown table of the stress suite: one row per condition, methods side by side.

    Parameters
    ----------
    table : mapping of condition -> mapping of method -> ConditionScores
        Every condition must list the same methods (in the same order).
    columns : sequence of str
        :class:`ConditionScores` attributes (keys of :data:`CONDITION_COLUMNS`), each shown
        once per method.
    digits : int, default 3
        Decimals; ``nan`` prints as ``n/a``.

    Returns
    -------
    str
        Markdown (header, separator, one line per condition), newline-terminated.

    Raises
    ------
    ValueError
        If the table is empty, a column is unknown or the conditions list different methods.
    """
    if not table:
        raise ValueError("format_condition_table needs at least one condition")
    unknown = [c for c in columns if c not in CONDITION_COLUMNS]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; choose from {list(CONDITION_COLUMNS)}")
    conditions = list(table)
    methods = list(table[conditions[0]])
    for name in conditions:
        if list(table[name]) != methods:
            raise ValueError(
                f"condition {name!r} has methods {list(table[name])}, expected {methods}"
            )
    header = ["condition", *(f"{CONDITION_COLUMNS[c]}: {m}" for c in columns for m in methods)]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for name in conditions:
        cells = []
        for c in columns:
            for m in methods:
                v = float(getattr(table[name][m], c))
                cells.append("n/a" if math.isnan(v) else f"{v:.{digits}f}")
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n"
