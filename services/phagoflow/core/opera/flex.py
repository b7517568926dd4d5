"""Opera QEHS ``.flex`` exports: one multi-page little-endian TIFF per well.

The first IFD of each file carries the Flex XML in private tag 65200 (tifffile: ``FlexXML``):

* ``Arrays/Array`` — one per page, in page order, with ``Name`` and ``Factor`` (pixel value =
  stored count × Factor);
* ``Well/WellCoordinate@Row/@Col`` — the well (1-based); the file name ``RRRCCCFFF.flex`` is
  the fallback;
* ``Well/Images/Image@BufferNo`` — the page, with ``ExposureNo`` (channel), ``Stack`` (plane),
  ``Sublayout`` (field), optional ``TimePoint`` (0-based), ``ImageResolutionX/Y`` (metres),
  ``CameraBinningX/Y``;
* channel names from ``Exposures/Exposure[@No]/Name``, else the Image's
  ``FilterCombinationRef``, else the Array ``Name``.

:func:`is_flex` detects, :func:`parse_flex` parses every file's XML once (pixels are not read)
into a role-free :class:`~phagoflow.core.opera.catalogue.PlateIndex`.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Final

import tifffile

from .catalogue import (
    FieldKey,
    FieldProblem,
    IndexedImage,
    PlateFormatError,
    PlateIndex,
    required_int,
)
from .harmony import _parse_xml, _resolution_um, _strip_namespaces, infer_geometry

__all__ = ["FLEX_XML_TAG", "find_flex_files", "is_flex", "parse_flex", "read_flex_xml"]

#: TIFF tag holding the Flex XML in the first IFD.
FLEX_XML_TAG: Final[int] = 65200

_NAME_RE: Final[re.Pattern[str]] = re.compile(r"(\d{3})(\d{3})(\d{3})\.flex$", re.IGNORECASE)
_EXP_RE: Final[re.Pattern[str]] = re.compile(r"Exp(\d+)", re.IGNORECASE)


def find_flex_files(path: str | Path) -> list[Path]:
    """``.flex`` files of ``path`` (the file itself, or the folder's, sorted by name)."""
    p = Path(path)
    if p.is_file():
        return [p] if p.suffix.lower() == ".flex" else []
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.suffix.lower() == ".flex" and f.is_file())
    return []


def is_flex(path: str | Path) -> bool:
    """Whether ``path`` is a ``.flex`` file or a folder holding some."""
    return bool(find_flex_files(path))


def read_flex_xml(path: Path) -> bytes:
    """Raw bytes of the Flex XML (tag 65200 of the first IFD) of one ``.flex`` file.

    Raises
    ------
    PlateFormatError
        Not a readable TIFF, or no tag 65200; the message names the file.
    """
    try:
        with tifffile.TiffFile(path) as tf:
            tag = tf.pages.first.tags.get(FLEX_XML_TAG)
            if tag is None:
                raise PlateFormatError(f"{path}: no Flex XML (TIFF tag {FLEX_XML_TAG})")
            if tag.count <= 4 or tag.valueoffset <= 0:  # tiny values live in the IFD entry
                value = tag.value
                raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            else:
                fh = tf.filehandle
                fh.seek(tag.valueoffset)
                raw = fh.read(tag.count)
    except PlateFormatError:
        raise
    except (OSError, ValueError, IndexError, EOFError) as exc:
        raise PlateFormatError(f"{path}: not a readable .flex TIFF ({exc})") from exc
    return raw.rstrip(b"\x00")


