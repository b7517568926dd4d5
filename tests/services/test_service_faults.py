"""Fault tests on the real stack: kill -9 mid-plate, S3 stalled mid-upload, a consumer-group
rebalance mid-plate, duplicate deliveries.

The final per-well counts must equal those of `phagoflow run`: no field lost, none counted twice.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from svc_testing import LocalStack, PlateRun, copy_into, harmony_files, wait_for
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


def test_s3_stalled_mid_upload_no_loss(
    local_stack: LocalStack,
    plate6: SimulatedPlate,
    reference6: RunResult,
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The S3 server freezes for 8 s mid-plate: the next fields land meanwhile, so ingest's
    uploads of them (and cip's downloads and mask uploads) hang on the frozen server."""
    s3 = MotoS3Server(log_path=tmp_path / "s3.log").start()  # its own: the session's keeps going
    try:
        stack = LocalStack(local_stack.broker, s3, local_stack.bucket, local_stack.tmp)
        s3.ensure_buckets([stack.bucket])
        run = PlateRun(stack, plate6)
        run.start_pipeline()
        stack.start(CipService(stack.settings(CipSettings), http_port=0))
        names = sorted(harmony_files(plate6.export_dir)[1])
        caplog.set_level("WARNING", logger="phagoflow.services.objectstore")
        run.feed(names[:2])
        wait_for(lambda: run.done("cip") >= 1, timeout_s=90, every_s=0.05)
        s3.pause()
        run.feed(names[2:], interval_s=0.3)  # uploaded into the frozen server
        time.sleep(8.0)  # longer than every client's timeout x retries (2 s x 3)
        s3.resume()
        run.check(reference6)
        stalled = [r for r in caplog.records if "failed (attempt" in r.getMessage()]
        assert any("put raw/" in r.getMessage() for r in stalled), "ingest never hit the stall"
    finally:
        for svc, _ in list(local_stack.services):
            svc.stop()
        s3.stop()


def test_consumer_group_rebalance_mid_plate(
    local_stack: LocalStack, plate6: SimulatedPlate, reference6: RunResult
) -> None:
    """A second cip worker joins while fields are in flight; once the group has rebalanced
    (the newcomer owns partitions), the first worker leaves: another rebalance mid-plate.

    The leave waits for the join to finish: on tansu 0.6 a member leaving *during* another's
    join wedges the group (the departed member is elected leader; see docs/streaming.md).
    """
    run = PlateRun(local_stack, plate6)
    run.start_pipeline()
    names = sorted(harmony_files(plate6.export_dir)[1])
    first = local_stack.start(CipService(local_stack.settings(CipSettings), http_port=0))
    run.feed(names[:2])
    wait_for(lambda: run.done("cip") >= 2, timeout_s=60, every_s=0.05)
    second = local_stack.start(CipService(local_stack.settings(CipSettings), http_port=0))
    run.feed(names[2:4], interval_s=0.3)  # handled while the group rebalances
    wait_for(lambda: second.consumer is not None and second.consumer.assignment(), timeout_s=60)
    assert first.consumer is not None and first.consumer.assignment()  # the partitions are split
    local_stack.stop(first)  # a graceful leave: commits, then the survivor takes every partition
    run.feed(names[4:])
    run.check(reference6)
    ok = {"topic": ev.Topic.FIELDS_ACQUIRED.value, "outcome": "ok", "service": "cip"}
    handled = [
        w.registry.get_sample_value("phagoflow_records_total", ok) or 0 for w in (first, second)
    ]
    assert handled[0] >= 2 and handled[1] >= 2, handled  # both worked; the survivor finished
    assert sum(handled) >= len(names)


def test_duplicate_deliveries_count_once(
    local_stack: LocalStack, plate6: SimulatedPlate, reference6: RunResult
) -> None:
    """Every FieldAcquired delivered twice, every MaskReady delivered again: counted once."""
    run = PlateRun(local_stack, plate6)
    run.start_pipeline()
    names = sorted(harmony_files(plate6.export_dir)[1])
    run.feed()
    acquired = ev.Topic.FIELDS_ACQUIRED.value
    records = local_stack.read(acquired, min_count=len(names), timeout_s=60)
    for r in records:  # a producer retry / replay: the same bytes again, same key
        local_stack.produce(acquired, r.value, key=r.key)
    local_stack.start(CipService(local_stack.settings(CipSettings), http_port=0))
    masks = local_stack.read(ev.Topic.MASKS_CIP.value, min_count=2 * len(names), timeout_s=90)
    for r in masks:
        local_stack.produce(ev.Topic.MASKS_CIP.value, r.value, key=r.key)
    run.check(reference6)
    metrics = run.metrics
    assert metrics is not None
    dup = {"method": "cip"}
    # each result delivered 4 times (2 FieldAcquired x 2 MaskReady copies): 1 counted, 3 ignored
    wait_for(
        lambda: (
            metrics.registry.get_sample_value("phagoflow_duplicate_results_total", dup)
            == 3 * len(names)
        ),
        timeout_s=30,
    )
