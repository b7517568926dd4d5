"""Opera plate exports: readers and writers for Harmony V4–V7 and Opera QEHS ``.flex``.

Reading is two steps: :func:`read_plate` parses the index once into a
:class:`~phagoflow.core.opera.catalogue.PlateCatalogue` (no pixels), then :func:`load_field`
returns one field as a float32 ``(2, H, W)`` array ordered ``[DsRed, pHluorin]``.
:func:`check_complete` tells whether an export is finished; :func:`open_writer` writes
synthetic exports in every supported format.

Formats are tried in the order of :data:`READERS` (``is_<format>`` predicate, then parser), as
tifffile does for its series kinds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import tifffile

from .catalogue import (
    ROLE_ORDER,
    Channel,
    ChannelRole,
    FieldKey,
    FieldProblem,
    FieldReadError,
    FieldRecord,
    ImageSource,
    IndexedImage,
    PlateCatalogue,
    PlateFormatError,
    PlateIndex,
)
from .completeness import CompletenessReport, check_complete, expected_image_count
from .flex import is_flex, parse_flex
from .harmony import escaping_link_reason, is_harmony, parse_harmony_index
from .roles import RoleOverrides, assign_roles, infer_role, parse_channel_roles
from .writers import EXPORT_FORMATS, ExportWriter, FlexWriter, HarmonyWriter, open_writer

__all__ = [
    "EXPORT_FORMATS",
    "READERS",
    "ROLE_ORDER",
    "Channel",
    "ChannelRole",
    "CompletenessReport",
    "ExportWriter",
    "FieldKey",
    "FieldProblem",
    "FieldReadError",
    "FieldRecord",
    "FlexWriter",
    "HarmonyWriter",
    "ImageSource",
    "IndexedImage",
    "PlateCatalogue",
    "PlateFormatError",
    "PlateIndex",
    "RoleOverrides",
    "build_catalogue",
    "check_complete",
    "expected_image_count",
    "infer_role",
    "load_field",
    "load_nuclei",
    "open_writer",
    "parse_channel_roles",
    "parse_index",
    "read_plate",
]

#: Ordered reader registry: (format, is_<format> predicate, parser). First match wins.
READERS: Final[tuple[tuple[str, Callable[[Path], bool], Callable[[Path], PlateIndex]], ...]] = (
    ("harmony", is_harmony, parse_harmony_index),
    ("flex", is_flex, parse_flex),
)

_TIFF_ERRORS: Final = (OSError, ValueError, IndexError, KeyError, EOFError, MemoryError)


def parse_index(path: str | Path) -> PlateIndex:
    """Parse the index of the export at ``path`` (no roles, no pixels).

    ``path`` may be the index file, the folder holding it, its parent (a measurement folder
    with ``Images/``), a ``.flex`` file or a folder of ``.flex`` files.

    Raises
    ------
    PlateFormatError
        Nothing readable at ``path`` (``"no Index.idx.xml / Index.xml / .flex found in ..."``),
        or the index is broken; the message names the file.
    """
    p = Path(path)
    for _name, detect, parse in READERS:
        if detect(p):
            return parse(p)
    where = p if p.exists() else f"{p} (no such file or directory)"
    raise PlateFormatError(f"no Index.idx.xml / Index.xml / .flex found in {where}")


def read_plate(
    path: str | Path,
    *,
    channel_roles: RoleOverrides | None = None,
    strict_roles: bool = True,
) -> PlateCatalogue:
    """Catalogue of one plate export (Harmony V4–V7 or ``.flex``), without reading pixels.

    Parameters
    ----------
    path : str or Path
        Index file, its folder, the measurement folder above ``Images/``, a ``.flex`` file or a
        folder of ``.flex`` files.
    channel_roles : mapping, optional
        Override of the inferred roles: channel name (case-insensitive) or channel id →
        ``"dsred"``, ``"phluorin"``, ``"both"`` (one channel for both) or ``"none"``; see
        :mod:`phagoflow.core.opera.roles` for the rules (wavelengths, then names).
    strict_roles : bool, default True
        Raise when the roles cannot be assigned. ``False`` (``phagoflow info``) returns the
        catalogue anyway, with no fields and the reason in ``role_error``.

    Returns
    -------
    PlateCatalogue
        Fields with a readable source for both roles, sorted by key; unusable images (missing
        file, unsafe URL, symbolic link leaving the export, half-acquired field) in
        ``problems``.

    Raises
    ------
    PlateFormatError
        Missing index, malformed XML, channels that cannot be given the two roles (the message
        lists them and explains ``channel_roles``), no pixel size. Names the file.
    """
    return build_catalogue(
        parse_index(path), channel_roles=channel_roles, strict_roles=strict_roles
    )


def build_catalogue(
    index: PlateIndex,
    *,
    channel_roles: RoleOverrides | None = None,
    strict_roles: bool = True,
) -> PlateCatalogue:
    """Assign roles and group the images of a parsed index into fields (see :func:`read_plate`)."""
    role_error: str | None = None
    try:
        channels = assign_roles(
            index.channel_names,
            index.index_path,
            channel_roles=channel_roles,
            wavelengths=index.channel_wavelengths,
        )
    except PlateFormatError as exc:
        if strict_roles:
            raise
        role_error = str(exc)
        waves = index.channel_wavelengths
        channels = tuple(
            Channel(cid, name, None, (), *waves.get(cid, (None, None)), "roles not assigned")
            for cid, name in sorted(index.channel_names.items())
        )
    found = _collect_sources(index, {c.channel_id: c.roles for c in channels})
    size_yx, pixel_size_um = _plate_geometry(found.role_images, index, channels)
    fields = _complete_fields(found.sources, found.problems)
    return PlateCatalogue(
        plate_id=index.plate_id,
        measurement_id=index.measurement_id,
        export_format=index.export_format,
        format_version=index.format_version,
        root=index.root,
        index_path=index.index_path,
        index_sha256=index.index_sha256,
        plate_rows=index.plate_rows,
        plate_columns=index.plate_columns,
        channels=channels,
        pixel_size_um=pixel_size_um,
        size_yx=size_yx,
        fields=tuple(fields),
        problems=tuple(found.problems),
        expected_images=expected_image_count(index),
        declared_images=len(index.images),
        wells=tuple(sorted(found.acquired_wells)),
        role_error=role_error,
    )


def load_field(
    catalogue: PlateCatalogue, key_or_record: FieldKey | FieldRecord
) -> npt.NDArray[np.float32]:
    """Pixels of one field.

    Parameters
    ----------
    catalogue : PlateCatalogue
        From :func:`read_plate`.
    key_or_record : FieldKey or FieldRecord
        The field.

    Returns
    -------
    (2, H, W) ndarray of float32
        Channels ordered ``[DsRed, pHluorin]`` (``ROLE_ORDER``), raw counts × ``.flex`` Factor.

    Raises
    ------
    FieldReadError
        Missing file, truncated or unreadable TIFF, page shape disagreeing with
        ImageSizeY × ImageSizeX, or a dtype other than uint16. The message names the file.
    KeyError
        The plate has no such field (and no problem recorded for it).
    """
    record = _record(catalogue, key_or_record)
    h, w = catalogue.size_yx
    out = np.empty((2, h, w), dtype=np.float32)
    by_path: dict[Path, list[tuple[int, ImageSource]]] = {}
    for i, role in enumerate(ROLE_ORDER):
        src = record.sources.get(role)
        if src is None:
            raise FieldReadError(f"{catalogue.index_path}: {record.key.name} has no {role} image")
        by_path.setdefault(src.path, []).append((i, src))
    for path, items in by_path.items():
        _read_pages(path, items, out, catalogue.size_yx)
    return out


def load_nuclei(
    catalogue: PlateCatalogue, key_or_record: FieldKey | FieldRecord
) -> npt.NDArray[np.float32] | None:
    """The nuclear-stain plane of one field, or ``None`` when the plate or field has none.

    Returns
    -------
    (H, W) ndarray of float32 or None
        Raw counts × ``.flex`` Factor of the :attr:`ChannelRole.NUCLEI` channel.

    Raises
    ------
    FieldReadError
        As :func:`load_field`, for the nuclear plane's file.
    """
    record = _record(catalogue, key_or_record)
    src = record.sources.get(ChannelRole.NUCLEI)
    if src is None:
        return None
    out = np.empty((1, *catalogue.size_yx), dtype=np.float32)
    _read_pages(src.path, [(0, src)], out, catalogue.size_yx)
    plane: npt.NDArray[np.float32] = out[0]
    return plane


# -- private helpers -----------------------------------------------------------------------
class _DirListing:
    """``os.scandir`` once per folder, so existence and symlink checks cost no stat per image."""

    def __init__(self) -> None:
        self._names: dict[Path, tuple[frozenset[str], frozenset[str]]] = {}

    def _folder(self, folder: Path) -> tuple[frozenset[str], frozenset[str]]:
        entry = self._names.get(folder)
        if entry is None:
            try:
                with os.scandir(folder) as it:
                    items = [(e.name, e.is_symlink()) for e in it]
            except OSError:
                items = []
            entry = (
                frozenset(name for name, _ in items),
                frozenset(name for name, link in items if link),
            )
            self._names[folder] = entry
        return entry

    def exists(self, path: Path) -> bool:
        return path.name in self._folder(path.parent)[0]

    def is_link(self, path: Path) -> bool:
        return path.name in self._folder(path.parent)[1]


@dataclass
class _Sources:
    """Images of a parsed index sorted into fields by role (see :func:`_collect_sources`)."""

    sources: dict[FieldKey, dict[ChannelRole, ImageSource]] = dc_field(default_factory=dict)
    role_images: list[IndexedImage] = dc_field(default_factory=list)
    problems: list[FieldProblem] = dc_field(default_factory=list)
    acquired_wells: set[str] = dc_field(default_factory=set)


def _collect_sources(index: PlateIndex, roles_of: dict[int, tuple[ChannelRole, ...]]) -> _Sources:
    """Where each role of each field lives; unusable images become problems."""
    listing = _DirListing()
    out = _Sources(problems=list(index.problems))
    for im in index.images:
        if not im.url:
            continue  # not acquired: not a problem
        out.acquired_wells.add(im.key.well)
        roles = roles_of.get(im.channel_id, ())
        if not roles:
            continue  # a channel the Rosella analysis does not use
        problem = _image_problem(im, index.root, listing)
        if problem is not None:
            out.problems.append(problem)
            continue
        by_role = out.sources.setdefault(im.key, {})
        twice = [r for r in roles if r in by_role]
        if twice:
            reason = f"second {twice[0].value} image for {im.key.name}"
            out.problems.append(FieldProblem(im.key, str(im.path), reason))
            continue
        out.role_images.append(im)
        assert im.path is not None  # checked by _image_problem
        for role in roles:
            by_role[role] = ImageSource(im.path, im.page, im.factor, im.size_yx)
    return out


def _image_problem(im: IndexedImage, root: Path, listing: _DirListing) -> FieldProblem | None:
    if im.problem is not None or im.path is None:
        return FieldProblem(im.key, im.url, im.problem or "unusable URL")
    if not listing.exists(im.path):
        return FieldProblem(im.key, str(im.path), f"file not found: {im.path}")
    if listing.is_link(im.path) or im.path.parent != root:
        link = escaping_link_reason(im.path, root)
        if link is not None:
            return FieldProblem(im.key, str(im.path), link)
    return None


def _complete_fields(
    sources: dict[FieldKey, dict[ChannelRole, ImageSource]], problems: list[FieldProblem]
) -> list[FieldRecord]:
    """Fields with both roles; a half-acquired field is added to ``problems``."""
    bad_keys = {p.key for p in problems if p.key is not None}
    fields: list[FieldRecord] = []
    for key in sorted(sources):
        by_role = sources[key]
        missing = [r for r in ROLE_ORDER if r not in by_role]
        if missing:
            if key not in bad_keys:
                some = next(iter(by_role.values()))
                reason = f"{key.name} has no {missing[0].value} image"
                problems.append(FieldProblem(key, str(some.path), reason))
            continue
        fields.append(FieldRecord(key, dict(by_role)))
    return fields


def _plate_geometry(
    role_images: list[IndexedImage], index: PlateIndex, channels: tuple[Channel, ...]
) -> tuple[tuple[int, int], float]:
    """Field size (px) and pixel size (µm): from the usable images, else as the index declares
    them for the role channels (an index-only copy), else for any channel; NaN if none."""
    size_yx = _plate_size(role_images, index)
    pixel_size_um = next((im.pixel_size_um for im in role_images if im.pixel_size_um), None)
    if role_images:
        if pixel_size_um is None:
            raise PlateFormatError(f"{index.index_path}: no ImageResolutionX (pixel size) found")
        return size_yx, float(pixel_size_um)
    role_ids = {c.channel_id for c in channels if c.roles}
    declared = [im for im in index.images if im.channel_id in role_ids] or list(index.images)
    size = next((im.size_yx for im in declared if im.size_yx is not None), (0, 0))
    pixel = next((im.pixel_size_um for im in declared if im.pixel_size_um), float("nan"))
    return size, float(pixel)


def _plate_size(images: list[IndexedImage], index: PlateIndex) -> tuple[int, int]:
    for im in images:
        if im.size_yx is not None:
            return im.size_yx
    for im in images:  # no declared size: take it from the first readable page
        if im.path is None:
            continue
        try:
            with tifffile.TiffFile(im.path) as tf:
                shape = tf.pages[im.page].shape
            return int(shape[-2]), int(shape[-1])
        except _TIFF_ERRORS:
            continue
    if images:
        raise PlateFormatError(f"{index.index_path}: no ImageSizeX/Y and no readable image")
    return (0, 0)


def _record(catalogue: PlateCatalogue, key_or_record: FieldKey | FieldRecord) -> FieldRecord:
    if isinstance(key_or_record, FieldRecord):
        return key_or_record
    try:
        return catalogue.get_field(key_or_record)
    except KeyError:
        for problem in catalogue.problems:
            if problem.key == key_or_record:
                raise FieldReadError(f"{problem.path}: {problem.reason}") from None
        raise


def _read_pages(
    path: Path,
    items: list[tuple[int, ImageSource]],
    out: npt.NDArray[np.float32],
    plate_size: tuple[int, int],
) -> None:
    """Read pages of one file into ``out[i]`` (validating shape and dtype first)."""
    try:
        with tifffile.TiffFile(path) as tf:
            pages = tf.pages
            for i, src in items:
                if src.page >= len(pages):
                    raise FieldReadError(
                        f"{path}: page {src.page} requested but the file has {len(pages)} pages"
                    )
                page = pages[src.page]
                expected = src.size_yx or plate_size
                shape = tuple(int(s) for s in page.shape)
                if shape != expected:
                    raise FieldReadError(
                        f"{path}: page {src.page} is {shape} pixels but the index says "
                        f"ImageSizeY x ImageSizeX = {expected}"
                    )
                if expected != plate_size:
                    raise FieldReadError(
                        f"{path}: image size {expected} differs from the plate's {plate_size}"
                    )
                if page.dtype != np.uint16:
                    raise FieldReadError(
                        f"{path}: page {src.page} is {page.dtype} with shape {shape}, "
                        "expected uint16"
                    )
                out[i] = page.asarray()
                if src.factor != 1.0:
                    out[i] *= np.float32(src.factor)
    except FieldReadError:
        raise
    except FileNotFoundError:
        raise FieldReadError(f"{path}: file not found") from None
    except _TIFF_ERRORS as exc:
        raise FieldReadError(f"{path}: cannot read the TIFF ({exc})") from exc
