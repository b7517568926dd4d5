"""The readers on exports that Harmony itself wrote (``../shared/real_exports``, read in place).

Three oracles, none of them our reader: the XML itself (parsed here with ElementTree, by local
names), the independent reader ``openreadout`` (Rust) for the catalogue and — where the vendor's
LZW TIFFs are present — for the decoded pixels, and the completeness rule on files we damage in a
temporary copy. Skipped, export by export, when the folder is absent.
"""

from __future__ import annotations

import math
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from phagoflow.core.opera import (
    ROLE_ORDER,
    ChannelRole,
    PlateFormatError,
    check_complete,
    load_field,
    load_nuclei,
    parse_channel_roles,
    parse_index,
    read_plate,
)
from real_exports import EXPORTS, RealExport, ids, require

openreadout: Any = pytest.importorskip("openreadout", reason="openreadout is a dev extra")

WITH_PIXELS = tuple(e for e in EXPORTS if e.has_pixels)
INDEX_ONLY = tuple(e for e in EXPORTS if not e.has_pixels)
_CHANNEL_TAGS = (
    {"ChannelName", "ImageSizeX", "ImageSizeY"}
    | {f"{w}Wavelength" for w in ("MainExcitation", "MainEmission")}
    | {"ImageResolutionX"}
)


# -- the XML as the oracle --------------------------------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_images(export: Path) -> tuple[ET.Element, list[dict[str, str]]]:
    """Every Image of the index with the channel description merged in from the Maps."""
    index = next(p for p in (export / "Images").iterdir() if p.name.startswith("Index"))
    root = ET.fromstring(index.read_bytes().removeprefix(b"\xef\xbb\xbf"))
    maps: dict[str, dict[str, str]] = {}
    for entry in root.iter():
        if _local(entry.tag) == "Entry" and entry.get("ChannelID"):
            for child in entry:
                if _local(child.tag) in _CHANNEL_TAGS and child.text:
                    maps.setdefault(entry.get("ChannelID", ""), {}).setdefault(
                        _local(child.tag), child.text.strip()
                    )
    images = []
    for el in root.iter():
        if _local(el.tag) == "Image" and len(el):
            values = {_local(c.tag): (c.text or "").strip() for c in el}
            for tag, text in maps.get(values["ChannelID"], {}).items():
                values.setdefault(tag, text) if values.get(tag) else values.__setitem__(tag, text)
            images.append(values)
    return root, images


def _xml_text(root: ET.Element, name: str) -> str:
    return next((el.text or "").strip() for el in root.iter() if _local(el.tag) == name)


@pytest.mark.parametrize("export", EXPORTS, ids=ids())
def test_catalogue_fields_match_the_xml(export: RealExport) -> None:
    path = require(export)
    root, images = _xml_images(path)
    index = parse_index(path)
    assert index.format_version == export.format_version
    assert index.plate_id == _xml_text(root, "PlateID")
    assert index.measurement_id == _xml_text(root, "MeasurementID")
    assert (index.plate_rows, index.plate_columns) == (
        int(_xml_text(root, "PlateRows")),
        int(_xml_text(root, "PlateColumns")),
    )
    assert len(index.images) == len(images)
    t_base = min(int(im["TimepointID"]) for im in images)  # V7 counts from 1, V5 from 0
    assert t_base == (1 if export.format_version == "HarmonyV7" else 0)
    for ours, xml in zip(index.images, images, strict=True):
        k = ours.key
        assert (k.row, k.col, k.field, k.plane) == tuple(
            int(xml[t]) for t in ("Row", "Col", "FieldID", "PlaneID")
        )
        assert k.timepoint == int(xml["TimepointID"]) - t_base == 0
        assert k.name == f"r{k.row:02d}c{k.col:02d}f{k.field:02d}p{k.plane:02d}"  # no -t01
        assert ours.channel_id == int(xml["ChannelID"])
        assert ours.url == xml["URL"]
        assert ours.size_yx == (int(xml["ImageSizeY"]), int(xml["ImageSizeX"]))
        assert ours.pixel_size_um == pytest.approx(float(xml["ImageResolutionX"]) * 1e6)
        assert index.channel_names[ours.channel_id] == xml["ChannelName"]
        ex, em = index.channel_wavelengths[ours.channel_id]
        assert ex == float(xml["MainExcitationWavelength"])
        assert em == float(xml["MainEmissionWavelength"])


@pytest.mark.parametrize("export", EXPORTS, ids=ids())
def test_catalogue_agrees_with_openreadout(export: RealExport) -> None:
    path = require(export)
    roles = parse_channel_roles(export.roles) or None
    cat = read_plate(path, channel_roles=roles, strict_roles=False)
    with openreadout.File(str(path)) as f:
        info = f.info
        plate = f.plate
    assert plate["id"] == cat.plate_id
    assert (plate["rows"], plate["columns"]) == (cat.plate_rows, cat.plate_columns)
    assert sorted(f"r{w['row_index'] + 1:02d}c{w['column']:02d}" for w in plate["wells"]) == list(
        cat.wells
    )
    first = info["images"][0]
    assert (first["size_y"], first["size_x"]) == cat.size_yx
    assert first["physical_size"]["x"] == pytest.approx(cat.pixel_size_um)
    theirs = [(c["name"], c.get("excitation_nm"), c.get("emission_nm")) for c in first["channels"]]
    ours = [(c.name, c.excitation_nm, c.emission_nm) for c in cat.channels]
    for (n1, ex1, em1), (n2, ex2, em2) in zip(theirs, ours, strict=True):
        assert n1 == n2 and ex1 == ex2
        assert em1 == em2 or (em1 is None and em2 == 0.0)  # bright field: emission 0 in the XML
    if export.has_pixels:
        assert len(cat.fields) == len(info["images"])


