"""Record in a model card how the model was made and how it scored on held-out plates.

``make model`` trains the packaged default model with ``phagoflow train``, scores it with
``phagoflow evaluate --json`` on held-out simulated plates and then runs::

    python -m phagoflow.embedded.card MODEL_DIR NAME=EVALUATION.json ... \\
        --commands COMMANDS.txt --recipe RECIPE.json --made-by TEXT

which adds to the card's ``training`` section:

* ``evaluation``: per plate ``NAME``, the plate (id, index sha256, fields) and, per method, the
  headline scores of the evaluation report (:func:`headline_scores`);
* ``recipe``: the ``phagoflow train --config`` file the model was trained with;
* ``made_by``: what made it and the commands, in the order they ran.

Only ``card.json`` is rewritten; the weights, their checksums and the version stay as they are
(the version is a hash of the weight files), so the folder still loads with
:func:`phagoflow.core.model_dir.load_model_dir`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from phagoflow.core.classes import OBJECT_CLASS_NAMES
from phagoflow.core.model_dir import CARD_FILE, load_model_dir

__all__ = ["headline_scores", "main", "record_provenance"]

_FOREGROUND = tuple(OBJECT_CLASS_NAMES.values())


def _round(value: Any, digits: int = 4) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def headline_scores(method: Mapping[str, Any]) -> dict[str, Any]:
    """The scores of one method of a ``phagoflow evaluate --json`` report, flat and rounded.

    Parameters
    ----------
    method : mapping
        ``report["methods"][NAME]``: ``metrics`` (:meth:`EvaluationResult.to_dict`),
        ``count_errors`` and ``count_errors_instances`` (per-well count errors against the
        truth masks and against the simulator's instances).

    Returns
    -------
    dict
        ``miou`` (3-class mean IoU), ``fg_miou`` (mean IoU of the two vesicle classes),
        ``iou_<class>``, ``bf`` (mean BF score), ``f1`` (box-surrogate object F1 of both
        classes pooled), ``f1_<class>``, ``precision_<class>``, ``recall_<class>``,
        ``count_mae_<class>`` and ``count_mre_<class>`` (per-well count errors against the true
        instances when the plate has them, else against the truth masks), ``n_fields``.
    """
    metrics = method["metrics"]
    iou = metrics["per_class"]["iou"]
    boxes = metrics["boxes"]
    counts = method.get("count_errors_instances") or method["count_errors"]
    matched = sum(boxes[c]["n_matched"] for c in _FOREGROUND)
    objects = sum(boxes[c]["n_true"] + boxes[c]["n_pred"] for c in _FOREGROUND)
    out: dict[str, Any] = {
        "miou": metrics["aggregate"]["iou"]["mean"],
        "fg_miou": (iou["phagophore"] + iou["autolysosome"]) / 2,
        "iou_background": iou["background"],
    }
    for c in _FOREGROUND:
        out[f"iou_{c}"] = iou[c]
    out["bf"] = metrics["aggregate"]["bf"]["mean"]
    out["f1"] = 2 * matched / objects if objects else None
    for c in _FOREGROUND:
        out[f"f1_{c}"] = boxes[c]["f1"]
        out[f"precision_{c}"] = boxes[c]["precision"]
        out[f"recall_{c}"] = boxes[c]["recall"]
    for c in _FOREGROUND:
        out[f"count_mae_{c}"] = counts["mae"][f"{c}s"]
        out[f"count_mre_{c}"] = counts["mre"][f"{c}s"]
    out["n_fields"] = metrics["n_images"]
    return {k: _round(v) for k, v in out.items()}


def _plate_scores(report: Mapping[str, Any]) -> dict[str, Any]:
    export = report["export"]
    return {
        "plate_id": export["plate_id"],
        "index_sha256": export["index_sha256"],
        "fields_evaluated": report["fields_evaluated"],
        "truth_instances": report["truth"]["instances"],
        "methods": {name: headline_scores(m) for name, m in report["methods"].items()},
    }


def record_provenance(
    model_dir: Path,
    evaluations: Mapping[str, Path],
    *,
    commands: Sequence[str] = (),
    recipe: Mapping[str, Any] | None = None,
    made_by: str | None = None,
) -> dict[str, Any]:
    """Add ``evaluation``, ``recipe`` and ``made_by`` to the card's ``training`` section.

    Parameters
    ----------
    model_dir : Path
        A model folder (verified with :func:`~phagoflow.core.model_dir.load_model_dir` first).
    evaluations : mapping of str to Path
        Plate name → ``phagoflow evaluate --json`` report of that held-out plate.
    commands : sequence of str
        The commands that made the model and its scores, in order.
    recipe : mapping, optional
        The ``phagoflow train --config`` fields.
    made_by : str, optional
        What ran the commands (e.g. ``"make model"``).

    Returns
    -------
    dict
        The card written (as JSON data).

    Raises
    ------
    ModelDirError
        ``model_dir`` is not a valid model folder.
    ValueError
        An evaluation report is not a ``phagoflow evaluate --json`` report.
    """
    model_dir = Path(model_dir)
    load_model_dir(model_dir)
    card = json.loads((model_dir / CARD_FILE).read_text())
    scores: dict[str, Any] = {}
    for name, path in evaluations.items():
        report = json.loads(Path(path).read_text())
        if not isinstance(report, dict) or "methods" not in report or "export" not in report:
            raise ValueError(f"{path} is not a `phagoflow evaluate --json` report")
        scores[name] = _plate_scores(report)
    training = card.setdefault("training", {})
    training["evaluation"] = {
        "what": "held-out simulated plates scored against the simulator's truth with "
        "`phagoflow evaluate` (the truth is never used in training)",
        "plates": scores,
    }
    if recipe is not None:
        training["recipe"] = dict(recipe)
    training["made_by"] = {"by": made_by, "commands": list(commands)}
    tmp = model_dir / f".{CARD_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(card, indent=2, allow_nan=False) + "\n")
    tmp.replace(model_dir / CARD_FILE)
    load_model_dir(model_dir)  # the card still validates
    return dict(card)


def _evaluation_arg(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=EVALUATION.json, got {value!r}")
    return name, Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m phagoflow.embedded.card MODEL_DIR NAME=EVAL.json ...``."""
    ap = argparse.ArgumentParser(prog="python -m phagoflow.embedded.card", description=__doc__)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("evaluations", nargs="*", type=_evaluation_arg, metavar="NAME=EVAL.json")
    ap.add_argument("--commands", type=Path, default=None, help="file: one command a line")
    ap.add_argument("--recipe", type=Path, default=None, help="the train --config JSON file")
    ap.add_argument("--made-by", default=None)
    args = ap.parse_args(argv)
    commands = args.commands.read_text().splitlines() if args.commands is not None else []
    recipe = json.loads(args.recipe.read_text()) if args.recipe is not None else None
    card = record_provenance(
        args.model_dir,
        dict(args.evaluations),
        commands=[c for c in commands if c.strip()],
        recipe=recipe,
        made_by=args.made_by,
    )
    for name, plate in card["training"]["evaluation"]["plates"].items():
        for method, s in plate["methods"].items():
            print(
                f"{name} {method}: mean IoU {s['miou']:.3f}, object F1 {s['f1']:.3f}, "
                f"BF {s['bf']:.3f} ({s['n_fields']} fields)"
            )
    print(f"card: {args.model_dir / CARD_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
