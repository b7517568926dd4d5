"""The conventional image pipeline (CIP): Rosella vesicles segmented with scikit-image and scipy.

The CIP of Garcia Santa Cruz et al. (Sci Rep 2022, doi:10.1038/s41598-022-15623-7) produces the
weak labels the CDL U-Net learns from. It is written the way an image analyst would write it:
DsRed is bright in every vesicle, so vesicles are *found* in DsRed; pHluorin decides the class
(and adds phagophores that hide on the flank of a brighter autolysosome). Since issue 15 it
adapts to the field — pixel size, noise, density — instead of rejecting what does not fit one
simulator's habits; the values that changed were chosen on the validation plates of
:mod:`phagoflow.core.protocol`, and docs/experiment.md keeps what was tried.

1. **Scale from the pixel size.** Every length is a µm parameter. A field much finer than
   ``working_pixel_um`` is binned first by an integer factor (block mean), so a 0.06 µm/px
   field costs what a 0.18 µm/px one does; outlines are drawn back on the original grid.
   Smoothing scales have floors in pixels for coarse fields.
2. **Noise from the field itself.** A noise model ``σ²(I) = a + g · (I − dark)`` (read + shot
   noise) is fitted to robust (MAD) estimates of 2 × 2 Haar differences in intensity bins of
   the field; integer camera data get a deterministic sub-quantum dither first, so a noise
   under one count is neither rounded to 0 nor doubled by ties. The dark level (offset +
   medium) is a low percentile (``dark_percentile``) of the lightly denoised field
   (``denoise_sigma_um``).
3. **Difference of Gaussians** at vesicle scale (``dog_low_sigma_um`` − ``dog_high_sigma_um``;
   the wide Gaussian on a 2× coarser grid), whose noise σ is computed from its discrete
   kernels. Its maxima, at least ``watershed_min_distance_um`` apart, are vesicles when (a)
   the DoG exceeds ``threshold_k`` × its noise σ at the local level; (b) weaker / stronger
   principal curvature ≥ ``min_roundness`` (rejects ridges and edges); (c) the low-Gaussian
   peak exceeds the upper quartile of a ring of ``ring_radius_um`` by ``min_contrast`` × the
   cytosol level (ring median − dark), which rejects cytoplasmic texture and the bright rims
   of cells. The ring is small enough to stay inside small cells, and leaves out the samples
   that sit on the core (``neighbour_core_um``) of *another* round maximum: a punctum next to
   others is measured against the cytosol, not against its neighbours. pHluorin maxima count
   only if they are green- and DsRed-bright and do not duplicate a green-bright DsRed maximum.
4. **Watershed split.** DsRed maxima flood the smoothed DsRed within the positive DoG and
   ``max_radius_um`` of their marker; pHluorin-only maxima flood the smoothed pHluorin.
5. **Local background** of each object: the median of a ring just outside its blur — at its
   half-maximum radius + ``outline_ring_margin_um``, within ``ring_radius_um`` …
   ``outline_ring_um`` — again without the samples on other vesicles.
6. **Outlines from a sphere model.** The half-maximum outline of a blurred vesicle is 2–3× the
   area of a sub-resolution one. Each basin's sub-pixel area at ``extent_fraction`` of its peak
   excess is inverted through a table of projected spheres blurred by the PSF
   (``psf_sigma_um``) and the denoising (:func:`_halfmax_table`) to the vesicle's radius,
   clipped to ``min_vesicle_diameter_um`` … ``max_vesicle_diameter_um``; the object keeps
   its ``π R²`` pixels of highest excess (largest connected piece); touching instances are
   then separated by a one-pixel line. An object whose half-maximum area is under
   ``min_spot_scale``² of a point source's is narrower than the PSF (a hot pixel, a noise
   spike) and dropped.
7. **Size filters and classification.** Objects smaller than ``min_area_um2`` or larger than
   ``max_area_um2`` (µm²) are dropped. The ratio of an object's summed pHluorin excess over its
   summed DsRed excess, *relative to the field's cytosolic ratio* (the cytosol is at neutral pH,
   so this cancels channel gains), below ``ratio_threshold`` makes an **autolysosome** (2,
   green quenched); at or above it, an object whose half-maximum outline is no wider than
   ``phagophore_max_diameter_um`` is a **phagophore** (1), a wider one is neither class (in
   practice a blob of cytosol) and is dropped.

Optional **per-plate self-calibration** (:func:`calibrate_cip`) estimates the PSF σ (from the
blur of the plate's smallest vesicles) and the green/red ratio threshold (the valley between
the plate's two ratio modes) from a sample of the plate's fields, with no truth, and returns
parameters whose ``calibration`` field records what was estimated from what — so the record
travels with the parameters into every provenance that dumps them (``run.json``).

Mask convention: touching instances are separated in ``mask`` by a one-pixel background line
that breaks 8-connectivity, so the 8-connected components of each class of ``mask`` are exactly
the instances in ``labels`` (:func:`phagoflow.core.counting.measure_objects` finds the same
objects with or without ``labels``).

Every parameter lives in the frozen :class:`CipParameters`; lengths are in µm and areas in µm²,
converted with the field's pixel size, so the same scene imaged at another pixel size gives the
same objects. Known limits: vesicles closer than about 1.2 µm whose blurs overlap to ~40 % of
their peaks are rejected by the contrast test (dense clusters); the true size of a
sub-resolution vesicle cannot be measured (it gets ``min_vesicle_diameter_um``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import ndimage as ndi
from skimage.segmentation import watershed

__all__ = ["CipParameters", "CipResult", "calibrate_cip", "segment_cip"]

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]
_I32 = npt.NDArray[np.int32]
_Idx = npt.NDArray[np.intp]
_Bool = npt.NDArray[np.bool_]
_EIGHT = np.ones((3, 3), dtype=bool)
_MAD_TO_SIGMA = 1.4826  # Gaussian sigma / median absolute deviation
_RING_POINTS = 16
_NOISE_BINS = 8
_GOLDEN = 0.6180339887498949
_MIN_CALIBRATION_BLUR_PX = 1.2  # calibrate_cip estimates the PSF only from this blur (px) up


class CipParameters(BaseModel):
    """All CIP parameters. Frozen; lengths in µm, areas in µm², the rest unitless.

    Defaults hold for Rosella fields at 0.06–0.4 µm/px (Opera, 60× water, binning 2 is
    0.2 µm/px; PSF σ ≈ 0.25 µm): phagophores 0.3–0.6 µm, autolysosomes 0.6–1.6 µm. The values
    that changed in issue 15 were chosen on the validation plates of
    :mod:`phagoflow.core.protocol` (docs/experiment.md). Serialise with ``model_dump()``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    working_pixel_um: float = Field(
        0.16,
        ge=0,
        description="Fields whose pixel is finer than 2/3 of this (µm) are binned by the "
        "integer factor round(working_pixel_um / pixel size) for detection (outlines stay "
        "on the original grid); 0 disables.",
    )
    psf_sigma_um: float = Field(
        0.26,
        gt=0,
        description="σ (µm) of the microscope's PSF: the blur the sphere model of the "
        "outlines and the point-source size test assume (calibrate_cip estimates it).",
    )
    denoise_sigma_um: float = Field(
        0.1,
        ge=0,
        description="Gaussian σ (µm) of the light denoising of the image that object outlines "
        "and intensities are measured on; skipped below 0.3 px.",
    )
    ring_radius_um: float = Field(
        0.8,
        gt=0,
        description="Radius (µm) of the ring around a maximum on which the contrast test samples "
        "its surround (cytosol); small enough to stay inside small cells and between dense "
        "puncta.",
    )
    outline_ring_um: float = Field(
        1.2,
        gt=0,
        description="Largest radius (µm) of the ring whose median is an object's background "
        "for its outline and green/red ratio (outside the largest vesicle's blur).",
    )
    outline_ring_margin_um: float = Field(
        0.5,
        ge=0,
        description="That ring lies this far (µm) outside the object's half-maximum radius "
        "(at least ring_radius_um): just outside its blur, inside small cells.",
    )
    neighbour_core_um: float = Field(
        0.35,
        ge=0,
        description="Ring samples within this distance (µm) of *another* significant DoG "
        "maximum sit on a neighbouring vesicle and are left out of the ring statistics "
        "(unless fewer than 5 of 16 would remain); 0 keeps every sample.",
    )
    dark_percentile: float = Field(
        0.5,
        ge=0,
        le=50,
        description="Percentile (%) of the denoised field taken as its dark level (camera "
        "offset + medium); cytosol levels are measured above it.",
    )
    dog_low_sigma_um: float = Field(
        0.25,
        gt=0,
        description="Small Gaussian σ (µm) of the difference of Gaussians (≈ PSF σ, matched to "
        "a sub-resolution vesicle); at least 0.7 px.",
    )
    dog_high_sigma_um: float = Field(
        1.0,
        gt=0,
        description="Large Gaussian σ (µm) of the difference of Gaussians (above the largest "
        "vesicle radius); at least twice the small one in pixels.",
    )
    threshold_k: float = Field(
        5.0,
        gt=0,
        description="Noise test: a DoG maximum must exceed threshold_k × the DoG's noise σ "
        "(the field's noise model at the local level, through the DoG's discrete kernels).",
    )
    min_contrast: float = Field(
        0.25,
        ge=0,
        description="Local contrast test: the low-Gaussian peak minus the ring's upper quartile "
        "must exceed min_contrast × (ring median − dark level). A vesicle is brighter than "
        "its surround; the rim of a cell or colony edge is not.",
    )
    min_roundness: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Shape test: weaker / stronger principal curvature (Hessian eigenvalues) of "
        "the DoG's low Gaussian at the maximum, 0 unless both are negative (1 round spot, 0 "
        "ridge or edge).",
    )
    watershed_min_distance_um: float = Field(
        0.4,
        gt=0,
        description="Minimum distance (µm) between DoG maxima (watershed markers): a maximum "
        "must be the largest value within this radius (square window).",
    )
    extent_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Fraction of its peak excess at which an object's blurred size is measured "
        "(0.5: the half-maximum outline) for the sphere model and the phagophore diameter.",
    )
    min_vesicle_diameter_um: float = Field(
        0.35,
        gt=0,
        description="Smallest true vesicle diameter (µm) the sphere model returns: a "
        "sub-resolution vesicle, whose size cannot be measured, gets it.",
    )
    max_vesicle_diameter_um: float = Field(
        1.6,
        gt=0,
        description="Largest true vesicle diameter (µm) the sphere model returns.",
    )
    min_spot_scale: float = Field(
        0.6,
        ge=0,
        description="Size test: an object's half-maximum area must be at least this squared "
        "times a point source's seen through the PSF (rejects hot pixels and noise spikes).",
    )
    max_radius_um: float = Field(
        1.1,
        gt=0,
        description="Farthest distance (µm) an object may extend from its maximum (square "
        "window; the watershed floods no farther): the largest autolysosome radius plus the "
        "PSF.",
    )
    min_area_um2: float = Field(
        0.03,
        ge=0,
        description="Objects with a smaller area (µm²) are dropped.",
    )
    max_area_um2: float = Field(
        3.0,
        gt=0,
        description="Objects with a larger area (µm²) are dropped.",
    )
    ratio_threshold: float = Field(
        0.5,
        gt=0,
        description="pHluorin / DsRed excess ratio of an object, relative to the field's "
        "cytosolic (neutral pH) ratio, below which it is an autolysosome (green quenched); at "
        "or above it the object is pHluorin-bright (a phagophore if small enough).",
    )
    phagophore_max_diameter_um: float = Field(
        1.0,
        gt=0,
        description="Largest equivalent-circle diameter (µm) of a phagophore's half-maximum "
        "outline; pHluorin-bright objects above it are neither class and are dropped.",
    )
    calibration: dict[str, Any] | None = Field(
        None,
        description="Set by calibrate_cip: what was estimated, from which plate statistics, "
        "and the values it replaced (recorded in provenance); None for set parameters.",
    )

    @model_validator(mode="after")
    def _check_order(self) -> CipParameters:
        if self.dog_high_sigma_um <= self.dog_low_sigma_um:
            raise ValueError(
                f"dog_high_sigma_um ({self.dog_high_sigma_um}) must exceed dog_low_sigma_um "
                f"({self.dog_low_sigma_um})"
            )
        if self.max_vesicle_diameter_um < self.min_vesicle_diameter_um:
            raise ValueError(
                f"max_vesicle_diameter_um ({self.max_vesicle_diameter_um}) must be at least "
                f"min_vesicle_diameter_um ({self.min_vesicle_diameter_um})"
            )
        if self.max_area_um2 <= self.min_area_um2:
            raise ValueError(
                f"max_area_um2 ({self.max_area_um2}) must exceed min_area_um2 ({self.min_area_um2})"
            )
        return self


