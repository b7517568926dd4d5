"""`phagoflow stack up|status|down` and `make e2e` on free loopback ports (real processes)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from phagoflow.cli import main
from phagoflow.core.model_dir import save_model_dir
from phagoflow.core.normalisation import NormalisationConfig
from phagoflow.core.unet import UNet, UNetConfig
from phagoflow.stack.bench import run_bench
from phagoflow.stack.e2e import run_e2e
from phagoflow.stack.local import PrometheusServer, StackSettings, stack_down, stack_status

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
    if PrometheusServer.executable() is not None:
        expected.add("prometheus")
    assert set(names) == expected
    assert all(p["ready"] for p in names.values()), names
    assert main(["stack", "up"]) == 1  # a second stack is refused
    if "prometheus" in names:  # a real scraper sees every service's /metrics
        targets = wait_for_targets(
            ports["prometheus"],
            {"ingest", "cip", "inference", "inference-3", "metrics", "triton"},
        )
        assert targets >= {"ingest", "cip", "inference", "inference-3", "metrics", "triton"}

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
