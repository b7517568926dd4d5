"""Per-cell and per-area readouts: nuclei, cytoplasm area and normalised counts.

A compound that kills half the cells halves the vesicle count of a field; dividing by the
number of cells (when the plate has a nuclear stain) or by the cytoplasm area (always) gives
readouts that compare across wells. Everything here is a pure function on arrays; physical
sizes are in µm and converted with the plate's pixel size.

Methods
-------
Nuclei (:func:`segment_nuclei`), a classical pipeline on the nuclear-stain plane:

1. Gaussian smoothing (σ :attr:`CellParameters.nuclei_smooth_um`) against shot noise;
2. a global Otsu threshold (Otsu 1979, doi:10.1109/TSMC.1979.4310076) — or, with
   ``nuclei_threshold="local"``, a local mean threshold over
   :attr:`CellParameters.local_block_um` for uneven illumination; a field whose foreground is
   not at least :attr:`CellParameters.min_contrast` pixel-noise s.d. above its background has
   no nuclei (an empty well is not thresholded into noise);
3. holes filled, objects under :attr:`CellParameters.min_nucleus_area_um2` removed;
4. touching nuclei split by a marker-controlled watershed on the inverted Euclidean distance
   transform, one marker per *h*-maximum of the distance (h =
   :attr:`CellParameters.split_h_um`): two nuclei are split when the neck between them is at
   least ``h`` narrower than each of them is wide (Soille, *Morphological Image Analysis*,
   2003, §6.3 and §9.2); pieces under the minimum area are dropped after the split.

Cytoplasm (:func:`cytoplasm_mask`): Rosella is cytosolic, so the cytoplasm is the bright part
of the smoothed DsRed (+ pHluorin) signal above an Otsu threshold (nuclei are dark in these
channels and fall below it, as does the empty glass), small holes (vesicle-free gaps under
:attr:`CellParameters.max_hole_area_um2`) filled, specks removed, and the segmented nuclei
subtracted when there are any.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage as ndi
from skimage import filters, morphology, segmentation

__all__ = [
    "CellParameters",
    "FieldCells",
    "cytoplasm_mask",
    "field_cells",
    "per_area",
    "per_cell",
    "segment_nuclei",
]

LabelArray = npt.NDArray[np.int32]
MAD_SCALE = 1.4826  # median absolute deviation -> s.d. of normal data
BoolArray = npt.NDArray[np.bool_]


class CellParameters(BaseModel):
    """Tunables of the nuclei and cytoplasm segmentation (frozen; sizes in µm).

    Nested in the run settings as ``PHAGOFLOW_CELLS__<NAME>`` and recorded in ``run.json``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    nuclei_smooth_um: float = Field(
        1.0, ge=0, description="Gaussian σ (µm) applied to the nuclear stain before thresholding."
    )
    nuclei_threshold: Literal["otsu", "local"] = Field(
        "otsu", description="Global Otsu threshold, or a local mean threshold (uneven light)."
    )
    local_block_um: float = Field(
        40.0, gt=0, description="Window side (µm) of the local threshold (several nuclei wide)."
    )
    min_contrast: float = Field(
        8.0,
        gt=0,
        description="Foreground minus background median, in pixel-noise s.d., below which a "
        "field holds no nuclei (or no cytoplasm): an empty well is not thresholded into noise.",
    )
    min_nucleus_area_um2: float = Field(
        8.0, ge=0, description="Smallest nucleus (µm²); smaller objects are debris or slivers."
    )
    split_h_um: float = Field(
        0.8, gt=0, description="h (µm) of the distance-transform h-maxima that seed nuclei."
    )
    cytoplasm_smooth_um: float = Field(
        1.0, ge=0, description="Gaussian σ (µm) applied to the Rosella signal for the cytoplasm."
    )
    max_hole_area_um2: float = Field(
        4.0, ge=0, description="Holes in the cytoplasm mask up to this area (µm²) are filled."
    )
    min_cytoplasm_area_um2: float = Field(
        4.0, ge=0, description="Cytoplasm specks smaller than this (µm²) are removed."
    )


