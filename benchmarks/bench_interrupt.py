"""Ctrl-C latency of `phagoflow run`: seconds from SIGINT to the process having exited.

A fresh run of the 96-field benchmark plate (see _common.ensure_plate) is started in a process
group of its own; once --after masks exist (the workers are warm and busy) SIGINT goes to the
whole group, as a terminal's Ctrl-C does. The figure is the time until the run has exited, after
writing its partial tables, run.json and report (marked interrupted). Also printed: the exit
status (130 expected) and how many masks appeared after the signal (work that should not happen).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import BENCH_DIR, ensure_plate, machine


def _masks(out: Path) -> int:
    folder = out / "masks" / "cip"
    return len(list(folder.glob("*.tiff"))) if folder.is_dir() else 0


def one_interrupt(export: Path, workers: int, after: int) -> tuple[float, int, int, str]:
    """(seconds SIGINT → exit, exit status, masks written after the signal, run.json status)."""
    out = BENCH_DIR / f"interrupt-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "phagoflow", "-q", "run", str(export), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    while _masks(out) < after:
        if proc.poll() is not None:
            raise SystemExit(f"the run ended before {after} masks: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        time.sleep(0.01)
    at_signal = _masks(out)
    t0 = time.perf_counter()
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=300)
    seconds = time.perf_counter() - t0
    status = json.loads((out / "run.json").read_text()).get("status", "?")
    return seconds, proc.returncode, _masks(out) - at_signal, status


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--after", type=int, default=8, help="masks on disk before the SIGINT")
    args = ap.parse_args()
    export = ensure_plate()
    print(f"# Ctrl-C latency, 96-field plate, CIP ({machine()})")
    for workers in (int(w) for w in args.workers.split(",")):
        runs = [one_interrupt(export, workers, args.after) for _ in range(args.repeats)]
        secs = [r[0] for r in runs]
        print(
            f"interrupt.workers{workers}.seconds_to_exit  {statistics.median(secs):6.2f}  "
            f"(median of {len(runs)}: {', '.join(f'{s:.2f}' for s in secs)}; exit status "
            f"{sorted({r[1] for r in runs})}; masks after SIGINT {[r[2] for r in runs]}; "
            f"run.json {sorted({r[3] for r in runs})})"
        )


if __name__ == "__main__":
    main()
