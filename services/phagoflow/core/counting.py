"""Object measurement, per-field counts and per-well summaries, shared by every method.

CIP masks, U-Net (CDL/MDL) masks and simulator truth masks are all counted by the same code, so
counts from different methods are comparable:

1. :func:`measure_objects` turns a class mask ``(H, W)`` (0 background, 1 phagophore,
   2 autolysosome) into one :class:`ObjectRecord` per object. An *object* is a connected component
   of one class with **8-connectivity** (pixels touching by an edge or a corner belong together),
   unless an instance ``labels`` image is given. CIP separates touching instances of the same
   class by a one-pixel background line that breaks 8-connectivity, so counting its mask with or
   without its labels gives the same objects.
2. :func:`count_field` reduces the objects of one field to a :class:`FieldCounts` row that
   carries the plate id, the :class:`~phagoflow.core.opera.catalogue.FieldKey` and the method.
3. :func:`aggregate_wells` pools fields into one :class:`WellSummary` per (plate, well, method),
   keeping fields that failed in the count (``fields_failed``) so that a well whose fields failed
   is never mistaken for a well with few objects. When the fields carry their cells
   (:class:`~phagoflow.core.cells.FieldCells`, from the images: a nuclear stain, the cytoplasm
   area), the summary adds per-cell and per-1,000 µm² readouts (:data:`READOUTS`).

Intensities in :class:`ObjectRecord` are means of the image *as given* (raw camera units when the
caller passes the raw field, offset included); no background is subtracted here, so callers that
want background-corrected intensities pass a corrected image.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from phagoflow.core.cells import FieldCells, per_area, per_cell
from phagoflow.core.classes import OBJECT_CLASS_NAMES, ObjectClass
from phagoflow.core.opera.catalogue import FieldKey

__all__ = [
    "AREA_UNIT_UM2",
    "CLASS_NAMES",
    "FIELD_COLUMNS",
    "OBJECT_COLUMNS",
    "READOUTS",
    "WELL_COLUMNS",
    "FailedField",
    "FieldCounts",
    "ObjectRecord",
    "Readout",
    "WellSummary",
    "aggregate_wells",
    "available_readouts",
    "count_field",
    "measure_objects",
    "readout_label",
]

#: Mask value → class name (from :mod:`phagoflow.core.classes`). Value 0 is background and never
#: an object. Kept under this name for the modules that import it from here.
CLASS_NAMES = OBJECT_CLASS_NAMES

#: 8-connectivity structuring element used to split a class mask into objects.
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class ObjectRecord:
    """One segmented object.

    Attributes
    ----------
    object : int
        1-based object number within the field (order: class value, then label order).
    class_ : str
        ``"phagophore"`` or ``"autolysosome"`` (column ``class`` in tables).
    area_um2 : float
        Area in µm² (pixel count × pixel_size_um²).
    mean_dsred, mean_phluorin : float
        Mean intensity of channel 0 (DsRed) and channel 1 (pHluorin) over the object's pixels, in
        the units of the image passed to :func:`measure_objects`.
    green_red_ratio : float
        ``mean_phluorin / mean_dsred``; NaN when ``mean_dsred <= 0``.
    centroid_y, centroid_x : float
        Centroid in pixels (row, column), pixel centres at integer coordinates.
    bbox_y0, bbox_x0, bbox_y1, bbox_x1 : int
        Bounding box in pixels, half-open: rows ``bbox_y0:bbox_y1``, columns ``bbox_x0:bbox_x1``.
    """

    object: int
    class_: str
    area_um2: float
    mean_dsred: float
    mean_phluorin: float
    green_red_ratio: float
    centroid_y: float
    centroid_x: float
    bbox_y0: int
    bbox_x0: int
    bbox_y1: int
    bbox_x1: int

    def as_row(self) -> dict[str, Any]:
        """The record as a ``{column: value}`` dict keyed by :data:`OBJECT_COLUMNS`."""
        # getattr, not dataclasses.astuple: that deep-copies, 20x slower for 10^5 objects
        return {c: getattr(self, f) for c, f in zip(OBJECT_COLUMNS, _OBJECT_FIELDS, strict=True)}


_OBJECT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ObjectRecord))
#: Table columns of :class:`ObjectRecord` (``class_`` is written ``class``).
OBJECT_COLUMNS: tuple[str, ...] = tuple(
    "class" if f.name == "class_" else f.name for f in dataclasses.fields(ObjectRecord)
)


def _validate_measure_inputs(
    image: npt.NDArray[Any],
    mask: npt.NDArray[Any],
    pixel_size_um: float,
    labels: npt.NDArray[Any] | None,
) -> None:
    if image.ndim != 3 or image.shape[0] != 2:
        raise ValueError(
            f"image must have shape (2, H, W) ordered [DsRed, pHluorin], got {image.shape}"
        )
    if mask.shape != image.shape[1:]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must be an integer array, got dtype {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() > 2):
        raise ValueError(
            f"mask {mask.shape} values must be 0, 1 or 2, got range [{mask.min()}, {mask.max()}]"
        )
    if not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be a positive finite number, got {pixel_size_um}")
    if labels is not None:
        if labels.shape != mask.shape:
            raise ValueError(f"labels shape {labels.shape} does not match mask shape {mask.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be an integer array, got dtype {labels.dtype}")
        if np.any((labels > 0) != (mask > 0)):
            raise ValueError(
                f"labels {labels.shape} and mask {mask.shape} disagree on foreground pixels"
            )


def _bounding_boxes(
    inverse: npt.NDArray[np.intp], ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp], n: int
) -> tuple[npt.NDArray[np.int64], ...]:
    """``(y0, x0, y1, x1)`` per object, inclusive pixel bounds, from each pixel's object index."""
    y0 = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    x0 = y0.copy()
    y1 = np.full(n, -1, dtype=np.int64)
    x1 = y1.copy()
    np.minimum.at(y0, inverse, ys)
    np.minimum.at(x0, inverse, xs)
    np.maximum.at(y1, inverse, ys)
    np.maximum.at(x1, inverse, xs)
    return y0, x0, y1, x1


