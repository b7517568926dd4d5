"""Helpers for tests that run ``phagoflow run`` as a real process and stop it part way.

Interrupts are made deterministic with a *blocked field*: one source TIFF of the plate is replaced
by a named pipe (FIFO), so reading that field blocks until the run is stopped. The run therefore
cannot finish before the test sends its signal, and every other field's mask is known to be
written once it appears in the folder: no sleep decides the outcome, no wall time is asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tifffile

from phagoflow.cli import main

#: Seconds a test waits for a run to reach a state or to exit before it fails (never asserted).
PATIENCE_S = 180.0


def simulate(tmp_path: Path, *, wells: int, fields: int, seed: int = 3) -> Path:
    """A simulated Harmony 5 plate (``wells`` × ``fields``), its export folder."""
    out = tmp_path / "plate"
    argv = ["-q", "simulate", str(out), "--wells", str(wells), "--fields", str(fields)]
    assert main([*argv, "--seed", str(seed)]) == 0
    return out / "Images"


def field_names(export: Path) -> list[str]:
    """Field names of the export, sorted (the order a 1-worker run processes them in)."""
    return sorted({p.name[:12] for p in export.glob("r*c*f*p*-ch1*.tiff")})


@contextmanager
def blocked_field(export: Path, field: str) -> Iterator[Path]:
    """Replace the DsRed TIFF of ``field`` by a FIFO (reading it blocks); restore it after."""
    (source,) = export.glob(f"{field}-ch1*.tiff")
    aside = source.with_name(source.name + ".aside")
    source.rename(aside)
    os.mkfifo(source)
    try:
        yield source
    finally:
        source.unlink()
        aside.rename(source)


def start_run(args: list[str], *, new_session: bool = False) -> subprocess.Popen[str]:
    """``python -m phagoflow -q run ARGS`` with SIGINT at its default (even if ours is ignored).

    ``new_session=True`` puts the run and its workers in a process group of their own, so
    :func:`ctrl_c` can signal the group as a terminal's Ctrl-C does.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "phagoflow", "-q", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@contextmanager
def running(args: list[str], *, new_session: bool = False) -> Iterator[subprocess.Popen[str]]:
    """:func:`start_run`, killed on the way out if still running (a failed test leaks none)."""
    proc = start_run(args, new_session=new_session)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_until(check: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    """Poll ``check`` every 20 ms; fail (killing ``proc``) if the run exits or stalls first."""
    deadline = time.monotonic() + PATIENCE_S
    while not check():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"run exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"run never reached: {what}")
        time.sleep(0.02)


def ctrl_c(proc: subprocess.Popen[str]) -> None:
    """SIGINT to the run's whole process group (parent and workers), like a terminal Ctrl-C."""
    os.killpg(proc.pid, signal.SIGINT)


def finish(proc: subprocess.Popen[str], patience_s: float = PATIENCE_S) -> tuple[int, str, str]:
    """Wait for the run to exit: ``(returncode, stdout, stderr)``; fail if it does not."""
    try:
        out, err = proc.communicate(timeout=patience_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"run did not exit after the signal:\n{out}\n{err}") from None
    return proc.returncode, out, err


def mask_records(out: Path, method: str = "cip") -> dict[str, dict[str, Any]]:
    """The record stored in each mask of ``out/masks/<method>``, by field name."""
    records = {}
    for path in sorted((out / "masks" / method).glob("*.tiff")):
        with tifffile.TiffFile(path) as tf:
            records[path.stem] = json.loads(tf.pages.first.description)
    return records


def run_json(out: Path) -> dict[str, Any]:
    """``out/run.json``."""
    doc: dict[str, Any] = json.loads((out / "run.json").read_text())
    return doc
