"""CIP quality on simulated truth: per-class pixel IoU, BF score and object F1, per preset.

Simulates fields in memory (seeds 1000..1000+n-1, well level 1), segments them with the default
CIP parameters and scores them with the paper's evaluation suite (phagoflow.core.evaluation).
The CIP parameters were chosen by looking at images, not by optimising against these numbers.
"""

from __future__ import annotations

import argparse

from _common import machine
from phagoflow.core.cip import segment_cip
from phagoflow.core.evaluation import evaluate_masks
from phagoflow.core.simulate import SimulationParameters, simulate_field


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fields", type=int, default=20)
    args = ap.parse_args()
    print(f"# CIP vs simulated truth, {args.fields} fields per preset ({machine()})")
    print(
        f"{'preset':<8} {'IoU bg':>7} {'IoU phago':>10} {'IoU auto':>9} {'mean IoU':>9} "
        f"{'mean BF':>8} {'obj F1 phago':>13} {'obj F1 auto':>12}"
    )
    for preset in ("normal", "harder"):
        params = SimulationParameters.preset(preset)
        pairs = []
        for i in range(args.fields):
            sim = simulate_field(params, rng=1000 + i)
            pairs.append(
                (sim.truth, segment_cip(sim.image.astype("float32"), params.pixel_size_um).mask)
            )
        res = evaluate_masks(pairs)
        iou = res.per_class["iou"]
        print(
            f"{preset:<8} {iou[0]:7.3f} {iou[1]:10.3f} {iou[2]:9.3f} "
            f"{res.aggregate['iou']['mean']:9.3f} {res.aggregate['bf']['mean']:8.3f} "
            f"{res.boxes['phagophore'].f1:13.3f} {res.boxes['autolysosome'].f1:12.3f}"
        )


if __name__ == "__main__":
    main()
