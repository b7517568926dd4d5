"""Broken exports: structural errors raise naming the file; bad fields become problems."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from opera_plates import NO_WAVES, SIZE_YX, MakePlate, WrittenPlate

from phagoflow.core.opera import (
    FieldKey,
    FieldReadError,
    PlateCatalogue,
    PlateFormatError,
    check_complete,
    load_field,
    read_plate,
)

BAD = FieldKey(2, 5, 2)  # the field each test damages


def _others_load(cat: PlateCatalogue, plate: WrittenPlate, bad: FieldKey = BAD) -> None:
    """Every other field is still catalogued and loads exactly."""
    good = sorted(k for k in plate.images if k != bad)
    assert [rec.key for rec in cat.fields if rec.key != bad] == good
    for key in good:
        np.testing.assert_array_equal(load_field(cat, key), plate.images[key].astype(np.float32))


def _set_url(plate: WrittenPlate, old_name: str, new_url: str) -> None:
    index = plate.index_file()
    text = index.read_bytes().decode("utf-8-sig")
    assert f"<URL>{old_name}</URL>" in text
    bom = "\ufeff" if index.name == "Index.xml" else ""
    index.write_text(bom + text.replace(f"<URL>{old_name}</URL>", f"<URL>{new_url}</URL>"), "utf-8")


# -- structural errors ---------------------------------------------------------------------
def test_missing_index_names_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "empty_export"
    (folder / "Images").mkdir(parents=True)
    with pytest.raises(PlateFormatError, match=r"no Index\.idx\.xml / Index\.xml / \.flex found"):
        read_plate(folder)
    with pytest.raises(PlateFormatError, match="empty_export"):
        read_plate(folder)
    with pytest.raises(PlateFormatError, match="no such file"):
        read_plate(tmp_path / "does_not_exist")


@pytest.mark.parametrize("fmt", ["harmony5", "harmony6"])
def test_malformed_xml_gives_file_line_and_column(make_plate: MakePlate, fmt: str) -> None:
    plate = make_plate(fmt)
    index = plate.index_file()
    raw = index.read_bytes()
    index.write_bytes(raw[: len(raw) // 2])  # cut mid-document
    with pytest.raises(PlateFormatError, match=re.escape(index.name)) as info:
        read_plate(plate.root)
    assert re.search(r"line \d+, column \d+", str(info.value))


def test_malformed_flex_xml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "002005000.flex"
    xml = '<?xml version="1.0"?>\n<Root><FLEX><Arrays></Root>'
    tifffile.imwrite(bad, np.zeros((2, 4, 5), np.uint16), extratags=[(65200, "s", 0, xml, True)])
    with pytest.raises(PlateFormatError, match=r"002005000\.flex: malformed XML at line 2"):
        read_plate(tmp_path)


def test_tiff_without_flex_xml_is_not_a_plate(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "002005000.flex", np.zeros((4, 5), np.uint16))
    with pytest.raises(PlateFormatError, match=r"002005000\.flex: no Flex XML"):
        read_plate(tmp_path)


def test_not_a_harmony_root_element(tmp_path: Path) -> None:
    (tmp_path / "Index.idx.xml").write_text("<?xml version='1.0'?><Something/>")
    with pytest.raises(PlateFormatError, match=r"Index\.idx\.xml: not a Harmony index"):
        read_plate(tmp_path)


@pytest.mark.parametrize(
    ("fmt", "file_pattern"),
    [("harmony4", r"Index\.idx\.xml"), ("harmony6", r"Index\.xml"), ("flex", r"\.flex")],
)
def test_channel_names_matching_neither_role(
    make_plate: MakePlate, fmt: str, file_pattern: str
) -> None:
    plate = make_plate(fmt, channel_names=("Hoechst 33342", "Brightfield"), wavelengths=NO_WAVES)
    with pytest.raises(PlateFormatError, match=file_pattern) as info:
        read_plate(plate.root)
    msg = str(info.value)
    assert "'Hoechst 33342'" in msg and "'Brightfield'" in msg
    assert "channel_roles" in msg and "--channel-role" in msg


def test_two_channels_claiming_one_role(make_plate: MakePlate) -> None:
    plate = make_plate("harmony5", channel_names=("DsRed", "mCherry"), wavelengths=NO_WAVES)
    with pytest.raises(PlateFormatError, match=r"Index\.idx\.xml.*'DsRed', 'mCherry'.*dsred"):
        read_plate(plate.root)


def test_override_naming_no_channel(make_plate: MakePlate) -> None:
    plate = make_plate("harmony5")
    with pytest.raises(PlateFormatError, match="'Cy5' matches no channel"):
        read_plate(plate.root, channel_roles={"Cy5": "dsred"})
    with pytest.raises(PlateFormatError, match="unknown channel role 'blue'"):
        read_plate(plate.root, channel_roles={"DsRed": "blue"})


# -- bad fields: problems, other fields still load ------------------------------------------
@pytest.mark.parametrize("fmt", ["harmony5", "harmony7"])
def test_missing_image_file(make_plate: MakePlate, fmt: str) -> None:
    plate = make_plate(fmt)
    gone = plate.plane_file(BAD, 2)
    gone.unlink()
    cat = read_plate(plate.root)
    assert [p.key for p in cat.problems] == [BAD]
    assert gone.name in cat.problems[0].path and "not found" in cat.problems[0].reason
    _others_load(cat, plate)
    with pytest.raises(FieldReadError, match=re.escape(gone.name)):
        load_field(cat, BAD)


def test_file_deleted_after_cataloguing(make_plate: MakePlate) -> None:
    plate = make_plate("harmony6")
    cat = read_plate(plate.root)
    gone = plate.plane_file(BAD, 1)
    gone.unlink()
    with pytest.raises(FieldReadError, match=re.escape(gone.name)):
        load_field(cat, BAD)
    _others_load(cat, plate)


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "windows"])
def test_unsafe_urls_are_never_read(
    make_plate: MakePlate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    plate = make_plate("harmony5")
    victim = plate.plane_file(BAD, 1)
    outside = plate.out_dir / "outside.tiff"  # a real, readable file outside Images/
    tifffile.imwrite(outside, np.full(SIZE_YX, 7, np.uint16))
    url = {
        "absolute": str(outside),
        "dotdot": "../outside.tiff",
        "windows": "C:\\Users\\lab\\outside.tiff",
    }[kind]
    _set_url(plate, victim.name, url)

    opened: list[str] = []
    real = tifffile.TiffFile

    def spy(path: Path, *args: Any, **kwargs: Any) -> tifffile.TiffFile:
        opened.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "TiffFile", spy)  # the module object the reader uses
    cat = read_plate(plate.root)
    assert [(p.key, p.path) for p in cat.problems] == [(BAD, url)]
    assert "not read" in cat.problems[0].reason
    _others_load(cat, plate)
    with pytest.raises(FieldReadError, match=re.escape(url)):
        load_field(cat, BAD)
    assert opened and not any("outside" in p for p in opened)


@pytest.mark.parametrize("link", ["file", "folder"])
def test_symlink_leaving_the_export_is_refused_like_dotdot(
    make_plate: MakePlate, monkeypatch: pytest.MonkeyPatch, link: str
) -> None:
    plate = make_plate("harmony5")
    victim = plate.plane_file(BAD, 1)
    outside_dir = plate.out_dir.parent / f"elsewhere-{link}"
    outside_dir.mkdir()
    tifffile.imwrite(outside_dir / victim.name, np.full(SIZE_YX, 7, np.uint16))
    victim.unlink()
    if link == "file":  # Images/rXXcYY...tiff -> ../../elsewhere/rXXcYY...tiff
        victim.symlink_to(outside_dir / victim.name)
    else:  # Images/sub -> ../../elsewhere, and the index says sub/rXXcYY...tiff
        (victim.parent / "sub").symlink_to(outside_dir, target_is_directory=True)
        _set_url(plate, victim.name, f"sub/{victim.name}")

    opened: list[str] = []
    real = tifffile.TiffFile
    monkeypatch.setattr(
        tifffile, "TiffFile", lambda p, *a, **k: opened.append(str(p)) or real(p, *a, **k)
    )
    cat = read_plate(plate.root)
    assert [p.key for p in cat.problems] == [BAD]
    assert "symbolic link" in cat.problems[0].reason and "not read" in cat.problems[0].reason
    _others_load(cat, plate)
    with pytest.raises(FieldReadError, match="symbolic link"):
        load_field(cat, BAD)
    plate.age()
    report = check_complete(plate.root)
    assert not report.complete
    assert any("not followed" in r and "symbolic link" in r for r in report.reasons)
    assert not any(p.endswith(victim.name) and "elsewhere" in p for p in opened)


def test_symlink_inside_the_export_is_read(make_plate: MakePlate) -> None:
    plate = make_plate("harmony5")
    victim = plate.plane_file(BAD, 1)
    moved = victim.with_name("moved.tiff")
    victim.rename(moved)
    victim.symlink_to(moved.name)  # relative, stays inside Images/
    cat = read_plate(plate.root)
    assert cat.problems == ()
    _others_load(cat, plate)
    np.testing.assert_array_equal(load_field(cat, BAD), plate.images[BAD].astype(np.float32))


def test_tiff_with_wrong_shape(make_plate: MakePlate) -> None:
    plate = make_plate("harmony6")
    bad = plate.plane_file(BAD, 1)
    tifffile.imwrite(bad, np.zeros((SIZE_YX[0] // 2, SIZE_YX[1]), np.uint16))
    cat = read_plate(plate.root)
    with pytest.raises(FieldReadError, match=re.escape(bad.name) + r".*\(32, 80\).*\(64, 80\)"):
        load_field(cat, BAD)
    _others_load(cat, plate)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.int32])
def test_tiff_with_wrong_dtype(make_plate: MakePlate, dtype: type) -> None:
    plate = make_plate("harmony4")
    bad = plate.plane_file(BAD, 2)
    tifffile.imwrite(bad, np.ones(SIZE_YX, dtype))
    cat = read_plate(plate.root)
    with pytest.raises(FieldReadError, match=re.escape(bad.name) + ".*expected uint16"):
        load_field(cat, BAD)
    _others_load(cat, plate)


@pytest.mark.parametrize("cut", [0.5, 0.02])
def test_truncated_tiff(make_plate: MakePlate, cut: float) -> None:
    plate = make_plate("harmony5")
    bad = plate.plane_file(BAD, 1)
    data = bad.read_bytes()
    bad.write_bytes(data[: int(len(data) * cut)])
    cat = read_plate(plate.root)
    with pytest.raises(FieldReadError, match=re.escape(bad.name)):
        load_field(cat, BAD)
    _others_load(cat, plate)


def test_truncated_flex_only_hurts_its_well(make_plate: MakePlate) -> None:
    plate = make_plate("flex")
    bad = plate.flex_file(BAD)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2 + 600])  # keep the XML, lose pixel data
    cat = read_plate(plate.root)
    failed = []
    for rec in cat.fields:
        if rec.key.well == BAD.well:
            with pytest.raises(FieldReadError, match=re.escape(bad.name)):
                load_field(cat, rec)
            failed.append(rec.key)
        else:
            np.testing.assert_array_equal(load_field(cat, rec), plate.images[rec.key])
    assert FieldKey(2, 5, 2) in failed


def test_unreadable_flex_file_is_a_problem_not_a_crash(make_plate: MakePlate) -> None:
    plate = make_plate("flex")
    bad = plate.flex_file(BAD)
    bad.write_bytes(b"II*\x00garbage")
    cat = read_plate(plate.root)
    assert cat.wells == ("r03c07",)
    assert [p.path for p in cat.problems] == [str(bad)]
    assert all(rec.key.well == "r03c07" for rec in cat.fields) and len(cat.fields) == 2


def test_half_acquired_field_is_a_problem(make_plate: MakePlate) -> None:
    plate = make_plate("harmony5")
    only = plate.plane_file(BAD, 1)
    _set_url(plate, plate.plane_file(BAD, 2).name, "")  # pHluorin not acquired
    cat = read_plate(plate.root)
    assert [(p.key, p.path) for p in cat.problems] == [(BAD, str(only))]
    assert "no phluorin image" in cat.problems[0].reason
    _others_load(cat, plate)


def test_load_field_of_unknown_key(make_plate: MakePlate) -> None:
    cat = read_plate(make_plate("harmony5").root)
    with pytest.raises(KeyError, match="r08c12f01p01"):
        load_field(cat, FieldKey(8, 12, 1))
