"""Tests of plate-map parsing and validation (phagoflow.core.platemap)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phagoflow.core.platemap import (
    PlateMapError,
    Role,
    parse_concentration,
    parse_plate_map,
    read_plate_map,
    require_controls,
    write_plate_map,
)

GOOD = """well,role,condition,compound,concentration,unit
B02,negative,DMSO,DMSO,0.1,%
r02c03,Negative Control,DMSO,DMSO,0.1,%
B04,positive control,Torin1,Torin1,250,nM
b05,POS,Torin1,Torin1,250 nM,
B06,sample,,CMPD-1,10 µM,
B07,sample,,CMPD-1,10uM,uM
B08,empty,,,,
"""


def test_good_map_parses_every_form() -> None:
    pm = parse_plate_map(GOOD)
    assert pm.counts() == {Role.NEGATIVE: 2, Role.POSITIVE: 2, Role.SAMPLE: 2, Role.EMPTY: 1}
    assert pm.wells(Role.NEGATIVE) == [(2, 2), (2, 3)]
    assert pm.role(2, 5) == Role.POSITIVE
    assert pm.role(3, 3) is None  # unmapped well
    e = pm.entries[(2, 5)]
    assert (e.well, e.compound, e.concentration, e.unit) == ("B05", "Torin1", 250.0, "nM")
    assert e.concentration_base == pytest.approx((250e-9, "M"))
    assert pm.entries[(2, 6)].unit == "µM" and pm.entries[(2, 7)].unit == "µM"
    assert pm.entries[(2, 8)].concentration is None
    require_controls(pm)  # two of each: fine


def test_extra_columns_kept_and_header_case_free() -> None:
    pm = parse_plate_map("Well,ROLE,Batch\nA01,sample,7\n")
    assert pm.entries[(1, 1)].extra == {"batch": "7"}


def _problems(text: str, **kw: int) -> str:
    with pytest.raises(PlateMapError) as info:
        parse_plate_map(text, **kw)
    return str(info.value)


def test_unknown_well_for_the_geometry() -> None:
    msg = _problems("well,role\nI01,sample\nA13,sample\n")
    assert "line 2: well 'I01' is not on a 8 × 12 plate (last well H12)" in msg
    assert "line 3: well 'A13'" in msg
    assert "2 problem(s)" in msg and "\n" not in msg  # one line, every problem
    # the same wells are fine on a 384-well plate
    assert len(parse_plate_map("well,role\nI01,sample\nA13,sample\n", plate_rows=16,
                               plate_columns=24).entries) == 2  # fmt: skip


def test_many_problems_are_summarised_on_one_line() -> None:
    msg = _problems("well,role\n" + "".join(f"Z{i:02d},sample\n" for i in range(1, 13)))
    assert msg.startswith("<text>: 12 problem(s): line 2: well 'Z01'")
    assert "line 11: well 'Z10'" in msg and "Z11" not in msg
    assert msg.endswith("; ... and 2 more") and "\n" not in msg


def test_not_a_well_name() -> None:
    assert "not a well name (A01 or rRRcCC): 'well 5'" in _problems("well,role\nwell 5,sample\n")


def test_duplicate_well_in_either_form() -> None:
    msg = _problems("well,role\nB02,sample\nr02c02,negative\n")
    assert "line 3: duplicate well B02 (first on line 2)" in msg


def test_bad_role() -> None:
    msg = _problems("well,role\nB02,control\n")
    assert "role 'control' of well B02 is not one of negative, positive, sample, empty" in msg


@pytest.mark.parametrize(
    ("conc", "unit", "expected"),
    [
        ("ten", "µM", "'ten' is not a number"),
        ("10", "", "has no unit"),
        ("10", "mol", "unknown concentration unit 'mol'"),
        ("-1", "µM", "finite number >= 0"),
        ("nan", "µM", "'nan' is not a number"),
        ("1e999", "µM", "finite number >= 0"),
        ("10 nM", "µM", "contradicts unit column 'µM'"),
        ("", "µM", "unit 'µM' without a concentration"),
    ],
)
def test_bad_concentration_or_unit(conc: str, unit: str, expected: str) -> None:
    assert expected in _problems(f"well,role,concentration,unit\nB02,sample,{conc},{unit}\n")


def test_missing_required_columns_and_empty_map() -> None:
    assert "missing ['role']" in _problems("well,compound\nB02,x\n")
    assert "no wells listed" in _problems("well,role\n\n")


def test_missing_controls_when_statistics_are_asked_for() -> None:
    pm = parse_plate_map("well,role\nB02,negative\nB03,sample\nB04,positive\nB05,positive\n")
    with pytest.raises(PlateMapError, match=r"1 negative control well\(s\), need >= 2"):
        require_controls(pm)
    require_controls(pm, min_negative=1)
    with pytest.raises(PlateMapError, match="0 positive"):
        require_controls(parse_plate_map("well,role\nB02,negative\nB03,negative\n"))


def test_concentration_parser_units() -> None:
    assert parse_concentration("1e-3 M") == (1e-3, "M")
    assert parse_concentration("5", "μg/ml") == (5.0, "µg/mL")  # Greek mu, any case
    assert parse_concentration("") == (None, None)


def test_write_read_round_trip(tmp_path: Path) -> None:
    pm = parse_plate_map(GOOD)
    path = write_plate_map(tmp_path / "plate_map.csv", pm.entries.values())
    again = read_plate_map(path)
    assert again.entries == {k: e for k, e in pm.entries.items()}
    assert again.source == str(path)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PlateMapError, match="cannot read plate map"):
        read_plate_map(tmp_path / "missing.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("well,role,condition\nB02,sample,\xe9\n".encode("latin-1"))
    with pytest.raises(PlateMapError, match="cannot read plate map"):
        read_plate_map(bad)
