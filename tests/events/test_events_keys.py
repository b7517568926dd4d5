"""Deterministic keys, identities, topic names and method names of the streaming events."""

from __future__ import annotations

import pytest

from phagoflow import events as ev
from phagoflow.core.opera.catalogue import ChannelRole, FieldKey

KEY = FieldKey(row=2, col=5, field=3, plane=1, timepoint=0)


def test_topics_are_the_six_documented_names() -> None:
    assert ev.ALL_TOPICS == (
        "phagoflow.fields.acquired",
        "phagoflow.masks.cip",
        "phagoflow.masks.cdl",
        "phagoflow.wells",
        "phagoflow.plates",
        "phagoflow.deadletter",
    )
    assert set(ev.TOPIC_EVENT_TYPES) == set(ev.ALL_TOPICS)
    assert ev.TOPIC_EVENT_TYPES[ev.Topic.MASKS_CDL] is ev.MaskReady
    assert ev.DEFAULT_PARTITIONS == 6


@pytest.mark.parametrize(
    ("method", "topic"),
    [("cip", "phagoflow.masks.cip"), ("cdl", "phagoflow.masks.cdl"), (2, "phagoflow.masks.cdl")],
)
def test_mask_topic(method: str | int, topic: str) -> None:
    assert ev.mask_topic(method) == topic


def test_mask_topic_rejects_methods_without_topic() -> None:
    with pytest.raises(ValueError, match="no mask topic"):
        ev.mask_topic("mdl")


def test_well_key_plain_barcode_is_readable() -> None:
    assert ev.well_key("PLATE-001_A", "r02c05") == "PLATE-001_A/r02c05"


@pytest.mark.parametrize("plate", ["P 1/x", "50%/a", "plate/with/slashes", "ü-plate"])
def test_well_key_escapes_and_round_trips(plate: str) -> None:
    key = ev.well_key(plate, "r10c12")
    assert key.count("/") == 1
    assert ev.parse_well_key(key) == (plate, "r10c12")
    assert ev.parse_well_key(key.encode()) == (plate, "r10c12")


@pytest.mark.parametrize(
    ("plate", "well", "match"),
    [
        ("", "r01c01", "plate id"),
        (" P1", "r01c01", "plate id"),
        ("P\n1", "r01c01", "plate id"),
        ("..", "r01c01", "plate id"),
        ("P1", "A01", "rRRcCC"),
        ("P1", "r1c1", "rRRcCC"),
    ],
)
def test_well_key_rejects_bad_parts(plate: str, well: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ev.well_key(plate, well)


@pytest.mark.parametrize("key", ["P1", "P1/", "/r01c01", "P1/r01c01/x", "P1/B02"])
def test_parse_well_key_rejects_malformed(key: str) -> None:
    with pytest.raises(ValueError):
        ev.parse_well_key(key)


def test_field_id_round_trips_field_key() -> None:
    key = FieldKey(row=12, col=3, field=101, plane=4, timepoint=7)
    fid = ev.field_id("P1", key)
    assert (fid.plate, fid.well, fid.field, fid.plane, fid.timepoint) == ("P1", "r12c03", 101, 4, 7)
    assert ev.field_key(fid) == key


@pytest.mark.parametrize(
    ("fid", "match"),
    [
        (ev.FieldId(plate="P", well="x", field=1, plane=1), "rRRcCC"),
        (ev.FieldId(plate="P", well="r01c01", field=0, plane=1), "1-based"),
        (ev.FieldId(plate="P", well="r01c01", field=1, plane=0), "1-based"),
    ],
)
def test_field_key_rejects_invalid_ids(fid: ev.FieldId, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ev.field_key(fid)


def test_result_identity_is_deterministic_and_distinguishes_parts() -> None:
    fid = ev.field_id("P1", KEY)
    ident = ev.result_identity(fid, "cdl", "3")
    assert ident == "P1/r02c05/r02c05f03p01/cdl/3"
    assert ev.result_identity(ev.field_id("P1", KEY), ev.Method.METHOD_CDL, "3") == ident
    others = {
        ev.result_identity(fid, "cip", "3"),
        ev.result_identity(fid, "cdl", "4"),
        ev.result_identity(ev.field_id("P1", FieldKey(2, 5, 3, plane=2)), "cdl", "3"),
        ev.result_identity(ev.field_id("P1", FieldKey(2, 5, 3, timepoint=1)), "cdl", "3"),
        ev.result_identity(ev.field_id("P2", KEY), "cdl", "3"),
    }
    assert ident not in others
    assert len(others) == 5


def test_object_keys() -> None:
    assert (
        ev.raw_object_key("P1", KEY, ChannelRole.DSRED) == "raw/P1/r02c05/r02c05f03p01/dsred.tiff"
    )
    assert ev.raw_object_key("P/1", KEY, "phluorin").startswith("raw/P%2F1/r02c05/")
    assert (
        ev.mask_object_key("P1", KEY, "cdl", "3")
        == "results/P1/cdl/3/r02c05/r02c05f03p01.mask.tiff"
    )
    assert (
        ev.objects_object_key("P1", KEY, "cip", "")
        == "results/P1/cip/-/r02c05/r02c05f03p01.objects.csv"
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("P1", KEY, "unet", "1"), "method"),
        (("P1", KEY, "cdl", "1/2"), "model version"),
        (("", KEY, "cdl", "1"), "plate id"),
    ],
)
def test_result_object_keys_reject_bad_parts(
    args: tuple[str, FieldKey, str, str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        ev.mask_object_key(*args)


def test_raw_object_key_rejects_unknown_role() -> None:
    with pytest.raises(ValueError):
        ev.raw_object_key("P1", KEY, "gfp")


@pytest.mark.parametrize("name", ["cip", "cdl", "mdl"])
def test_method_names_round_trip(name: str) -> None:
    assert ev.method_name(ev.method_from_name(name)) == name


def test_method_names_reject_unknown() -> None:
    with pytest.raises(ValueError, match="unspecified"):
        ev.method_name(ev.Method.METHOD_UNSPECIFIED)
    with pytest.raises(ValueError, match="one of"):
        ev.method_from_name("CIP")


def test_event_key_for_each_event_type() -> None:
    fid = ev.field_id("P 1", KEY)
    expected = b"P%201/r02c05"
    assert ev.event_key(ev.FieldAcquired(field=fid)) == expected
    assert ev.event_key(ev.MaskReady(field=fid)) == expected
    assert ev.event_key(ev.WellComplete(plate="P 1", well="r02c05")) == expected
    assert ev.event_key(ev.PlateComplete(plate="P 1")) == b"P%201"
    assert ev.event_key(ev.DeadLetter(key="P1/r01c01")) == b"P1/r01c01"
    with pytest.raises(ValueError, match="not a phagoflow event"):
        ev.event_key(ev.ObjectRef(key="x"))
    with pytest.raises(ValueError, match="plate id"):
        ev.event_key(ev.MaskReady())


def test_manifest_and_report_keys() -> None:
    assert ev.manifest_object_key("P 1/x") == "manifests/P%201%2Fx/ingest.json"
    assert ev.report_object_key("P1", "wells.csv") == "reports/P1/wells.csv"
    for bad in ("", "a/b", "..", "."):
        with pytest.raises(ValueError, match="plain file name"):
            ev.report_object_key("P1", bad)
    with pytest.raises(ValueError, match="plate id"):
        ev.manifest_object_key("")
