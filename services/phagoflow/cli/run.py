"""``phagoflow run``: one plate export to masks, counts and a report, with no servers."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phagoflow.cli import common

if TYPE_CHECKING:
    from phagoflow.core.counting import WellSummary
    from phagoflow.embedded.run import RunResult

__all__ = ["EXIT_ERROR", "EXIT_FAILED_FIELDS", "EXIT_OK", "EXIT_USAGE", "add_parser"]

#: Exit statuses of ``phagoflow run`` (README, "Exit statuses"); interrupted is 128 + signal.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED_FIELDS = 0, 1, 2, 4


HELP = "process one plate export with no servers (masks, counts, report)"
DESCRIPTION = """
Segment every field of a plate export and write OUT/masks/<method>/*.tiff, OUT/objects.csv,
OUT/wells.csv, OUT/plate_heatmap.png, OUT/report.html and OUT/run.json. Each mask records what made
it; re-running reuses a field's mask only when that record matches (parameters, model, version,
source checksums), so an interrupted run resumes where it stopped. Exit status: 0 every field
succeeded, 4 finished with failed fields, 1 could not run, 2 usage error, 130 interrupted (Ctrl-C;
143 on SIGTERM).
"""


def add_parser(sub: Any) -> None:
    """Add ``run`` to the ``phagoflow`` sub-parsers ``sub``."""
    p = common.command(sub, "run", _cmd_run, help=HELP, description=DESCRIPTION)
    common.add_export_argument(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--method",
        default="cip",
        choices=("cip", "cdl", "all"),
        help="cip (conventional pipeline), cdl (U-Net), or all (default cip)",
    )
    common.add_model_option(p, "U-Net model folder (default: packaged)")
    p.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        metavar="N",
        help="worker processes, at least 1 (default PHAGOFLOW_WORKERS, else 1)",
    )
    common.add_cip_params_option(
        p, "JSON file with CIP parameters (overrides PHAGOFLOW_CIP__* settings)"
    )
    common.add_backend_option(p)
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
    common.add_channel_role_option(p)


def _worker_count(text: str) -> int:
    """argparse type of ``--workers``: a whole number of at least 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return n


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
        settings, cip_params = common.settings_cip(args.cip_params)
    except ValidationError as exc:
        return common.fail(ValueError(common.settings_message(exc)))
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
                progress=common.progress(args),
                channel_roles=common.channel_roles(args),
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
            return common.fail(exc)
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
