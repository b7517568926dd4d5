"""Evaluation figure: per-class scores and confusion matrices of several methods (Agg backend).

Draws :class:`phagoflow.core.evaluation.EvaluationResult` objects (e.g. ``{"cip": ..., "cdl":
...}``) into one PNG: a row of grouped bar charts (IoU, BF score, precision, recall; one group per
class, one bar per method) above one row-normalised confusion matrix per method.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure

from phagoflow.core.evaluation import EvaluationResult

__all__ = ["BAR_METRICS", "plot_evaluation"]

#: Per-class metrics drawn as bars, with their panel titles.
BAR_METRICS: Mapping[str, str] = {
    "iou": "IoU (Jaccard)",
    "bf": "BF score",
    "precision": "precision",
    "recall": "recall (sensitivity)",
}


def _validate_results(results: Mapping[str, EvaluationResult]) -> tuple[str, ...]:
    """Class names shared by every method; ``ValueError`` when empty or inconsistent."""
    if not results:
        raise ValueError("plot_evaluation needs at least one method")
    methods = list(results)
    names = results[methods[0]].class_names
    for method in methods[1:]:
        if results[method].class_names != names:
            raise ValueError(
                f"methods use different classes: {methods[0]} {names}, "
                f"{method} {results[method].class_names}"
            )
    return names


def plot_evaluation(results: Mapping[str, EvaluationResult], path: Path, *, dpi: int = 120) -> Path:
    """Save the evaluation figure of one or more methods as a PNG.

    Parameters
    ----------
    results : mapping of str to EvaluationResult
        Method name (e.g. ``"cip"``, ``"cdl"``) to its evaluation; all with the same classes.
    path : Path
        Output PNG file; missing parent folders are created.
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``results`` is empty or the methods use different classes.
    """
    names = _validate_results(results)
    width = 3.4 * max(len(BAR_METRICS), len(results))
    fig = Figure(figsize=(width, 7.6), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1, height_ratios=[1.0, 1.25])
    top, bottom = fig.add_subfigure(grid[0]), fig.add_subfigure(grid[1])
    _draw_bars(top, results, names)
    _draw_matrices(bottom, results, names)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    return path


def _draw_bars(
    top: SubFigure, results: Mapping[str, EvaluationResult], names: tuple[str, ...]
) -> None:
    """The top row: one bar chart per :data:`BAR_METRICS` entry, a bar per class and method."""
    methods = list(results)
    n_methods = len(methods)
    colours = [f"C{i % 10}" for i in range(n_methods)]
    x = np.arange(len(names), dtype=float)
    bar_w = 0.8 / n_methods
    bar_axes = top.subplots(1, len(BAR_METRICS), sharey=True, squeeze=False)[0]
    for ax, (metric, title) in zip(bar_axes, BAR_METRICS.items(), strict=True):
        for i, method in enumerate(methods):
            values = np.asarray(results[method].per_class[metric], dtype=float)
            xs = x + (i - (n_methods - 1) / 2) * bar_w
            ax.bar(xs, np.nan_to_num(values), bar_w, color=colours[i], label=method)
            for xi, v in zip(xs, values, strict=True):
                label = "n/a" if math.isnan(v) else f"{v:.2f}"
                ax.text(
                    xi,
                    0.0 if math.isnan(v) else v,
                    label,
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90 if n_methods > 3 else 0,
                )
        ax.set_title(title)
        ax.set_xticks(x, names, rotation=15)
        ax.set_ylim(0.0, 1.12)
        ax.grid(axis="y", alpha=0.3)
    bar_axes[0].set_ylabel("score")
    handles, labels = bar_axes[0].get_legend_handles_labels()
    top.legend(handles, labels, loc="outside upper right", ncols=min(n_methods, 6), fontsize=8)
    top.suptitle("Per-class scores (mean over fields for BF)")


def _draw_matrices(
    bottom: SubFigure, results: Mapping[str, EvaluationResult], names: tuple[str, ...]
) -> None:
    """The bottom row: one confusion matrix per method, centred in a row as wide as the bars."""
    methods = list(results)
    n_methods, n_classes = len(methods), len(names)
    n_slots = max(n_methods, len(BAR_METRICS))
    slots = bottom.subplots(1, n_slots, squeeze=False)[0]
    first = (n_slots - n_methods + 1) // 2
    cm_axes = list(slots[first : first + n_methods])
    for ax in (*slots[:first], *slots[first + n_methods :]):
        ax.axis("off")
    image = None
    for ax, method in zip(cm_axes, methods, strict=True):
        res = results[method]
        norm = res.normalized_confusion
        image = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues", aspect="auto")
        for r in range(n_classes):
            for c in range(n_classes):
                v = norm[r, c]
                text = "n/a" if math.isnan(v) else f"{v:.1%}\n({res.confusion[r, c]:,})"
                colour = "white" if not math.isnan(v) and v > 0.5 else "black"
                ax.text(c, r, text, ha="center", va="center", fontsize=8, color=colour)
        ax.set_xticks(range(n_classes), names, rotation=30, ha="right")
        ax.set_yticks(range(n_classes), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        miou = res.matlab["MeanIoU"]
        fields = "field" if res.n_images == 1 else "fields"
        ax.set_title(f"{method}\nmean IoU {miou:.3f}, {res.n_images} {fields}", fontsize=10)
    if image is not None:
        bottom.colorbar(image, ax=cm_axes, shrink=0.8, label="fraction of true class")
    bottom.suptitle("Confusion matrices, rows normalised by true pixels")
