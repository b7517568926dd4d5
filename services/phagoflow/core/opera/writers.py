"""Writers of synthetic Opera exports: Harmony V4–V7 folders and Opera QEHS ``.flex`` files.

The writers produce the same structure a Revvity/PerkinElmer instrument does, so the readers in
:mod:`phagoflow.core.opera` (and third-party readers) can be tested on known pixels:

* **Harmony** (``harmony4`` … ``harmony7``): ``out_dir/Images/`` with one uint16 TIFF per plane
  named ``r<RR>c<CC>f<FF>p<PP>-ch<C>sk<T+1>fk1fl1.tiff`` and the index — ``Index.idx.xml`` for
  V4/V5 (channel description on every ``Image``), ``Index.xml`` with a UTF-8 BOM for V6/V7
  (channel description only in ``Maps/Map/Entry[@ChannelID]``, in a non-first ``Map``).
* **flex**: ``out_dir/`` with one multi-page little-endian TIFF per well, ``RRRCCC000.flex``,
  whose first IFD carries the Flex XML in private tag 65200 (``FlexXML``).

Use :func:`open_writer` as a context manager::

    with open_writer("harmony6", tmp, plate_id="P1") as w:
        w.add_field(FieldKey(2, 5, 1), image)  # uint16 (2, H, W) ordered [DsRed, pHluorin]
    catalogue = read_plate(w.root)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NotRequired, TypedDict, Unpack

import numpy as np
import numpy.typing as npt
import tifffile

from phagoflow.core.closing import ClosesOnSuccess

from .catalogue import FieldKey
from .harmony import TIMEPOINT_BASE

__all__ = [
    "EXPORT_FORMATS",
    "ExportWriter",
    "FlexWriter",
    "HarmonyWriter",
    "WriterOptions",
    "open_writer",
]

#: Export formats :func:`open_writer` can write (and :func:`read_plate` can read).
EXPORT_FORMATS: Final[tuple[str, ...]] = ("harmony4", "harmony5", "harmony6", "harmony7", "flex")

#: Harmony index namespaces by major version (V7 uses a GUID-style path, as real V7 exports do).
HARMONY_NAMESPACES: Final[dict[int, str]] = {
    4: "http://www.perkinelmer.com/PEHH/HarmonyV4",
    5: "http://www.perkinelmer.com/PEHH/HarmonyV5",
    6: "http://www.perkinelmer.com/PEHH/HarmonyV6",
    7: "http://www.perkinelmer.com/PEHH/HarmonyV7/5d0fa4b3-2ac1-4d2e-9a5c-0f3c6e7b8a91",
}

#: Flex XML namespace of Opera QEHS files.
FLEX_NAMESPACE: Final[str] = "http://www.evotec-technologies.com/FlexXML"

#: TIFF tag holding the Flex XML in the first IFD of a ``.flex`` file.
FLEX_XML_TAG: Final[int] = 65200

_XSI: Final[str] = "http://www.w3.org/2001/XMLSchema-instance"
_XSD: Final[str] = "http://www.w3.org/2001/XMLSchema"

# Excitation / emission (nm) per role index, Rosella on an Opera: DsRed 561/600, pHluorin 488/525.
_WAVELENGTHS: Final[tuple[tuple[int, int] | None, tuple[int, int] | None]] = (
    (561, 599),
    (488, 522),
)
_NUCLEAR_WAVELENGTHS: Final[tuple[int, int]] = (405, 456)  # Hoechst 33342 on an Opera
#: TIFF compressions the Harmony writer can use (Harmony itself writes LZW).
TIFF_COMPRESSIONS: Final[tuple[str, ...]] = ("none", "lzw", "deflate", "zstd", "packbits")


class WriterOptions(TypedDict):
    """The plate options every writer takes (see :class:`ExportWriter` for each one's meaning).

    :func:`open_writer` passes them on unchanged; only ``plate_id`` is required.
    """

    plate_id: str
    plate_rows: NotRequired[int]
    plate_columns: NotRequired[int]
    pixel_size_um: NotRequired[float]
    size_yx: NotRequired[tuple[int, int]]
    channel_names: NotRequired[tuple[str, str]]
    measurement_id: NotRequired[str | None]
    fields_per_well: NotRequired[int | None]
    wavelengths: NotRequired[tuple[tuple[int, int] | None, tuple[int, int] | None]]
    nuclear_name: NotRequired[str | None]


_START: Final[_dt.datetime] = _dt.datetime(2024, 3, 14, 9, 30, 0, tzinfo=_dt.UTC)


@dataclass(frozen=True)
class _Plane:
    """One written plane (one channel of one field), remembered for the index."""

    key: FieldKey
    role_index: int  # 0 DsRed, 1 pHluorin (position in the added image)
    url: str
    max_intensity: int


class ExportWriter(ClosesOnSuccess):
    """Base class of the export writers; use :func:`open_writer` to make one.

    Parameters
    ----------
    out_dir : Path
        Export folder; created if absent.
    plate_id : str
        Plate barcode written as PlateID.
    plate_rows, plate_columns : int
        Plate geometry (8 × 12 for 96 wells).
    pixel_size_um : float
        Pixel size in µm (written as ImageResolutionX/Y in metres).
    size_yx : tuple of int
        Field size ``(H, W)`` in pixels; every added image must be ``(2, H, W)``.
    channel_names : tuple of str
        Vendor names of the channels, ordered like the image planes ``[DsRed, pHluorin]``.
    measurement_id : str, optional
        MeasurementID; derived from ``plate_id`` when ``None``.
    fields_per_well : int, optional
        Declared fields per well. Fields above it are rejected; fields never added to a well
        that has others are written as not acquired (empty URL in Harmony).
    wavelengths : tuple of ((int, int) or None), optional
        Main (excitation, emission) in nm per plane ``[DsRed, pHluorin]``; ``None`` for a
        plane leaves them out of the index. Default: Rosella on an Opera, DsRed 561/599,
        pHluorin 488/522.
    nuclear_name : str, optional
        Harmony only: also write a nuclear-stain channel of this name (e.g. ``"HOECHST 33342"``,
        excitation/emission 405/456 nm, ChannelID 3); images are then ``(3, H, W)``
        ``[DsRed, pHluorin, nuclei]``.
    """

    export_format: str = ""

    def __init__(
        self,
        out_dir: Path,
        *,
        plate_id: str,
        plate_rows: int = 8,
        plate_columns: int = 12,
        pixel_size_um: float = 0.2,
        size_yx: tuple[int, int] = (512, 680),
        channel_names: tuple[str, str] = ("DsRed", "pHluorin"),
        measurement_id: str | None = None,
        fields_per_well: int | None = None,
        wavelengths: tuple[tuple[int, int] | None, tuple[int, int] | None] = _WAVELENGTHS,
        nuclear_name: str | None = None,
    ) -> None:
        _validate_writer_options(
            plate_id, plate_rows, plate_columns, pixel_size_um, size_yx, channel_names
        )
        if fields_per_well is not None and fields_per_well < 1:
            raise ValueError(f"fields_per_well must be >= 1, got {fields_per_well}")
        self.out_dir = Path(out_dir)
        self.plate_id = plate_id
        self.plate_rows = plate_rows
        self.plate_columns = plate_columns
        self.pixel_size_um = float(pixel_size_um)
        self.size_yx = (int(size_yx[0]), int(size_yx[1]))
        if nuclear_name is not None and not str(nuclear_name).strip():
            raise ValueError("nuclear_name must be a non-empty channel name or None")
        names = (str(channel_names[0]), str(channel_names[1]))
        self.channel_names: tuple[str, ...] = names + ((str(nuclear_name),) if nuclear_name else ())
        self.n_planes = len(self.channel_names)
        digest = hashlib.sha1(plate_id.encode()).hexdigest()[:12]
        self.measurement_id = measurement_id or f"{plate_id}-meas-{digest}"
        self.fields_per_well = fields_per_well
        self.wavelengths: tuple[tuple[int, int] | None, ...] = (
            (*wavelengths, _NUCLEAR_WAVELENGTHS) if nuclear_name else wavelengths
        )
        self._keys: set[FieldKey] = set()
        self._closed = False
        self._root: Path | None = None

    # -- context manager -------------------------------------------------------------------
    def abandon(self) -> None:
        """Leave what was written, without an index: an interrupted acquisition."""
        self._closed = True

    # -- public API ------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """Folder to give to ``read_plate`` (valid after :meth:`close`)."""
        if self._root is None:
            raise RuntimeError("writer not closed yet: call close() first")
        return self._root

    def add_field(self, key: FieldKey, image: npt.NDArray[np.uint16]) -> None:
        """Write one field.

        Parameters
        ----------
        key : FieldKey
            Row/col/field/plane (1-based) and timepoint (0-based) of the field.
        image : (2, H, W) or (3, H, W) ndarray of uint16
            Channels ordered ``[DsRed, pHluorin]`` (``ROLE_ORDER``), then nuclei when the
            writer was opened with ``nuclear_name``; raw camera counts.
        """
        if self._closed:
            raise RuntimeError("writer is closed")
        self._validate_key(key)
        arr = _validate_image(image, self.size_yx, self.n_planes)
        self._keys.add(key)
        self._write_field(key, arr)

    def close(self) -> Path:
        """Write the index (Harmony) or the ``.flex`` files and return the export folder."""
        if not self._closed:
            self._closed = True
            self._root = self._finish()
        return self.root

    # -- hooks -----------------------------------------------------------------------------
    def _write_field(self, key: FieldKey, image: npt.NDArray[np.uint16]) -> None:
        raise NotImplementedError

    def _finish(self) -> Path:
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------
    def _validate_key(self, key: FieldKey) -> None:
        if not 1 <= key.row <= self.plate_rows or not 1 <= key.col <= self.plate_columns:
            raise ValueError(
                f"well {key.well} outside the {self.plate_rows} x {self.plate_columns} plate"
            )
        if key.field < 1 or key.plane < 1 or key.timepoint < 0:
            raise ValueError(f"field/plane must be >= 1 and timepoint >= 0, got {key}")
        if self.fields_per_well is not None and key.field > self.fields_per_well:
            raise ValueError(f"field {key.field} > fields_per_well={self.fields_per_well}")
        if key in self._keys:
            raise ValueError(f"field {key.name} added twice")

    def _all_keys(self) -> list[FieldKey]:
        """Added keys plus not-acquired ones completing the wells × fields × planes × times grid."""
        if not self._keys:
            return []
        wells = sorted({(k.row, k.col) for k in self._keys})
        n_fields = self.fields_per_well or max(k.field for k in self._keys)
        n_planes = max(k.plane for k in self._keys)
        n_times = max(k.timepoint for k in self._keys) + 1
        return [
            FieldKey(r, c, f, p, t)
            for (r, c) in wells
            for t in range(n_times)
            for f in range(1, n_fields + 1)
            for p in range(1, n_planes + 1)
        ]

    def _abs_time(self, key: FieldKey) -> str:
        seconds = key.timepoint * 600 + ((key.row * 24 + key.col) * 50 + key.field) * 2 + key.plane
        t = _START + _dt.timedelta(seconds=seconds)
        return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HarmonyWriter(ExportWriter):
    """Harmony V4–V7 export writer (see the module docstring for the layout).

    Extra parameters
    ----------------
    version : {4, 5, 6, 7}
        Harmony major version.
    channel_ids : tuple of int
        ChannelID written for image plane 0 (DsRed) and 1 (pHluorin); ``(2, 1)`` lists pHluorin
        first, to prove readers take roles from names, never from channel order.
    field_digits : int
        Digits of the field number in file names (2, or 3 as large Harmony screens use).
    compression : {'none', 'lzw', 'deflate', 'zstd', 'packbits'}
        TIFF compression of the planes (Harmony writes LZW).
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        version: int,
        channel_ids: tuple[int, int] = (1, 2),
        field_digits: int = 2,
        compression: str = "none",
        **options: Any,
    ) -> None:
        super().__init__(out_dir, **options)
        if version not in HARMONY_NAMESPACES:
            raise ValueError(f"Harmony version must be one of 4, 5, 6, 7, got {version}")
        if sorted(channel_ids) != [1, 2]:
            raise ValueError(f"channel_ids must be (1, 2) or (2, 1), got {channel_ids}")
        if field_digits not in (2, 3):
            raise ValueError(f"field_digits must be 2 or 3, got {field_digits}")
        if compression not in TIFF_COMPRESSIONS:
            raise ValueError(f"compression must be one of {TIFF_COMPRESSIONS}, got {compression!r}")
        self.compression = None if compression == "none" else compression
        self.version = version
        self.export_format = f"harmony{version}"
        self.channel_ids = (int(channel_ids[0]), int(channel_ids[1]), 3)[: self.n_planes]
        self.field_digits = field_digits
        self.images_dir = self.out_dir / "Images"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self._planes: dict[tuple[FieldKey, int], _Plane] = {}

    def file_name(self, key: FieldKey, role_index: int) -> str:
        """TIFF name of one plane, e.g. ``r02c05f01p01-ch1sk1fk1fl1.tiff``."""
        ch = self.channel_ids[role_index]
        return (
            f"r{key.row:02d}c{key.col:02d}f{key.field:0{self.field_digits}d}p{key.plane:02d}"
            f"-ch{ch}sk{key.timepoint + 1}fk1fl1.tiff"
        )

    def _write_field(self, key: FieldKey, image: npt.NDArray[np.uint16]) -> None:
        for role_index in range(self.n_planes):
            name = self.file_name(key, role_index)
            plane = np.ascontiguousarray(image[role_index])
            tifffile.imwrite(
                self.images_dir / name,
                plane,
                photometric="minisblack",
                metadata=None,
                compression=self.compression,
            )
            self._planes[(key, role_index)] = _Plane(key, role_index, name, int(plane.max()))

    def _finish(self) -> Path:
        xml = self._index_xml()
        if self.version >= 6:
            (self.images_dir / "Index.xml").write_bytes(b"\xef\xbb\xbf" + xml)
        else:
            (self.images_dir / "Index.idx.xml").write_bytes(xml)
        return self.images_dir

    # -- index -----------------------------------------------------------------------------
    def _channel_description(self, parent: ET.Element, role_index: int) -> None:
        """ChannelName, resolution, size, wavelengths … (on Image for V4/V5, Map Entry for V6+)."""
        waves = self.wavelengths[role_index]
        res = f"{self.pixel_size_um * 1e-6!r}"
        _sub(parent, "ChannelName", self.channel_names[role_index])
        _sub(parent, "ImageType", "Signal")
        _sub(parent, "AcquisitionType", "NipkowConfocal")
        _sub(parent, "IlluminationType", "Epifluorescence")
        _sub(parent, "ChannelType", "Fluorescence")
        _sub(parent, "ImageResolutionX", res, Unit="m")
        _sub(parent, "ImageResolutionY", res, Unit="m")
        _sub(parent, "ImageSizeX", str(self.size_yx[1]))
        _sub(parent, "ImageSizeY", str(self.size_yx[0]))
        _sub(parent, "BinningX", "2")
        _sub(parent, "BinningY", "2")
        _sub(parent, "CameraType", "AndorZylaCam")
        if waves is not None:
            _sub(parent, "MainExcitationWavelength", str(waves[0]), Unit="nm")
            _sub(parent, "MainEmissionWavelength", str(waves[1]), Unit="nm")
        _sub(parent, "ObjectiveMagnification", "63", Unit="")
        _sub(parent, "ObjectiveNA", "1.15", Unit="")
        _sub(parent, "ExposureTime", "0.2", Unit="s")

    def _index_xml(self) -> bytes:
        ns = HARMONY_NAMESPACES[self.version]
        root = ET.Element(
            "EvaluationInputData", {"xmlns": ns, "xmlns:xsi": _XSI, "xmlns:xsd": _XSD}
        )
        root.set("Version", "1" if self.version < 6 else "2")
        _sub(root, "User", "phagoflow")
        _sub(root, "InstrumentType", "Phenix")
        keys = self._all_keys()
        wells = sorted({(k.row, k.col) for k in keys})
        # plane order: ChannelID 1 first, or 2 first when channel_ids swap them; nuclei last
        order = tuple(range(self.n_planes))
        image_ids: dict[tuple[FieldKey, int], str] = {}
        for k in keys:
            for ri in order:
                ch = self.channel_ids[ri]
                image_ids[(k, ri)] = (
                    f"{k.row:02d}{k.col:02d}K{k.timepoint + 1}F{k.field}P{k.plane}R{ch}"
                )
        self._plate_xml(_sub(root, "Plates"), wells)
        wells_el = _sub(root, "Wells")
        for r, c in wells:
            w = _sub(wells_el, "Well")
            _sub(w, "id", f"{r:02d}{c:02d}")
            _sub(w, "Row", str(r))
            _sub(w, "Col", str(c))
            for k in keys:
                if (k.row, k.col) == (r, c):
                    for ri in order:
                        _sub(w, "Image", id=image_ids[(k, ri)])
        self._maps_xml(_sub(root, "Maps"), order)
        images = _sub(root, "Images")
        for k in keys:
            for ri in order:
                self._image_xml(images, k, ri, image_ids[(k, ri)])
        ET.indent(root, space="  ")
        xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        return xml

    def _plate_xml(self, plates: ET.Element, wells: list[tuple[int, int]]) -> None:
        plate = _sub(plates, "Plate")
        _sub(plate, "PlateID", self.plate_id)
        _sub(plate, "MeasurementID", self.measurement_id)
        _sub(plate, "MeasurementStartTime", self._abs_time(FieldKey(1, 1, 1)))
        _sub(plate, "Name", self.plate_id)
        _sub(plate, "PlateTypeName", f"{self.plate_rows * self.plate_columns} CellCarrier Ultra")
        _sub(plate, "PlateRows", str(self.plate_rows))
        _sub(plate, "PlateColumns", str(self.plate_columns))
        for r, c in wells:
            _sub(plate, "Well", id=f"{r:02d}{c:02d}")

    def _maps_xml(self, maps: ET.Element, order: tuple[int, ...]) -> None:
        height, width = self.size_yx
        flatfield = (
            "{Background: {Character: Flat, Mean: 110.0}, Foreground: {Character: NonFlat, "
            "Mean: 812.5, Profile: {Coefficients: [[0.0], [0.0, 0.0]], "
            f"Dims: [{width}, {height}], Type: Polynomial}}}}, Version: 1.0}}"
        )
        flat = _sub(maps, "Map")  # first Map: flat-field profiles, no channel description
        for ri in order:
            e = _sub(flat, "Entry", ChannelID=str(self.channel_ids[ri]))
            _sub(e, "FlatfieldProfile", flatfield)
        if self.version >= 6:
            desc = _sub(maps, "Map")  # a later Map carries the channel description
            for ri in order:
                e = _sub(desc, "Entry", ChannelID=str(self.channel_ids[ri]))
                self._channel_description(e, ri)

    def _image_xml(self, images: ET.Element, k: FieldKey, ri: int, image_id: str) -> None:
        t_base = TIMEPOINT_BASE.get(f"HarmonyV{self.version}", 0)  # V7 counts from 1
        plane = self._planes.get((k, ri))
        img = _sub(images, "Image", Version="1")
        _sub(img, "id", image_id)
        _sub(img, "State", "Ok" if plane else "NotAcquired")
        _sub(img, "URL", plane.url if plane else "")
        _sub(img, "Row", str(k.row))
        _sub(img, "Col", str(k.col))
        _sub(img, "FieldID", str(k.field))
        _sub(img, "PlaneID", str(k.plane))
        _sub(img, "TimepointID", str(k.timepoint + t_base))
        _sub(img, "ChannelID", str(self.channel_ids[ri]))
        _sub(img, "FlimID", "1")
        if self.version < 6:
            self._channel_description(img, ri)
        _sub(img, "PositionX", f"{(k.field - 1) * 1.4e-4!r}", Unit="m")
        _sub(img, "PositionY", "0", Unit="m")
        _sub(img, "PositionZ", f"{(k.plane - 1) * 5e-7!r}", Unit="m")
        _sub(img, "AbsPositionZ", f"{0.0121 + (k.plane - 1) * 5e-7!r}", Unit="m")
        _sub(img, "MeasurementTimeOffset", str(k.timepoint * 600), Unit="s")
        _sub(img, "AbsTime", self._abs_time(k))
        _sub(img, "MaxIntensity", str(plane.max_intensity if plane else 0))


