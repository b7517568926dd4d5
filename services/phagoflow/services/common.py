"""Plumbing shared by every streaming service: settings, JSON logs, HTTP endpoints, lifecycle.

A service is a :class:`Service` subclass that implements :meth:`Service.setup`,
:meth:`Service.step` (one bounded unit of work, e.g. one Kafka poll) and :meth:`Service.close`.
:meth:`Service.run` serves ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus, one registry
per service instance) on the service's port, loops over :meth:`Service.step` until
:meth:`Service.stop` is called, then finishes the step in flight, lets the subclass commit and
close, and returns. :func:`serve` adds JSON logging and SIGTERM/SIGINT handling for a process.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "ApiHandler",
    "ApiResponse",
    "HttpEndpoint",
    "JsonFormatter",
    "Service",
    "ServiceSettings",
    "configure_logging",
    "log_context",
    "serve",
]

logger = logging.getLogger(__name__)

#: Plate / well / field of the work in progress, added to every JSON log line.
_LOG_CONTEXT: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "phagoflow_log_context", default=()
)


class ServiceSettings(BaseSettings):
    """Settings every service shares, read from ``PHAGOFLOW_*`` environment variables.

    Attributes
    ----------
    kafka_bootstrap : str
        Kafka bootstrap servers, ``host:port[,host:port]`` (``PHAGOFLOW_KAFKA_BOOTSTRAP``).
    s3_endpoint : str
        S3 endpoint ``host:port`` (MinIO in production, moto's server locally).
    s3_access_key, s3_secret_key : str
        S3 credentials.
    s3_secure : bool
        HTTPS to the S3 endpoint.
    s3_region : str
        Region name given to the client.
    bucket : str
        The one bucket holding raw images, results, manifests, reports and dead-letter payloads.
    http_host : str
        Interface of the ``/healthz``, ``/readyz``, ``/metrics`` (and API) server.
    log_level : str
        Python logging level name.
    log_json : bool
        JSON log lines (one object per line) instead of plain text.
    session_timeout_ms, heartbeat_interval_ms, max_poll_interval_ms : int
        Kafka consumer-group timings (short for the local tansu broker; see docs/streaming.md).
    s3_retries : int
        Attempts per S3 request before the request counts as failed (transient outage).
    s3_retry_backoff_s : float
        First back-off between attempts (doubled each time, capped at 5 s).
    s3_timeout_s : float
        Connect and read timeout of one S3 request.
    """

    model_config = SettingsConfigDict(
        env_prefix="PHAGOFLOW_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka_bootstrap: str = "127.0.0.1:9092"
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "phagoflow"
    s3_secret_key: SecretStr = SecretStr("phagoflow-secret")
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    bucket: str = Field(default="phagoflow", min_length=3, max_length=63)
    http_host: str = "127.0.0.1"
    log_level: str = "INFO"
    log_json: bool = True
    session_timeout_ms: int = Field(default=3000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    max_poll_interval_ms: int = Field(default=10_000, ge=1000)
    s3_retries: int = Field(default=5, ge=1, le=100)
    s3_retry_backoff_s: float = Field(default=0.5, ge=0.0)
    s3_timeout_s: float = Field(default=5.0, gt=0.0)

    @property
    def http_port(self) -> int:
        """Port of the service's HTTP endpoints; each service settings class defines it."""
        raise NotImplementedError


# --------------------------------------------------------------------------- logging


@contextlib.contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Add ``plate``/``well``/``field`` (or any key) to the log lines written inside the block."""
    merged = {**dict(_LOG_CONTEXT.get()), **{k: v for k, v in fields.items() if v}}
    token = _LOG_CONTEXT.set(tuple(merged.items()))
    try:
        yield
    finally:
        _LOG_CONTEXT.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, plate/well/field, error."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(dict(_LOG_CONTEXT.get()))
        for key in ("plate", "well", "field", "topic", "partition", "offset"):
            value = record.__dict__.get(key)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(service: str, *, level: str = "INFO", json_lines: bool = True) -> None:
    """Route the root logger to stderr, as JSON lines (default) or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("kafka", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --------------------------------------------------------------------------- HTTP

#: (status, JSON-serialisable body) of an API route.
ApiResponse = tuple[int, Any]
#: An API handler gets the raw (still percent-encoded) path, e.g. ``/api/v1/plates/P1``, and
#: returns a response, or ``None`` when it does not know the path (404).
ApiHandler = Callable[[str], ApiResponse | None]


class HttpEndpoint:
    """``/healthz``, ``/readyz``, ``/metrics`` and optional JSON ``GET /api/...`` routes.

    Parameters
    ----------
    host, port : str, int
        Where to listen; port 0 picks a free one (see :attr:`port`).
    registry : CollectorRegistry
        Prometheus metrics served on ``/metrics``.
    ready : callable
        Returns ``(ready, reason)`` for ``/readyz`` (200 or 503).
    api : ApiHandler, optional
        Handler of every path under ``/api/``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: Callable[[], tuple[bool, str]],
        api: ApiHandler | None = None,
    ) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint._dispatch(self)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("http %s", format % args)

        self.registry = registry
        self._ready = ready
        self._api = api
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"http-{port}", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def _dispatch(self, req: BaseHTTPRequestHandler) -> None:
        raw = urlsplit(req.path).path
        path = unquote(raw)
        try:
            if path == "/healthz":
                self._send_json(req, 200, {"status": "ok"})
            elif path == "/readyz":
                ok, reason = self._ready()
                self._send_json(req, 200 if ok else 503, {"ready": ok, "reason": reason})
            elif path == "/metrics":
                body = generate_latest(self.registry)
                self._send(req, 200, body, CONTENT_TYPE_LATEST)
            elif path.startswith("/api/") and self._api is not None:
                answer = self._api(raw)
                if answer is None:
                    self._send_json(req, 404, {"error": f"no such resource: {path}"})
                else:
                    self._send_json(req, *answer)
            else:
                self._send_json(req, 404, {"error": f"no such resource: {path}"})
        except Exception as exc:  # an endpoint must answer, never kill the thread
            logger.exception("HTTP %s failed", path)
            self._send_json(req, 500, {"error": f"{type(exc).__name__}: {exc}"})

    @staticmethod
    def _send_json(req: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = (json.dumps(body, default=str, allow_nan=False) + "\n").encode()
        HttpEndpoint._send(req, status, data, "application/json")

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, data: bytes, ctype: str) -> None:
        req.send_response(status)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)


# --------------------------------------------------------------------------- lifecycle


class Service(ABC):
    """A long-running service: setup, a loop of bounded steps, graceful stop.

    Parameters
    ----------
    settings : ServiceSettings
        The service's settings.
    http_port : int, optional
        Overrides ``settings.http_port`` (0 picks a free port; tests use it).
    """

    #: Service name in logs, metrics and event headers.
    name: ClassVar[str] = "service"

    def __init__(self, settings: ServiceSettings, *, http_port: int | None = None) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._not_ready_reason = "starting"
        self._port = settings.http_port if http_port is None else http_port
        self.http: HttpEndpoint | None = None

    # ------------------------------------------------------------------ to implement

    @abstractmethod
    def setup(self) -> None:
        """Connect clients, restore state; raise to abort the start."""

    @abstractmethod
    def step(self) -> None:
        """One bounded unit of work (e.g. one poll); returns quickly when there is none."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Commit and close clients after the last step (called once, also after errors)."""

    def api(self, path: str) -> ApiResponse | None:
        """JSON API under ``/api/``; none by default."""
        return None

    # ------------------------------------------------------------------ lifecycle

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on :meth:`stop`; True when stopping."""
        return self._stop.wait(seconds)

    def stop(self) -> None:
        """Ask the loop to finish the step in flight and return (thread- and signal-safe)."""
        self._stop.set()

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)`` for ``/readyz``."""
        if self._ready.is_set() and not self._stop.is_set():
            return True, "ready"
        return False, "stopping" if self._stop.is_set() else self._not_ready_reason

    def set_not_ready(self, reason: str) -> None:
        """Report not ready (e.g. a dependency is down) until :meth:`set_ready`."""
        self._not_ready_reason = reason
        self._ready.clear()

    def set_ready(self) -> None:
        """Report ready."""
        self._ready.set()

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until the service is ready (tests)."""
        return self._ready.wait(timeout_s)

    @property
    def port(self) -> int:
        """HTTP port (bound after :meth:`run` started)."""
        return self.http.port if self.http is not None else self._port

    def start_http(self) -> HttpEndpoint:
        """Bind and serve the HTTP endpoints (idempotent)."""
        if self.http is None:
            api = self.api if type(self).api is not Service.api else None
            self.http = HttpEndpoint(
                self.settings.http_host, self._port, self.registry, self.readiness, api
            )
            self.http.start()
            logger.info("%s: HTTP on %s:%d", self.name, self.settings.http_host, self.http.port)
        return self.http

    def run(self) -> None:
        """Serve HTTP, set up, loop over :meth:`step` until stopped, then close."""
        self.start_http()
        try:
            if not self._setup_until_ready():
                return
            self.set_ready()
            logger.info("%s: ready", self.name)
            while not self._stop.is_set():
                self.step()
        finally:
            self._ready.clear()
            try:
                self.close()
            finally:
                if self.http is not None:
                    self.http.stop()
                logger.info("%s: stopped", self.name)

    def _setup_until_ready(self) -> bool:
        """Run :meth:`setup`, retrying while Kafka or S3 is not up; False when stopped first."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                self.setup()
                return True
            except Exception as exc:
                reason = f"waiting for dependencies: {type(exc).__name__}: {exc}"
                self.set_not_ready(reason)
                logger.warning("%s: %s; retrying in %.1f s", self.name, reason, delay)
                self.close()
                self.wait(delay)
                delay = min(delay * 2, 10.0)
        return False

    def run_in_thread(self) -> threading.Thread:
        """Start :meth:`run` in a daemon thread (tests and in-process stacks)."""
        thread = threading.Thread(target=self.run, name=f"service-{self.name}", daemon=True)
        thread.start()
        return thread


def serve(service: Service) -> int:
    """Run a service in this process until SIGTERM/SIGINT: finish in-flight work, commit, exit 0."""
    settings = service.settings
    configure_logging(service.name, level=settings.log_level, json_lines=settings.log_json)

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info(
            "%s: %s received, finishing in-flight work", service.name, signal.Signals(signum).name
        )
        service.stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    started = time.monotonic()
    try:
        service.run()
    except Exception:
        logger.exception("%s: fatal error", service.name)
        return 1
    logger.info("%s: exited cleanly after %.1f s", service.name, time.monotonic() - started)
    return 0
