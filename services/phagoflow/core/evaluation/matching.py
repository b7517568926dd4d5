"""Object matching: the bounding-box detection surrogate of the paper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi

from phagoflow.core.evaluation._common import (
    _EIGHT_CONNECTED,
    FloatArray,
    IntArray,
    _json_float,
    _ratio,
    _scalar_ratio,
    _validate_binary_pair,
)

#: Matches with ``threshold <= IoU < BOX_LOW_IOU_MAX`` fall in the paper's "0.1-0.49" bin, the
#: rest (``IoU >= 0.5``) in the "0.5-1" bin.
BOX_LOW_IOU_MAX: Final[float] = 0.5
# Box pairs are screened in blocks of at most this many (true x predicted) entries.
_PAIR_BLOCK: Final[int] = 1 << 20
_BOX_FIELDS: Final[tuple[str, ...]] = ("n_true", "n_pred", "n_matched", "n_low_iou", "n_high_iou")


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
