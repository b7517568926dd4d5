"""Submit, inspect and follow training Jobs through the official ``kubernetes`` client.

Only exercised against a real cluster (none can run on the development and CI machines); the
objects it sends are tested offline in ``tests/k8s``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch

__all__ = ["JobStatus", "job_logs", "job_status", "load_config", "submit_job", "wait_for_job"]


def load_config(context: str | None = None) -> None:
    """In-cluster configuration inside a pod, else ``~/.kube/config`` (optionally ``context``)."""
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(context=context)


@dataclass(frozen=True)
class JobStatus:
    """Summary of a Job.

    Attributes
    ----------
    name, namespace : str
        The Job.
    phase : {'pending', 'running', 'succeeded', 'failed'}
        Derived from the Job's counters and conditions.
    active, succeeded, failed : int
        Pod counters.
    message : str
        The failure condition's reason and message, if any.
    """

    name: str
    namespace: str
    phase: str
    active: int
    succeeded: int
    failed: int
    message: str = ""


def status_from_job(job: k8s.V1Job) -> JobStatus:
    """:class:`JobStatus` of a Job object as the API returns it (pure)."""
    st = job.status or k8s.V1JobStatus()
    conditions = {c.type: c for c in (st.conditions or []) if c.status == "True"}
    if "Complete" in conditions:
        phase, message = "succeeded", ""
    elif "Failed" in conditions:
        c = conditions["Failed"]
        phase, message = "failed", f"{c.reason or ''}: {c.message or ''}".strip(": ")
    elif st.active:
        phase, message = "running", ""
    else:
        phase, message = "pending", ""
    return JobStatus(
        name=job.metadata.name,
        namespace=job.metadata.namespace,
        phase=phase,
        active=st.active or 0,
        succeeded=st.succeeded or 0,
        failed=st.failed or 0,
        message=message,
    )


def submit_job(job: k8s.V1Job, *, api: k8s.BatchV1Api | None = None) -> k8s.V1Job:
    """Create ``job`` in its namespace; returns the object the server stored."""
    api = api or k8s.BatchV1Api()
    created: k8s.V1Job = api.create_namespaced_job(job.metadata.namespace, job)
    return created


def job_status(name: str, namespace: str, *, api: k8s.BatchV1Api | None = None) -> JobStatus:
    """Current :class:`JobStatus` of a Job."""
    api = api or k8s.BatchV1Api()
    return status_from_job(api.read_namespaced_job_status(name, namespace))


def wait_for_job(
    name: str, namespace: str, *, timeout_s: int = 6 * 3600, api: k8s.BatchV1Api | None = None
) -> Iterator[JobStatus]:
    """Yield the Job's status at every change until it succeeds, fails or ``timeout_s`` passes."""
    api = api or k8s.BatchV1Api()
    w = watch.Watch()
    stream: Any = w.stream(
        api.list_namespaced_job,
        namespace,
        field_selector=f"metadata.name={name}",
        timeout_seconds=timeout_s,
    )
    for event in stream:
        status = status_from_job(event["object"])
        yield status
        if status.phase in ("succeeded", "failed"):
            w.stop()
            return


def job_logs(
    name: str,
    namespace: str,
    *,
    follow: bool = False,
    tail_lines: int | None = None,
    api: k8s.CoreV1Api | None = None,
) -> Iterator[str]:
    """Log lines of the Job's newest pod (``follow``: until the container ends)."""
    api = api or k8s.CoreV1Api()
    pods = api.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={name}")
    if not pods.items:
        raise LookupError(f"no pod of Job {namespace}/{name} (yet)")
    pod = max(pods.items, key=lambda p: p.metadata.creation_timestamp)
    kwargs: dict[str, Any] = {"container": "train", "tail_lines": tail_lines}
    if follow:
        resp = api.read_namespaced_pod_log(
            pod.metadata.name, namespace, follow=True, _preload_content=False, **kwargs
        )
        for line in resp:  # urllib3 responses iterate by line
            yield line.decode(errors="replace").rstrip("\n")
    else:
        text: str = api.read_namespaced_pod_log(pod.metadata.name, namespace, **kwargs)
        yield from text.splitlines()
