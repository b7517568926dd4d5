"""The ``phagoflow`` command line.

:func:`get_arg_parser` stands alone (so docs can render it); :func:`main` only dispatches to the
``_cmd_*`` functions, which import what they need lazily so ``phagoflow --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

    from phagoflow.core.counting import WellSummary
    from phagoflow.embedded.run import RunResult

__all__ = ["get_arg_parser", "main"]

logger = logging.getLogger("phagoflow")


def get_arg_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one sub-command per task."""
    parser = argparse.ArgumentParser(
        prog="phagoflow",
        description=(
            "Opera autophagy (Rosella) screening plates to per-well phagophore and "
            "autolysosome counts."
        ),
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bar")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # simulate ------------------------------------------------------------------------
    p = sub.add_parser(
        "simulate",
        help="write a simulated Rosella plate export with ground truth",
        description=(
            "Simulate a Rosella plate as an Opera export (OUT/Images/...) plus ground-truth masks "
            "OUT/truth/rRRcCCfFFpPP.tiff (0 background, 1 phagophore, 2 autolysosome) and true "
            "per-field counts OUT/truth/counts.csv. Deterministic for a given seed."
        ),
    )
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--wells", type=int, default=8, help="number of wells (default 8)")
    p.add_argument("--fields", type=int, default=4, help="fields per well (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--plate", default=None, help="plate id (default SIM<seed>)")
    p.add_argument(
        "--format",
        default="harmony5",
        choices=("harmony4", "harmony5", "harmony6", "harmony7", "flex"),
        help="export format (default harmony5: Index.idx.xml + TIFFs)",
    )
    p.add_argument(
        "--preset",
        default="normal",
        choices=("normal", "harder"),
        help="acquisition preset: normal, or harder (dimmer, uneven expression, more vignetting)",
    )
    g = p.add_argument_group("cells and screens")
    g.add_argument(
        "--nuclear",
        action="store_true",
        help="add a Hoechst 33342 channel of the true nuclei (Harmony formats; per-cell readouts)",
    )
    g.add_argument(
        "--screen",
        action="store_true",
        help="write OUT/plate_map.csv: negative controls in the first wells (column by column), "
        "positive controls in the last, the rest samples, some of them planted hits",
    )
    g.add_argument(
        "--effect",
        type=float,
        default=None,
        metavar="F",
        help="with --screen: phagophore-rate factor of positive controls and planted hits (3)",
    )
    g.add_argument(
        "--planted", type=int, default=None, metavar="N", help="with --screen: planted hits (1)"
    )
    g.add_argument(
        "--controls",
        type=int,
        default=None,
        metavar="N",
        help="with --screen: negative and positive control wells, N of each (3)",
    )
    g.add_argument(
        "--doses",
        default=None,
        metavar="C1,C2,...",
        help="with --screen: a dose series of compound DOSE-1 at these µM (EC50 1 µM)",
    )
    g.add_argument(
        "--well-sigma",
        type=float,
        default=None,
        metavar="S",
        help="log-normal s.d. of the per-well autophagy level (default 0.35)",
    )
    g.add_argument(
        "--plate-gradient",
        type=float,
        default=None,
        metavar="G",
        help="extra autophagy across the columns, x (1 + G x) (default 1; 0 for a flat plate)",
    )
    p.set_defaults(func=_cmd_simulate)

    # run -----------------------------------------------------------------------------
    p = sub.add_parser(
        "run",
        help="process one plate export with no servers (masks, counts, report)",
        description=(
            "Segment every field of a plate export and write OUT/masks/<method>/*.tiff, "
            "OUT/objects.csv, OUT/wells.csv, OUT/plate_heatmap.png, OUT/report.html and "
            "OUT/run.json. Each mask records what made it; re-running reuses a field's mask only "
            "when that record matches (parameters, model, version, source checksums), so an "
            "interrupted run resumes where it stopped. Exit status: 0 every field succeeded, "
            "4 finished with failed fields, 1 could not run, 2 usage error, 130 interrupted "
            "(Ctrl-C; 143 on SIGTERM)."
        ),
    )
    p.add_argument("export", type=Path, help="export folder (holding the index, or its parent)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--method",
        default="cip",
        choices=("cip", "cdl", "all"),
        help="cip (conventional pipeline), cdl (U-Net), or all (default cip)",
    )
    p.add_argument(
        "--model", type=Path, default=None, help="U-Net model folder (default: packaged)"
    )
    p.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        metavar="N",
        help="worker processes, at least 1 (default PHAGOFLOW_WORKERS, else 1)",
    )
    p.add_argument(
        "--cip-params",
        type=Path,
        default=None,
        help="JSON file with CIP parameters (overrides PHAGOFLOW_CIP__* settings)",
    )
    p.add_argument(
        "--backend", choices=("onnxruntime", "torch"), default=None, help="U-Net backend"
    )
    p.add_argument(
        "--plate-map",
        type=Path,
        default=None,
        metavar="FILE.csv",
        help="plate map (well, role, condition, compound, concentration, unit): plate "
        "statistics (Z′, robust z, hits, dose response) in plate_stats.csv, hits.csv, "
        "dose_response.csv; needs >= 2 imaged negative and positive control wells",
    )
    p.add_argument(
        "--ome-zarr",
        action="store_true",
        help="also write OUT/<plate>.ome.zarr: an OME-Zarr 0.5 HCS plate with the images, "
        "the masks as label images and the well table",
    )
    _add_channel_role_option(p)
    p.set_defaults(func=_cmd_run)

    # train ---------------------------------------------------------------------------
    p = sub.add_parser(
        "train",
        help="train a U-Net model folder on plate exports (CIP weak labels or curated masks)",
        description=(
            "Train the U-Net on every field of one or more plate exports and write MODEL_DIR/"
            "model.pt, model.onnx and card.json (architecture, normalisation, checksums, training "
            "parameters, metrics per epoch, seed, data checksums, package versions). Labels: "
            "'cip' (default) = CIP weak labels, cached in $PHAGOFLOW_CACHE_DIR (CDL); or a folder "
            "of masks rRRcCCfFFpPP.tiff, optionally one sub-folder per plate id (MDL; write "
            "./cip for a folder named cip). Defaults follow the paper (SGD, 15 epochs, "
            "256-px patches); flags override --config, which overrides the defaults."
        ),
    )
    p.add_argument("exports", nargs="+", type=Path, metavar="EXPORT", help="plate export(s)")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR", help="model folder")
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
    g.add_argument("--epochs", type=int, default=None, help="maximum epochs (15)")
    g.add_argument("--seed", type=int, default=None, help="split, patches and weights seed (0)")
    g.add_argument(
        "--val-fraction", type=float, default=None, help="fraction of fields held out (0.10)"
    )
    g.add_argument("--base-channels", type=int, default=None, help="U-Net width (8)")
    g.add_argument("--patches-per-epoch", type=int, default=None, help="patches per epoch (512)")
    g.add_argument("--patch-size", type=int, default=None, help="patch side, pixels (256)")
    g.add_argument("--batch-size", type=int, default=None, help="patches per step (4)")
    g.add_argument("--learning-rate", type=float, default=None, help="initial rate (2e-3)")
    g.add_argument("--optimizer", choices=("sgd", "adam"), default=None, help="(sgd)")
    g.add_argument(
        "--early-stopping",
        type=int,
        default=None,
        metavar="N",
        help="stop after N epochs without improvement (off)",
    )
    g.add_argument("--select-by", choices=("val_loss", "val_miou"), default=None, help="(val_loss)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--device", default=None, help="torch device (cpu)")
    p.add_argument(
        "--cip-params",
        type=Path,
        default=None,
        help="JSON file with CIP parameters for the weak labels",
    )
    p.add_argument("--name", default="phagoflow-unet", help="model name in the card")
    p.add_argument("--overwrite", action="store_true", help="replace a model in MODEL_DIR")
    _add_channel_role_option(p)
    p.set_defaults(func=_cmd_train)

    # evaluate ------------------------------------------------------------------------
    p = sub.add_parser(
        "evaluate",
        help="score methods on a plate against true masks (paper Table 1 + count errors)",
        description=(
            "Segment every field that has a truth mask with each method and score it: accuracy, "
            "precision, recall, specificity, IoU, BF score (global/mean/weighted, per class), "
            "confusion matrix, box detection surrogate, and the per-well count error (MAE, mean "
            "relative error) against the truth masks counted with the same code. All methods "
            "are scored on the same fields; a field missing for one is skipped for all. A "
            "truth or mask file of the wrong shape stops the evaluation with its name."
        ),
    )
    p.add_argument("export", type=Path, help="export folder (holding the index, or its parent)")
    p.add_argument(
        "--truth",
        type=Path,
        required=True,
        metavar="DIR",
        help="true masks rRRcCCfFFpPP.tiff (or one sub-folder per plate id), e.g. OUT/truth",
    )
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated: cip, cdl, all or none (default cip; none when --masks or --unet "
        "is given)",
    )
    p.add_argument(
        "--model", type=Path, default=None, help="U-Net model folder for cdl (default: packaged)"
    )
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
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write all results")
    p.add_argument("--figure", type=Path, default=None, metavar="FILE", help="write a PNG figure")
    p.add_argument(
        "--cip-params", type=Path, default=None, help="JSON file with CIP parameters for cip"
    )
    p.add_argument(
        "--backend", choices=("onnxruntime", "torch"), default=None, help="U-Net backend"
    )
    p.add_argument(
        "--bf-tolerance",
        type=float,
        default=None,
        metavar="PX",
        help="BF score tolerance in pixels (default 0.75%% of the field diagonal, as MATLAB)",
    )
    _add_channel_role_option(p)
    p.set_defaults(func=_cmd_evaluate)

    # info / check --------------------------------------------------------------------
    p = sub.add_parser(
        "info",
        help="print the catalogue of a plate export (wells, fields, channels, problems)",
        description="Read a Harmony or .flex export and print its catalogue as JSON.",
    )
    p.add_argument("export", type=Path)
    _add_channel_role_option(p)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "check",
        help="is a plate export complete? (exit 0 if complete, 3 if not)",
        description=(
            "Apply the completeness rule: the index parses, its Image count fills the plate's "
            "grid, every acquired image is a whole TIFF inside the export (valid header, every "
            "strip or tile present; compressed TIFFs included), and nothing changed for "
            "--quiet-seconds. Also says which channels play the DsRed and pHluorin roles "
            "(informational: the exit status is about completeness only)."
        ),
    )
    p.add_argument("export", type=Path)
    p.add_argument("--quiet-seconds", type=float, default=60.0, help="quiet period (default 60)")
    _add_channel_role_option(p)
    p.set_defaults(func=_cmd_check)

    # review / rating (issue 6) -------------------------------------------------------
    p = sub.add_parser(
        "review",
        help="web app to review and correct masks of a results folder, and blind rating",
        description=(
            "Serve the review app for RESULTS_DIR (written by `phagoflow run --method all`): "
            "plate heat-map, fields by CIP-vs-CDL disagreement, mask viewer and correction "
            "tools; curated masks go to RESULTS_DIR/curated/, ratings to RESULTS_DIR/ratings/. "
            "With --s3 PLATE instead, the plate comes from the streaming stack's object store "
            "(PHAGOFLOW_S3_ENDPOINT, PHAGOFLOW_BUCKET, ...) and curated masks go back to it "
            "under curated/PLATE/. Writes need the token PHAGOFLOW_REVIEW_TOKEN (generated and "
            "printed if unset)."
        ),
    )
    p.add_argument("results", type=Path, nargs="?", metavar="RESULTS_DIR", help="results folder")
    p.add_argument(
        "--s3",
        default=None,
        metavar="PLATE",
        help="review plate PLATE of the object store instead of a results folder",
    )
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--export", type=Path, default=None, help="plate export, if it moved since the run"
    )
    p.set_defaults(func=_cmd_review)

    p = sub.add_parser("rating", help="blind-rating reports (see `phagoflow review`)")
    rating_sub = p.add_subparsers(dest="rating_command", metavar="ACTION", required=True)
    p = rating_sub.add_parser(
        "report",
        help="per-rater score distributions (PNG), mean scores, KS test per rater",
        description=(
            "Read RESULTS_DIR/ratings/*.jsonl and write report.json and report.png (per-rater "
            "score histograms per method, two-sample Kolmogorov-Smirnov test per rater)."
        ),
    )
    p.add_argument("results", type=Path, metavar="RESULTS_DIR", help="results folder")
    p.add_argument("--out", type=Path, default=None, help="output folder (RESULTS_DIR/ratings)")
    p.set_defaults(func=_cmd_rating_report)

    p = sub.add_parser("curation", help="correction-time reports (see `phagoflow review`)")
    curation_sub = p.add_subparsers(dest="curation_command", metavar="ACTION", required=True)
    p = curation_sub.add_parser(
        "report",
        help="fields curated and the minutes of correction they took",
        description=(
            "Sum the correction time recorded with each curated mask (RESULTS_DIR/curated/*.json, "
            "or curated/PLATE/ in the object store with --s3): fields curated and timed, total, "
            "median and mean minutes per field, edit operations, per user."
        ),
    )
    p.add_argument("results", type=Path, nargs="?", metavar="RESULTS_DIR", help="results folder")
    p.add_argument("--s3", default=None, metavar="PLATE", help="plate of the object store")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=_cmd_curation_report)

    # serve (issue 4) -------------------------------------------------------------------
    p = sub.add_parser(
        "serve",
        help="run a streaming service (ingest, cip, inference, metrics, review) until SIGTERM",
        description=(
            "Run one streaming service; settings come from PHAGOFLOW_* environment variables "
            "(see docs/streaming.md): PHAGOFLOW_KAFKA_BOOTSTRAP, PHAGOFLOW_S3_ENDPOINT, "
            "PHAGOFLOW_BUCKET, PHAGOFLOW_WATCH_DIR, PHAGOFLOW_METRICS_PORT, ..."
        ),
    )
    p.add_argument(
        "service",
        choices=("ingest", "cip", "inference", "metrics", "review"),
        help="service to run (review: the review app on PHAGOFLOW_REVIEW_PLATE of the store)",
    )
    p.set_defaults(func=_cmd_serve)

    # stack (issue 4) -------------------------------------------------------------------
    p = sub.add_parser(
        "stack",
        help="start, stop or inspect the local full stack (Kafka, S3, Triton, services)",
        description=(
            "up: start tansu, the S3 server, Triton (when a model is available), Prometheus (when "
            "installed) and the services on loopback, detached, and print the endpoints; down: "
            "stop them; status: which are alive and ready. State and logs in var/stack."
        ),
    )
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.set_defaults(func=_cmd_stack)

    # model registry and GPU training jobs (issue 5; parsers and handlers in their packages) --
    from phagoflow.k8s.cli import add_train_job_commands
    from phagoflow.registry.cli import add_model_commands

    add_model_commands(sub)
    add_train_job_commands(sub)

    return parser


