"""Every export format written by phagoflow's writers reads back exactly."""

from __future__ import annotations

import hashlib
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import tifffile
from opera_plates import NO_WAVES, PIXEL_SIZE_UM, SIZE_YX, MakePlate

from phagoflow.core.opera import (
    EXPORT_FORMATS,
    ChannelRole,
    FieldKey,
    FieldRecord,
    PlateCatalogue,
    PlateFormatError,
    check_complete,
    load_field,
    load_nuclei,
    open_writer,
    read_plate,
)

HARMONY = [f for f in EXPORT_FORMATS if f.startswith("harmony")]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _assert_pixels_exact(
    cat_fields: tuple[FieldRecord, ...],
    cat: PlateCatalogue,
    images: dict[FieldKey, npt.NDArray[np.uint16]],
) -> None:
    for rec in cat_fields:
        arr = load_field(cat, rec)
        assert arr.dtype == np.float32
        assert arr.shape == (2, *SIZE_YX)
        np.testing.assert_array_equal(arr, images[rec.key].astype(np.float32))


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_roundtrip_every_format(make_plate: MakePlate, fmt: str) -> None:
    plate = make_plate(fmt, measurement_id="MEAS-42", plate_rows=16, plate_columns=24)
    cat = read_plate(plate.root)
    assert cat.export_format == ("flex" if fmt == "flex" else "harmony")
    assert cat.plate_id == "PLATE-001"
    assert cat.measurement_id == "MEAS-42"
    assert (cat.plate_rows, cat.plate_columns) == (16, 24)
    assert cat.size_yx == SIZE_YX
    assert cat.pixel_size_um == pytest.approx(PIXEL_SIZE_UM, rel=1e-12)
    assert cat.wells == ("r02c05", "r03c07")
    assert [rec.key for rec in cat.fields] == sorted(plate.images)
    assert cat.problems == ()
    assert cat.expected_images == cat.declared_images == 2 * len(plate.images)
    roles = {c.name: c.role for c in cat.channels}
    assert roles == {"DsRed": ChannelRole.DSRED, "pHluorin": ChannelRole.PHLUORIN}
    assert re.fullmatch(r"[0-9a-f]{64}", cat.index_sha256)
    _assert_pixels_exact(cat.fields, cat, plate.images)
    # load_field also takes a key, and the two channels really differ (order matters)
    key = FieldKey(3, 7, 2)
    np.testing.assert_array_equal(load_field(cat, key)[1], plate.images[key][1])
    assert not np.array_equal(plate.images[key][0], plate.images[key][1])


@pytest.mark.parametrize("fmt", HARMONY)
def test_harmony_index_layout_and_version(make_plate: MakePlate, fmt: str) -> None:
    plate = make_plate(fmt)
    version = int(fmt[-1])
    index = plate.index_file()
    raw = index.read_bytes()
    if version >= 6:
        assert index.name == "Index.xml"
        assert raw.startswith(b"\xef\xbb\xbf")
    else:
        assert index.name == "Index.idx.xml"
        assert not raw.startswith(b"\xef\xbb\xbf")
    cat = read_plate(index)  # the index file itself
    assert cat.format_version == f"HarmonyV{version}"
    assert cat.index_path == index
    assert cat.index_sha256 == hashlib.sha256(raw).hexdigest()
    assert read_plate(plate.out_dir).fields == cat.fields  # the measurement folder above Images/
    root = ET.fromstring(raw.removeprefix(b"\xef\xbb\xbf"))
    ns = root.tag[1:].split("}")[0]
    if version == 7:
        assert re.search(r"HarmonyV7/[0-9a-f-]{36}$", ns)
    else:
        assert ns.endswith(f"/PEHH/HarmonyV{version}")