class FlexWriter(ExportWriter):
    """Opera QEHS ``.flex`` writer: one multi-page little-endian TIFF per well.

    Pages are ordered timepoint, field (Sublayout), plane (Stack), channel (ExposureNo); the
    Flex XML in tag 65200 of the first page maps each page (``Image@BufferNo``) to them.

    Extra parameters
    ----------------
    factor : float
        ``Arrays/Array@Factor`` written for every page: the stored counts times this are the
        pixel values (1.0 on most instruments).
    binning : int
        CameraBinningX/Y written in the XML (ImageResolutionX/Y already is the binned pixel).
    """

    export_format = "flex"

    def __init__(
        self, out_dir: Path, *, factor: float = 1.0, binning: int = 2, **options: Any
    ) -> None:
        super().__init__(out_dir, **options)
        if not np.isfinite(factor) or factor <= 0:
            raise ValueError(f"factor must be a positive number, got {factor}")
        self.factor = float(factor)
        self.binning = int(binning)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._fields: dict[FieldKey, npt.NDArray[np.uint16]] = {}

    @staticmethod
    def file_name(row: int, col: int) -> str:
        """``RRRCCC000.flex``: 3-digit row and column, field part 000 (all fields of the well)."""
        return f"{row:03d}{col:03d}000.flex"

    def _write_field(self, key: FieldKey, image: npt.NDArray[np.uint16]) -> None:
        self._fields[key] = image.copy()

    def _finish(self) -> Path:
        keys = self._all_keys()
        for r, c in sorted({(k.row, k.col) for k in keys}):
            well_keys = [k for k in keys if (k.row, k.col) == (r, c) and k in self._fields]
            if not well_keys:
                continue
            self._write_well(r, c, well_keys)
        self._fields.clear()
        return self.out_dir

    def _write_well(self, row: int, col: int, keys: list[FieldKey]) -> None:
        pages: list[tuple[FieldKey, int]] = [(k, ri) for k in keys for ri in (0, 1)]
        xml = self._flex_xml(row, col, pages)
        path = self.out_dir / self.file_name(row, col)
        with tifffile.TiffWriter(path, byteorder="<") as tw:
            for i, (k, ri) in enumerate(pages):
                tags = [(FLEX_XML_TAG, "s", 0, xml, True)] if i == 0 else []
                tw.write(
                    self._fields[k][ri],
                    photometric="minisblack",
                    metadata=None,
                    contiguous=False,
                    extratags=tags,
                )

    def _flex_xml(self, row: int, col: int, pages: list[tuple[FieldKey, int]]) -> str:
        h, w = self.size_yx
        root = ET.Element("Root", {"xmlns": FLEX_NAMESPACE, "xmlns:xsi": _XSI})
        flex = _sub(root, "FLEX", version="1.0")
        _sub(flex, "SoftwareVersion", "Opera 2.0.1 (phagoflow writer)")
        arrays = _sub(flex, "Arrays", Count=str(len(pages)))
        for i, (_, ri) in enumerate(pages):
            _sub(
                arrays,
                "Array",
                Name=f"Exp{ri + 1}Cam{ri + 1}",
                Type="Image",
                Width=str(w),
                Height=str(h),
                BitsPerPixel="16",
                CompressionType="None",
                Factor=f"{self.factor:.6f}",
                Offset="0",
                BufferNo=str(i),
            )
        self._flex_channels(flex)
        plate = _sub(flex, "Plate")
        _sub(plate, "Barcode", self.plate_id)
        _sub(plate, "MeasurementID", self.measurement_id)
        _sub(plate, "XSize", str(self.plate_columns))
        _sub(plate, "YSize", str(self.plate_rows))
        well = _sub(flex, "Well")  # a sibling of Plate, as Opera writes it
        _sub(well, "WellCoordinate", Row=str(row), Col=str(col))
        images = _sub(well, "Images")
        for i, (k, ri) in enumerate(pages):
            self._flex_image(images, i, k, ri)
        ET.indent(root, space=" ")
        body = ET.tostring(root, encoding="unicode", xml_declaration=False)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"

    def _flex_channels(self, flex: ET.Element) -> None:
        """Channel description: light sources, filters, cameras and named exposures."""
        lscs = _sub(flex, "LightSourceCombinations")
        filters = _sub(flex, "FilterCombinations")
        exposures = _sub(flex, "Exposures")
        for ri in (0, 1):
            ex, em = _WAVELENGTHS[ri] or (0, 0)
            lsc = _sub(lscs, "LightSourceCombination", ID=f"L{ex}")
            _sub(lsc, "LightSourceRef", ID=f"Laser{ex}", Power="1.0")
            fc = _sub(filters, "FilterCombination", ID=f"{self.channel_names[ri]}")
            _sub(fc, "SliderRef", ID=f"Camera{ri + 1}", Filter_ID=f"{em}/40")
            exp = _sub(exposures, "Exposure", No=str(ri + 1))
            _sub(exp, "Name", self.channel_names[ri])
            _sub(exp, "CameraRef", f"Cam{ri + 1}")
            _sub(exp, "LightSourceCombinationRef", f"L{ex}")
            _sub(exp, "FilterCombinationRef", self.channel_names[ri])
            _sub(exp, "ExposureTime", "0.2")

    def _flex_image(self, images: ET.Element, i: int, k: FieldKey, ri: int) -> None:
        h, w = self.size_yx
        res = f"{self.pixel_size_um * 1e-6!r}"
        ex, _ = _WAVELENGTHS[ri] or (0, 0)
        img = _sub(images, "Image", BufferNo=str(i))
        _sub(img, "DateTime", self._abs_time(k))
        _sub(img, "Sublayout", str(k.field))
        _sub(img, "Stack", str(k.plane))
        _sub(img, "TimePoint", str(k.timepoint))
        _sub(img, "ExposureNo", str(ri + 1))
        _sub(img, "CameraRef", f"Cam{ri + 1}")
        _sub(img, "LightSourceCombinationRef", f"L{ex}")
        _sub(img, "FilterCombinationRef", self.channel_names[ri])
        _sub(img, "ImageResolutionX", res, Unit="m")
        _sub(img, "ImageResolutionY", res, Unit="m")
        _sub(img, "CameraBinningX", str(self.binning))
        _sub(img, "CameraBinningY", str(self.binning))
        _sub(img, "ImageSizeX", str(w))
        _sub(img, "ImageSizeY", str(h))
        _sub(img, "PositionX", f"{(k.field - 1) * 1.4e-4!r}", Unit="m")
        _sub(img, "PositionY", "0", Unit="m")
        _sub(img, "PositionZ", f"{(k.plane - 1) * 5e-7!r}", Unit="m")


