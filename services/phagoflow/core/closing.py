"""The ``with`` protocol of phagoflow's closeable things: plate writers, worker pools, servers.

:class:`ClosesOnExit` is the one ``__exit__``: leaving the block hands :meth:`ClosesOnExit.on_exit`
whether the block raised, and the exception (if any) always propagates. Subclasses say what
leaving means: a plate writer (:class:`ClosesOnSuccess`) finishes its output or abandons it, a
worker pool lets its workers exit or terminates them, a local server stops.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["ClosesOnExit", "ClosesOnSuccess"]


class ClosesOnExit:
    """Base of a resource used as ``with Resource(...) as r:``; leaving the block releases it.

    ``__enter__`` returns the resource itself (a subclass may start it first); ``__exit__`` calls
    :meth:`on_exit` and never suppresses an exception.
    """

    def on_exit(self, *, failed: bool) -> None:
        """Release the resource on leaving the ``with`` block.

        Parameters
        ----------
        failed : bool
            True when the block raised (the exception propagates once this returns).
        """
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.on_exit(failed=exc_type is not None)


class ClosesOnSuccess(ClosesOnExit):
    """Base of a writer used as ``with Writer(...) as w:``.

    Leaving the block normally calls :meth:`close` (the writer finishes its output); leaving it
    on an exception calls :meth:`abandon` instead (by default nothing: what was written stays,
    unfinished).
    """

    def close(self) -> Path:
        """Finish the output and return where it is."""
        raise NotImplementedError

    def abandon(self) -> None:
        """Called instead of :meth:`close` when the ``with`` block raised."""

    def on_exit(self, *, failed: bool) -> None:
        """:meth:`abandon` when the block raised, else :meth:`close`."""
        if failed:
            self.abandon()
        else:
            self.close()