@dataclass(frozen=True)
class CipResult:
    """CIP output for one field.

    Attributes
    ----------
    mask : (H, W) uint8 ndarray
        0 background, 1 phagophore, 2 autolysosome; touching instances (of either class) are
        separated by a one-pixel background line (no 8-connection between instances).
    labels : (H, W) int32 ndarray
        Instance labels 1..N (0 background), nonzero exactly where ``mask`` is; phagophores are
        numbered first. The 8-connected components of each class of ``mask``.
    """

    mask: npt.NDArray[np.uint8]
    labels: _I32


def _validate_image(image: npt.NDArray[Any], pixel_size_um: float) -> _F32:
    """Check a ``(2, H, W)`` real, finite field and the pixel size; return float32."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[0] != 2:
        raise ValueError(
            f"image must have shape (2, H, W) ordered [DsRed, pHluorin], got {arr.shape}"
        )
    if arr.shape[1] < 8 or arr.shape[2] < 8:
        raise ValueError(f"image must be at least 8 × 8 pixels, got {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"image {arr.shape} must hold real numbers, got dtype {arr.dtype}")
    out = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"image {arr.shape} contains non-finite values (NaN or inf)")
    if not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be a positive finite number, got {pixel_size_um}")
    return out


# --------------------------------------------------------------------------------------------
# scale: binning, smoothing, the blurred-sphere table
# --------------------------------------------------------------------------------------------


def _bin_factor(p: CipParameters, px: float) -> int:
    """Integer binning that brings ``px`` closest to the working pixel size (1 = none)."""
    if p.working_pixel_um <= 0 or px >= p.working_pixel_um / 1.5:
        return 1
    return max(1, round(p.working_pixel_um / px))


def _bin(image: _F32, factor: int) -> _F32:
    """Block mean of ``(C, H, W)`` over ``factor``² tiles (edges padded by reflection)."""
    if factor == 1:
        return image
    c, h, w = image.shape
    nh, nw = -(-h // factor), -(-w // factor)
    pad = ((0, 0), (0, nh * factor - h), (0, nw * factor - w))
    padded = np.pad(image, pad, mode="symmetric")
    return np.asarray(padded.reshape(c, nh, factor, nw, factor).mean(axis=(2, 4)), dtype=np.float32)


def _kernel(sigma_px: float, radius: int) -> _F64:
    """scipy's normalised 1-D Gaussian kernel of ``sigma_px`` on ``-radius..radius``."""
    x = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (x / sigma_px) ** 2) if sigma_px > 0 else (x == 0).astype(float)
    k[np.abs(x) > int(4.0 * sigma_px + 0.5)] = 0.0
    return np.asarray(k / k.sum(), dtype=np.float64)