@dataclass(frozen=True)
class FieldCells:
    """Cell count and areas of one field.

    Attributes
    ----------
    n_cells : int or None
        Nuclei found; ``None`` when the field has no nuclear channel.
    nuclear_area_um2 : float or None
        Total nuclear area (µm²); ``None`` without a nuclear channel.
    cytoplasm_area_um2 : float
        Cytoplasm area (µm²) from the cytosolic Rosella signal, nuclei excluded.
    cell_area_um2 : float
        Cytoplasm plus nuclei (µm²): the area covered by cells.
    """

    n_cells: int | None
    nuclear_area_um2: float | None
    cytoplasm_area_um2: float
    cell_area_um2: float


def segment_nuclei(
    image: npt.ArrayLike, *, pixel_size_um: float, params: CellParameters | None = None
) -> LabelArray:
    """Label the nuclei of a nuclear-stain plane (see the module docstring for the method).

    Parameters
    ----------
    image : (Y, X) array_like
        Nuclear stain (Hoechst/DAPI) in camera counts, any real dtype.
    pixel_size_um : float
        Pixel size in µm per pixel (> 0).
    params : CellParameters, optional

    Returns
    -------
    (Y, X) ndarray of int32
        0 background, nuclei numbered 1‥N.
    """
    p = params if params is not None else CellParameters()
    img = _validate_plane(image, "image", pixel_size_um)
    px = pixel_size_um
    smooth = _smooth(img, p.nuclei_smooth_um / px)
    if p.nuclei_threshold == "local":
        block = 2 * max(1, round(p.local_block_um / px / 2)) + 1
        mask = smooth > filters.threshold_local(  # type: ignore[no-untyped-call]
            smooth, block, method="mean", mode="reflect"
        )
        mask &= smooth > 0.5 * _otsu(smooth)  # no nuclei in the empty glass
    else:
        mask = smooth > _otsu(smooth)
    if not _has_contrast(img, smooth, mask, p.min_contrast):
        return np.zeros(img.shape, np.int32)
    min_px = max(1, round(p.min_nucleus_area_um2 / px**2))
    mask = ndi.binary_fill_holes(mask)
    mask = morphology.remove_small_objects(mask, max_size=min_px - 1)
    dist = ndi.distance_transform_edt(mask)
    peaks = morphology.h_maxima(dist, p.split_h_um / px).astype(bool)  # type: ignore[no-untyped-call]
    # 8-connected: a maximum on two diagonal pixels is one marker, not two nuclei
    markers, _ = ndi.label(peaks & mask, structure=np.ones((3, 3), bool))
    labels = segmentation.watershed(-dist, markers, mask=mask)  # type: ignore[no-untyped-call]
    sizes = np.bincount(labels.ravel())
    labels[sizes[labels] < min_px] = 0
    relabelled, _, _ = segmentation.relabel_sequential(labels)  # type: ignore[no-untyped-call]
    return np.asarray(relabelled, dtype=np.int32)


def cytoplasm_mask(
    dsred: npt.ArrayLike,
    phluorin: npt.ArrayLike | None = None,
    *,
    pixel_size_um: float,
    nuclei: npt.ArrayLike | None = None,
    params: CellParameters | None = None,
) -> BoolArray:
    """Cytoplasm pixels from the cytosolic Rosella signal.

    Parameters
    ----------
    dsred : (Y, X) array_like
        DsRed plane in camera counts.
    phluorin : (Y, X) array_like, optional
        pHluorin plane; added to DsRed when given (more signal, same cytosol).
    pixel_size_um : float
        Pixel size in µm per pixel.
    nuclei : (Y, X) array_like, optional
        Nucleus labels or mask; those pixels are never cytoplasm.
    params : CellParameters, optional

    Returns
    -------
    (Y, X) ndarray of bool
    """
    p = params if params is not None else CellParameters()
    signal = _validate_plane(dsred, "dsred", pixel_size_um)
    if phluorin is not None:
        signal = signal + _validate_same(phluorin, "phluorin", signal.shape)
    px = pixel_size_um
    smooth = _smooth(signal, p.cytoplasm_smooth_um / px)
    mask = smooth > _otsu(smooth)
    if not _has_contrast(signal, smooth, mask, p.min_contrast):
        return np.zeros(signal.shape, bool)
    mask = morphology.remove_small_holes(mask, max_size=round(p.max_hole_area_um2 / px**2))
    mask = morphology.remove_small_objects(
        mask, max_size=round(p.min_cytoplasm_area_um2 / px**2) - 1
    )
    if nuclei is not None:
        mask &= _validate_same(nuclei, "nuclei", signal.shape) == 0
    return np.asarray(mask, dtype=np.bool_)


