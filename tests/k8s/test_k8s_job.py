"""Training Job objects: built with the official client, serialised by it, schema-validated.

No Kubernetes API server can run here: the objects are checked against the Kubernetes JSON
schema (kubernetes-validate, strict: unknown fields fail) for 1.30 and the newest bundled
version, and field by field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes import client as k8s
from pydantic import ValidationError

from phagoflow.cli import main
from phagoflow.k8s.client import status_from_job
from phagoflow.k8s.job import (
    TrainingJobSpec,
    build_training_cronjob,
    build_training_job,
    job_name,
    to_manifest,
)

VERSIONS = ["1.30.0", "1.37.0"]
NOW = datetime(2026, 11, 26, 3, 4, 5, tzinfo=UTC)


def _spec(**kw: Any) -> TrainingJobSpec:
    return TrainingJobSpec(
        exports=["/data/incoming/PLATE 1/Images", "/data/incoming/P2"],
        heldout_plates=["P0"],
        train_args=["--epochs", "15"],
        **kw,
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_job_validates_against_schema(version: str) -> None:
    doc = to_manifest(build_training_job(_spec(), now=NOW))
    kubernetes_validate.validate(doc, version, strict=True)
    cron = to_manifest(build_training_cronjob(_spec(), "0 2 * * 0"))
    kubernetes_validate.validate(cron, version, strict=True)


def test_schema_validation_can_fail() -> None:
    doc = to_manifest(build_training_job(_spec(), now=NOW))
    doc["spec"]["backoffLimit"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    doc = to_manifest(build_training_job(_spec(), now=NOW))
    doc["spec"]["template"]["spec"]["gpu"] = 1  # unknown field: strict mode rejects it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_job_fields() -> None:
    doc = to_manifest(build_training_job(_spec(gpus=2), now=NOW))
    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "Job"
    assert doc["metadata"]["name"] == "phagoflow-train-20261126-030405"
    spec = doc["spec"]
    assert spec["backoffLimit"] == 1 and spec["ttlSecondsAfterFinished"] == 7 * 24 * 3600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert set(c["resources"]["requests"]) == {"cpu", "memory"}
    assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    env = {e["name"]: e for e in c["env"]}
    for name, key in (
        ("PHAGOFLOW_S3_ACCESS_KEY", "access-key"),
        ("PHAGOFLOW_S3_SECRET_KEY", "secret-key"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "phagoflow-s3", "key": key}
        assert "value" not in env[name], "credentials must come from the Secret"
    script = c["args"][0]
    assert "'/data/incoming/PLATE 1/Images'" in script  # quoted for the shell
    assert "--device cuda --epochs 15 &&" in script
    assert "--promote" in script and script.endswith("--plates P0")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["share"]["readOnly"] is True
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["share"]["persistentVolumeClaim"]["claimName"] == "phagoflow-microscope-share"


def test_cronjob_fields() -> None:
    doc = to_manifest(build_training_cronjob(_spec(), "30 1 * * *"))
    assert doc["spec"]["concurrencyPolicy"] == "Forbid"
    job = doc["spec"]["jobTemplate"]["spec"]
    assert job["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    with pytest.raises(ValueError, match="5 cron fields"):
        build_training_cronjob(_spec(), "daily")


def test_spec_validation() -> None:
    with pytest.raises(ValidationError):
        TrainingJobSpec(exports=[])
    with pytest.raises(ValidationError, match="DNS-1123"):
        TrainingJobSpec(exports=["/x"], namespace="Bad_Name")
    with pytest.raises(ValidationError):
        TrainingJobSpec(exports=["/x"], gpus=0)
    assert len(job_name("p" * 60, NOW)) <= 63


def test_status_from_job() -> None:
    def job(**status: Any) -> k8s.V1Job:
        return k8s.V1Job(
            metadata=k8s.V1ObjectMeta(name="j", namespace="n"), status=k8s.V1JobStatus(**status)
        )

    assert status_from_job(job()).phase == "pending"
    assert status_from_job(job(active=1)).phase == "running"
    done = k8s.V1JobCondition(type="Complete", status="True")
    assert status_from_job(job(succeeded=1, conditions=[done])).phase == "succeeded"
    failed = k8s.V1JobCondition(
        type="Failed", status="True", reason="BackoffLimitExceeded", message="2 failures"
    )
    s = status_from_job(job(failed=2, conditions=[failed]))
    assert (s.phase, s.failed) == ("failed", 2) and "BackoffLimitExceeded" in s.message


def test_cli_dry_run_prints_valid_job(capsys: pytest.CaptureFixture[str]) -> None:
    args = "train-job --namespace screening submit /data/incoming/P9 --gpus 1 --dry-run"
    rc = main([*args.split(), "--train-arg=--epochs=3"])
    assert rc == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    kubernetes_validate.validate(doc, "1.30.0", strict=True)
    assert doc["metadata"]["namespace"] == "screening"
    assert "--epochs=3" in doc["spec"]["template"]["spec"]["containers"][0]["args"][0]


def test_cli_without_cluster_fails_clearly(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["train-job", "status", "phagoflow-train-x"]) == 1
    assert capsys.readouterr().err.startswith("phagoflow: ")
