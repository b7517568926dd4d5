"""Big-FISH's LoG spot detector on a stack of fields, run in Big-FISH's own venv (a peer).

Not part of phagoflow: this file runs under the Python of a separate virtual environment
(Big-FISH 0.6.2 needs numpy 1.23, scipy 1.9, scikit-image 0.19; see docs/experiment.md) and
imports nothing from phagoflow. ``scripts/stress_suite.py`` calls it through ``subprocess``.

Input ``IN.npz``: ``images`` (F, H, W) one channel per field, ``pixel_size_um`` (F,).
For each field separately: ``bigfish.detection.detect_spots(image, threshold=None,
voxel_size=(px, px) nm, spot_radius=(r, r) nm)`` — its automated (elbow) threshold, the
kernel size and minimum distance derived from the physical spot radius and the pixel size.
Output ``OUT.npz``: ``spots`` (N, 3) rows (field, row, col), ``thresholds`` (F,),
``cpu_seconds`` (F,) — process CPU time of ``detect_spots`` alone, per field.

Usage::

    /work/peers/bigfish/bin/python scripts/peers/bigfish_detect.py IN.npz OUT.npz --radius-nm 300
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--radius-nm", type=float, default=300.0, help="spot radius, nm")
    args = ap.parse_args()
    import bigfish.detection as detection

    data = np.load(args.inp)
    images, pixel = data["images"], data["pixel_size_um"]
    spots, thresholds, cpu = [], [], []
    for i, image in enumerate(images):
        px_nm = float(pixel[i]) * 1000.0
        t0 = time.process_time()
        found, threshold = detection.detect_spots(
            image,
            threshold=None,
            return_threshold=True,
            voxel_size=(px_nm, px_nm),
            spot_radius=(args.radius_nm, args.radius_nm),
        )
        cpu.append(time.process_time() - t0)
        thresholds.append(float(threshold))
        found = np.asarray(found, dtype=np.int64).reshape(-1, 2)
        spots.append(np.column_stack([np.full(len(found), i, np.int64), found]))
    np.savez(
        args.out,
        spots=np.concatenate(spots) if spots else np.zeros((0, 3), np.int64),
        thresholds=np.asarray(thresholds),
        cpu_seconds=np.asarray(cpu),
    )


if __name__ == "__main__":
    main()
