"""End to end: `phagoflow serve ingest|cip|metrics` as processes on real tansu + S3 servers.

A simulated plate is copied into the watch folder field by field, as a microscope writes it; the
per-well CIP counts the metrics API reports must equal those of `phagoflow run` exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from svc_testing import LocalStack, copy_into, harmony_files, wait_for

from phagoflow import events as ev
from phagoflow.core.simulate import SimulatedPlate
from phagoflow.embedded.run import RunResult
from phagoflow.stack import free_port

pytestmark = pytest.mark.slow


class Proc:
    """One `phagoflow serve NAME` process with its log file."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "phagoflow", "serve", self.name],
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        return self

    def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


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
    ports = {name: free_port() for name in ("ingest", "cip", "metrics")}
    watch = local_stack.tmp / "incoming"
    env = {
        **os.environ,
        **local_stack.env(),
        "PHAGOFLOW_WATCH_DIR": str(watch),
        "PHAGOFLOW_INGEST_POLL_S": "0.2",
        "PHAGOFLOW_INGEST_SETTLE_S": "0.5",
        "PHAGOFLOW_INGEST_QUIET_S": "2",
        "PHAGOFLOW_INGEST_PORT": str(ports["ingest"]),
        "PHAGOFLOW_CIP_PORT": str(ports["cip"]),
        "PHAGOFLOW_METRICS_PORT": str(ports["metrics"]),
        "OMP_NUM_THREADS": "1",
    }
    procs = {n: Proc(n, env, local_stack.tmp / f"{n}.log").start() for n in ports}
    try:
        yield {"procs": procs, "ports": ports, "watch": watch}
    finally:
        for p in procs.values():
            p.kill()


def _ready(port: int) -> bool:
    return _get(port, "/readyz")[0] == 200


def test_plate_through_the_stack_equals_embedded_run(
    local_stack: LocalStack,
    sim_plate: SimulatedPlate,
    reference: RunResult,
    services: dict[str, Any],
) -> None:
    ports, procs, watch = services["ports"], services["procs"], services["watch"]
    for port in ports.values():
        wait_for(lambda port=port: _ready(port), timeout_s=60, every_s=0.2)
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
        assert proc.terminate() == 0, f"{name} exit status; log:\n{proc.log.read_text()[-3000:]}"
    cip_lines = [json.loads(line) for line in procs["cip"].log.read_text().splitlines() if line]
    segmented = [d for d in cip_lines if d.get("field") and "phagophores" in d["msg"]]
    assert len(segmented) == len(fields)
    assert all(d["plate"] == plate and d["service"] == "cip" for d in segmented)
