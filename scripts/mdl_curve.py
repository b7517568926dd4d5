"""MDL: quality against the number of curated fields (the paper's Part B, on simulated plates).

The paper's humans-in-the-loop step: experts correct a few predicted masks, and a U-Net fine-tuned
on them (MDL) learns the true outline convention that CDL, trained on the CIP's weak labels, cannot.
Here the simulator's truth *stands in for* curated masks (what a perfect curator would save in
``phagoflow review``):

1. a *curated pool*: a simulated plate (``--pool-seed``) whose truth plays the curated masks;
2. the CDL model to start from (``--model``; default the packaged model) — N = 0 on the curve;
3. for each N in ``--sizes``: fine-tune CDL on N pool fields (spread over wells, fixed order) with
   :func:`phagoflow.embedded.train.train_model` — ``phagoflow train POOL --labels CURATED
   --init MODEL`` with the N fields' truth masks as the curated folder — and, with ``--scratch``,
   also train from random weights on the same N fields;
4. score CIP, CDL and every MDL on a held-out labelled test plate (``--test-seed``) against truth
   with :func:`phagoflow.embedded.evaluate.evaluate_plate` (``phagoflow evaluate --methods
   cip,cdl --unet NAME=DIR ...``), summarised by :func:`phagoflow.embedded.card.headline_scores`.

Writes ``<out>/results.json``, ``<out>/mdl_curve.png`` (mean IoU and object F1 against N) and prints
a markdown table. Example (~15 min on 2 cores)::

    .venv/bin/python scripts/mdl_curve.py --sizes 10 30 --out experiment-out/mdl
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib
from experiment import parse_overrides  # scripts/ is on sys.path when a script runs

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from phagoflow.core.inference import default_model_dir
from phagoflow.core.model_dir import load_model_dir
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.simulate import SimulationParameters, simulate_plate
from phagoflow.core.training import TrainingConfig
from phagoflow.embedded.card import headline_scores
from phagoflow.embedded.evaluate import MaskSource, evaluate_plate
from phagoflow.embedded.train import train_model


def get_arg_parser() -> argparse.ArgumentParser:
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
        "--save-models", action="store_true", help="copy each MDL model folder to OUT/mdl-*"
    )
    return ap


def spread_fields(truth_dir: Path, seed: int) -> list[str]:
    """The pool's field names in a fixed random order, round-robin over wells."""
    names = sorted(p.stem for p in truth_dir.glob("r*c*f*p*.tiff"))
    by_well: dict[str, list[str]] = {}
    for i in np.random.default_rng(seed).permutation(len(names)):
        by_well.setdefault(FieldKey.parse(names[int(i)]).well, []).append(names[int(i)])
    depth = max(len(ws) for ws in by_well.values())
    return [ws[k] for k in range(depth) for ws in by_well.values() if k < len(ws)]


def main(argv: list[str] | None = None) -> int:
    args = get_arg_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    params = SimulationParameters.preset(args.setting)
    progress = not args.no_progress
    model_dir = args.model if args.model is not None else default_model_dir()
    _, card = load_model_dir(model_dir)
    print(f"CDL: {model_dir} ({card.name} {card.version}, width {card.architecture.base_channels})")
    with tempfile.TemporaryDirectory(prefix="phagoflow-mdl-") as tmp:
        work = Path(tmp)
        pool = simulate_plate(
            work / "pool", wells=args.pool_wells, fields=args.pool_fields, seed=args.pool_seed,
            plate_id=f"{args.setting}-{args.pool_seed}", params=params, progress=progress,
        )  # fmt: skip
        spread = spread_fields(pool.truth_dir, args.seed)
        if max(args.sizes) > len(spread):
            raise SystemExit(
                f"--sizes up to {max(args.sizes)} but the pool has {len(spread)} fields"
            )
        test = simulate_plate(
            work / "test", wells=args.test_wells, fields=args.test_fields, seed=args.test_seed,
            plate_id=f"{args.setting}-{args.test_seed}", params=params, progress=progress,
        )  # fmt: skip
        trained: list[tuple[str, int, MaskSource, float]] = []
        for n in sorted(args.sizes):
            curated = work / f"curated-{n}"
            curated.mkdir()
            for name in spread[:n]:
                shutil.copy(pool.truth_dir / f"{name}.tiff", curated / f"{name}.tiff")
            trained += train_mdl(args, pool.export_dir, curated, n, model_dir, card, work)
        report = evaluate_plate(
            test.export_dir, test.truth_dir, methods=["cip", "cdl"], model_dir=model_dir,
            unets=[src for _, _, src, _ in trained], threads=args.threads, progress=progress,
        ).to_dict()  # fmt: skip
    scores = {name: _with_mean_mae(headline_scores(m)) for name, m in report["methods"].items()}
    rows: list[dict[str, Any]] = [
        {"method": "CIP", "n_curated": 0, **scores["cip"]},
        {"method": "CDL", "n_curated": 0, **scores["cdl"]},
    ]
    for label, n, src, t_train in trained:
        rows.append({"method": label, "n_curated": n, "train_seconds": t_train, **scores[src.name]})
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


def train_mdl(
    args: argparse.Namespace,
    pool: Path,
    curated: Path,
    n: int,
    model_dir: Path,
    card: Any,
    work: Path,
) -> list[tuple[str, int, MaskSource, float]]:
    """``phagoflow train POOL --labels CURATED [--init MODEL]``: fine-tuned and/or from scratch."""
    fields: dict[str, Any] = {
        "epochs": args.epochs,
        "patches_per_epoch": args.patches,
        "learning_rate": args.learning_rate,
        "optimizer": args.optimizer,
        "ce_weight": args.ce_weight,
        "val_fraction": 0.1 if n >= 10 else 0.0,
        "seed": args.seed,
        "num_threads": args.threads,
        **parse_overrides(args.set),
    }
    starts: list[tuple[str, str, Path | None, dict[str, Any]]] = []
    if not args.no_finetune:
        starts.append(("MDL (fine-tuned CDL)", "finetuned", model_dir, {}))
    if args.scratch:
        width = args.width if args.width is not None else card.architecture.base_channels
        scratch = {"base_channels": width, "normalisation": card.normalisation}
        starts.append(("MDL (from scratch)", "scratch", None, scratch))
    out: list[tuple[str, int, MaskSource, float]] = []
    for label, tag, init, extra in starts:
        t0 = time.perf_counter()
        res = train_model(
            [pool], work / f"mdl-{tag}-n{n}", labels=curated, init=init,
            config=TrainingConfig.model_validate({**fields, **extra}),
            name=f"mdl-{tag}-n{n}", progress=not args.no_progress,
        )  # fmt: skip
        t_train = time.perf_counter() - t0
        if args.save_models:
            shutil.copytree(res.model_dir, args.out / res.model_dir.name, dirs_exist_ok=True)
        print(
            f"{label}, N={n}: trained (best epoch {res.best_epoch}/"
            f"{len(res.card.training['history'])}, {t_train:.0f} s)"
        )
        out.append((label, n, MaskSource(f"mdl-{tag}-n{n}", res.model_dir), t_train))
    return out


def _with_mean_mae(scores: dict[str, Any]) -> dict[str, Any]:
    """Add ``count_mae``: the mean of the two classes' per-well count MAE."""
    mae = (scores["count_mae_phagophore"] + scores["count_mae_autolysosome"]) / 2
    return {**scores, "count_mae": mae}


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
