"""Is a plate export finished? No vendor "measurement finished" marker exists, so:

a plate is complete when the index parses, the Image count equals
wells × fields × planes × channels × timepoints, every non-empty URL names a file inside the
export that is a whole TIFF — a valid header, every page the index refers to, and every strip or
tile of those pages within the file (:func:`tiff_problem`; compressed TIFFs as Harmony writes
them are judged by their own structure, never by an uncompressed size) — and no file (index or
image) changed within a quiet period.
"""

from __future__ import annotations

import functools
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import tifffile

from .catalogue import PlateFormatError, PlateIndex
from .harmony import escaping_link_reason

__all__ = ["CompletenessReport", "check_complete", "expected_image_count", "tiff_problem"]

_MAX_EXAMPLES: Final[int] = 3


@dataclass(frozen=True)
class CompletenessReport:
    """Outcome of :func:`check_complete`.

    Attributes
    ----------
    complete : bool
        True when every rule holds.
    reasons : list of str
        Why not (empty when complete); each names files or counts.
    expected_images : int
        wells × fields × planes × channels × timepoints declared by the index.
    declared_images : int
        Image entries in the index (acquired or not).
    found_images : int
        Acquired images whose file exists and is a whole TIFF (:func:`tiff_problem`).
    acquired_images : int
        Image entries with a non-empty URL.
    newest_mtime : float or None
        Newest modification time (POSIX seconds) of the index and image files.
    index_path : Path or None
        The index (first ``.flex`` file) when one was found.
    """

    complete: bool
    reasons: list[str] = field(default_factory=list)
    expected_images: int = 0
    declared_images: int = 0
    found_images: int = 0
    acquired_images: int = 0
    newest_mtime: float | None = None
    index_path: Path | None = None


def expected_image_count(index: PlateIndex) -> int:
    """wells × fields × planes × channels × timepoints, from the distinct values declared."""
    if not index.images:
        return 0
    axes: list[set[int | str]] = [set(), set(), set(), set(), set()]
    for im in index.images:
        k = im.key
        values: tuple[int | str, ...] = (k.well, k.field, k.plane, im.channel_id, k.timepoint)
        for axis, value in zip(axes, values, strict=True):
            axis.add(value)
    n = 1
    for axis in axes:
        n *= len(axis)
    return n


def check_complete(
    path: str | Path, *, quiet_seconds: float = 60.0, now: float | None = None
) -> CompletenessReport:
    """Check whether the export at ``path`` is complete (see the module docstring).

    Parameters
    ----------
    path : str or Path
        What :func:`phagoflow.core.opera.read_plate` accepts.
    quiet_seconds : float, default 60.0
        Seconds without any change (mtime of index and images) required.
    now : float, optional
        Current POSIX time; ``time.time()`` by default (pass it in tests).

    Returns
    -------
    CompletenessReport
        Never raises for a broken or missing export: the reason is in ``reasons``.
    """
    if quiet_seconds < 0:
        raise ValueError(f"quiet_seconds must be >= 0, got {quiet_seconds}")
    from . import parse_index  # the reader registry lives in the package

    t_now = time.time() if now is None else float(now)
    try:
        index = parse_index(path)
    except PlateFormatError as exc:
        return CompletenessReport(complete=False, reasons=[str(exc)])

    reasons: list[str] = [p.reason for p in index.problems]
    reasons += _count_reasons(index)
    files = _image_files(index)
    reasons += files.reasons
    mtimes = files.mtimes
    for meta in index.metadata_files:
        try:
            mtimes.append((os.stat(meta).st_mtime, meta))
        except OSError:
            reasons.append(f"{meta}: cannot stat the index")
    newest = max(mtimes, default=None, key=lambda item: item[0])
    if newest is not None and t_now - newest[0] < quiet_seconds:
        age = max(t_now - newest[0], 0.0)
        reasons.append(
            f"{newest[1].name} changed {age:.1f} s ago, within the quiet period of "
            f"{quiet_seconds:g} s"
        )
    return CompletenessReport(
        complete=not reasons,
        reasons=reasons,
        expected_images=expected_image_count(index),
        declared_images=len(index.images),
        found_images=files.found,
        acquired_images=files.acquired,
        newest_mtime=newest[0] if newest is not None else None,
        index_path=index.index_path,
    )


def _count_reasons(index: PlateIndex) -> list[str]:
    expected = expected_image_count(index)
    declared = len(index.images)
    if declared == 0:
        return [f"{index.index_path}: the index lists no images"]
    if declared != expected:
        return [
            f"{index.index_path}: {declared} Image entries but wells x fields x planes x "
            f"channels x timepoints = {expected}"
        ]
    return []


