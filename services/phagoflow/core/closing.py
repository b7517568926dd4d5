"""The ``with`` protocol of phagoflow's plate writers (OME-Zarr, synthetic Opera exports)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["ClosesOnSuccess"]


class ClosesOnSuccess:
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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()
