"""U-Net (CDL) inference time per 680 x 512 field: ONNX Runtime and torch, 2 threads.

Uses the packaged default model (built by `make model`); pass --model DIR for another one.
Normalisation, tiling (256 x 256 with a 32 px border), batching, stitching and argmax included.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from _common import machine
from phagoflow.core.inference import default_model_dir, load_predictor
from phagoflow.core.simulate import simulate_field


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--fields", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model = args.model or default_model_dir()
    if not (model / "card.json").exists():
        print(f"no model at {model}; run `make model` first (skipping)")
        return
    images = [simulate_field(rng=500 + i).image.astype(np.float32) for i in range(args.fields)]
    print(f"# U-Net inference, {args.threads} threads ({machine()})")
    for backend in ("onnxruntime", "torch"):
        pred = load_predictor(model, backend=backend, batch_size=12, threads=args.threads)
        pred.predict(images[0])  # warm-up
        times = []
        for img in images:
            t0 = time.perf_counter()
            pred.predict(img)
            times.append(time.perf_counter() - t0)
        print(
            f"inference.{backend}.seconds_per_field.median  {statistics.median(times):.3f}"
            f"  (n={len(times)}, model {pred.card.version if pred.card else '?'})"
        )


if __name__ == "__main__":
    main()
