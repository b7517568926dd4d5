"""metrics service on a real broker and S3 server: same per-well numbers as the embedded run,
WellComplete, reports, JSON API, Prometheus, restart and replays without double counting."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from svc_testing import LocalStack, wait_for

from phagoflow import events as ev
from phagoflow.core.cells import FieldCells
from phagoflow.core.counting import FieldCounts
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.embedded.run import RunResult
from phagoflow.services.metrics import MetricsService, MetricsSettings, MetricsState

WELLS = ev.Topic.WELLS.value


def _mask_ready(counts: FieldCounts, *, version: str = "v1", expected: int = 4) -> ev.MaskReady:
    event = ev.MaskReady(
        header=ev.new_header("test"),
        field=ev.field_id(counts.plate, counts.key),
        method=ev.method_from_name(counts.method),
        model_name=counts.method,
        model_version=version,
        well_fields_expected=2,
        plate_fields_expected=expected,
        acquired_at=ev.to_timestamp(datetime.now(UTC) - timedelta(seconds=3)),
    )
    event.stage_seconds["segment"] = 0.5
    return ev.set_counts(event, counts)


def _plate_complete(plate: str, published: int, failed: list[str] = ()) -> ev.PlateComplete:  # type: ignore[assignment]
    event = ev.PlateComplete(
        header=ev.new_header("test"),
        plate=plate,
        plate_rows=8,
        plate_columns=12,
        fields_expected=published + len(failed),
        fields_published=published,
    )
    for name in failed:
        event.failed.append(
            ev.FieldFailure(
                field=ev.field_id(plate, FieldKey.parse(name)),
                stage="ingest",
                reason="truncated TIFF",
                path=f"{name}-ch1sk1fk1fl1.tiff",
            )
        )
    return event


def _send(stack: LocalStack, topic: str, event: Any) -> None:
    stack.produce(topic, ev.encode(event), key=ev.event_key(event))


def _get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait_api(port: int, path: str, pred: Any = bool, timeout_s: float = 30.0) -> Any:
    """The body of ``GET path`` once it answers 200 and ``pred(body)`` holds."""

    def check() -> Any:
        status, body = _get(port, path)
        return body if status == 200 and pred(body) else None

    return wait_for(check, timeout_s=timeout_s)


def _metrics(stack: LocalStack) -> MetricsService:
    return MetricsService(stack.settings(MetricsSettings), http_port=0)


def _ref_counts(reference: RunResult) -> list[FieldCounts]:
    return [o.counts for o in reference.outcomes if o.counts is not None and o.method == "cip"]


def test_aggregates_like_the_embedded_run_and_survives_restart(
    local_stack: LocalStack, reference: RunResult
) -> None:
    counts = _ref_counts(reference)
    plate = counts[0].plate
    for c in counts:
        _send(local_stack, ev.Topic.MASKS_CIP.value, _mask_ready(c, expected=len(counts)))
    svc = local_stack.start(_metrics(local_stack))
    port = svc.port
    body = _wait_api(
        port, f"/api/v1/plates/{plate}", lambda b: b["methods"]["cip"]["done"] == len(counts)
    )
    assert body["complete"] is False  # ingest has not said the plate is complete
    assert body["methods"]["cip"]["expected"] == len(counts)

    # both wells are complete: one WellComplete each, with the core's numbers
    wells = local_stack.read(WELLS, min_count=2)
    by_well = {r.event.well: r.event for r in wells if isinstance(r.event, ev.WellComplete)}
    ref = {w.well: w for w in reference.wells}
    assert set(by_well) == set(ref)
    for well, event in by_well.items():
        assert (event.fields, event.phagophores, event.autolysosomes) == (
            ref[well].fields,
            ref[well].phagophores,
            ref[well].autolysosomes,
        )
        assert event.phagophore_area_um2 == ref[well].phagophore_area_um2

    _send(local_stack, ev.Topic.PLATES.value, _plate_complete(plate, len(counts)))
    _wait_api(port, f"/api/v1/plates/{plate}", lambda b: b["complete"])
    status, rows = _get(port, f"/api/v1/plates/{plate}/wells")
    assert status == 200
    assert sorted(
        (r["well"], r["method"], r["fields"], r["phagophores"], r["autolysosomes"]) for r in rows
    ) == sorted(
        (w.well, w.method, w.fields, w.phagophores, w.autolysosomes) for w in reference.wells
    )
    store = local_stack.store()
    # wells.csv is written by the embedded runner's writer: byte-identical to `phagoflow run`
    csv_key = ev.report_object_key(plate, "wells.csv")
    assert store.get_bytes(csv_key) == (reference.out_dir / "wells.csv").read_bytes()
    png = store.get_bytes(ev.report_object_key(plate, "plate_heatmap.png"))
    assert png.startswith(b"\x89PNG")
    status, plates = _get(port, "/api/v1/plates")
    assert [p["plate"] for p in plates] == [plate] and plates[0]["complete"] is True

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    well = sorted(ref)[0]
    assert (
        f'phagoflow_well_objects{{class="phagophore",method="cip",plate="{plate}",well="{well}"}} '
        f"{float(ref[well].phagophores)}" in text
    )
    assert f'phagoflow_fields_processed_total{{method="cip"}} {float(len(counts))}' in text
    assert "phagoflow_acquisition_to_result_seconds_bucket" in text
    assert f'phagoflow_plate_complete{{plate="{plate}"}} 1.0' in text
    local_stack.stop(svc)

    # restart: replays of every result (a producer retry, a re-run of cip) change nothing
    for c in counts:
        _send(local_stack, ev.Topic.MASKS_CIP.value, _mask_ready(c, expected=len(counts)))
    again = local_stack.start(_metrics(local_stack))
    wait_for(
        lambda: (
            'phagoflow_duplicate_results_total{method="cip"} '
            f"{float(len(counts))}" in _scrape(again.port)
        ),
        timeout_s=30,
    )
    status, rows2 = _get(again.port, f"/api/v1/plates/{plate}/wells")
    assert rows2 == rows
    assert _get(again.port, f"/api/v1/plates/{plate}")[1]["complete"] is True
    assert len(local_stack.read(WELLS)) == 2  # no second WellComplete


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_failed_fields_complete_the_plate_and_are_listed(
    local_stack: LocalStack, reference: RunResult
) -> None:
    counts = _ref_counts(reference)
    plate = counts[0].plate
    lost = counts[-1].key.name
    for c in counts[:-1]:
        _send(local_stack, ev.Topic.MASKS_CIP.value, _mask_ready(c, expected=len(counts)))
    _send(local_stack, ev.Topic.PLATES.value, _plate_complete(plate, len(counts) - 1, [lost]))
    local_stack.produce(ev.Topic.MASKS_CIP.value, b"garbage", key=b"x/r01c01")
    svc = local_stack.start(_metrics(local_stack))
    body = _wait_api(svc.port, f"/api/v1/plates/{plate}", lambda b: b["complete"])
    assert body["methods"]["cip"]["done"] == len(counts) - 1
    assert [f["field"] for f in body["failed"]] == [lost]
    assert body["failed"][0]["reason"] == "truncated TIFF"
    wells = wait_for(lambda: len(x := local_stack.read(WELLS)) == 2 and x)
    failed_well = next(r.event for r in wells if r.event.well == counts[-1].key.well)
    assert isinstance(failed_well, ev.WellComplete)
    assert failed_well.fields == 1 and len(failed_well.failed) == 1
    (letter,) = (r.event for r in local_stack.read(ev.Topic.DEADLETTER.value, min_count=1))
    assert isinstance(letter, ev.DeadLetter)
    assert letter.stage == "metrics" and letter.source_topic == ev.Topic.MASKS_CIP.value
    assert _get(svc.port, "/api/v1/plates/NOPE")[0] == 404
    assert _get(svc.port, "/api/v1/nothing")[0] == 404


@pytest.mark.parametrize("plate", ["A/B 1"])
def test_plate_ids_with_slashes_in_the_api(local_stack: LocalStack, plate: str) -> None:
    counts = FieldCounts(plate, FieldKey(1, 1, 1), "cip", 3, 1, 1.5, 2.5)
    _send(local_stack, ev.Topic.MASKS_CIP.value, _mask_ready(counts, expected=1))
    svc = local_stack.start(_metrics(local_stack))
    quoted = urllib.request.quote(plate, safe="")
    rows = _wait_api(svc.port, f"/api/v1/plates/{quoted}/wells")
    assert rows[0]["well"] == "r01c01" and rows[0]["phagophores"] == 3


def test_the_snapshot_keeps_each_fields_cells(reference: RunResult) -> None:
    """A restart with nothing to replay must not lose the cell readouts of wells.csv."""
    state = MetricsState(["cip"])
    counts = _ref_counts(reference)
    nuclei = dataclasses.replace(counts[0], cells=FieldCells(12, 480.5, 3210.25, 3690.75))
    for c in [nuclei, *counts[1:]]:
        state.apply_mask_ready(_mask_ready(c, expected=len(counts)))
    doc = json.loads(json.dumps(state.to_json()))  # through the JSON text, as in S3
    back = MetricsState.from_json(doc, ["cip"])
    plate = counts[0].plate
    assert back.plates[plate].counts() == state.plates[plate].counts()
    assert back.plates[plate].counts()[0].cells == FieldCells(12, 480.5, 3210.25, 3690.75)
    assert any(c.cells is not None and c.cells.n_cells is None for c in back.plates[plate].counts())