def parse_flex(path: str | Path) -> PlateIndex:
    """Parse the Flex XML of every ``.flex`` file of ``path`` into a :class:`PlateIndex`.

    Parameters
    ----------
    path : str or Path
        A ``.flex`` file or a folder of them (one file per well).

    Returns
    -------
    PlateIndex
        One :class:`IndexedImage` per ``Image@BufferNo`` (page, factor, field, plane, channel);
        ``index_sha256`` hashes every file's XML; files whose XML cannot be read are listed in
        ``problems`` when the folder holds other, readable files.

    Raises
    ------
    PlateFormatError
        No ``.flex`` file, malformed XML (with line and column), an Image without integer
        BufferNo/Sublayout/ExposureNo, or no file readable at all. The message names the file.
    """
    files = find_flex_files(path)
    if not files:
        raise PlateFormatError(f"no Index.idx.xml / Index.xml / .flex found in {path}")
    xml, problems = _read_xml(files)
    sha = hashlib.sha256()
    images: list[IndexedImage] = []
    names: dict[int, str] = {}
    plate_id = measurement_id = version = ""
    rows = cols = 0
    for file, raw in xml:
        sha.update(file.name.encode() + b"\x00" + raw + b"\x00")
        flex = _flex_element(raw, file)
        version = version or flex.get("version", "")
        pid, mid, r, c = _plate_info(flex)
        plate_id, measurement_id = plate_id or pid, measurement_id or mid
        rows, cols = rows or r, cols or c
        images.extend(_file_images(file, flex, names))
    if not xml:
        raise PlateFormatError(f"{path}: no readable .flex file ({problems[0].reason})")
    readable = [file for file, _ in xml]
    digest = sha.hexdigest()
    for im in images:
        names.setdefault(im.channel_id, f"channel {im.channel_id}")
    if rows <= 0 or cols <= 0:
        rows, cols = infer_geometry(
            max((im.key.row for im in images), default=1),
            max((im.key.col for im in images), default=1),
        )
    root_dir = files[0].parent
    return PlateIndex(
        export_format="flex",
        format_version=f"FLEX {version}".strip(),
        plate_id=plate_id or root_dir.name,
        measurement_id=measurement_id or digest[:16],
        root=root_dir,
        index_path=readable[0],
        index_sha256=digest,
        plate_rows=rows,
        plate_columns=cols,
        channel_names=dict(sorted(names.items())),
        images=tuple(images),
        metadata_files=tuple(readable),
        declared_wells=tuple(sorted({im.key.well for im in images})),
        problems=tuple(problems),
    )


# -- private helpers -----------------------------------------------------------------------
def _file_images(file: Path, flex: ET.Element, names: dict[int, str]) -> list[IndexedImage]:
    """The images of one file's FLEX element; adds channel names to ``names``."""
    arrays = flex.findall("Arrays/Array")
    factors = [_to_float(a.get("Factor"), 1.0) for a in arrays]
    array_names = [a.get("Name", "") for a in arrays]
    array_sizes = [(_to_int(a.get("Height")), _to_int(a.get("Width"))) for a in arrays]
    exposure_names = _exposure_names(flex)
    row, col, image_els = _well_images(file, flex)

    out: list[IndexedImage] = []
    for n, el in enumerate(image_els):
        values = {child.tag: (child.text or "").strip() for child in el}
        units = {child.tag: child.get("Unit", "") for child in el if "Resolution" in child.tag}
        page = _required_int(el.get("BufferNo", values.get("BufferNo")), "BufferNo", file, n)
        array_name = array_names[page] if page < len(array_names) else ""
        exposure = values.get("ExposureNo") or ""
        if not exposure and (m := _EXP_RE.search(array_name)):
            exposure = m.group(1)
        cid = _required_int(exposure, "ExposureNo", file, n)
        key = FieldKey(
            row=row,
            col=col,
            field=_required_int(values.get("Sublayout") or "1", "Sublayout", file, n),
            plane=_required_int(values.get("Stack") or "1", "Stack", file, n),
            timepoint=_to_int(values.get("TimePoint")),
        )
        if cid not in names:
            names[cid] = (
                exposure_names.get(cid)
                or values.get("FilterCombinationRef")
                or array_name
                or f"channel {cid}"
            )
        size: tuple[int, int] | None = None
        h, w = _to_int(values.get("ImageSizeY")), _to_int(values.get("ImageSizeX"))
        if h > 0 and w > 0:
            size = (h, w)
        elif page < len(array_sizes) and min(array_sizes[page]) > 0:
            size = array_sizes[page]
        out.append(
            IndexedImage(
                key=key,
                channel_id=cid,
                url=file.name,
                path=file,
                page=page,
                factor=factors[page] if page < len(factors) else 1.0,
                size_yx=size,
                pixel_size_um=_resolution_um(
                    values.get("ImageResolutionX"), units.get("ImageResolutionX", "")
                ),
            )
        )
    return out


