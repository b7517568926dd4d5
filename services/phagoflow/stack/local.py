"""The local full stack: ``phagoflow stack up|down|status`` (``make up`` / ``make down``).

``up`` starts, as detached processes on loopback: tansu (Kafka protocol), moto's S3 server with
the bucket, Triton serving ``model_repository/`` (when a model folder with ``card.json`` is
available), Prometheus scraping every service (when the ``prometheus`` binary is installed),
and the services ``ingest``, ``cip``, ``inference`` (with Triton) and ``metrics``. It records
every process in ``var/stack/stack.json`` and prints the endpoints. ``down`` stops them
(SIGTERM to each process group, services first, SIGKILL after a timeout); ``status`` says which
are alive and ready.

Everything here is local development tooling: production runs the same services against real
Kafka, MinIO and Triton (see the Helm chart).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from phagoflow.stack.kafka import TansuBroker, kafka_api_versions_ok
from phagoflow.stack.process import ManagedProcess, StackError, address, port_open
from phagoflow.stack.s3 import MotoS3Server
from phagoflow.stack.triton import TritonServer

__all__ = [
    "Component",
    "PrometheusServer",
    "ServiceProcess",
    "StackSettings",
    "SupervisorProcess",
    "read_state",
    "stack_down",
    "stack_status",
    "stack_up",
    "start_components",
    "status_lines",
    "write_state",
]

STATE_FILE = "stack.json"
#: Text each component's command line contains (a reused pid is never signalled).
_MARKERS = {
    "kafka": "tansu",
    "s3": "moto.server",
    "triton": "tritonserver",
    "prometheus": "prometheus",
    "supervisor": "phagoflow.stack.supervisor",
}
SERVICE_NAMES = ("ingest", "cip", "inference", "metrics")


class StackSettings(BaseSettings):
    """Ports and folders of the local stack (``PHAGOFLOW_*``; the services read the same names).

    Attributes
    ----------
    stack_dir : Path
        State file and logs (``var/stack``).
    watch_dir : Path
        Folder ingest watches (``PHAGOFLOW_WATCH_DIR``, default ``var/incoming``).
    kafka_port, s3_port : int
        tansu and S3 ports. Every ``*_port`` may be 0: the OS picks the port when the component
        binds, and ``stack.json`` / ``phagoflow stack status`` report the one it got (tests and
        the benchmark use 0 throughout, so they never race another program for a port).
    triton_grpc_port, triton_http_port, triton_metrics_port : int
        Triton's ports.
    prometheus_port : int
        Prometheus UI / API.
    ingest_port, cip_port, inference_port, metrics_port : int
        Each service's HTTP port (metrics: also the JSON API, default 8400).
    cip_workers, inference_workers : int
        Processes in the ``cip`` / ``cdl`` consumer groups (extra workers listen on a port the
        OS picks; ``phagoflow stack status`` lists them; at most the 6 partitions do work).
        Three inference workers by default: each keeps one request in flight, so Triton (two
        CPU instances) always has work queued while the workers download, stitch and upload.
        Measured with ``benchmarks/bench_stream.py`` on 2 cores, 96-field plate, against the
        embedded run: 0.72x with one worker and one Triton instance, 0.78-0.84x with two
        workers, 0.88-0.89x with three workers and two instances.
    bucket : str
        S3 bucket.
    model_dir : Path or None
        U-Net model folder (``card.json`` + ``model.onnx``); default the packaged model. Without
        one, Triton and inference are not started and plates complete with CIP alone.
    model_repository : Path
        Triton model repository.
    restart_backoff_s, restart_backoff_max_s : float
        Supervisor: seconds before the first restart of a component that died, doubled for each
        further crash up to the maximum (Kubernetes' CrashLoopBackOff, shorter).
    restart_reset_s : float
        Seconds a restarted component must stay up before its back-off starts over.
    supervise_every_s : float
        How often the supervisor checks its components, seconds.
    """

    model_config = SettingsConfigDict(env_prefix="PHAGOFLOW_", frozen=True, extra="ignore")

    stack_dir: Path = Path("var/stack")
    watch_dir: Path = Path("var/incoming")
    kafka_port: int = Field(default=9092, ge=0, le=65535)
    s3_port: int = Field(default=9000, ge=0, le=65535)
    triton_grpc_port: int = Field(default=8001, ge=0, le=65535)
    triton_http_port: int = Field(default=8000, ge=0, le=65535)
    triton_metrics_port: int = Field(default=8002, ge=0, le=65535)
    prometheus_port: int = Field(default=9090, ge=0, le=65535)
    ingest_port: int = Field(default=8401, ge=0, le=65535)
    cip_port: int = Field(default=8402, ge=0, le=65535)
    inference_port: int = Field(default=8403, ge=0, le=65535)
    metrics_port: int = Field(default=8400, ge=0, le=65535)
    cip_workers: int = Field(default=1, ge=1, le=16)
    inference_workers: int = Field(default=3, ge=1, le=16)
    bucket: str = "phagoflow"
    model_dir: Path | None = None
    model_repository: Path = Path("model_repository")
    restart_backoff_s: float = Field(default=1.0, gt=0.0)
    restart_backoff_max_s: float = Field(default=30.0, gt=0.0)
    restart_reset_s: float = Field(default=60.0, gt=0.0)
    supervise_every_s: float = Field(default=0.5, gt=0.0)


def _http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class ServiceProcess(ManagedProcess):
    """``python -m phagoflow serve SERVICE``; ready when its ``/readyz`` answers 200."""

    name: ClassVar[str] = "service"

    def __init__(self, service: str, **kwargs: Any) -> None:
        if service not in SERVICE_NAMES:
            raise ValueError(f"unknown service {service!r}; expected one of {SERVICE_NAMES}")
        kwargs.setdefault("startup_timeout_s", 120.0)
        super().__init__(**kwargs)
        self.service = service

    def command(self) -> list[str]:
        return [sys.executable, "-m", "phagoflow", "serve", self.service]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env[f"PHAGOFLOW_{self.service.upper()}_PORT"] = str(self.bind_port)
        env["PHAGOFLOW_HTTP_HOST"] = self.host
        return env

    def is_ready(self) -> bool:
        return _http_ok(f"{self.url}/readyz")

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["name"] = self.service
        return info


class PrometheusServer(ManagedProcess):
    """Prometheus scraping ``targets`` (job → ``host:port``) every 5 s; needs the binary."""

    name: ClassVar[str] = "prometheus"

    def __init__(self, targets: dict[str, str], workdir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.targets = dict(targets)
        self.workdir = Path(workdir)

    @staticmethod
    def executable() -> str | None:
        """The ``prometheus`` binary on PATH (``apt-get install prometheus``), else None."""
        return shutil.which("prometheus")

    def config_text(self) -> str:
        lines = ["global:", "  scrape_interval: 5s", "scrape_configs:"]
        for job, target in sorted(self.targets.items()):
            lines += [
                f"  - job_name: {job}",
                "    static_configs:",
                f"      - targets: ['{target}']",
            ]
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        exe = self.executable()
        if exe is None:
            raise StackError("prometheus is not installed (apt-get install -y prometheus)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(self.config_text())
        return [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={address(self.host, self.bind_port)}",
        ]

    def is_ready(self) -> bool:
        return _http_ok(f"{self.url}/-/ready")


class SupervisorProcess(ManagedProcess):
    """``python -m phagoflow.stack.supervisor``: starts the stack, then restarts what dies.

    It listens on no port; it is ready once it wrote ``stack.json`` with ``"phase": "up"``.
    """

    name: ClassVar[str] = "supervisor"

    def __init__(self, state_path: Path, **kwargs: Any) -> None:
        kwargs.setdefault("startup_timeout_s", 900.0)  # tansu, S3, Triton, 6 services, Prometheus
        super().__init__(**kwargs)
        self.state_path = Path(state_path)

    @property
    def url(self) -> str:
        return self.state_path.resolve().as_uri()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "phagoflow.stack.supervisor"]

    def claim_ports(self, sockets: list[tuple[str, int]]) -> bool:
        return True  # no port of its own

    def is_ready(self) -> bool:
        state = read_state(self.state_path)
        return bool(state and state.get("phase") == "up" and state["supervisor"]["pid"] == self.pid)


# --------------------------------------------------------------------------- components


@dataclass
class Component:
    """A started part of the local stack, as the supervisor keeps it.

    Attributes
    ----------
    name : str
        ``kafka``, ``s3``, ``triton``, ``ingest``, ``cip``, ``inference-2``, ``prometheus``...
    proc : ManagedProcess
        The server (attached to the supervisor: it dies with it).
    startup_s : float
        Seconds its first start took.
    after_restart : callable, optional
        Run after each restart (tansu: re-create the topics its memory-only storage lost).
    restart_loses : str
        What a restart of this component loses, raised as an alert; empty when nothing.
    """

    name: str
    proc: ManagedProcess
    startup_s: float = 0.0
    after_restart: Callable[[], None] | None = None
    restart_loses: str = ""


#: What a restart loses, per component that keeps its data in memory (local stand-ins only).
_RESTART_LOSES = {
    "kafka": (
        "tansu keeps topics in memory only: every event and committed offset is gone; fields "
        "in flight will not complete. The topics were re-created and the services go on: "
        "drop unfinished plates again (a real Kafka cluster keeps them)"
    ),
    "s3": (
        "moto keeps objects in memory only: raw images, masks, manifests and the metrics "
        "snapshot are gone; drop unfinished plates again (MinIO keeps them)"
    ),
}


def _start(
    started: list[Component], echo: Callable[[str], None], name: str, proc: ManagedProcess
) -> ManagedProcess:
    t0 = time.monotonic()
    proc.start()
    component = Component(name, proc, time.monotonic() - t0)
    component.restart_loses = _RESTART_LOSES.get(name, "")
    started.append(component)
    echo(f"  {name:<11} up in {component.startup_s:4.1f} s  {proc.url}")
    return proc


def _start_infra(
    s: StackSettings, started: list[Component], echo: Callable[[str], None]
) -> tuple[TansuBroker, MotoS3Server]:
    from phagoflow import events as ev

    logs = s.stack_dir / "logs"
    kafka = TansuBroker(port=s.kafka_port, log_path=logs / "tansu.log")
    _start(started, echo, "kafka", kafka)
    ev.create_topics(kafka.bootstrap_servers)

    def recreate_topics() -> None:
        kafka.wait_ready(30.0)
        ev.create_topics(kafka.bootstrap_servers)

    started[-1].after_restart = recreate_topics
    s3 = MotoS3Server(port=s.s3_port, log_path=logs / "s3.log")
    _start(started, echo, "s3", s3)
    s3.ensure_buckets([s.bucket])

    def recreate_bucket() -> None:
        s3.wait_ready(30.0)
        s3.ensure_buckets([s.bucket])

    started[-1].after_restart = recreate_bucket
    return kafka, s3


def _model(s: StackSettings) -> tuple[Path, bool]:
    """The model folder and whether CDL runs (it has ``card.json`` and ``model.onnx``)."""
    model_dir = s.model_dir
    if model_dir is None:
        from phagoflow.core.inference import default_model_dir

        model_dir = default_model_dir()
    return model_dir, (model_dir / "card.json").is_file() and (model_dir / "model.onnx").is_file()


def _start_services(
    s: StackSettings,
    env: dict[str, str],
    services: list[str],
    started: list[Component],
    echo: Callable[[str], None],
) -> dict[str, str]:
    """Start every service worker; returns Prometheus targets (label → ``host:port``)."""
    ports = {
        "ingest": s.ingest_port,
        "cip": s.cip_port,
        "inference": s.inference_port,
        "metrics": s.metrics_port,
    }
    workers = {"cip": s.cip_workers, "inference": s.inference_workers}
    targets: dict[str, str] = {}
    for name in services:
        for i in range(workers.get(name, 1)):
            label = name if i == 0 else f"{name}-{i + 1}"
            svc = ServiceProcess(
                name,
                port=ports[name] if i == 0 else 0,  # extra workers: the OS picks, nobody probes
                env=env,
                log_path=s.stack_dir / "logs" / f"{label}.log",
            )
            _start(started, echo, label, svc)
            targets[label] = f"127.0.0.1:{svc.port}"
    return targets


def _start_triton(
    s: StackSettings, model_dir: Path, started: list[Component], echo: Callable[[str], None]
) -> TritonServer:
    triton = TritonServer(
        s.model_repository,
        port=s.triton_grpc_port,
        http_port=s.triton_http_port,
        metrics_port=s.triton_metrics_port,
        model_env={"PHAGOFLOW_MODEL_ONNX": str((model_dir / "model.onnx").resolve())},
        workdir=s.stack_dir / "triton",
        log_path=s.stack_dir / "logs" / "triton.log",
    )
    _start(started, echo, "triton", triton)
    return triton


def _start_prometheus(
    s: StackSettings,
    targets: dict[str, str],
    started: list[Component],
    echo: Callable[[str], None],
) -> ManagedProcess | None:
    """Prometheus scraping ``targets``, when the binary is installed (else None)."""
    if PrometheusServer.executable() is None:
        echo("  (prometheus not installed: apt-get install -y prometheus; not started)")
        return None
    prom = PrometheusServer(
        targets,
        s.stack_dir / "prometheus",
        port=s.prometheus_port,
        log_path=s.stack_dir / "logs" / "prometheus.log",
    )
    return _start(started, echo, "prometheus", prom)


def start_components(
    s: StackSettings, *, started: list[Component], echo: Callable[[str], None]
) -> dict[str, Any]:
    """Start the stack in order (tansu, S3, Triton, services, Prometheus), attached.

    Each component is appended to ``started`` as soon as it is up, so a caller can stop them
    when a later one fails. Returns the facts of the stack for ``stack.json`` (endpoints,
    methods, bucket, watch folder).
    """
    (s.stack_dir / "logs").mkdir(parents=True, exist_ok=True)
    s.watch_dir.mkdir(parents=True, exist_ok=True)
    kafka, s3 = _start_infra(s, started, echo)
    model_dir, with_cdl = _model(s)
    methods = ["cip", "cdl"] if with_cdl else ["cip"]
    env = {
        "PHAGOFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "PHAGOFLOW_S3_ENDPOINT": s3.endpoint,
        "PHAGOFLOW_S3_ACCESS_KEY": s3.access_key,
        "PHAGOFLOW_S3_SECRET_KEY": s3.secret_key,
        "PHAGOFLOW_BUCKET": s.bucket,
        "PHAGOFLOW_WATCH_DIR": str(s.watch_dir.resolve()),
        "PHAGOFLOW_METRICS_METHODS": json.dumps(methods),
    }
    services = ["ingest", "cip", "metrics"]
    triton: TritonServer | None = None
    if with_cdl:
        triton = _start_triton(s, model_dir, started, echo)
        env["PHAGOFLOW_TRITON_URL"] = triton.url
        env["PHAGOFLOW_MODEL_DIR"] = str(model_dir.resolve())
        services.insert(2, "inference")
    else:
        echo(f"  (no model folder at {model_dir}: Triton and inference not started, CIP only)")
    targets = _start_services(s, env, services, started, echo)
    endpoints: dict[str, str] = {"kafka": kafka.bootstrap_servers, "s3": s3.url}
    metrics_port = next(c.proc.port for c in started if c.name == "metrics")
    endpoints["metrics_api"] = f"http://127.0.0.1:{metrics_port}/api/v1/plates"
    endpoints.update({f"{c.name}_http": c.proc.url for c in started if c.name in targets})
    if triton is not None:
        targets["triton"] = triton.metrics_target
        endpoints["triton_grpc"] = triton.url
        endpoints["triton_metrics"] = triton.metrics_url
    prometheus = _start_prometheus(s, targets, started, echo)
    if prometheus is not None:
        endpoints["prometheus"] = prometheus.url
    return {
        "bucket": s.bucket,
        "watch_dir": str(s.watch_dir.resolve()),
        "methods": methods,
        "model_dir": str(model_dir.resolve()) if with_cdl else None,
        "metrics_port": metrics_port,
        "endpoints": endpoints,
    }


# --------------------------------------------------------------------------- up / down / status


def _state_path(settings: StackSettings) -> Path:
    return settings.stack_dir / STATE_FILE


def read_state(path: Path) -> dict[str, Any] | None:
    """``stack.json`` as written by the supervisor, or None when absent or unreadable."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace ``stack.json`` atomically (a reader never sees half a document)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _settings_env(s: StackSettings) -> dict[str, str]:
    """``PHAGOFLOW_*`` variables that give the supervisor exactly these settings."""
    out = {}
    for key, value in s.model_dump(mode="json").items():
        if value is not None:
            out[f"PHAGOFLOW_{key.upper()}"] = str(value)
    return out


def stack_up(
    settings: StackSettings | None = None, *, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Start the local stack under a detached supervisor; returns the state in ``stack.json``.

    The supervisor (``python -m phagoflow.stack.supervisor``) starts every component, records
    them, and restarts any that dies with back-off, as Kubernetes' ``restartPolicy: Always``
    would. The components die with the supervisor, so ``stack down`` stops it.

    Raises
    ------
    StackError
        A stack is already up, or a component failed to start (the supervisor's log is quoted;
        everything started is stopped).
    """
    s = settings if settings is not None else StackSettings()
    state_path = _state_path(s)
    previous = read_state(state_path)
    if previous is not None:
        pids = [previous.get("supervisor", {}).get("pid")]
        pids += [p.get("pid") for p in previous.get("processes", [])]
        if any(_alive(pid) for pid in pids):
            raise StackError("a local stack is already up; run stack down")
        state_path.unlink()
    (s.stack_dir / "logs").mkdir(parents=True, exist_ok=True)
    echo("starting the local phagoflow stack (loopback only), supervised")
    supervisor = SupervisorProcess(
        state_path,
        attached=False,
        env=_settings_env(s),
        log_path=s.stack_dir / "logs" / "supervisor.log",
    )
    try:
        supervisor.start()
    except StackError:
        state_path.unlink(missing_ok=True)
        raise
    state = read_state(state_path) or {}
    for proc in state.get("processes", []):
        echo(f"  {proc['name']:<11} up in {proc['startup_s']:4.1f} s  {proc['url']}")
    echo("endpoints:")
    width = max(map(len, state["endpoints"]), default=0)
    for key, value in state["endpoints"].items():
        echo(f"  {key:<{width}}  {value}")
    echo(f"drop plate exports into {state['watch_dir']}; stop with `phagoflow stack down`")
    return state


def _terminate_group(name: str, pid: int, timeout_s: float, echo: Callable[[str], None]) -> bool:
    """SIGTERM the process group ``pid``, SIGKILL after ``timeout_s``; False if not ours."""
    if _MARKERS.get(name.split("-")[0], "phagoflow serve") not in _cmdline(pid):
        echo(f"  {name}: pid {pid} is another program now; left alone")
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
        echo(f"  {name}: killed after {timeout_s:g} s")
    else:
        echo(f"  {name}: stopped")
    return True


def stack_down(
    settings: StackSettings | None = None,
    *,
    timeout_s: float = 30.0,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Stop the stack recorded by :func:`stack_up`; returns the names of what was stopped.

    SIGTERM to the supervisor, which stops every component (services first, SIGKILL after
    10 s each) and exits; anything still alive afterwards (a supervisor killed without its
    children) is stopped directly, SIGKILL after ``timeout_s``.
    """
    s = settings if settings is not None else StackSettings()
    state_path = _state_path(s)
    state = read_state(state_path)
    if state is None:
        echo("no local stack recorded")
        return []
    processes = list(state.get("processes", []))
    alive = [p["name"] for p in processes if _alive(p.get("pid"))]
    sup = state.get("supervisor", {}).get("pid")
    if _alive(sup):
        # each component gets up to 10 s to stop, one after the other
        _terminate_group("supervisor", int(sup), timeout_s + 10.0 * len(processes), echo)
    for proc in reversed(processes):
        pid = proc.get("pid")
        if _alive(pid):
            _terminate_group(proc["name"], int(pid), timeout_s, echo)
    state_path.unlink(missing_ok=True)
    return alive


def stack_status(settings: StackSettings | None = None) -> dict[str, Any]:
    """The supervisor and each recorded process: pid, alive, ready, restarts, url, log.

    Returns
    -------
    dict
        ``up`` (the supervisor or any process alive), ``supervisor`` (pid, running, log),
        ``endpoints``, ``processes`` (each with ``running``, ``ready``, ``restarts``,
        ``last_exit``, ``rss_mib``) and ``alerts`` (restarts that lost data, newest last).
    """
    s = settings if settings is not None else StackSettings()
    state = read_state(_state_path(s))
    if state is None:
        return {"up": False, "processes": []}
    out = []
    for proc in state.get("processes", []):
        alive = _alive(proc.get("pid"))
        rss = _rss_mib(int(proc["pid"])) if alive else None
        out.append({**proc, "running": alive, "ready": alive and _probe(proc), "rss_mib": rss})
    sup = dict(state.get("supervisor", {}))
    sup["running"] = _alive(sup.get("pid"))
    return {
        "up": sup["running"] or any(p["running"] for p in out),
        "phase": state.get("phase"),
        "supervisor": sup,
        "endpoints": state.get("endpoints", {}),
        "processes": out,
        "alerts": state.get("alerts", []),
    }


def status_lines(status: dict[str, Any]) -> list[str]:
    """``phagoflow stack status`` as text: one line per process, restarts included."""
    if not status["processes"]:
        return ["no local stack recorded (phagoflow stack up)"]
    lines = [f"{'name':<12}{'state':<9}{'pid':<9}{'restarts':>8}{'rss':>12}  url"]
    for p in status["processes"]:
        state = "ready" if p["ready"] else "running" if p["running"] else "down"
        rss = f"{p['rss_mib']:7.1f} MiB" if p.get("rss_mib") is not None else ""
        lines.append(
            f"{p['name']:<12}{state:<9}{p['pid'] or '-'!s:<9}{p.get('restarts', 0):>8}"
            f"{rss:>12}  {p['url']}"
        )
    sup = status.get("supervisor") or {}
    lines.append(f"supervisor pid {sup.get('pid')} {'running' if sup.get('running') else 'down'}")
    lines += [f"ALERT {a['at']} {a['component']}: {a['message']}" for a in status.get("alerts", [])]
    return lines


def _rss_mib(pid: int) -> float | None:
    """Resident memory of a process (VmRSS), MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _probe(proc: dict[str, Any]) -> bool:
    name, port = proc["name"], int(proc.get("port") or 0)
    host = proc.get("host", "127.0.0.1")
    if name == "kafka":
        return kafka_api_versions_ok(host, port)
    if name.split("-")[0] in SERVICE_NAMES:
        return _http_ok(f"{address(host, port, 'http')}/readyz")
    if name == "triton" and proc.get("http"):
        return _http_ok(f"{proc['http']}/v2/health/ready")
    if name == "prometheus":
        return _http_ok(f"{address(host, port, 'http')}/-/ready")
    return port_open(host, port)
