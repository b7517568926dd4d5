"""`phagoflow stack up|status|down`, `make e2e` and supervision (real processes, ports from the OS).

Prometheus is required under ``CI`` (the scrape check must run there); locally it is skipped
when the binary is missing.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ci_tools import require
from phagoflow import events as ev
from phagoflow.cli import main
from phagoflow.core.model_dir import save_model_dir
from phagoflow.core.normalisation import NormalisationConfig
from phagoflow.core.unet import UNet, UNetConfig
from phagoflow.stack.bench import run_bench
from phagoflow.stack.e2e import run_e2e
from phagoflow.stack.local import (
    PrometheusServer,
    StackSettings,
    stack_down,
    stack_status,
    status_lines,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2] / "model_repository"


def wait_for_targets(port: int, jobs: set[str], timeout_s: float = 30.0) -> set[str]:
    """Jobs Prometheus reports healthy, once ``jobs`` are among them."""
    deadline = time.monotonic() + timeout_s
    while True:
        url = f"http://127.0.0.1:{port}/api/v1/targets"
        with urllib.request.urlopen(url, timeout=5) as resp:
            active = json.loads(resp.read())["data"]["activeTargets"]
        up = {t["labels"]["job"] for t in active if t["health"] == "up"}
        if jobs <= up or time.monotonic() > deadline:
            return up
        time.sleep(1.0)


@pytest.fixture
def stack_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StackSettings]:
    torch.manual_seed(0)
    config = UNetConfig(base_channels=4)
    model = tmp_path / "model"
    save_model_dir(model, UNet(config).eval(), config, NormalisationConfig(), name="test-unet")
    env = {
        "PHAGOFLOW_STACK_DIR": str(tmp_path / "var" / "stack"),
        "PHAGOFLOW_WATCH_DIR": str(tmp_path / "var" / "incoming"),
        "PHAGOFLOW_MODEL_DIR": str(model),
        "PHAGOFLOW_MODEL_REPOSITORY": str(REPO),
        "PHAGOFLOW_INGEST_QUIET_S": "2",
        "PHAGOFLOW_INGEST_SETTLE_S": "0.5",
    }
    require(None if PrometheusServer.executable() else "prometheus not installed (apt-get)")
    names = (
        "kafka_port", "s3_port", "triton_grpc_port", "triton_http_port", "triton_metrics_port",
        "prometheus_port", "ingest_port", "cip_port", "inference_port", "metrics_port",
    )  # fmt: skip
    for name in names:  # every component binds a port the OS picks; stack.json says which
        env[f"PHAGOFLOW_{name.upper()}"] = "0"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = StackSettings()
    try:
        yield settings
    finally:
        stack_down(settings, echo=lambda _: None)


def test_stack_up_e2e_status_down(
    stack_env: StackSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stack", "up"]) == 0
    out = capsys.readouterr().out
    assert main(["stack", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    names = {p["name"]: p for p in status["processes"]}
    ports = {name: p["port"] for name, p in names.items()}
    assert all(ports.values()), ports  # each reports the port the OS gave it
    assert len(set(ports.values())) == len(ports)
    assert f"http://127.0.0.1:{ports['metrics']}/api/v1/plates" in out
    expected = {"kafka", "s3", "triton", "ingest", "cip", "metrics"}
    expected |= {"inference", "inference-2", "inference-3"}  # three cdl workers by default
    expected.add("prometheus")
    assert set(names) == expected
    assert all(p["ready"] and p["restarts"] == 0 for p in names.values()), names
    assert status["supervisor"]["running"]
    assert main(["stack", "up"]) == 1  # a second stack is refused
    # a real scraper sees every service's /metrics
    jobs = {"ingest", "cip", "inference", "inference-2", "inference-3", "metrics", "triton"}
    assert wait_for_targets(ports["prometheus"], jobs) >= jobs

    assert run_e2e(wells=1, fields=2, interval_s=0.3, timeout_s=180) == 0
    assert "OK, per-well counts equal" in capsys.readouterr().out

    result = run_bench(wells=1, fields=2, interval_s=0.2)
    assert result["fields"] == 2 and result["methods"] == ["cip", "cdl"]
    for method in ("cip", "cdl"):
        latency = result["latency"][method]
        assert latency["field_acquisition_to_mask_s"]["n"] == 2
        assert latency["well_acquisition_to_result_s"]["n"] == 1
        assert 0 < latency["field_acquisition_to_mask_s"]["p50"] < 120
        assert set(latency["stage_seconds_mean"]) == {"download", "segment", "measure", "upload"}
    assert result["rss_mib"]["cip"] > 0

    assert main(["stack", "down"]) == 0
    assert main(["stack", "status"]) == 3
    assert stack_status(stack_env)["up"] is False


def _pids(settings: StackSettings) -> dict[str, int]:
    return {p["name"]: int(p["pid"]) for p in stack_status(settings)["processes"]}


def test_supervisor_heals_sigkill_of_every_service_mid_plate(stack_env: StackSettings) -> None:
    """kill -9 of each service, each inference worker and Triton while a plate streams in:
    nobody intervenes, the supervisor restarts them, the counts equal `phagoflow run`."""
    assert main(["stack", "up"]) == 0
    victims = [
        ("cip", "inference-2"),
        ("triton", "ingest"),
        ("metrics", "inference"),
        ("inference-3",),
    ]
    outcome: dict[str, int] = {}
    e2e = threading.Thread(
        target=lambda: outcome.update(rc=run_e2e(wells=2, fields=3, interval_s=1.0, timeout_s=300))
    )
    e2e.start()
    killed: dict[str, int] = {}
    for group in victims:
        time.sleep(1.5)  # mid-plate: fields are landing and being processed
        pids = _pids(stack_env)
        for name in group:
            killed[name] = pids[name]
            os.kill(pids[name], signal.SIGKILL)
    e2e.join(360)
    assert not e2e.is_alive() and outcome.get("rc") == 0, outcome
    status = stack_status(stack_env)
    by_name = {p["name"]: p for p in status["processes"]}
    for name, old_pid in killed.items():
        assert by_name[name]["restarts"] >= 1, by_name[name]
        assert by_name[name]["last_exit"] == -signal.SIGKILL
        assert by_name[name]["pid"] != old_pid and by_name[name]["running"]
    assert status["alerts"] == []  # no component that loses data was restarted
    text = "\n".join(status_lines(status))
    assert "restarts" in text.splitlines()[0]
    assert any(line.startswith("cip ") and line.split()[3] == "1" for line in text.splitlines())
    assert _dead_letters(status["endpoints"]["kafka"]) == 0  # the kills were not bad inputs

    # tansu keeps topics in memory: its restart is not survivable, and must not be silent
    os.kill(_pids(stack_env)["kafka"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not (alerts := stack_status(stack_env)["alerts"]):
        assert time.monotonic() < deadline, "no alert after the broker restart"
        time.sleep(0.5)
    assert alerts[0]["component"] == "kafka" and "in memory only" in alerts[0]["message"]
    assert set(ev.ALL_TOPICS) <= _topics(stack_env)  # the supervisor re-created them
    assert any(line.startswith("ALERT") for line in status_lines(stack_status(stack_env)))


def _topics(settings: StackSettings) -> set[str]:
    """Topics the (restarted) broker has, listed without creating any."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=stack_status(settings)["endpoints"]["kafka"])
    try:
        return set(consumer.topics())
    finally:
        consumer.close()


def _dead_letters(bootstrap: str) -> int:
    """Records on the dead-letter topic (read from the start, no group)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        topic = ev.Topic.DEADLETTER.value
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(parts)
        starts = consumer.beginning_offsets(parts)
        return sum(ends[tp] - starts[tp] for tp in parts)
    finally:
        consumer.close()