def _add_channel_role_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--channel-role",
        action="append",
        default=[],
        metavar="NAME=ROLE",
        help="set a channel's role: NAME is a channel name or id, ROLE dsred, phluorin, both "
        "(one channel stands in for both) or none, e.g. 'Alexa 568=dsred' (repeatable; default: "
        "from the wavelengths, else the names, in the index; env PHAGOFLOW_CHANNEL_ROLES)",
    )


def _channel_roles(args: argparse.Namespace) -> dict[str, str] | None:
    """The ``--channel-role`` items, else ``PHAGOFLOW_CHANNEL_ROLES``; ``None`` when neither."""
    from pydantic import ValidationError

    from phagoflow.core.opera import parse_channel_roles
    from phagoflow.settings import RunSettings

    try:
        if args.channel_role:
            return parse_channel_roles(args.channel_role)
        return dict(RunSettings().channel_roles) or None
    except ValidationError as exc:  # any bad PHAGOFLOW_* value, named as such
        raise SystemExit(f"phagoflow: {_settings_message(exc)}") from None
    except ValueError as exc:
        raise SystemExit(f"phagoflow: --channel-role: {exc}") from None


# ----------------------------------------------------------------------------- handlers
def _settings_cip(path: Path | None):  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from phagoflow.core.cip import CipParameters
    from phagoflow.settings import RunSettings

    settings = RunSettings()
    if path is None:
        return settings, settings.cip
    try:
        return settings, CipParameters.model_validate_json(path.read_text())
    except ValidationError as exc:
        bad = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"phagoflow: cannot use CIP parameters from {path}: {bad}") from None
    except (OSError, ValueError) as exc:
        raise SystemExit(f"phagoflow: cannot use CIP parameters from {path}: {exc}") from None


