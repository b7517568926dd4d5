"""Is a plate export finished? No vendor "measurement finished" marker exists, so (DESIGN.md):

a plate is complete when the index parses, the Image count equals
wells × fields × planes × channels × timepoints, every non-empty URL exists with at least
ImageSizeX × ImageSizeY × 2 bytes, and no file (index or image) changed within a quiet period.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .catalogue import PlateFormatError, PlateIndex

__all__ = ["CompletenessReport", "check_complete", "expected_image_count"]

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
        Acquired images whose file exists with at least ``ImageSizeX × ImageSizeY × 2`` bytes.
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
    expected = expected_image_count(index)
    declared = len(index.images)
    if declared == 0:
        reasons.append(f"{index.index_path}: the index lists no images")
    elif declared != expected:
        reasons.append(
            f"{index.index_path}: {declared} Image entries but wells x fields x planes x "
            f"channels x timepoints = {expected}"
        )

    # bytes required per file (a .flex file holds many pages)
    required: dict[Path, int] = {}
    unsafe: list[str] = []
    acquired = 0
    for im in index.images:
        if not im.url:
            continue
        acquired += 1
        if im.problem is not None or im.path is None:
            unsafe.append(im.problem or im.url)
            continue
        h, w = im.size_yx or (1, 1)
        required[im.path] = required.get(im.path, 0) + h * w * 2
    if unsafe:
        reasons.append(_summary(f"{len(unsafe)} image URL(s) not followed", unsafe))

    missing: list[str] = []
    small: list[str] = []
    found = 0
    mtimes: list[tuple[float, Path]] = []
    pages_per_file: dict[Path, int] = {}
    for im in index.images:
        if im.path is not None and im.url and im.problem is None:
            pages_per_file[im.path] = pages_per_file.get(im.path, 0) + 1
    for file, need in required.items():
        try:
            st = os.stat(file)
        except OSError:
            missing.append(file.name)
            continue
        mtimes.append((st.st_mtime, file))
        if st.st_size < need:
            small.append(f"{file.name} ({st.st_size} < {need} bytes)")
        else:
            found += pages_per_file.get(file, 1)
    if missing:
        reasons.append(_summary(f"{len(missing)} image file(s) missing", missing))
    if small:
        reasons.append(_summary(f"{len(small)} image file(s) too small", small))

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
        expected_images=expected,
        declared_images=declared,
        found_images=found,
        acquired_images=acquired,
        newest_mtime=newest[0] if newest is not None else None,
        index_path=index.index_path,
    )


def _summary(head: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_EXAMPLES])
    more = f" and {len(items) - _MAX_EXAMPLES} more" if len(items) > _MAX_EXAMPLES else ""
    return f"{head}: {shown}{more}"
