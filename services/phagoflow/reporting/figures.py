"""Plate heat-maps and field overlays (matplotlib, Agg backend).

Functions take plain arrays and summaries and return RGB arrays or write PNG files; they never
read plates.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from phagoflow.core.classes import OBJECT_CLASSES, OUTLINE_COLOUR_NAMES, OUTLINE_COLOURS
from phagoflow.core.wells import row_letter

__all__ = [
    "CLASS_COLOURS",
    "CLASS_COLOUR_NAMES",
    "MARK_ALL_FAILED",
    "MARK_NONE",
    "MARK_SOME_FAILED",
    "PlatePanel",
    "composite_rgb",
    "outlined_crop",
    "overlay_mask",
    "plate_grid",
    "plot_plate_heatmaps",
    "save_crop_png",
    "save_overlay_png",
    "scale_bar_um",
]

#: Outline colours per class (RGB 0–1; :data:`phagoflow.core.classes.OUTLINE_COLOURS`), chosen to
#: stand out on the red/green composite: phagophores light blue, autolysosomes white. In crops each
#: outline also gets a black edge, so it reads on bright and dark pixels alike.
CLASS_COLOURS: Mapping[int, tuple[float, float, float]] = OUTLINE_COLOURS
#: The same colours in words, for legends.
CLASS_COLOUR_NAMES: Mapping[int, str] = OUTLINE_COLOUR_NAMES


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


def overlay_mask(
    rgb: NDArray[Any], mask: NDArray[Any], *, edge: bool = False, width: int = 1
) -> NDArray[Any]:
    """Draw class outlines of ``mask`` (uint8 (H, W), 0/1/2) on ``rgb`` ((H, W, 3) in [0, 1]).

    The outline is the ring of pixels just outside each object (the object's own pixels stay
    visible), ``width`` pixels wide, in :data:`CLASS_COLOURS`; ``edge=True`` adds a black ring
    outside it.
    """
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"rgb {rgb.shape[:2]} and mask {mask.shape} differ in shape")
    if width < 1:
        raise ValueError(f"outline width must be >= 1 pixel, got {width}")
    out = rgb.copy()
    for cls, colour in CLASS_COLOURS.items():
        inside = mask == cls
        edges = find_boundaries(inside, mode="outer")  # type: ignore[no-untyped-call]
        if width > 1:
            edges = ndi.binary_dilation(inside, np.ones((3, 3), bool), iterations=width) & ~inside
        if edge:
            halo = ndi.binary_dilation(edges | inside, np.ones((3, 3), bool)) & ~edges & ~inside
            out[halo & (mask == 0)] = 0.0
        out[edges] = colour
    return out


def scale_bar_um(width_px: int, pixel_size_um: float) -> float:
    """A round scale-bar length (µm) of about a quarter of an image ``width_px`` wide."""
    target = width_px * pixel_size_um / 4
    for length in (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0):
        if length >= target * 0.6:
            return length
    return 1000.0


def outlined_crop(
    image: NDArray[Any],
    mask: NDArray[Any] | None,
    box: tuple[int, int, int, int],
    *,
    zoom: int = 4,
) -> NDArray[Any]:
    """A crop of the composite at full resolution, magnified ``zoom`` times, with outlines.

    Parameters
    ----------
    image : (2, H, W) ndarray
        ``[DsRed, pHluorin]``; the contrast is set on the whole field, so crops of one field
        compare.
    mask : (H, W) uint8 ndarray or None
        Class mask to outline (``None``: the composite alone).
    box : (y0, x0, y1, x1)
        Crop in field pixels (half-open).
    zoom : int
        Display pixels per field pixel (nearest neighbour: no pixel is invented).

    Returns
    -------
    (zoom·(y1−y0), zoom·(x1−x0), 3) float32 ndarray in [0, 1]
    """
    y0, x0, y1, x1 = box
    rgb = composite_rgb(image)[y0:y1, x0:x1]
    big = np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
    if mask is None:
        return big
    crop = np.repeat(np.repeat(mask[y0:y1, x0:x1], zoom, axis=0), zoom, axis=1)
    # half a field pixel wide: thick enough to read on the bright composite, thin enough to
    # leave the neighbouring pixels visible
    return overlay_mask(big, crop, edge=True, width=max(1, zoom // 2))


def save_crop_png(
    panels: Sequence[tuple[str, NDArray[Any]]],
    *,
    pixel_size_um: float,
    zoom: int,
    target: tuple[int, int, int, int] | None = None,
    path: Path | None = None,
) -> bytes:
    """Crops side by side, each titled, at exactly one display pixel per array pixel, with a
    scale bar (µm) in the first; returns the PNG bytes.

    ``target`` ``(y0, x0, y1, x1)``, in crop pixels before the zoom, is framed by a dashed
    box in every panel: the object the crop is about.
    """
    h, w = panels[0][1].shape[:2]
    dpi = 100
    gap, top = 8, 22
    width = len(panels) * w + (len(panels) - 1) * gap
    fig = Figure(figsize=(width / dpi, (h + top) / dpi), dpi=dpi)
    for i, (label, rgb) in enumerate(panels):
        left = i * (w + gap) / width
        ax = fig.add_axes((left, 0.0, w / width, h / (h + top)))
        ax.imshow(rgb, interpolation="nearest")
        ax.set_axis_off()
        if target is not None:
            _frame(ax, target, zoom)
        fig.text(left, 1 - 4 / (h + top), label, fontsize=9, va="top", ha="left")
        if i == 0:
            _scale_bar(ax, w, h, pixel_size_um / zoom)
    return _save(fig, path)


def _frame(ax: Any, target: tuple[int, int, int, int], zoom: int) -> None:
    """A dashed black-and-white box 3 field pixels outside ``target``."""
    from matplotlib.patches import Rectangle

    y0, x0, y1, x1 = target
    pad = 3
    xy = ((x0 - pad) * zoom - 0.5, (y0 - pad) * zoom - 0.5)
    w, h = (x1 - x0 + 2 * pad) * zoom, (y1 - y0 + 2 * pad) * zoom
    ax.add_patch(Rectangle(xy, w, h, fill=False, edgecolor="black", lw=2.0))
    ax.add_patch(Rectangle(xy, w, h, fill=False, edgecolor="white", lw=1.0, ls=(0, (4, 3))))


def _scale_bar(ax: Any, w: int, h: int, um_per_display_px: float) -> None:
    length_um = scale_bar_um(w, um_per_display_px)
    px = length_um / um_per_display_px
    x0, y = w - px - 10, h - 12
    ax.plot([x0, x0 + px], [y, y], color="black", lw=6, solid_capstyle="butt")
    ax.plot([x0, x0 + px], [y, y], color="white", lw=3, solid_capstyle="butt")
    label = f"{length_um:g} µm"
    ax.text(
        x0 + px / 2,
        y - 6,
        label,
        color="white",
        fontsize=8,
        ha="center",
        va="bottom",
        bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "lw": 0},
    )


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
    legend = ", ".join(f"{c.label} {c.style.outline_colour_name}" for c in OBJECT_CLASSES)
    panels = [("DsRed (red) + pHluorin (green)", rgb)]
    panels += [(f"{name}: {legend}", overlay_mask(rgb, m)) for name, m in masks.items()]
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


@dataclass(frozen=True)
class PlatePanel:
    """One panel of :func:`plot_plate_heatmaps`: a value per well on the plate layout.

    Attributes
    ----------
    title : str
        Panel title (words, not column names).
    values : (rows, cols) float ndarray
        NaN: no value (drawn grey).
    cmap : str
        Matplotlib colour map.
    unit : str
        Colour-bar label: what one unit of colour is (e.g. ``"phagophores / cell"``).
    vmin, vmax : float, optional
        Colour scale; default 0 and the panel's largest value. Panels of one readout share
        theirs (set by the caller), so equal colours mean equal values across methods.
    marks : (rows, cols) int ndarray, optional
        :data:`MARK_NONE`, :data:`MARK_SOME_FAILED` (outlined) or :data:`MARK_ALL_FAILED`
        (hatched) per well.
    rings : (rows, cols) bool ndarray, optional
        Wells to ring (e.g. hits).
    centred : bool
        Diverging scale centred on 0 (``vmin = −vmax``), e.g. robust z.
    """

    title: str
    values: NDArray[Any]
    cmap: str = "viridis"
    unit: str = ""
    vmin: float | None = None
    vmax: float | None = None
    marks: NDArray[Any] | None = None
    rings: NDArray[Any] | None = None
    centred: bool = False


def plot_plate_heatmaps(
    panels: Sequence[PlatePanel | tuple[str, NDArray[Any]] | None],
    path: Path | None = None,
    *,
    title: str = "",
    ncols: int = 2,
    cmaps: Sequence[str] | None = None,
    marks: Sequence[NDArray[Any] | None] | None = None,
    legend: str = "",
) -> bytes:
    """Heat-map panels on the plate layout, ``ncols`` per row; NaN wells drawn grey.

    Rows are labelled A, B, …; columns 1, 2, …; each well shows its value; each colour bar is
    labelled with the panel's unit.

    Parameters
    ----------
    panels : sequence of PlatePanel, (title, grid) or None
        Panels in reading order; ``None`` leaves an empty slot (to keep a row per readout).
    path : Path, optional
        Where to write the PNG.
    title : str
        Figure title.
    ncols : int
        Panels per row.
    cmaps, marks : sequence, optional
        Colour map and marks per panel, for panels given as ``(title, grid)``.
    legend : str
        A line of text under the panels (added to the failed-wells legend when any well is
        marked).

    Returns
    -------
    bytes
        The PNG.
    """
    specs = [_as_panel(p, i, cmaps, marks) for i, p in enumerate(panels)]
    marked = any(p is not None and p.marks is not None and bool(p.marks.any()) for p in specs)
    lines = [_MARK_LEGEND] if marked else []
    lines += [legend] if legend else []
    shape = next((p.values.shape for p in specs if p is not None), (8, 12))
    box = _PanelBox.for_plate(*shape)
    ncols = max(1, min(ncols, len(specs) or 1))
    nrows = max(1, (len(specs) + ncols - 1) // ncols)
    head, foot = (0.45 if title else 0.1), 0.22 * len(lines) + 0.08
    width, height = box.width * ncols, head + box.height * nrows + foot
    fig = Figure(figsize=(width, height), dpi=100)
    for i, spec in enumerate(specs):
        if spec is not None:
            r, c = divmod(i, ncols)
            ax, cax = box.axes(fig, c * box.width, height - head - (r + 1) * box.height)
            _draw_panel(fig, ax, cax, spec, annotate=box.well_in >= 0.25)
    if title:
        fig.text(0.5, 1 - 0.12 / height, title, ha="center", va="top", fontsize=11)
    for k, line in enumerate(reversed(lines)):
        fig.text(0.5, (0.06 + 0.22 * k) / height, line, ha="center", va="bottom", fontsize=8)
    return _save(fig, path)


@dataclass(frozen=True)
class _PanelBox:
    """Fixed panel geometry in inches (no layout engine: it cost seconds per figure)."""

    rows: int
    cols: int
    well_in: float
    left: float = 0.4
    gap: float = 0.12
    bar: float = 0.14
    right: float = 0.9
    top: float = 0.34
    bottom: float = 0.3

    @classmethod
    def for_plate(cls, rows: int, cols: int) -> _PanelBox:
        return cls(rows, cols, min(0.34, max(0.17, 4.1 / cols)))

    @property
    def width(self) -> float:
        return self.left + self.well_in * self.cols + self.gap + self.bar + self.right

    @property
    def height(self) -> float:
        return self.top + self.well_in * self.rows + self.bottom

    def axes(self, fig: Figure, x: float, y: float) -> tuple[Any, Any]:
        """Plate axes and colour-bar axes of the panel whose lower-left corner is (x, y)."""
        fw, fh = fig.get_figwidth(), fig.get_figheight()
        mw, mh = self.well_in * self.cols, self.well_in * self.rows
        x0, y0 = x + self.left, y + self.bottom
        ax = fig.add_axes((x0 / fw, y0 / fh, mw / fw, mh / fh))
        cax = fig.add_axes(((x0 + mw + self.gap) / fw, y0 / fh, self.bar / fw, mh / fh))
        return ax, cax


def _as_panel(
    panel: PlatePanel | tuple[str, NDArray[Any]] | None,
    i: int,
    cmaps: Sequence[str] | None,
    marks: Sequence[NDArray[Any] | None] | None,
) -> PlatePanel | None:
    if panel is None or isinstance(panel, PlatePanel):
        return panel
    label, grid = panel
    return PlatePanel(
        label,
        grid,
        cmap=cmaps[i] if cmaps else "viridis",
        marks=marks[i] if marks is not None and i < len(marks) else None,
    )


def _draw_panel(fig: Figure, ax: Any, cax: Any, spec: PlatePanel, *, annotate: bool) -> None:
    """One panel: colours, values, failed-well marks, rings, a colour bar with the unit."""
    grid = spec.values
    cmap = plt.get_cmap(spec.cmap).with_extremes(bad="#dddddd")
    finite = grid[np.isfinite(grid)]
    top = float(np.abs(finite).max()) if finite.size else 1.0
    vmax = spec.vmax if spec.vmax is not None and math.isfinite(spec.vmax) else top
    vmax = max(vmax, 1e-9)
    vmin = -vmax if spec.centred else (spec.vmin if spec.vmin is not None else 0.0)
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=vmin, vmax=vmax)  # type: ignore[no-untyped-call]
    rows, cols = grid.shape
    ax.set_xticks(range(cols), [str(c + 1) for c in range(cols)], fontsize=7)
    ax.set_yticks(range(rows), [row_letter(r + 1) for r in range(rows)], fontsize=7)
    ax.tick_params(length=0)
    if annotate:
        _annotate(ax, grid, cmap, im.norm)
    if spec.marks is not None:
        _draw_marks(ax, spec.marks)
    if spec.rings is not None:
        _draw_rings(ax, spec.rings)
    ax.set_title(spec.title, fontsize=9)
    bar = fig.colorbar(im, cax=cax)
    bar.set_label(spec.unit, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _draw_rings(ax: Any, rings: NDArray[Any]) -> None:
    from matplotlib.patches import Circle

    for (r, c), on in np.ndenumerate(rings):
        if on:
            ax.add_patch(Circle((c, r), 0.46, fill=False, edgecolor="black", lw=2.6))
            ax.add_patch(Circle((c, r), 0.46, fill=False, edgecolor="#ffd400", lw=1.2))


def _annotate(ax: Any, grid: NDArray[Any], cmap: Any, norm: Any) -> None:
    """Write each finite value in its well, black or white for contrast."""
    for (r, c), v in np.ndenumerate(grid):
        if np.isfinite(v):
            txt = f"{v:.0f}" if abs(v) >= 10 or float(v).is_integer() else f"{v:.2g}"
            txt = f"{v:.1f}" if 1 <= abs(v) < 10 and not float(v).is_integer() else txt
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


def _save(fig: Figure, path: Path | None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
