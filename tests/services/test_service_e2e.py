"""End to end: `phagoflow serve ingest|cip|metrics` as processes on real tansu + S3 servers.

A simulated plate is copied into the watch folder field by field, as a microscope writes it; the
per-well CIP counts the metrics API reports must equal those of `phagoflow run` exactly.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from svc_testing import LocalStack, copy_into, harmony_files, wait_for

from phagoflow import events as ev
from phagoflow.core.simulate import SimulatedPlate
from phagoflow.embedded.run import RunResult

pytestmark = pytest.mark.slow


def _get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, None


@pytest.fixture
def services(local_stack: LocalStack) -> Iterator[dict[str, Any]]:
    procs = local_stack.processes(["ingest", "cip", "metrics"], PHAGOFLOW_INGEST_SETTLE_S="0.5")
    try:
        for proc in procs.values():
            proc.start()  # waits for /readyz on the port the service bound
        ports = {n: p.port for n, p in procs.items()}
        yield {"procs": procs, "ports": ports, "watch": local_stack.tmp / "incoming"}
    finally:
        for p in procs.values():
            p.kill()


def test_plate_through_the_stack_equals_embedded_run(
    local_stack: LocalStack,
    sim_plate: SimulatedPlate,
    reference: RunResult,
    services: dict[str, Any],
) -> None:
    ports, procs, watch = services["ports"], services["procs"], services["watch"]
    index, fields = harmony_files(sim_plate.export_dir)
    dest = watch / "plate" / "Images"
    started = time.monotonic()
    copy_into([index], dest)
    for name in sorted(fields):  # one field every 0.5 s, as a microscope writes them
        copy_into(fields[name], dest)
        time.sleep(0.5)
    plate = sim_plate.plate_id

    def complete() -> Any:
        status, body = _get(ports["metrics"], f"/api/v1/plates/{plate}")
        return body if status == 200 and body["complete"] else None

    status = wait_for(complete, timeout_s=120, every_s=0.5)
    elapsed = time.monotonic() - started
    assert status["methods"]["cip"]["done"] == len(fields)
    assert status["failed"] == []
    _, rows = _get(ports["metrics"], f"/api/v1/plates/{plate}/wells")
    got = sorted(
        (r["well"], r["fields"], r["phagophores"], r["autolysosomes"], r["phagophore_area_um2"])
        for r in rows
        if r["method"] == "cip"
    )
    want = sorted(
        (w.well, w.fields, w.phagophores, w.autolysosomes, w.phagophore_area_um2)
        for w in reference.wells
        if w.method == "cip"
    )
    assert got == want, f"stack {got} != embedded {want}"
    store = local_stack.store()
    wells_csv = store.get_bytes(ev.report_object_key(plate, "wells.csv"))
    assert wells_csv == (reference.out_dir / "wells.csv").read_bytes()
    print(f"plate of {len(fields)} fields complete {elapsed:.1f} s after the first file")

    # graceful SIGTERM: every service finishes, commits and exits 0
    for name, proc in procs.items():
        assert proc.stop(timeout_s=30) == 0, f"{name} exit status; log:\n{proc.log_tail(3000)}"
    log = procs["cip"].log_path.read_text().splitlines()
    cip_lines = [json.loads(line) for line in log if line and not line.startswith("--- ")]
    segmented = [d for d in cip_lines if d.get("field") and "phagophores" in d["msg"]]
    assert len(segmented) == len(fields)
    assert all(d["plate"] == plate and d["service"] == "cip" for d in segmented)
