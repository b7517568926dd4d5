"""The paper's experiment on simulated plates: a U-Net trained on CIP weak labels vs the CIP.

Every step is a product code path (what ``make model`` runs, without the shell):

For each setting (``normal``, ``harder`` = :meth:`SimulationParameters.preset`) and each
training seed ``s``:

1. simulate an *unlabelled* training plate (plate seed ``train_seed_base + s``) with
   :func:`phagoflow.core.simulate.simulate_plate` (``phagoflow simulate``);
2. train CDL on it with :func:`phagoflow.embedded.train.train_model` (``phagoflow train
   --labels cip``): CIP weak labels with the default :class:`~phagoflow.core.cip.CipParameters`,
   the recipe of ``scripts/cdl_recipe.json`` (the one ``make model`` uses) plus ``--set``
   overrides, training seed ``1000 * s``. The truth is never used for training or for checkpoint
   selection (the validation split is scored against the weak labels);
3. score CIP and CDL on a held-out, labelled test plate (plate seed ``test_seed``, the same for
   every training seed) with :func:`phagoflow.embedded.evaluate.evaluate_plate` (``phagoflow
   evaluate --methods cip,cdl``), summarised by :func:`phagoflow.embedded.card.headline_scores`
   (the scores ``make model`` writes into the card).

Reported (mean ± s.d. over training seeds): 3-class mean IoU (the paper's "Mean"), foreground
mean IoU (phagophore + autolysosome), mean BF score, object F1 (box surrogate, per class and
overall), per-well count MAE against the true counts, and the CDL/CIP mean IoU ratio.

Outputs: ``<out>/results.json`` (every number, per seed), a markdown table on stdout and, unless
``--no-doc``, the table written between the result markers of ``docs/experiment.md``.

Usage::

    .venv/bin/python scripts/experiment.py # make experiment (2 settings x 3 seeds)
    .venv/bin/python scripts/experiment.py --quick               # smoke run (~3 min)
    .venv/bin/python scripts/experiment.py --settings normal --seeds 0 --set ce_weight=0 \\
        --test-seed 800 --out experiment-out/screen-ce --no-doc   # screen one idea
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phagoflow.core.cip import CipParameters
from phagoflow.core.simulate import SimulatedPlate, SimulationParameters, simulate_plate
from phagoflow.core.training import TrainingConfig
from phagoflow.embedded.card import headline_scores
from phagoflow.embedded.evaluate import evaluate_plate
from phagoflow.embedded.train import train_model
from phagoflow.reporting.machine import cpu_description

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "experiment.md"
#: The CDL recipe (``phagoflow train --config`` fields), shared with ``make model``.
RECIPE = ROOT / "scripts" / "cdl_recipe.json"
START, END = "<!-- experiment-results:start -->", "<!-- experiment-results:end -->"

# (key, label, format) of the table rows; None key = section break
METRICS: list[tuple[str, str]] = [
    ("miou", "Mean IoU (3 classes)"),
    ("fg_miou", "Foreground mean IoU"),
    ("iou_phagophore", "IoU phagophore"),
    ("iou_autolysosome", "IoU autolysosome"),
    ("bf", "Mean BF score"),
    ("f1", "Object F1 (both)"),
    ("f1_phagophore", "Object F1 phagophore"),
    ("f1_autolysosome", "Object F1 autolysosome"),
    ("count_mae_phagophore", "Per-well count MAE phagophore"),
    ("count_mae_autolysosome", "Per-well count MAE autolysosome"),
]


def get_arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--settings", nargs="+", default=["normal", "harder"], choices=["normal", "harder"]
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    ap.add_argument("--train-wells", type=int, default=12)
    ap.add_argument("--train-fields", type=int, default=4, help="fields per training well")
    ap.add_argument("--test-wells", type=int, default=12)
    ap.add_argument("--test-fields", type=int, default=3, help="fields per test well")
    ap.add_argument(
        "--train-seed-base", type=int, default=100, help="training plate seed = base + seed"
    )
    ap.add_argument("--test-seed", type=int, default=900, help="test plate seed")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--patches", type=int, default=None, help="override patches per epoch")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a TrainingConfig field of the recipe (repeatable), e.g. --set ce_weight=0",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: normal only, 1 seed, 4x2 train / 4x2 test fields, 2 epochs",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--out", type=Path, default=Path("experiment-out"))
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/experiment.md")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    ap.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="RESULTS_JSON",
        help="do not train: merge the runs of earlier results.json files (e.g. seeds or settings "
        "run in parallel processes) into one table, <out>/results.json and the doc",
    )
    ap.add_argument(
        "--keep-plates",
        action="store_true",
        help="keep the simulated plates and trained models under <out>/work",
    )
    return ap


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["ce_weight=0.5", "epochs=3"]`` → ``{"ce_weight": "0.5", "epochs": "3"}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe's TrainingConfig fields with the command line's overrides (validated)."""
    fields: dict[str, Any] = json.loads(RECIPE.read_text())
    if args.quick:
        args.settings, args.seeds = ["normal"], args.seeds[:1]
        args.train_wells, args.train_fields, args.test_wells, args.test_fields = 4, 2, 4, 2
        fields.update(epochs=2, patches_per_epoch=64)
    fields.update(parse_overrides(args.set))
    if args.epochs is not None:
        fields["epochs"] = args.epochs
    if args.patches is not None:
        fields["patches_per_epoch"] = args.patches
    return TrainingConfig.model_validate(fields).model_dump(mode="json", include=set(fields))


