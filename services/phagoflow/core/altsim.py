"""A second, independent Rosella field generator (for the stress suite, issue 15).

Everything the CIP knew was learned on :mod:`phagoflow.core.simulate`; a pipeline tuned on one
simulator learns its habits (Gaussian PSF, Voronoi cells, peaks drawn independently of size,
quadratic centred vignetting, ridge texture). This module draws fields from a *different* image
model, written from scratch with different choices at every step, so that a score that holds on
both is less likely to be a habit of either. It shares no code with ``simulate`` (only the
output convention: ``(2, H, W)`` uint16 ``[DsRed, pHluorin]`` plus a truth mask).

Image model (all sizes in µm, converted with :attr:`AltSimParameters.pixel_size_um`)
-------------------------------------------------------------------------------------

1. **Cells** are star-convex blobs (radius ``r(θ) = r0 (1 + Σ a_k cos(kθ + φ_k))``, modes 2–5)
   placed by random sequential addition inside smooth "colony" regions; where two overlap, a
   pixel belongs to the cell for which its normalised radius ``ρ / r(θ)`` is smallest. Each
   has an elliptical nucleus (or, for yeast-like cells, a vacuole) placed off-centre.
2. **Cytosol**: per-cell expression (log-normal) with a linear gradient across the cell in a
   random direction (uneven expression within a cell), times a granular multiplicative texture
   (band-limited noise, not a ridge network). Green = red × the cytosolic ratio × the channel
   gain.
3. **Vesicles** are ellipses (aspect ratio drawn per object, random orientation) with an
   ellipsoidal profile; a fraction of autolysosomes are hollow shells. Brightness is
   *physical*: the vesicle's fluorophore concentration relative to the cytosol
   (``enrichment``, log-normal) times its path length, relative to the cell thickness — so
   small vesicles are dimmer after blur, unlike ``simulate`` where the blurred peak is drawn
   independently of size. Vesicles displace the cytosol they occupy. Counts per cell are
   Poisson with a *density per µm² of cytoplasm* (× the well level); a fraction is placed as
   offspring of a parent (Thomas cluster process, Gaussian offsets) so clusters touch and
   overlap. Overlaps are resolved by depth: each object has a random depth and the nearest
   one owns the pixels; objects left with less than half their footprint are dropped.
4. **Optics**: a two-Gaussian PSF (core + halo), then a cos⁴-law vignetting around an
   off-centre optical axis times a linear illumination tilt, a smooth stray-light background
   and glass autofluorescence; optional bleed-through between the channels.
5. **Camera** (sCMOS-like): per-pixel fixed-pattern offset, Poisson photo-electrons, gain,
   Gaussian read noise, a few hot pixels, rounding and clipping to ``bits``.

Ground truth: ``truth`` marks the pixels whose centre lies inside a vesicle's ellipse (its
footprint before blur), 1 phagophore, 2 autolysosome; ``instances`` numbers the objects;
counts are the objects whose centre lies in the field.

:func:`render_field` is a pure function of ``(params, rng, well_level)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import ndimage as ndi

from phagoflow.core.classes import ObjectClass

__all__ = ["AltField", "AltSimParameters", "render_field"]

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]
_Bool = npt.NDArray[np.bool_]
Range = tuple[float, float]

_SUB = 3  # sub-samples per pixel side when rasterising vesicles
_CELL_TRIES = 40  # rejected candidate centres per accepted cell before giving up
_MODES = np.arange(2, 6)  # Fourier modes of the cell outline


class AltSimParameters(BaseModel):
    """Everything that shapes a field of the independent generator (frozen; sizes in µm).

    Intensities are camera counts above the offset at illumination 1. Ranges are ``(low,
    high)`` sampled uniformly unless stated otherwise.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # geometry and optics
    size_yx: tuple[int, int] = Field((512, 680), description="Field size (H, W), pixels.")
    pixel_size_um: float = Field(0.2, gt=0, description="Pixel size, µm per pixel.")
    psf_sigma_um: float = Field(0.23, gt=0, description="σ of the PSF core, µm.")
    psf_halo_fraction: float = Field(0.12, ge=0, lt=1, description="Energy in the PSF halo.")
    psf_halo_sigma_um: float = Field(0.8, gt=0, description="σ of the PSF halo, µm.")
    vignetting: float = Field(
        0.3, ge=0, lt=1, description="Light lost in the farthest corner (cos⁴ law, 0 = flat)."
    )
    optical_centre: tuple[float, float] = Field(
        (0.08, -0.12), description="Optical axis offset from the field centre, fraction of H, W."
    )
    illumination_tilt: float = Field(
        0.1, ge=0, lt=1, description="Linear illumination change across the field (±tilt/2)."
    )
    # cells
    cell_radius_um: Range = Field((5.0, 7.5), description="Cell radius r0, µm.")
    cell_irregularity: float = Field(0.1, ge=0, lt=0.5, description="Outline mode amplitude.")
    cell_packing: float = Field(
        0.8, gt=0, le=2, description="Minimum centre distance / (r_i + r_j); < 1 lets cells touch."
    )
    colony_fraction: Range = Field(
        (0.5, 0.9), description="Fraction of the field where cells may sit, drawn per field."
    )
    colony_scale_um: float = Field(25.0, gt=0, description="Length scale of the colony mask.")
    nucleus_fraction: Range = Field((0.4, 0.6), description="Nucleus radius / cell radius.")
    nucleus_level: float = Field(0.25, ge=0, le=1, description="Nucleus signal / cytosol.")
    cytosol_counts: float = Field(300.0, gt=0, description="Cytosolic DsRed at expression 1.")
    cytosol_green_ratio: float = Field(0.9, ge=0, description="Cytosolic pHluorin / DsRed.")
    expression_sigma: float = Field(0.35, ge=0, description="Log-normal σ of cell expression.")
    expression_gradient: float = Field(
        0.25, ge=0, lt=1, description="Relative expression change across one cell radius."
    )
    texture: float = Field(0.15, ge=0, lt=1, description="Relative s.d. of the granularity.")
    texture_scale_um: float = Field(0.7, gt=0, description="Grain size of the texture, µm.")
    cell_thickness_um: float = Field(3.0, gt=0, description="Path length through cytosol, µm.")
    # vesicles
    phagophore_density: Range = Field(
        (0.01, 0.03), description="Phagophores per µm² of cytoplasm (per field rate), level 1."
    )
    autolysosome_density: Range = Field(
        (0.01, 0.03), description="Autolysosomes per µm² of cytoplasm (per field rate), level 1."
    )
    phagophore_diameter_um: Range = Field((0.3, 0.6), description="Phagophore diameter, µm.")
    autolysosome_diameter_um: Range = Field((0.6, 1.6), description="Autolysosome diameter.")
    aspect_ratio: Range = Field((1.0, 1.4), description="Major / minor axis of a vesicle.")
    elongated_fraction: float = Field(0.0, ge=0, le=1, description="Vesicles drawn elongated.")
    elongated_aspect: Range = Field((1.8, 3.0), description="Aspect ratio of elongated ones.")
    cluster_fraction: float = Field(0.1, ge=0, le=0.95, description="Vesicles in clusters.")
    cluster_sigma_um: float = Field(0.5, gt=0, description="Offspring offset s.d. in a cluster.")
    phagophore_enrichment: float = Field(
        45.0, gt=1, description="Median DsRed concentration of a phagophore / cytosol."
    )
    autolysosome_enrichment: float = Field(14.0, gt=1, description="Same for autolysosomes.")
    enrichment_sigma: float = Field(0.45, ge=0, description="Log-normal σ of the enrichment.")
    phagophore_green: Range = Field((0.7, 1.1), description="Phagophore pHluorin / DsRed.")
    autolysosome_green: Range = Field((0.0, 0.2), description="Autolysosome pHluorin / DsRed.")
    shell_fraction: float = Field(0.3, ge=0, le=1, description="Autolysosomes that are shells.")
    # channels and camera
    green_gain: float = Field(0.8, gt=0, description="pHluorin channel gain relative to DsRed.")
    bleed_red_to_green: float = Field(0.0, ge=0, lt=1, description="DsRed seen in pHluorin.")
    bleed_green_to_red: float = Field(0.0, ge=0, lt=1, description="pHluorin seen in DsRed.")
    glass_counts: float = Field(12.0, ge=0, description="Medium autofluorescence, counts.")
    stray_counts: float = Field(6.0, ge=0, description="Amplitude of smooth stray light.")
    offset: float = Field(100.0, ge=0, description="Camera offset, counts.")
    offset_pattern_sd: float = Field(1.5, ge=0, description="Per-pixel offset s.d., counts.")
    counts_per_electron: float = Field(2.0, gt=0, description="Camera gain.")
    read_noise: float = Field(3.0, ge=0, description="Read noise s.d., counts.")
    hot_pixel_fraction: float = Field(2e-4, ge=0, lt=0.01, description="Hot pixels.")
    bits: int = Field(12, ge=8, le=16, description="Camera bit depth.")

    @model_validator(mode="after")
    def _check_ranges(self) -> AltSimParameters:
        for name, value in self:
            if name.endswith(("_um", "_density", "_fraction", "_green", "aspect_ratio")) and (
                isinstance(value, tuple) and len(value) == 2 and not 0 <= value[0] <= value[1]
            ):
                raise ValueError(f"{name} must satisfy 0 <= low <= high, got {value}")
        if min(self.size_yx) < 16:
            raise ValueError(f"size_yx must be at least (16, 16) pixels, got {self.size_yx}")
        if self.phagophore_diameter_um[0] <= 0 or self.autolysosome_diameter_um[0] <= 0:
            raise ValueError("vesicle diameters must be > 0 µm")
        if self.aspect_ratio[0] < 1 or self.elongated_aspect[0] < 1:
            raise ValueError("aspect ratios must be >= 1")
        return self