def _dog_gain(low_px: float, high_px: float) -> float:
    """σ of the (discrete, separable) DoG's response to unit white noise.

    With 1-D kernels ``a`` (low) and ``b`` (high), ``Σ (a_i a_j − b_i b_j)² =
    (Σa²)² − 2 (Σab)² + (Σb²)²``.
    """
    radius = int(4.0 * max(low_px, high_px) + 0.5)
    a, b = _kernel(low_px, radius), _kernel(high_px, radius)
    var = (a @ a) ** 2 - 2 * (a @ b) ** 2 + (b @ b) ** 2
    return math.sqrt(max(float(var), 0.0))


def _down2(img: _F32) -> _F32:
    """2 × 2 block mean (a trailing odd row or column is dropped)."""
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    a = img[:h:2, :w:2] + img[1:h:2, :w:2] + img[:h:2, 1:w:2] + img[1:h:2, 1:w:2]
    return np.asarray(a * np.float32(0.25), dtype=np.float32)


def _up2(small: _F32, shape: tuple[int, int]) -> _F32:
    """Bilinear 2× upsampling of block means (values at block centres), cropped to ``shape``."""
    p = np.pad(small, 1, mode="edge")
    near, far = np.float32(0.75), np.float32(0.25)
    rows = np.empty((2 * small.shape[0], p.shape[1]), dtype=np.float32)
    rows[0::2] = near * p[1:-1] + far * p[:-2]
    rows[1::2] = near * p[1:-1] + far * p[2:]
    big = np.empty((rows.shape[0], 2 * small.shape[1]), dtype=np.float32)
    big[:, 0::2] = near * rows[:, 1:-1] + far * rows[:, :-2]
    big[:, 1::2] = near * rows[:, 1:-1] + far * rows[:, 2:]
    out = np.empty(shape, dtype=np.float32)
    h, w = min(shape[0], big.shape[0]), min(shape[1], big.shape[1])
    out[:h, :w] = big[:h, :w]
    out[h:, :w] = big[h - 1 : h, :w]  # an odd last row/column repeats its neighbour
    out[:, w:] = out[:, w - 1 : w]
    return out


def _smooth(channel: _F32, sigma_px: float) -> _F32:
    """Gaussian of ``sigma_px``; from 3 px on, on a 2× coarser grid and upsampled.

    A 2 × 2 block mean is itself a blur of variance 1/4 px²; the rest is done on the coarse
    grid (recursively for very wide ones).
    """
    if sigma_px < 3.0 or min(channel.shape) < 16:
        return np.asarray(ndi.gaussian_filter(channel, sigma_px), dtype=np.float32)
    rest = math.sqrt(max(sigma_px**2 - 0.25, 0.25)) / 2
    small = _smooth(_down2(channel), rest)
    return _up2(small, (int(channel.shape[0]), int(channel.shape[1])))


@functools.lru_cache(maxsize=1)
def _halfmax_table() -> tuple[_F64, _F64]:
    """Half-maximum radius of a projected sphere blurred by a Gaussian, in units of its σ.

    The sphere ``sqrt(1 − ρ²/R²)`` convolved with a unit-σ Gaussian, numerically (0.02 σ
    steps): the column integral against the Gaussian in one axis, then a 1-D convolution in
    the other. The blur is scale-free, so ``r_half(R, σ) = σ · T(R / σ)``. Returns
    ``(R/σ, T)`` grids, ``T`` increasing from 1.1774 (a point: the Gaussian's half width)
    towards ``0.87 R/σ`` (a large sphere's own half-maximum radius).
    """
    ratios = np.concatenate([[0.0], np.geomspace(0.05, 20.0, 48)])
    out = np.empty(ratios.size)
    out[0] = math.sqrt(2 * math.log(2))
    step = 0.02
    v = np.arange(-5.0, 5.0 + step / 2, step)[:, None]
    gauss = np.exp(-0.5 * v[:, 0] ** 2)
    for i, r in enumerate(ratios[1:], start=1):
        u = np.arange(-(r + 5.0), r + 5.0 + step / 2, step)
        sphere = np.sqrt(np.clip(1.0 - (u[None, :] ** 2 + v**2) / (r * r), 0.0, None))
        column = gauss @ sphere
        profile = np.convolve(column, gauss, mode="same")
        centre = int(np.argmin(np.abs(u)))
        half = profile[centre:]
        j = int(np.flatnonzero(half < 0.5 * half[0])[0])
        f0, f1 = half[j - 1], half[j]
        out[i] = (j - 1 + (f0 - 0.5 * half[0]) / max(f0 - f1, 1e-12)) * step
    return ratios, np.maximum.accumulate(out)


def _halfmax_radius(radius_px: _F64 | float, sigma_px: float) -> _F64:
    """Half-maximum radius (px) of spheres of ``radius_px`` blurred by ``sigma_px``."""
    ratios, table = _halfmax_table()
    return np.asarray(sigma_px * np.interp(np.asarray(radius_px) / sigma_px, ratios, table))


