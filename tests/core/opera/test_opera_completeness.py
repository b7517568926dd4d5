"""check_complete: the DESIGN.md rule (index parses, counts match, files big enough, quiet)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from opera_plates import MakePlate

from phagoflow.core.opera import EXPORT_FORMATS, FieldKey, check_complete

KEY = FieldKey(3, 7, 1)


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_complete_plate(make_plate: MakePlate, fmt: str) -> None:
    plate = make_plate(fmt)
    plate.age(600)
    report = check_complete(plate.root, quiet_seconds=60)
    assert report.complete, report.reasons
    assert report.reasons == []
    assert report.expected_images == report.declared_images == report.found_images == 8
    assert report.acquired_images == 8


@pytest.mark.parametrize("fmt", ["harmony5", "flex"])
def test_fresh_files_within_quiet_period(make_plate: MakePlate, fmt: str) -> None:
    plate = make_plate(fmt)
    written = max(f.stat().st_mtime for f in plate.root.iterdir())
    report = check_complete(plate.root, quiet_seconds=60, now=written + 5)
    assert not report.complete
    assert len(report.reasons) == 1 and "quiet period of 60 s" in report.reasons[0]
    assert check_complete(plate.root, quiet_seconds=60, now=written + 61).complete
    assert check_complete(plate.root, quiet_seconds=0).complete


def test_one_fresh_image_is_enough_to_wait(make_plate: MakePlate) -> None:
    plate = make_plate("harmony6")
    plate.age(3600)
    touched = plate.plane_file(KEY, 2)
    os.utime(touched, None)  # rewritten just now
    report = check_complete(plate.root, quiet_seconds=120)
    assert not report.complete
    assert touched.name in report.reasons[0]


@pytest.mark.parametrize("fmt", ["harmony4", "harmony7"])
def test_missing_image(make_plate: MakePlate, fmt: str) -> None:
    plate = make_plate(fmt)
    gone = plate.plane_file(KEY, 1)
    gone.unlink()
    plate.age()
    report = check_complete(plate.root)
    assert not report.complete
    assert report.found_images == 7
    assert any("1 image file(s) missing" in r and gone.name in r for r in report.reasons)


@pytest.mark.parametrize("fmt", ["harmony5", "flex"])
def test_too_small_file(make_plate: MakePlate, fmt: str) -> None:
    plate = make_plate(fmt)
    small = plate.flex_file(KEY) if fmt == "flex" else plate.plane_file(KEY, 2)
    data = small.read_bytes()
    small.write_bytes(data[: len(data) // 2])
    plate.age()
    report = check_complete(plate.root)
    assert not report.complete
    assert any("incomplete" in r and small.name in r for r in report.reasons)


def test_index_declaring_fewer_images_than_the_grid(make_plate: MakePlate) -> None:
    plate = make_plate("harmony5")
    index = plate.index_file()
    text = index.read_text("utf-8")
    start = text.rindex("<Image Version")
    end = text.index("</Image>", start) + len("</Image>")
    index.write_text(text[:start] + text[end:], "utf-8")  # drop the last Image entry
    plate.age()
    report = check_complete(plate.root)
    assert not report.complete
    assert report.declared_images == 7 and report.expected_images == 8
    assert any("7 Image entries" in r and "= 8" in r for r in report.reasons)


def test_missing_or_broken_index_is_incomplete_not_an_error(
    make_plate: MakePlate, tmp_path: Path
) -> None:
    report = check_complete(tmp_path / "nothing_here")
    assert not report.complete and "no Index.idx.xml" in report.reasons[0]
    plate = make_plate("harmony6")
    index = plate.index_file()
    index.write_bytes(index.read_bytes()[:200])
    report = check_complete(plate.root, now=time.time() + 3600)
    assert not report.complete and "malformed XML" in report.reasons[0]


def test_not_acquired_images_do_not_block_completion(make_plate: MakePlate) -> None:
    plate = make_plate("harmony6", fields=3, fields_per_well=3, skip=[FieldKey(2, 5, 3)])
    plate.age()
    report = check_complete(plate.root)
    assert report.complete, report.reasons
    assert report.declared_images == report.expected_images == 12
    assert report.acquired_images == report.found_images == 10


def test_unsafe_url_makes_the_plate_incomplete(make_plate: MakePlate) -> None:
    plate = make_plate("harmony5")
    index = plate.index_file()
    name = plate.plane_file(KEY, 1).name
    index.write_text(index.read_text("utf-8").replace(name, "../../etc/passwd"), "utf-8")
    plate.age()
    report = check_complete(plate.root)
    assert not report.complete
    assert any("not followed" in r and "../../etc/passwd" in r for r in report.reasons)


def test_negative_quiet_period_is_rejected(make_plate: MakePlate) -> None:
    with pytest.raises(ValueError, match="quiet_seconds"):
        check_complete(make_plate("harmony5").root, quiet_seconds=-1)