def _simulation_options(args: argparse.Namespace) -> dict[str, Any]:
    """``simulate_plate`` keywords from the simulate flags (pydantic checks the values)."""
    from phagoflow.core.simulate import NuclearStainParameters, ScreenDesign, SimulationParameters

    update = {
        k: v
        for k, v in (("well_level_sigma", args.well_sigma), ("plate_gradient", args.plate_gradient))
        if v is not None
    }
    params = SimulationParameters.preset(args.preset)
    if update:
        params = SimulationParameters.model_validate(params.model_dump() | update)
    screen_flags = (args.effect, args.planted, args.controls, args.doses)
    if not args.screen and any(v is not None for v in screen_flags):
        raise ValueError("--effect, --planted, --controls and --doses need --screen")
    design = None
    if args.screen:
        design_kw: dict[str, Any] = {"effect": args.effect, "n_planted": args.planted}
        if args.controls is not None:
            design_kw |= {"n_negative": args.controls, "n_positive": args.controls}
        if args.doses:
            design_kw["dose_concentrations_um"] = tuple(float(c) for c in args.doses.split(","))
        design = ScreenDesign(**{k: v for k, v in design_kw.items() if v is not None})
    return {
        "params": params,
        "nuclear": NuclearStainParameters() if args.nuclear else None,
        "screen": design,
    }