def _radius_from_halfmax(area_px: _F64, sigma_px: float) -> _F64:
    """Sphere radius (px) whose blur has a half-maximum disk of ``area_px``; 0 below a point's."""
    ratios, table = _halfmax_table()
    measured = np.sqrt(np.maximum(area_px, 0.0) / math.pi) / sigma_px
    return np.asarray(sigma_px * np.interp(measured, table, ratios, left=0.0), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# noise model and per-channel images
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Noise:
    """Pixel noise model ``σ²(I) = read2 + gain · max(I − dark, 0)`` of one channel."""

    read2: float
    gain: float
    dark: float

    def sigma(self, level: _F64 | _F32) -> _F64:
        above = np.maximum(np.asarray(level, dtype=np.float64) - self.dark, 0.0)
        return np.asarray(np.sqrt(self.read2 + self.gain * above), dtype=np.float64)


def _dithered_abs(values: _F32, quantum: float) -> _F32:
    """``|values|`` spread uniformly inside their quantum by a fixed low-discrepancy dither."""
    n = values.size
    dither = ((np.arange(n, dtype=np.float64) * _GOLDEN) % 1.0 - 0.5) * quantum
    return np.asarray(np.abs(values.ravel() + dither.astype(np.float32)), dtype=np.float32)


def _noise_model(channel: _F32, dark: float) -> _Noise:
    """Fit ``σ²(I)`` to robust Haar-difference estimates in intensity bins of one channel.

    ``(a − b − c + d) / 2`` over a 2 × 2 tile cancels smooth structure and has the pixel
    noise σ; 1.4826 × the median of its absolute value per intensity bin (bins of equal
    tile count; an eighth of the tiles) gives σ² per bin; a least-squares line
    through them (slope ≥ 0, intercept within the bins' range) is the model — a flat one
    when the levels span too little to show a slope.
    """
    h, w = channel.shape
    c = channel[: h - h % 8, : w - w % 4]
    # every other 2 × 2 tile along rows, every fourth down the columns: an eighth of them is
    # plenty for 8 medians
    a, b, d, e = c[0::8, 0::4], c[0::8, 1::4], c[1::8, 0::4], c[1::8, 1::4]
    haar = ((a - b - d + e) / 2).ravel()
    # the level of a tile is read from its right-hand neighbour tile: as local, but its noise
    # is independent of the tile's own (sorting by a tile's own mean biases quantised data)
    mean = ((c[0::8, 2::4] + c[0::8, 3::4] + c[1::8, 2::4] + c[1::8, 3::4]) / 4).ravel()
    sample = c[::7, ::7]
    integer = bool(np.all(sample == np.rint(sample)))
    absval = _dithered_abs(haar, 0.5) if integer else np.abs(haar)
    order = np.argsort(mean, kind="stable")
    bins = np.array_split(order, _NOISE_BINS)
    level = np.array([float(np.median(mean[b])) for b in bins])
    var = np.array([(_MAD_TO_SIGMA * float(np.median(absval[b]))) ** 2 for b in bins])
    x = np.maximum(level - dark, 0.0)
    # a slope needs a range of levels well beyond the noise itself (else: flat, read noise)
    if np.ptp(x) <= 10.0 * math.sqrt(float(var.max())):
        return _Noise(read2=max(float(np.median(var)), 1e-6), gain=0.0, dark=dark)
    slope, intercept = np.polyfit(x, var, 1)
    slope = max(float(slope), 0.0)
    floor = 0.05 * float(np.median(var))
    read2 = float(np.clip(intercept, floor, max(float(var.min()), floor)))
    return _Noise(read2=max(read2, 1e-6), gain=slope, dark=dark)


@dataclass(frozen=True)
class _Channel:
    """Per-channel images (all ``(H, W)`` float32), noise model and DoG noise gain."""

    den: _F32  # lightly denoised: outlines and intensities are measured on it
    low: _F32  # low Gaussian of the DoG
    high: _F32  # high Gaussian of the DoG (the local mean level)
    dog: _F32  # difference of Gaussians
    noise: _Noise  # pixel noise model; its ``dark`` is the channel's dark level
    dog_gain: float  # σ of the DoG's response to unit white noise


def _prepare(channel: _F32, p: CipParameters, px: float) -> _Channel:
    """Denoising, DoG, dark level and noise model of one channel."""
    low_px = max(p.dog_low_sigma_um / px, 0.7)
    high_px = max(p.dog_high_sigma_um / px, 2.0 * low_px)
    den_px = p.denoise_sigma_um / px
    den = ndi.gaussian_filter(channel, den_px) if den_px >= 0.3 else channel
    low = np.asarray(ndi.gaussian_filter(channel, low_px), dtype=np.float32)
    high = _smooth(channel, high_px)
    dark = float(np.percentile(den[::3, ::3], p.dark_percentile))
    return _Channel(
        den=np.asarray(den, dtype=np.float32),
        low=low,
        high=high,
        dog=np.asarray(low - high, dtype=np.float32),
        noise=_noise_model(channel, dark),
        dog_gain=_dog_gain(low_px, high_px),
    )


# --------------------------------------------------------------------------------------------
# candidates
# --------------------------------------------------------------------------------------------


def _hessian(img: _F32, ys: _Idx, xs: _Idx) -> tuple[_F64, _F64]:
    """Stronger and weaker principal curvature (3-point stencils) at the given pixels."""
    h, w = img.shape
    yc, xc = np.clip(ys, 1, h - 2), np.clip(xs, 1, w - 2)
    c = img[yc, xc].astype(np.float64)
    hyy = img[yc - 1, xc] - 2 * c + img[yc + 1, xc]
    hxx = img[yc, xc - 1] - 2 * c + img[yc, xc + 1]
    hxy = (
        img[yc + 1, xc + 1] - img[yc + 1, xc - 1] - img[yc - 1, xc + 1] + img[yc - 1, xc - 1]
    ) / 4
    mean = (hxx + hyy) / 2
    dev = np.sqrt(((hxx - hyy) / 2) ** 2 + hxy**2)
    return mean - dev, mean + dev


def _ring_offsets(radius_px: float | _F64) -> tuple[_Idx, _Idx]:
    """Row and column offsets of 16 points on a circle (nearest pixel), ``(1 or N, 16)``.

    ``radius_px`` is one radius for every point or one per point, in pixels.
    """
    angles = np.arange(_RING_POINTS) * (2 * math.pi / _RING_POINTS)
    r = np.atleast_1d(np.asarray(radius_px, dtype=np.float64))[:, None]
    return (
        np.rint(r * np.sin(angles)[None, :]).astype(np.intp),
        np.rint(r * np.cos(angles)[None, :]).astype(np.intp),
    )


def _row_quantile(values: _F32, use: _Bool, q: float) -> _F64:
    """Per-row ``q``-th percentile (linear interpolation) of the entries where ``use`` is True.

    Every row must use at least one entry.
    """
    if values.shape[0] == 0:
        return np.zeros(0)
    ordered = np.sort(np.where(use, values, np.inf), axis=1).astype(np.float64)
    pos = (use.sum(axis=1) - 1) * (q / 100.0)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, ordered.shape[1] - 1)
    frac = pos - lo
    rows = np.arange(values.shape[0])
    top = np.where(frac > 0, ordered[rows, hi], 0.0)
    return np.asarray(ordered[rows, lo] * (1 - frac) + top * frac, dtype=np.float64)


@dataclass(frozen=True)
class _Rings:
    """Ring samples around points, with the samples that lie on *another* point's core."""

    values: _F32  # (N, 16) samples of the image the rings were taken on
    foreign: _Bool  # (N, 16) True where the sample sits on a neighbouring vesicle

    def quantile(self, q: float) -> _F64:
        """Per-point quantile of the samples not on a neighbour (all of them if < 5 remain)."""
        own = ~self.foreign
        use = np.where(own.sum(axis=1, keepdims=True) >= 5, own, True)
        return _row_quantile(self.values, use, q)


def _rings(image: _F32, ys: _Idx, xs: _Idx, radius_px: float | _F64, cores: _I32 | None) -> _Rings:
    """Ring samples of ``image`` around each (y, x), radius one or per point (px).

    ``cores`` labels point ``i``'s core ``i + 1``; samples on another point's core are
    flagged foreign.
    """
    dy, dx = _ring_offsets(radius_px)
    ry = np.clip(ys[:, None] + dy, 0, image.shape[0] - 1)
    rx = np.clip(xs[:, None] + dx, 0, image.shape[1] - 1)
    values = np.asarray(image[ry, rx], dtype=np.float32)
    if cores is None:
        return _Rings(values, np.zeros(values.shape, dtype=bool))
    owner = cores[ry, rx]
    own_id = np.arange(1, ys.size + 1)[:, None]
    return _Rings(values, (owner > 0) & (owner != own_id))


def _core_labels(shape: tuple[int, int], ys: _Idx, xs: _Idx, radius_px: float) -> _I32:
    """Disks of ``radius_px`` around the points, labelled ``1..N`` (later points win).

    A point with a negative row has no disk (its label stays unused).
    """
    r = max(1, math.floor(radius_px))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = dy * dy + dx * dx <= radius_px * radius_px
    use = ys >= 0
    oy = np.clip(ys[use, None] + dy[disk][None, :], 0, shape[0] - 1)
    ox = np.clip(xs[use, None] + dx[disk][None, :], 0, shape[1] - 1)
    cores = np.zeros(shape, dtype=np.int32)
    ids = np.arange(1, ys.size + 1, dtype=np.int32)[use]
    cores[oy, ox] = np.broadcast_to(ids[:, None], oy.shape)
    return cores


