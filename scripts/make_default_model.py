"""Train the packaged default CDL model (``make model``): CIP weak labels only, fixed seeds.

Recipe: :data:`_recipe.DEFAULT_RECIPE` — the same one ``make experiment`` measures — on one
unlabelled simulated training plate per acquisition setting (``normal`` and ``harder``, so the
shipped model has seen both), labelled by the CIP with its default parameters. The truth is never
used for training or checkpoint selection; it is used afterwards only to score the model on the
held-out test plates of the experiment, and those scores go into the model card.

Writes ``services/phagoflow/models/default/`` (``model.pt``, ``model.onnx``, ``card.json``),
replacing the previous one. Deterministic on CPU for the fixed seeds below.

Usage::

    .venv/bin/python scripts/make_default_model.py              # make model (~10 min, 2 cores)
    .venv/bin/python scripts/make_default_model.py --out /tmp/m  # somewhere else
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _recipe import (
    DEFAULT_RECIPE,
    cip_weak_labels,
    score,
    simulate_plate_fields,
    train_cdl,
)

from phagoflow.core.cip import CipParameters
from phagoflow.core.inference import load_predictor
from phagoflow.core.model_dir import save_model_dir
from phagoflow.core.simulate import SimulationParameters

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "services" / "phagoflow" / "models" / "default"

#: (setting, plate seed) of the unlabelled training plates; 12 wells x 4 fields each
TRAIN_PLATES = [("normal", 100), ("harder", 200)]
TRAIN_WELLS, TRAIN_FIELDS = 12, 4
#: held-out labelled test plates (the experiment's test plate), scored for the card only
TEST_SEED, TEST_WELLS, TEST_FIELDS = 900, 12, 3
SEED = 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    recipe = DEFAULT_RECIPE
    if recipe.ensemble != 1 or recipe.self_training_rounds or recipe.tta:
        raise SystemExit("the packaged model is one network: no ensemble, self-training or TTA")
    cip_params = CipParameters()

    images, weak, names = [], [], []
    for setting, plate_seed in TRAIN_PLATES:
        params = SimulationParameters.preset(setting)
        fields = simulate_plate_fields(
            params, seed=plate_seed, wells=TRAIN_WELLS, fields=TRAIN_FIELDS
        )
        images += [f.image for f in fields]
        weak += cip_weak_labels(fields, params.pixel_size_um, cip_params)
        names += [f"{setting}-{plate_seed}/{f.name}" for f in fields]
        print(f"training plate {setting} (seed {plate_seed}): {len(fields)} fields + CIP labels")
    model = train_cdl(
        images, weak, names, recipe, seed=SEED, threads=args.threads,
        progress=not args.no_progress,
    )  # fmt: skip
    outcome = model.outcomes[0]
    net = model.networks[0]
    t_train = time.perf_counter() - t0

    extra: dict[str, Any] = outcome.card_extra()
    extra["recipe"] = recipe.model_dump(mode="json")
    extra["data"] = {
        "labels": "cip",
        "cip_parameters": cip_params.model_dump(mode="json"),
        "simulated_plates": [
            {"setting": s, "seed": sd, "wells": TRAIN_WELLS, "fields_per_well": TRAIN_FIELDS}
            for s, sd in TRAIN_PLATES
        ],
        "fields_digest": hashlib.sha256(
            json.dumps(outcome.data_checksums, sort_keys=True).encode()
        ).hexdigest(),
        "made_by": "make model (scripts/make_default_model.py)",
    }
    card = save_model_dir(
        args.out, net, net.config, recipe.normalisation, extra,
        name="phagoflow-cdl-default", overwrite=True,
    )  # fmt: skip
    print(f"wrote {args.out} (version {card.version}) after {t_train / 60:.1f} min")

    # Score what was written (ONNX Runtime, the default backend) on the held-out test plates.
    predictor = load_predictor(args.out)
    scores: dict[str, Any] = {}
    for setting in ("normal", "harder"):
        params = SimulationParameters.preset(setting)
        test = simulate_plate_fields(params, seed=TEST_SEED, wells=TEST_WELLS, fields=TEST_FIELDS)
        cip = score(test, cip_weak_labels(test, params.pixel_size_um, cip_params))
        cdl = score(test, [predictor.predict(f.image) for f in test])
        scores[setting] = {
            "test_plate": {"seed": TEST_SEED, "wells": TEST_WELLS, "fields_per_well": TEST_FIELDS},
            "cip": {k: round(v, 4) for k, v in cip.items()},
            "cdl": {k: round(v, 4) for k, v in cdl.items()},
            "ratio_miou": round(cdl["miou"] / cip["miou"], 4),
        }
        print(
            f"{setting}: CDL mean IoU {cdl['miou']:.3f} vs CIP {cip['miou']:.3f} "
            f"(ratio {cdl['miou'] / cip['miou']:.3f}); object F1 {cdl['f1']:.3f} vs {cip['f1']:.3f}"
        )
    # The card's `training` section also records these scores (same weights, same version).
    extra["evaluation"] = {
        "what": "held-out simulated test plates scored against the simulator's truth "
        "(truth never used in training); scripts/_recipe.score",
        "settings": scores,
    }
    save_model_dir(
        args.out, net, net.config, recipe.normalisation, extra,
        name="phagoflow-cdl-default", version=card.version, overwrite=True,
    )  # fmt: skip
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"model folder {size / 1e6:.2f} MB; total {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
