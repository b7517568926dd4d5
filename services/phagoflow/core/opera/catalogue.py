"""Typed plate catalogue shared by every Opera reader and writer.

A *catalogue* describes one plate export without loading pixels: geometry, channels with their
Rosella roles, and one :class:`FieldRecord` per acquired field (all channels of one
row/col/field/plane/timepoint). Readers build it; :func:`phagoflow.core.opera.load_field` turns a
record into a ``(2, H, W)`` float32 array ordered ``[DsRed, pHluorin]``.

Errors follow a two-tier policy (as tifffile does): broken structure raises
:class:`PlateFormatError` (a ``ValueError``) naming the file; a bad *field* (missing file, path
traversal, wrong shape, truncated TIFF) does not stop the plate — it is recorded as a
:class:`FieldProblem` and the good fields are still processed.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from phagoflow.core.wells import well_name

__all__ = [
    "ROLE_ORDER",
    "Channel",
    "ChannelRole",
    "FieldKey",
    "FieldProblem",
    "FieldReadError",
    "FieldRecord",
    "ImageSource",
    "IndexedImage",
    "PlateCatalogue",
    "PlateFormatError",
    "PlateIndex",
    "required_int",
]


class PlateFormatError(ValueError):
    """A plate export is structurally broken (missing index, malformed XML, unknown channels).

    The message always names the offending file.
    """


def required_int(text: str | None, where: str, what: str) -> int:
    """``text`` as an int (surrounding blanks ignored), else :class:`PlateFormatError`.

    The message reads ``"{where} has no integer {what} (got {text!r})"``: ``where`` names the
    index file and the image entry.
    """
    try:
        return int(str(text).strip())
    except ValueError:
        raise PlateFormatError(f"{where} has no integer {what} (got {text!r})") from None


class FieldReadError(PlateFormatError):
    """One field cannot be read (missing/truncated TIFF, shape or dtype mismatch, unsafe URL)."""


class ChannelRole(StrEnum):
    """Channel roles: the two Rosella biosensor channels, and an optional nuclear stain."""

    DSRED = "dsred"  #: pH-stable red fluorescent protein; bright in phagophores and autolysosomes
    PHLUORIN = "phluorin"  #: pH-sensitive GFP; quenched in acidic autolysosomes
    NUCLEI = "nuclei"  #: optional nuclear stain (Hoechst, DAPI, DRAQ5) for per-cell readouts


#: Channel order of every loaded field array: index 0 is DsRed, index 1 is pHluorin.
ROLE_ORDER: tuple[ChannelRole, ChannelRole] = (ChannelRole.DSRED, ChannelRole.PHLUORIN)


@dataclass(frozen=True)
class Channel:
    """One acquisition channel of the plate.

    Attributes
    ----------
    channel_id : int
        Vendor channel id (1-based ChannelID in Harmony, ExposureNo in .flex).
    name : str
        Vendor channel name, e.g. ``"DsRed"`` or ``"Alexa 488"``.
    role : ChannelRole or None
        The channel's role (the first of ``roles``); ``None`` when it has none.
    roles : tuple of ChannelRole
        Every role the channel plays: one, none, or both when one channel stands in for both
        (an override for a single-channel plate). Defaults to ``(role,)``.
    excitation_nm, emission_nm : float or None
        Main excitation and emission wavelengths (nm) from the index, when it gives them.
    role_source : str
        Why the channel has its roles: ``"override"``, ``"wavelengths 561/599 nm"``,
        ``"name"``, or why it has none.
    """

    channel_id: int
    name: str
    role: ChannelRole | None
    roles: tuple[ChannelRole, ...] = ()
    excitation_nm: float | None = None
    emission_nm: float | None = None
    role_source: str = ""

    def __post_init__(self) -> None:
        if not self.roles and self.role is not None:
            object.__setattr__(self, "roles", (self.role,))

    @property
    def role_label(self) -> str | None:
        """Roles as text for tables and JSON: ``"dsred"``, ``"dsred+phluorin"`` or ``None``."""
        return "+".join(r.value for r in self.roles) or None

    def as_record(self) -> dict[str, object]:
        """JSON-ready description (``info`` output, ``run.json`` provenance)."""
        return {
            "id": self.channel_id,
            "name": self.name,
            "role": self.role_label,
            "role_source": self.role_source,
            "excitation_nm": self.excitation_nm,
            "emission_nm": self.emission_nm,
        }


@dataclass(frozen=True, order=True)
class FieldKey:
    """Identity of one field (all channels): 1-based row/col/field/plane, 0-based timepoint."""

    row: int
    col: int
    field: int
    plane: int = 1
    timepoint: int = 0

    @property
    def well(self) -> str:
        """Well name ``rRRcCC`` (e.g. ``r02c05``)."""
        return f"r{self.row:02d}c{self.col:02d}"

    @property
    def name(self) -> str:
        """File stem ``rRRcCCfFFpPP`` (``-tTT`` appended for timepoints > 0)."""
        stem = f"{self.well}f{self.field:02d}p{self.plane:02d}"
        return stem if self.timepoint == 0 else f"{stem}-t{self.timepoint:02d}"

    @property
    def label(self) -> str:
        """The field as shown to a person: ``"B05 field 1"`` (A01 well name,
        :func:`phagoflow.core.wells.well_name`), with ``plane P`` when not the first plane and
        ``timepoint T`` (0-based) when not the first timepoint."""
        extra = f" plane {self.plane}" if self.plane != 1 else ""
        extra += f" timepoint {self.timepoint}" if self.timepoint else ""
        return f"{well_name(self.row, self.col)} field {self.field}{extra}"

    @classmethod
    def parse(cls, name: str) -> FieldKey:
        """Inverse of :attr:`name`; raises ``ValueError`` on anything else."""
        m = _KEY_RE.fullmatch(name)
        if m is None:
            raise ValueError(f"not a field name of the form rRRcCCfFFpPP[-tTT]: {name!r}")
        return cls(*(int(g) if g is not None else 0 for g in m.groups()))


_KEY_RE = re.compile(r"r(\d{2,})c(\d{2,})f(\d{2,})p(\d{2,})(?:-t(\d{2,}))?")


@dataclass(frozen=True)
class ImageSource:
    """Where the pixels of one channel of one field live.

    Attributes
    ----------
    path : Path
        Absolute path of the TIFF (Harmony) or ``.flex`` file, already checked to lie inside the
        export folder.
    page : int
        Page (IFD) index inside a multi-page file; 0 for single-plane Harmony TIFFs.
    factor : float
        Multiply raw pixel values by this (``.flex`` ``Arrays/Array@Factor``); 1.0 for Harmony.
    size_yx : tuple of int
        Expected ``(ImageSizeY, ImageSizeX)`` in pixels, from the metadata.
    """

    path: Path
    page: int = 0
    factor: float = 1.0
    size_yx: tuple[int, int] | None = None


@dataclass(frozen=True)
class FieldRecord:
    """All channels of one field, by role (DsRed and pHluorin always; nuclei when present)."""

    key: FieldKey
    sources: dict[ChannelRole, ImageSource]


@dataclass(frozen=True)
class FieldProblem:
    """A field (or image) that cannot be processed, and why. ``key`` is ``None`` when unknown."""

    key: FieldKey | None
    path: str
    reason: str


@dataclass(frozen=True)
class PlateCatalogue:
    """Everything known about one plate export, without pixels.

    Attributes
    ----------
    plate_id : str
        Plate barcode / PlateID.
    measurement_id : str
        MeasurementID (Harmony) or a stable substitute.
    export_format : str
        ``"harmony"`` or ``"flex"``; ``format_version`` carries e.g. ``"HarmonyV5"``.
    root : Path
        Folder holding the index (Harmony) or the ``.flex`` files.
    index_path : Path
        The index file (Harmony) or the first ``.flex`` file.
    index_sha256 : str
        Checksum of the index (Harmony) or of all ``.flex`` XML blocks, for provenance.
    plate_rows, plate_columns : int
        Plate geometry (8 × 12 for a 96-well plate).
    channels : tuple of Channel
        Every channel, with its role.
    pixel_size_um : float
        Pixel size in µm (ImageResolutionX × 1e6).
    size_yx : tuple of int
        Field size ``(H, W)`` in pixels.
    fields : tuple of FieldRecord
        Acquired fields with a usable source for both roles, sorted by key.
    problems : tuple of FieldProblem
        Images found unusable while parsing (missing file, unsafe URL, ...).
    expected_images : int
        wells × fields × planes × channels × timepoints as declared by the index.
    declared_images : int
        Number of Image entries in the index (acquired or not).
    wells : tuple of str
        Wells with at least one acquired image (``rRRcCC``).
    role_error : str or None
        Why the channel roles could not be assigned (only with ``strict_roles=False``; the
        catalogue then has no fields).
    """

    plate_id: str
    measurement_id: str
    export_format: str
    format_version: str
    root: Path
    index_path: Path
    index_sha256: str
    plate_rows: int
    plate_columns: int
    channels: tuple[Channel, ...]
    pixel_size_um: float
    size_yx: tuple[int, int]
    fields: tuple[FieldRecord, ...]
    problems: tuple[FieldProblem, ...] = ()
    expected_images: int = 0
    declared_images: int = 0
    wells: tuple[str, ...] = ()
    role_error: str | None = None

    @property
    def nuclear_channel(self) -> Channel | None:
        """The channel with the :attr:`ChannelRole.NUCLEI` role, if the plate has one."""
        return next((c for c in self.channels if ChannelRole.NUCLEI in c.roles), None)

    def get_field(self, key: FieldKey) -> FieldRecord:
        """The record for ``key``; ``KeyError`` if the plate has no such field."""
        i = bisect.bisect_left(self.fields, key, key=lambda rec: rec.key)  # fields are sorted
        if i < len(self.fields) and self.fields[i].key == key:
            return self.fields[i]
        for rec in self.fields:  # not sorted after all (hand-built catalogue)
            if rec.key == key:
                return rec
        raise KeyError(f"plate {self.plate_id} has no field {key.name}")


@dataclass(frozen=True)
class IndexedImage:
    """One image (one channel of one field) as the index declares it, before roles are known.

    Attributes
    ----------
    key : FieldKey
        Field the image belongs to.
    channel_id : int
        Vendor channel id (ChannelID / ExposureNo).
    url : str
        The index's reference to the pixels (Harmony URL, ``.flex`` file name); ``""`` when
        the image was not acquired.
    path : Path or None
        Resolved file, or ``None`` when not acquired or unsafe (see ``problem``).
    page : int
        Page (IFD) inside ``path``.
    factor : float
        Multiply raw values by this (``.flex`` ``Array@Factor``).
    size_yx : tuple of int or None
        ``(ImageSizeY, ImageSizeX)`` in pixels, when the index gives them.
    pixel_size_um : float or None
        ImageResolutionX in µm, when the index gives it.
    problem : str or None
        Why the image cannot be read (e.g. an absolute or ``..`` URL), else ``None``.
    """

    key: FieldKey
    channel_id: int
    url: str
    path: Path | None
    page: int = 0
    factor: float = 1.0
    size_yx: tuple[int, int] | None = None
    pixel_size_um: float | None = None
    problem: str | None = None


@dataclass(frozen=True)
class PlateIndex:
    """A parsed plate index, before channel roles are assigned (input of catalogue assembly).

    Attributes
    ----------
    export_format, format_version, plate_id, measurement_id, root, index_path, index_sha256,
    plate_rows, plate_columns
        As in :class:`PlateCatalogue`.
    channel_names : dict of int to str
        Channel id → vendor name (from the Images, or the Maps for Harmony ≥ 6).
    images : tuple of IndexedImage
        Every image entry the index declares, acquired or not.
    metadata_files : tuple of Path
        Index file(s) the catalogue was parsed from (for provenance and quiet-period checks).
    declared_wells : tuple of str
        Wells the plate description lists (``rRRcCC``), possibly more than have images.
    problems : tuple of FieldProblem
        Files found unusable while parsing (e.g. a ``.flex`` file without readable XML).
    channel_wavelengths : dict of int to (float or None, float or None)
        Channel id → (main excitation, main emission) in nm, where the index gives them.
    """

    export_format: str
    format_version: str
    plate_id: str
    measurement_id: str
    root: Path
    index_path: Path
    index_sha256: str
    plate_rows: int
    plate_columns: int
    channel_names: dict[int, str]
    images: tuple[IndexedImage, ...]
    metadata_files: tuple[Path, ...] = ()
    declared_wells: tuple[str, ...] = ()
    problems: tuple[FieldProblem, ...] = ()
    channel_wavelengths: dict[int, tuple[float | None, float | None]] = field(default_factory=dict)
