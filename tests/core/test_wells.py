"""Tests of the well-name helper (phagoflow.core.wells)."""

from __future__ import annotations

import re

import pytest

from phagoflow.core.wells import (
    parse_well,
    plate_geometry,
    row_letter,
    row_number,
    to_display,
    well_id,
    well_name,
)


@pytest.mark.parametrize(
    ("row", "letters"), [(1, "A"), (8, "H"), (16, "P"), (26, "Z"), (27, "AA"), (32, "AF")]
)
def test_row_letters_round_trip(row: int, letters: str) -> None:
    assert row_letter(row) == letters
    assert row_number(letters) == row
    assert row_number(letters.lower()) == row


@pytest.mark.parametrize("name", ["B05", "B5", "b05", " B05 ", "r02c05", "R02C05", "r2c5"])
def test_both_forms_parse_to_the_same_well(name: str) -> None:
    assert parse_well(name) == (2, 5)


def test_names_both_ways() -> None:
    assert well_name(2, 5) == "B05"
    assert well_name(16, 24) == "P24"
    assert well_name(32, 48) == "AF48"
    assert well_id(2, 5) == "r02c05"
    assert to_display("r08c12") == "H12"
    assert to_display("h12") == "H12"
    for row in range(1, 33):
        for col in (1, 9, 10, 48):
            assert parse_well(well_name(row, col)) == (row, col)
            assert parse_well(well_id(row, col)) == (row, col)


@pytest.mark.parametrize("bad", ["", "5B", "B", "r02c", "A00", "r00c01", "B-5", "ABC1", "é1"])
def test_bad_names_raise_and_quote_the_name(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        parse_well(bad)


def test_bad_indices_raise() -> None:
    with pytest.raises(ValueError, match="row must be >= 1, got 0"):
        well_name(0, 1)
    with pytest.raises(ValueError, match="col must be >= 1, got 0"):
        well_id(1, 0)


def test_plate_geometry() -> None:
    assert plate_geometry(96) == (8, 12)
    assert plate_geometry(384) == (16, 24)
    assert plate_geometry(1536) == (32, 48)
    with pytest.raises(ValueError, match="unknown plate format 95"):
        plate_geometry(95)