def _local_maxima(img: _F32, radius: int, floor: float) -> tuple[_Idx, _Idx]:
    """Pixels above ``floor`` (≥ 0) that are the largest within a square of ``radius``.

    Same as comparing with ``maximum_filter(size=2 radius + 1, mode="nearest")`` at the
    pixels above ``floor``: 3 × 3 maxima from shifted views first, the wider window only at
    those.
    """
    h, w = img.shape
    pad = np.pad(img, 1, mode="edge")
    rows = np.maximum(np.maximum(pad[:-2], pad[1:-1]), pad[2:])
    max3 = np.maximum(np.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
    ys, xs = np.nonzero((img >= max3) & (img > max(floor, 0.0)))
    if radius > 1 and ys.size:
        off = np.arange(-radius, radius + 1)
        wy = np.clip(ys[:, None, None] + off[None, :, None], 0, h - 1)
        wx = np.clip(xs[:, None, None] + off[None, None, :], 0, w - 1)
        keep = img[ys, xs] >= img[wy, wx].reshape(ys.size, -1).max(axis=1)
        ys, xs = ys[keep], xs[keep]
    return ys, xs


def _significant_maxima(ch: _Channel, p: CipParameters, px: float) -> tuple[_Idx, _Idx]:
    """DoG maxima (at least ``watershed_min_distance_um`` apart) that pass the noise test."""
    md = max(1, round(p.watershed_min_distance_um / px))
    floor = p.threshold_k * ch.dog_gain * math.sqrt(ch.noise.read2)  # σ is at least this
    ys, xs = _local_maxima(ch.dog, md, floor)
    sigma = ch.dog_gain * ch.noise.sigma(ch.high[ys, xs])
    keep = ch.dog[ys, xs] > p.threshold_k * sigma
    return ys[keep], xs[keep]


def _neighbour_cores(
    shape: tuple[int, int], ys: _Idx, xs: _Idx, p: CipParameters, px: float
) -> _I32 | None:
    """Core disks of the given maxima (labels ``1..N``), or ``None`` when disabled."""
    if p.neighbour_core_um <= 0:
        return None
    return _core_labels(shape, ys, xs, p.neighbour_core_um / px)


def _candidates(ch: _Channel, p: CipParameters, px: float) -> tuple[_Idx, _Idx]:
    """DoG maxima of one channel that pass the noise, roundness and contrast tests.

    The contrast test's ring leaves out samples on the core of another significant, round
    maximum (a neighbouring vesicle); maxima along a ridge are not round, so a ridge still
    counts against a maximum on it.
    """
    ys, xs = _significant_maxima(ch, p, px)
    strong, weak = _hessian(ch.low, ys, xs)
    with np.errstate(divide="ignore", invalid="ignore"):
        round_ = np.where((weak < 0) & (strong < 0), weak / strong, 0.0) >= p.min_roundness
    shape = (int(ch.low.shape[0]), int(ch.low.shape[1]))
    cores = _neighbour_cores(shape, np.where(round_, ys, -1), xs, p, px)
    rings = _rings(ch.low, ys, xs, p.ring_radius_um / px, cores)
    median = rings.quantile(50)
    level = np.maximum(median - ch.noise.dark, ch.noise.sigma(median))
    keep = round_ & (ch.low[ys, xs] - rings.quantile(75) > p.min_contrast * level)
    return ys[keep], xs[keep]


def _excess_at(ch: _Channel, ys: _Idx, xs: _Idx, rings: _Rings) -> tuple[_F64, _F64]:
    """Low-Gaussian value minus the ring median, and the ring median − dark (≥ noise σ)."""
    median = rings.quantile(50)
    return ch.low[ys, xs] - median, np.maximum(median - ch.noise.dark, ch.noise.sigma(median))


def _cytosol_ratio(red: _Channel, green: _Channel, ys: _Idx, xs: _Idx, radius: float) -> float:
    """Median pHluorin / DsRed ratio of the cytosol (above the dark levels) on rings.

    The cytosol is at neutral pH, so this is the field's reference ratio; 1.0 if no ring lies
    on cytosol.
    """
    r = _rings(red.low, ys, xs, radius, None).quantile(50) - red.noise.dark
    g = _rings(green.low, ys, xs, radius, None).quantile(50) - green.noise.dark
    ok = r > 0
    return float(np.median(g[ok] / r[ok])) if ok.any() else 1.0


def _green_bright(
    channels: tuple[_Channel, _Channel], ys: _Idx, xs: _Idx, radius: float, min_ratio: float
) -> tuple[_Bool, _F64, _F64]:
    """Whether the pHluorin excess is ≥ ``min_ratio`` × the DsRed excess at each point.

    Also returns the DsRed excess and DsRed cytosol level there.
    """
    red_ex, red_level = _excess_at(
        channels[0], ys, xs, _rings(channels[0].low, ys, xs, radius, None)
    )
    green_ex, _ = _excess_at(channels[1], ys, xs, _rings(channels[1].low, ys, xs, radius, None))
    return np.asarray(green_ex >= min_ratio * red_ex, dtype=bool), red_ex, red_level


@dataclass(frozen=True)
class _Markers:
    """Watershed markers: DsRed maxima first, then pHluorin-only ones."""

    ys: _Idx
    xs: _Idx
    n_red: int  # markers 1..n_red are DsRed maxima, the rest pHluorin-only


def _markers(
    channels: tuple[_Channel, _Channel], p: CipParameters, px: float
) -> tuple[_Markers, float]:
    """DsRed vesicles plus pHluorin-only phagophores, and the field's phagophore ratio.

    A pHluorin maximum is added when it is green-bright, DsRed-bright (not the halo a DoG puts
    around an autolysosome's green hole) and no green-bright DsRed maximum lies within the
    minimum distance (square window). Returns the markers and the absolute pHluorin / DsRed
    excess ratio of a phagophore.
    """
    (ry, rx), (gy, gx) = (_candidates(ch, p, px) for ch in channels)
    radius = p.ring_radius_um / px
    min_ratio = p.ratio_threshold * _cytosol_ratio(*channels, ry, rx, radius)
    bright_g, red_ex, red_level = _green_bright(channels, gy, gx, radius, min_ratio)
    ok = bright_g & (red_ex > p.min_contrast * red_level)
    bright_r = _green_bright(channels, ry, rx, radius, min_ratio)[0]
    md = max(1, round(p.watershed_min_distance_um / px))
    if bright_r.any() and ok.any():
        d = np.maximum(
            np.abs(gy[ok, None] - ry[None, bright_r]), np.abs(gx[ok, None] - rx[None, bright_r])
        )
        ok[np.flatnonzero(ok)[d.min(axis=1) <= md]] = False
    markers = _Markers(np.concatenate([ry, gy[ok]]), np.concatenate([rx, gx[ok]]), int(ry.size))
    return markers, min_ratio


# --------------------------------------------------------------------------------------------
# watershed, model outlines, classification
# --------------------------------------------------------------------------------------------


def _separate_instances(labels: _I32) -> _I32:
    """Zero every pixel that has an 8-neighbour with a larger nonzero label.

    Afterwards no two pixels of different labels are 8-adjacent.
    """
    neighbour_max = ndi.maximum_filter(labels, footprint=_EIGHT, mode="constant", cval=0)
    out = labels.copy()
    out[(labels > 0) & (neighbour_max > labels)] = 0
    return out


def _largest_piece(regions: _I32) -> _I32:
    """Keep only the largest 8-connected piece of each region.

    ``regions`` must already be separated (no two labels 8-adjacent), so every connected
    piece belongs to exactly one region.
    """
    pieces, n_pieces = ndi.label(regions > 0, structure=_EIGHT)
    if n_pieces == 0:
        return regions
    fg = pieces > 0
    size = np.bincount(pieces[fg], minlength=n_pieces + 1)
    owner = np.zeros(n_pieces + 1, dtype=np.int64)
    owner[pieces[fg]] = regions[fg]
    # For each region, the piece with the most pixels (ties: the lowest piece number).
    order = np.lexsort((np.arange(n_pieces + 1), -size, owner))
    first = np.ones(order.size, dtype=bool)
    first[1:] = owner[order][1:] != owner[order][:-1]
    keep = np.zeros(n_pieces + 1, dtype=bool)
    keep[order[first]] = True
    keep[0] = False
    return np.where(keep[pieces], regions, 0).astype(np.int32)


def _result(regions: _I32, cls: npt.NDArray[np.uint8]) -> CipResult:
    """Mask and instance labels of separated regions with a class each (0 drops a region).

    ``regions`` are 8-connected and no two are 8-adjacent, so each region is one component
    of its class: instances are renumbered phagophores first, then autolysosomes.
    """
    order = np.lexsort((np.arange(cls.size), cls))  # by class, then by region id
    kept = order[cls[order] > 0]
    new_id = np.zeros(cls.size, dtype=np.int32)
    new_id[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    return CipResult(mask=cls[regions], labels=new_id[regions])


def _object_backgrounds(
    channels: tuple[_Channel, _Channel],
    m: _Markers,
    p: CipParameters,
    px: float,
    radius_px: float | _F64,
) -> _F32:
    """``(2, N + 1)`` local background of each object: ring median of the denoised channel.

    ``radius_px`` is the ring radius, one or per object (px). Ring samples on another
    object's core are left out (dense puncta); index 0 unused.
    """
    shape = (int(channels[0].den.shape[0]), int(channels[0].den.shape[1]))
    cores = _neighbour_cores(shape, m.ys, m.xs, p, px)
    bg = np.zeros((2, m.ys.size + 1), dtype=np.float32)
    for c, ch in enumerate(channels):
        bg[c, 1:] = _rings(ch.den, m.ys, m.xs, radius_px, cores).quantile(50)
    return bg


@dataclass(frozen=True)
class _BasinPixels:
    """The pixels of a basin map, grouped by basin, and what is needed to measure them.

    ``idx`` are flat indices of every basin pixel, ``lab`` their basin, ``green`` whether the
    basin is a pHluorin-only marker's (measured on pHluorin), ``order`` sorts them by basin
    and ``starts`` marks each basin's first pixel in that order.
    """

    idx: _Idx
    lab: _Idx
    green: _Bool
    order: _Idx
    starts: _Idx
    shape: tuple[int, int]
    n: int  # number of markers (basin labels 1..n)

    @classmethod
    def of(cls, basins: _I32, n: int, n_red: int) -> _BasinPixels:
        idx = np.flatnonzero(basins)
        lab = basins.ravel()[idx].astype(np.intp)
        order = np.argsort(lab, kind="stable")
        sorted_lab = lab[order]
        starts = np.flatnonzero(np.r_[True, sorted_lab[1:] != sorted_lab[:-1]])
        shape = (int(basins.shape[0]), int(basins.shape[1]))
        return cls(idx, lab, lab > n_red, order, starts, shape, n)

    def excess(self, den: tuple[_F32, _F32], bg: _F32) -> _F64:
        """Each pixel's excess over its basin's background, on its basin's channel."""
        red = den[0].ravel()[self.idx] - bg[0][self.lab]
        green = den[1].ravel()[self.idx] - bg[1][self.lab]
        return np.asarray(np.where(self.green, green, red), dtype=np.float64)

    def gradient(self, den: tuple[_F32, _F32]) -> _F64:
        """Magnitude of the central-difference gradient at each pixel, on its channel."""
        h, w = self.shape
        y, x = np.divmod(self.idx, w)
        up, down = np.maximum(y - 1, 0) * w + x, np.minimum(y + 1, h - 1) * w + x
        left, right = y * w + np.maximum(x - 1, 0), y * w + np.minimum(x + 1, w - 1)
        out = np.zeros(self.idx.size)
        for c, mine in ((0, ~self.green), (1, self.green)):
            d = den[c].ravel()
            gy = d[down[mine]] - d[up[mine]]
            gx = d[right[mine]] - d[left[mine]]
            out[mine] = 0.5 * np.hypot(gy, gx)
        return out

    def peak(self, values: _F64) -> _F64:
        """Largest value of each basin, ``(n + 1,)``."""
        out = np.zeros(self.n + 1)
        if self.idx.size:
            best = np.maximum.reduceat(values[self.order], self.starts)
            out[self.lab[self.order][self.starts]] = best
        return out


def _basin_pixels(basins: tuple[_I32, _I32], m: _Markers) -> tuple[_BasinPixels, _BasinPixels]:
    """The DsRed and the pHluorin-only basin maps as pixel sets."""
    return (
        _BasinPixels.of(basins[0], m.ys.size, m.n_red),
        _BasinPixels.of(basins[1], m.ys.size, m.n_red),
    )


def _halfmax_area(
    bp: _BasinPixels, excess: _F64, grad: _F64, p: CipParameters
) -> tuple[_F64, _F64]:
    """Area (px) of each basin above ``extent_fraction`` of its peak excess, ``(n + 1,)``.

    Returns the sub-pixel area — a pixel counts by the fraction of it above the level,
    ``clip(0.5 + (e − level) / |∇e|, 0, 1)`` (the level line crossing it with the local
    gradient), where a pixel count would only take the values 1, 5, 9, 13 … for a
    sub-resolution blob — and the pixel count (the outline's own area).
    """
    level = p.extent_fraction * bp.peak(excess)[bp.lab]
    above = (excess >= level) & (excess > 0)
    frac = np.clip(0.5 + (excess - level) / np.maximum(grad, 1e-6), 0.0, 1.0)
    frac[excess <= 0] = 0.0
    soft = np.bincount(bp.lab, weights=frac, minlength=bp.n + 1).astype(np.float64)
    return soft, np.bincount(bp.lab[above], minlength=bp.n + 1).astype(np.float64)


def _backgrounds(
    channels: tuple[_Channel, _Channel],
    m: _Markers,
    bps: tuple[_BasinPixels, _BasinPixels],
    p: CipParameters,
    px: float,
) -> _F32:
    """Object backgrounds on rings just outside each object's blur.

    A first background on the small contrast ring gives each object's half-maximum radius
    ``r``; the background is then the ring median at ``r + outline_ring_margin_um``, within
    ``ring_radius_um`` … ``outline_ring_um``.
    """
    first = _object_backgrounds(channels, m, p, px, p.ring_radius_um / px)
    den = (channels[0].den, channels[1].den)
    area = np.zeros(m.ys.size + 1)
    for bp in bps:  # DsRed and pHluorin-only basins: different labels
        area += _halfmax_area(bp, bp.excess(den, first), bp.gradient(den), p)[0]
    radius = np.sqrt(area[1:] / math.pi) + p.outline_ring_margin_um / px
    radius = np.clip(radius, p.ring_radius_um / px, p.outline_ring_um / px)
    return _object_backgrounds(channels, m, p, px, radius)


def _flood(
    channels: tuple[_Channel, _Channel], m: _Markers, p: CipParameters, px: float
) -> tuple[_I32, _I32]:
    """Watershed basins within a positive DoG and ``max_radius_um`` of their marker.

    DsRed markers flood the smoothed DsRed; pHluorin-only markers flood the smoothed
    pHluorin (where they are the peak: on DsRed they sit on a brighter neighbour's flank).
    The two basin maps are returned apart: a pHluorin-only *outline* takes its pixels from
    the DsRed ones, not its whole basin.
    """
    red, green = channels
    shape = (int(red.low.shape[0]), int(red.low.shape[1]))
    markers = np.zeros(shape, dtype=np.int32)
    markers[m.ys, m.xs] = np.arange(1, m.ys.size + 1, dtype=np.int32)
    reach = p.max_radius_um / px
    near = ndi.maximum_filter(markers > 0, size=2 * math.floor(reach) + 1, mode="constant")
    red_markers = np.where(markers <= m.n_red, markers, 0)
    red_basins = _watershed(red.low, red_markers, near & ((red.dog > 0) | (green.dog > 0)))
    green_basins = np.zeros(shape, dtype=np.int32)
    if m.ys.size > m.n_red:
        green_markers = np.where(markers > m.n_red, markers, 0)
        green_basins = _watershed(green.low, green_markers, near & (green.dog > 0))
    return _within(red_basins, m, reach), _within(green_basins, m, reach)


def _within(basins: _I32, m: _Markers, reach: float) -> _I32:
    """``basins`` without the pixels farther than ``reach`` (px) from their own marker."""
    idx = np.flatnonzero(basins)
    lab = basins.ravel()[idx] - 1
    y, x = np.divmod(idx, basins.shape[1])
    far = (y - m.ys[lab]) ** 2 + (x - m.xs[lab]) ** 2 > reach * reach
    out = basins.copy()
    out.ravel()[idx[far]] = 0
    return out


def _watershed(signal: _F32, markers: _I32, mask: _Bool) -> _I32:
    """Basins of ``markers`` flooding ``-signal`` (bright first) within ``mask``, 8-connected."""
    basins = watershed(-signal, markers, mask=mask, connectivity=2)  # type: ignore[no-untyped-call]
    return np.asarray(basins, dtype=np.int32)


def _nominal_blur(p: CipParameters, px: float) -> float:
    """Blur σ (px) of the denoised image: the nominal PSF and the light denoising."""
    den_px = p.denoise_sigma_um / px
    return math.hypot(p.psf_sigma_um / px, den_px if den_px >= 0.3 else 0.0)


def _trimmed(
    bps: tuple[_BasinPixels, _BasinPixels],
    den: tuple[_F32, _F32],
    bg: _F32,
    p: CipParameters,
    px: float,
) -> tuple[_I32, _F64]:
    """Model outlines of the DsRed basins, overridden where a pHluorin-only outline lies.

    Returns the separated regions (largest piece each) and every object's half-maximum
    outline area (pixel count, ``(N + 1,)``).
    """
    regions, area = _model_outline(bps[0], den, bg, p, px)
    green, green_area = _model_outline(bps[1], den, bg, p, px)
    regions = np.where(green > 0, green, regions)
    return _largest_piece(_separate_instances(regions)), area + green_area


def _model_outline(
    bp: _BasinPixels, den: tuple[_F32, _F32], bg: _F32, p: CipParameters, px: float
) -> tuple[_I32, _F64]:
    """Model outlines: each basin keeps its ``π R²`` pixels of highest excess.

    Each basin's area at ``extent_fraction`` of its peak excess (on its own channel) gives,
    through the blurred-sphere table, the vesicle's radius ``R``. Objects narrower than a
    point source seen through the blur are dropped. ``px`` is the pixel size of the grid.
    Returns the outlines (not separated) and each object's half-maximum outline area (pixel
    count, ``(N + 1,)``; 0 for the objects not in ``bp``).
    """
    excess = bp.excess(den, bg)
    area, outline = _halfmax_area(bp, excess, bp.gradient(den), p)
    sigma = _nominal_blur(p, px)
    r_min = p.min_vesicle_diameter_um / 2 / px
    r_max = p.max_vesicle_diameter_um / 2 / px
    radius = np.clip(_radius_from_halfmax(area, sigma), r_min, r_max)
    keep = np.maximum(np.rint(math.pi * radius * radius), 1.0)
    keep[area < p.min_spot_scale**2 * math.pi * float(_halfmax_radius(0.0, sigma)) ** 2] = 0
    keep[0] = 0
    # rank each basin's positive pixels by excess, brightest first
    pos = excess > 0
    order = np.lexsort((-excess[pos], bp.lab[pos]))
    lab = bp.lab[pos][order]
    start = np.searchsorted(lab, np.arange(bp.n + 1))
    chosen = order[(np.arange(lab.size) - start[lab]) < keep[lab]]
    regions = np.zeros(bp.shape[0] * bp.shape[1], dtype=np.int32)
    regions[bp.idx[pos][chosen]] = bp.lab[pos][chosen]
    return regions.reshape(bp.shape), outline


def _classify(
    den: tuple[_F32, _F32],
    bg: _F32,
    regions: _I32,
    halfmax_px: _F64,
    min_ratio: float,
    p: CipParameters,
    px: float,
) -> CipResult:
    """Size-filter and classify each region, then relabel per-class components.

    ``den`` holds the denoised DsRed and pHluorin on the grid of ``regions`` (pixel size
    ``px``); ``bg`` is ``(2, N + 1)``, each region's local background; ``halfmax_px`` its
    half-maximum area; ``min_ratio`` the absolute pHluorin / DsRed excess ratio of a
    phagophore.
    """
    n = bg.shape[1] - 1
    idx = np.flatnonzero(regions)
    flat = regions.ravel()[idx]
    area_px = np.bincount(flat, minlength=n + 1).astype(np.float64)
    red, green = (
        np.bincount(flat, weights=d.ravel()[idx], minlength=n + 1) - area_px * bg[c]
        for c, d in enumerate(den)
    )
    area_um2 = area_px * px * px
    blurred_um = 2.0 * np.sqrt(halfmax_px * px * px / math.pi)
    valid = (area_um2 >= p.min_area_um2) & (area_um2 <= p.max_area_um2) & (red > 0)
    green_bright = green >= min_ratio * red
    cls = np.zeros(n + 1, dtype=np.uint8)
    cls[valid & green_bright & (blurred_um <= p.phagophore_max_diameter_um)] = 1
    cls[valid & ~green_bright] = 2
    cls[0] = 0
    return _result(regions, cls)


def _fine_grid(
    image: _F32, basins: tuple[_I32, _I32], factor: int, p: CipParameters, px: float
) -> tuple[tuple[_I32, _I32], tuple[_F32, _F32]]:
    """Basins (nearest) and denoised channels on the original grid of a binned field."""
    shape = (int(image.shape[1]), int(image.shape[2]))

    def up(b: _I32) -> _I32:
        big = np.repeat(np.repeat(b, factor, axis=0), factor, axis=1)[: shape[0], : shape[1]]
        return np.ascontiguousarray(big)

    den_px = p.denoise_sigma_um / px
    red, green = (
        np.asarray(ndi.gaussian_filter(c, den_px) if den_px >= 0.3 else c, dtype=np.float32)
        for c in image
    )
    return (up(basins[0]), up(basins[1])), (red, green)


def segment_cip(
    image: npt.NDArray[Any],
    pixel_size_um: float,
    *,
    params: CipParameters | None = None,
) -> CipResult:
    """Segment phagophores and autolysosomes in one Rosella field.

    Parameters
    ----------
    image : (2, H, W) ndarray
        Field ordered ``[DsRed, pHluorin]`` in raw camera units (offset included); any real
        dtype, converted to float32.
    pixel_size_um : float
        Pixel size in µm; every physical parameter is converted with it.
    params : CipParameters, optional
        Pipeline parameters; ``CipParameters()`` when omitted.

    Returns
    -------
    CipResult
        ``mask`` (uint8, 0/1/2) and instance ``labels`` (int32), both ``(H, W)``.

    Raises
    ------
    ValueError
        If ``image`` is not ``(2, H, W)`` (the message quotes the shape), smaller than 8 × 8,
        not real-valued or contains NaN/inf, or ``pixel_size_um`` is not positive.
    """
    p = params if params is not None else CipParameters()
    img = _validate_image(image, pixel_size_um)
    shape = (int(img.shape[1]), int(img.shape[2]))
    factor = _bin_factor(p, float(pixel_size_um))
    px = float(pixel_size_um) * factor
    work = _bin(img, factor)
    channels = (_prepare(work[0], p, px), _prepare(work[1], p, px))
    markers, min_ratio = _markers(channels, p, px)
    if markers.ys.size == 0:
        return CipResult(np.zeros(shape, np.uint8), np.zeros(shape, np.int32))
    basins = _flood(channels, markers, p, px)
    bg = _backgrounds(channels, markers, _basin_pixels(basins, markers), p, px)
    den = (channels[0].den, channels[1].den)
    if factor > 1:
        basins, den = _fine_grid(img, basins, factor, p, float(pixel_size_um))
    regions, halfmax = _trimmed(_basin_pixels(basins, markers), den, bg, p, float(pixel_size_um))
    return _classify(den, bg, regions, halfmax, min_ratio, p, float(pixel_size_um))


# --------------------------------------------------------------------------------------------
# per-plate self-calibration
# --------------------------------------------------------------------------------------------


def _object_statistics(
    image: npt.NDArray[Any], pixel_size_um: float, p: CipParameters
) -> tuple[_F64, _F64]:
    """Sub-pixel half-maximum areas (µm²) of a field's bright DsRed objects; objects' ratios.

    Ratios are each object's pHluorin / DsRed excess relative to the field's cytosolic ratio.
    """
    img = _validate_image(image, pixel_size_um)
    factor = _bin_factor(p, float(pixel_size_um))
    px = float(pixel_size_um) * factor
    work = _bin(img, factor)
    channels = (_prepare(work[0], p, px), _prepare(work[1], p, px))
    m, min_ratio = _markers(channels, p, px)
    if m.ys.size == 0:
        return np.zeros(0), np.zeros(0)
    bps = _basin_pixels(_flood(channels, m, p, px), m)
    bg = _backgrounds(channels, m, bps, p, px)
    den = (channels[0].den, channels[1].den)
    regions, _ = _trimmed(bps, den, bg, p, px)
    halfmax, _ = _halfmax_area(bps[0], bps[0].excess(den, bg), bps[0].gradient(den), p)
    flat = regions.ravel()
    n = bg.shape[1] - 1
    area = np.bincount(flat, minlength=n + 1).astype(np.float64)
    red, green = (
        np.bincount(flat, weights=d.ravel(), minlength=n + 1) - area * bg[c]
        for c, d in enumerate(den)
    )
    ok = (area > 0) & (red > 0)
    ok[0] = False
    snr = channels[0].dog[m.ys, m.xs] / (
        channels[0].dog_gain * channels[0].noise.sigma(channels[0].high[m.ys, m.xs])
    )
    bright = np.zeros(n + 1, dtype=bool)
    bright[1 : m.n_red + 1] = snr[: m.n_red] > 3 * p.threshold_k
    ratio = green[ok] / red[ok] * (p.ratio_threshold / min_ratio)
    return halfmax[ok & bright] * px * px, ratio


def _psf_from_halfmax(area_um2: float, p: CipParameters, pixel_size_um: float) -> float:
    """PSF σ (µm) at which the smallest vesicle's blurred half-maximum disk has ``area_um2``."""
    px = pixel_size_um * _bin_factor(p, pixel_size_um)
    den_px = p.denoise_sigma_um / px
    den = den_px if den_px >= 0.3 else 0.0
    r_small = p.min_vesicle_diameter_um / 2 / px
    grid = np.linspace(0.08, 0.6, 53)
    areas = [
        math.pi * float(_halfmax_radius(r_small, math.hypot(g / px, den))) ** 2 * px * px
        for g in grid
    ]
    return float(np.interp(area_um2, np.asarray(areas), grid))


def _ratio_valley(ratios: _F64, default: float) -> float:
    """Otsu threshold between the quenched and the bright green/red ratio modes.

    On the relative ratios clipped to [−0.25, 1.75] (64 bins); the result is kept within
    [0.3, 0.75], and ``default`` is returned when either side holds under 10 % of the objects
    (one mode only: nothing to split).
    """
    r = np.clip(ratios, -0.25, 1.75)
    if r.size < 40:
        return default
    hist, edges = np.histogram(r, bins=64, range=(-0.25, 1.75))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = ((hist * centres).sum() - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    k = int(np.argmax(w0 * w1 * (m0 - m1) ** 2))
    if min(w0[k], w1[k]) < 0.1 * r.size:
        return default
    return float(np.clip(edges[k + 1], 0.3, 0.75))


def calibrate_cip(
    images: Sequence[npt.NDArray[Any]],
    pixel_size_um: float,
    *,
    params: CipParameters | None = None,
    source: str = "",
) -> CipParameters:
    """Estimate the PSF σ and the green/red ratio threshold from a plate's own fields.

    The PSF σ is the one at which the smallest vesicle (``min_vesicle_diameter_um``) has the
    10th-percentile half-maximum area of the plate's bright DsRed objects (the smallest
    vesicles are sub-resolution, so their blur is the PSF's). The ratio threshold is the Otsu
    valley of the objects' log relative green/red ratios (phagophores vs autolysosomes),
    kept when the two modes are not both populated. No truth is used.

    Parameters
    ----------
    images : sequence of (2, H, W) ndarray
        A sample of the plate's fields ``[DsRed, pHluorin]`` (8–16 are plenty).
    pixel_size_um : float
        Pixel size, µm.
    params : CipParameters, optional
        Starting parameters (defaults when omitted); every other field is kept.
    source : str
        What the fields are (plate id, fields used), written into the record.

    Returns
    -------
    CipParameters
        ``params`` with ``psf_sigma_um`` and ``ratio_threshold`` estimated and ``calibration``
        recording the estimates, the statistics they came from and the values they replaced.

    Raises
    ------
    ValueError
        If no image is given, or an image or the pixel size is invalid.
    """
    p = params if params is not None else CipParameters()
    if not images:
        raise ValueError("calibrate_cip needs at least one field")
    stats = [_object_statistics(im, pixel_size_um, p) for im in images]
    areas = np.concatenate([a for a, _ in stats])
    ratios = np.concatenate([r for _, r in stats])
    psf = p.psf_sigma_um
    # the smallest vesicles show the blur only where it spans a few pixels
    px = pixel_size_um * _bin_factor(p, pixel_size_um)
    resolved = _nominal_blur(p, px) >= _MIN_CALIBRATION_BLUR_PX
    if areas.size >= 20 and resolved:
        psf = _psf_from_halfmax(float(np.percentile(areas, 10)), p, pixel_size_um)
    threshold = _ratio_valley(ratios, p.ratio_threshold)
    update = {"psf_sigma_um": round(psf, 4), "ratio_threshold": round(threshold, 4)}
    record: dict[str, Any] = {
        "source": source,
        "fields": len(images),
        "objects_for_psf": int(areas.size),
        "psf_estimated": bool(areas.size >= 20 and resolved),
        "objects_for_ratio": int(ratios.size),
    }
    for name, value in update.items():
        record[name] = {"before": getattr(p, name), "after": value}
    return p.model_copy(update={**update, "calibration": record})
