"""Harmony (Opera Phenix / Operetta) exports: ``Index.idx.xml`` (V4/V5) or ``Index.xml`` (V6/V7).

Detect → parse → expose, as tifffile does for vendor formats: :func:`is_harmony` is a cheap
predicate, :func:`parse_harmony_index` parses the index once into a role-free
:class:`~phagoflow.core.opera.catalogue.PlateIndex` (the catalogue is assembled by
:func:`phagoflow.core.opera.read_plate`).

Format facts handled here:

* root ``EvaluationInputData`` in a namespace that varies by version (``.../PEHH/HarmonyV5``,
  a GUID path for V7): tags are matched by local name;
* ``Index.xml`` may start with a UTF-8 BOM;
* from Harmony 6 the channel description (ChannelName, ImageResolutionX/Y in metres,
  ImageSizeX/Y, wavelengths) lives in ``Maps/Map/Entry[@ChannelID]`` at no fixed Map position;
  a value on the ``Image`` wins;
* an empty ``URL`` means "not acquired"; an absolute or ``..`` URL is never followed;
* TimepointID counts from 0 in V4/V5 and from 1 in V7 (:data:`TIMEPOINT_BASE`); field keys
  are always 0-based, so a single-timepoint plate names its fields ``rRRcCCfFFpPP`` in every
  version;
* main excitation/emission wavelengths (nm) are kept per channel: they decide channel roles.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Final

from .catalogue import FieldKey, IndexedImage, PlateFormatError, PlateIndex, required_int

__all__ = [
    "HARMONY_INDEX_NAMES",
    "TIMEPOINT_BASE",
    "escaping_link_reason",
    "find_harmony_index",
    "infer_geometry",
    "is_harmony",
    "parse_harmony_index",
    "unsafe_url_reason",
]

#: Index file names, newest first (Harmony ≥ 6 writes ``Index.xml``, ≤ 5 ``Index.idx.xml``).
HARMONY_INDEX_NAMES: Final[tuple[str, ...]] = ("Index.xml", "Index.idx.xml")

_VERSION_RE: Final[re.Pattern[str]] = re.compile(r"Harmony(V\d+)", re.IGNORECASE)
_SCHEME_RE: Final[re.Pattern[str]] = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Channel description tags that may sit on the Image or in a Map Entry.
_CHANNEL_TAGS: Final[tuple[str, ...]] = (
    "ChannelName",
    "ImageResolutionX",
    "ImageSizeX",
    "ImageSizeY",
    "MainExcitationWavelength",
    "MainEmissionWavelength",
)
#: First TimepointID each Harmony version writes (V7 counts from 1, V4/V5 from 0); others 0.
TIMEPOINT_BASE: Final[dict[str, int]] = {"HarmonyV7": 1}


def find_harmony_index(path: str | Path) -> Path | None:
    """The Harmony index for ``path``, or ``None``.

    ``path`` may be the index file itself, the folder holding it (usually ``Images/``) or that
    folder's parent (the measurement folder).
    """
    p = Path(path)
    if p.is_file():
        if p.name.lower() in {n.lower() for n in HARMONY_INDEX_NAMES} or p.suffix == ".xml":
            return p
        return None
    for folder in (p, p / "Images"):
        for name in HARMONY_INDEX_NAMES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def is_harmony(path: str | Path) -> bool:
    """Whether ``path`` is (or holds) a Harmony export index."""
    return find_harmony_index(path) is not None


def unsafe_url_reason(url: str) -> str | None:
    """Why an index URL must not be followed (absolute, drive/scheme, ``..``), else ``None``."""
    if url.startswith(("/", "\\")) or _SCHEME_RE.match(url):
        return f"absolute URL {url!r} is not read (only paths inside the export are)"
    if ".." in re.split(r"[/\\]", url):
        return f"URL {url!r} leaves the export folder ('..') and is not read"
    return None


def escaping_link_reason(path: Path, root: Path) -> str | None:
    """Why ``path`` must not be read although its name lies inside ``root``, else ``None``.

    A symbolic link (the file, or a folder between ``root`` and it) that resolves outside the
    export folder is refused like a ``..`` URL: an export never reads files of other folders.
    """
    try:
        real, top = path.resolve(), root.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        return f"{path.name}: cannot resolve the path ({exc})"
    if real.is_relative_to(top):
        return None
    return (
        f"{path.name} is a symbolic link to {real}, outside the export folder {top}, "
        "and is not read"
    )


def parse_harmony_index(path: str | Path) -> PlateIndex:
    """Parse a Harmony index into a :class:`PlateIndex` (no pixels read, no roles assigned).

    Parameters
    ----------
    path : str or Path
        Index file, its folder or the measurement folder above it.

    Returns
    -------
    PlateIndex
        Every ``Image`` entry with its field key, channel id, URL (resolved inside the export
        folder), declared size ``(ImageSizeY, ImageSizeX)`` in pixels and pixel size in µm.

    Raises
    ------
    PlateFormatError
        No index found, malformed XML (with the parser's line and column), not an
        ``EvaluationInputData`` document, or an Image whose Row/Col/FieldID/ChannelID is not
        an integer. The message names the index file.
    """
    index_path, data, root, format_version = _read_index(path)
    plate = root.find("Plates/Plate")
    plate_id = _text(plate, "PlateID") or index_path.parent.parent.name or index_path.parent.name
    measurement_id = _text(plate, "MeasurementID") or hashlib.sha256(data).hexdigest()[:16]

    channel_maps = _channel_maps(root)
    folder = index_path.parent
    t_base = _timepoint_base(root, format_version)
    entries = [
        _indexed_image(el, n, index_path, t_base, channel_maps)
        for n, el in enumerate(root.iterfind("Images/Image"), start=1)
    ]
    images = [image for image, _ in entries]
    names, waves = _channel_descriptions(entries, channel_maps)
    max_row = max([0, *(im.key.row for im in images)])
    max_col = max([0, *(im.key.col for im in images)])

    rows = _int_or(_text(plate, "PlateRows"), 0)
    cols = _int_or(_text(plate, "PlateColumns"), 0)
    if rows <= 0 or cols <= 0:
        rows, cols = infer_geometry(max_row, max_col)
    declared = sorted(_declared_wells(root))
    return PlateIndex(
        export_format="harmony",
        format_version=format_version,
        plate_id=plate_id,
        measurement_id=measurement_id,
        root=folder,
        index_path=index_path,
        index_sha256=hashlib.sha256(data).hexdigest(),
        plate_rows=rows,
        plate_columns=cols,
        channel_names=dict(sorted(names.items())),
        images=tuple(images),
        metadata_files=(index_path,),
        declared_wells=tuple(declared),
        channel_wavelengths=dict(sorted(waves.items())),
    )


# -- private helpers -----------------------------------------------------------------------


def _read_index(path: str | Path) -> tuple[Path, bytes, ET.Element, str]:
    """The index file, its bytes, its namespace-free root and format version (``Harmony5``)."""
    index_path = find_harmony_index(path)
    if index_path is None:
        raise PlateFormatError(f"no Index.idx.xml / Index.xml / .flex found in {path}")
    try:
        data = index_path.read_bytes()
    except OSError as exc:
        raise PlateFormatError(f"{index_path}: cannot read the index ({exc})") from exc
    root = _parse_xml(data, index_path)
    namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    _strip_namespaces(root)
    if root.tag != "EvaluationInputData":
        raise PlateFormatError(
            f"{index_path}: not a Harmony index (root element <{root.tag}>, "
            "expected <EvaluationInputData>)"
        )
    m = _VERSION_RE.search(namespace)
    return index_path, data, root, f"Harmony{m.group(1).upper()}" if m else "Harmony"


def _channel_descriptions(
    entries: list[tuple[IndexedImage, dict[str, str]]], channel_maps: dict[int, dict[str, str]]
) -> tuple[dict[int, str], dict[int, tuple[float | None, float | None]]]:
    """Name and (excitation, emission) wavelengths (nm) per channel id, first image first.

    A channel no image names takes its Map's name, else ``"channel <id>"``.
    """
    names: dict[int, str] = {}
    waves: dict[int, tuple[float | None, float | None]] = {}
    for image, values in entries:
        cid = image.channel_id
        name = values.get("ChannelName")
        if name and cid not in names:
            names[cid] = name
        if cid not in waves:
            waves[cid] = (
                _float_or_none(values.get("MainExcitationWavelength")),
                _float_or_none(values.get("MainEmissionWavelength")),
            )
    for cid in {im.channel_id for im, _ in entries}:
        names.setdefault(cid, channel_maps.get(cid, {}).get("ChannelName", f"channel {cid}"))
    return names, waves


def _indexed_image(
    el: ET.Element,
    number: int,
    index_path: Path,
    t_base: int,
    channel_maps: dict[int, dict[str, str]],
) -> tuple[IndexedImage, dict[str, str]]:
    """The ``number``-th ``Image`` entry, and its values completed from its channel's Map."""
    values = {child.tag: (child.text or "").strip() for child in el}
    units = {child.tag: child.get("Unit", "") for child in el if "Resolution" in child.tag}
    ident = values.get("id") or f"#{number}"
    cid = _int(values.get("ChannelID"), "ChannelID", index_path, ident)
    key = FieldKey(
        row=_int(values.get("Row"), "Row", index_path, ident),
        col=_int(values.get("Col"), "Col", index_path, ident),
        field=_int(values.get("FieldID"), "FieldID", index_path, ident),
        plane=_int(values.get("PlaneID") or "1", "PlaneID", index_path, ident),
        timepoint=_timepoint(values.get("TimepointID"), t_base, index_path, ident),
    )
    channel = channel_maps.get(cid, {})
    for tag in _CHANNEL_TAGS:  # a value on the Image wins over the Map
        if not values.get(tag) and channel.get(tag):
            values[tag] = channel[tag]
            units.setdefault(tag, channel.get(f"{tag}@Unit", ""))
    url = values.get("URL", "")
    problem = unsafe_url_reason(url) if url else None
    image = IndexedImage(
        key=key,
        channel_id=cid,
        url=url,
        path=index_path.parent / url.replace("\\", "/") if url and problem is None else None,
        size_yx=_size_yx(values),
        pixel_size_um=_resolution_um(
            values.get("ImageResolutionX"), units.get("ImageResolutionX", "")
        ),
        problem=problem,
    )
    return image, values


def _parse_xml(data: bytes, source: Path) -> ET.Element:
    """Parse XML bytes (a UTF-8 BOM is allowed); malformed XML raises PlateFormatError."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        line, col = exc.position
        raise PlateFormatError(
            f"{source}: malformed XML at line {line}, column {col}: {exc}"
        ) from None


def _strip_namespaces(root: ET.Element) -> None:
    for el in root.iter():
        tag = el.tag
        if isinstance(tag, str) and tag.startswith("{"):
            el.tag = tag.split("}", 1)[1]


def _text(parent: ET.Element | None, tag: str) -> str:
    if parent is None:
        return ""
    el = parent.find(tag)
    return (el.text or "").strip() if el is not None else ""


def _int(text: str | None, what: str, index_path: Path, ident: str) -> int:
    return required_int(text, f"{index_path}: Image {ident}", what)


def _timepoint_base(root: ET.Element, format_version: str) -> int:
    """The version's first TimepointID, lowered when the index itself counts from less."""
    base = TIMEPOINT_BASE.get(format_version, 0)
    if base == 0:
        return 0
    seen = [
        _int_or((el.text or "").strip(), base) for el in root.iterfind("Images/Image/TimepointID")
    ]
    return min([base, *seen])


def _timepoint(text: str | None, base: int, index_path: Path, ident: str) -> int:
    """0-based timepoint from a TimepointID counted from ``base``."""
    return _int(text or str(base), "TimepointID", index_path, ident) - base


def _float_or_none(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _int_or(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def _size_yx(values: dict[str, str]) -> tuple[int, int] | None:
    try:
        return int(values["ImageSizeY"]), int(values["ImageSizeX"])
    except (KeyError, ValueError):
        return None


def _resolution_um(text: str | None, unit: str) -> float | None:
    """ImageResolutionX in µm: metres by default (Harmony writes ``Unit="m"``)."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    u = unit.strip().lower()
    if u in {"um", "µm", "μm", "micron", "microns"} or (u == "" and value > 1e-3):
        um = value  # µm, or no unit and clearly not metres
    elif u == "nm":
        um = value * 1e-3
    else:
        um = value * 1e6
    return float(f"{um:.12g}")  # 2e-07 m -> 0.2 µm, not 0.19999999999999998


def _channel_maps(root: ET.Element) -> dict[int, dict[str, str]]:
    """Channel id → description merged over every ``Maps/Map/Entry[@ChannelID]``."""
    out: dict[int, dict[str, str]] = {}
    for entry in root.iterfind("Maps/Map/Entry"):
        raw = entry.get("ChannelID")
        if raw is None:
            continue
        try:
            cid = int(raw)
        except ValueError:
            continue
        info = out.setdefault(cid, {})
        for child in entry:
            if len(child) == 0 and child.text and child.text.strip():
                info.setdefault(child.tag, child.text.strip())
                if child.get("Unit") is not None:
                    info.setdefault(f"{child.tag}@Unit", child.get("Unit", ""))
    return out


def _declared_wells(root: ET.Element) -> set[str]:
    wells: set[str] = set()
    for w in root.iterfind("Plates/Plate/Well"):
        ident = w.get("id", "")
        if len(ident) == 4 and ident.isdigit():
            wells.add(f"r{ident[:2]}c{ident[2:]}")
    for w in root.iterfind("Wells/Well"):
        r, c = _int_or(_text(w, "Row"), 0), _int_or(_text(w, "Col"), 0)
        if r > 0 and c > 0:
            wells.add(FieldKey(r, c, 1).well)
    return wells


def infer_geometry(max_row: int, max_col: int) -> tuple[int, int]:
    """Smallest standard plate (6 … 1536 wells) holding every well seen.

    For an index or manifest that does not record the plate's rows and columns.

    Parameters
    ----------
    max_row, max_col : int
        Largest 1-based row and column of any well seen (row 2 is plate row B).

    Returns
    -------
    tuple of int
        ``(rows, columns)`` of the first standard format that holds both: 2 × 3 (6 wells),
        3 × 4, 4 × 6, 6 × 8, 8 × 12 (96), 16 × 24 (384) or 32 × 48 (1536); ``(max_row,
        max_col)`` when none does.

    Examples
    --------
    >>> infer_geometry(5, 10)
    (8, 12)
    >>> infer_geometry(9, 1)
    (16, 24)
    """
    for rows, cols in ((2, 3), (3, 4), (4, 6), (6, 8), (8, 12), (16, 24), (32, 48)):
        if max_row <= rows and max_col <= cols:
            return rows, cols
    return max_row, max_col
