"""Service plumbing: JSON logs with plate/well/field, HTTP endpoints, waiting for dependencies."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

import pytest
from svc_testing import LocalStack, wait_for

from phagoflow.services import build_service
from phagoflow.services.cip import CipService, CipSettings
from phagoflow.services.common import JsonFormatter, log_context
from phagoflow.services.metrics import MetricsSettings
from phagoflow.stack import candidate_port


def _dead_endpoint() -> str:
    """``host:port`` where nothing listens: a port the OS just handed out and nobody bound.

    For a refused connection only (S3 "down"); no server is ever started on it.
    """
    return f"127.0.0.1:{candidate_port()}"


def _status(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_json_log_lines_carry_plate_well_field() -> None:
    fmt = JsonFormatter("cip")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "segmented %d", (3,), None)
    with log_context(plate="P1", well="r01c02"), log_context(field="r01c02f01p01"):
        doc = json.loads(fmt.format(record))
    assert doc["service"] == "cip" and doc["msg"] == "segmented 3" and doc["level"] == "INFO"
    assert (doc["plate"], doc["well"], doc["field"]) == ("P1", "r01c02", "r01c02f01p01")
    assert "plate" not in json.loads(fmt.format(record))  # the context ended with the block


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHAGOFLOW_METRICS_PORT", "8411")
    monkeypatch.setenv("PHAGOFLOW_METRICS_METHODS", '["cip","cdl"]')
    monkeypatch.setenv("PHAGOFLOW_CIP__THRESHOLD_K", "5")
    assert MetricsSettings().http_port == 8411
    assert MetricsSettings().metrics_methods == ["cip", "cdl"]
    assert CipSettings().cip.threshold_k == 5
    assert build_service("metrics").settings.metrics_port == 8411


def test_waits_for_unreachable_s3_and_stops_cleanly(local_stack: LocalStack) -> None:
    settings = local_stack.settings(
        CipSettings, s3_endpoint=_dead_endpoint(), s3_retries=1, s3_timeout_s=0.5
    )
    svc = CipService(settings, http_port=0)
    thread = svc.run_in_thread()
    base = None
    try:
        wait_for(lambda: svc.http is not None)
        base = f"http://127.0.0.1:{svc.port}"
        status, body = wait_for(
            lambda: (
                (s := _status(f"{base}/readyz"))[1].get("reason", "").startswith("waiting") and s
            )
        )
        assert status == 503 and "StoreUnavailable" in str(body["reason"])
        assert _status(f"{base}/healthz")[0] == 200  # alive, just not ready
        assert _status(f"{base}/nothing")[0] == 404
    finally:
        t0 = time.monotonic()
        svc.stop()
        thread.join(15)
    assert not thread.is_alive() and time.monotonic() - t0 < 15


def test_http_endpoints(local_stack: LocalStack) -> None:
    svc = local_stack.start(CipService(local_stack.settings(CipSettings), http_port=0))
    base = f"http://127.0.0.1:{svc.port}"
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
        assert json.loads(r.read()) == {"status": "ok"}
    with urllib.request.urlopen(f"{base}/readyz", timeout=5) as r:
        assert json.loads(r.read())["ready"] is True
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert "phagoflow_fields_processed_total" in text
    assert "phagoflow_stage_seconds" in text
    local_stack.stop(svc)
    assert svc.readiness()[0] is False
