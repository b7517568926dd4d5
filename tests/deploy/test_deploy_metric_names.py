"""Every metric name the dashboard, the alerts and the autoscalers query is one that exists.

phagoflow_* names are read from the ``/metrics`` of the real services (ingest, cip, inference,
metrics) started against the real tansu broker and moto S3 fixtures; the few other names come
from Prometheus itself (``up``), Triton (``nv_*``) and NVIDIA's DCGM exporter and are listed
below with their source. Anything else fails.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from phagoflow.services.common import Service
from phagoflow.stack import MotoS3Server, TansuBroker

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "phagoflow"
#: Names that are not phagoflow's, with where they come from.
FOREIGN = {
    "up": "Prometheus (scrape health)",
    "nv_inference_queue_duration_us": "Triton metrics, port 8002 (docs/user_guide/metrics.md)",
    "nv_inference_request_success": "Triton metrics, port 8002",
    "nv_gpu_utilization": "Triton GPU metrics (--allow-gpu-metrics)",
    "DCGM_FI_DEV_GPU_UTIL": "NVIDIA dcgm-exporter (GPU operator)",
}
_FUNCS = r"(?:sum|max|min|avg|count|rate|increase|deriv|histogram_quantile|label_replace|clamp_min)"
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
_KEYWORDS |= {"bool", "offset", "humanizePercentage"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (strings, label matchers, ranges and clauses removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges and subqueries
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        after = e[m.end() :].lstrip()[:1]
        if after == "(" or word in _KEYWORDS or re.fullmatch(r"\d+\w*", word):
            continue
        names.add(word)
    return names


def test_promql_name_extraction() -> None:
    expr = (
        'sum by (le, method) (rate(phagoflow_stage_seconds_bucket{plate="$plate"}[5m])) '
        '/ on() count(up{component=~"a|b"} == 0) and label_replace(x_total, "r", "$1", "w", "(.*)")'
    )
    assert promql_metric_names(expr) == {"phagoflow_stage_seconds_bucket", "up", "x_total"}


def _queries(helm: Path) -> dict[str, set[str]]:
    """Metric names per source: every scenario's PrometheusRule and ScaledObjects, the dashboard."""
    out: dict[str, set[str]] = {}
    for values in ("values-gpu.yaml", "values-gpu-tensorrt.yaml"):
        r = subprocess.run(
            [str(helm), "template", "pf", str(CHART), "-f", str(CHART / "ci" / values)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        for doc in filter(None, yaml.safe_load_all(r.stdout)):
            if doc["kind"] == "PrometheusRule":
                for g in doc["spec"]["groups"]:
                    for rule in g["rules"]:
                        out[f"alert {rule['alert']}"] = promql_metric_names(rule["expr"])
            if doc["kind"] == "ScaledObject":
                for t in doc["spec"]["triggers"]:
                    if t["type"] == "prometheus":
                        name = doc["metadata"]["name"]
                        out[f"ScaledObject {name}"] = promql_metric_names(t["metadata"]["query"])
    dash = json.loads((CHART / "files" / "dashboards" / "phagoflow.json").read_text())
    for p in dash["panels"]:
        for t in p["targets"]:
            out.setdefault(f"panel {p['title']}", set()).update(promql_metric_names(t["expr"]))
    for v in dash["templating"]["list"]:
        q = v.get("definition", "")
        m = re.match(r"label_values\(([A-Za-z_:][A-Za-z0-9_:]*)", q)
        if m:
            out[f"variable {v['name']}"] = {m.group(1)}
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exposed(text: str) -> set[str]:
    """Series names a scrape of ``text`` yields: TYPE'd families plus histogram/summary parts."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            names.add(name)
            if kind in ("histogram", "summary"):
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.fixture
def service_metrics(
    fresh_broker: TansuBroker,
    s3_server: MotoS3Server,
    unique: str,
    tmp_path: Path,
    model_folder: Path,
) -> Iterator[dict[str, str]]:
    """``/metrics`` text of ingest, cip, inference (Triton absent) and metrics, all real."""
    from phagoflow.services.cip import CipService, CipSettings
    from phagoflow.services.inference import InferenceService, InferenceSettings
    from phagoflow.services.ingest import IngestService, IngestSettings
    from phagoflow.services.metrics import MetricsService, MetricsSettings

    bucket = f"dm-{unique}"
    s3_server.ensure_buckets([bucket])
    common: dict[str, Any] = {
        "kafka_bootstrap": fresh_broker.bootstrap_servers,
        "s3_endpoint": s3_server.endpoint,
        "s3_access_key": s3_server.access_key,
        "s3_secret_key": s3_server.secret_key,
        "bucket": bucket,
        "s3_retries": 2,
        "s3_retry_backoff_s": 0.1,
    }
    (tmp_path / "watch").mkdir()
    services: list[Service] = [
        IngestService(IngestSettings(**common, watch_dir=tmp_path / "watch"), http_port=0),
        CipService(CipSettings(**common), http_port=0),
        InferenceService(
            InferenceSettings(
                **common,
                triton_url=f"127.0.0.1:{_free_port()}",  # nothing listens: Triton "down"
                triton_ready_timeout_s=1.0,
                model_dir=model_folder,
            ),
            http_port=0,
        ),
        MetricsService(MetricsSettings(**common, metrics_methods=["cip", "cdl"]), http_port=0),
    ]
    threads: list[threading.Thread] = [s.run_in_thread() for s in services]
    try:
        texts = {}
        deadline = time.monotonic() + 60
        for svc in services:
            while svc.http is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert svc.http is not None, f"{svc.name}: no HTTP endpoint"
            if svc.name != "inference":  # Triton is absent on purpose: never ready
                while not svc.readiness()[0] and time.monotonic() < deadline:
                    time.sleep(0.1)
            with urllib.request.urlopen(f"http://127.0.0.1:{svc.port}/metrics", timeout=10) as r:
                texts[svc.name] = r.read().decode()
        yield texts
    finally:
        for svc in services:
            svc.stop()
        for t in threads:
            t.join(30)


def test_queried_metrics_are_exported(helm: Path, service_metrics: dict[str, str]) -> None:
    exported = set().union(*(_exposed(t) for t in service_metrics.values()))
    queries = _queries(helm)
    assert len(queries) >= 15
    used = set().union(*queries.values())
    assert any(n.startswith("phagoflow_") for n in used)
    problems = [
        f"{where}: {name}"
        for where, names in sorted(queries.items())
        for name in sorted(names)
        if name not in exported and name not in FOREIGN
    ]
    assert not problems, "metric names no service exports:\n" + "\n".join(problems)
    # the foreign allow-list must not hide phagoflow names
    assert not any(n.startswith("phagoflow_") for n in FOREIGN)
    # and each scrape really came from its service
    expect = {
        "ingest": "phagoflow_fields_acquired_total",
        "cip": "phagoflow_records_total",
        "inference": "phagoflow_triton_unavailable_total",
        "metrics": "phagoflow_plate_complete",
    }
    for svc, name in expect.items():
        assert name in _exposed(service_metrics[svc]), f"{svc} lacks {name}"
