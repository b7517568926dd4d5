"""Fault tests on the real stack: kill -9 each service mid-plate, S3 paused, duplicate deliveries.

The final per-well counts must equal those of `phagoflow run`: no field lost, none counted twice.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from svc_testing import LocalStack, copy_into, harmony_files, wait_for
from test_service_e2e import _get

from phagoflow import events as ev
from phagoflow.core.simulate import SimulatedPlate
from phagoflow.embedded.run import RunResult
from phagoflow.services.cip import CipService, CipSettings
from phagoflow.stack import MotoS3Server

pytestmark = pytest.mark.slow


def _want(reference: RunResult) -> list[tuple[str, int, int, int]]:
    return sorted(
        (w.well, w.fields, w.phagophores, w.autolysosomes)
        for w in reference.wells
        if w.method == "cip"
    )


def _got(port: int, plate: str) -> list[tuple[str, int, int, int]]:
    _, rows = _get(port, f"/api/v1/plates/{plate}/wells")
    return sorted(
        (r["well"], r["fields"], r["phagophores"], r["autolysosomes"])
        for r in rows
        if r["method"] == "cip"
    )


def test_kill_9_each_service_mid_plate(
    local_stack: LocalStack,
    sim_plate: SimulatedPlate,
    reference: RunResult,
) -> None:
    procs = local_stack.processes(["ingest", "cip", "metrics"])
    plate = sim_plate.plate_id
    try:
        for proc in procs.values():
            proc.start()
        ports = {n: p.port for n, p in procs.items()}
        index, fields = harmony_files(sim_plate.export_dir)
        names = sorted(fields)
        dest = local_stack.tmp / "incoming" / "plate" / "Images"
        copy_into([index, *fields[names[0]]], dest)

        def done() -> int:
            status, body = _get(ports["metrics"], f"/api/v1/plates/{plate}")
            return int(body["methods"]["cip"]["done"]) if status == 200 else 0

        wait_for(lambda: done() >= 1, timeout_s=60, every_s=0.2)
        # 1. cip killed while the next field arrives, restarted
        copy_into(fields[names[1]], dest)
        procs["cip"].kill()
        time.sleep(1.0)
        procs["cip"].start()
        wait_for(lambda: done() >= 2, timeout_s=60, every_s=0.2)
        # 2. ingest killed right after a field landed, restarted (its manifest is in S3)
        copy_into(fields[names[2]], dest)
        time.sleep(0.5)
        procs["ingest"].kill()
        procs["ingest"].start()
        wait_for(lambda: done() >= 3, timeout_s=60, every_s=0.2)
        # 3. metrics killed, restarted: state restored from the snapshot, replays de-duplicated
        procs["metrics"].kill()
        copy_into(fields[names[3]], dest)
        procs["metrics"].start()
        wait_for(
            lambda: (
                _get(ports["metrics"], f"/api/v1/plates/{plate}")[1] not in (None,)
                and _get(ports["metrics"], f"/api/v1/plates/{plate}")[1].get("complete")
            ),
            timeout_s=120,
            every_s=0.5,
        )
        assert _got(ports["metrics"], plate) == _want(reference)
        _, status = _get(ports["metrics"], f"/api/v1/plates/{plate}")
        assert status["methods"]["cip"]["done"] == len(names)
    finally:
        for p in procs.values():
            p.kill()


def test_s3_paused_then_back_no_loss(
    local_stack: LocalStack,
    sim_plate: SimulatedPlate,
    reference: RunResult,
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The S3 server stops answering for a few seconds while cip works: retries, then success."""
    s3 = MotoS3Server(log_path=tmp_path / "s3.log").start()
    try:
        stack = LocalStack(local_stack.broker, s3, local_stack.bucket, local_stack.tmp)
        s3.ensure_buckets([stack.bucket])
        from test_service_cip import _ingest_all

        n = _ingest_all(stack, sim_plate)
        caplog.set_level("WARNING", logger="phagoflow.services")
        # bounded per-request retries (3 x 2 s timeouts), then the record is retried, not lost
        svc = stack.start(CipService(stack.settings(CipSettings), http_port=0))
        topic = ev.Topic.FIELDS_ACQUIRED.value
        labels = {"service": "cip", "topic": topic, "outcome": "ok"}
        wait_for(
            lambda: (svc.registry.get_sample_value("phagoflow_records_total", labels) or 0) >= 1,
            every_s=0.02,
        )
        s3.pause()  # mid-plate: the next fields' downloads hang
        time.sleep(4.0)
        s3.resume()
        records = stack.read(ev.Topic.MASKS_CIP.value, min_count=n, timeout_s=90)
        retried = [r for r in caplog.records if "retrying" in r.getMessage()]
        assert retried, "the outage was not noticed"
        names = sorted({ev.field_key(r.event.field).name for r in records if r.event})
        assert len(names) == n
        by_name = {o.name: o.counts for o in reference.outcomes if o.method == "cip"}
        for r in records:
            assert isinstance(r.event, ev.MaskReady)
            counts = ev.field_counts_from_mask_ready(r.event)
            assert counts == by_name[counts.key.name]
        stack.stop(svc)
    finally:
        s3.stop()
