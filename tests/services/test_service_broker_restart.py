"""tansu restarted mid-plate (``kill -9`` of the broker): what the stack does, and that it says so.

tansu 0.6 keeps topics, records and committed offsets in memory only, so a broker restart
cannot be survived by the plate in flight. The guarantee is weaker but explicit: the supervisor
restarts the broker, re-creates the topics, raises an alert (``stack.json``, ``stack status``,
an ERROR log line); the plate in flight is never reported complete with fields missing; the
services should reconnect by themselves so that a plate dropped after the restart completes
(their producers are not idempotent, so the new broker, which knows no producer ids, takes
their sends).
Real servers throughout: the supervisor's own infrastructure wiring (``_start_infra``: tansu
and moto with their after-restart hooks), services in threads.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from svc_testing import LocalStack, PlateRun, copy_into, harmony_files, wait_for

from phagoflow import events as ev
from phagoflow.core.simulate import SimulatedPlate
from phagoflow.embedded.run import RunResult
from phagoflow.services.cip import CipService, CipSettings
from phagoflow.stack import MotoS3Server, TansuBroker
from phagoflow.stack.local import Component, StackSettings, _start_infra, stack_status, status_lines
from phagoflow.stack.supervisor import Supervisor

pytestmark = pytest.mark.slow


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[Supervisor, TansuBroker, MotoS3Server]]:
    """tansu and moto started and supervised as ``phagoflow stack up`` does (ports from the OS)."""
    settings = StackSettings(
        stack_dir=tmp_path / "stack",
        watch_dir=tmp_path / "incoming",
        kafka_port=0,
        s3_port=0,
        restart_backoff_s=0.2,
    )
    (settings.stack_dir / "logs").mkdir(parents=True)  # as start_components does
    started: list[Component] = []
    sup = Supervisor(settings)
    try:
        kafka, s3 = _start_infra(settings, started, echo=lambda _: None)
        for c in started:
            sup.track(c)
        sup.write()
        yield sup, kafka, s3
    finally:
        for c in started:
            sup.track(c)
        sup.shutdown()


ACQUIRED = ev.Topic.FIELDS_ACQUIRED.value


def _records(bootstrap: str, topic: str) -> int:
    """Records on ``topic`` now (no group, nothing created)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends, starts = consumer.end_offsets(parts), consumer.beginning_offsets(parts)
        return sum(ends[tp] - starts[tp] for tp in parts)
    finally:
        consumer.close()


def _topics(bootstrap: str) -> set[str]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return set(consumer.topics())
    finally:
        consumer.close()


def _broker_killed_mid_plate(
    sup: Supervisor,
    stack: LocalStack,
    plate: SimulatedPlate,
    caplog: pytest.LogCaptureFixture,
) -> PlateRun:
    """Stream two fields of ``plate``, leave two more waiting in the broker, kill -9 tansu and
    let the supervisor restart it; then the rest of the plate lands (a new cip worker)."""
    kafka = stack.broker
    in_flight = PlateRun(stack, plate)
    in_flight.start_pipeline()
    cip = stack.start(CipService(stack.settings(CipSettings), http_port=0))
    names = sorted(harmony_files(plate.export_dir)[1])  # 3 wells x 2 fields
    in_flight.feed(names[:2])
    wait_for(lambda: in_flight.done("cip") == 2, timeout_s=90, every_s=0.05)
    stack.stop(cip)  # the next two fields wait in the broker, unprocessed
    in_flight.feed(names[2:4])
    wait_for(lambda: _records(kafka.bootstrap_servers, ACQUIRED) == 4, timeout_s=30)

    caplog.set_level(logging.ERROR, logger="phagoflow.stack.supervisor")
    assert kafka.pid is not None
    os.killpg(kafka.pid, signal.SIGKILL)
    wait_for(lambda: sup.tick(time.monotonic()) and sup.restarts["kafka"].restarts >= 1)
    kafka.wait_ready(30)
    stack.start(CipService(stack.settings(CipSettings), http_port=0))
    in_flight.feed(names[4:])
    return in_flight


def test_broker_restart_mid_plate_is_alerted_and_never_reported_complete(
    supervised: tuple[Supervisor, TansuBroker, MotoS3Server],
    plate6: SimulatedPlate,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup, kafka, s3 = supervised
    stack = LocalStack(kafka, s3, sup.settings.bucket, tmp_path)
    try:
        in_flight = _broker_killed_mid_plate(sup, stack, plate6, caplog)
        # not silent: an alert in stack.json / stack status and an ERROR log line
        assert [a["component"] for a in sup.alerts] == ["kafka"]
        assert "in memory only" in sup.alerts[0]["message"]
        assert any(r.getMessage().startswith("ALERT kafka") for r in caplog.records)
        sup.write()
        status = stack_status(sup.settings)
        assert any(line.startswith("ALERT") for line in status_lines(status))
        kafka_row = next(p for p in status["processes"] if p["name"] == "kafka")
        assert kafka_row["restarts"] == 1 and kafka_row["last_exit"] == -signal.SIGKILL
        # the alert is true: the topics are back (re-created), the two waiting fields are gone
        assert set(ev.ALL_TOPICS) <= _topics(kafka.bootstrap_servers)
        # the plate in flight is never reported complete with two fields missing: ingest
        # published all six (its manifest says so), metrics has results for four
        wait_for(
            lambda: (
                (s := in_flight.api(""))
                and s["ingest_complete"]
                and s["methods"]["cip"]["done"] == 4
            ),
            timeout_s=90,
            every_s=0.1,
        )
        stuck = in_flight.api("")
        assert stuck["complete"] is False
        assert stuck["methods"]["cip"]["published"] == stuck["fields_expected"] == 6
        assert _records(kafka.bootstrap_servers, ACQUIRED) == 2  # only the fields after it
    finally:
        _stop_services(stack)


def test_new_plate_completes_after_broker_restart_without_restarting_services(
    supervised: tuple[Supervisor, TansuBroker, MotoS3Server],
    plate6: SimulatedPlate,
    sim_plate: SimulatedPlate,
    reference: RunResult,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup, kafka, s3 = supervised
    stack = LocalStack(kafka, s3, sup.settings.bucket, tmp_path)
    try:
        in_flight = _broker_killed_mid_plate(sup, stack, plate6, caplog)
        # a plate dropped after the restart completes with per-well counts equal to
        # `phagoflow run`, no dead letter, with the same service instances
        new = PlateRun(stack, sim_plate, metrics=in_flight.metrics)
        index, fields = harmony_files(sim_plate.export_dir)
        files = [index, *(f for n in sorted(fields) for f in fields[n])]
        copy_into(files, tmp_path / "incoming" / "new" / "Images")
        new.wait_complete(timeout_s=60)
        new.check(reference)
        assert in_flight.api("")["complete"] is False  # still honest about the lost fields
    finally:
        _stop_services(stack)


def _stop_services(stack: LocalStack) -> None:
    for svc, _ in list(stack.services):
        svc.stop()
    for _, thread in stack.services:
        thread.join(30)