def _majority_class(
    inverse: npt.NDArray[np.intp], values: npt.NDArray[Any], n: int
) -> npt.NDArray[np.int64]:
    """Class per object: majority vote of its pixels' mask values (ties: the lower class;
    exactly one value for component labels)."""
    votes = np.zeros((n, len(ObjectClass)), dtype=np.int64)
    np.add.at(votes, (inverse, values.astype(np.int64)), 1)
    cls: npt.NDArray[np.int64] = votes[:, 1:].argmax(axis=1) + 1
    return cls


def _instance_labels(mask: npt.NDArray[Any]) -> npt.NDArray[np.int32]:
    """Per-class 8-connected components, numbered class 1 first, then class 2."""
    out = np.zeros(mask.shape, dtype=np.int32)
    offset = 0
    for value in OBJECT_CLASS_NAMES:
        lab, n = ndi.label(mask == value, structure=_EIGHT)
        if n:
            out[lab > 0] = lab[lab > 0] + offset
            offset += n
    return out


def measure_objects(
    image: npt.NDArray[Any],
    mask: npt.NDArray[Any],
    pixel_size_um: float,
    *,
    labels: npt.NDArray[Any] | None = None,
) -> list[ObjectRecord]:
    """Measure every object of a class mask.

    Parameters
    ----------
    image : (2, H, W) ndarray
        Field ordered ``[DsRed, pHluorin]``; intensities are averaged as given (no background
        subtraction).
    mask : (H, W) integer ndarray
        0 background, 1 phagophore, 2 autolysosome.
    pixel_size_um : float
        Pixel size in µm (square pixels).
    labels : (H, W) integer ndarray, optional
        Instance labels (0 = background, foreground exactly where ``mask > 0``). When given, each
        label is one object and its class is the majority mask value over its pixels. When
        omitted, objects are the 8-connected components of each class of ``mask``.

    Returns
    -------
    list of ObjectRecord
        Sorted by class value then by label (components are numbered in raster order of their
        first pixel), ``object`` numbered from 1.

    Raises
    ------
    ValueError
        On shape/dtype mismatches (the message quotes the shapes), mask values outside 0–2, a
        non-positive pixel size, or labels disagreeing with the mask foreground.
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if labels is not None:
        labels = np.asarray(labels)
    _validate_measure_inputs(image, mask, pixel_size_um, labels)
    inst = _instance_labels(mask) if labels is None else labels.astype(np.int64, copy=False)

    fg = inst > 0
    if not fg.any():
        return []
    ids, inverse = np.unique(inst[fg], return_inverse=True)
    n = ids.size
    ys, xs = np.nonzero(fg)
    counts = np.bincount(inverse, minlength=n).astype(np.float64)
    red = np.bincount(inverse, weights=image[0][fg].astype(np.float64), minlength=n) / counts
    green = np.bincount(inverse, weights=image[1][fg].astype(np.float64), minlength=n) / counts
    cy = np.bincount(inverse, weights=ys.astype(np.float64), minlength=n) / counts
    cx = np.bincount(inverse, weights=xs.astype(np.float64), minlength=n) / counts
    y0, x0, y1, x1 = _bounding_boxes(inverse, ys, xs, n)
    cls = _majority_class(inverse, mask[fg], n)

    order = sorted(range(n), key=lambda i: (int(cls[i]), int(ids[i])))
    px_area = pixel_size_um * pixel_size_um
    records: list[ObjectRecord] = []
    for number, i in enumerate(order, start=1):
        r, g = float(red[i]), float(green[i])
        records.append(
            ObjectRecord(
                object=number,
                class_=OBJECT_CLASS_NAMES[int(cls[i])],
                area_um2=float(counts[i]) * px_area,
                mean_dsred=r,
                mean_phluorin=g,
                green_red_ratio=g / r if r > 0 else math.nan,
                centroid_y=float(cy[i]),
                centroid_x=float(cx[i]),
                bbox_y0=int(y0[i]),
                bbox_x0=int(x0[i]),
                bbox_y1=int(y1[i]) + 1,
                bbox_x1=int(x1[i]) + 1,
            )
        )
    return records


@dataclass(frozen=True)
class FieldCounts:
    """Counts and areas of one field for one method.

    Attributes
    ----------
    plate : str
        Plate id (PlateID / barcode).
    key : FieldKey
        Field identity (row, col, field, plane, timepoint).
    method : str
        Method that produced the mask, e.g. ``"cip"``, ``"cdl"``, ``"truth"``.
    phagophores, autolysosomes : int
        Object counts.
    phagophore_area_um2, autolysosome_area_um2 : float
        Summed object area per class in µm².
    cells : FieldCells or None
        Cell count (with a nuclear stain) and cytoplasm / cell areas of the field, measured on
        its images (:func:`phagoflow.core.cells.field_cells`); ``None`` when not measured.
    """

    plate: str
    key: FieldKey
    method: str
    phagophores: int
    autolysosomes: int
    phagophore_area_um2: float
    autolysosome_area_um2: float
    cells: FieldCells | None = None

    @property
    def well(self) -> str:
        """Well name ``rRRcCC``."""
        return self.key.well

    def as_row(self) -> dict[str, Any]:
        """The counts as a ``{column: value}`` dict keyed by :data:`FIELD_COLUMNS`."""
        return {
            "plate": self.plate,
            "well": self.key.well,
            "field": self.key.name,
            "method": self.method,
            "phagophores": self.phagophores,
            "autolysosomes": self.autolysosomes,
            "phagophore_area_um2": self.phagophore_area_um2,
            "autolysosome_area_um2": self.autolysosome_area_um2,
        }


#: Table columns of :meth:`FieldCounts.as_row` (``field`` is the FieldKey name ``rRRcCCfFFpPP``).
FIELD_COLUMNS: tuple[str, ...] = (
    "plate",
    "well",
    "field",
    "method",
    "phagophores",
    "autolysosomes",
    "phagophore_area_um2",
    "autolysosome_area_um2",
)


def count_field(
    objects: Sequence[ObjectRecord],
    *,
    plate: str,
    key: FieldKey,
    method: str,
    cells: FieldCells | None = None,
) -> FieldCounts:
    """Count the objects of one field per class.

    Parameters
    ----------
    objects : sequence of ObjectRecord
        Output of :func:`measure_objects` for the field.
    plate : str
        Plate id.
    key : FieldKey
        Field identity.
    method : str
        Method name (``"cip"``, ``"cdl"``, ``"truth"``, ...).
    cells : FieldCells, optional
        The field's cells (the same for every method: they come from the images).

    Returns
    -------
    FieldCounts
        Counts and summed areas (µm²) per class.

    Raises
    ------
    ValueError
        If an object has an unknown class name.
    """
    n = {name: 0 for name in OBJECT_CLASS_NAMES.values()}
    area = {name: 0.0 for name in OBJECT_CLASS_NAMES.values()}
    for obj in objects:
        if obj.class_ not in n:
            raise ValueError(f"object {obj.object} has unknown class {obj.class_!r}")
        n[obj.class_] += 1
        area[obj.class_] += obj.area_um2
    return FieldCounts(
        plate=plate,
        key=key,
        method=method,
        phagophores=n[ObjectClass.PHAGOPHORE.label],
        autolysosomes=n[ObjectClass.AUTOLYSOSOME.label],
        phagophore_area_um2=area[ObjectClass.PHAGOPHORE.label],
        autolysosome_area_um2=area[ObjectClass.AUTOLYSOSOME.label],
        cells=cells,
    )


#: Area unit of the per-area readouts: counts per 1,000 µm² of cytoplasm.
AREA_UNIT_UM2 = 1000.0


@dataclass(frozen=True)
class WellSummary:
    """All fields of one well for one method, pooled.

    Attributes
    ----------
    plate : str
        Plate id.
    well : str
        Well name ``rRRcCC``; ``row`` and ``col`` are its 1-based coordinates.
    method : str
        Method name.
    fields : int
        Fields of the well for this method, counted or failed (every plane and timepoint of the
        well counts as a field; filter the input first to summarise one plane or timepoint).
        Equal to ``fields_ok + fields_failed``.
    phagophores, autolysosomes : int
        Total object counts over the fields that were counted (``fields_ok``). With failed
        fields, compare wells by the per-field means, not by these totals.
    phagophores_per_field_mean, phagophores_per_field_sd : float
        Mean and sample standard deviation (``ddof=1``) of the per-field counts of the counted
        fields; the sd is 0.0 for a single field, both are NaN when no field was counted.
    autolysosomes_per_field_mean, autolysosomes_per_field_sd : float
        Same for autolysosomes.
    phagophore_area_um2, autolysosome_area_um2 : float
        Total object area over the fields, µm².
    autolysosome_phagophore_ratio : float
        ``autolysosomes / phagophores`` (totals); NaN when the well has no phagophore.
    fields_ok, fields_failed : int
        Fields counted, and fields that could not be read or segmented. In :meth:`as_row` a well
        with ``fields_ok == 0`` has empty totals and areas (not 0: nothing was measured).
    cells : int or None
        Nuclei over the counted fields (a nuclear stain was segmented); ``None`` without one.
    cytoplasm_area_um2, cell_area_um2 : float
        Cytoplasm and cell (cytoplasm + nuclei) area over the counted fields, µm² (a QC
        column: a compound that kills cells shrinks it); NaN when cells were not measured.
    phagophores_per_cell, autolysosomes_per_cell : float
        Totals divided by ``cells``; NaN without a nuclear stain or with no cell.
    phagophores_per_1000um2, autolysosomes_per_1000um2 : float
        Totals per 1,000 µm² of cytoplasm (:data:`AREA_UNIT_UM2`); NaN without cytoplasm.
    """

    plate: str
    well: str
    row: int
    col: int
    method: str
    fields: int
    phagophores: int
    autolysosomes: int
    phagophores_per_field_mean: float
    phagophores_per_field_sd: float
    autolysosomes_per_field_mean: float
    autolysosomes_per_field_sd: float
    phagophore_area_um2: float
    autolysosome_area_um2: float
    autolysosome_phagophore_ratio: float
    fields_ok: int
    fields_failed: int
    cells: int | None = None
    cytoplasm_area_um2: float = math.nan
    cell_area_um2: float = math.nan
    phagophores_per_cell: float = math.nan
    autolysosomes_per_cell: float = math.nan
    phagophores_per_1000um2: float = math.nan
    autolysosomes_per_1000um2: float = math.nan

    def readout(self, name: str) -> float:
        """The value of readout ``name`` (a key of :data:`READOUTS`); NaN when not measured.

        Raises
        ------
        KeyError
            For a name that is not a readout.
        """
        if name not in READOUTS:
            raise KeyError(f"unknown readout {name!r}; readouts: {', '.join(READOUTS)}")
        if self.fields_ok == 0:
            return math.nan
        return float(getattr(self, name))

    def as_row(self) -> dict[str, Any]:
        """The summary as a ``{column: value}`` dict keyed by :data:`WELL_COLUMNS`.

        Totals and areas are ``None`` (an empty cell) when no field of the well was counted.
        """
        row = {c: getattr(self, c) for c in WELL_COLUMNS}
        if self.fields_ok == 0:
            row.update(dict.fromkeys(_MEASURED_TOTALS))
        return row


#: Columns that are sums over counted fields: meaningless (blank) when none was counted.
_MEASURED_TOTALS = (
    "phagophores",
    "autolysosomes",
    "phagophore_area_um2",
    "autolysosome_area_um2",
    "cells",
)


@dataclass(frozen=True)
class Readout:
    """A per-well readout: its :class:`WellSummary` attribute, words and unit for people.

    Attributes
    ----------
    name : str
        Attribute of :class:`WellSummary` (and the ``wells.csv`` column).
    label : str
        What it is, in words (heat-map titles, report headings).
    unit : str
        Unit in words, e.g. ``"per cell"`` (colour bars, table headers).
    needs : {'', 'cells', 'nuclei'}
        What must have been measured: nothing, the cytoplasm area, or a nuclear stain.
    """

    name: str
    label: str
    unit: str
    needs: str = ""


#: Readouts of a well, in the order they are shown; see :meth:`WellSummary.readout`.
READOUTS: dict[str, Readout] = {
    r.name: r
    for r in (
        Readout("phagophores_per_cell", "Phagophores per cell", "phagophores / cell", "nuclei"),
        Readout(
            "autolysosomes_per_cell", "Autolysosomes per cell", "autolysosomes / cell", "nuclei"
        ),
        Readout(
            "phagophores_per_1000um2",
            "Phagophores per 1,000 µm² cytoplasm",
            "phagophores / 1,000 µm²",
            "cells",
        ),
        Readout(
            "autolysosomes_per_1000um2",
            "Autolysosomes per 1,000 µm² cytoplasm",
            "autolysosomes / 1,000 µm²",
            "cells",
        ),
        Readout(
            "phagophores_per_field_mean", "Phagophores per field (mean)", "phagophores / field"
        ),
        Readout(
            "autolysosomes_per_field_mean",
            "Autolysosomes per field (mean)",
            "autolysosomes / field",
        ),
        Readout(
            "autolysosome_phagophore_ratio",
            "Autolysosome / phagophore ratio (flux)",
            "autolysosomes / phagophore",
        ),
    )
}


def available_readouts(*, nuclei: bool, cells: bool) -> list[str]:
    """Names of the :data:`READOUTS` a run can compute, in display order.

    Parameters
    ----------
    nuclei : bool
        A nuclear stain was segmented (per-cell readouts).
    cells : bool
        The cytoplasm area was measured (per-area readouts).
    """
    have = {"", *(("cells",) if cells else ()), *(("nuclei",) if nuclei and cells else ())}
    return [r.name for r in READOUTS.values() if r.needs in have]


def readout_label(name: str) -> str:
    """Words for a readout or ``wells.csv`` column name (falls back to the name itself)."""
    readout = READOUTS.get(name)
    return readout.label if readout is not None else name


#: Table columns of :class:`WellSummary`, in field order.
WELL_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(WellSummary))


def _mean_sd(values: Sequence[int]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    arr = np.asarray(values, dtype=np.float64)
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), sd


#: A field that failed for one method: ``(plate, key, method)``.
FailedField = tuple[str, FieldKey, str]


def aggregate_wells(
    fields: Iterable[FieldCounts], *, failed: Iterable[FailedField] = ()
) -> list[WellSummary]:
    """Pool per-field counts into per-well summaries.

    Parameters
    ----------
    fields : iterable of FieldCounts
        Any mix of plates, wells and methods.
    failed : iterable of (plate, FieldKey, method)
        Fields that could not be read or segmented. They count in ``fields`` and
        ``fields_failed`` of their well, never in the counts; a well whose every field failed
        still gets a summary (``fields_ok == 0``, NaN means). A failed entry that also has
        counts is counted, not failed; repeated entries count once.

    Returns
    -------
    list of WellSummary
        One per (plate, well, method), sorted by plate, well, method.

    Raises
    ------
    ValueError
        If the same (plate, field, method) appears twice in ``fields``: replays must be
        de-duplicated by key before aggregating, never double counted.
    """
    groups: dict[tuple[str, int, int, str], list[FieldCounts]] = {}
    seen: set[FailedField] = set()
    for fc in fields:
        ident = (fc.plate, fc.key, fc.method)
        if ident in seen:
            raise ValueError(
                f"duplicate field counts for plate {fc.plate!r}, field {fc.key.name}, "
                f"method {fc.method!r}"
            )
        seen.add(ident)
        groups.setdefault((fc.plate, fc.key.row, fc.key.col, fc.method), []).append(fc)
    n_failed: dict[tuple[str, int, int, str], int] = {}
    wells_of: dict[tuple[str, int, int, str], str] = {}
    for plate, key, method in set(failed) - seen:
        group = (plate, key.row, key.col, method)
        n_failed[group] = n_failed.get(group, 0) + 1
        wells_of[group] = key.well
    return [
        _summarise(group, groups.get(group, []), n_failed.get(group, 0), wells_of.get(group, ""))
        for group in sorted(set(groups) | set(n_failed))
    ]


def _summarise(
    group: tuple[str, int, int, str], items: list[FieldCounts], n_failed: int, well: str
) -> WellSummary:
    """One :class:`WellSummary` from the counted fields and the number of failed ones."""
    plate, row, col, method = group
    phago = [fc.phagophores for fc in items]
    auto = [fc.autolysosomes for fc in items]
    p_mean, p_sd = _mean_sd(phago)
    a_mean, a_sd = _mean_sd(auto)
    n_p, n_a = sum(phago), sum(auto)
    summary = WellSummary(
        plate=plate,
        well=items[0].key.well if items else well,
        row=row,
        col=col,
        method=method,
        fields=len(items) + n_failed,
        phagophores=n_p,
        autolysosomes=n_a,
        phagophores_per_field_mean=p_mean,
        phagophores_per_field_sd=p_sd,
        autolysosomes_per_field_mean=a_mean,
        autolysosomes_per_field_sd=a_sd,
        phagophore_area_um2=math.fsum(fc.phagophore_area_um2 for fc in items),
        autolysosome_area_um2=math.fsum(fc.autolysosome_area_um2 for fc in items),
        autolysosome_phagophore_ratio=n_a / n_p if n_p else math.nan,
        fields_ok=len(items),
        fields_failed=n_failed,
    )
    return dataclasses.replace(summary, **_well_cells(items, n_p, n_a))


def _well_cells(items: list[FieldCounts], n_p: int, n_a: int) -> dict[str, Any]:
    """The cell columns of a :class:`WellSummary`: sums over the counted fields, then ratios.

    Cells are used only when every counted field of the well has them (no mixing of fields
    with and without a measurement); nuclei likewise.
    """
    cells = [fc.cells for fc in items]
    if not cells or any(c is None for c in cells):
        return {}
    measured = [c for c in cells if c is not None]
    cyto = math.fsum(c.cytoplasm_area_um2 for c in measured)
    out: dict[str, Any] = {
        "cytoplasm_area_um2": cyto,
        "cell_area_um2": math.fsum(c.cell_area_um2 for c in measured),
        "phagophores_per_1000um2": per_area(n_p, cyto, unit_um2=AREA_UNIT_UM2),
        "autolysosomes_per_1000um2": per_area(n_a, cyto, unit_um2=AREA_UNIT_UM2),
    }
    nuclei = [c.n_cells for c in measured]
    if all(n is not None for n in nuclei):
        total = sum(n for n in nuclei if n is not None)
        out |= {
            "cells": total,
            "phagophores_per_cell": per_cell(n_p, total),
            "autolysosomes_per_cell": per_cell(n_a, total),
        }
    return out
