"""``phagoflow train-job submit|status|logs|trigger``: GPU training Jobs on Kubernetes.

Cluster access: in-cluster service account inside a pod, else ``~/.kube/config``
(``--context``). ``submit --dry-run`` and ``trigger --dry-run`` print the Job as YAML and need
no cluster.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from phagoflow.cli import common

__all__ = ["add_parser", "add_train_job_commands", "spec_from_args"]

logger = logging.getLogger(__name__)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"PHAGOFLOW_TRAIN_{name}") or default


TRAIN_JOB_HELP = "train the U-Net on a GPU node as a Kubernetes Job (submit, status, logs, trigger)"
TRAIN_JOB_DESCRIPTION = """
Create a batch/v1 Job that runs `phagoflow train` on a GPU node (node selector, tolerations,
nvidia.com/gpu limit, MinIO credentials from a Secret), then pushes the model to the registry and
promotes it through the gate. Defaults come from PHAGOFLOW_TRAIN_* variables (set by the Helm
chart) or the flags.
"""
TRIGGER_HELP = "submit a Job when N plates completed since the last model version"
TRIGGER_DESCRIPTION = """
Read the ingest manifests and the model registry in the bucket (PHAGOFLOW_S3_*), apply the rule 'at
least N new complete plates since the newest model', and if it holds submit a Job training on those
plates' exports. Exit 0 submitted or not due.
"""


def add_parser(sub: Any) -> None:
    """Add ``train-job`` and its actions to the ``phagoflow`` sub-parsers ``sub``."""
    p = common.command(sub, "train-job", help=TRAIN_JOB_HELP, description=TRAIN_JOB_DESCRIPTION)
    p.add_argument("--namespace", default=_env("NAMESPACE", "phagoflow"), help="namespace")
    p.add_argument("--context", default=None, help="kubeconfig context (outside a cluster)")
    acts = common.actions(p, "train_job_command")

    a = common.command(
        acts, "submit", _safe(_cmd_submit), help="submit a training Job on plate exports"
    )
    a.add_argument("exports", nargs="+", metavar="EXPORT", help="export folders inside the pod")
    _add_spec_options(a)

    a = common.command(acts, "status", _safe(_cmd_status), help="phase and pod counters of a Job")
    a.add_argument("name")
    a.add_argument("--wait", action="store_true", help="follow until it ends")

    a = common.command(acts, "logs", _safe(_cmd_logs), help="logs of a Job's pod")
    a.add_argument("name")
    a.add_argument("-f", "--follow", action="store_true", help="stream until the pod ends")
    a.add_argument("--tail", type=int, default=None, help="last N lines")

    a = common.command(
        acts, "trigger", _safe(_cmd_trigger), help=TRIGGER_HELP, description=TRIGGER_DESCRIPTION
    )
    a.add_argument(
        "--min-new-plates", type=int, default=int(_env("MIN_NEW_PLATES", "5")), help="N (5)"
    )
    _add_spec_options(a)


#: The name the ``phagoflow`` parser knew this by before the CLI became a package.
add_train_job_commands = add_parser


def _add_spec_options(a: argparse.ArgumentParser) -> None:
    """The Job's options of ``submit`` and ``trigger`` (defaults from ``PHAGOFLOW_TRAIN_*``)."""
    _add_pod_options(a)
    _add_scheduling_options(a)
    a.add_argument(
        "--heldout-plates", nargs="*", default=_env("HELDOUT_PLATES", "").split(), help="gate"
    )
    a.add_argument(
        "--train-arg",
        action="append",
        default=_env("ARGS", "").split(),
        metavar="ARG",
        help="extra `phagoflow train` argument (repeatable), e.g. --train-arg=--epochs=15",
    )
    a.add_argument("--dry-run", action="store_true", help="print the Job as YAML, submit nothing")
    a.add_argument("--wait", action="store_true", help="follow the Job until it ends")


def _add_pod_options(a: argparse.ArgumentParser) -> None:
    """Image, GPUs, the share, the bucket and the accounts of the Job's pod."""
    a.add_argument("--image", default=_env("IMAGE", "ghcr.io/phagoflow/phagoflow-train:0.1.0"))
    a.add_argument("--gpus", type=int, default=int(_env("GPUS", "1")), help="GPUs (1)")
    a.add_argument("--share-claim", default=_env("SHARE_CLAIM", "phagoflow-microscope-share"))
    a.add_argument("--share-mount", default=_env("SHARE_MOUNT", "/data/incoming"))
    a.add_argument("--s3-secret", default=_env("S3_SECRET", "phagoflow-s3"))
    a.add_argument(
        "--s3-endpoint",
        default=os.environ.get("PHAGOFLOW_S3_ENDPOINT", "minio:9000"),
        help="MinIO host:port (PHAGOFLOW_S3_ENDPOINT)",
    )
    a.add_argument("--bucket", default=os.environ.get("PHAGOFLOW_BUCKET", "phagoflow"))
    a.add_argument("--service-account", default=_env("SERVICE_ACCOUNT", "phagoflow-train"))
    a.add_argument(
        "--triton-config-map", default=_env("TRITON_CONFIG_MAP", "phagoflow-triton-config")
    )


