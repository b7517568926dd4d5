"""Plate heat-maps and field overlays (matplotlib, Agg backend).

Functions take plain arrays and summaries and return RGB arrays or write PNG files; they never
read plates.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray
from skimage.segmentation import find_boundaries

__all__ = [
    "CLASS_COLOURS",
    "MARK_ALL_FAILED",
    "MARK_NONE",
    "MARK_SOME_FAILED",
    "composite_rgb",
    "overlay_mask",
    "plate_grid",
    "plot_plate_heatmaps",
    "save_overlay_png",
]

#: Outline colours per class (RGB 0–1): phagophore yellow, autolysosome magenta.
CLASS_COLOURS: Mapping[int, tuple[float, float, float]] = {
    1: (1.0, 0.92, 0.0),
    2: (1.0, 0.0, 1.0),
}


#: Heat-map well marks (``marks`` of :func:`plot_plate_heatmaps`): nothing to flag.
MARK_NONE = 0
#: Some fields of the well failed: outlined; the value is the mean of the fields counted.
MARK_SOME_FAILED = 1
#: Every field of the well failed: hatched over grey, no value.
MARK_ALL_FAILED = 2

_MARK_LEGEND = (
    "outlined: some fields failed (value = mean of the fields counted);  "
    "hatched: every field failed;  plain grey: not imaged"
)


def composite_rgb(image: NDArray[Any], *, low: float = 0.5, high: float = 99.8) -> NDArray[Any]:
    """Red/green composite of a Rosella field.

    Parameters
    ----------
    image : (2, H, W) ndarray
        ``[DsRed, pHluorin]`` in camera units.
    low, high : float
        Percentiles (per channel) mapped to 0 and 1.

    Returns
    -------
    (H, W, 3) float32 ndarray in [0, 1]: red = DsRed, green = pHluorin, blue = 0.
    """
    if image.ndim != 3 or image.shape[0] != 2:
        raise ValueError(f"expected a (2, H, W) field, got shape {image.shape}")
    rgb = np.zeros((*image.shape[1:], 3), dtype=np.float32)
    for c in range(2):
        lo, hi = np.percentile(image[c], [low, high])
        rgb[..., c] = np.clip((image[c] - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    return rgb


def overlay_mask(rgb: NDArray[Any], mask: NDArray[Any]) -> NDArray[Any]:
    """Draw class outlines of ``mask`` (uint8 (H, W), 0/1/2) on ``rgb`` ((H, W, 3) in [0, 1])."""
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"rgb {rgb.shape[:2]} and mask {mask.shape} differ in shape")
    out = rgb.copy()
    for cls, colour in CLASS_COLOURS.items():
        edges = find_boundaries(mask == cls, mode="outer")  # type: ignore[no-untyped-call]
        out[edges] = colour
    return out


def save_overlay_png(
    image: NDArray[Any],
    masks: Mapping[str, NDArray[Any]],
    path: Path | None = None,
    *,
    title: str = "",
) -> bytes:
    """Side-by-side panels: the raw composite, then one outlined panel per method.

    Returns the PNG bytes and writes them to ``path`` when given.
    """
    rgb = composite_rgb(image)
    panels = [("DsRed (red) + pHluorin (green)", rgb)]
    panels += [
        (f"{name}: phagophore yellow, autolysosome magenta", overlay_mask(rgb, m))
        for name, m in masks.items()
    ]
    h, w = rgb.shape[:2]
    fig = Figure(figsize=(4.0 * len(panels), 4.0 * h / w + 0.5), dpi=100)
    for i, (label, panel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plate_grid(
    values: Mapping[tuple[int, int], float], plate_rows: int, plate_columns: int
) -> NDArray[Any]:
    """Place per-well values on the plate layout.

    Parameters
    ----------
    values : mapping (row, col) -> float
        1-based row and column.

    Returns
    -------
    (plate_rows, plate_columns) float ndarray, NaN where a well has no value.
    """
    grid = np.full((plate_rows, plate_columns), np.nan)
    for (row, col), value in values.items():
        if 1 <= row <= plate_rows and 1 <= col <= plate_columns:
            grid[row - 1, col - 1] = value
    return grid


def plot_plate_heatmaps(
    panels: Sequence[tuple[str, NDArray[Any]]],
    path: Path | None = None,
    *,
    title: str = "",
    cmaps: Sequence[str] | None = None,
    marks: Sequence[NDArray[Any] | None] | None = None,
) -> bytes:
    """One heat-map panel per (title, grid) on the plate layout; NaN wells drawn grey.

    Rows are labelled A, B, …; columns 1, 2, …; each well shows its value.

    Parameters
    ----------
    panels : sequence of (str, (rows, cols) float ndarray)
        Panel title and values (NaN: no value).
    path : Path, optional
        Where to write the PNG.
    title : str
        Figure title.
    cmaps : sequence of str, optional
        Matplotlib colour map per panel (default viridis).
    marks : sequence of (rows, cols) int ndarray or None, optional
        Per panel, :data:`MARK_NONE`, :data:`MARK_SOME_FAILED` (outlined) or
        :data:`MARK_ALL_FAILED` (hatched) per well; a legend is added when any well is marked.

    Returns
    -------
    bytes
        The PNG.
    """
    n = len(panels)
    ncols = min(n, 2)
    nrows = (n + ncols - 1) // ncols
    fig = Figure(figsize=(6.5 * ncols, 4.2 * nrows + 0.6), dpi=100)
    marked = False
    for i, (label, grid) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        cmap = plt.get_cmap(cmaps[i] if cmaps else "viridis").with_extremes(bad="#dddddd")
        finite = grid[np.isfinite(grid)]
        vmax = float(finite.max()) if finite.size else 1.0
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=max(vmax, 1e-9))  # type: ignore[no-untyped-call]
        rows, cols = grid.shape
        ax.set_xticks(range(cols), [str(c + 1) for c in range(cols)], fontsize=7)
        ax.set_yticks(range(rows), [_row_letter(r + 1) for r in range(rows)], fontsize=7)
        if rows * cols <= 384:
            _annotate(ax, grid, cmap, im.norm)
        panel_marks = marks[i] if marks is not None and i < len(marks) else None
        if panel_marks is not None:
            marked |= _draw_marks(ax, panel_marks)
        ax.set_title(label, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0.0, 0.04 if marked else 0.0, 1.0, 1.0))
    if marked:
        fig.text(0.5, 0.01, _MARK_LEGEND, ha="center", va="bottom", fontsize=8)
    return _save(fig, path)


def _annotate(ax: Any, grid: NDArray[Any], cmap: Any, norm: Any) -> None:
    """Write each finite value in its well, black or white for contrast."""
    for (r, c), v in np.ndenumerate(grid):
        if np.isfinite(v):
            txt = f"{v:.0f}" if abs(v) >= 10 or float(v).is_integer() else f"{v:.2f}"
            rgba = cmap(norm(v))
            luminance = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
            colour = "black" if luminance > 0.55 else "white"
            ax.text(c, r, txt, ha="center", va="center", fontsize=6, color=colour)


def _draw_marks(ax: Any, marks: NDArray[Any]) -> bool:
    """Outline wells with some failed fields, hatch wells with all fields failed."""
    from matplotlib.patches import Rectangle

    drawn = False
    for (r, c), mark in np.ndenumerate(marks):
        corner = (c - 0.42, r - 0.42)
        if mark == MARK_SOME_FAILED:  # black and white, visible on light and dark wells
            ax.add_patch(Rectangle(corner, 0.84, 0.84, fill=False, edgecolor="black", lw=3.0))
            ax.add_patch(Rectangle(corner, 0.84, 0.84, fill=False, edgecolor="white", lw=1.0))
        elif mark == MARK_ALL_FAILED:
            ax.add_patch(
                Rectangle(corner, 0.84, 0.84, fill=False, edgecolor="black", hatch="xxx", lw=1.0)
            )
        else:
            continue
        drawn = True
    return drawn


def _row_letter(row: int) -> str:
    """1 -> 'A', 26 -> 'Z', 27 -> 'AA' (1536-well plates have 32 rows)."""
    letters = ""
    while row > 0:
        row, rem = divmod(row - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters


def _save(fig: Figure, path: Path | None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
