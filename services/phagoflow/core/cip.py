"""The conventional image pipeline (CIP): Rosella vesicles segmented with scikit-image and scipy.

The CIP of Garcia Santa Cruz et al. (Sci Rep 2022, doi:10.1038/s41598-022-15623-7) produces the
weak labels the CDL U-Net learns from. It is written the way an image analyst would write it:
DsRed is bright in every vesicle, so vesicles are *found* in DsRed; pHluorin decides the class
(and adds phagophores that hide on the flank of a brighter autolysosome).

1. **Denoising and background (flat-field) correction.** Each channel is lightly smoothed
   (Gaussian, ``denoise_sigma_um``). The dark level (camera offset + medium) is a low percentile
   (``dark_percentile``) of the field, so a field needs a little glass or a few nuclei (it
   always has them in practice; a field of pure cytosol makes the contrast test lenient). The
   local background of a vesicle is the cytosol around it: the median of 16 samples on a ring
   of ``ring_radius_um`` around its maximum, per channel (no global background image).
   Vignetting and uneven expression scale vesicles, cytosol and shot noise alike, so every test
   below is relative (to the local noise or the local cytosol), never an absolute intensity.
2. **Difference of Gaussians** at vesicle scale (``dog_low_sigma_um`` − ``dog_high_sigma_um``)
   in each channel.
3. **Adaptive thresholding of DoG maxima** (maxima at least ``watershed_min_distance_um``
   apart). A maximum is a vesicle when (a) its DoG exceeds ``threshold_k`` × the local noise σ
   (robust MAD of 2 × 2 Haar differences in blocks of ``noise_block_um``, propagated through
   the DoG); (b) its low-Gaussian value exceeds the upper quartile of its ring by
   ``min_contrast`` × the cytosol level (ring median − dark level), which rejects cytoplasmic
   texture and the bright rims of cells along nuclei and colony edges (a vesicle is brighter
   than its *whole* surround); (c) it is round: weaker / stronger principal curvature
   ≥ ``min_roundness`` (rejects ridges and edges). pHluorin maxima count only if they are
   green-bright (see 6) and do not duplicate a green-bright DsRed maximum.
4. **Watershed split** of touching objects: each accepted DsRed maximum is a marker; markers
   flood the smoothed DsRed within the positive DoG and at most ``max_radius_um`` from a
   marker. pHluorin-only maxima flood the smoothed pHluorin and take their pixels. Each basin
   keeps the pixels whose excess over its local background is ≥ ``extent_fraction`` × its peak
   excess (0.5: the half-maximum outline), largest connected piece only; touching instances
   are then separated by a one-pixel line.
5. **Size filters**: objects smaller than ``min_area_um2`` or larger than ``max_area_um2``
   (µm²) are dropped.
6. **Classification** by green/red ratio and size. The ratio is the object's summed pHluorin
   excess over its summed DsRed excess, *relative to the field's cytosolic ratio* (the cytosol
   is at neutral pH, so this cancels channel gains; the cytosolic ratio is the median over the
   rings of the DsRed maxima). Below ``ratio_threshold`` the object is an
   **autolysosome** (2, green quenched); at or above it, an object no wider than
   ``phagophore_max_diameter_um`` (equivalent-circle diameter) is a **phagophore** (1), a wider
   one is neither class (in practice a blob of cytosol) and is dropped.

Mask convention: touching instances are separated in ``mask`` by a one-pixel background line
that breaks 8-connectivity, so the 8-connected components of each class of ``mask`` are exactly
the instances in ``labels`` (:func:`phagoflow.core.counting.measure_objects` finds the same
objects with or without ``labels``).

Every parameter lives in the frozen :class:`CipParameters`; lengths are in µm and areas in µm²,
converted with the field's pixel size, so the same scene imaged at another pixel size gives the
same objects. Known limits: touching vesicles closer than about the PSF width are one object;
outlines are half-maximum outlines of the *blurred* vesicle, so sub-resolution phagophores come
out about as large as the PSF (no deconvolution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import ndimage as ndi
from skimage.segmentation import watershed

__all__ = ["CipParameters", "CipResult", "segment_cip"]

_F32 = npt.NDArray[np.float32]
_I32 = npt.NDArray[np.int32]
_Bool = npt.NDArray[np.bool_]
_EIGHT = np.ones((3, 3), dtype=bool)
_MAD_TO_SIGMA = 1.4826  # Gaussian sigma / median absolute deviation
_RING_POINTS = 16


class CipParameters(BaseModel):
    """All CIP parameters. Frozen; lengths in µm, areas in µm², the rest unitless.

    Defaults were chosen by looking at Rosella fields at ~0.2 µm/px (Opera, 60× water,
    binning 2; the narrowest puncta have σ ≈ 0.3 µm): phagophores 0.3–0.6 µm, autolysosomes
    0.6–1.5 µm. Serialise with ``model_dump()`` / ``model_dump_json()``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    denoise_sigma_um: float = Field(
        0.1,
        ge=0,
        description="Gaussian σ (µm) of the light denoising of the image that object outlines "
        "and intensities are measured on; 0 disables.",
    )
    ring_radius_um: float = Field(
        1.2,
        gt=0,
        description="Radius (µm) of the ring around a maximum on which its local background "
        "(cytosol) is sampled: just outside the largest vesicle's blurred edge.",
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
        "a sub-resolution vesicle).",
    )
    dog_high_sigma_um: float = Field(
        1.0,
        gt=0,
        description="Large Gaussian σ (µm) of the difference of Gaussians (above the largest "
        "vesicle radius).",
    )
    noise_block_um: float = Field(
        8.0,
        gt=0,
        description="Block size (µm) of the local robust (MAD) estimate of the pixel noise.",
    )
    threshold_k: float = Field(
        5.0,
        gt=0,
        description="Noise test: a DoG maximum must exceed threshold_k × the DoG's local noise "
        "σ (pixel noise σ from the MAD, times the DoG's white-noise gain).",
    )
    min_contrast: float = Field(
        0.2,
        ge=0,
        description="Local contrast test: the low-Gaussian peak minus the ring's upper quartile "
        "must exceed min_contrast × (ring median − dark level). A vesicle is brighter than "
        "its whole surround; the rim of a cell or colony edge is not.",
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
        ge=0,
        lt=1,
        description="Each object keeps its pixels whose excess over the local background is at "
        "least this fraction of its peak excess (0.5: half-maximum outline).",
    )
    max_radius_um: float = Field(
        1.1,
        gt=0,
        description="Farthest distance (µm) an object may extend from its maximum (the "
        "watershed floods no farther): the largest autolysosome radius plus the PSF.",
    )
    min_area_um2: float = Field(
        0.08,
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
        description="Largest equivalent-circle diameter (µm) of a phagophore outline; "
        "pHluorin-bright objects above it are neither class and are dropped.",
    )

    @model_validator(mode="after")
    def _check_order(self) -> CipParameters:
        if self.dog_high_sigma_um <= self.dog_low_sigma_um:
            raise ValueError(
                f"dog_high_sigma_um ({self.dog_high_sigma_um}) must exceed dog_low_sigma_um "
                f"({self.dog_low_sigma_um})"
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
# background and noise
# --------------------------------------------------------------------------------------------


def _block_median(img: _F32, block: int) -> _F32:
    """Median of non-overlapping ``block``² tiles (edge tiles padded by reflection)."""
    h, w = img.shape
    nh, nw = -(-h // block), -(-w // block)
    padded = np.pad(img, ((0, nh * block - h), (0, nw * block - w)), mode="symmetric")
    tiles = padded.reshape(nh, block, nw, block).transpose(0, 2, 1, 3).reshape(nh, nw, -1)
    return np.asarray(np.median(tiles, axis=2), dtype=np.float32)


def _upsample(small: _F32, block: int, shape: tuple[int, int]) -> _F32:
    """Bilinear upsampling of a tile grid (values at tile centres) back to ``shape``."""

    def axis(n: int, m: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], _F32]:
        pos = np.clip((np.arange(n, dtype=np.float32) + 0.5) / block - 0.5, 0, m - 1)
        i0 = np.minimum(pos.astype(np.intp), m - 1)
        return i0, np.minimum(i0 + 1, m - 1), (pos - i0).astype(np.float32)

    y0, y1, fy = axis(shape[0], small.shape[0])
    x0, x1, fx = axis(shape[1], small.shape[1])
    top = small[y0][:, x0] * (1 - fx) + small[y0][:, x1] * fx
    bottom = small[y1][:, x0] * (1 - fx) + small[y1][:, x1] * fx
    return np.asarray(top * (1 - fy)[:, None] + bottom * fy[:, None], dtype=np.float32)


def _pixel_noise(channel: _F32, block: int) -> _F32:
    """Local robust σ of the pixel noise, from 2 × 2 Haar differences.

    ``(a - b - c + d) / 2`` over each 2 × 2 tile cancels smooth structure (the image is blurred
    by the PSF) and has the pixel noise σ for white noise; 1.4826 × the median of its absolute
    value in blocks of ``block`` pixels is the local σ.
    """
    h, w = channel.shape
    c = channel[: h - h % 2, : w - w % 2]
    haar = (c[0::2, 0::2] - c[0::2, 1::2] - c[1::2, 0::2] + c[1::2, 1::2]) / 2
    half = max(2, block // 2)
    small = _block_median(np.abs(haar).astype(np.float32), half)
    small = ndi.uniform_filter(small, size=3, mode="nearest")
    floor = max(float(np.median(small)) * 0.05, 1e-6)
    return _upsample(np.maximum(small, floor) * np.float32(_MAD_TO_SIGMA), 2 * half, (h, w))


def _dog_noise_gain(low_px: float, high_px: float) -> float:
    """σ of a DoG response to unit white noise (continuous Gaussian kernels)."""
    var = (
        1 / (4 * math.pi * low_px**2)
        + 1 / (4 * math.pi * high_px**2)
        - 1 / (math.pi * (low_px**2 + high_px**2))
    )
    return math.sqrt(max(var, 0.0))


def _ring_samples(
    image: _F32, ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp], radius_px: float
) -> _F32:
    """Values of ``image`` at 16 points on a circle of ``radius_px`` around each (y, x).

    Returns an ``(N, 16)`` array (nearest pixel; points outside the field are clamped).
    """
    angles = np.arange(_RING_POINTS) * (2 * math.pi / _RING_POINTS)
    ry = np.rint(ys[:, None] + radius_px * np.sin(angles)[None, :]).astype(np.intp)
    rx = np.rint(xs[:, None] + radius_px * np.cos(angles)[None, :]).astype(np.intp)
    ry = np.clip(ry, 0, image.shape[0] - 1)
    rx = np.clip(rx, 0, image.shape[1] - 1)
    return np.asarray(image[ry, rx], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# detection, watershed, classification
# --------------------------------------------------------------------------------------------


def _roundness(smooth: _F32, ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp]) -> _F32:
    """Weaker / stronger principal curvature at the given pixels (0 unless both negative)."""
    h, w = smooth.shape
    yc = np.clip(ys, 1, h - 2)
    xc = np.clip(xs, 1, w - 2)
    c = smooth[yc, xc]
    hyy = smooth[yc - 1, xc] - 2 * c + smooth[yc + 1, xc]
    hxx = smooth[yc, xc - 1] - 2 * c + smooth[yc, xc + 1]
    hxy = (
        smooth[yc + 1, xc + 1]
        - smooth[yc + 1, xc - 1]
        - smooth[yc - 1, xc + 1]
        + smooth[yc - 1, xc - 1]
    ) / 4
    mean = (hxx + hyy) / 2
    dev = np.sqrt(((hxx - hyy) / 2) ** 2 + hxy**2)
    strong, weak = mean - dev, mean + dev  # strong <= weak
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((weak < 0) & (strong < 0), weak / strong, 0.0)
    return ratio.astype(np.float32)


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

    Trimming at a fraction of the peak can leave a few loose pixels of a region; they are
    noise, not objects. ``regions`` must already be separated (no two labels 8-adjacent), so
    every connected piece belongs to exactly one region.
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


def _component_labels(mask: npt.NDArray[np.uint8]) -> _I32:
    """8-connected components of each class, phagophores numbered first."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    offset = 0
    for value in (1, 2):
        lab, k = ndi.label(mask == value, structure=_EIGHT)
        if k:
            labels[lab > 0] = lab[lab > 0] + offset
            offset += k
    return labels


@dataclass(frozen=True)
class _Channel:
    """Per-channel intermediate images (all ``(H, W)`` float32) and the dark level."""

    den: _F32  # lightly denoised
    low: _F32  # low Gaussian of the DoG
    dog: _F32  # difference of Gaussians
    noise: _F32  # local σ of the pixel noise
    dark: float  # dark level (offset + medium), counts


def _prepare(channel: _F32, p: CipParameters, px: float) -> _Channel:
    """Denoise, DoG, local noise and dark level of one channel."""
    den = channel
    if p.denoise_sigma_um > 0:
        den = ndi.gaussian_filter(channel, p.denoise_sigma_um / px)
    low = ndi.gaussian_filter(channel, p.dog_low_sigma_um / px)
    dog = low - ndi.gaussian_filter(channel, p.dog_high_sigma_um / px)
    noise = _pixel_noise(channel, max(4, round(p.noise_block_um / px)))
    dark = float(np.percentile(den[::2, ::2], p.dark_percentile))
    return _Channel(den=den, low=low, dog=dog, noise=noise, dark=dark)


def _candidates(
    ch: _Channel, p: CipParameters, px: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """DoG maxima of one channel that pass the noise, contrast and roundness tests."""
    md = max(1, round(p.watershed_min_distance_um / px))
    gain = _dog_noise_gain(p.dog_low_sigma_um / px, p.dog_high_sigma_um / px)
    is_max = ch.dog == ndi.maximum_filter(ch.dog, size=2 * md + 1, mode="nearest")
    is_max &= ch.dog > p.threshold_k * gain * ch.noise
    ys, xs = np.nonzero(is_max)
    ring = _ring_samples(ch.low, ys, xs, p.ring_radius_um / px)
    level = np.maximum(np.median(ring, axis=1) - ch.dark, ch.noise[ys, xs])
    keep = ch.low[ys, xs] - np.percentile(ring, 75, axis=1) > p.min_contrast * level
    keep &= _roundness(ch.low, ys, xs) >= p.min_roundness
    return ys[keep], xs[keep]


def _cytosol_ratio(red: _Channel, green: _Channel, ring_values: tuple[_F32, _F32]) -> float:
    """Median pHluorin / DsRed ratio of the cytosol (above the dark levels) on the given rings.

    The cytosol is at neutral pH, so this is the field's reference ratio; 1.0 if no ring lies
    on cytosol.
    """
    r = np.median(ring_values[0], axis=1) - red.dark
    g = np.median(ring_values[1], axis=1) - green.dark
    ok = r > 0
    return float(np.median(g[ok] / r[ok])) if ok.any() else 1.0


def _excess_at(
    ch: _Channel, ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp], ring_radius: float
) -> tuple[_F32, _F32]:
    """Low-Gaussian value minus ring median at each point, and the ring median − dark level."""
    ring_med = np.median(_ring_samples(ch.low, ys, xs, ring_radius), axis=1)
    return ch.low[ys, xs] - ring_med, np.maximum(ring_med - ch.dark, ch.noise[ys, xs])


def _green_bright(
    channels: tuple[_Channel, _Channel],
    ys: npt.NDArray[np.intp],
    xs: npt.NDArray[np.intp],
    ring_radius: float,
    min_ratio: float,
) -> _Bool:
    """Whether the pHluorin excess at each point is ≥ ``min_ratio`` × its DsRed excess."""
    (red_excess, _), (green_excess, _) = (_excess_at(ch, ys, xs, ring_radius) for ch in channels)
    return np.asarray(green_excess >= min_ratio * red_excess, dtype=bool)


def _red_bright(
    red: _Channel, ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp], p: CipParameters, px: float
) -> _Bool:
    """Whether the DsRed excess at each point exceeds ``min_contrast`` × the red cytosol level.

    A pHluorin maximum is a phagophore only if DsRed is bright there too (not the bright halo
    that a difference of Gaussians puts around an autolysosome's green hole).
    """
    excess, level = _excess_at(red, ys, xs, p.ring_radius_um / px)
    return np.asarray(excess > p.min_contrast * level, dtype=bool)


def _union_maxima(
    first: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]],
    second: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]],
    blocking: _Bool,
    distance: int,
    shape: tuple[int, int],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.int8]]:
    """All maxima of ``first`` plus those of ``second`` that are not duplicates.

    A maximum of ``second`` is a duplicate when it lies within ``distance`` px (square
    neighbourhood) of a maximum of ``first`` flagged in ``blocking``.

    Returns rows, columns and the source of each marker label ``0..N`` (index 0 unused; 0 for
    ``first``, 1 for ``second``).
    """
    taken = np.zeros(shape, dtype=bool)
    taken[first[0][blocking], first[1][blocking]] = True
    taken = ndi.binary_dilation(taken, np.ones((2 * distance + 1,) * 2, dtype=bool))
    extra = ~taken[second]
    n_first, n_extra = first[0].size, int(extra.sum())
    source = np.concatenate([np.zeros(1 + n_first, np.int8), np.ones(n_extra, np.int8)])
    return (
        np.concatenate([first[0], second[0][extra]]),
        np.concatenate([first[1], second[1][extra]]),
        source,
    )


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
    px = float(pixel_size_um)
    empty = CipResult(np.zeros(shape, np.uint8), np.zeros(shape, np.int32))

    # 1-2. Denoising, dark level, DoG and local noise per channel.
    red, green = _prepare(img[0], p, px), _prepare(img[1], p, px)
    channels = (red, green)

    # 3. Candidate maxima that pass the tests, in each channel. DsRed maxima are all vesicles.
    # pHluorin maxima add phagophores hidden on the flank of a brighter autolysosome: they must
    # be green-bright themselves (not the rim of an autolysosome's green hole) and must not
    # duplicate a green-bright DsRed maximum.
    found = [_candidates(ch, p, px) for ch in channels]
    ring_radius = p.ring_radius_um / px
    rings = (
        _ring_samples(red.low, *found[0], ring_radius),
        _ring_samples(green.low, *found[0], ring_radius),
    )
    min_ratio = p.ratio_threshold * _cytosol_ratio(red, green, rings)
    bright = [_green_bright(channels, cy, cx, ring_radius, min_ratio) for cy, cx in found]
    keep_green = bright[1] & _red_bright(red, *found[1], p, px)
    green_found = (found[1][0][keep_green], found[1][1][keep_green])
    md = max(1, round(p.watershed_min_distance_um / px))
    ys, xs, source = _union_maxima(found[0], green_found, bright[0], md, shape)
    n = ys.size
    if n == 0:
        return empty

    # Local background of each object, per channel: median of the ring around its maximum.
    bg = np.zeros((2, n + 1), dtype=np.float32)
    for c, ch in enumerate(channels):
        bg[c, 1:] = np.median(_ring_samples(ch.den, ys, xs, ring_radius), axis=1)

    # 4. Watershed split. DsRed maxima flood the smoothed DsRed; pHluorin-only maxima then flood
    # the smoothed pHluorin and take their pixels from the DsRed basins. Each basin keeps its
    # pixels above extent_fraction × its peak excess.
    markers = np.zeros(shape, dtype=np.int32)
    markers[ys, xs] = np.arange(1, n + 1, dtype=np.int32)
    reach = p.max_radius_um / px
    near = ndi.distance_transform_edt(markers == 0) <= reach
    red_markers = np.where(source[markers] == 0, markers, 0)
    basins = _watershed(red.low, red_markers, near & ((red.dog > 0) | (green.dog > 0)))
    regions = _trim(basins, red.den - bg[0][basins], p.extent_fraction)
    if (source == 1).any():
        green_markers = np.where(source[markers] == 1, markers, 0)
        green_basins = _watershed(green.low, green_markers, near & (green.dog > 0))
        green_regions = _trim(green_basins, green.den - bg[1][green_basins], p.extent_fraction)
        regions = np.where(green_regions > 0, green_regions, regions)
    regions = _largest_piece(_separate_instances(regions))

    # 5-6. Size filters and classification by green/red ratio and size.
    return _classify(channels, bg, regions, min_ratio, p, px)


def _watershed(signal: _F32, markers: _I32, mask: _Bool) -> _I32:
    """Basins of ``markers`` flooding ``-signal`` (bright first) within ``mask``, 8-connected."""
    basins = watershed(-signal, markers, mask=mask, connectivity=2)  # type: ignore[no-untyped-call]
    return np.asarray(basins, dtype=np.int32)


def _trim(basins: _I32, excess: _F32, fraction: float) -> _I32:
    """Keep the pixels of each basin whose excess is positive and ≥ ``fraction`` × its peak."""
    peak = np.zeros(int(basins.max()) + 1, dtype=np.float32)
    np.maximum.at(peak, basins.ravel(), excess.ravel())
    inside = (basins > 0) & (excess >= fraction * peak[basins]) & (excess > 0)
    return np.where(inside, basins, 0).astype(np.int32)


def _classify(
    channels: tuple[_Channel, _Channel],
    bg: _F32,
    regions: _I32,
    min_ratio: float,
    p: CipParameters,
    px: float,
) -> CipResult:
    """Size-filter and classify each region, then relabel per-class components.

    ``bg`` is ``(2, N + 1)``: the local background of each region in each channel;
    ``min_ratio`` the absolute pHluorin / DsRed excess ratio of a phagophore.
    """
    n = bg.shape[1] - 1
    flat = regions.ravel()
    area_px = np.bincount(flat, minlength=n + 1).astype(np.float64)
    red, green = (
        np.bincount(flat, weights=ch.den.ravel(), minlength=n + 1) - area_px * bg[c]
        for c, ch in enumerate(channels)
    )
    area_um2 = area_px * px * px
    diameter_um = 2.0 * np.sqrt(area_um2 / math.pi)
    valid = (area_um2 >= p.min_area_um2) & (area_um2 <= p.max_area_um2) & (red > 0)
    green_bright = green >= min_ratio * red
    cls = np.zeros(n + 1, dtype=np.uint8)
    cls[valid & green_bright & (diameter_um <= p.phagophore_max_diameter_um)] = 1
    cls[valid & ~green_bright] = 2
    cls[0] = 0
    mask = cls[regions]
    return CipResult(mask=mask, labels=_component_labels(mask))