def _add_scheduling_options(a: argparse.ArgumentParser) -> None:
    """Where the Job's pod may run, what it reserves and how long the Job is kept."""
    a.add_argument(
        "--node-selector",
        type=json.loads,
        default=_env("NODE_SELECTOR", '{"nvidia.com/gpu.present": "true"}'),
        help="JSON object (PHAGOFLOW_TRAIN_NODE_SELECTOR)",
    )
    a.add_argument(
        "--tolerations",
        type=json.loads,
        default=_env(
            "TOLERATIONS",
            '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]',
        ),
        help="JSON list (PHAGOFLOW_TRAIN_TOLERATIONS)",
    )
    a.add_argument("--cpu-request", default=_env("CPU_REQUEST", "4"))
    a.add_argument("--memory-request", default=_env("MEMORY_REQUEST", "16Gi"))
    a.add_argument("--memory-limit", default=_env("MEMORY_LIMIT", "32Gi"))
    a.add_argument("--ttl-seconds", type=int, default=int(_env("TTL_SECONDS", str(7 * 24 * 3600))))
    a.add_argument("--backoff-limit", type=int, default=int(_env("BACKOFF_LIMIT", "1")))


#: The TrainingJobSpec fields that have a flag of the same name (``--share-claim``: share_claim).
_SPEC_FLAGS = (
    "namespace",
    "image",
    "share_claim",
    "share_mount",
    "gpus",
    "s3_endpoint",
    "bucket",
    "s3_secret",
    "service_account",
    "triton_config_map",
    "node_selector",
    "tolerations",
    "cpu_request",
    "memory_request",
    "memory_limit",
    "backoff_limit",
)


def spec_from_args(args: argparse.Namespace, exports: list[str]) -> Any:
    """The :class:`~phagoflow.k8s.job.TrainingJobSpec` described by the command line."""
    from phagoflow.k8s.job import TrainingJobSpec

    return TrainingJobSpec(
        exports=exports,
        heldout_plates=list(args.heldout_plates),
        train_args=list(args.train_arg),
        ttl_seconds_after_finished=args.ttl_seconds,
        **{name: getattr(args, name) for name in _SPEC_FLAGS},
    )


def _submit(args: argparse.Namespace, exports: list[str]) -> int:
    import yaml

    from phagoflow.k8s.job import build_training_job, to_manifest

    job = build_training_job(spec_from_args(args, exports))
    if args.dry_run:
        print(yaml.safe_dump(to_manifest(job), sort_keys=False), end="")
        return 0
    from phagoflow.k8s.client import load_config, submit_job

    load_config(args.context)
    created = submit_job(job)
    print(f"submitted Job {created.metadata.namespace}/{created.metadata.name}")
    if args.wait:
        return _follow(created.metadata.name, args)
    return 0


def _follow(name: str, args: argparse.Namespace) -> int:
    from phagoflow.k8s.client import wait_for_job

    last = None
    for status in wait_for_job(name, args.namespace):
        if status != last:
            print(f"{status.name}: {status.phase} (active {status.active}, failed {status.failed})")
            last = status
    return 0 if last is not None and last.phase == "succeeded" else 1


def _cmd_submit(args: argparse.Namespace) -> int:
    return _submit(args, list(args.exports))


def _cmd_status(args: argparse.Namespace) -> int:
    from phagoflow.k8s.client import job_status, load_config

    load_config(args.context)
    if args.wait:
        return _follow(args.name, args)
    s = job_status(args.name, args.namespace)
    print(
        f"{s.namespace}/{s.name}: {s.phase} (active {s.active}, succeeded {s.succeeded}, "
        f"failed {s.failed}) {s.message}".rstrip()
    )
    return {"succeeded": 0, "failed": 1}.get(s.phase, 3)


def _cmd_logs(args: argparse.Namespace) -> int:
    from phagoflow.k8s.client import job_logs, load_config

    load_config(args.context)
    for line in job_logs(args.name, args.namespace, follow=args.follow, tail_lines=args.tail):
        print(line)
    return 0


def _cmd_trigger(args: argparse.Namespace) -> int:
    from phagoflow.k8s.trigger import completed_plates, last_model_time, retrain_due
    from phagoflow.registry.store import ModelRegistry
    from phagoflow.services.common import ServiceSettings
    from phagoflow.services.objectstore import ObjectStore

    store = ObjectStore.from_settings(ServiceSettings())
    decision = retrain_due(
        completed_plates(store),
        last_model_time(ModelRegistry(store)),
        min_new_plates=args.min_new_plates,
    )
    print(decision.reason)
    if not decision.due:
        return 0
    exports = [p.export_root for p in decision.new_plates if p.export_root]
    if not exports:
        print("phagoflow: the new plates' manifests name no export folder", file=sys.stderr)
        return 1
    return _submit(args, exports)


def _errors() -> tuple[type[BaseException], ...]:
    """What a ``train-job`` action reports in one line (status 1): client, API, validation."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException

    from phagoflow.services.objectstore import ObjectStoreError

    return (ApiException, ConfigException, ObjectStoreError, LookupError, ValueError, OSError)


def _api_line(exc: BaseException) -> str | None:
    """A Kubernetes API error as its status and reason; ``None`` (the message) for the rest."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        return f"Kubernetes API: {exc.status} {exc.reason}"
    return None


def _safe(func: common.Handler) -> common.Handler:
    """Wrap a handler: client, API and validation errors print one line and exit 1."""
    return common.one_line_errors(func, _errors, line=_api_line, log=logger)
