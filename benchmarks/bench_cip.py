"""CIP time per 680 x 512 two-channel field on ONE core (OMP/BLAS threads pinned to 1)."""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import statistics
import time

from _common import ensure_plate, machine
from phagoflow.core.cip import segment_cip
from phagoflow.core.opera import load_field, read_plate


def main(n: int = 24) -> None:
    cat = read_plate(ensure_plate())
    images = [load_field(cat, rec) for rec in cat.fields[:n]]
    segment_cip(images[0], cat.pixel_size_um)  # warm-up (imports, caches)
    times = []
    for img in images:
        t0 = time.perf_counter()
        segment_cip(img, cat.pixel_size_um)
        times.append(time.perf_counter() - t0)
    print(f"# CIP, one core ({machine()})")
    print(f"cip.seconds_per_field.median    {statistics.median(times):.3f}  (n={len(times)})")
    print(f"cip.seconds_per_field.max       {max(times):.3f}")


if __name__ == "__main__":
    main()