@dataclass(frozen=True)
class AltField:
    """One field of the independent generator and its truth.

    Attributes
    ----------
    image : (2, H, W) ndarray of uint16
        ``[DsRed, pHluorin]`` camera counts, offset included.
    truth : (H, W) ndarray of uint8
        True footprints: 0 background, 1 phagophore, 2 autolysosome.
    instances : (H, W) ndarray of int32
        Object ids 1..N (0 elsewhere), same footprints as ``truth``.
    phagophores, autolysosomes : int
        True objects per class whose centre lies in the field.
    """

    image: npt.NDArray[np.uint16]
    truth: npt.NDArray[np.uint8]
    instances: npt.NDArray[np.int32]
    phagophores: int
    autolysosomes: int


@dataclass(frozen=True)
class _Cells:
    labels: _I64  # (H, W) cell id, 0 outside
    nucleus: _Bool  # (H, W)
    expression: _F64  # (H, W) expression level incl. the within-cell gradient


@dataclass(frozen=True)
class _Vesicles:
    y: _F64  # centre, px
    x: _F64
    a: _F64  # semi-major axis, px
    b: _F64  # semi-minor axis, px
    theta: _F64  # orientation, rad
    cls: npt.NDArray[np.uint8]  # 1 phagophore, 2 autolysosome
    cell: _I64

    def take(self, keep: npt.NDArray[Any]) -> _Vesicles:
        return _Vesicles(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


def render_field(
    params: AltSimParameters | None = None,
    *,
    rng: np.random.Generator | int | None = None,
    well_level: float = 1.0,
) -> AltField:
    """Render one field of the independent generator.

    Parameters
    ----------
    params : AltSimParameters, optional
        Image model; defaults when omitted.
    rng : numpy.random.Generator or int, optional
        Source of randomness (an int gives a reproducible field).
    well_level : float, default 1.0
        Autophagy level (≥ 0): multiplies both vesicle densities.

    Returns
    -------
    AltField
        ``image`` ``(2, H, W)`` uint16 and the truth, ``(H, W)`` = ``params.size_yx``.

    Raises
    ------
    ValueError
        If ``well_level`` is negative or not finite.
    """
    p = params if params is not None else AltSimParameters()
    if not (math.isfinite(well_level) and well_level >= 0):
        raise ValueError(f"well_level must be a finite number >= 0, got {well_level!r}")
    gen = np.random.default_rng(rng)
    cells = _cells(p, gen)
    ves = _place(p, gen, cells, well_level)
    red_v, green_v, occupied, owner, ves = _rasterise(p, gen, ves, p.size_yx)
    texture = 1.0 + p.texture * _band_noise(gen, p.size_yx, p.texture_scale_um / p.pixel_size_um)
    cyto = cells.expression * p.cytosol_counts * np.clip(texture, 0.2, None)
    cyto = np.where(cells.nucleus, cyto * p.nucleus_level, cyto) * (1.0 - occupied)
    local = cells.expression * p.cytosol_counts  # vesicle brightness scales with its cell
    red = cyto + red_v * local
    green = (cyto + green_v * local) * p.cytosol_green_ratio
    signal = _optics(p, gen, np.stack([red, green * p.green_gain]))
    image = _camera(p, gen, signal)
    truth = np.zeros(p.size_yx, np.uint8)
    truth[owner > 0] = ves.cls[owner[owner > 0] - 1]
    h, w = p.size_yx
    inside = (ves.y >= -0.5) & (ves.y < h - 0.5) & (ves.x >= -0.5) & (ves.x < w - 0.5)
    return AltField(
        image=image,
        truth=truth,
        instances=owner.astype(np.int32),
        phagophores=int(np.count_nonzero(inside & (ves.cls == ObjectClass.PHAGOPHORE))),
        autolysosomes=int(np.count_nonzero(inside & (ves.cls == ObjectClass.AUTOLYSOSOME))),
    )


# --------------------------------------------------------------------------------------------
# cells and cytosol
# --------------------------------------------------------------------------------------------


def _band_noise(gen: np.random.Generator, shape: tuple[int, int], scale_px: float) -> _F64:
    """Zero-mean unit-s.d. band-limited noise (difference of two Gaussian-filtered white fields)."""
    scale = max(scale_px, 0.5)
    factor = max(1, int(scale // 2))
    small = (-(-shape[0] // factor) + 2, -(-shape[1] // factor) + 2)
    white = gen.standard_normal(small)
    band = ndi.gaussian_filter(white, scale / factor) - ndi.gaussian_filter(
        white, 3 * scale / factor
    )
    if factor > 1:
        band = ndi.zoom(band, factor, order=1)
    band = band[: shape[0], : shape[1]]
    return np.asarray((band - band.mean()) / (band.std() + 1e-12), dtype=np.float64)


def _colony_mask(p: AltSimParameters, gen: np.random.Generator) -> _Bool:
    """Where cells may sit: a smooth random field above its quantile for the drawn fraction."""
    h, w = p.size_yx
    factor = 8
    scale = p.colony_scale_um / p.pixel_size_um / factor
    smooth = ndi.gaussian_filter(gen.standard_normal((h // factor + 2, w // factor + 2)), scale)
    smooth = ndi.zoom(smooth, factor, order=1)[:h, :w]
    fraction = gen.uniform(*p.colony_fraction)
    return np.asarray(smooth > np.quantile(smooth, 1.0 - fraction), dtype=bool)


def _cell_centres(p: AltSimParameters, gen: np.random.Generator) -> tuple[_F64, _F64, _F64]:
    """Random sequential addition of cell centres (px) inside the colony mask; radii in px."""
    h, w = p.size_yx
    colony = _colony_mask(p, gen)
    r_um = np.asarray(p.cell_radius_um)
    area_px = h * w * float(colony.mean())
    mean_r = float(r_um.mean()) / p.pixel_size_um
    target = int(1.3 * area_px / (math.pi * mean_r * mean_r)) + 1
    ys: list[float] = []
    xs: list[float] = []
    rs: list[float] = []
    tries = 0
    while len(ys) < target and tries < _CELL_TRIES * (len(ys) + 1):
        tries += 1
        y, x = gen.uniform(-mean_r, h + mean_r), gen.uniform(-mean_r, w + mean_r)
        iy, ix = min(max(int(y), 0), h - 1), min(max(int(x), 0), w - 1)
        if not colony[iy, ix]:
            continue
        r = gen.uniform(*r_um) / p.pixel_size_um
        if ys:
            d = np.hypot(np.asarray(ys) - y, np.asarray(xs) - x)
            if np.any(d < p.cell_packing * (np.asarray(rs) + r)):
                continue
        ys.append(y)
        xs.append(x)
        rs.append(r)
    return np.asarray(ys), np.asarray(xs), np.asarray(rs)


def _cells(p: AltSimParameters, gen: np.random.Generator) -> _Cells:
    """Star-convex cells (normalised-radius assignment), nuclei and the expression map."""
    shape = p.size_yx
    labels = np.zeros(shape, np.int64)
    nucleus = np.zeros(shape, bool)
    expression = np.zeros(shape)
    best = np.full(shape, np.inf)
    cy, cx, cr = _cell_centres(p, gen)
    for i in range(cy.size):
        amp = gen.normal(0.0, p.cell_irregularity, _MODES.size) / np.sqrt(_MODES - 1)
        phase = gen.uniform(0, 2 * math.pi, _MODES.size)
        y0, y1 = max(int(cy[i] - 1.6 * cr[i]), 0), min(int(cy[i] + 1.6 * cr[i]) + 1, shape[0])
        x0, x1 = max(int(cx[i] - 1.6 * cr[i]), 0), min(int(cx[i] + 1.6 * cr[i]) + 1, shape[1])
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        dy -= cy[i]
        dx -= cx[i]
        ang = np.arctan2(dy, dx)
        outline = 1.0 + np.tensordot(amp, np.cos(np.multiply.outer(_MODES, ang).T + phase).T, 1)
        q = np.hypot(dy, dx) / (cr[i] * np.clip(outline, 0.5, 1.5))
        won = (q < 1.0) & (q < best[y0:y1, x0:x1])
        best[y0:y1, x0:x1][won] = q[won]
        labels[y0:y1, x0:x1][won] = i + 1
        level = math.exp(gen.normal(0.0, p.expression_sigma))
        phi = gen.uniform(0, 2 * math.pi)
        grad = p.expression_gradient * (dx * math.cos(phi) + dy * math.sin(phi)) / cr[i]
        expression[y0:y1, x0:x1][won] = level * np.clip(1.0 + grad[won], 0.1, None)
        nf = gen.uniform(*p.nucleus_fraction)
        off = gen.normal(0.0, 0.15 * cr[i], 2)
        rot, ecc = gen.uniform(0, math.pi), gen.uniform(1.0, 1.3)
        u = ((dx - off[1]) * math.cos(rot) + (dy - off[0]) * math.sin(rot)) / ecc
        v = (-(dx - off[1]) * math.sin(rot) + (dy - off[0]) * math.cos(rot)) * ecc
        nucleus[y0:y1, x0:x1][won] = (np.hypot(u, v) < nf * cr[i])[won]
    nucleus &= labels > 0
    return _Cells(labels=labels, nucleus=nucleus, expression=expression)


# --------------------------------------------------------------------------------------------
# vesicles
# --------------------------------------------------------------------------------------------


def _counts_per_cell(
    p: AltSimParameters, gen: np.random.Generator, cyto_area_um2: _F64, well_level: float
) -> tuple[_I64, _I64]:
    """Poisson vesicle counts per cell id (index 0 unused) for both classes."""
    out = []
    for density in (p.phagophore_density, p.autolysosome_density):
        rate = gen.uniform(*density) * cyto_area_um2 * well_level
        rate[0] = 0.0
        out.append(gen.poisson(rate).astype(np.int64))
    return out[0], out[1]


def _shapes(p: AltSimParameters, gen: np.random.Generator, cls: npt.NDArray[np.uint8]) -> _F64:
    """``(3, N)``: semi-major and semi-minor axes (px) and orientation (rad) per vesicle."""
    n = cls.size
    lo = np.where(
        cls == ObjectClass.PHAGOPHORE, p.phagophore_diameter_um[0], p.autolysosome_diameter_um[0]
    )
    hi = np.where(
        cls == ObjectClass.PHAGOPHORE, p.phagophore_diameter_um[1], p.autolysosome_diameter_um[1]
    )
    d_px = gen.uniform(lo, hi) / p.pixel_size_um
    aspect = gen.uniform(*p.aspect_ratio, n)
    long = gen.random(n) < p.elongated_fraction
    aspect[long] = gen.uniform(*p.elongated_aspect, int(long.sum()))
    # keep the area of the drawn diameter: a·b = (d/2)²
    a = d_px / 2 * np.sqrt(aspect)
    b = d_px / 2 / np.sqrt(aspect)
    return np.stack([a, b, gen.uniform(0, math.pi, n)])


def _place(
    p: AltSimParameters, gen: np.random.Generator, cells: _Cells, well_level: float
) -> _Vesicles:
    """Draw vesicles per cell and place them in its cytoplasm (some as cluster offspring)."""
    cyto = (cells.labels > 0) & ~cells.nucleus
    flat = np.flatnonzero(cyto)
    n_cells = int(cells.labels.max())
    owner = cells.labels.ravel()[flat]
    area = np.bincount(owner, minlength=n_cells + 1) * p.pixel_size_um**2
    n_p, n_a = _counts_per_cell(p, gen, area.astype(np.float64), well_level)
    cls = np.concatenate([np.ones(int(n_p.sum()), np.uint8), np.full(int(n_a.sum()), 2, np.uint8)])
    cell = np.concatenate(
        [np.repeat(np.arange(n_cells + 1), n_p), np.repeat(np.arange(n_cells + 1), n_a)]
    )
    if cls.size == 0:
        z = np.zeros(0)
        return _Vesicles(z, z, z, z, z, cls, cell.astype(np.int64))
    order = np.argsort(owner, kind="stable")
    flat, owner = flat[order], owner[order]
    start = np.searchsorted(owner, np.arange(n_cells + 2))
    pick = start[cell] + (gen.random(cls.size) * (start[cell + 1] - start[cell])).astype(np.int64)
    w = p.size_yx[1]
    y = flat[pick] // w + gen.uniform(-0.5, 0.5, cls.size)
    x = flat[pick] % w + gen.uniform(-0.5, 0.5, cls.size)
    y, x = _cluster(p, gen, cells.labels, cyto, cell, y, x)
    a, b, theta = _shapes(p, gen, cls)
    return _Vesicles(y, x, a, b, theta, cls, cell.astype(np.int64))


def _cluster(
    p: AltSimParameters,
    gen: np.random.Generator,
    labels: _I64,
    cyto: _Bool,
    cell: _I64,
    y: _F64,
    x: _F64,
) -> tuple[_F64, _F64]:
    """Move a fraction of the vesicles next to an earlier one of the same cell (Thomas process)."""
    n = y.size
    moved = np.flatnonzero(gen.random(n) < p.cluster_fraction)
    sigma = p.cluster_sigma_um / p.pixel_size_um
    h, w = labels.shape
    y, x = y.copy(), x.copy()
    for i in moved:
        same = np.flatnonzero((cell == cell[i]) & (np.arange(n) != i))
        if same.size == 0:
            continue
        parent = same[gen.integers(0, same.size)]
        for _ in range(4):
            ny, nx = y[parent] + gen.normal(0, sigma), x[parent] + gen.normal(0, sigma)
            iy, ix = round(ny), round(nx)
            if 0 <= iy < h and 0 <= ix < w and cyto[iy, ix] and labels[iy, ix] == cell[i]:
                y[i], x[i] = ny, nx
                break
    return y, x


def _profiles(
    p: AltSimParameters, gen: np.random.Generator, v: _Vesicles, rows: _I64, cols: _I64
) -> tuple[_F64, _F64]:
    """Per vesicle stamp: path length through it (µm, super-sampled mean) and centre-in flag.

    ``rows``/``cols`` are ``(N, k, k)`` pixel coordinates; returns ``(N, k, k)`` path length
    and the boolean footprint (pixel centre inside the ellipse) as float.
    """
    sub = (np.arange(_SUB) + 0.5) / _SUB - 0.5
    dy = rows[..., None, None] + sub[:, None] - v.y[:, None, None, None, None]
    dx = cols[..., None, None] + sub[None, :] - v.x[:, None, None, None, None]
    c, s = np.cos(v.theta)[:, None, None, None, None], np.sin(v.theta)[:, None, None, None, None]
    u = (dx * c + dy * s) / v.a[:, None, None, None, None]
    w = (-dx * s + dy * c) / v.b[:, None, None, None, None]
    q2 = u * u + w * w
    depth = 2.0 * v.b[:, None, None, None, None] * p.pixel_size_um  # z semi-axis = minor axis
    path = np.sqrt(np.clip(1.0 - q2, 0.0, None))
    shell = (v.cls == ObjectClass.AUTOLYSOSOME) & (gen.random(v.y.size) < p.shell_fraction)
    inner = np.sqrt(np.clip(1.0 - q2 / 0.36, 0.0, None)) * 0.6
    path = np.where(shell[:, None, None, None, None], path - inner, path) * depth
    centre = q2[..., _SUB // 2, _SUB // 2] <= 1.0
    return path.mean(axis=(-2, -1)), centre.astype(np.float64)


def _rasterise(
    p: AltSimParameters, gen: np.random.Generator, v: _Vesicles, shape: tuple[int, int]
) -> tuple[_F64, _F64, _F64, _I64, _Vesicles]:
    """Vesicle signal (red, green; per unit of the cell's cytosol), occupancy and owners.

    Overlaps are resolved by depth (a random z per object, the nearest owns the pixel);
    objects keeping less than half their footprint are dropped, and the survivors renumbered.
    """
    zero = np.zeros(shape)
    if v.y.size == 0:
        return zero, zero.copy(), zero.copy(), np.zeros(shape, np.int64), v
    half = math.ceil(float(v.a.max())) + 1
    off = np.arange(-half, half + 1)
    rows = (
        np.round(v.y).astype(np.int64)[:, None, None] + off[None, :, None] + 0 * off[None, None, :]
    )
    cols = (
        np.round(v.x).astype(np.int64)[:, None, None] + off[None, None, :] + 0 * off[None, :, None]
    )
    path, foot = _profiles(p, gen, v, rows, cols)
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    depth = gen.random(v.y.size)
    flat = rows * shape[1] + cols
    top = np.full(shape[0] * shape[1], -1.0)
    is_foot = (foot > 0) & inside
    obj = np.broadcast_to(np.arange(v.y.size)[:, None, None], rows.shape)
    np.maximum.at(top, flat[is_foot], depth[obj[is_foot]])
    won = is_foot & (top[np.where(inside, flat, 0)] == depth[obj])
    owned = np.bincount(obj[won], minlength=v.y.size)
    total = np.bincount(obj[is_foot], minlength=v.y.size)
    keep = (owned > 0) & (owned >= 0.5 * total)
    owner = np.zeros(shape[0] * shape[1], np.int64)
    new_id = np.cumsum(keep) * keep
    sel = won & keep[obj]
    owner[flat[sel]] = new_id[obj[sel]]
    v_keep, path, inside = v.take(keep), path[keep], inside[keep]
    flat = flat[keep]
    thick = p.cell_thickness_um
    enrich = np.where(
        v_keep.cls == ObjectClass.PHAGOPHORE, p.phagophore_enrichment, p.autolysosome_enrichment
    )
    enrich = enrich * np.exp(gen.normal(0.0, p.enrichment_sigma, v_keep.y.size))
    lo = np.where(
        v_keep.cls == ObjectClass.PHAGOPHORE, p.phagophore_green[0], p.autolysosome_green[0]
    )
    hi = np.where(
        v_keep.cls == ObjectClass.PHAGOPHORE, p.phagophore_green[1], p.autolysosome_green[1]
    )
    green = gen.uniform(lo, hi) / max(p.cytosol_green_ratio, 1e-6)
    occ = path / thick
    size = shape[0] * shape[1]
    red = np.asarray(np.bincount(flat[inside], (occ * enrich[:, None, None])[inside], size), float)
    grn = np.asarray(
        np.bincount(flat[inside], (occ * (enrich * green)[:, None, None])[inside], size), float
    )
    occupied: _F64 = np.minimum(np.bincount(flat[inside], occ[inside], size), 0.9)
    return (
        red.reshape(shape),
        grn.reshape(shape),
        occupied.reshape(shape),
        owner.reshape(shape),
        v_keep,
    )


# --------------------------------------------------------------------------------------------
# optics and camera
# --------------------------------------------------------------------------------------------


def _illumination(p: AltSimParameters) -> _F64:
    """cos⁴ vignetting around the off-centre optical axis times a linear tilt; max 1."""
    h, w = p.size_yx
    yy = (np.arange(h) / max(h - 1, 1) - 0.5 - p.optical_centre[0])[:, None]
    xx = (np.arange(w) / max(w - 1, 1) - 0.5 - p.optical_centre[1])[None, :]
    rho2 = yy * yy * (h / max(h, w)) ** 2 + xx * xx * (w / max(h, w)) ** 2
    far = float(rho2.max())
    # cos⁴(atan(ρ/f)) = (1 + ρ²/f²)⁻²; choose f so that the farthest corner gets 1 - vignetting
    f2 = far / ((1.0 - p.vignetting) ** -0.5 - 1.0) if p.vignetting > 0 else math.inf
    cos4 = (1.0 + rho2 / f2) ** -2
    tilt = 1.0 + p.illumination_tilt * (np.arange(w) / max(w - 1, 1) - 0.5)[None, :]
    out = cos4 * tilt
    return np.asarray(out / out.max(), dtype=np.float64)


def _optics(p: AltSimParameters, gen: np.random.Generator, signal: _F64) -> _F64:
    """Two-Gaussian PSF, bleed-through, stray light, glass and illumination."""
    core = p.psf_sigma_um / p.pixel_size_um
    halo = p.psf_halo_sigma_um / p.pixel_size_um
    blurred = (1 - p.psf_halo_fraction) * ndi.gaussian_filter(signal, (0, core, core))
    blurred += p.psf_halo_fraction * ndi.gaussian_filter(signal, (0, halo, halo))
    red, green = blurred[0].copy(), blurred[1].copy()
    blurred[0] = red + p.bleed_green_to_red * green
    blurred[1] = green + p.bleed_red_to_green * red
    stray = p.stray_counts * (1.0 + _band_noise(gen, p.size_yx, 0.25 * max(p.size_yx)))
    blurred += p.glass_counts + np.clip(stray, 0.0, None)[None]
    return np.asarray(blurred * _illumination(p)[None], dtype=np.float64)


def _camera(p: AltSimParameters, gen: np.random.Generator, signal: _F64) -> npt.NDArray[np.uint16]:
    """sCMOS-like camera: Poisson electrons, gain, fixed-pattern offset, read noise, hot pixels."""
    electrons = gen.poisson(np.clip(signal, 0.0, None) / p.counts_per_electron)
    pattern = p.offset + p.offset_pattern_sd * gen.standard_normal(p.size_yx)
    counts = electrons * p.counts_per_electron + pattern[None]
    counts += gen.normal(0.0, p.read_noise, counts.shape)
    hot = gen.random(p.size_yx) < p.hot_pixel_fraction
    counts[:, hot] += gen.uniform(200, 1500, (2, int(hot.sum())))
    top = 2**p.bits - 1
    return np.asarray(np.clip(np.rint(counts), 0, top), dtype=np.uint16)
