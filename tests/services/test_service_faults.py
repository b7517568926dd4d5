"""Fault tests on the real stack: kill -9 mid-plate (every service, every inference worker,
Triton), S3 stalled mid-upload, a consumer-group rebalance mid-plate, duplicate deliveries.

The final per-well counts must equal those of `phagoflow run`: no field lost, none counted twice.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from svc_testing import LocalStack, PlateRun, copy_into, harmony_files, wait_for
from test_service_e2e import _get

from phagoflow import events as ev
from phagoflow.core.simulate import SimulatedPlate
from phagoflow.embedded.run import RunResult, run_plate
from phagoflow.services.cip import CipService, CipSettings
from phagoflow.stack import MotoS3Server, TritonServer
from phagoflow.stack.local import ServiceProcess
from unet_testing import random_unet_dir

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


# ------------------------------------------------------------------ inference workers and Triton

REPO = Path(__file__).resolve().parents[2] / "model_repository"
MODEL = "autophagy_unet_cpu"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init U-Net folder: exercises the CDL path, not its quality."""
    return random_unet_dir(tmp_path_factory.mktemp("model") / "m")


@pytest.fixture(scope="module")
def reference6_cdl(
    plate6: SimulatedPlate, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> RunResult:
    """``phagoflow run --method cip,cdl`` on ``plate6``: the undisturbed numbers."""
    return run_plate(
        plate6.export_dir,
        tmp_path_factory.mktemp("ref6cdl"),
        methods=("cip", "cdl"),
        model_dir=model_dir,
        progress=False,
    )


def _triton_requests(triton: TritonServer) -> int:
    """Inference requests Triton has answered so far (its statistics API, not a poll cache)."""
    url = f"{triton.http_url}/v2/models/{MODEL}/stats"
    with urllib.request.urlopen(url, timeout=5) as resp:
        stats = json.loads(resp.read())["model_stats"]
    return sum(int(s["inference_stats"]["success"]["count"]) for s in stats)


def _worker_metric(worker: ServiceProcess, name: str) -> float:
    """A counter of a worker process, read from its /metrics (0 when not exported yet)."""
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return 0.0


def _wait_busy(triton: TritonServer, since: int) -> None:
    """Until Triton answered a request after ``since``: a worker is inside a field's tiles (or
    writing its mask) with the record not yet committed."""
    wait_for(lambda: _triton_requests(triton) > since, timeout_s=60, every_s=0.01)


def test_kill_9_every_inference_worker_and_triton_mid_plate(
    local_stack: LocalStack,
    plate6: SimulatedPlate,
    model_dir: Path,
    reference6_cdl: RunResult,
    tmp_path: Path,
) -> None:
    """kill -9 of every inference worker process (three, as `stack up` runs) while fields are
    inside them, then of Triton while requests reach it: records are redelivered, the workers
    wait for Triton (not ready, record postponed, not dead-lettered), and every field gets
    exactly one CDL result; per-well CIP and CDL counts equal `phagoflow run`."""
    triton = TritonServer(
        REPO,
        model_env={"PHAGOFLOW_MODEL_ONNX": str(model_dir / "model.onnx")},
        log_path=tmp_path / "triton.log",
        startup_timeout_s=90,
    ).start()
    env = {
        **local_stack.env(),
        "PHAGOFLOW_TRITON_URL": triton.url,
        "PHAGOFLOW_TRITON_MODEL": MODEL,
        "PHAGOFLOW_MODEL_DIR": str(model_dir),
        "PHAGOFLOW_TRITON_TIMEOUT_S": "2",
        "PHAGOFLOW_TRITON_RETRIES": "2",
        "OMP_NUM_THREADS": "1",
    }
    workers = [
        ServiceProcess("inference", env=env, log_path=tmp_path / f"inference-{i}.log")
        for i in (1, 2, 3)
    ]
    try:
        run = PlateRun(local_stack, plate6, methods=("cip", "cdl"))
        run.start_pipeline()
        local_stack.start(CipService(local_stack.settings(CipSettings), http_port=0))
        for w in workers:
            w.start()  # ready = Kafka, S3 and Triton's model reached
        names = sorted(harmony_files(plate6.export_dir)[1])  # 3 wells x 2 fields
        n = len(names)
        first, second = names[0:4:2], names[1:4:2]  # one field of each of two wells, twice
        run.feed(first)
        wait_for(lambda: run.done("cdl") >= 1, timeout_s=90, every_s=0.05)

        # 1. every inference worker killed while fields are inside them (uncommitted)
        requests = _triton_requests(triton)
        run.feed(second)  # two wells: two partitions, two workers at once
        _wait_busy(triton, requests)
        pids = [w.pid for w in workers]
        for w in workers:
            w.kill()
        assert run.done("cdl") < n  # mid-plate: fields are still to come
        for w in workers:  # all at once, as a Deployment's pods come back, on their ports
            w.spawn()
        for w in workers:
            w.wait_ready(90)
        assert not set(pids) & {w.pid for w in workers}

        # 2. Triton killed while requests reach it; the rest of the plate lands meanwhile
        requests = _triton_requests(triton)
        run.feed(names[4:])
        _wait_busy(triton, requests)
        triton_pid = triton.pid
        triton.kill()
        assert run.done("cdl") < n
        # a worker's request fails: the record is postponed (not dead-lettered), /readyz 503
        wait_for(
            lambda: sum(_worker_metric(w, "phagoflow_triton_unavailable_total") for w in workers),
            timeout_s=60,
            every_s=0.1,
        )
        wait_for(lambda: not all(w.is_ready() for w in workers), timeout_s=10)
        triton.start()  # on the ports the workers know
        assert triton.pid != triton_pid

        run.check(reference6_cdl)  # per-well CIP and CDL counts, every field, no dead letter
        # every worker is ready again, also one whose partitions moved away while Triton was down
        wait_for(lambda: all(w.is_ready() for w in workers), timeout_s=30)
        masks = local_stack.read(ev.Topic.MASKS_CDL.value, min_count=n, timeout_s=30)
        results: dict[str, set[str]] = {}
        for r in masks:
            assert isinstance(r.event, ev.MaskReady)
            results.setdefault(ev.field_key(r.event.field).name, set()).add(
                ev.result_identity(r.event.field, "cdl", r.event.model_version)
            )
        # every field has a CDL result; a redelivered field rewrote the same result
        assert sorted(results) == names
        assert all(len(ids) == 1 for ids in results.values()), results
    finally:
        for w in workers:
            w.kill()
        triton.kill()
