"""ManagedProcess: ports from the OS, readiness, startup errors, stop/kill/pause, parent death."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import pytest

from phagoflow.stack import ManagedProcess, StackError, port_open, process
from phagoflow.stack.procfs import listening_sockets


class HttpServer(ManagedProcess):
    """Python's http.server as a stand-in server."""

    name: ClassVar[str] = "http"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "http.server", "--bind", self.host, str(self.bind_port)]


class CandidateHttpServer(HttpServer):
    """The same server treated like tansu: it is given a candidate port, never port 0."""

    binds_port_zero: ClassVar[bool] = False


class Scripted(ManagedProcess):
    """Runs a Python snippet; never listens unless the snippet does."""

    name: ClassVar[str] = "scripted"
    scrub_env: ClassVar[tuple[str, ...]] = ("PHAGOFLOW_TEST_SECRET",)

    def __init__(self, code: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.code = code

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.code]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); ask /proc for its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _listener() -> socket.socket:
    """A socket of this test process listening on a port the OS picked (another program)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_port_zero_is_bound_by_the_server_and_read_back(tmp_path: Path) -> None:
    with HttpServer(log_path=tmp_path / "http.log") as server:
        assert server.pid is not None
        assert ("127.0.0.1", server.port) in listening_sockets(server.pid)
        header = (tmp_path / "http.log").read_text().splitlines()[1]
        assert header.endswith(" 0"), header  # the server was told port 0, not a guess
        with urllib.request.urlopen(server.url + "/", timeout=2) as resp:
            assert resp.status == 200


def test_candidate_taken_before_bind_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race that made the suite flake: the port is taken between the choice and bind()."""
    with _listener() as taken:
        held = int(taken.getsockname()[1])
        handed = iter([held, held])
        real = process.candidate_port
        # deterministic race: the first two candidates are already taken by another program
        monkeypatch.setattr(process, "candidate_port", lambda h: next(handed, None) or real(h))
        with CandidateHttpServer(log_path=tmp_path / "http.log") as server:
            assert server.port != held
            assert server.pid is not None and ("127.0.0.1", server.port) in listening_sockets(
                server.pid
            )
        assert (tmp_path / "http.log").read_text().count("Address already in use") == 2


def test_fixed_port_held_by_another_program_is_a_clear_error(tmp_path: Path) -> None:
    with _listener() as other:
        port = int(other.getsockname()[1])
        with pytest.raises(StackError, match="already in use"):
            HttpServer(port=port, log_path=tmp_path / "http.log").start()


def test_readiness_is_never_answered_by_another_program(tmp_path: Path) -> None:
    """A server that does not listen is not "ready" because another program holds its port."""
    with _listener() as other:
        port = int(other.getsockname()[1])
        quiet = Scripted(
            "import time; time.sleep(60)", port=port, startup_timeout_s=1.0, log_path=tmp_path / "q"
        )
        with pytest.raises(StackError, match="never listened on its port"):
            quiet.start()
        assert not quiet.running


def test_start_serves_then_stop_frees_port(tmp_path: Path) -> None:
    server = HttpServer(log_path=tmp_path / "http.log")
    with pytest.raises(StackError, match="not assigned"):
        _ = server.port
    server.start()
    try:
        pid = server.pid
        assert pid is not None and server.running
        with urllib.request.urlopen(server.url + "/", timeout=2) as resp:
            assert resp.status == 200
        info = server.describe()
        assert info["pid"] == pid and info["url"] == server.url and info["running"]
    finally:
        code = server.stop()
    assert code is not None
    assert not server.running and server.pid is None
    assert not port_open(server.host, server.port)
    assert _wait_gone(pid)
    assert server.stop() is None  # idempotent
    assert "http.server" in (tmp_path / "http.log").read_text()


def test_restart_keeps_the_port(tmp_path: Path) -> None:
    with HttpServer(log_path=tmp_path / "http.log") as server:
        port, pid = server.port, server.pid
        server.restart()
        assert server.port == port and server.pid != pid
        assert port_open(server.host, port)


def test_early_exit_reports_exit_code_and_log(tmp_path: Path) -> None:
    server = Scripted(
        "import sys; print('cannot open config file'); sys.exit(3)",
        log_path=tmp_path / "s.log",
    )
    with pytest.raises(StackError, match="exit code 3") as exc:
        server.start()
    assert "cannot open config file" in str(exc.value)
    assert not server.running


def test_not_ready_in_time_stops_the_process(tmp_path: Path) -> None:
    server = Scripted(
        "import time; print('warming up', flush=True); time.sleep(60)",
        startup_timeout_s=0.5,
        log_path=tmp_path / "s.log",
    )
    t0 = time.monotonic()
    with pytest.raises(StackError, match="not ready after") as exc:
        server.start()
    assert time.monotonic() - t0 < 10
    assert "warming up" in str(exc.value)
    assert not server.running


def test_environment_scrubs_and_adds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHAGOFLOW_TEST_SECRET", "leak")
    monkeypatch.setenv("PHAGOFLOW_TEST_KEEP", "keep")
    env = Scripted("pass", env={"EXTRA": "1"}).environment()
    assert "PHAGOFLOW_TEST_SECRET" not in env
    assert env["PHAGOFLOW_TEST_KEEP"] == "keep" and env["EXTRA"] == "1"


def test_kill_is_immediate_and_pause_blocks_requests(tmp_path: Path) -> None:
    server = HttpServer(log_path=tmp_path / "http.log").start()
    try:
        server.pause()
        assert server.describe()["paused"]
        with pytest.raises(OSError):
            urllib.request.urlopen(server.url + "/", timeout=0.5)
        server.resume()
        with urllib.request.urlopen(server.url + "/", timeout=2) as resp:
            assert resp.status == 200
        pid = server.pid
        assert pid is not None
        server.kill()
        assert not server.running
        assert _wait_gone(pid)
    finally:
        server.stop()


def test_stop_reaches_a_paused_process(tmp_path: Path) -> None:
    server = HttpServer(log_path=tmp_path / "http.log").start()
    pid = server.pid
    assert pid is not None
    server.pause()
    t0 = time.monotonic()
    server.stop(timeout_s=5)
    assert time.monotonic() - t0 < 5  # SIGTERM was delivered, no SIGKILL timeout needed
    assert _wait_gone(pid)


def test_attached_server_dies_with_a_killed_parent(tmp_path: Path) -> None:
    parent_code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_stack_process import HttpServer
        s = HttpServer(log_path={str(tmp_path / "child.log")!r}).start()
        print(s.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        child_pid = int(line)
        assert _alive(child_pid)
        parent.send_signal(signal.SIGKILL)  # no atexit, no cleanup: only the kernel can help
        parent.wait(timeout=10)
        assert _wait_gone(child_pid), f"server {child_pid} outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_detached_server_outlives_its_parent(tmp_path: Path) -> None:
    parent_code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_stack_process import HttpServer
        s = HttpServer(attached=False, log_path={str(tmp_path / "child.log")!r}).start()
        print(s.pid, s.port, flush=True)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", parent_code], capture_output=True, text=True, timeout=30, check=True
    )
    child_pid, port = (int(x) for x in out.stdout.split())
    try:
        assert _alive(child_pid)
        assert port_open("127.0.0.1", port)
    finally:
        os.killpg(child_pid, signal.SIGTERM)  # our own child's session, by its id
        assert _wait_gone(child_pid)