def _read_xml(files: list[Path]) -> tuple[list[tuple[Path, bytes]], list[FieldProblem]]:
    """The Flex XML of each readable file, and a problem per unreadable one (raised if alone)."""
    xml: list[tuple[Path, bytes]] = []
    problems: list[FieldProblem] = []
    for file in files:
        try:
            xml.append((file, read_flex_xml(file)))
        except PlateFormatError as exc:
            if len(files) == 1:
                raise
            problems.append(FieldProblem(None, str(file), str(exc)))
    return xml, problems


def _flex_element(raw: bytes, file: Path) -> ET.Element:
    """The ``<FLEX>`` element of a file's XML (namespaces stripped)."""
    root = _parse_xml(raw, file)
    _strip_namespaces(root)
    flex = root if root.tag == "FLEX" else root.find(".//FLEX")
    if flex is None:
        raise PlateFormatError(f"{file}: the Flex XML has no <FLEX> element")
    return flex


def _plate_info(flex: ET.Element) -> tuple[str, str, int, int]:
    """Plate id (barcode or name), measurement id, rows and columns; empty/0 where absent."""
    plate = flex.find("Plate")
    if plate is None:
        return "", "", 0, 0
    return (
        _child_text(plate, "Barcode") or _child_text(plate, "PlateName"),
        _child_text(plate, "MeasurementID"),
        _to_int(_child_text(plate, "YSize")),
        _to_int(_child_text(plate, "XSize")),
    )


def _exposure_names(flex: ET.Element) -> dict[int, str]:
    """Exposure number → its name (or description), from ``Exposures/Exposure``."""
    exposure_names: dict[int, str] = {}
    for exp in flex.iterfind("Exposures/Exposure"):
        no = _to_int(exp.get("No") or exp.get("ID"))
        name = exp.get("Name") or _child_text(exp, "Name") or _child_text(exp, "Description")
        if no > 0 and name:
            exposure_names[no] = name
    return exposure_names


def _well_images(file: Path, flex: ET.Element) -> tuple[int, int, list[ET.Element]]:
    """Row and column of the file's well (its WellCoordinate, else its name) and its images."""
    well_el = flex.find("Well")
    if well_el is None:
        well_el = flex.find(".//Well")
    coord = well_el.find("WellCoordinate") if well_el is not None else None
    row = _to_int(coord.get("Row")) if coord is not None else 0
    col = _to_int(coord.get("Col")) if coord is not None else 0
    if row <= 0 or col <= 0:
        m = _NAME_RE.search(file.name)
        if m is None:
            raise PlateFormatError(f"{file}: no WellCoordinate@Row/@Col and no RRRCCC in the name")
        row, col = int(m.group(1)), int(m.group(2))
    image_els = well_el.findall("Images/Image") if well_el is not None else []
    if not image_els:
        image_els = flex.findall(".//Images/Image")
    return row, col, image_els


def _child_text(parent: ET.Element, tag: str) -> str:
    el = parent.find(tag)
    return (el.text or "").strip() if el is not None else ""


def _to_int(text: str | None) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        return 0


def _to_float(text: str | None, default: float) -> float:
    try:
        return float(str(text).strip())
    except ValueError:
        return default


def _required_int(text: str | None, what: str, file: Path, n: int) -> int:
    return required_int(text, f"{file}: Flex Image #{n}", what)
