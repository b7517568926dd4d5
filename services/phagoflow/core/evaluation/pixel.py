"""Pixel metrics: the confusion matrix and the one-vs-rest metrics (IoU, ...) drawn from it.

The one home of the pixel confusion matrix and of IoU (Jaccard) in phagoflow: evaluation,
training's validation and the registry gate all count through here. Rows are truth, columns
prediction; formulas are in :mod:`phagoflow.core.evaluation`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from phagoflow.core.evaluation._common import (
    FloatArray,
    IntArray,
    _nanmean,
    _ratio,
    _scalar_ratio,
    _validate_label_pair,
)


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


def confusion_matrix_ignoring(target: ArrayLike, pred: ArrayLike, n_classes: int = 3) -> IntArray:
    """Pixel confusion matrix that skips pixels whose target label is out of range.

    For training targets, where an ignore label (e.g. 255) marks pixels that score nothing.

    Parameters
    ----------
    target : (H, W) ndarray of int
        Target labels; pixels outside ``0..n_classes-1`` are left out.
    pred : (H, W) ndarray of int
        Predicted labels, values ``0..n_classes-1`` (e.g. an argmax over class logits).
    n_classes : int
        Number of classes ``C``.

    Returns
    -------
    (C, C) ndarray of int64
        ``M[i, j]`` = number of kept pixels of target class ``i`` predicted as class ``j``.
    """
    t = np.asarray(target).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    keep = (t >= 0) & (t < n_classes)
    return _confusion(t[keep], p[keep], n_classes)


def class_iou(confusion: ArrayLike) -> FloatArray:
    """Per-class IoU (Jaccard) of a confusion matrix: ``TP / (TP + FP + FN)``.

    Parameters
    ----------
    confusion : (C, C) array_like of int
        Pixel confusion matrix, rows = truth, columns = prediction.

    Returns
    -------
    (C,) ndarray of float64
        IoU per class; ``nan`` for a class neither in the truth nor predicted.

    Examples
    --------
    >>> class_iou([[2, 1], [0, 1]])  # class 0: 2 / (2 + 0 + 1), class 1: 1 / (1 + 1 + 0)
    array([0.66666667, 0.5       ])
    """
    tp, fp, fn, _ = one_vs_rest_counts(confusion)
    return _ratio(tp, tp + fp + fn)


def normalized_confusion(confusion: ArrayLike) -> FloatArray:
    """``(C, C)`` float64: a ``(C, C)`` confusion matrix (rows = truth) over its row sums.

    Each row then says where the true pixels of its class went; the rows of classes absent
    from the truth are ``nan``.

    >>> normalized_confusion([[2, 1], [0, 0]])
    array([[0.66666667, 0.33333333],
           [       nan,        nan]])
    """
    m = np.asarray(confusion)
    return _ratio(m, m.sum(axis=1, keepdims=True))


def one_vs_rest_counts(
    confusion: ArrayLike,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``(TP, FP, FN, TN)`` per class of a ``(C, C)`` confusion matrix, as float64 ``(C,)``.

    ``TP = M[c, c]``, ``FN = sum(M[c, :]) - TP``, ``FP = sum(M[:, c]) - TP``,
    ``TN = N - TP - FN - FP`` with ``N`` the total pixel count.
    """
    m = np.asarray(confusion, dtype=np.float64)
    n = float(m.sum())
    tp = np.diag(m)
    fn = m.sum(axis=1) - tp
    fp = m.sum(axis=0) - tp
    return tp, fp, fn, n - tp - fn - fp


def _confusion(t: NDArray[Any], p: NDArray[Any], n_classes: int) -> IntArray:
    if n_classes * n_classes <= 256:  # labels are validated: uint8 codes cannot overflow
        codes = t.astype(np.uint8).ravel() * np.uint8(n_classes) + p.astype(np.uint8).ravel()
    else:
        codes = t.astype(np.intp).ravel() * n_classes + p.astype(np.intp).ravel()
    counts = np.bincount(codes, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def _pixel_metrics(
    confusion: IntArray,
) -> tuple[dict[str, FloatArray], dict[str, float], dict[str, float]]:
    """Per-class, global and mean pixel metrics of a confusion matrix (module docstring)."""
    n = float(confusion.sum())
    tp, fp, fn, tn = one_vs_rest_counts(confusion)
    per_class: dict[str, FloatArray] = {
        "accuracy": _ratio(tp + tn, np.full_like(tp, n)),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "iou": class_iou(confusion),
    }
    global_: dict[str, float] = {
        "accuracy": _scalar_ratio(tp.sum(), n),
        "precision": _scalar_ratio(tp.sum(), tp.sum() + fp.sum()),
        "recall": _scalar_ratio(tp.sum(), tp.sum() + fn.sum()),
        "specificity": _scalar_ratio(tn.sum(), tn.sum() + fp.sum()),
        "iou": _scalar_ratio(tp.sum(), tp.sum() + fp.sum() + fn.sum()),
    }
    return per_class, global_, {k: _nanmean(v) for k, v in per_class.items()}