@dataclass
class _FileCheck:
    reasons: list[str] = field(default_factory=list)
    mtimes: list[tuple[float, Path]] = field(default_factory=list)
    found: int = 0
    acquired: int = 0


def _image_files(index: PlateIndex) -> _FileCheck:
    """Check every acquired image's file: inside the export, present, a whole TIFF."""
    out = _FileCheck()
    pages_needed: dict[Path, int] = {}  # a .flex file holds many pages, a Harmony TIFF one
    images_in: dict[Path, int] = {}
    unsafe: list[str] = []
    for im in index.images:
        if not im.url:
            continue
        out.acquired += 1
        if im.problem is not None or im.path is None:
            unsafe.append(im.problem or im.url)
            continue
        pages_needed[im.path] = max(pages_needed.get(im.path, 0), im.page + 1)
        images_in[im.path] = images_in.get(im.path, 0) + 1
    missing: list[str] = []
    broken: list[str] = []
    for file, pages in pages_needed.items():
        try:
            st = os.lstat(file)
            if stat.S_ISLNK(st.st_mode) or file.parent != index.root:
                link = escaping_link_reason(file, index.root)
                if link is not None:
                    unsafe.append(link)
                    continue
                st = os.stat(file)
        except OSError:
            missing.append(file.name)
            continue
        out.mtimes.append((st.st_mtime, file))
        problem = _tiff_problem_cached(str(file), st.st_size, st.st_mtime_ns, pages)
        if problem is not None:
            broken.append(f"{file.name} ({problem})")
        else:
            out.found += images_in[file]
    for head, items in (
        ("image URL(s) not followed", unsafe),
        ("image file(s) missing", missing),
        ("image file(s) incomplete", broken),
    ):
        if items:
            out.reasons.append(_summary(f"{len(items)} {head}", items))
    return out


def tiff_problem(path: str | Path, pages: int = 1) -> str | None:
    """Why the TIFF at ``path`` is not whole, or ``None`` when it is.

    Reads the header and the IFDs only (no pixels): the file must parse as a TIFF, hold at least
    ``pages`` pages, and every strip or tile of those pages must have a byte count and end
    within the file. Works the same for uncompressed and compressed (LZW, Deflate, ZSTD,
    PackBits) TIFFs, and for multi-page ``.flex`` files.

    Parameters
    ----------
    path : str or Path
        The TIFF or ``.flex`` file.
    pages : int, default 1
        Pages (IFDs) the index refers to: page indices ``0 … pages - 1`` are checked.

    Returns
    -------
    str or None
        E.g. ``"page 0 data ends at byte 20614, the file has 10307"``, or ``None``.
    """
    try:
        size = os.path.getsize(path)
        with tifffile.TiffFile(path) as tf:
            n = len(tf.pages)
            if n < pages:
                return f"{n} of the {pages} pages the index refers to"
            for i in range(pages):
                problem = _page_problem(tf.pages[i], i, size)
                if problem is not None:
                    return problem
    except FileNotFoundError:
        return "file not found"
    except (OSError, ValueError, IndexError, KeyError, EOFError, MemoryError) as exc:
        return f"not a readable TIFF: {exc}"
    return None


def _page_problem(page: object, i: int, size: int) -> str | None:
    offsets = tuple(getattr(page, "dataoffsets", ()) or ())
    counts = tuple(getattr(page, "databytecounts", ()) or ())
    if not offsets or len(offsets) != len(counts):
        return f"page {i} lists no strips or tiles"
    if min(counts) <= 0:
        return f"page {i} has a strip or tile of 0 bytes (not written yet)"
    end = max(o + c for o, c in zip(offsets, counts, strict=True))
    if end > size:
        return f"page {i} data ends at byte {end}, the file has {size}"
    return None


@functools.lru_cache(maxsize=65536)
def _tiff_problem_cached(path: str, size: int, mtime_ns: int, pages: int) -> str | None:
    """:func:`tiff_problem` memoised on the file's size and mtime: a polling ingest re-checks
    only the files that changed."""
    del size, mtime_ns  # part of the cache key only
    return tiff_problem(path, pages)


def _summary(head: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_EXAMPLES])
    more = f" and {len(items) - _MAX_EXAMPLES} more" if len(items) > _MAX_EXAMPLES else ""
    return f"{head}: {shown}{more}"
