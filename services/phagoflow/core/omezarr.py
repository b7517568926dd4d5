"""OME-Zarr HCS output: the plate's images, CIP/CDL label images and a well table.

Writes an `OME-Zarr 0.5 <https://ngff.openmicroscopy.org/0.5/>`_ high-content-screening plate
(Zarr v3) that napari (napari-ome-zarr), Fractal (ngio) and OMERO's Zarr readers open::

    PLATE.ome.zarr/                  ome.plate: rows A…, columns 01…, wells, field_count
        B/05/                        ome.well: images 0, 1, … (one per field)
            0/                       ome.multiscales: axes c, y, x (µm), scale [1, px, px];
                0                    omero.channels: names and colours; array (C, Y, X) uint16
                labels/              ome.labels: ["cip", "cdl"]
                    cip/             ome.image-label: 1 phagophore, 2 autolysosome (colours)
                        0            array (Y, X) uint8
        tables/wells/                one 1-D array per column of the well table (see below)

Row names are letters and column names two digits, so a well's path is its ``A01`` name
(``B/05``). Fields are numbered from 0 in acquisition order (field 1 → image ``0``). Each
image has one resolution level. Metadata is built with the pydantic models of
``ome-zarr-models`` — so what is written validates against the specification — and arrays are
written with ``zarr``. The well table is not part of the NGFF specification (which defines
none); it is a group ``tables/wells`` with attributes ``{"type": "phagoflow_well_table",
"columns": [...], "index": "well"}`` and one array per column (numbers float64, text as
Zarr v3 strings), readable by any Zarr v3 reader.

Requires the ``ome-zarr`` extra: ``pip install 'phagoflow[ome-zarr]'``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from phagoflow.core.classes import OBJECT_CLASS_NAMES, OBJECT_CLASSES
from phagoflow.core.closing import ClosesOnSuccess
from phagoflow.core.wells import row_letter, well_name

if TYPE_CHECKING:
    import zarr

__all__ = [
    "LABEL_CLASSES",
    "LABEL_COLOURS",
    "OmeZarrPlateWriter",
    "default_channel_colour",
]

#: Label value → class name of the CIP/CDL masks (from :mod:`phagoflow.core.classes`).
LABEL_CLASSES = OBJECT_CLASS_NAMES
#: Label value → RGBA colour of the OME-Zarr labels (phagophores yellow, autolysosomes magenta).
LABEL_COLOURS: dict[int, tuple[int, int, int, int]] = {
    int(c): c.style.label_rgba for c in OBJECT_CLASSES
}
_NGFF_VERSION = "0.5"
_TABLE_TYPE = "phagoflow_well_table"


def default_channel_colour(name: str) -> str:
    """Display colour (RGB hex) for a channel name: DsRed red, pHluorin green, nuclei blue."""
    low = name.lower()
    if any(k in low for k in ("hoechst", "dapi", "draq", "nucle")):
        return "0000FF"
    if any(k in low for k in ("phluorin", "gfp", "488", "green")):
        return "00FF00"
    if any(k in low for k in ("dsred", "mcherry", "568", "561", "red")):
        return "FF0000"
    return "FFFFFF"


class OmeZarrPlateWriter(ClosesOnSuccess):
    """Write one plate as an OME-Zarr 0.5 HCS plate, field by field.

    Parameters
    ----------
    path : Path
        Plate folder to create (by convention ``PLATE.ome.zarr``).
    plate_id : str
        Plate name recorded in the plate metadata.
    plate_rows, plate_columns : int
        Plate geometry (8 × 12 for 96 wells).
    channel_names : sequence of str
        One name per image plane, e.g. ``("DsRed", "pHluorin")`` or with a nuclear stain.
    pixel_size_um : float
        Pixel size in µm (the y and x scale of every image and label).
    label_names : sequence of str, default ("cip", "cdl")
        Label images every field may carry (e.g. one per segmentation method).
    dtype : {numpy.uint16, numpy.float32}, default uint16
        Pixel type of every image: raw camera counts, or counts × a ``.flex`` Factor.
    overwrite : bool, default False
        Replace an existing ``path``; otherwise an existing one is an error.

    Examples
    --------
    >>> with OmeZarrPlateWriter(out / "P1.ome.zarr", plate_id="P1", plate_rows=8,
    ...                         plate_columns=12, channel_names=("DsRed", "pHluorin"),
    ...                         pixel_size_um=0.2) as w:          # doctest: +SKIP
    ...     w.add_field(2, 5, 1, image, labels={"cip": mask})
    ...     w.set_well_table(rows)
    """

    def __init__(
        self,
        path: str | Path,
        *,
        plate_id: str,
        plate_rows: int,
        plate_columns: int,
        channel_names: Sequence[str],
        pixel_size_um: float,
        label_names: Sequence[str] = ("cip", "cdl"),
        dtype: npt.DTypeLike = np.uint16,
        overwrite: bool = False,
    ) -> None:
        _validate_plate_options(
            plate_id, plate_rows, plate_columns, channel_names, pixel_size_um, label_names
        )
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.uint16), np.dtype(np.float32)):
            raise ValueError(f"dtype must be uint16 or float32, got {self.dtype}")
        import zarr

        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise FileExistsError(f"{self.path} exists; pass overwrite=True to replace it")
            shutil.rmtree(self.path)
        self.plate_id = plate_id
        self.plate_rows = plate_rows
        self.plate_columns = plate_columns
        self.channel_names = tuple(channel_names)
        self.pixel_size_um = float(pixel_size_um)
        self.label_names = tuple(label_names)
        self._root = zarr.open_group(self.path, mode="w-", zarr_format=3)
        self._fields: dict[tuple[int, int], list[int]] = {}
        self._table: list[Mapping[str, object]] | None = None
        self._closed = False

    def add_field(
        self,
        row: int,
        col: int,
        field: int,
        image: npt.ArrayLike,
        *,
        labels: Mapping[str, npt.ArrayLike] | None = None,
    ) -> str:
        """Write one field's image and label images.

        Parameters
        ----------
        row, col : int
            1-based well position.
        field : int
            1-based field number (image ``field - 1`` in the well).
        image : (C, Y, X) array_like of the writer's dtype (uint16 by default)
            One plane per channel name.
        labels : dict of str to (Y, X) array_like of uint8, optional
            Label images by name (a subset of ``label_names``): 0 background, 1 phagophore,
            2 autolysosome.

        Returns
        -------
        str
            The image's path in the plate, e.g. ``"B/05/0"``.
        """
        img, masks = self._validate_field(row, col, field, image, labels or {})
        fields = self._fields.setdefault((row, col), [])
        fields.append(field)
        path = f"{row_letter(row)}/{col:02d}/{field - 1}"
        group = self._root.require_group(path)
        _write_array(group, "0", img, chunks=(1, *img.shape[1:]), dims=("c", "y", "x"))
        group.attrs.update(self._image_attrs(img))
        if masks:
            self._write_labels(group, masks)
        return path

    def set_well_table(self, rows: Sequence[Mapping[str, object]]) -> None:
        """Well table written at :meth:`close` (one mapping per well, the same keys in each).

        A ``well`` key is added (the ``A01`` name) when the rows carry ``row`` and ``col``
        but no ``well``; values are numbers, booleans, text or ``None`` (written as NaN / "").
        """
        if rows and any(set(r) != set(rows[0]) for r in rows):
            raise ValueError("every well-table row must have the same columns")
        self._table = list(rows)

    def close(self) -> Path:
        """Write plate, well and table metadata and validate the plate; returns its path."""
        if self._closed:
            return self.path
        self._closed = True
        for (row, col), fields in sorted(self._fields.items()):
            self._root[f"{row_letter(row)}/{col:02d}"].attrs.update(self._well_attrs(fields))
        self._root.attrs.update(self._plate_attrs())
        if self._table:
            _write_table(self._root, self._table)
        _validate_written(self._root)
        return self.path

    # -- metadata ------------------------------------------------------------------------

    def _multiscale(self, axes: Sequence[tuple[str, str, str | None]], name: str) -> Any:
        from ome_zarr_models.v05.axes import Axis
        from ome_zarr_models.v05.multiscales import Dataset, Multiscale

        scale = [1.0 if kind == "channel" else self.pixel_size_um for _, kind, _ in axes]
        return Multiscale(
            axes=tuple(Axis(name=n, type=kind, unit=unit) for n, kind, unit in axes),
            datasets=(Dataset.build(path="0", scale=scale, translation=None),),
            name=name,
            type="none",  # one level, as acquired: no downsampling method
            metadata={"description": "single resolution level", "writer": "phagoflow"},
        )

    def _image_attrs(self, img: npt.NDArray[Any]) -> dict[str, Any]:
        from ome_zarr_models.v05.image import ImageAttrs

        axes = [("c", "channel", None), ("y", "space", "micrometer"), ("x", "space", "micrometer")]
        attrs = ImageAttrs(
            version=_NGFF_VERSION,
            multiscales=[self._multiscale(axes, "image")],
            omero=_omero(self.channel_names, img),
        )
        return {"ome": attrs.model_dump(mode="json", by_alias=True, exclude_none=True)}

    def _write_labels(self, image_group: zarr.Group, masks: Mapping[str, Any]) -> None:
        from ome_zarr_models.v05.image_label import ImageLabelAttrs
        from ome_zarr_models.v05.image_label_types import Color, Label, Property, Source
        from ome_zarr_models.v05.labels import LabelsAttrs

        labels = image_group.require_group("labels")
        labels.attrs.update(
            {"ome": LabelsAttrs(version=_NGFF_VERSION, labels=list(masks)).model_dump(mode="json")}
        )
        axes = [("y", "space", "micrometer"), ("x", "space", "micrometer")]
        label_meta = Label(
            version=_NGFF_VERSION,
            colors=tuple(Color(label_value=v, rgba=rgba) for v, rgba in LABEL_COLOURS.items()),
            properties=tuple(
                Property(label_value=v, **{"class": c}) for v, c in LABEL_CLASSES.items()
            ),
            source=Source(image="../../"),
        )
        for name, mask in masks.items():
            group = labels.require_group(name)
            _write_array(group, "0", mask, chunks=mask.shape, dims=("y", "x"))
            attrs = ImageLabelAttrs(
                version=_NGFF_VERSION,
                multiscales=[self._multiscale(axes, name)],
                **{"image-label": label_meta},
            )
            dumped = attrs.model_dump(mode="json", by_alias=True, exclude_none=True)
            group.attrs.update({"ome": dumped})

    def _well_attrs(self, fields: list[int]) -> dict[str, Any]:
        from ome_zarr_models.v05.well import WellAttrs
        from ome_zarr_models.v05.well_types import WellImage, WellMeta

        images = [WellImage(path=str(f - 1), acquisition=0) for f in sorted(fields)]
        attrs = WellAttrs(version=_NGFF_VERSION, well=WellMeta(images=images, version="0.5"))
        return {"ome": attrs.model_dump(mode="json", by_alias=True, exclude_none=True)}

    def _plate_attrs(self) -> dict[str, Any]:
        from ome_zarr_models.v05.hcs import HCSAttrs
        from ome_zarr_models.v05.plate import Acquisition, Column, Plate, Row, WellInPlate

        wells = [
            WellInPlate(path=f"{row_letter(r)}/{c:02d}", rowIndex=r - 1, columnIndex=c - 1)
            for r, c in sorted(self._fields)
        ]
        field_count = max((len(f) for f in self._fields.values()), default=1)
        plate = Plate(
            version=_NGFF_VERSION,
            name=self.plate_id,
            rows=[Row(name=row_letter(r)) for r in range(1, self.plate_rows + 1)],
            columns=[Column(name=f"{c:02d}") for c in range(1, self.plate_columns + 1)],
            wells=wells,
            acquisitions=[Acquisition(id=0, name=self.plate_id, maximumfieldcount=field_count)],
            field_count=field_count,
        )
        attrs = HCSAttrs(version=_NGFF_VERSION, plate=plate)
        return {"ome": attrs.model_dump(mode="json", by_alias=True, exclude_none=True)}

    # -- validation ----------------------------------------------------------------------

    def _validate_field(
        self,
        row: int,
        col: int,
        field: int,
        image: npt.ArrayLike,
        labels: Mapping[str, npt.ArrayLike],
    ) -> tuple[npt.NDArray[Any], dict[str, npt.NDArray[np.uint8]]]:
        if self._closed:
            raise ValueError(f"{self.path}: the plate is closed")
        if not (1 <= row <= self.plate_rows and 1 <= col <= self.plate_columns):
            raise ValueError(
                f"well ({row}, {col}) is not on a {self.plate_rows} × {self.plate_columns} plate"
            )
        if field < 1 or field in self._fields.get((row, col), []):
            raise ValueError(f"field {field} of well {well_name(row, col)} is < 1 or repeated")
        img = np.asarray(image)
        want = len(self.channel_names)
        if img.ndim != 3 or img.shape[0] != want or img.dtype != self.dtype:
            raise ValueError(
                f"image must be ({want}, Y, X) {self.dtype}, got {img.shape} {img.dtype}"
            )
        masks: dict[str, npt.NDArray[np.uint8]] = {}
        for name, mask in labels.items():
            m = np.asarray(mask)
            if name not in self.label_names:
                raise ValueError(f"unknown label image {name!r}; declared: {self.label_names}")
            if m.shape != img.shape[1:] or m.dtype != np.uint8:
                raise ValueError(
                    f"label image {name!r} must be {img.shape[1:]} uint8, got {m.shape} {m.dtype}"
                )
            masks[name] = m
        return img, masks


def _validate_plate_options(
    plate_id: str,
    plate_rows: int,
    plate_columns: int,
    channel_names: Sequence[str],
    pixel_size_um: float,
    label_names: Sequence[str],
) -> None:
    if not plate_id:
        raise ValueError("plate_id must be a non-empty name")
    if not (1 <= plate_rows <= 32 and 1 <= plate_columns <= 99):
        raise ValueError(
            f"plate geometry must be 1..32 × 1..99, got {plate_rows} × {plate_columns}"
        )
    if not channel_names or not all(channel_names):
        raise ValueError(f"channel_names must be non-empty names, got {tuple(channel_names)}")
    if not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be a positive number, got {pixel_size_um!r}")
    bad = [n for n in label_names if not n.isidentifier()]
    if bad or len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names must be unique plain names, got {tuple(label_names)}")


def _omero(names: Sequence[str], img: npt.NDArray[Any]) -> dict[str, Any]:
    """Transitional ``omero`` block: channel names, colours and a 0.1–99.9 % display window."""
    channels = []
    top = 65535.0 if img.dtype == np.uint16 else max(65535.0, float(img.max(initial=0)))
    for name, plane in zip(names, img, strict=True):
        lo, hi = (float(v) for v in np.percentile(plane, [0.1, 99.9]))
        channels.append(
            {
                "label": name,
                "color": default_channel_colour(name),
                "active": True,
                "window": {"min": 0.0, "max": top, "start": lo, "end": max(hi, lo + 1)},
            }
        )
    return {"channels": channels, "rdefs": {"model": "color"}}


def _write_array(
    group: zarr.Group,
    name: str,
    data: npt.NDArray[Any],
    *,
    chunks: Sequence[int],
    dims: Sequence[str],
) -> None:
    arr = group.create_array(
        name, shape=data.shape, dtype=data.dtype, chunks=tuple(chunks), dimension_names=dims
    )
    arr[...] = data


def _write_table(root: zarr.Group, rows: Sequence[Mapping[str, object]]) -> None:
    table = root.require_group("tables").require_group("wells")
    columns = list(rows[0])
    if "well" not in columns and {"row", "col"} <= set(columns):
        rows = [{"well": well_name(int(r["row"]), int(r["col"]))} | dict(r) for r in rows]  # type: ignore[call-overload]
        columns = ["well", *columns]
    for col in columns:
        values = [r[col] for r in rows]
        if all(isinstance(v, bool) for v in values):
            data: npt.NDArray[Any] = np.asarray(values, dtype=bool)
        elif all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values
        ):
            data = np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)
        else:
            data = np.asarray(["" if v is None else str(v) for v in values], dtype=object)
        arr = table.create_array(
            col, shape=data.shape, dtype=str if data.dtype == object else data.dtype
        )
        arr[...] = data
    root["tables"].attrs.update({"tables": ["wells"]})
    table.attrs.update({"type": _TABLE_TYPE, "version": "1", "columns": columns, "index": "well"})


def _validate_written(root: zarr.Group) -> None:
    """Re-read the whole plate through ome-zarr-models' validating models (raises if invalid)."""
    from ome_zarr_models.v05.hcs import HCS

    HCS.from_zarr(root)