def _cmd_simulate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from phagoflow.core.simulate import simulate_plate

    try:
        plate = simulate_plate(
            args.out,
            wells=args.wells,
            fields=args.fields,
            seed=args.seed,
            plate_id=args.plate,
            export_format=args.format,
            progress=not args.quiet,
            **_simulation_options(args),
        )
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _fail(ValueError(f"simulate: {bad}"))
    except ValueError as exc:
        return _fail(exc)
    print(f"simulated plate {plate.plate_id}: {plate.n_fields} fields")
    print(f"  export: {plate.export_dir}")
    print(f"  truth:  {plate.truth_dir} (counts: {plate.counts_csv})")
    if plate.plate_map is not None:
        print(f"  plate map: {plate.plate_map}")
        from phagoflow.embedded.screen import planted_wells

        planted = planted_wells(plate.truth_dir / "wells.csv")
        print(f"  planted hits: {' '.join(planted) or 'none'}")
    return 0


#: Exit statuses of ``phagoflow run`` (README, "Exit statuses"); interrupted is 128 + signal.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED_FIELDS = 0, 1, 2, 4


def _worker_count(text: str) -> int:
    """argparse type of ``--workers``: a whole number of at least 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return n


def _settings_message(exc: ValidationError) -> str:
    """One line naming each bad ``PHAGOFLOW_*`` variable, its value and what is wrong."""
    parts = []
    for err in exc.errors():
        name = "PHAGOFLOW_" + "__".join(str(part) for part in err["loc"]).upper()
        parts.append(f"{name}={err.get('input')!r}: {err['msg']}")
    return "invalid setting " + "; ".join(parts)


class _StopSignals:
    """While active, SIGINT and SIGTERM raise ``KeyboardInterrupt``; remembers which came.

    A signal the parent process set to be ignored (a background job's SIGINT) stays ignored.
    """

    def __init__(self) -> None:
        self.signum = signal.SIGINT
        self._previous: dict[int, Any] = {}

    def _raise(self, signum: int, frame: object) -> None:
        self.signum = signal.Signals(signum)
        raise KeyboardInterrupt

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._raise)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def exit_status(self) -> int:
        return 128 + int(self.signum)


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except KeyboardInterrupt:  # while importing, before the run's own handling starts
        print("phagoflow: interrupted before the run started; nothing written", file=sys.stderr)
        return 128 + signal.SIGINT


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from phagoflow.embedded.run import RunError, run_plate

    try:
        settings, cip_params = _settings_cip(args.cip_params)
    except ValidationError as exc:
        return _fail(ValueError(_settings_message(exc)))
    with _StopSignals() as stop:
        try:
            result = run_plate(
                args.export,
                args.out,
                methods=("cip", "cdl") if args.method == "all" else (args.method,),
                model_dir=args.model or settings.model_dir,
                workers=args.workers if args.workers is not None else settings.workers,
                cip_params=cip_params,
                backend=args.backend or settings.inference_backend,
                batch_size=settings.inference_batch_size,
                threads=settings.inference_threads,
                overlays=settings.overlays,
                progress=not args.quiet,
                channel_roles=_channel_roles(args),
                plate_map=args.plate_map,
                ome_zarr=args.ome_zarr,
                cell_readouts=settings.cell_readouts,
                cell_params=settings.cells,
                screening=settings.screening,
            )
        except KeyboardInterrupt:
            print(
                f"phagoflow: interrupted ({stop.signum.name}); the fields finished so far are kept "
                f"in {args.out} and a re-run resumes from them",
                file=sys.stderr,
            )
            return stop.exit_status
        except (RunError, OSError, ValueError) as exc:  # PlateFormatError, ModelDirError too
            return _fail(exc)
    _print_run(result)
    if result.interrupted:
        return stop.exit_status
    return EXIT_FAILED_FIELDS if result.failures else EXIT_OK


def _field_text(name: str) -> str:
    """A field for people, its file name after it: ``"B03 field 1 (r02c03f01p01)"``; anything
    that is not a field name (a file path) as it is."""
    from phagoflow.core.opera.catalogue import FieldKey

    try:
        return f"{FieldKey.parse(name).label} ({name})"
    except ValueError:
        return name


def _print_run(result: RunResult) -> None:
    _print_wells(result.wells)
    _print_screen(result)
    print(
        f"\nplate {result.catalogue.plate_id}: {result.fields_done}/{result.fields_total} fields "
        f"in {result.seconds:.1f} s, {len(result.failures)} failure(s); {result.status}"
    )
    for f in result.failures:
        where = f" ({f['path']})" if f["path"] and f["path"] not in f["reason"] else ""
        print(f"  FAILED {_field_text(f['field'] or f['path'])} ", end="")
        print(f"[{f['method']}, {f['stage']}]{where}: ", end="")
        print(f["reason"])
    if result.interrupted:
        print("  INTERRUPTED: re-run the same command to resume from the finished fields")
    print(f"report: {result.out_dir / 'report.html'}")
    print(f"wells:  {result.out_dir / 'wells.csv'}")
    if result.screen is not None:
        print(f"hits:   {result.out_dir / 'hits.csv'} (Z′: {result.out_dir / 'plate_stats.csv'})")
    if result.ome_zarr is not None:
        print(f"OME-Zarr: {result.ome_zarr}")


def _print_screen(result: RunResult) -> None:
    """Z′ and the hits of the hit readout, per method."""
    import math

    from phagoflow.core.counting import readout_label

    screen = result.screen
    if screen is None:
        return
    p = screen.params
    print(f"\nplate statistics: hits by robust z of {readout_label(screen.hit_readout).lower()}")
    for s in screen.hit_statistics:
        zp = f"{s.z_prime:.2f}" if math.isfinite(s.z_prime) else "n/a"
        verdict = "acceptable" if s.z_prime_acceptable else "below"
        hits = ", ".join(f"{w.well} (z {w.robust_z:.1f})" for w in s.hits) or "none"
        print(f"  {s.method.upper()}: Z′ = {zp} ({verdict} {p.z_prime_acceptable:g}); hits: {hits}")


def _print_wells(wells: Sequence[WellSummary]) -> None:
    header = (
        f"{'well':<7} {'method':<6} {'fields ok':>9} {'phagophores':>12} {'autolysosomes':>14}"
        f" {'per field':>13}"
    )
    print(header)
    print("-" * len(header))
    from phagoflow.core.wells import to_display

    for w in wells:
        row = w.as_row()
        ph, al = ("-" if row[k] is None else row[k] for k in ("phagophores", "autolysosomes"))
        means = (
            f"{w.phagophores_per_field_mean:.1f}/{w.autolysosomes_per_field_mean:.1f}"
            if w.fields_ok
            else "-"
        )
        flag = "  <- fields failed" if w.fields_failed else ""
        print(
            f"{to_display(w.well):<7} {w.method:<6} {f'{w.fields_ok}/{w.fields}':>9} {ph:>12} "
            f"{al:>14} "
            f"{means:>13}{flag}"
        )


def _fail(exc: BaseException) -> int:
    """Print ``phagoflow: <message>`` on stderr (traceback only with -v) and return 1."""
    logger.debug("details", exc_info=exc)
    print(f"phagoflow: {exc}", file=sys.stderr)
    return 1


_TRAIN_FLAGS = (
    "epochs",
    "seed",
    "val_fraction",
    "base_channels",
    "patches_per_epoch",
    "patch_size",
    "batch_size",
    "learning_rate",
    "optimizer",
    "select_by",
    "device",
)


def _cmd_train(args: argparse.Namespace) -> int:
    from phagoflow.core.training import TrainingConfig
    from phagoflow.embedded.train import train_model

    _, cip_params = _settings_cip(args.cip_params)
    from phagoflow.core.inference import default_model_dir

    labels: str | Path = "cip" if args.labels == "cip" else Path(args.labels)
    init = None if args.init is None else Path(args.init)
    if args.init == "default":
        init = default_model_dir()
    try:
        from phagoflow.core.training import TRAINING_PRESETS

        from_file = json.loads(args.config.read_text()) if args.config is not None else {}
        if not isinstance(from_file, dict):
            raise ValueError(f"{args.config} must hold a JSON object of TrainingConfig fields")
        fields = {**TRAINING_PRESETS[args.preset], **from_file}
        fields.update({k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None})
        if args.early_stopping is not None:
            fields["early_stopping_patience"] = args.early_stopping
        if args.threads is not None:
            fields["num_threads"] = args.threads
        config = TrainingConfig.model_validate(fields)
        result = train_model(
            args.exports,
            args.out,
            labels=labels,
            config=config,
            truth=args.truth,
            init=init,
            cip_params=cip_params,
            overwrite=args.overwrite,
            name=args.name,
            progress=not args.quiet,
            holdout=args.holdout,
            channel_roles=_channel_roles(args),
        )
    except (ValueError, OSError) as exc:  # TrainingError, ModelDirError, PlateFormatError too
        return _fail(exc)
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
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from phagoflow.core.evaluation import EvaluationConfig, format_table
    from phagoflow.embedded.evaluate import (
        evaluate_plate,
        format_count_errors,
        parse_mask_source,
    )

    settings, cip_params = _settings_cip(args.cip_params)
    if args.methods is None:
        methods: list[str] = [] if args.masks or args.unet else ["cip"]
    else:
        items = [m.strip() for m in args.methods.split(",") if m.strip()]
        methods = ["cip", "cdl"] if items == ["all"] else [] if items == ["none"] else items
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
            progress=not args.quiet,
            channel_roles=_channel_roles(args),
        )
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
        if args.json is not None:
            print(f"json:   {report.write_json(args.json)}")
        if args.figure is not None:
            from phagoflow.reporting.evaluation_figure import plot_evaluation

            print(f"figure: {plot_evaluation(report.results, args.figure)}")
    except (ValueError, OSError) as exc:  # ModelDirError, PlateFormatError are ValueErrors
        return _fail(exc)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    """Print the catalogue as JSON; exit 1 (after printing it) when roles cannot be assigned."""
    import math

    from phagoflow.core.opera import read_plate

    cat = read_plate(args.export, channel_roles=_channel_roles(args), strict_roles=False)
    pixel = None if math.isnan(cat.pixel_size_um) else cat.pixel_size_um
    doc = {
        "plate_id": cat.plate_id,
        "measurement_id": cat.measurement_id,
        "format": cat.format_version,
        "index": str(cat.index_path),
        "plate": f"{cat.plate_rows} x {cat.plate_columns}",
        "wells": list(cat.wells),
        "fields": len(cat.fields),
        "images_declared": cat.declared_images,
        "images_expected": cat.expected_images,
        "size_yx": list(cat.size_yx),
        "pixel_size_um": pixel,
        "channels": [c.as_record() for c in cat.channels],
        "channel_roles_error": cat.role_error,
        "problems": [
            {"field": p.key.name if p.key else None, "path": p.path, "reason": p.reason}
            for p in cat.problems
        ],
    }
    print(json.dumps(doc, indent=2))
    if cat.role_error is not None:
        print(f"phagoflow: {cat.role_error}", file=sys.stderr)
        return 1
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from phagoflow.core.opera import check_complete, parse_index
    from phagoflow.core.opera.catalogue import PlateFormatError
    from phagoflow.core.opera.roles import assign_roles

    report = check_complete(args.export, quiet_seconds=args.quiet_seconds)
    print("complete" if report.complete else "incomplete")
    for reason in report.reasons:
        print(f"  {reason}")
    if report.index_path is not None:
        try:
            index = parse_index(args.export)
            channels = assign_roles(
                index.channel_names,
                index.index_path,
                channel_roles=_channel_roles(args),
                wavelengths=index.channel_wavelengths,
            )
        except PlateFormatError as exc:
            print(f"channel roles: cannot be assigned: {exc}")
        else:
            for c in channels:
                if c.roles:
                    print(f"channel roles: {c.role_label} = {c.name!r} ({c.role_source})")
    return 0 if report.complete else 3


def _cmd_review(args: argparse.Namespace) -> int:
    if (args.results is None) == (args.s3 is None):
        return _fail(ValueError("give either RESULTS_DIR or --s3 PLATE"))
    try:
        from phagoflow.review.app import run_app, serve
    except ImportError as exc:  # fastapi/uvicorn are optional (the review extra)
        hint = "install the web app with `pip install phagoflow[review]`"
        return _fail(ImportError(f"{exc}; {hint}"))
    from phagoflow.review.results import ResultsError

    try:
        if args.s3 is None:
            serve(args.results, host=args.host, port=args.port, export=args.export)
        else:
            from phagoflow.review.store import ReviewServiceSettings, open_store_results

            results = open_store_results(ReviewServiceSettings(), args.s3)
            run_app(results, host=args.host, port=args.port)
    except ResultsError as exc:
        return _fail(exc)
    return 0


def _cmd_curation_report(args: argparse.Namespace) -> int:
    from phagoflow.review.curation import (
        curation_report,
        format_curation_report,
        read_curated_sidecars,
    )
    from phagoflow.review.results import ResultsError

    if (args.results is None) == (args.s3 is None):
        return _fail(ValueError("give either RESULTS_DIR or --s3 PLATE"))
    if args.s3 is None:
        if not args.results.is_dir():
            return _fail(ValueError(f"{args.results} is not a folder"))
        docs = read_curated_sidecars(args.results / "curated")
    else:
        from phagoflow.review.store import ReviewServiceSettings, read_store_provenances

        try:
            docs = read_store_provenances(ReviewServiceSettings(), args.s3)
        except ResultsError as exc:
            return _fail(exc)
    report = curation_report(docs)
    print(json.dumps(report, indent=2) if args.json else format_curation_report(report))
    return 0


def _cmd_rating_report(args: argparse.Namespace) -> int:
    from phagoflow.review.rating import (
        format_rating_report,
        rating_report,
        read_ratings,
        write_rating_report,
    )

    if not ((args.results / "run.json").is_file() or (args.results / "ratings").is_dir()):
        return _fail(
            ValueError(f"{args.results} is not a results folder (no run.json, no ratings/)")
        )
    out = write_rating_report(args.results, args.out)
    print(format_rating_report(rating_report(read_ratings(args.results))))
    print(f"report: {out / 'report.json'}, {out / 'report.png'}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.service == "review":
        from phagoflow.review.results import ResultsError
        from phagoflow.review.store import serve_review_service

        try:
            return serve_review_service()
        except ImportError as exc:  # fastapi/uvicorn are optional (the review extra)
            return _fail(ImportError(f"{exc}; install `pip install phagoflow[review]`"))
        except ResultsError as exc:
            return _fail(exc)
    from phagoflow.services import serve_service

    return serve_service(args.service)


def _cmd_stack(args: argparse.Namespace) -> int:
    from phagoflow.stack.local import stack_down, stack_status, stack_up
    from phagoflow.stack.process import StackError

    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        if args.action == "up":
            stack_up()
        elif args.action == "down":
            stack_down()
        else:
            status = stack_status()
            if args.json:
                print(json.dumps(status, indent=2))
            else:
                for p in status["processes"]:
                    state = "ready" if p["ready"] else "running" if p["running"] else "down"
                    rss = f"{p['rss_mib']:7.1f} MiB" if p.get("rss_mib") is not None else " " * 11
                    print(f"{p['name']:<11} {state:<8} pid {p['pid']:<8} {rss}  {p['url']}")
                if not status["processes"]:
                    print("no local stack recorded (phagoflow stack up)")
            return 0 if status["up"] else 3
    except StackError as exc:
        print(f"phagoflow: {exc}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``phagoflow`` console script."""
    parser = get_arg_parser()
    args = parser.parse_args(argv)
    if args.version:
        from phagoflow import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from pydantic import ValidationError

        from phagoflow.core.model_dir import ModelDirError  # imports torch: seconds
        from phagoflow.core.opera.catalogue import PlateFormatError
    except KeyboardInterrupt:
        print("phagoflow: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    try:
        return int(args.func(args))
    except ValidationError as exc:  # a bad PHAGOFLOW_* value read by any command
        print(f"phagoflow: {_settings_message(exc)}", file=sys.stderr)
        return 1
    except (PlateFormatError, ModelDirError) as exc:
        print(f"phagoflow: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
