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
import json
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["main", "run_e2e"]


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


def _copy_field_by_field(export: Path, dest: Path, interval_s: float) -> int:
    """Index (or .flex files) first, then each field's files; returns the number of fields."""
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in export.iterdir() if p.is_file())
    index = [p for p in files if p.name in ("Index.idx.xml", "Index.xml")]
    by_field: dict[str, list[Path]] = {}
    for p in files:
        if p not in index:
            by_field.setdefault(p.name.split("-")[0], []).append(p)
    for p in index:
        shutil.copyfile(p, dest / p.name)
    for group in by_field.values():
        for p in group:
            tmp = dest / f".{p.name}.part"
            shutil.copyfile(p, tmp)
            tmp.rename(dest / p.name)
        time.sleep(interval_s)
    return len(by_field)


def run_e2e(
    *,
    wells: int = 4,
    fields: int = 2,
    seed: int = 11,
    interval_s: float = 1.0,
    timeout_s: float = 600.0,
) -> int:
    """Run the check against the stack recorded by ``phagoflow stack up``; returns 0 on success."""
    from phagoflow.core.simulate import simulate_plate
    from phagoflow.embedded.run import run_plate
    from phagoflow.stack.local import STATE_FILE, StackSettings, stack_status

    settings = StackSettings()
    status = stack_status(settings)
    if not status["up"]:
        print("e2e: no local stack is up (make up / phagoflow stack up)", file=sys.stderr)
        return 2
    state = json.loads((settings.stack_dir / STATE_FILE).read_text())
    methods = tuple(state["methods"])
    api = f"http://127.0.0.1:{state['metrics_port']}/api/v1/plates"
    plate_id = f"E2E-{time.strftime('%Y%m%d-%H%M%S')}"
    with tempfile.TemporaryDirectory(prefix="phagoflow-e2e-") as tmp:
        sim = simulate_plate(
            Path(tmp) / "sim", wells=wells, fields=fields, seed=seed, plate_id=plate_id
        )
        print(f"e2e: plate {plate_id}, {sim.n_fields} fields, methods {', '.join(methods)}")
        started = time.monotonic()
        dest = Path(state["watch_dir"]) / plate_id / "Images"
        n = _copy_field_by_field(sim.export_dir, dest, interval_s)
        copied = time.monotonic()
        body: Any = None
        while time.monotonic() - started < timeout_s:
            code, body = _get(f"{api}/{quote(plate_id, safe='')}")
            if code == 200 and body["complete"]:
                break
            time.sleep(0.5)
        else:
            print(f"e2e: plate not complete after {timeout_s:g} s: {body}", file=sys.stderr)
            return 1
        done = time.monotonic()
        print(
            f"e2e: {n} fields copied in {copied - started:.1f} s; complete {done - started:.1f} s"
            f" after the first file ({done - copied:.1f} s after the last)"
        )
        _, rows = _get(f"{api}/{quote(plate_id, safe='')}/wells")
        model_dir = Path(state["model_dir"]) if state.get("model_dir") else None
        ref = run_plate(
            sim.export_dir, Path(tmp) / "ref", methods=methods, model_dir=model_dir, progress=False
        )
    want = {(w.well, w.method): (w.fields, w.phagophores, w.autolysosomes) for w in ref.wells}
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
