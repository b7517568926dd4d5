"""``phagoflow train``: a U-Net model folder trained on plate exports."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phagoflow.cli import common

if TYPE_CHECKING:
    from phagoflow.core.training import TrainingConfig
    from phagoflow.embedded.train import TrainResult


HELP = "train a U-Net model folder on plate exports (CIP weak labels or curated masks)"
DESCRIPTION = """
Train the U-Net on every field of one or more plate exports and write MODEL_DIR/model.pt,
model.onnx and card.json (architecture, normalisation, checksums, training parameters, metrics per
epoch, seed, data checksums, package versions). Labels: 'cip' (default) = CIP weak labels, cached
in $PHAGOFLOW_CACHE_DIR (CDL); or a folder of masks rRRcCCfFFpPP.tiff, optionally one sub-folder
per plate id (MDL; write ./cip for a folder named cip). Defaults follow the paper (SGD, 15 epochs,
256-px patches); flags override --config, which overrides the defaults.
"""


def add_parser(sub: Any) -> None:
    """Add ``train`` to the ``phagoflow`` sub-parsers ``sub``."""
    p = common.command(sub, "train", _cmd_train, help=HELP, description=DESCRIPTION)
    p.add_argument("exports", nargs="+", type=Path, metavar="EXPORT", help="plate export(s)")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR", help="model folder")
    _add_data_options(p)
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON file with TrainingConfig fields (see phagoflow.core.training)",
    )
    p.add_argument(
        "--preset",
        choices=("paper", "mdl"),
        default="paper",
        help="starting TrainingConfig: 'paper' (SGD, Dice) or 'mdl' (the measured fine-tuning "
        "recipe for curated masks: Adam 3e-3, Dice + 2 x cross-entropy, 24 epochs of 256 "
        "patches); --config and the flags below override it",
    )
    g = p.add_argument_group("training parameters (default: --config, else the paper's)")
    for flag, _, kwargs in _TRAINING_PARAMETERS:
        g.add_argument(flag, default=None, **kwargs)
    common.add_cip_params_option(p, "JSON file with CIP parameters for the weak labels")
    p.add_argument("--name", default="phagoflow-unet", help="model name in the card")
    p.add_argument("--overwrite", action="store_true", help="replace a model in MODEL_DIR")
    common.add_channel_role_option(p)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    """``--labels``, ``--truth``, ``--init``, ``--holdout``: what the model learns from."""
    p.add_argument(
        "--labels",
        default="cip",
        metavar="cip|MASKS_DIR",
        help="'cip' for CIP weak labels (default) or a folder of masks",
    )
    p.add_argument(
        "--truth",
        type=Path,
        default=None,
        metavar="DIR",
        help="true masks (e.g. OUT/truth of `phagoflow simulate`), for validation reporting only",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="MODEL_DIR|default",
        help="fine-tune from this model folder ('default': the packaged CDL model) — MDL from "
        "curated masks: --labels RESULTS/curated --init default",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction in [0, 1) of the labelled fields kept out of training and validation "
        "(chosen by --seed, spread over wells; listed in card.json training.split.holdout) for "
        "`phagoflow evaluate --held-out-by MODEL_DIR` (default 0)",
    )


#: The training-parameter flags (all ``default=None``: unset keeps --config's or the preset's
#: value): flag, the TrainingConfig field it sets, its other add_argument keywords.
_TRAINING_PARAMETERS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--epochs", "epochs", {"type": int, "help": "maximum epochs (15)"}),
    ("--seed", "seed", {"type": int, "help": "split, patches and weights seed (0)"}),
    (
        "--val-fraction",
        "val_fraction",
        {"type": float, "help": "fraction of fields held out (0.10)"},
    ),
    ("--base-channels", "base_channels", {"type": int, "help": "U-Net width (8)"}),
    ("--patches-per-epoch", "patches_per_epoch", {"type": int, "help": "patches per epoch (512)"}),
    ("--patch-size", "patch_size", {"type": int, "help": "patch side, pixels (256)"}),
    ("--batch-size", "batch_size", {"type": int, "help": "patches per step (4)"}),
    ("--learning-rate", "learning_rate", {"type": float, "help": "initial rate (2e-3)"}),
    ("--optimizer", "optimizer", {"choices": ("sgd", "adam"), "help": "(sgd)"}),
    (
        "--early-stopping",
        "early_stopping_patience",
        {"type": int, "metavar": "N", "help": "stop after N epochs without improvement (off)"},
    ),
    ("--select-by", "select_by", {"choices": ("val_loss", "val_miou"), "help": "(val_loss)"}),
    ("--threads", "num_threads", {"type": int, "help": "torch CPU threads"}),
    ("--device", "device", {"help": "torch device (cpu)"}),
)


def _training_config(args: argparse.Namespace) -> TrainingConfig:
    """The preset, overridden by ``--config``'s fields, overridden by the flags given."""
    from phagoflow.core.training import TRAINING_PRESETS, TrainingConfig

    from_file = json.loads(args.config.read_text()) if args.config is not None else {}
    if not isinstance(from_file, dict):
        raise ValueError(f"{args.config} must hold a JSON object of TrainingConfig fields")
    fields = {**TRAINING_PRESETS[args.preset], **from_file}
    for flag, field, _ in _TRAINING_PARAMETERS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            fields[field] = value
    return TrainingConfig.model_validate(fields)


def _cmd_train(args: argparse.Namespace) -> int:
    from phagoflow.embedded.train import train_model

    _, cip_params = common.settings_cip(args.cip_params)
    from phagoflow.core.inference import default_model_dir

    labels: str | Path = "cip" if args.labels == "cip" else Path(args.labels)
    init = None if args.init is None else Path(args.init)
    if args.init == "default":
        init = default_model_dir()
    try:
        result = train_model(
            args.exports,
            args.out,
            labels=labels,
            config=_training_config(args),
            truth=args.truth,
            init=init,
            cip_params=cip_params,
            overwrite=args.overwrite,
            name=args.name,
            progress=common.progress(args),
            holdout=args.holdout,
            channel_roles=common.channel_roles(args),
        )
    except (ValueError, OSError) as exc:  # TrainingError, ModelDirError, PlateFormatError too
        return common.fail(exc)
    _print_training(result)
    return 0


def _print_training(result: TrainResult) -> None:
    history = result.card.training.get("history", [])
    best = history[result.best_epoch - 1] if history else {}
    print(
        f"model {result.card.name} {result.card.version}: {result.n_fields} fields, "
        f"best epoch {result.best_epoch}/{len(history)}, {result.training_time_s:.1f} s training"
    )
    if result.holdout:
        print(f"  {len(result.holdout)} field(s) held out (training.split.holdout in card.json)")
    for key, label in (("val_miou_weak", "labels"), ("val_miou_truth", "truth")):
        if best.get(key) is not None:
            print(f"  validation mean IoU vs {label}: {best[key]:.3f}")
    for warning in result.card.training.get("warnings", []):
        print(f"  WARNING: {warning}", file=sys.stderr)
    print(f"  written to {result.model_dir}")
