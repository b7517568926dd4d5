"""cip service on a real broker and S3 server: same masks and counts as the core, dead letters."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import tifffile
from svc_testing import LocalStack, copy_into, harmony_files

from phagoflow import events as ev
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.simulate import NuclearStainParameters, SimulatedPlate, simulate_plate
from phagoflow.embedded.run import RunResult, run_plate
from phagoflow.services.cip import CipService, CipSettings
from phagoflow.services.ingest import IngestService, IngestSettings

MASKS = ev.Topic.MASKS_CIP.value
DEAD = ev.Topic.DEADLETTER.value


def _ingest_all(
    stack: LocalStack, sim_plate: SimulatedPlate, names: list[str] | None = None
) -> int:
    index, fields = harmony_files(sim_plate.export_dir)
    chosen = sorted(fields) if names is None else names
    watch = stack.tmp / "incoming"
    copy_into([index, *(f for n in chosen for f in fields[n])], watch / "p" / "Images")
    svc = IngestService(
        stack.settings(IngestSettings, watch_dir=watch, ingest_settle_s=0.0), http_port=0
    )
    svc.setup()
    try:
        deadline = time.monotonic() + 20
        while _published(stack, sim_plate.plate_id) < len(chosen):
            assert time.monotonic() < deadline
            svc.scan()
    finally:
        svc.close()
    return len(chosen)


def _published(stack: LocalStack, plate: str) -> int:
    records = stack.read(ev.Topic.FIELDS_ACQUIRED.value, timeout_s=5)
    return sum(
        1 for r in records if isinstance(r.event, ev.FieldAcquired) and r.event.field.plate == plate
    )


def test_cip_results_equal_the_embedded_run(
    local_stack: LocalStack, sim_plate: SimulatedPlate, reference: RunResult
) -> None:
    n = _ingest_all(local_stack, sim_plate)
    svc = local_stack.start(CipService(local_stack.settings(CipSettings), http_port=0))
    records = local_stack.read(MASKS, min_count=n, timeout_s=60)
    assert len(records) == n
    store = local_stack.store()
    by_name = {o.name: o for o in reference.outcomes if o.method == "cip"}
    for rec in records:
        event = rec.event
        assert isinstance(event, ev.MaskReady)
        assert event.method == ev.Method.METHOD_CIP
        assert event.model_version == svc.model_version
        counts = ev.field_counts_from_mask_ready(event)
        ref = by_name[counts.key.name]
        assert counts == ref.counts  # identical numbers, areas included
        mask = tifffile.imread(
            io.BytesIO(store.get_bytes(event.mask.key, sha256=event.mask.sha256))
        )
        ref_mask = tifffile.imread(reference.out_dir / "masks" / "cip" / f"{counts.key.name}.tiff")
        np.testing.assert_array_equal(mask, ref_mask)
        table = store.get_bytes(event.objects.key).decode().splitlines()
        assert len(table) == 1 + counts.phagophores + counts.autolysosomes
        assert event.mask.key == ev.mask_object_key(
            sim_plate.plate_id, counts.key, "cip", svc.model_version
        )
        assert set(event.stage_seconds) == {"download", "segment", "measure", "upload"}
        assert event.HasField("acquired_at")
    # offsets were committed: the group has no lag left
    assert svc.consumer is not None
    local_stack.stop(svc)


def test_poison_messages_go_to_dead_letter_and_processing_continues(
    local_stack: LocalStack, sim_plate: SimulatedPlate
) -> None:
    topic = ev.Topic.FIELDS_ACQUIRED.value
    local_stack.produce(topic, b"\xff\x00 not protobuf \x13", key=b"P/r01c01")
    missing = ev.FieldAcquired(
        header=ev.new_header("test"),
        field=ev.field_id("PX", FieldKey(1, 1, 1)),
        pixel_size_um=0.2,
        size_x=8,
        size_y=8,
    )
    for role in ("dsred", "phluorin"):
        missing.channels[role].object.key = f"raw/PX/r01c01/nothing/{role}.tiff"
    local_stack.produce(topic, ev.encode(missing), key=ev.event_key(missing))
    _ingest_all(local_stack, sim_plate, names=None)
    n_good = _published(local_stack, sim_plate.plate_id)
    local_stack.start(CipService(local_stack.settings(CipSettings), http_port=0))
    masks = local_stack.read(MASKS, min_count=n_good, timeout_s=60)
    assert len(masks) == n_good
    letters = [r.event for r in local_stack.read(DEAD, min_count=2)]
    assert len(letters) == 2
    for letter in letters:
        assert isinstance(letter, ev.DeadLetter)
        assert letter.stage == "cip"
        assert letter.source_topic == topic
        assert letter.source_offset >= 0 and letter.source_partition >= 0
        assert letter.payload.key.startswith("deadletter/cip/")
    by_type = {letter.error_type: letter for letter in letters if isinstance(letter, ev.DeadLetter)}
    assert set(by_type) == {"EventDecodeError", "ObjectMissing"}
    assert by_type["ObjectMissing"].field.plate == "PX"
    assert "NoSuchKey" in by_type["ObjectMissing"].error
    assert by_type["EventDecodeError"].key == "P/r01c01"
    stored = local_stack.store().get_bytes(by_type["EventDecodeError"].payload.key)
    assert stored == b"\xff\x00 not protobuf \x13"


def test_a_repeating_unexpected_error_is_dead_lettered_after_bounded_attempts(
    local_stack: LocalStack, sim_plate: SimulatedPlate
) -> None:
    _, fields = harmony_files(sim_plate.export_dir)
    first = sorted(fields)[0]
    _ingest_all(local_stack, sim_plate, names=[first])
    svc = CipService(local_stack.settings(CipSettings), http_port=0)

    def broken(image: object, pixel_size_um: float) -> object:
        raise TypeError("a bug, not an outage")

    svc.segmenter.segment = broken  # type: ignore[method-assign]
    local_stack.start(svc)
    (letter,) = (r.event for r in local_stack.read(DEAD, min_count=1, timeout_s=30))
    assert isinstance(letter, ev.DeadLetter)
    assert letter.error_type == "TypeError" and letter.attempts == svc.max_unexpected_attempts
    assert ev.field_key(letter.field).name == first
    assert local_stack.read(MASKS, timeout_s=2) == []


def test_cell_readouts_through_the_stack_equal_the_embedded_run(
    local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A plate with a Hoechst channel: ingest uploads it, cip counts its nuclei like ``run``."""
    plate = simulate_plate(
        tmp_path_factory.mktemp("nuc"), wells=1, fields=2, seed=11, nuclear=NuclearStainParameters()
    )
    reference = run_plate(plate.export_dir, tmp_path_factory.mktemp("nucref"), progress=False)
    n = _ingest_all(local_stack, plate)
    local_stack.start(CipService(local_stack.settings(CipSettings), http_port=0))
    records = local_stack.read(MASKS, min_count=n, timeout_s=60)
    by_name = {o.name: o for o in reference.outcomes if o.method == "cip"}
    assert len(records) == n == len(by_name)
    for rec in records:
        assert isinstance(rec.event, ev.MaskReady)
        counts = ev.field_counts_from_mask_ready(rec.event)
        assert counts.cells is not None and counts.cells.n_cells  # nuclei were counted
        assert counts == by_name[counts.key.name].counts


def test_cell_readouts_off_sends_no_cells(
    local_stack: LocalStack, sim_plate: SimulatedPlate
) -> None:
    n = _ingest_all(local_stack, sim_plate)
    settings = local_stack.settings(CipSettings, cell_readouts=False)
    assert settings.cell_parameters is None
    local_stack.start(CipService(settings, http_port=0))
    records = local_stack.read(MASKS, min_count=n, timeout_s=60)
    assert len(records) == n
    assert all(isinstance(r.event, ev.MaskReady) and not r.event.HasField("cells") for r in records)
