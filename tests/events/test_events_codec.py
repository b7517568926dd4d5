"""Event (de)serialisation, headers, timestamps and conversions to and from the core types."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from phagoflow import events as ev
from phagoflow.core.cells import FieldCells
from phagoflow.core.counting import FieldCounts, aggregate_wells
from phagoflow.core.opera.catalogue import FieldKey

KEY = FieldKey(row=1, col=2, field=3)
WHEN = datetime(2026, 11, 25, 9, 30, 15, 123456, tzinfo=UTC)
HEADER = ev.new_header("metrics", now=WHEN)


def _field_acquired() -> ev.FieldAcquired:
    event = ev.FieldAcquired(
        header=ev.new_header("ingest", now=WHEN),
        field=ev.field_id("P1", KEY),
        pixel_size_um=0.2,
        size_x=680,
        size_y=512,
        measurement_id="M-7",
        export_format="harmony",
        format_version="HarmonyV5",
        well_fields_expected=9,
        plate_fields_expected=864,
    )
    for role, cid, name in (("dsred", 1, "DsRed"), ("phluorin", 2, "pHluorin")):
        event.channels[role].CopyFrom(
            ev.ChannelImage(
                object=ev.ObjectRef(
                    bucket="phagoflow",
                    key=ev.raw_object_key("P1", KEY, role),
                    sha256="ab" * 32,
                    size_bytes=680 * 512 * 2,
                ),
                channel_id=cid,
                channel_name=name,
            )
        )
    event.acquired_at.CopyFrom(ev.to_timestamp(WHEN))
    return event


def test_field_acquired_round_trip_carries_keys_not_pixels() -> None:
    event = _field_acquired()
    data = ev.encode(event)
    assert len(data) < 1024  # object keys and metadata only
    back = ev.decode(ev.FieldAcquired, data)
    assert back == event
    assert back.channels["phluorin"].object.key == "raw/P1/r01c02/r01c02f03p01/phluorin.tiff"
    assert not back.channels["dsred"].HasField("intensity_factor")
    assert ev.from_timestamp(back.acquired_at) == WHEN


def test_encode_is_deterministic_across_map_insertion_order() -> None:
    a = ev.MaskReady(field=ev.field_id("P1", KEY), method=ev.Method.METHOD_CIP)
    b = ev.MaskReady(field=ev.field_id("P1", KEY), method=ev.Method.METHOD_CIP)
    for name, sec in (("download", 0.1), ("segment", 1.5), ("upload", 0.2)):
        a.stage_seconds[name] = sec
    for name, sec in (("upload", 0.2), ("segment", 1.5), ("download", 0.1)):
        b.stage_seconds[name] = sec
    assert ev.encode(a) == ev.encode(b)


def test_encode_requires_field_identity() -> None:
    with pytest.raises(ValueError, match="without a field identity"):
        ev.encode(ev.MaskReady(method=ev.Method.METHOD_CDL))


@pytest.mark.parametrize("data", [b"\xff\xff\xff", b"\x12\x40abc", b"\x0a"])
def test_decode_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ev.EventDecodeError, match="cannot decode"):
        ev.decode(ev.FieldAcquired, data)


def test_decode_rejects_truncated_event() -> None:
    data = ev.encode(_field_acquired())
    with pytest.raises(ev.EventDecodeError):
        ev.decode(ev.FieldAcquired, data[: len(data) // 2])


def test_decode_record_by_topic_and_type_header() -> None:
    event = _field_acquired()
    headers = ev.kafka_headers(event)
    assert (ev.HEADER_EVENT_TYPE, b"phagoflow.v1.FieldAcquired") in headers
    assert ev.decode_record(ev.Topic.FIELDS_ACQUIRED, ev.encode(event), headers) == event
    with pytest.raises(ev.EventDecodeError, match="declares type"):
        ev.decode_record(ev.Topic.MASKS_CIP, ev.encode(event), headers)
    with pytest.raises(ev.EventDecodeError, match="no event type"):
        ev.decode_record("other.topic", ev.encode(event))


def test_new_header_fields() -> None:
    h1, h2 = ev.new_header("cip"), ev.new_header("cip")
    assert h1.event_id != h2.event_id
    assert h1.producer.startswith("phagoflow-cip/")
    age = datetime.now(UTC) - ev.from_timestamp(h1.produced_at)
    assert timedelta(0) <= age < timedelta(seconds=60)


def test_timestamps_are_utc_and_reject_naive() -> None:
    cet = timezone(timedelta(hours=1))
    local = datetime(2026, 1, 1, 10, 0, tzinfo=cet)
    assert ev.from_timestamp(ev.to_timestamp(local)) == local
    assert ev.from_timestamp(ev.to_timestamp(local)).utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        ev.to_timestamp(datetime(2026, 1, 1))


def _counts(key: FieldKey, phago: int, auto: int, method: str = "cdl") -> FieldCounts:
    return FieldCounts(
        plate="P1",
        key=key,
        method=method,
        phagophores=phago,
        autolysosomes=auto,
        phagophore_area_um2=phago * 0.1234567,
        autolysosome_area_um2=auto * 0.7654321,
    )


def test_mask_ready_counts_round_trip_exactly() -> None:
    counts = _counts(KEY, 17, 4)
    event = ev.MaskReady(field=ev.field_id("P1", KEY), method=ev.Method.METHOD_CDL)
    ev.set_counts(event, counts)
    assert event.counts["phagophore"].objects == 17
    back = ev.decode(ev.MaskReady, ev.encode(event))
    assert ev.field_counts_from_mask_ready(back) == counts


@pytest.mark.parametrize(
    "cells",
    [
        FieldCells(None, None, 1234.5678, 1234.5678),  # no nuclear stain: cytoplasm only
        FieldCells(0, 0.0, 0.0, 0.0),  # a nuclear stain and no cell: 0 is not "absent"
        FieldCells(31, 2468.0135, 9876.54321, 12344.55671),
    ],
)
def test_mask_ready_carries_the_field_cells_exactly(cells: FieldCells) -> None:
    counts = dataclasses.replace(_counts(KEY, 17, 4), cells=cells)
    event = ev.MaskReady(field=ev.field_id("P1", KEY), method=ev.Method.METHOD_CDL)
    back = ev.decode(ev.MaskReady, ev.encode(ev.set_counts(event, counts)))
    assert back.HasField("cells")
    assert ev.field_counts_from_mask_ready(back) == counts


def test_mask_ready_without_cells_reads_back_none() -> None:
    event = ev.set_counts(
        ev.MaskReady(field=ev.field_id("P1", KEY), method=ev.Method.METHOD_CDL),
        _counts(KEY, 2, 1),
    )
    back = ev.decode(ev.MaskReady, ev.encode(event))
    assert not back.HasField("cells")
    assert ev.field_counts_from_mask_ready(back).cells is None


def test_set_counts_rejects_other_field_or_method() -> None:
    event = ev.MaskReady(field=ev.field_id("P1", KEY), method=ev.Method.METHOD_CIP)
    with pytest.raises(ValueError, match="method"):
        ev.set_counts(event, _counts(KEY, 1, 1, method="cdl"))
    with pytest.raises(ValueError, match="field"):
        ev.set_counts(event, _counts(FieldKey(1, 2, 4), 1, 1, method="cip"))


def test_field_counts_from_mask_ready_rejects_incomplete_counts() -> None:
    event = ev.MaskReady(field=ev.field_id("P1", KEY), method=ev.Method.METHOD_CDL)
    event.counts["phagophore"].objects = 3
    with pytest.raises(ValueError, match="lack classes"):
        ev.field_counts_from_mask_ready(event)
    event.counts["autolysosome"].objects = 1
    event.counts["autophagosome"].objects = 1
    with pytest.raises(ValueError, match="unknown classes"):
        ev.field_counts_from_mask_ready(event)


def test_well_complete_mirrors_the_core_summary() -> None:
    fields = [_counts(FieldKey(1, 2, f), p, a) for f, p, a in ((1, 3, 1), (2, 5, 0), (3, 4, 2))]
    (summary,) = aggregate_wells(fields)
    header = ev.new_header("metrics", now=WHEN)
    failure = ev.FieldFailure(
        field=ev.field_id("P1", FieldKey(1, 2, 4)), stage="cdl", reason="truncated TIFF"
    )
    event = ev.well_complete_from_summary(
        summary, header=header, model_version="3", failed=[failure], completed_at=WHEN
    )
    back = ev.decode(ev.WellComplete, ev.encode(event))
    assert (back.plate, back.well, ev.method_name(back.method)) == ("P1", "r01c02", "cdl")
    assert (back.fields, back.phagophores, back.autolysosomes) == (3, 12, 3)
    assert back.phagophores_per_field_sd == summary.phagophores_per_field_sd
    assert back.autolysosome_phagophore_ratio == pytest.approx(3 / 12)
    assert back.failed[0].reason == "truncated TIFF"
    assert ev.from_timestamp(back.completed_at) == WHEN


def test_well_complete_carries_the_cell_readouts() -> None:
    cells = [FieldCells(10, 500.0, 2000.0, 2500.0), FieldCells(6, 300.0, 1000.0, 1300.0)]
    fields = [
        dataclasses.replace(_counts(FieldKey(1, 2, f), p, a), cells=c)
        for f, p, a, c in ((1, 8, 4, cells[0]), (2, 4, 2, cells[1]))
    ]
    (summary,) = aggregate_wells(fields)
    back = ev.decode(
        ev.WellComplete, ev.encode(ev.well_complete_from_summary(summary, header=HEADER))
    )
    assert back.HasField("cells") and back.cells == 16
    assert (back.cytoplasm_area_um2, back.cell_area_um2) == (3000.0, 3800.0)
    assert back.phagophores_per_cell == pytest.approx(12 / 16)
    assert back.autolysosomes_per_1000um2 == pytest.approx(6 / 3.0)


def test_well_complete_without_nuclei_has_no_cell_count() -> None:
    (summary,) = aggregate_wells([_counts(KEY, 3, 2)])
    back = ev.decode(
        ev.WellComplete, ev.encode(ev.well_complete_from_summary(summary, header=HEADER))
    )
    assert not back.HasField("cells")
    assert math.isnan(back.phagophores_per_cell) and math.isnan(back.cytoplasm_area_um2)


def test_well_complete_keeps_nan_ratio() -> None:
    (summary,) = aggregate_wells([_counts(KEY, 0, 2)])
    event = ev.well_complete_from_summary(summary, header=ev.new_header("metrics"))
    assert math.isnan(ev.decode(ev.WellComplete, ev.encode(event)).autolysosome_phagophore_ratio)


def test_dead_letter_round_trip() -> None:
    dl = ev.DeadLetter(
        header=ev.new_header("cip"),
        source_topic=ev.Topic.FIELDS_ACQUIRED,
        source_partition=4,
        source_offset=123456789012,
        key="P1/r01c02",
        stage="cip",
        error_type="FieldReadError",
        error="r01c02f03p01: truncated TIFF (expected 696320 bytes, found 1024)",
        payload=ev.ObjectRef(bucket="phagoflow", key="deadletter/x.bin", size_bytes=9),
        payload_type="phagoflow.v1.FieldAcquired",
        attempts=3,
    )
    back = ev.decode_record(ev.Topic.DEADLETTER, ev.encode(dl), ev.kafka_headers(dl))
    assert back == dl
    assert ev.event_key(back) == b"P1/r01c02"