def test_v6_channels_only_in_a_later_map_with_swapped_ids(make_plate: MakePlate) -> None:
    # ChannelID 1 is pHluorin here: roles must come from names, never from channel order
    plate = make_plate("harmony6", channel_ids=(2, 1))
    root = ET.fromstring(plate.index_file().read_bytes().removeprefix(b"\xef\xbb\xbf"))
    image_tags = {_local(c.tag) for el in root.iter() if _local(el.tag) == "Image" for c in el}
    assert "ChannelName" not in image_tags
    assert "ImageResolutionX" not in image_tags
    maps = [m for m in root.iter() if _local(m.tag) == "Map"]
    with_names = [
        i for i, m in enumerate(maps) if any(_local(e.tag) == "ChannelName" for e in m.iter())
    ]
    assert with_names and with_names[0] > 0  # not the first Map
    first_entries = [e for e in maps[with_names[0]] if _local(e.tag) == "Entry"]
    assert first_entries[0].get("ChannelID") == "2"  # listed in swapped order

    cat = read_plate(plate.root)
    by_id = {c.channel_id: c for c in cat.channels}
    assert by_id[1].name == "pHluorin" and by_id[1].role is ChannelRole.PHLUORIN
    assert by_id[2].name == "DsRed" and by_id[2].role is ChannelRole.DSRED
    assert cat.pixel_size_um == pytest.approx(PIXEL_SIZE_UM)
    _assert_pixels_exact(cat.fields, cat, plate.images)


def test_three_digit_field_names(make_plate: MakePlate) -> None:
    plate = make_plate("harmony5", fields=3, field_digits=3)
    names = sorted(p.name for p in plate.root.glob("*.tiff"))
    assert names[0] == "r02c05f001p01-ch1sk1fk1fl1.tiff"
    cat = read_plate(plate.root)
    assert len(cat.fields) == 6
    _assert_pixels_exact(cat.fields, cat, plate.images)


@pytest.mark.parametrize("fmt", ["harmony4", "harmony7", "flex"])
def test_planes_and_timepoints(make_plate: MakePlate, fmt: str) -> None:
    plate = make_plate(fmt, wells=[(4, 4)], fields=2, planes=2, timepoints=2)
    cat = read_plate(plate.root)
    keys = [rec.key for rec in cat.fields]
    assert keys == sorted(plate.images)
    assert {k.plane for k in keys} == {1, 2}
    assert {k.timepoint for k in keys} == {0, 1}
    assert cat.expected_images == 1 * 2 * 2 * 2 * 2
    if fmt != "flex":
        assert (plate.root / "r04c04f02p02-ch2sk2fk1fl1.tiff").is_file()
    _assert_pixels_exact(cat.fields, cat, plate.images)


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_flex_factor_multiplies_pixels(make_plate: MakePlate, factor: float) -> None:
    plate = make_plate("flex", flex_factor=factor)
    cat = read_plate(plate.root)
    assert {src.factor for rec in cat.fields for src in rec.sources.values()} == {factor}
    for rec in cat.fields:
        expected = plate.images[rec.key].astype(np.float32) * np.float32(factor)
        np.testing.assert_array_equal(load_field(cat, rec), expected)


def test_flex_layout_one_file_per_well_with_xml_tag(make_plate: MakePlate) -> None:
    import tifffile

    plate = make_plate("flex")
    files = sorted(p.name for p in plate.root.glob("*.flex"))
    assert files == ["002005000.flex", "003007000.flex"]
    with tifffile.TiffFile(plate.root / files[0]) as tf:
        assert tf.byteorder == "<"
        assert len(tf.pages) == 2 * 2  # fields x channels
        first, second = tf.pages[0], tf.pages[1]
        assert isinstance(first, tifffile.TiffPage) and isinstance(second, tifffile.TiffPage)
        xml = first.tags[65200].value
        assert first.tags[65200].name == "FlexXML"
        assert 65200 not in second.tags
    root = ET.fromstring(xml)
    tags = {_local(e.tag) for e in root.iter()}
    assert {"Arrays", "Array", "WellCoordinate", "Image", "ExposureNo", "Stack"} <= tags
    assert {"Sublayout", "ImageResolutionX", "CameraBinningX"} <= tags
    # one .flex file alone is a (one-well) plate
    cat = read_plate(plate.root / files[1])
    assert cat.wells == ("r03c07",)
    assert len(cat.fields) == 2


@pytest.mark.parametrize(
    ("names", "fmt"),
    [
        (("mCherry", "EGFP"), "harmony5"),
        (("TagRFP", "Alexa 488"), "harmony6"),
        (("DsRed2", "GFP"), "flex"),
        (("red", "green"), "harmony7"),
    ],
)
def test_roles_from_realistic_names(
    make_plate: MakePlate, names: tuple[str, str], fmt: str
) -> None:
    plate = make_plate(fmt, channel_names=names)
    cat = read_plate(plate.root)
    assert {c.name: c.role for c in cat.channels} == {
        names[0]: ChannelRole.DSRED,
        names[1]: ChannelRole.PHLUORIN,
    }
    _assert_pixels_exact(cat.fields[:1], cat, plate.images)


