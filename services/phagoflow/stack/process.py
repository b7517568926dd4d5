"""A managed local server process: port from the OS, readiness wait, log file, clean stop.

:class:`ManagedProcess` is the base of every local server of the development stack (Kafka broker,
S3 server, Triton, Prometheus, the phagoflow services). Subclasses say *what* to run
(:meth:`command`) and *when it is ready* (:meth:`is_ready`); the base class does the rest:

- a port left to the OS (``port=0``) is bound by the server itself and read back from the
  kernel's socket table for the server's own process group (:mod:`phagoflow.stack.procfs`);
  nothing guesses a free port by probing. The port is kept across :meth:`restart`;
- readiness is only checked once the server's *own* process listens on its port, so a start
  never mistakes another program on that port for its server;
- writes stdout and stderr to a log file and quotes its tail in every startup error;
- starts the server in its own process group, so :meth:`stop` reaches its children too;
- *attached* processes (the default, for tests) die with the Python process that started them,
  even when it is killed with SIGKILL (Linux ``PR_SET_PDEATHSIG`` through ``setpriv``), and are
  stopped at interpreter exit; *detached* ones outlive it (for ``make up``);
- :meth:`kill` (SIGKILL), :meth:`pause` / :meth:`resume` (SIGSTOP / SIGCONT) for fault tests.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from phagoflow.core.closing import ClosesOnExit
from phagoflow.stack.procfs import listening_sockets

__all__ = ["ManagedProcess", "StackError", "address", "candidate_port", "port_open"]

_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


class StackError(RuntimeError):
    """A local server failed to start or stop; the message quotes the tail of its log."""


def candidate_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS just handed out on ``host`` (bound to 0, then closed).

    **Only** for servers that cannot bind port 0 themselves (tansu must advertise its real
    port before it starts) and for tests that need an address where nothing listens (a
    refused connection). Another process may take the port before it is used:
    :class:`ManagedProcess` retries such a start with a new candidate when the server exits
    with EADDRINUSE (see :attr:`ManagedProcess.binds_port_zero`).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def address(host: str, port: int, scheme: str = "") -> str:
    """Where a server listens: ``host:port``, or ``scheme://host:port`` given a scheme.

    Parameters
    ----------
    host : str
        Host name or IP address, e.g. ``127.0.0.1``.
    port : int
        TCP port.
    scheme : str
        URL scheme (``"http"``, ``"tcp"``); empty for the bare ``host:port`` that Kafka, MinIO
        and gRPC clients and Prometheus scrape targets take.

    Returns
    -------
    str
        ``host:port`` or ``scheme://host:port``.
    """
    where = f"{host}:{port}"
    return f"{scheme}://{where}" if scheme else where


def port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class ManagedProcess(ClosesOnExit, ABC):
    """One local server process.

    Parameters
    ----------
    host : str
        Interface to listen on; loopback by default.
    port : int
        TCP port; 0 lets the OS choose at the first :meth:`start` (see
        :attr:`binds_port_zero`); the port is kept across restarts.
    log_path : Path, optional
        File receiving stdout and stderr (appended); a fresh temporary file by default.
    startup_timeout_s : float
        Seconds :meth:`start` waits for :meth:`is_ready` before giving up.
    attached : bool
        True (default): the server dies with this Python process and is stopped at exit.
        False: it outlives this process (``make up``); stop it later by pid.
    env : mapping, optional
        Extra environment variables for the server.
    """

    #: Short name used in logs, errors and :meth:`describe`.
    name: ClassVar[str] = "process"
    #: Inherited environment variables not passed to the server (they would reconfigure it).
    scrub_env: ClassVar[tuple[str, ...]] = ()
    #: How ``port=0`` is resolved. True: the server is started with port 0, binds a port the
    #: OS picks, and that port is read back from ``/proc`` (the group's listening sockets).
    #: False (last resort, only for a server that must know its port before it binds, e.g.
    #: tansu's advertised listener): the OS hands out a :func:`candidate_port`, and when the
    #: server exits with EADDRINUSE because another process took it first, the start is
    #: retried with a new candidate (up to :attr:`addr_in_use_attempts` times).
    binds_port_zero: ClassVar[bool] = True
    #: Starts tried on fresh candidate ports when ``binds_port_zero`` is False.
    addr_in_use_attempts: ClassVar[int] = 5
    #: Scheme of :attr:`url`; empty for a bare ``host:port`` (Triton's gRPC address).
    url_scheme: ClassVar[str] = "http"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
        startup_timeout_s: float = 30.0,
        attached: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {port}")
        if startup_timeout_s <= 0:
            raise ValueError(f"startup_timeout_s must be > 0, got {startup_timeout_s}")
        self.host = host
        self._port = port
        self._auto_port = port == 0
        self._log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.attached = attached
        self._extra_env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._log_offset = 0

    # ------------------------------------------------------------------ to implement

    @abstractmethod
    def command(self) -> list[str]:
        """Command line of the server; :attr:`host` and :attr:`port` are already assigned."""

    def is_ready(self) -> bool:
        """Whether the server answers; the default only checks that the port accepts TCP."""
        return port_open(self.host, self.port)

    @property
    def url(self) -> str:
        """Address clients use: ``url_scheme://host:port``, e.g. ``http://127.0.0.1:PORT``.

        A server whose clients want something else (a file URI) overrides this.
        """
        return address(self.host, self.port, self.url_scheme)

    def environment(self) -> dict[str, str]:
        """Environment of the server: this process's, minus :attr:`scrub_env`, plus ``env``."""
        env = {k: v for k, v in os.environ.items() if k not in self.scrub_env}
        env.update(self._extra_env)
        return env

    def claim_ports(self, sockets: list[tuple[str, int]]) -> bool:
        """Whether the server's own listening ``sockets`` include its port; assigns port 0.

        Parameters
        ----------
        sockets : list of (str, int)
            ``(address, port)`` pairs the server's process group listens on
            (:func:`~phagoflow.stack.procfs.listening_sockets`).

        Returns
        -------
        bool
            True once the server listens on its (fixed or OS-chosen) port on :attr:`host`.
            Subclasses with several listeners (Triton) override this.

        Raises
        ------
        StackError
            The server listens on several ports of :attr:`host` and none was asked for.
        """
        ports = sorted({port for addr, port in sockets if addr in (self.host, "0.0.0.0", "::")})
        if self._port:
            return self._port in ports
        if len(ports) > 1:
            raise StackError(f"{self.name} listens on several ports {ports}; give it a port")
        if ports:
            self._port = ports[0]
            return True
        return False

    # ------------------------------------------------------------------ state

    @property
    def bind_port(self) -> int:
        """The port to put on the command line: the known port, or 0 before the first start."""
        return self._port

    @property
    def port(self) -> int:
        """TCP port; raises ``StackError`` before the first start when it was left to the OS."""
        if self._port == 0:
            raise StackError(f"{self.name}: port not assigned yet (start() first)")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` (:func:`address`); raises ``StackError`` like :attr:`port`."""
        return address(self.host, self.port)

    @property
    def pid(self) -> int | None:
        """Process id while started, else None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the process exists and has not exited (a paused process is running)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status once the process exited by itself (or was killed from outside), else
        None (running, never started, or stopped through :meth:`stop` / :meth:`kill`)."""
        return None if self._proc is None else self._proc.poll()

    @property
    def log_path(self) -> Path:
        """The log file (created at the first start)."""
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"phagoflow-{self.name}-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        return self._log_path

    def log_tail(self, chars: int = 4000) -> str:
        """The last ``chars`` characters of the log."""
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-chars:].decode("utf-8", errors="replace")

    def describe(self) -> dict[str, Any]:
        """Name, pid, url, port, log path and state, e.g. for ``phagoflow stack status``."""
        return {
            "name": self.name,
            "pid": self.pid,
            "url": self.url if self._port else None,
            "host": self.host,
            "port": self._port or None,
            "log": str(self.log_path),
            "running": self.running,
            "paused": self._paused,
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start the server and wait until :meth:`is_ready`.

        Returns
        -------
        Self
            ``self``, so that ``with Server().start() as s`` and ``s = Server().start()`` work.

        Raises
        ------
        StackError
            The process exited during startup or was not ready within ``startup_timeout_s``;
            the message quotes the end of its log. The process is stopped before raising.
        """
        if self.running:
            return self
        retry = self._auto_port and not self.binds_port_zero
        attempts = self.addr_in_use_attempts if retry else 1
        for attempt in range(attempts):
            if self._auto_port:  # port 0 on the command line, or a fresh candidate
                self._port = candidate_port(self.host) if retry else 0
            try:
                self._spawn()
                self._wait_ready()
            except _ExitedEarly as exc:
                if exc.addr_in_use and attempt < attempts - 1:
                    continue  # the candidate was taken between candidate_port() and bind()
                if exc.addr_in_use:
                    raise StackError(
                        f"{self.name}: {self.host}:{self._port} is already in use; {exc}"
                    ) from None
                raise StackError(str(exc)) from None
            self._auto_port = False  # a restart reuses the port clients know
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def spawn(self) -> None:
        """Start the process again on its known port without waiting (a supervisor restart).

        Readiness is not awaited: a supervisor keeps watching and probing instead of blocking.

        Raises
        ------
        StackError
            The port is not known yet (:meth:`start` first) or the process is running.
        """
        if self.running:
            raise StackError(f"{self.name} is running already")
        if self._auto_port:
            raise StackError(f"{self.name}: spawn() restarts a started server; start() first")
        self._spawn()

    def _spawn(self) -> None:
        cmd = self.command()
        if self.attached and (setpriv := shutil.which("setpriv")) is not None:
            # PR_SET_PDEATHSIG: the kernel sends SIGKILL when the thread that started us dies.
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        log = self.log_path.open("ab")
        self._log_offset = log.tell()
        try:
            log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                close_fds=True,
            )
        finally:
            log.close()
        self._paused = False
        if self.attached:
            with _LIVE_LOCK:
                _LIVE.add(self)

    def _wait_ready(self) -> None:
        """Wait until the server's own process listens on its port, then for :meth:`is_ready`."""
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.02
        claimed = False
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                self._proc = None
                tail = self.log_tail()
                this_run = self.log_path.read_bytes()[self._log_offset :].decode(errors="replace")
                raise _ExitedEarly(
                    f"{self.name} exited during startup (exit code {code}) on "
                    f"{self.host}:{self._port or '(port 0)'}; log {self.log_path}:\n{tail}",
                    addr_in_use=_mentions_addr_in_use(this_run),
                )
            try:
                claimed = claimed or self.claim_ports(listening_sockets(proc.pid))
                if claimed and self.is_ready():
                    return
            except StackError:
                self.stop()
                raise
            except Exception:  # a readiness probe failing is "not ready yet"
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                why = "" if claimed else " (its process never listened on its port)"
                raise StackError(
                    f"{self.name} not ready after {self.startup_timeout_s:.0f} s on "
                    f"{self.host}:{self._port or '(port 0)'}{why}; log {self.log_path}:\n{tail}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until :meth:`is_ready` (e.g. after :meth:`resume`); ``StackError`` on timeout."""
        deadline = time.monotonic() + (timeout_s or self.startup_timeout_s)
        while not self.is_ready():
            if not self.running:
                raise StackError(f"{self.name} is not running; log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise StackError(f"{self.name} not ready; log:\n{self.log_tail()}")
            time.sleep(0.05)

    def _signal(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # our own session: the server and its children

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stop gracefully (SIGTERM, then SIGKILL after ``timeout_s``); idempotent.

        Returns
        -------
        int or None
            The exit code, or None if the process was not started.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)  # a paused process must run to handle SIGTERM
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait(timeout=10)
        # Reap what is left of the group (children that ignored SIGTERM).
        self._signal(signal.SIGKILL)
        self._proc = None
        self._paused = False
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the server (and its group) without any grace, as a crash would."""
        proc = self._proc
        if proc is None:
            return
        self._signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self._proc = None
        self._paused = False
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections hang as on an unreachable host."""
        if not self.running:
            raise StackError(f"{self.name} is not running")
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self) -> Self:
        """Stop, then start again on the same port (state kept in memory is lost)."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def on_exit(self, *, failed: bool) -> None:
        """Leaving the ``with`` block stops the server (:meth:`stop`), whether it raised or not."""
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = f"{self.host}:{self._port}" if self._port else self.host
        return f"<{type(self).__name__} {where} pid={self.pid} {state}>"


class _ExitedEarly(Exception):
    def __init__(self, message: str, *, addr_in_use: bool) -> None:
        super().__init__(message)
        self.addr_in_use = addr_in_use


def _mentions_addr_in_use(log: str) -> bool:
    """Whether a server's last log lines report EADDRINUSE (the wording differs per program)."""
    text = log[-2000:].lower()
    return any(s in text for s in ("address already in use", "address in use", "addrinuse"))


def _stop_attached_at_exit() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for server in live:
        with contextlib.suppress(Exception):
            server.stop(timeout_s=3.0)


atexit.register(_stop_attached_at_exit)
