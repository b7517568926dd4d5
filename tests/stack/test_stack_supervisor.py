"""Supervisor back-off and bookkeeping, on a real (small) server process killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from test_stack_process import HttpServer

from phagoflow.stack.local import Component, StackSettings, read_state
from phagoflow.stack.supervisor import Supervisor


def _supervisor(tmp_path: Path, proc: HttpServer, **kw: object) -> Supervisor:
    settings = StackSettings(
        stack_dir=tmp_path / "stack",
        restart_backoff_s=0.2,
        restart_backoff_max_s=0.8,
        restart_reset_s=30.0,
    )
    sup = Supervisor(settings)
    sup.track(Component("web", proc, **kw))  # type: ignore[arg-type]
    return sup


def _crash(proc: HttpServer) -> None:
    assert proc.pid is not None
    os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while proc.running and time.monotonic() < deadline:
        time.sleep(0.01)


def test_restart_with_doubling_backoff_same_port(tmp_path: Path) -> None:
    proc = HttpServer(log_path=tmp_path / "web.log").start()
    hooks: list[int] = []
    sup = _supervisor(
        tmp_path, proc, after_restart=lambda: hooks.append(1), restart_loses="its memory"
    )
    try:
        port = proc.port
        waits = []
        for n in (1, 2, 3, 4):
            _crash(proc)
            t0 = time.monotonic()
            assert sup.tick(t0)  # found dead: restart scheduled, not yet done
            assert not proc.running and sup.restarts["web"].due_at is not None
            wait = sup.restarts["web"].due_at - t0  # type: ignore[operator]
            waits.append(round(wait, 2))
            assert not sup.tick(t0 + wait / 2)  # still backing off
            assert sup.tick(t0 + wait)
            proc.wait_ready(10)
            assert proc.port == port and sup.restarts["web"].restarts == n
        assert waits == [0.2, 0.4, 0.8, 0.8]  # doubling, capped at restart_backoff_max_s
        assert sup.restarts["web"].last_exit == -signal.SIGKILL
        assert len(hooks) == 4 and len(sup.alerts) == 4 and "its memory" in sup.alerts[0]["message"]
        sup.write()
        state = read_state(sup.state_path)
        assert state is not None and state["processes"][0]["restarts"] == 4
        assert state["supervisor"]["pid"] == os.getpid()
    finally:
        sup.shutdown()
    assert not proc.running
    assert read_state(sup.state_path)["phase"] == "stopped"  # type: ignore[index]


def test_backoff_resets_after_a_stable_period(tmp_path: Path) -> None:
    proc = HttpServer(log_path=tmp_path / "web.log").start()
    sup = _supervisor(tmp_path, proc)
    try:
        for _ in range(3):
            _crash(proc)
            now = time.monotonic()
            sup.tick(now)
            sup.tick(now + 1.0)
        assert sup.restarts["web"].backoff_s == 0.8
        proc.wait_ready(10)
        sup.tick(time.monotonic() + sup.settings.restart_reset_s + 1)  # up long enough
        assert sup.restarts["web"].backoff_s == 0.2
    finally:
        sup.shutdown()