@pytest.mark.parametrize("fmt", ["harmony6", "flex"])
def test_channel_role_override_by_name_and_id(make_plate: MakePlate, fmt: str) -> None:
    plate = make_plate(fmt, channel_names=("Ch-A", "Ch-B"), wavelengths=NO_WAVES)
    with pytest.raises(PlateFormatError, match="channel_roles"):
        read_plate(plate.root)
    by_name = read_plate(plate.root, channel_roles={"ch-a": "dsred", "CH-B": ChannelRole.PHLUORIN})
    by_id = read_plate(plate.root, channel_roles={1: ChannelRole.DSRED, 2: "phluorin"})
    assert by_name.fields == by_id.fields
    _assert_pixels_exact(by_name.fields, by_name, plate.images)


def test_override_swaps_correctly_named_channels(make_plate: MakePlate) -> None:
    plate = make_plate("harmony5")
    cat = read_plate(plate.root, channel_roles={"DsRed": "phluorin", "pHluorin": "dsred"})
    rec = cat.fields[0]
    arr = load_field(cat, rec)
    np.testing.assert_array_equal(arr[0], plate.images[rec.key][1])
    np.testing.assert_array_equal(arr[1], plate.images[rec.key][0])


def test_partial_override_keeps_inferred_role(make_plate: MakePlate) -> None:
    plate = make_plate("harmony4", channel_names=("Ch-A", "GFP"))
    cat = read_plate(plate.root, channel_roles={"Ch-A": "DsRed"})
    assert [c.role for c in cat.channels] == [ChannelRole.DSRED, ChannelRole.PHLUORIN]


@pytest.mark.parametrize("fmt", ["harmony5", "harmony6", "flex"])
def test_not_acquired_fields_are_skipped_not_problems(make_plate: MakePlate, fmt: str) -> None:
    skip = [FieldKey(2, 5, 3), FieldKey(3, 7, 1)]
    plate = make_plate(fmt, fields=3, fields_per_well=3, skip=skip)
    cat = read_plate(plate.root)
    assert [rec.key for rec in cat.fields] == sorted(plate.images)
    assert cat.problems == ()
    if fmt != "flex":  # Harmony lists them with an empty URL
        assert cat.declared_images == cat.expected_images == 2 * 3 * 2
        urls = [
            (e.text or "")
            for e in ET.fromstring(
                plate.index_file().read_bytes().removeprefix(b"\xef\xbb\xbf")
            ).iter()
            if _local(e.tag) == "URL"
        ]
        assert urls.count("") == 4


def test_wells_lists_only_acquired_wells(make_plate: MakePlate) -> None:
    plate = make_plate("harmony6", wells=[(1, 1), (8, 12), (5, 3)], fields=1)
    cat = read_plate(plate.root)
    assert cat.wells == ("r01c01", "r05c03", "r08c12")
    assert cat.get_field(FieldKey(8, 12, 1)).key == FieldKey(8, 12, 1)


def test_writer_validates_its_input(tmp_path: Path) -> None:
    with open_writer("harmony5", tmp_path / "a", plate_id="P", size_yx=SIZE_YX) as w:
        good = np.zeros((2, *SIZE_YX), np.uint16)
        w.add_field(FieldKey(1, 1, 1), good)
        with pytest.raises(ValueError, match=r"\(2, 64, 80\).*\(64, 80\)"):
            w.add_field(FieldKey(1, 1, 2), good[0])
        with pytest.raises(ValueError, match="uint16"):
            w.add_field(FieldKey(1, 1, 2), good.astype(np.float32))
        with pytest.raises(ValueError, match="twice"):
            w.add_field(FieldKey(1, 1, 1), good)
        with pytest.raises(ValueError, match="outside"):
            w.add_field(FieldKey(9, 1, 1), good)
    with pytest.raises(ValueError, match="export_format"):
        open_writer("harmony8", tmp_path / "b", plate_id="P")
    with pytest.raises(ValueError, match="flex_factor"):
        open_writer("harmony5", tmp_path / "c", plate_id="P", flex_factor=2.0)