def plate(
    work: Path, setting: str, seed: int, wells: int, fields: int, progress: bool
) -> SimulatedPlate:
    """``phagoflow simulate OUT --preset SETTING --seed SEED --plate SETTING-SEED``."""
    return simulate_plate(
        work / f"{setting}-{seed}",
        wells=wells,
        fields=fields,
        seed=seed,
        plate_id=f"{setting}-{seed}",
        params=SimulationParameters.preset(setting),
        progress=progress,
    )


def evaluate(
    test: SimulatedPlate, model_dir: Path | None, threads: int, progress: bool
) -> dict[str, dict[str, Any]]:
    """``phagoflow evaluate TEST --methods cip[,cdl] --model MODEL_DIR``: headline scores."""
    report = evaluate_plate(
        test.export_dir,
        test.truth_dir,
        methods=["cip"] if model_dir is None else ["cdl"],
        model_dir=model_dir,
        threads=threads,
        progress=progress,
    ).to_dict()
    return {name: headline_scores(m) for name, m in report["methods"].items()}


def run_seed(
    args: argparse.Namespace,
    fields: dict[str, Any],
    setting: str,
    seed: int,
    test: SimulatedPlate,
    cip_scores: dict[str, Any],
    work: Path,
) -> dict[str, Any]:
    """Train one CDL model (training seed ``1000 * seed``) and score it on the test plate."""
    progress = not args.no_progress
    t1 = time.perf_counter()
    train = plate(
        work / "train", setting, args.train_seed_base + seed, args.train_wells,
        args.train_fields, progress,
    )  # fmt: skip
    config = TrainingConfig.model_validate(
        {**fields, "seed": 1000 * seed, "num_threads": args.threads}
    )
    result = train_model(
        [train.export_dir], work / "models" / f"{setting}-seed{seed}", labels="cip",
        config=config, overwrite=True, name=f"cdl-{setting}-seed{seed}", progress=progress,
    )  # fmt: skip
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    cdl_scores = evaluate(test, result.model_dir, args.threads, progress)["cdl"]
    t_pred = time.perf_counter() - t2
    ratio = cdl_scores["miou"] / cip_scores["miou"]
    history = result.card.training["history"]
    log(
        f"  seed {seed}: CDL mean IoU {cdl_scores['miou']:.4f} (CIP "
        f"{cip_scores['miou']:.4f}, ratio {ratio:.3f}), fg {cdl_scores['fg_miou']:.3f} "
        f"vs {cip_scores['fg_miou']:.3f}, F1 {cdl_scores['f1']:.3f} vs "
        f"{cip_scores['f1']:.3f}; simulate + label + train {t_train:.0f} s, predict + score "
        f"{t_pred:.0f} s"
    )
    return {
        "seed": seed,
        "train_plate_seed": args.train_seed_base + seed,
        "cdl": cdl_scores,
        "ratio_miou": ratio,
        "train_seconds": t_train,
        "predict_seconds": t_pred,
        "best_epochs": [result.best_epoch],
        "val_miou_weak": [history[result.best_epoch - 1]["val_miou_weak"]],
        "model_version": result.card.version,
    }


def main(argv: list[str] | None = None) -> int:
    args = get_arg_parser().parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out, write=not args.no_doc)
    fields = recipe(args)
    cip_params = CipParameters()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    log(f"# CDL vs CIP on simulated plates — {machine()}")
    log(f"recipe (TrainingConfig fields): {json.dumps(fields)}")
    log(
        f"settings {args.settings}, seeds {args.seeds}; train {args.train_wells}x"
        f"{args.train_fields} fields (plate seed {args.train_seed_base}+seed), test "
        f"{args.test_wells}x{args.test_fields} fields (plate seed {args.test_seed})"
    )
    results: dict[str, Any] = {
        "recipe": fields,
        "cip_parameters": cip_params.model_dump(mode="json"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine(),
        "settings": {},
    }
    with tempfile.TemporaryDirectory(prefix="phagoflow-experiment-") as tmp:
        work = args.out / "work" if args.keep_plates else Path(tmp)
        for setting in args.settings:
            t0 = time.perf_counter()
            test = plate(
                work / "test", setting, args.test_seed, args.test_wells, args.test_fields,
                not args.no_progress,
            )  # fmt: skip
            cip_scores = evaluate(test, None, args.threads, not args.no_progress)["cip"]
            log(
                f"\n## {setting}: test plate {test.n_fields} fields simulated + CIP in "
                f"{time.perf_counter() - t0:.0f} s; CIP mean IoU {cip_scores['miou']:.3f}, "
                f"object F1 {cip_scores['f1']:.3f}"
            )
            runs = [
                run_seed(args, fields, setting, seed, test, cip_scores, work) for seed in args.seeds
            ]
            results["settings"][setting] = {
                "test_plate_seed": args.test_seed,
                "n_test_fields": test.n_fields,
                "cip": cip_scores,
                "runs": runs,
                "summary": summarise(cip_scores, runs),
            }
            (args.out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False))
    results["wall_seconds"] = time.perf_counter() - t_all
    (args.out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False))
    table = markdown_table(results)
    log("\n" + table)
    log(f"wall time {results['wall_seconds'] / 60:.1f} min; results in {args.out / 'results.json'}")
    if not args.no_doc:
        write_doc(table)
        log(f"table written to {DOC}")
    return 0


