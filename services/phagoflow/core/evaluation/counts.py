"""Per-well count errors (MAE and relative error per class): :func:`count_errors`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from phagoflow.core.evaluation._common import FloatArray, IntArray, _json_float, _ratio


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