def test_writer_without_close_leaves_no_index(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        open_writer("harmony6", tmp_path, plate_id="P", size_yx=SIZE_YX) as w,
    ):
        w.add_field(FieldKey(1, 1, 1), np.zeros((2, *SIZE_YX), np.uint16))
        raise RuntimeError("boom")
    assert not (tmp_path / "Images" / "Index.xml").exists()
    with pytest.raises(PlateFormatError, match=r"no Index\.idx\.xml"):
        read_plate(tmp_path)


# -- what Harmony writes: compressed TIFFs, V7 timepoints, a nuclear channel -----------------------
@pytest.mark.parametrize("compression", ["lzw", "deflate", "zstd", "packbits"])
def test_compressed_tiffs_read_and_count_complete(tmp_path: Path, compression: str) -> None:
    yy, xx = np.mgrid[: SIZE_YX[0], : SIZE_YX[1]]
    # bands of values whose two bytes are equal (257 = 0x0101): every codec shrinks it
    smooth = np.stack([257 * (1 + yy // 16), 257 * (2 + xx // 20)]).astype(np.uint16)
    keys = [FieldKey(2, 5, 1), FieldKey(2, 5, 2)]
    with open_writer(
        "harmony5", tmp_path, plate_id="P", size_yx=SIZE_YX, compression=compression
    ) as w:
        for k in keys:
            w.add_field(k, smooth)
    files = sorted(w.root.glob("*.tiff"))
    with tifffile.TiffFile(files[0]) as tf:
        assert tf.pages[0].compression.name.lower().startswith(compression[:3])
    # the old size rule (ImageSizeX x ImageSizeY x 2 bytes) would call every file broken
    assert max(f.stat().st_size for f in files) < SIZE_YX[0] * SIZE_YX[1] * 2
    cat = read_plate(w.root)
    _assert_pixels_exact(cat.fields, cat, dict.fromkeys(keys, smooth))
    for f in [*files, w.root / "Index.idx.xml"]:
        os.utime(f, (1e9, 1e9))
    report = check_complete(w.root)
    assert report.complete, report.reasons
    assert report.found_images == 4


def test_harmony7_timepoints_count_from_one(make_plate: MakePlate) -> None:
    plate = make_plate("harmony7", wells=[(4, 4)], fields=1, timepoints=2)
    text = plate.index_file().read_text("utf-8-sig")
    assert sorted(set(re.findall(r"<TimepointID>(\d+)</TimepointID>", text))) == ["1", "2"]
    cat = read_plate(plate.root)
    assert [rec.key.name for rec in cat.fields] == ["r04c04f01p01", "r04c04f01p01-t01"]
    _assert_pixels_exact(cat.fields, cat, plate.images)


@pytest.mark.parametrize("fmt", ["harmony5", "harmony7"])
def test_single_timepoint_field_names_have_no_suffix(make_plate: MakePlate, fmt: str) -> None:
    cat = read_plate(make_plate(fmt).root)
    assert all("-t" not in rec.key.name for rec in cat.fields)


@pytest.mark.parametrize("fmt", ["harmony5", "harmony6"])
def test_nuclear_channel_roundtrip(make_plate: MakePlate, fmt: str) -> None:
    plate = make_plate(fmt, nuclear_name="HOECHST 33342")
    cat = read_plate(plate.root)
    assert cat.nuclear_channel is not None
    assert cat.nuclear_channel.name == "HOECHST 33342"
    assert cat.nuclear_channel.excitation_nm == 405
    assert cat.expected_images == cat.declared_images == 3 * len(plate.images)
    for rec in cat.fields:
        np.testing.assert_array_equal(load_field(cat, rec), plate.images[rec.key][:2])
        nuclei = load_nuclei(cat, rec)
        assert nuclei is not None
        np.testing.assert_array_equal(nuclei, plate.images[rec.key][2].astype(np.float32))


def test_plate_without_nuclear_channel_loads_no_nuclei(make_plate: MakePlate) -> None:
    cat = read_plate(make_plate("harmony5").root)
    assert cat.nuclear_channel is None
    assert load_nuclei(cat, cat.fields[0]) is None
