"""Kubernetes objects of a GPU training run (``batch/v1`` Job and CronJob).

The container trains on plate exports read from the microscope share (mounted read-only at the
path ingest saw them, so ``export_root`` of an ingest manifest is valid inside the pod), then
pushes the model folder to the registry and promotes it through the gate::

    phagoflow train EXPORT... --out /work/model --device cuda [TRAIN_ARGS]
    phagoflow model push /work/model --source $JOB --promote --plates HELDOUT...
"""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "TrainingJobSpec",
    "build_training_cronjob",
    "build_training_job",
    "job_name",
    "to_manifest",
    "training_command",
]

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: Labels on every object of a training run.
APP_LABELS = {"app.kubernetes.io/name": "phagoflow", "app.kubernetes.io/component": "training"}


class TrainingJobSpec(BaseModel):
    """Everything a training Job needs (frozen; every field has a production-ready default).

    Attributes
    ----------
    namespace : str
        Namespace of the Job.
    name_prefix : str
        Job names are ``<prefix>-<UTC yyyymmdd-hhmmss>``.
    image : str
        Training image (CUDA torch; ``deploy/docker/Dockerfile.train``).
    exports : list of str
        Plate export folders as seen inside the pod (under ``share_mount``).
    heldout_plates : list of str
        Plates for the promotion gate (their curated or CIP masks in the bucket).
    train_args : list of str
        Extra ``phagoflow train`` arguments (e.g. ``["--epochs", "15"]``).
    share_claim : str
        PersistentVolumeClaim of the microscope share (mounted read-only).
    share_mount : str
        Where the share is mounted (the same path ingest watches).
    gpus : int
        ``nvidia.com/gpu`` limit.
    node_selector : dict of str to str
        Schedules onto GPU nodes (NVIDIA GPU feature discovery's label by default).
    tolerations : list of dict
        Tolerations of the GPU nodes' taints (``nvidia.com/gpu:NoSchedule`` by default).
    cpu_request, memory_request, memory_limit : str
        Resource quantities.
    s3_endpoint, bucket : str
        MinIO endpoint ``host:port`` and bucket.
    s3_secure : bool
        HTTPS to MinIO.
    s3_secret : str
        Secret with keys ``access-key`` and ``secret-key`` (the chart's MinIO Secret).
    triton_config : str
        Triton config pinned on a first promotion (mounted from ``triton_config_map``).
    triton_config_map : str
        ConfigMap holding ``config.pbtxt`` (the chart's ``<release>-phagoflow-triton-config``).
    backoff_limit : int
        Retries of a failed pod.
    ttl_seconds_after_finished : int
        Finished Jobs (and their pods and logs) are deleted after this long.
    active_deadline_seconds : int
        Hard limit of a run.
    service_account : str
        Service account (no API token is mounted).
    run_as_user : int
        Non-root user id.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = "phagoflow"
    name_prefix: str = Field(default="phagoflow-train", max_length=40)
    image: str = "ghcr.io/phagoflow/phagoflow-train:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    exports: list[str] = Field(min_length=1)
    heldout_plates: list[str] = Field(default_factory=list)
    train_args: list[str] = Field(default_factory=list)
    share_claim: str = "phagoflow-microscope-share"
    share_mount: str = "/data/incoming"
    gpus: int = Field(default=1, ge=1, le=16)
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    )
    cpu_request: str = "4"
    memory_request: str = "16Gi"
    memory_limit: str = "32Gi"
    s3_endpoint: str = "minio:9000"
    bucket: str = "phagoflow"
    s3_secure: bool = False
    s3_secret: str = "phagoflow-s3"
    triton_config: str = "/etc/phagoflow/triton/config.pbtxt"
    triton_config_map: str = "phagoflow-triton-config"
    backoff_limit: int = Field(default=1, ge=0, le=10)
    ttl_seconds_after_finished: int = Field(default=7 * 24 * 3600, ge=0)
    active_deadline_seconds: int = Field(default=6 * 3600, ge=60)
    service_account: str = "phagoflow-train"
    run_as_user: int = Field(default=1001, ge=1)

    @field_validator(
        "namespace",
        "name_prefix",
        "share_claim",
        "s3_secret",
        "service_account",
        "triton_config_map",
    )
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if not _DNS1123.match(value) or len(value) > 63:
            raise ValueError(f"{value!r} is not a DNS-1123 name (lower case, digits, '-')")
        return value


def job_name(prefix: str, now: datetime | None = None) -> str:
    """``<prefix>-<yyyymmdd-hhmmss>`` in UTC (at most 63 characters)."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}"[:63].rstrip("-")


