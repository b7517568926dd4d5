"""Run every benchmark script in its own process and print their figures (`make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = (
    "bench_reader.py",
    "bench_cip.py",
    "bench_cip_quality.py",
    "bench_inference.py",
    "bench_run.py",
    "bench_interrupt.py",
    "bench_stream.py",
)


def main() -> int:
    rc = 0
    for name in SCRIPTS:
        path = HERE / name
        if not path.exists():
            continue
        print(f"\n== {name}", flush=True)
        rc |= subprocess.run(
            [sys.executable, str(path)],
            cwd=HERE.parent,
        ).returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