def open_writer(
    export_format: str,
    out_dir: Path,
    *,
    channel_ids: tuple[int, int] = (1, 2),
    field_digits: int = 2,
    flex_factor: float = 1.0,
    compression: str = "none",
    **options: Unpack[WriterOptions],
) -> ExportWriter:
    """Open a writer of one synthetic plate export.

    Parameters
    ----------
    export_format : {'harmony4', 'harmony5', 'harmony6', 'harmony7', 'flex'}
        Export format (see :data:`EXPORT_FORMATS`).
    out_dir : Path
        Export folder (Harmony writes ``out_dir/Images/``; flex writes into ``out_dir``).
    **options
        :class:`WriterOptions`, passed to the writer: ``plate_id`` (required), ``plate_rows``,
        ``plate_columns``, ``pixel_size_um`` (µm), ``size_yx`` (pixels ``(H, W)``),
        ``channel_names``, ``measurement_id``, ``fields_per_well``, ``wavelengths`` and
        ``nuclear_name`` (Harmony only); see :class:`ExportWriter`.
    channel_ids : tuple of int, default (1, 2)
        Harmony only: ChannelID of the DsRed and pHluorin planes (``(2, 1)`` swaps them).
    field_digits : {2, 3}
        Harmony only: digits of the field number in file names.
    flex_factor : float, default 1.0
        flex only: ``Array@Factor`` (pixel value = stored count × factor).
    wavelengths : tuple, optional
        Harmony only: (excitation, emission) nm per plane, ``None`` to leave one out.
    compression : {'none', 'lzw', 'deflate', 'zstd', 'packbits'}
        Harmony only: TIFF compression of the planes (Harmony itself writes LZW).
    nuclear_name : str, optional
        Harmony only: add a nuclear-stain channel of this name (images become ``(3, H, W)``).

    Returns
    -------
    ExportWriter
        A context manager; ``add_field(key, image)`` then ``close()`` (returns the folder to
        give to ``read_plate``).
    """
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"export_format must be one of {EXPORT_FORMATS}, got {export_format!r}")
    if export_format == "flex":
        nuclear_name = options.get("nuclear_name")
        if channel_ids != (1, 2) or field_digits != 2 or compression != "none" or nuclear_name:
            raise ValueError(
                "channel_ids, field_digits, compression and nuclear_name apply to Harmony "
                "exports only"
            )
        return FlexWriter(Path(out_dir), factor=flex_factor, **options)
    if flex_factor != 1.0:
        raise ValueError("flex_factor applies to .flex exports only")
    return HarmonyWriter(
        Path(out_dir),
        version=int(export_format.removeprefix("harmony")),
        channel_ids=channel_ids,
        field_digits=field_digits,
        compression=compression,
        **options,
    )