def field_cells(
    image: npt.ArrayLike,
    nuclear: npt.ArrayLike | None = None,
    *,
    pixel_size_um: float,
    params: CellParameters | None = None,
) -> FieldCells:
    """Cell count (with a nuclear plane) and cytoplasm / cell areas of one field.

    Parameters
    ----------
    image : (2, Y, X) array_like
        ``[DsRed, pHluorin]`` in camera counts (the order of every loaded field).
    nuclear : (Y, X) array_like, optional
        Nuclear-stain plane; without it ``n_cells`` and ``nuclear_area_um2`` are ``None``.
    pixel_size_um : float
        Pixel size in µm per pixel.
    params : CellParameters, optional

    Returns
    -------
    FieldCells
    """
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] != 2:
        raise ValueError(f"image must be (2, Y, X) [DsRed, pHluorin], got shape {arr.shape}")
    pixel_area = pixel_size_um**2
    labels = None
    if nuclear is not None:
        labels = segment_nuclei(nuclear, pixel_size_um=pixel_size_um, params=params)
    cyto = cytoplasm_mask(arr[0], arr[1], pixel_size_um=pixel_size_um, nuclei=labels, params=params)
    cyto_area = float(np.count_nonzero(cyto)) * pixel_area
    if labels is None:
        return FieldCells(None, None, cyto_area, cyto_area)
    nuc_area = float(np.count_nonzero(labels)) * pixel_area
    return FieldCells(int(labels.max()), nuc_area, cyto_area, cyto_area + nuc_area)


def per_cell(count: float, n_cells: float | None) -> float:
    """``count / n_cells``; NaN when there are no cells or no cell count."""
    if n_cells is None or not n_cells > 0:
        return math.nan
    return float(count) / float(n_cells)


def per_area(count: float, area_um2: float, *, unit_um2: float = 1000.0) -> float:
    """``count`` per ``unit_um2`` of area (per 1,000 µm² by default); NaN for no area."""
    if not unit_um2 > 0:
        raise ValueError(f"unit_um2 must be > 0, got {unit_um2!r}")
    if not area_um2 > 0:
        return math.nan
    return float(count) * unit_um2 / float(area_um2)


# --------------------------------------------------------------------------- helpers


def _validate_plane(
    image: npt.ArrayLike, name: str, pixel_size_um: float
) -> npt.NDArray[np.float32]:
    if not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be a positive number, got {pixel_size_um!r}")
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ValueError(f"{name} must be a (Y, X) plane, got shape {arr.shape}")
    return arr


def _validate_same(
    image: npt.ArrayLike, name: str, shape: tuple[int, ...]
) -> npt.NDArray[np.float32]:
    arr = np.asarray(image, dtype=np.float32)
    if arr.shape != shape:
        raise ValueError(f"{name} must have the shape {shape} of the DsRed plane, got {arr.shape}")
    return arr


def _smooth(image: npt.NDArray[np.float32], sigma_px: float) -> npt.NDArray[np.float32]:
    if sigma_px <= 0:
        return image
    return np.asarray(ndi.gaussian_filter(image, sigma_px, mode="nearest"), dtype=np.float32)


def _otsu(image: npt.NDArray[np.float32]) -> float:
    if float(image.max()) == float(image.min()):
        return math.inf  # a flat plane has no foreground
    return float(filters.threshold_otsu(image))  # type: ignore[no-untyped-call]


def _has_contrast(
    raw: npt.NDArray[np.float32], smooth: npt.NDArray[np.float32], mask: BoolArray, k: float
) -> bool:
    """Foreground median at least ``k`` pixel-noise s.d. above the background median.

    The noise s.d. is the robust spread of differences between horizontal neighbours of the
    raw plane, divided by √2 — blind to structure larger than a pixel.
    """
    if not mask.any() or mask.all():
        return False
    diff = np.diff(raw, axis=1).ravel()
    noise = MAD_SCALE * float(np.median(np.abs(diff - np.median(diff)))) / math.sqrt(2.0)
    gap = float(np.median(smooth[mask])) - float(np.median(smooth[~mask]))
    return gap >= k * max(noise, 1e-6)
