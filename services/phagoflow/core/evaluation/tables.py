"""Text tables: the paper-style comparison of methods and the per-condition table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np

from phagoflow.core.evaluation.conditions import CONDITION_COLUMNS, ConditionScores
from phagoflow.core.evaluation.config import AGGREGATIONS, BOUNDARY_METRICS, PIXEL_METRICS
from phagoflow.core.evaluation.result import EvaluationResult


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
        *_metric_rows(results, methods, names),
    ]
    for key in results[methods[0]].matlab:
        rows.append(("MATLAB", key, [_fmt(results[m].matlab[key]) for m in methods]))
    for name in names[1:]:
        for label, attr in _BOX_ROWS:
            values = [_fmt(getattr(results[m].boxes[name], attr)) for m in methods]
            rows.append((f"boxes {name}", label, values))
    return _fixed_width(rows, methods)


#: Rows of the box surrogate in :func:`format_table`: label and :class:`BoxStats` attribute.
_BOX_ROWS: Final[tuple[tuple[str, str], ...]] = (
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


def _metric_rows(
    results: Mapping[str, EvaluationResult], methods: list[str], names: tuple[str, ...]
) -> list[tuple[str, str, list[str]]]:
    """Per metric every method has: its aggregations, then one row per class."""
    rows: list[tuple[str, str, list[str]]] = []
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
    return rows


def _fixed_width(rows: list[tuple[str, str, list[str]]], methods: list[str]) -> str:
    """The rows under a ``metric / aggregation / <method>...`` header, columns aligned."""
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