def training_command(spec: TrainingJobSpec) -> str:
    """The shell command the training container runs (quoted with :func:`shlex.quote`)."""
    train = [
        "phagoflow",
        "train",
        *spec.exports,
        "--out",
        "/work/model",
        "--device",
        "cuda",
        *spec.train_args,
    ]
    push = [
        "phagoflow",
        "model",
        "push",
        "/work/model",
        "--source",
        "$(JOB_NAME)",
        "--promote",
        "--triton-config",
        spec.triton_config,
    ]
    if spec.heldout_plates:
        push += ["--plates", *spec.heldout_plates]
    quoted = " ".join(shlex.quote(a) for a in push).replace("'$(JOB_NAME)'", '"${JOB_NAME}"')
    return " ".join(shlex.quote(a) for a in train) + " && " + quoted


def _env(spec: TrainingJobSpec) -> list[k8s.V1EnvVar]:
    """Environment of the training container: the Job's name, MinIO, cache and JSON logs."""

    def from_secret(name: str, key: str) -> k8s.V1EnvVar:
        selector = k8s.V1SecretKeySelector(name=spec.s3_secret, key=key)
        return k8s.V1EnvVar(name=name, value_from=k8s.V1EnvVarSource(secret_key_ref=selector))

    job_label = k8s.V1ObjectFieldSelector(
        field_path="metadata.labels['batch.kubernetes.io/job-name']"
    )
    return [
        k8s.V1EnvVar(name="JOB_NAME", value_from=k8s.V1EnvVarSource(field_ref=job_label)),
        k8s.V1EnvVar(name="PHAGOFLOW_S3_ENDPOINT", value=spec.s3_endpoint),
        k8s.V1EnvVar(name="PHAGOFLOW_S3_SECURE", value=str(spec.s3_secure).lower()),
        k8s.V1EnvVar(name="PHAGOFLOW_BUCKET", value=spec.bucket),
        from_secret("PHAGOFLOW_S3_ACCESS_KEY", "access-key"),
        from_secret("PHAGOFLOW_S3_SECRET_KEY", "secret-key"),
        k8s.V1EnvVar(name="PHAGOFLOW_CACHE_DIR", value="/work/cache"),
        k8s.V1EnvVar(name="HOME", value="/tmp"),
        k8s.V1EnvVar(name="PHAGOFLOW_LOG_JSON", value="true"),
    ]


def _resources(spec: TrainingJobSpec) -> k8s.V1ResourceRequirements:
    """CPU and memory requests; memory and ``nvidia.com/gpu`` limits."""
    return k8s.V1ResourceRequirements(
        requests={"cpu": spec.cpu_request, "memory": spec.memory_request},
        limits={"memory": spec.memory_limit, "nvidia.com/gpu": str(spec.gpus)},
    )


def _container_security(spec: TrainingJobSpec) -> k8s.V1SecurityContext:
    """Non-root, no privilege escalation, read-only root file system, no capabilities."""
    return k8s.V1SecurityContext(
        run_as_non_root=True,
        run_as_user=spec.run_as_user,
        run_as_group=spec.run_as_user,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def _pod_security(spec: TrainingJobSpec) -> k8s.V1PodSecurityContext:
    """Non-root user and group of the pod; volumes are group-owned by it (``fs_group``)."""
    return k8s.V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=spec.run_as_user,
        run_as_group=spec.run_as_user,
        fs_group=spec.run_as_user,
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def _volume_mounts(spec: TrainingJobSpec) -> list[k8s.V1VolumeMount]:
    """Where the container sees each of :func:`_volumes` (the share and config read-only)."""
    return [
        k8s.V1VolumeMount(name="share", mount_path=spec.share_mount, read_only=True),
        k8s.V1VolumeMount(name="work", mount_path="/work"),
        k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
        k8s.V1VolumeMount(name="shm", mount_path="/dev/shm"),
        k8s.V1VolumeMount(
            name="triton-config",
            mount_path=spec.triton_config.rsplit("/", 1)[0],
            read_only=True,
        ),
    ]


def _volumes(spec: TrainingJobSpec) -> list[k8s.V1Volume]:
    """The microscope share, scratch space (work 50 GiB, tmp 1 GiB, shm) and the Triton config."""
    return [
        k8s.V1Volume(
            name="share",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                claim_name=spec.share_claim, read_only=True
            ),
        ),
        k8s.V1Volume(name="work", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="50Gi")),
        k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="1Gi")),
        # torch DataLoader workers share tensors through /dev/shm (64 MiB by default)
        k8s.V1Volume(name="shm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory")),
        k8s.V1Volume(
            name="triton-config",
            config_map=k8s.V1ConfigMapVolumeSource(name=spec.triton_config_map),
        ),
    ]