# -- private helpers -----------------------------------------------------------------------
def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def _validate_writer_options(
    plate_id: str,
    plate_rows: int,
    plate_columns: int,
    pixel_size_um: float,
    size_yx: tuple[int, int],
    channel_names: tuple[str, str],
) -> None:
    if not plate_id or "/" in plate_id or "\\" in plate_id:
        raise ValueError(f"plate_id must be a non-empty name without slashes, got {plate_id!r}")
    if not (1 <= plate_rows <= 99 and 1 <= plate_columns <= 99):
        raise ValueError(
            f"plate geometry must be 1..99 x 1..99, got {plate_rows} x {plate_columns}"
        )
    if not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be a positive number, got {pixel_size_um}")
    if len(size_yx) != 2 or min(size_yx) < 1:
        raise ValueError(f"size_yx must be (H, W) with H, W >= 1, got {size_yx}")
    if len(channel_names) != 2 or not all(channel_names):
        raise ValueError(f"channel_names must be two non-empty names, got {channel_names}")


def _validate_image(
    image: npt.NDArray[np.uint16], size_yx: tuple[int, int], n_planes: int = 2
) -> npt.NDArray[np.uint16]:
    arr = np.asarray(image)
    expected = (n_planes, *size_yx)
    if arr.shape != expected:
        raise ValueError(f"image must have shape {expected} ({n_planes}, H, W), got {arr.shape}")
    if arr.dtype != np.uint16:
        raise ValueError(f"image must be uint16, got {arr.dtype} with shape {arr.shape}")
    return arr
