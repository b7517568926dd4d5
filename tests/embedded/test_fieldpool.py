"""FieldPool: results from spawned workers, a dead worker fails one item only, stop at once."""

from __future__ import annotations

import os
import signal
import time

import pytest

from phagoflow.embedded.fieldpool import FieldPool, PoolError, WorkerFailure

_SEEN: dict[str, object] = {}


def _init(tag: str) -> None:
    _SEEN["tag"] = tag


def _work(item: int) -> tuple[int, object, bool]:
    if item == 3:
        os._exit(9)  # the worker dies (as after an out-of-memory kill)
    if item == 4:
        raise ValueError("item four is bad")
    if item == 99:
        time.sleep(600)  # only ever stopped by terminate
    sigint_ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    return item * item, _SEEN.get("tag"), sigint_ignored


def _broken_init() -> None:
    raise RuntimeError("no model here")


def test_results_failures_and_a_dead_worker() -> None:
    with FieldPool(_work, 2, _init, ("ready",)) as pool:
        got = dict(pool.run([1, 2, 3, 4, 5, 6]))
    assert {k: v for k, v in got.items() if not isinstance(v, WorkerFailure)} == {
        1: (1, "ready", True),
        2: (4, "ready", True),
        5: (25, "ready", True),
        6: (36, "ready", True),
    }
    died, bad = got[3], got[4]
    assert isinstance(died, WorkerFailure) and "died (exit code 9" in died.reason
    assert isinstance(bad, WorkerFailure) and bad.reason == "ValueError: item four is bad"


def test_leaving_on_an_exception_terminates_busy_workers() -> None:
    pool: FieldPool[int, tuple[int, object, bool]] = FieldPool(_work, 2, _init, ("x",))
    with pytest.raises(KeyboardInterrupt), pool:
        for item, _ in pool.run([1, 99, 99]):
            assert item == 1
            processes = [w.process for w in pool._workers]
            raise KeyboardInterrupt
    assert all(not p.is_alive() for p in processes)
    assert any(p.exitcode == -signal.SIGTERM for p in processes)  # the busy one was stopped


def test_a_worker_that_cannot_start_is_an_error() -> None:
    with (
        pytest.raises(PoolError, match="no model here"),
        FieldPool(_work, 1, _broken_init, ()) as pool,
    ):
        list(pool.run([1]))
