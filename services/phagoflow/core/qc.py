"""Quality-control signals computed from per-well summaries.

The per-well disagreement between two methods (CIP vs CDL) flags wells where at least one method
is probably wrong — odd staining, focus problems, debris — so they can be reviewed first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from phagoflow.core.counting import WellSummary

__all__ = ["WellDisagreement", "relative_difference", "well_disagreement"]


def relative_difference(a: float, b: float) -> float:
    """Symmetric relative difference ``|a - b| / ((a + b) / 2)``, in [0, 2]; 0 when both are 0.

    Examples
    --------
    >>> relative_difference(10, 10)
    0.0
    >>> relative_difference(30, 10)
    1.0
    >>> relative_difference(0, 0)
    0.0
    """
    mean = (a + b) / 2.0
    return 0.0 if mean == 0 else abs(a - b) / mean


@dataclass(frozen=True)
class WellDisagreement:
    """Disagreement of two methods on one well (dimensionless, see :func:`relative_difference`)."""

    plate: str
    well: str
    row: int
    col: int
    method_a: str
    method_b: str
    phagophores: float
    autolysosomes: float

    @property
    def total(self) -> float:
        """Mean of the two per-class disagreements."""
        return (self.phagophores + self.autolysosomes) / 2.0


def well_disagreement(
    wells: Iterable[WellSummary], method_a: str = "cip", method_b: str = "cdl"
) -> list[WellDisagreement]:
    """Per-well relative difference of the total counts of two methods, per class.

    Wells summarised by only one of the methods are left out. Both methods must have seen the same
    fields of a well for the comparison to be fair; the embedded runner guarantees that.

    Returns
    -------
    list of WellDisagreement
        Sorted by plate and well.
    """
    by_key: dict[tuple[str, str], dict[str, WellSummary]] = {}
    for w in wells:
        by_key.setdefault((w.plate, w.well), {})[w.method] = w
    out = []
    for (plate, well), methods in sorted(by_key.items()):
        if method_a not in methods or method_b not in methods:
            continue
        a, b = methods[method_a], methods[method_b]
        out.append(
            WellDisagreement(
                plate=plate,
                well=well,
                row=a.row,
                col=a.col,
                method_a=method_a,
                method_b=method_b,
                phagophores=relative_difference(a.phagophores, b.phagophores),
                autolysosomes=relative_difference(a.autolysosomes, b.autolysosomes),
            )
        )
    return out