def merge(files: list[Path], out: Path, *, write: bool) -> int:
    """Merge the per-seed runs of several ``results.json`` files (same recipe and test plate)."""
    merged: dict[str, Any] | None = None
    for path in files:
        res = json.loads(path.read_text())
        if merged is None:
            merged = {k: v for k, v in res.items() if k != "settings"}
            merged["settings"] = {}
            merged["merged_from"] = []
        elif res["recipe"] != merged["recipe"] or res["cip_parameters"] != merged["cip_parameters"]:
            raise SystemExit(f"{path}: another recipe or CIP parameters than {files[0]}")
        merged["merged_from"].append(str(path))
        for setting, block in res["settings"].items():
            into = merged["settings"].setdefault(setting, {**block, "runs": []})
            if into["test_plate_seed"] != block["test_plate_seed"] or into["cip"] != block["cip"]:
                raise SystemExit(f"{path}: {setting} has another test plate than the others")
            seen = {r["seed"] for r in into["runs"]}
            into["runs"] += [r for r in block["runs"] if r["seed"] not in seen]
    assert merged is not None
    for block in merged["settings"].values():
        block["runs"].sort(key=lambda r: r["seed"])
        block["summary"] = summarise(block["cip"], block["runs"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(merged, indent=2, allow_nan=False))
    table = markdown_table(merged)
    log(table)
    log(f"merged {len(files)} files; results in {out / 'results.json'}")
    if write:
        write_doc(table)
        log(f"table written to {DOC}")
    return 0


def summarise(cip: dict[str, float], runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in cip:
        m, s = mean_sd([r["cdl"][key] for r in runs])
        out[key] = {"cip": cip[key], "cdl_mean": m, "cdl_sd": s}
    m, s = mean_sd([r["ratio_miou"] for r in runs])
    out["ratio_miou"] = {"mean": m, "sd": s}
    tta = [r["cdl_tta"] for r in runs if "cdl_tta" in r]
    if tta and len(tta) == len(runs):
        m, s = mean_sd([t["miou"] / cip["miou"] for t in tta])
        out["ratio_miou_tta"] = {"mean": m, "sd": s}
        m, s = mean_sd([t["f1"] for t in tta])
        out["f1_tta"] = {"cip": cip["f1"], "cdl_mean": m, "cdl_sd": s}
    return out


def markdown_table(results: dict[str, Any]) -> str:
    settings = list(results["settings"])
    n_seeds = {s: len(results["settings"][s]["runs"]) for s in settings}
    head = (
        "| Metric | " + " | ".join(f"CIP {s} | CDL {s} (n={n_seeds[s]})" for s in settings) + " |"
    )
    sep = "|---|" + "---:|---:|" * len(settings)
    rows = [head, sep]
    for key, label in METRICS:
        cells = []
        for s in settings:
            v = results["settings"][s]["summary"][key]
            cells += [f"{v['cip']:.3f}", f"{v['cdl_mean']:.3f} ± {v['cdl_sd']:.3f}"]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for s in settings:
        r = results["settings"][s]["summary"]["ratio_miou"]
        cells += ["1", f"**{r['mean']:.3f} ± {r['sd']:.3f}**"]
    rows.append("| CDL/CIP mean IoU ratio | " + " | ".join(cells) + " |")
    if all("ratio_miou_tta" in results["settings"][s]["summary"] for s in settings):
        cells = []
        for s in settings:
            r = results["settings"][s]["summary"]["ratio_miou_tta"]
            cells += ["", f"{r['mean']:.3f} ± {r['sd']:.3f}"]
        rows.append("| ratio with test-time flips (not shipped) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_doc(table: str) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Experiment\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{table}\n{END}{tail}")


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample s.d. (0 for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), sd if math.isfinite(sd) else 0.0


def machine() -> str:
    return f"{cpu_description()}, torch {torch.__version__}, numpy {np.__version__}"


def log(msg: str) -> None:
    print(msg, flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
