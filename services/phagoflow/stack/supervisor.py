"""The local stack's supervisor: start every component, restart what dies, with back-off.

``python -m phagoflow.stack.supervisor`` is what ``phagoflow stack up`` leaves running (detached).
It starts the components in order (:func:`~phagoflow.stack.local.start_components`), writes
``stack.json``, then checks them every ``PHAGOFLOW_SUPERVISE_EVERY_S`` seconds. A component whose
process exited — crashed, OOM-killed, ``kill -9`` — is started again on the same port after a
back-off that doubles with each crash (``PHAGOFLOW_RESTART_BACKOFF_S`` up to
``PHAGOFLOW_RESTART_BACKOFF_MAX_S``; reset after ``PHAGOFLOW_RESTART_RESET_S`` seconds up), as
Kubernetes' ``restartPolicy: Always`` with CrashLoopBackOff does for a pod. ``stack.json`` then
says how often each was restarted and its last exit status (``phagoflow stack status``).

The components are *attached* to the supervisor: they die with it, so nothing is orphaned, and
``stack down`` only has to stop the supervisor (SIGTERM), which stops them, services first.

Restarting tansu or moto's S3 server loses what they keep in memory (every topic, or every
object): the supervisor re-creates the topics or the bucket so that new plates work, and raises
an alert in ``stack.json`` and its log — a plate in flight at that moment does not complete;
new plates do, with the services left running (docs/streaming.md, fault table).
A stopped (SIGSTOP) or hung process is not detected: there is no liveness probe.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from phagoflow.stack.local import (
    STATE_FILE,
    Component,
    StackSettings,
    start_components,
    write_state,
)
from phagoflow.stack.process import StackError

__all__ = ["Supervisor", "main"]

logger = logging.getLogger("phagoflow.stack.supervisor")


@dataclass
class _Restarts:
    """Restart bookkeeping of one component (times from ``time.monotonic()``, seconds)."""

    backoff_s: float
    restarts: int = 0
    last_exit: int | None = None
    due_at: float | None = None  # set while the component is down, waiting for its restart
    up_since: float = 0.0


class Supervisor:
    """Starts the stack and keeps it running; one per ``stack up``.

    Parameters
    ----------
    settings : StackSettings
        Ports, folders and the restart back-off.
    """

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.state_path = settings.stack_dir / STATE_FILE
        self.components: list[Component] = []
        self.restarts: dict[str, _Restarts] = {}
        self.facts: dict[str, Any] = {}
        self.alerts: list[dict[str, str]] = []
        self.phase = "starting"
        self.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._stop = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start every component (stopping those started when one fails) and record them."""
        self.write()
        try:
            self.facts = start_components(
                self.settings, started=self.components, echo=lambda line: logger.info(line)
            )
        except BaseException:
            self.phase = "failed"
            self.shutdown()
            raise
        for c in self.components:
            self.track(c)
        self.phase = "up"
        self.write()
        logger.info("stack up: %d components supervised", len(self.components))

    def track(self, component: Component) -> None:
        """Supervise a started component (appended to :attr:`components` if not there yet)."""
        if component not in self.components:
            self.components.append(component)
        backoff = self.settings.restart_backoff_s
        self.restarts[component.name] = _Restarts(backoff, up_since=time.monotonic())

    def request_stop(self) -> None:
        """Ask :meth:`run` to return (signal-safe: only sets a flag)."""
        self._stop.set()

    def run(self) -> None:
        """Check the components until :meth:`request_stop`; rewrite the state on any change."""
        while not self._stop.wait(self.settings.supervise_every_s):
            if self.tick(time.monotonic()):
                self.write()

    def shutdown(self) -> None:
        """Stop every component, last started first (services before the servers they use)."""
        if self.phase != "failed":
            self.phase = "stopping"
        self.write()
        for c in reversed(self.components):
            try:
                c.proc.stop()
            except Exception as exc:  # keep stopping the others
                logger.warning("%s: stop failed: %s", c.name, exc)
        if self.phase == "stopping":
            self.phase = "stopped"
        self.write()

    # ------------------------------------------------------------------ supervision

    def tick(self, now: float) -> bool:
        """One round of checks at ``now`` (monotonic seconds); True when something changed."""
        changed = False
        for c in self.components:
            rec = self.restarts[c.name]
            if c.proc.running:
                if rec.due_at is None and now - rec.up_since >= self.settings.restart_reset_s:
                    rec.backoff_s = self.settings.restart_backoff_s  # stable again
                continue
            if rec.due_at is None:  # just found dead
                rec.last_exit = c.proc.returncode
                rec.due_at = now + rec.backoff_s
                logger.warning(
                    "%s exited (status %s); restart #%d in %.1f s",
                    c.name,
                    rec.last_exit,
                    rec.restarts + 1,
                    rec.backoff_s,
                )
                changed = True
            elif now >= rec.due_at:
                self._restart(c, rec, now)
                changed = True
        return changed

    def _restart(self, c: Component, rec: _Restarts, now: float) -> None:
        rec.restarts += 1
        rec.due_at = None
        rec.up_since = now
        rec.backoff_s = min(rec.backoff_s * 2, self.settings.restart_backoff_max_s)
        try:
            c.proc.spawn()
        except (StackError, OSError) as exc:  # counts as a crash: back off and try again
            logger.error("%s: restart #%d failed: %s", c.name, rec.restarts, exc)
            return
        logger.warning("%s restarted (#%d), pid %s", c.name, rec.restarts, c.proc.pid)
        if c.after_restart is not None:
            try:
                c.after_restart()
            except Exception as exc:
                logger.error("%s: after-restart step failed: %s", c.name, exc)
        if c.restart_loses:
            self.alert(c.name, f"restarted (#{rec.restarts}): {c.restart_loses}")

    def alert(self, component: str, message: str) -> None:
        """Record an alert in ``stack.json`` (``stack status`` shows it) and log it."""
        at = datetime.now().astimezone().isoformat(timespec="seconds")
        self.alerts.append({"at": at, "component": component, "message": message})
        logger.error("ALERT %s: %s", component, message)

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """The ``stack.json`` document: facts, phase, supervisor, processes, alerts."""
        processes = []
        for c in self.components:
            rec = self.restarts.get(c.name)
            processes.append(
                {
                    **c.proc.describe(),
                    "name": c.name,
                    "startup_s": round(c.startup_s, 2),
                    "restarts": rec.restarts if rec else 0,
                    "last_exit": rec.last_exit if rec else None,
                    "restarting": bool(rec and rec.due_at is not None),
                }
            )
        return {
            "created": self.created,
            **self.facts,
            "phase": self.phase,
            "supervisor": {"pid": os.getpid(), "log": str(self.log_path)},
            "processes": processes,
            "alerts": list(self.alerts),
        }

    def write(self) -> None:
        """Write :meth:`state` to ``stack.json`` atomically."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        write_state(self.state_path, self.state())

    @property
    def log_path(self) -> Path:
        """The supervisor's log (its stdout and stderr, written by ``stack up``)."""
        return self.settings.stack_dir / "logs" / "supervisor.log"


def main() -> int:
    """Run the supervisor until SIGTERM/SIGINT; exit 1 when the stack failed to start."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s supervisor: %(message)s"
    )
    for noisy in ("kafka", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = StackSettings()
    sup = Supervisor(settings)

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("%s received: stopping the stack", signal.Signals(signum).name)
        sup.request_stop()

    try:
        sup.start()
    except (StackError, OSError, ValueError) as exc:
        logger.error("the stack did not start: %s", exc)
        return 1
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        sup.run()
    finally:
        sup.shutdown()
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
