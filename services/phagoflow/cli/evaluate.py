"""``phagoflow evaluate``: methods scored on a plate against true masks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phagoflow.cli import common

if TYPE_CHECKING:
    from phagoflow.embedded.evaluate import EvaluationReport


HELP = "score methods on a plate against true masks (paper Table 1 + count errors)"
DESCRIPTION = """
Segment every field that has a truth mask with each method and score it: accuracy, precision,
recall, specificity, IoU, BF score (global/mean/weighted, per class), confusion matrix, box
detection surrogate, and the per-well count error (MAE, mean relative error) against the truth
masks counted with the same code. All methods are scored on the same fields; a field missing for
one is skipped for all. A truth or mask file of the wrong shape stops the evaluation with its name.
"""


def add_parser(sub: Any) -> None:
    """Add ``evaluate`` to the ``phagoflow`` sub-parsers ``sub``."""
    p = common.command(sub, "evaluate", _cmd_evaluate, help=HELP, description=DESCRIPTION)
    common.add_export_argument(p)
    p.add_argument(
        "--truth",
        type=Path,
        required=True,
        metavar="DIR",
        help="true masks rRRcCCfFFpPP.tiff (or one sub-folder per plate id), e.g. OUT/truth",
    )
    _add_method_options(p)
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write all results")
    p.add_argument("--figure", type=Path, default=None, metavar="FILE", help="write a PNG figure")
    common.add_cip_params_option(p, "JSON file with CIP parameters for cip")
    common.add_backend_option(p)
    p.add_argument(
        "--bf-tolerance",
        type=float,
        default=None,
        metavar="PX",
        help="BF score tolerance in pixels (default 0.75%% of the field diagonal, as MATLAB)",
    )
    common.add_channel_role_option(p)


def _add_method_options(p: argparse.ArgumentParser) -> None:
    """What is scored: ``--methods``, ``--model``, ``--masks``, ``--unet``, ``--held-out-by``."""
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated: cip, cdl, all or none (default cip; none when --masks or --unet "
        "is given)",
    )
    common.add_model_option(p, "U-Net model folder for cdl (default: packaged)")
    p.add_argument(
        "--masks",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        help=(
            "also score a folder of masks rRRcCCfFFpPP.tiff (repeatable); named NAME, else by "
            "the folder's last two path parts (e.g. masks/cip)"
        ),
    )
    p.add_argument(
        "--unet",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also segment with this U-Net model folder, scored as NAME (repeatable), e.g. "
        "mdl=models/mdl-1 next to --methods cip,cdl",
    )
    p.add_argument(
        "--held-out-by",
        type=Path,
        default=None,
        metavar="MODEL_DIR",
        help="evaluate only the fields MODEL_DIR's card held out of training "
        "(`phagoflow train --holdout F`; training.split.holdout)",
    )


def _methods(args: argparse.Namespace) -> list[str]:
    """``--methods`` as a list: cip unless masks or U-Nets are given; all and none expanded."""
    if args.methods is None:
        return [] if args.masks or args.unet else ["cip"]
    items = [m.strip() for m in args.methods.split(",") if m.strip()]
    return ["cip", "cdl"] if items == ["all"] else [] if items == ["none"] else items


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from phagoflow.core.evaluation import EvaluationConfig
    from phagoflow.embedded.evaluate import evaluate_plate, parse_mask_source

    settings, cip_params = common.settings_cip(args.cip_params)
    methods = _methods(args)
    try:
        report = evaluate_plate(
            args.export,
            args.truth,
            methods=methods,
            masks=[parse_mask_source(m) for m in args.masks],
            unets=[parse_mask_source(u) for u in args.unet],
            held_out_by=args.held_out_by,
            model_dir=args.model or settings.model_dir,
            cip_params=cip_params,
            backend=args.backend or settings.inference_backend,
            batch_size=settings.inference_batch_size,
            threads=settings.inference_threads,
            config=EvaluationConfig(bf_tolerance_px=args.bf_tolerance),
            progress=common.progress(args),
            channel_roles=common.channel_roles(args),
        )
        _print_evaluation(report)
        _write_outputs(args, report)
    except (ValueError, OSError) as exc:  # ModelDirError, PlateFormatError are ValueErrors
        return common.fail(exc)
    return 0


def _print_evaluation(report: EvaluationReport) -> None:
    from phagoflow.core.evaluation import format_table
    from phagoflow.embedded.evaluate import format_count_errors

    print(format_table(report.results))
    print(format_count_errors(report))
    print(
        f"plate {report.catalogue.plate_id}: {len(report.fields)} field(s) evaluated, "
        f"{len(report.skipped)} skipped, {report.seconds:.1f} s"
    )
    for s in report.skipped:
        print(f"  SKIPPED {s['field']}: {s['reason']}")
    if report.held_out_by is not None:
        h = report.held_out_by
        print(
            f"  held out of training by {h['model_dir']} ({h['name']} {h['version']}): "
            f"{len(report.fields)} field(s) evaluated ({h['on_plate']} of its "
            f"{h['holdout_fields']} held-out field(s) are on this plate): "
            f"{', '.join(report.fields)}"
        )


def _write_outputs(args: argparse.Namespace, report: EvaluationReport) -> None:
    if args.json is not None:
        print(f"json:   {report.write_json(args.json)}")
    if args.figure is not None:
        from phagoflow.reporting.evaluation_figure import plot_evaluation

        print(f"figure: {plot_evaluation(report.results, args.figure)}")
