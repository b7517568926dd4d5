"""``make e2e``: a simulated plate through the running local stack vs ``phagoflow run``.

Needs ``phagoflow stack up``. Simulates a plate, copies it into the watch folder field by field
(index first, then each field's channel files one field every ``--interval`` seconds, as a
microscope writes them), waits until the metrics API says ``complete: true``, then runs the
embedded runner on the same export and compares the per-well counts: CIP exactly, CDL exactly
(Triton runs the same ``model.onnx`` with the same ONNX Runtime; a float difference could flip
a pixel, so a mismatch is reported with its size). Exit status 0 when everything matches.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phagoflow.stack.feed import (
    PlateRun,
    RunningStack,
    copy_plate,
    get_json,
    running_stack,
    simulated_plate,
    wait_complete,
)

if TYPE_CHECKING:
    from phagoflow.core.counting import WellSummary

__all__ = ["main", "run_e2e"]


def run_e2e(
    *,
    wells: int = 4,
    fields: int = 2,
    seed: int = 11,
    interval_s: float = 1.0,
    timeout_s: float = 600.0,
) -> int:
    """Run the check against the stack recorded by ``phagoflow stack up``; returns 0 on success.

    Parameters
    ----------
    wells, fields, seed : int
        The simulated plate.
    interval_s : float
        Seconds between fields.
    timeout_s : float
        Seconds from the first file until the plate must be complete.

    Returns
    -------
    int
        0 when every per-well count equals ``phagoflow run``'s, 1 on a mismatch or when the
        plate did not complete in time, 2 when no stack is up.
    """
    from phagoflow.embedded.run import run_plate

    run = PlateRun(
        wells=wells, fields=fields, seed=seed, interval_s=interval_s, timeout_s=timeout_s
    )
    stack = running_stack()
    if stack is None:
        print("e2e: no local stack is up (make up / phagoflow stack up)", file=sys.stderr)
        return 2
    methods = tuple(stack.methods)
    with simulated_plate(run, "e2e") as (plate_id, sim, tmp):
        print(f"e2e: plate {plate_id}, {sim.n_fields} fields, methods {', '.join(methods)}")
        if not _stream(stack, run, plate_id, sim.export_dir):
            return 1
        _, rows = get_json(f"{stack.plate_url(plate_id)}/wells")
        ref = run_plate(
            sim.export_dir, tmp / "ref", methods=methods, model_dir=stack.model_dir, progress=False
        )
    return _compare(ref.wells, rows)


def _stream(stack: RunningStack, run: PlateRun, plate_id: str, export: Path) -> bool:
    """Copy the plate into the watch folder and wait until it is complete; False on a timeout."""
    started = time.monotonic()
    dest = stack.images_dir(plate_id)
    dest.mkdir(parents=True, exist_ok=True)
    _, n = copy_plate(export, dest, run.interval_s)
    copied = time.monotonic()
    complete, body = wait_complete(stack.plate_url(plate_id), started + run.timeout_s, 0.5)
    if not complete:
        print(f"e2e: plate not complete after {run.timeout_s:g} s: {body}", file=sys.stderr)
        return False
    done = time.monotonic()
    print(
        f"e2e: {n} fields copied in {copied - started:.1f} s; complete {done - started:.1f} s"
        f" after the first file ({done - copied:.1f} s after the last)"
    )
    return True


def _compare(reference: Sequence[WellSummary], rows: Sequence[dict[str, Any]]) -> int:
    """Print the stack's and the embedded runner's counts side by side; 0 when all are equal."""
    want = {(w.well, w.method): (w.fields, w.phagophores, w.autolysosomes) for w in reference}
    got = {
        (r["well"], r["method"]): (r["fields"], r["phagophores"], r["autolysosomes"]) for r in rows
    }
    failures = 0
    print(f"{'well':<8}{'method':<8}{'stack f/ph/au':>18}{'embedded f/ph/au':>20}")
    for key in sorted(set(want) | set(got)):
        ok = got.get(key) == want.get(key)
        failures += not ok
        print(
            f"{key[0]:<8}{key[1]:<8}{got.get(key)!s:>18}{want.get(key)!s:>20}"
            f"  {'ok' if ok else 'MISMATCH'}"
        )
    print(
        "e2e: OK, per-well counts equal `phagoflow run`"
        if not failures
        else f"e2e: {failures} well(s) differ"
    )
    return 0 if failures == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phagoflow.stack.e2e", description=__doc__)
    parser.add_argument("--wells", type=int, default=4)
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between fields")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    return run_e2e(
        wells=args.wells,
        fields=args.fields,
        seed=args.seed,
        interval_s=args.interval,
        timeout_s=args.timeout,
    )


if __name__ == "__main__":
    sys.exit(main())
