"""Worker processes for the embedded runner that stop at once when told to.

``concurrent.futures.ProcessPoolExecutor`` does not fit an interruptible plate run: a Ctrl-C
reaches every process of the terminal's group, a worker that gets it fails only its current
task and goes on with the queue, and leaving the ``with`` block waits for all queued work (13–26 s
and most of the plate, with ``--workers 2``). :class:`FieldPool` instead

- starts each worker (``spawn``) with SIGINT ignored, so only the parent decides what a Ctrl-C
  means (the disposition is set before the child starts, so it holds from the child's first
  instruction, and Python keeps an inherited SIG_IGN);
- keeps exactly one item in flight per worker, over one pipe per worker, so nothing is queued
  that would need cancelling;
- on :meth:`FieldPool.close` with ``terminate=True`` (what leaving the ``with`` block on an
  exception, a ``KeyboardInterrupt`` included, does) sends SIGTERM to every worker and joins them:
  the parent is back within a fraction of a second whatever the workers were doing. Work in
  flight is lost; callers write results atomically so that nothing half-written is left;
- reports a worker that dies (out of memory, a crash in native code) as a failure of the item it
  held and starts a replacement, instead of failing the rest of the plate.
"""

from __future__ import annotations

import logging
import signal
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Generic, TypeVar

from phagoflow.core.closing import ClosesOnExit

__all__ = ["FieldPool", "PoolError", "WorkerFailure"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Seconds to wait for a worker to exit after SIGTERM before SIGKILL.
_TERM_GRACE_S = 2.0


class PoolError(RuntimeError):
    """A worker could not start (its initializer raised); the message says why."""


@dataclass(frozen=True)
class WorkerFailure:
    """An item whose worker raised or died instead of returning a result."""

    reason: str


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    task: int | None = None


def _worker_main(
    conn: Connection,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
    fn: Callable[[Any], Any],
) -> None:
    """Body of a worker: initialise, then answer ``(i, item)`` messages until ``None``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # already inherited; kept explicit
    try:
        initializer(*initargs)
    except BaseException as exc:
        conn.send((-1, False, f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent went away
            return
        if message is None:
            return
        i, item = message
        try:
            conn.send((i, True, fn(item)))
        except Exception as exc:
            logger.debug("worker task %d failed:\n%s", i, traceback.format_exc())
            conn.send((i, False, f"{type(exc).__name__}: {exc}"))


class FieldPool(ClosesOnExit, Generic[T, R]):
    """Run ``fn`` over items in ``workers`` spawned processes, one item in flight per worker.

    Parameters
    ----------
    fn : callable
        Picklable (module-level) function of one item, run in a worker.
    workers : int
        Number of worker processes (at least 1).
    initializer : callable
        Picklable function run once in each worker before its first item.
    initargs : tuple
        Arguments of ``initializer`` (pickled once per worker).

    Examples
    --------
    ``with FieldPool(fn, 2, init, args) as pool: for item, result in pool.run(items): ...``;
    ``result`` is ``fn(item)`` or a :class:`WorkerFailure`. Leaving the block on an exception
    terminates the workers; leaving it normally lets them exit.
    """

    def __init__(
        self,
        fn: Callable[[T], R],
        workers: int,
        initializer: Callable[..., None],
        initargs: tuple[Any, ...],
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._fn = fn
        self._n = workers
        self._init = (initializer, initargs)
        self._ctx = get_context("spawn")  # torch/ONNX thread pools do not survive a fork
        self._workers: list[_Worker] = []

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main, args=(child, *self._init, self._fn), daemon=True
        )
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the child
            try:
                process.start()
            finally:
                signal.signal(signal.SIGINT, previous)
        else:  # signal dispositions can only be changed from the main thread
            process.start()
        child.close()  # our copy: a dead worker then reads as EOF on `parent`
        worker = _Worker(process, parent)
        self._workers.append(worker)
        return worker

    def run(self, items: Sequence[T]) -> Iterator[tuple[T, R | WorkerFailure]]:
        """Yield ``(item, result)`` in completion order; raises :class:`PoolError` early."""
        pending = deque(range(len(items)))
        while len(self._workers) < min(self._n, len(items)):
            self._start()
        for worker in self._workers:
            self._give(worker, pending, items)
        while any(w.task is not None for w in self._workers):
            busy = {w.conn: w for w in self._workers if w.task is not None}
            for conn in wait(list(busy)):
                worker = busy[conn]  # type: ignore[index]
                task = worker.task
                assert task is not None
                yield items[task], self._receive(worker)
                worker.task = None
                if worker.process.is_alive():
                    self._give(worker, pending, items)
                elif pending:
                    self._give(self._start(), pending, items)

    def _give(self, worker: _Worker, pending: deque[int], items: Sequence[T]) -> None:
        if pending:
            worker.task = pending.popleft()
            worker.conn.send((worker.task, items[worker.task]))

    def _receive(self, worker: _Worker) -> R | WorkerFailure:
        try:
            i, ok, payload = worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join(_TERM_GRACE_S)
            self._forget(worker)
            code = worker.process.exitcode
            return WorkerFailure(f"the worker process died (exit code {code}; out of memory?)")
        if i == -1:
            raise PoolError(f"a worker could not start: {payload}")
        return payload if ok else WorkerFailure(str(payload))

    def _forget(self, worker: _Worker) -> None:
        worker.conn.close()
        self._workers = [w for w in self._workers if w is not worker]

    def close(self, *, terminate: bool) -> None:
        """Stop every worker: politely (idle workers exit) or at once (SIGTERM).

        Either way a worker still alive after :data:`_TERM_GRACE_S` seconds is killed.
        """
        for w in self._workers:
            if terminate:
                w.process.terminate()
            else:
                try:
                    w.conn.send(None)
                except OSError:
                    w.process.terminate()
        for w in self._workers:
            w.process.join(_TERM_GRACE_S)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        self._workers = []

    def on_exit(self, *, failed: bool) -> None:
        """Leaving the ``with`` block: :meth:`close`, terminating the workers if it raised."""
        self.close(terminate=failed)
