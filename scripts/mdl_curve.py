"""MDL: quality against the number of curated fields (the paper's Part B, on simulated plates).

The paper's humans-in-the-loop step: experts correct a few predicted masks, and a U-Net fine-tuned
on them (MDL) learns the true outline convention that CDL, trained on the CIP's weak labels, cannot.
Here the simulator's truth *stands in for* curated masks (what a perfect curator would save in
``phagoflow review``):

1. a *curated pool*: a simulated plate (``--pool-seed``) whose truth plays the curated masks;
2. the CDL model to start from (``--model``; default the packaged model) — N = 0 on the curve;
3. for each N in ``--sizes``: fine-tune CDL on N pool fields (spread over wells, fixed order) with
   :func:`phagoflow.core.training.train_unet` (``init_state`` = CDL's weights), and, with
   ``--scratch``, also train from random weights on the same N fields;
4. score CIP, CDL and every MDL on a held-out labelled test plate (``--test-seed``) against truth.

Writes ``<out>/results.json``, ``<out>/mdl_curve.png`` (mean IoU and object F1 against N) and prints
a markdown table. Example (~15 min on 2 cores)::

    .venv/bin/python scripts/mdl_curve.py --sizes 10 30 --out experiment-out/mdl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from _recipe import cip_weak_labels, parse_overrides, score, simulate_plate_fields

from phagoflow.core.inference import Predictor, TorchBackend, default_model_dir
from phagoflow.core.model_dir import load_model_dir
from phagoflow.core.simulate import SimulationParameters
from phagoflow.core.training import TrainingConfig, TrainingData, train_unet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="CDL model folder (default: packaged)")
    ap.add_argument("--setting", default="normal", choices=["normal", "harder"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[10, 30], help="curated fields N")
    ap.add_argument("--pool-seed", type=int, default=300, help="curated-pool plate seed")
    ap.add_argument("--pool-wells", type=int, default=10)
    ap.add_argument("--pool-fields", type=int, default=3)
    ap.add_argument("--test-seed", type=int, default=900)
    ap.add_argument("--test-wells", type=int, default=12)
    ap.add_argument("--test-fields", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--patches", type=int, default=256, help="patches per epoch")
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--ce-weight", type=float, default=0.0, help="cross-entropy added to Dice")
    ap.add_argument("--scratch", action="store_true", help="also train from scratch on N fields")
    ap.add_argument(
        "--no-finetune", action="store_true", help="skip fine-tuning CDL (with --scratch)"
    )
    ap.add_argument("--width", type=int, default=None, help="U-Net width from scratch")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other TrainingConfig field, e.g. --set weight_decay=0 (repeatable)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("experiment-out/mdl"))
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument(
        "--save-models", action="store_true", help="write each MDL's weights to OUT/*.pt"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    params = SimulationParameters.preset(args.setting)

    model_dir = args.model if args.model is not None else default_model_dir()
    cdl_net, card = load_model_dir(model_dir)
    norm = card.normalisation
    print(f"CDL: {model_dir} ({card.name} {card.version}, width {card.architecture.base_channels})")

    pool = simulate_plate_fields(
        params, seed=args.pool_seed, wells=args.pool_wells, fields=args.pool_fields
    )
    order = np.random.default_rng(args.seed).permutation(len(pool))
    # spread over wells: take fields round-robin by well, in a fixed random order within wells
    by_well: dict[str, list[int]] = {}
    for i in order:
        by_well.setdefault(pool[i].well, []).append(int(i))
    spread = [ws[k] for k in range(args.pool_fields) for ws in by_well.values() if k < len(ws)]
    if max(args.sizes) > len(spread):
        raise SystemExit(f"--sizes up to {max(args.sizes)} but the pool has {len(spread)} fields")

    test = simulate_plate_fields(
        params, seed=args.test_seed, wells=args.test_wells, fields=args.test_fields
    )
    rows: list[dict[str, Any]] = []
    cip = score(test, cip_weak_labels(test, params.pixel_size_um))
    rows.append({"method": "CIP", "n_curated": 0, **cip})
    cdl_pred = Predictor(TorchBackend(cdl_net, threads=args.threads), normalisation=norm)
    rows.append({"method": "CDL", "n_curated": 0, **score(test, _predict(cdl_pred, test))})
    print(
        f"test plate {len(test)} fields: CIP mean IoU {cip['miou']:.3f}, CDL {rows[-1]['miou']:.3f}"
    )

    for n in sorted(args.sizes):
        idx = spread[:n]
        data = TrainingData(
            images=[pool[i].image for i in idx],
            labels=[pool[i].truth for i in idx],
            names=[pool[i].name for i in idx],
        )
        starts = [] if args.no_finetune else [("MDL (fine-tuned CDL)", cdl_net.state_dict())]
        if args.scratch:
            starts.append(("MDL (from scratch)", None))
        for label, init in starts:
            width = card.architecture.base_channels
            if init is None and args.width is not None:
                width = args.width
            cfg = TrainingConfig(
                base_channels=width,
                epochs=args.epochs,
                patches_per_epoch=args.patches,
                learning_rate=args.learning_rate,
                optimizer=args.optimizer,
                ce_weight=args.ce_weight,
                normalisation=norm,
                val_fraction=0.1 if n >= 10 else 0.0,
                seed=args.seed,
                num_threads=args.threads,
                **parse_overrides(args.set),  # strings; pydantic converts
            )
            t0 = time.perf_counter()
            out = train_unet(data, cfg, progress=not args.no_progress, init_state=init)
            t_train = time.perf_counter() - t0
            if args.save_models:
                args.out.mkdir(parents=True, exist_ok=True)
                tag = "finetuned" if init is not None else "scratch"
                torch.save(
                    {"state_dict": out.model.state_dict(), "base_channels": width},
                    args.out / f"mdl-{tag}-n{n}.pt",
                )
            pred = Predictor(TorchBackend(out.model, threads=args.threads), normalisation=norm)
            sc = score(test, _predict(pred, test))
            rows.append({"method": label, "n_curated": n, "train_seconds": t_train, **sc})
            print(
                f"{label}, N={n}: mean IoU {sc['miou']:.3f}, object F1 {sc['f1']:.3f} "
                f"(best epoch {out.best_epoch}/{len(out.history)}, {t_train:.0f} s)"
            )

    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cdl_model": {"dir": str(model_dir), "name": card.name, "version": card.version},
        "rows": rows,
        "wall_seconds": time.perf_counter() - t_all,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    _figure(rows, args.out / "mdl_curve.png", args.setting)
    print()
    print(markdown_table(rows))
    print(f"\nwall {result['wall_seconds'] / 60:.1f} min; {args.out / 'results.json'}")
    return 0


def _predict(pred: Predictor, fields: list[Any]) -> list[np.ndarray]:
    return [pred.predict(f.image) for f in fields]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per method and N: mean IoU, foreground IoU, BF, object F1, count MAE."""
    out = [
        "| method | curated fields | mean IoU | fg mean IoU | mean BF | object F1 | count MAE |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['method']} | {r['n_curated']} | {r['miou']:.3f} | {r['fg_miou']:.3f} | "
            f"{r['bf']:.3f} | {r['f1']:.3f} | {r['count_mae']:.1f} |"
        )
    return "\n".join(out)


def _figure(rows: list[dict[str, Any]], path: Path, setting: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for ax, key, title in ((axes[0], "miou", "mean IoU (3 classes)"), (axes[1], "f1", "object F1")):
        base = {r["method"]: r[key] for r in rows if r["n_curated"] == 0}
        for name, value in base.items():
            ax.axhline(value, ls="--", lw=1, color="grey" if name == "CIP" else "C0")
            ax.text(0, value, f" {name}", va="bottom", fontsize=8)
        for i, method in enumerate(sorted({r["method"] for r in rows if r["n_curated"] > 0})):
            pts = [(0, base["CDL"])] if "fine-tuned" in method else []
            pts += [(r["n_curated"], r[key]) for r in rows if r["method"] == method]
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "o-", color=f"C{i + 1}", label=method)
        ax.set_xlabel("curated fields")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"MDL: quality against curated fields ({setting} simulated test plate)")
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
