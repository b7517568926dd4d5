"""Helm chart: lint, render for each scenario, validate every manifest offline.

No Kubernetes API server runs here. Built-in kinds are validated against the Kubernetes JSON
schema for 1.30 (strict: unknown fields fail) with kubernetes-validate; custom resources (KEDA
ScaledObject, Prometheus Operator ServiceMonitor/PrometheusRule) are checked field by field here,
and the alert expressions with promtool (required under CI).
"""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ci_tools import require_executable

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "phagoflow"
SCENARIOS = {
    "default": [],
    "gpu": ["-f", str(CHART / "ci" / "values-gpu.yaml")],
    "gpu-tensorrt": ["-f", str(CHART / "ci" / "values-gpu-tensorrt.yaml")],
    "external": ["-f", str(CHART / "ci" / "values-external.yaml")],
    "keda-off": ["-f", str(CHART / "ci" / "values-keda-off.yaml")],
}
K8S_VERSIONS = ["1.30.0", "1.37.0"]
CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def _helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, cwd=str(ROOT)
    )


@cache
def _render(helm: Path, scenario: str) -> tuple[dict[str, Any], ...]:
    r = _helm(helm, "template", "pf", str(CHART), "--namespace", "screening", *SCENARIOS[scenario])
    assert r.returncode == 0, r.stderr
    return tuple(d for d in yaml.safe_load_all(r.stdout) if d)