@pytest.mark.parametrize("export", EXPORTS, ids=ids())
def test_roles_from_wavelengths_without_override(export: RealExport) -> None:
    path = require(export)
    if export.auto_roles is None:
        with pytest.raises(PlateFormatError, match="--channel-role NAME=ROLE") as info:
            read_plate(path)
        assert "ex " in str(info.value) and " nm" in str(info.value)  # listed with wavelengths
        return
    cat = read_plate(path)
    got = {c.name: c.role_label for c in cat.channels if c.roles}
    assert got == export.auto_roles
    # the decoys of these plates: excited at 488 but read in the far red / orange, far red, UV
    for c in cat.channels:
        if c.name in {"488 long", "488 650", "Alexa 488 Em 650", "Alexa 647", "405ex, 570-630-em)"}:
            assert c.roles == (), c


@pytest.mark.parametrize("export", WITH_PIXELS, ids=ids(WITH_PIXELS))
def test_vendor_lzw_pixels_equal_openreadout(export: RealExport) -> None:
    path = require(export)
    cat = read_plate(path, channel_roles=parse_channel_roles(export.roles))
    assert cat.fields, "no readable field"
    with openreadout.File(str(path)) as f:
        images = f.info["images"]
        index_of = {
            (im["extra"]["row_index"] + 1, im["extra"]["column"], im["extra"]["field"]): i
            for i, im in enumerate(images)
        }
        channel_index = {c.channel_id: i for i, c in enumerate(cat.channels)}
        for rec in cat.fields:
            ours = load_field(cat, rec)
            assert ours.dtype == np.float32 and ours.shape == (2, *cat.size_yx)
            i = index_of[(rec.key.row, rec.key.col, rec.key.field)]
            for plane, role in enumerate(ROLE_ORDER):
                channel = next(c for c in cat.channels if role in c.roles)
                theirs = f.read_plane(i, c=channel_index[channel.channel_id])
                np.testing.assert_array_equal(ours[plane], theirs.astype(np.float32))
            assert float(ours.std()) > 0  # real, varied pixels


def test_nuclear_channel_found_and_read() -> None:
    export = next(e for e in EXPORTS if e.name == "harmony5_phenix_2021_cellpainting")
    cat = read_plate(require(export))
    assert cat.nuclear_channel is not None and cat.nuclear_channel.name == "HOECHST 33342"
    nuclei = load_nuclei(cat, cat.fields[0])
    assert nuclei is not None and nuclei.shape == cat.size_yx and float(nuclei.max()) > 0


@pytest.mark.parametrize("export", WITH_PIXELS, ids=ids(WITH_PIXELS))
def test_vendor_exports_are_complete(export: RealExport) -> None:
    report = check_complete(require(export), quiet_seconds=0)
    assert report.complete, report.reasons
    assert report.found_images == report.acquired_images == report.declared_images


@pytest.mark.parametrize("export", INDEX_ONLY, ids=ids(INDEX_ONLY))
def test_index_only_copies_are_incomplete(export: RealExport) -> None:
    report = check_complete(require(export), quiet_seconds=0)
    assert not report.complete
    assert report.found_images == 0
    assert any(f"{report.acquired_images} image file(s) missing" in r for r in report.reasons)


def test_truncated_vendor_tiff_is_incomplete(tmp_path: Path) -> None:
    export = next(e for e in WITH_PIXELS if e.name == "harmony5_sonata_2022")
    copy = tmp_path / export.name
    shutil.copytree(require(export), copy)
    for p in copy.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)  # CI's copy of shared/ has no write bits
    victim = sorted((copy / "Images").glob("*.tiff"))[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: math.floor(len(data) * 0.9)])  # an LZW strip cut short
    report = check_complete(copy, quiet_seconds=0)
    assert not report.complete
    assert any("1 image file(s) incomplete" in r and victim.name in r for r in report.reasons)
    assert report.found_images == report.acquired_images - 1


def test_single_channel_plate_stands_in_for_both_roles() -> None:
    export = next(e for e in WITH_PIXELS if e.name == "harmony5_sonata_2022")
    cat = read_plate(require(export), channel_roles={"Fluorescein (FITC)": "both"})
    (channel,) = cat.channels
    assert channel.roles == (ChannelRole.DSRED, ChannelRole.PHLUORIN)
    assert channel.role_label == "dsred+phluorin" and channel.role_source == "override"
    image = load_field(cat, cat.fields[0])
    np.testing.assert_array_equal(image[0], image[1])
