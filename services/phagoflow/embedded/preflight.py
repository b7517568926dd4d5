"""Checks ``phagoflow run`` makes before any work, and the lock it holds on ``--out``.

A run that cannot finish should say so before it segments a single field and before it touches
anything already in ``--out``: the output folder must be a folder (or creatable), writable, not in
use by another run, and have room for the plate's masks and tables (:func:`estimate_output_bytes`);
the worker count must be at least 1. Every refusal is a :class:`RunError` whose message names the
path or value and what to do.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "LOCK_NAME",
    "RunError",
    "check_free_space",
    "check_out_dir",
    "check_workers",
    "estimate_output_bytes",
    "output_lock",
]

#: Lock file held in ``--out`` while a run writes there.
LOCK_NAME = ".phagoflow-run.lock"

#: Free-space estimate, per mask: zlib-compressed label masks of simulated and CIP fields take
#: 0.005–0.02 bytes per pixel; 1/16 leaves a 3–12x margin for busier fields.
MASK_BYTES_PER_PIXEL = 1 / 16
#: Per field and method: ``objects.csv`` rows (≈ 30 KiB for 150 objects per class), doubled.
TABLE_BYTES_PER_FIELD = 64 * 1024
#: Per run: wells.csv, run.json, heat-map and report with its overlays (≈ 2–3 MiB), with margin.
REPORT_BYTES = 8 * 1024 * 1024


class RunError(RuntimeError):
    """``phagoflow run`` cannot start, or had to stop; the message says why and what to do."""


def check_workers(workers: int) -> None:
    """Refuse a worker count below 1 (``--workers`` / ``PHAGOFLOW_WORKERS``)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise RunError(f"workers must be a whole number of at least 1, got {workers!r}")


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()  # pragma: no cover - "/" always exists


def check_out_dir(out: Path, methods: Sequence[str] = ()) -> Path:
    """Check that ``out`` is, or can become, a writable folder; nothing is created.

    Parameters
    ----------
    out : Path
        The ``--out`` folder.
    methods : sequence of str
        Methods about to write masks: their existing ``out/masks/<method>`` folders are probed
        too.

    Returns
    -------
    Path
        The folder whose file system will hold the results (``out`` or its nearest existing
        parent), for :func:`check_free_space`.

    Raises
    ------
    RunError
        ``out`` (or a parent) is a file, or a folder cannot be written in.
    """
    existing = _nearest_existing(out)
    if not existing.is_dir():
        what = "is a file" if existing == out else f"cannot be created: {existing} is a file"
        raise RunError(f"--out {out} {what}, not a folder; give a folder for the results")
    probes = [existing]
    probes += [p for m in methods if (p := out / "masks" / m).is_dir()]
    for folder in probes:
        _probe_writable(folder, out)
    return existing


def _probe_writable(folder: Path, out: Path) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=".phagoflow-probe-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RunError(
            f"cannot write in {folder} ({reason}); choose another --out than {out} "
            "or make it writable"
        ) from None
    os.close(fd)
    os.unlink(name)


def estimate_output_bytes(n_fields: int, size_yx: tuple[int, int], n_methods: int) -> int:
    """Bytes a run may write: masks and ``objects.csv`` rows per field and method, plus reports.

    Parameters
    ----------
    n_fields : int
        Fields of the plate.
    size_yx : (H, W) tuple of int
        Field size in pixels.
    n_methods : int
        Methods run.

    Returns
    -------
    int
        ``n_fields × n_methods × (H × W × MASK_BYTES_PER_PIXEL + TABLE_BYTES_PER_FIELD)
        + REPORT_BYTES``.
    """
    per_mask = size_yx[0] * size_yx[1] * MASK_BYTES_PER_PIXEL + TABLE_BYTES_PER_FIELD
    return int(n_fields * n_methods * per_mask) + REPORT_BYTES


def check_free_space(folder: Path, needed: int) -> int:
    """Refuse to start when ``folder``'s file system has less than ``needed`` bytes free.

    Returns
    -------
    int
        The free bytes found.
    """
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise RunError(
            f"not enough free space for the results in {folder}: {_mib(free)} free, about "
            f"{_mib(needed)} needed for this plate's masks and tables; free some space or "
            "choose another --out"
        )
    return free


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.phagoflow-run.lock`` (``flock``) for the run; refuse if another run holds it."""
    path = out / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunError(f"cannot write in {out} ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise RunError(
                f"another phagoflow run (pid {holder}) is writing to {out}; wait for it or "
                "choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
