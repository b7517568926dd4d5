"""CPU seconds per field: the CIP against Big-FISH's LoG detector, per stress condition.

One core (OMP/BLAS threads pinned to 1). Fields are the protocol's *test* plates of the
stress suite (``phagoflow.core.protocol``; rendered once into ``bench-out/stress-cache``).
The CIP is timed here around ``segment_cip``; Big-FISH (0.6.2, its own venv, see
docs/experiment.md) inside its own process around ``detect_spots`` only — both with
``time.process_time()``. Without the Big-FISH venv (``PHAGOFLOW_BIGFISH_PYTHON``) only the CIP
is timed.

Usage::

    .venv/bin/python benchmarks/bench_cip_peers.py [--fields 6] [--conditions normal pixel_0.06]
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import sys
from pathlib import Path

from _common import BENCH_DIR, machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from stress_suite import BIGFISH_PYTHON, cached_plate, run_bigfish, run_inprocess

from phagoflow.core.cip import segment_cip
from phagoflow.core.protocol import Role, StressPlate, plate_set
from phagoflow.core.stress import CONDITIONS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fields", type=int, default=6)
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    args = ap.parse_args()
    have_bigfish = Path(BIGFISH_PYTHON).exists()
    print(f"# CPU s per field, one core, test plates ({machine()})")
    print(f"{'condition':<22} {'px um':>6} {'cip':>7} {'bigfish':>8}")
    for spec in plate_set(Role.TEST, args.conditions, wells=4, fields=3):
        full = cached_plate(spec, BENCH_DIR / "stress-cache")
        plate = StressPlate(spec, full.fields[: args.fields], full.wells[: args.fields])
        n = len(plate.fields)
        _, cip = run_inprocess(lambda im, px: segment_cip(im, px).mask, plate)
        peer = f"{run_bigfish(plate, BIGFISH_PYTHON)[1] / n:8.3f}" if have_bigfish else "     n/a"
        px = plate.fields[0].pixel_size_um
        print(f"{spec.condition:<22} {px:6.2f} {cip / n:7.3f} {peer}", flush=True)


if __name__ == "__main__":
    main()
