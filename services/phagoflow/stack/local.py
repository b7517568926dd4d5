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
from phagoflow.stack.process import ManagedProcess, StackError, port_open
from phagoflow.stack.s3 import MotoS3Server
from phagoflow.stack.triton import TritonServer

__all__ = [
    "PrometheusServer",
    "ServiceProcess",
    "StackSettings",
    "stack_down",
    "stack_status",
    "stack_up",
]

STATE_FILE = "stack.json"
#: Text each component's command line contains (a reused pid is never signalled).
_MARKERS = {
    "kafka": "tansu",
    "s3": "moto.server",
    "triton": "tritonserver",
    "prometheus": "prometheus",
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

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
            f"--web.listen-address={self.host}:{self.bind_port}",
        ]

    def is_ready(self) -> bool:
        return _http_ok(f"{self.url}/-/ready")


# --------------------------------------------------------------------------- up / down / status


@dataclass
class _Started:
    name: str
    proc: ManagedProcess


def _state_path(settings: StackSettings) -> Path:
    return settings.stack_dir / STATE_FILE


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


def stack_up(
    settings: StackSettings | None = None, *, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Start the local stack (detached); returns the state written to ``stack.json``.

    Raises
    ------
    StackError
        A stack is already up, or a component failed to start (everything started is stopped).
    """
    s = settings if settings is not None else StackSettings()
    state_path = _state_path(s)
    if state_path.exists():
        previous = json.loads(state_path.read_text())
        alive = [p["name"] for p in previous.get("processes", []) if _alive(p.get("pid"))]
        if alive:
            raise StackError(f"a local stack is already up ({', '.join(alive)}); run stack down")
    logs = s.stack_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    s.watch_dir.mkdir(parents=True, exist_ok=True)
    started: list[_Started] = []

    def start(name: str, proc: ManagedProcess) -> ManagedProcess:
        t0 = time.monotonic()
        proc.start()
        started.append(_Started(name, proc))
        echo(f"  {name:<11} up in {time.monotonic() - t0:4.1f} s  {proc.url}")
        return proc

    try:
        from phagoflow import events as ev

        echo("starting the local phagoflow stack (loopback only)")
        kafka = start(
            "kafka",
            TansuBroker(port=s.kafka_port, attached=False, log_path=logs / "tansu.log"),
        )
        assert isinstance(kafka, TansuBroker)
        ev.create_topics(kafka.bootstrap_servers)
        s3 = start("s3", MotoS3Server(port=s.s3_port, attached=False, log_path=logs / "s3.log"))
        assert isinstance(s3, MotoS3Server)
        s3.ensure_buckets([s.bucket])

        model_dir = s.model_dir
        if model_dir is None:
            from phagoflow.core.inference import default_model_dir

            model_dir = default_model_dir()
        with_cdl = (model_dir / "card.json").is_file() and (model_dir / "model.onnx").is_file()
        env = {
            "PHAGOFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
            "PHAGOFLOW_S3_ENDPOINT": s3.endpoint,
            "PHAGOFLOW_S3_ACCESS_KEY": s3.access_key,
            "PHAGOFLOW_S3_SECRET_KEY": s3.secret_key,
            "PHAGOFLOW_BUCKET": s.bucket,
            "PHAGOFLOW_WATCH_DIR": str(s.watch_dir.resolve()),
            "PHAGOFLOW_METRICS_METHODS": json.dumps(["cip", "cdl"] if with_cdl else ["cip"]),
        }
        services = ["ingest", "cip", "metrics"]
        triton: TritonServer | None = None
        if with_cdl:
            triton = TritonServer(
                s.model_repository,
                port=s.triton_grpc_port,
                http_port=s.triton_http_port,
                metrics_port=s.triton_metrics_port,
                model_env={"PHAGOFLOW_MODEL_ONNX": str((model_dir / "model.onnx").resolve())},
                workdir=s.stack_dir / "triton",
                attached=False,
                log_path=logs / "triton.log",
            )
            start("triton", triton)
            env["PHAGOFLOW_TRITON_URL"] = triton.url
            env["PHAGOFLOW_MODEL_DIR"] = str(model_dir.resolve())
            services.insert(2, "inference")
        else:
            echo(f"  (no model folder at {model_dir}: Triton and inference not started, CIP only)")
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
                # extra workers bind port 0: the OS picks, nobody probes
                port = ports[name] if i == 0 else 0
                svc = start(
                    label,
                    ServiceProcess(
                        name,
                        port=port,
                        env=env,
                        attached=False,
                        log_path=logs / f"{label}.log",
                    ),
                )
                targets[label] = f"127.0.0.1:{svc.port}"
        if PrometheusServer.executable() is not None:
            if triton is not None:
                targets["triton"] = triton.metrics_target
            start(
                "prometheus",
                PrometheusServer(
                    targets,
                    s.stack_dir / "prometheus",
                    port=s.prometheus_port,
                    attached=False,
                    log_path=logs / "prometheus.log",
                ),
            )
        else:
            echo("  (prometheus not installed: apt-get install -y prometheus; not started)")
    except BaseException:
        for item in reversed(started):
            item.proc.stop()
        raise

    by_name = {i.name: i.proc for i in started}
    metrics_port = by_name["metrics"].port
    endpoints: dict[str, str] = {
        "kafka": kafka.bootstrap_servers,
        "s3": s3.url,
        "metrics_api": f"http://127.0.0.1:{metrics_port}/api/v1/plates",
        **{f"{i.name}_http": i.proc.url for i in started if isinstance(i.proc, ServiceProcess)},
    }
    if triton is not None:
        endpoints["triton_grpc"] = triton.url
        endpoints["triton_metrics"] = triton.metrics_url
    if "prometheus" in by_name:
        endpoints["prometheus"] = by_name["prometheus"].url
    state: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bucket": s.bucket,
        "watch_dir": str(s.watch_dir.resolve()),
        "methods": ["cip", "cdl"] if with_cdl else ["cip"],
        "model_dir": str(model_dir.resolve()) if with_cdl else None,
        "metrics_port": metrics_port,
        "endpoints": endpoints,
        "processes": [{**i.proc.describe(), "name": i.name} for i in started],
    }
    state_path.write_text(json.dumps(state, indent=2) + "\n")
    echo("endpoints:")
    width = max(map(len, state["endpoints"]), default=0)
    for key, value in state["endpoints"].items():
        echo(f"  {key:<{width}}  {value}")
    echo(f"drop plate exports into {state['watch_dir']}; stop with `phagoflow stack down`")
    return state


def stack_down(
    settings: StackSettings | None = None,
    *,
    timeout_s: float = 30.0,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Stop every process recorded by :func:`stack_up` (services first); returns their names."""
    s = settings if settings is not None else StackSettings()
    state_path = _state_path(s)
    if not state_path.exists():
        echo("no local stack recorded")
        return []
    state = json.loads(state_path.read_text())
    stopped = []
    for proc in reversed(state.get("processes", [])):
        pid = proc.get("pid")
        if not _alive(pid):
            continue
        if _MARKERS.get(proc["name"], "phagoflow serve") not in _cmdline(pid):
            echo(f"  {proc['name']}: pid {pid} is another program now; left alone")
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            continue
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
            echo(f"  {proc['name']}: killed after {timeout_s:g} s")
        else:
            echo(f"  {proc['name']}: stopped")
        stopped.append(proc["name"])
    state_path.unlink()
    return stopped


def stack_status(settings: StackSettings | None = None) -> dict[str, Any]:
    """Each recorded process: pid, alive, ready, url, log."""
    s = settings if settings is not None else StackSettings()
    state_path = _state_path(s)
    if not state_path.exists():
        return {"up": False, "processes": []}
    state = json.loads(state_path.read_text())
    out = []
    for proc in state.get("processes", []):
        alive = _alive(proc.get("pid"))
        rss = _rss_mib(int(proc["pid"])) if alive else None
        out.append({**proc, "running": alive, "ready": alive and _probe(proc), "rss_mib": rss})
    return {
        "up": any(p["running"] for p in out),
        "endpoints": state.get("endpoints", {}),
        "processes": out,
    }


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
        return _http_ok(f"http://{host}:{port}/readyz")
    if name == "triton" and proc.get("http"):
        return _http_ok(f"{proc['http']}/v2/health/ready")
    if name == "prometheus":
        return _http_ok(f"http://{host}:{port}/-/ready")
    return port_open(host, port)