def _container(spec: TrainingJobSpec) -> k8s.V1Container:
    """The ``train`` container: :func:`training_command` under ``/bin/sh -c``."""
    return k8s.V1Container(
        name="train",
        image=spec.image,
        image_pull_policy=spec.image_pull_policy,
        command=["/bin/sh", "-c"],
        args=[training_command(spec)],
        env=_env(spec),
        resources=_resources(spec),
        security_context=_container_security(spec),
        volume_mounts=_volume_mounts(spec),
    )


def _pod_template(spec: TrainingJobSpec) -> k8s.V1PodTemplateSpec:
    """The pod of a training run: one container on a GPU node, no API token, never restarted."""
    return k8s.V1PodTemplateSpec(
        metadata=k8s.V1ObjectMeta(labels=dict(APP_LABELS)),
        spec=k8s.V1PodSpec(
            restart_policy="Never",
            service_account_name=spec.service_account,
            automount_service_account_token=False,
            node_selector=dict(spec.node_selector),
            tolerations=[k8s.V1Toleration(**t) for t in spec.tolerations],
            security_context=_pod_security(spec),
            containers=[_container(spec)],
            volumes=_volumes(spec),
        ),
    )


def _job_spec(spec: TrainingJobSpec) -> k8s.V1JobSpec:
    return k8s.V1JobSpec(
        backoff_limit=spec.backoff_limit,
        ttl_seconds_after_finished=spec.ttl_seconds_after_finished,
        active_deadline_seconds=spec.active_deadline_seconds,
        template=_pod_template(spec),
    )


def build_training_job(spec: TrainingJobSpec, *, now: datetime | None = None) -> k8s.V1Job:
    """A ``batch/v1`` Job that trains on a GPU node, pushes and promotes through the gate.

    Parameters
    ----------
    spec : TrainingJobSpec
        What to train and where.
    now : datetime, optional
        Time used for the Job name (default: now, UTC).
    """
    return k8s.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k8s.V1ObjectMeta(
            name=job_name(spec.name_prefix, now),
            namespace=spec.namespace,
            labels=dict(APP_LABELS),
            annotations={"phagoflow.io/exports": ",".join(spec.exports)[:4000]},
        ),
        spec=_job_spec(spec),
    )


def build_training_cronjob(spec: TrainingJobSpec, schedule: str) -> k8s.V1CronJob:
    """A ``batch/v1`` CronJob running the same Job on ``schedule`` (cron syntax, UTC)."""
    if len(schedule.split()) != 5:
        raise ValueError(f"schedule must have 5 cron fields, got {schedule!r}")
    return k8s.V1CronJob(
        api_version="batch/v1",
        kind="CronJob",
        metadata=k8s.V1ObjectMeta(
            name=spec.name_prefix, namespace=spec.namespace, labels=dict(APP_LABELS)
        ),
        spec=k8s.V1CronJobSpec(
            schedule=schedule,
            time_zone="Etc/UTC",
            concurrency_policy="Forbid",  # the registry has one writer at a time
            successful_jobs_history_limit=3,
            failed_jobs_history_limit=3,
            job_template=k8s.V1JobTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=dict(APP_LABELS)), spec=_job_spec(spec)
            ),
        ),
    )


def to_manifest(obj: Any) -> dict[str, Any]:
    """Plain JSON-ready dict of a client model, as the client sends it to the API server."""
    out: dict[str, Any] = k8s.ApiClient().sanitize_for_serialization(obj)
    return out
