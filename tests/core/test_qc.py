from __future__ import annotations

import math

import pytest

from phagoflow.core.counting import FieldCounts, aggregate_wells
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.qc import relative_difference, well_disagreement


@pytest.mark.parametrize(
    ("a", "b", "expected"), [(0, 0, 0.0), (10, 10, 0.0), (30, 10, 1.0), (0, 5, 2.0), (3, 1, 1.0)]
)
def test_relative_difference(a: float, b: float, expected: float) -> None:
    assert math.isclose(relative_difference(a, b), expected)


def _fc(row: int, col: int, method: str, ph: int, al: int, field: int = 1) -> FieldCounts:
    return FieldCounts("P1", FieldKey(row, col, field), method, ph, al, 0.0, 0.0)


def test_well_disagreement_pairs_methods_per_well() -> None:
    wells = aggregate_wells(
        [
            _fc(2, 2, "cip", 10, 4),
            _fc(2, 2, "cdl", 30, 4),
            _fc(2, 3, "cip", 5, 5),  # no cdl for this well: left out
        ]
    )
    dis = well_disagreement(wells, "cip", "cdl")
    assert [d.well for d in dis] == ["r02c02"]
    assert dis[0].phagophores == pytest.approx(1.0)
    assert dis[0].autolysosomes == 0.0
    assert dis[0].total == pytest.approx(0.5)
    assert (dis[0].row, dis[0].col) == (2, 2)