def _by_kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    kind = doc["kind"]
    if kind in ("Deployment", "Job"):
        return [doc["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "Pod":
        return [doc["spec"]]
    return []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint(helm: Path, scenario: str) -> None:
    r = _helm(helm, "lint", str(CHART), "--strict", *SCENARIOS[scenario])
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifests_validate(helm: Path, scenario: str, version: str) -> None:
    docs = _render(helm, scenario)
    assert docs
    custom = 0
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM:
            custom += 1
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{scenario}: {doc['kind']}/{doc['metadata']['name']}: {exc}")
    if scenario != "keda-off":
        assert custom > 0


def test_scenarios_render_what_they_promise(helm: Path) -> None:
    default = _render(helm, "default")
    kinds = {d["kind"] for d in default}
    assert "ScaledObject" in kinds and "HorizontalPodAutoscaler" not in kinds
    assert set(_by_kind(default, "Deployment")) == {
        f"pf-phagoflow-{c}" for c in ("ingest", "cip", "metrics")
    }
    gpu = _render(helm, "gpu")
    deployments = _by_kind(gpu, "Deployment")
    assert {"pf-phagoflow-triton", "pf-phagoflow-inference", "pf-phagoflow-review"} <= set(
        deployments
    )
    assert {"pf-phagoflow-training", "pf-phagoflow-train-trigger"} <= set(_by_kind(gpu, "CronJob"))
    off = _render(helm, "keda-off")
    hpas = _by_kind(off, "HorizontalPodAutoscaler")
    assert set(hpas) == {"pf-phagoflow-cip", "pf-phagoflow-inference"}
    assert not _by_kind(off, "ScaledObject")
    assert _by_kind(off, "Deployment")["pf-phagoflow-triton"]["spec"]["replicas"] == 2
    ext = _render(helm, "external")
    (secret,) = _by_kind(ext, "Secret").values()
    assert set(secret["stringData"]) == {"access-key", "secret-key"}
    ingest = _by_kind(ext, "Deployment")["pf-phagoflow-ingest"]["spec"]["template"]["spec"]
    share = next(v for v in ingest["volumes"] if v["name"] == "share")
    assert share["nfs"] == {
        "server": "opera-nas.lab.local",
        "path": "/export/opera",
        "readOnly": True,
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_are_restricted(helm: Path, scenario: str) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, ALL capabilities dropped."""
    for doc in _render(helm, scenario):
        for pod in _pod_specs(doc):
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            pod_ctx = pod.get("securityContext", {})
            token = pod.get("automountServiceAccountToken")
            assert token is False or doc["metadata"]["name"].endswith("train-trigger"), where
            for c in [*pod.get("initContainers", []), *pod["containers"]]:
                ctx = c.get("securityContext", {})
                assert ctx.get("readOnlyRootFilesystem") is True, f"{where}/{c['name']}"
                assert ctx.get("allowPrivilegeEscalation") is False, f"{where}/{c['name']}"
                assert ctx.get("capabilities", {}).get("drop") == ["ALL"], f"{where}/{c['name']}"
                assert ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot"), (
                    f"{where}/{c['name']}"
                )
                assert "resources" in c and c["resources"].get("limits", {}).get("memory"), where
                for env in c.get("env", []):
                    if "KEY" in env["name"] or "TOKEN" in env["name"]:
                        assert "valueFrom" in env, f"{where}: {env['name']} must come from a Secret"


def test_gpu_pods(helm: Path) -> None:
    for scenario in ("gpu", "gpu-tensorrt"):
        docs = _render(helm, scenario)
        triton = _by_kind(docs, "Deployment")["pf-phagoflow-triton"]["spec"]["template"]["spec"]
        (c,) = triton["containers"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert triton["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert any(t["key"] == "nvidia.com/gpu" for t in triton["tolerations"])
        ports = {
            p["name"]: p["port"]
            for p in _by_kind(docs, "Service")["pf-phagoflow-triton"]["spec"]["ports"]
        }
        assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
        training = _by_kind(docs, "CronJob").get("pf-phagoflow-training")
        if training is not None:
            job = training["spec"]["jobTemplate"]["spec"]
            assert job["backoffLimit"] == 1 and job["ttlSecondsAfterFinished"] > 0
            (t,) = job["template"]["spec"]["containers"]
            assert t["resources"]["limits"]["nvidia.com/gpu"] == 1
    onnx = _by_kind(_render(helm, "gpu"), "Deployment")["pf-phagoflow-triton"]["spec"]["template"][
        "spec"
    ]
    args = onnx["containers"][0]["args"]
    assert "--model-repository=s3://minio:9000/phagoflow/models" in args
    assert "--model-control-mode=poll" in args
    trt = _by_kind(_render(helm, "gpu-tensorrt"), "Deployment")["pf-phagoflow-triton"]["spec"][
        "template"
    ]["spec"]
    assert [c["name"] for c in trt["initContainers"]] == ["pull-model", "build-trt-plan"]
    assert trt["initContainers"][1]["resources"]["limits"]["nvidia.com/gpu"] == 1
    cm = _by_kind(_render(helm, "gpu-tensorrt"), "ConfigMap")["pf-phagoflow-triton-config"]
    assert (
        "build-trt-plan.sh" in cm["data"]
        and 'platform: "tensorrt_plan"' in cm["data"]["trt.config.pbtxt"]
    )
    config = _by_kind(_render(helm, "gpu-tensorrt"), "ConfigMap")["pf-phagoflow"]["data"]
    assert config["PHAGOFLOW_TRITON_MODEL"] == "autophagy_unet_trt"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_custom_resources(helm: Path, scenario: str) -> None:
    docs = _render(helm, scenario)
    deployments = _by_kind(docs, "Deployment")
    services = _by_kind(docs, "Service")
    partitions = 12 if scenario == "external" else 6
    for so in _by_kind(docs, "ScaledObject").values():
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        spec = so["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments
        assert "replicas" not in deployments[spec["scaleTargetRef"]["name"]]["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["triggers"]
        for trig in spec["triggers"]:
            meta = trig["metadata"]
            if trig["type"] == "kafka":
                assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= set(meta)
                assert meta["consumerGroup"] in ("cip", "cdl")
                assert spec["maxReplicaCount"] <= partitions, "replicas beyond partitions idle"
            else:
                assert trig["type"] == "prometheus"
                assert {"serverAddress", "query", "threshold"} <= set(meta)
    for sm in _by_kind(docs, "ServiceMonitor").values():
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        sel = sm["spec"]["selector"]["matchLabels"]
        matched = [s for s in services.values() if sel.items() <= s["metadata"]["labels"].items()]
        assert matched, f"ServiceMonitor {sm['metadata']['name']} selects no Service"
        for ep in sm["spec"]["endpoints"]:
            for s in matched:
                assert ep["port"] in {p["name"] for p in s["spec"]["ports"]}
    for pr in _by_kind(docs, "PrometheusRule").values():
        rules = [r for g in pr["spec"]["groups"] for r in g["rules"]]
        assert {r["alert"] for r in rules} >= {
            "PhagoflowConsumerLagGrowing",
            "PhagoflowDeadLetters",
            "PhagoflowRecordErrorRate",
            "PhagoflowTritonNotReady",
            "PhagoflowNoFieldsWhilePlateOpen",
        }
        assert all(r["expr"].strip() and r["labels"]["severity"] for r in rules)


def test_alert_rules_parse_with_promtool(helm: Path, tmp_path: Path) -> None:
    promtool = require_executable("promtool", "apt-get install -y prometheus")  # fails under CI
    (pr,) = _by_kind(_render(helm, "gpu"), "PrometheusRule").values()
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": pr["spec"]["groups"]}))
    r = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 6 rules found" in r.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            ["--set", "cip.autoscaling.maxReplicas=7"],
            "cip.autoscaling.maxReplicas (7) must be <= topics.partitions (6)",
        ),
        (["--set", "inference.enabled=true"], "inference.enabled needs triton.enabled=true"),
        (
            ["--set", "metrics.methods={cip,cdl}"],
            "inference.enabled=false: plates would never complete",
        ),
        (["--set", "externalS3.existingSecret="], "externalS3: set existingSecret"),
        (["--set", "ingest.share.type=nfs"], "ingest.share.nfs.server and ingest.share.nfs.path"),
        (["--set", "triton.flavour=cuda"], "triton/flavour"),
        (["--set", "topics.partitions=0"], "topics/partitions"),
        (["--set", "cip.unknownKey=1"], "unknownKey"),
    ],
)
def test_invalid_values_fail_clearly(helm: Path, values: list[str], message: str) -> None:
    r = _helm(helm, "template", "pf", str(CHART), *values)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr


def test_values_fully_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    params = set(re.findall(r"## @param (\S+)", text))
    free = {"commonLabels", "resources", "nodeSelector", "affinity", "annotations", "labels"}
    free |= {"channelRoles", "parameters", "prometheusNamespaceSelector"}

    def leaves(v: Any, path: str) -> list[str]:
        if isinstance(v, dict) and v and path.rsplit(".", 1)[-1] not in free:
            return [x for k, c in v.items() for x in leaves(c, f"{path}.{k}" if path else k)]
        return [path]

    keys = leaves(yaml.safe_load(text), "")
    assert sorted(set(keys) - params) == [], "values without ## @param"
    assert sorted(params - set(keys)) == [], "## @param for keys that do not exist"
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False and "triton" in schema["properties"]


def test_chart_copies_match_sources() -> None:
    """The chart embeds the Triton configs and the TensorRT script: they must not drift."""
    files = CHART / "files" / "triton"
    pairs = {
        "autophagy_unet.config.pbtxt": ROOT / "model_repository/autophagy_unet/config.pbtxt",
        "autophagy_unet_trt.config.pbtxt": ROOT
        / "model_repository/autophagy_unet_trt/config.pbtxt",
        "build-trt-plan.sh": ROOT / "deploy/triton/build-trt-plan.sh",
    }
    for name, source in pairs.items():
        assert (files / name).read_text() == source.read_text(), f"copy {name} from {source}"


def test_dashboard_panels() -> None:
    dash = json.loads((CHART / "files" / "dashboards" / "phagoflow.json").read_text())
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for needle in (
        "fields per hour",
        "per-plate progress",
        "acquisition to result",
        "heat map",
        "cip vs cdl",
        "gpu utilisation",
    ):
        assert needle in titles
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert all(t["expr"] for p in dash["panels"] for t in p["targets"])


def test_helm_test_hook(helm: Path) -> None:
    pods = _by_kind(_render(helm, "gpu"), "Pod")
    (pod,) = pods.values()
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    urls = pod["spec"]["containers"][0]["args"][1:]
    assert "http://pf-phagoflow-cip:8402/readyz" in urls
    assert "http://pf-phagoflow-triton:8000/v2/models/autophagy_unet/ready" in urls


def test_notes_render(helm: Path) -> None:
    r = _helm(
        helm, "install", "pf", str(CHART), "--dry-run=client", "-n", "screening", *SCENARIOS["gpu"]
    )
    assert r.returncode == 0, r.stderr
    assert "helm test pf -n screening" in r.stdout
    assert "inference follows a promotion without a restart" in r.stdout
    assert "rollout restart deployment/pf-phagoflow-inference" not in r.stdout
