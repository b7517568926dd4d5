"""Private helpers of the evaluation suite: validation, NaN-aware ratios and means."""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
#: Objects are 8-connected components.
_EIGHT_CONNECTED: Final[NDArray[np.bool_]] = np.ones((3, 3), dtype=bool)


def _validate_pair_shapes(truth: ArrayLike, pred: ArrayLike) -> tuple[NDArray[Any], NDArray[Any]]:
    """``truth`` and ``pred`` as arrays of one ``(H, W)`` shape; ``ValueError`` quoting both."""
    t = np.asarray(truth)
    p = np.asarray(pred)
    if t.shape != p.shape:
        raise ValueError(
            f"truth and prediction masks differ in shape: truth {t.shape}, prediction {p.shape}"
        )
    if t.ndim != 2:
        raise ValueError(f"masks must be 2-D (H, W), got shape {t.shape}")
    return t, p


def _validate_label_pair(
    truth: ArrayLike, pred: ArrayLike, n_classes: int
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Return ``truth`` and ``pred`` as ``(H, W)`` integer arrays with labels in ``0..C-1``."""
    t, p = _validate_pair_shapes(truth, pred)
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
    t, p = _validate_pair_shapes(truth, pred)
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
