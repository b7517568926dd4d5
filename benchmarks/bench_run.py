"""Embedded run throughput (fields/hour) and peak RSS on a 96-field plate, 1 and 2 workers.

Each run is a fresh `phagoflow run` process on a fresh output folder, timed end to end
(reading, segmentation, counting, writing masks/tables/heat-map/report). Peak RSS is the
largest resident set of any process of the run (the parent or one worker), from getrusage.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import BENCH_DIR, ensure_plate, machine


def one_run(export: Path, method: str, workers: int) -> tuple[float, float, int]:
    out = BENCH_DIR / f"run-{method}-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "phagoflow",
        "-q",
        "run",
        str(export),
        "--out",
        str(out),
        "--method",
        method,
        "--workers",
        str(workers),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    peak_kib = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    n = json.loads((out / "run.json").read_text())["export"]["fields"]
    return elapsed, 3600.0 * n / elapsed, peak_kib


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="cip,all")
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    export = ensure_plate()
    print(f"# embedded run, 96-field plate ({machine()})")
    for method in args.methods.split(","):
        for w in (int(x) for x in args.workers.split(",")):
            elapsed, fph, peak = one_run(export, method, w)
            print(
                f"run.{method}.workers{w}.fields_per_hour  {fph:8.0f}  ({elapsed:.1f} s wall, "
                f"peak RSS {peak / 1024:.0f} MiB)"
            )


if __name__ == "__main__":
    main()
