"""ingest on a real broker and S3 server: fields as they land, manifest, restart, .flex."""

from __future__ import annotations

import hashlib
import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from svc_testing import (
    LocalStack,
    copy_into,
    count,
    field_names,
    harmony_files,
    ingest_service,
    scan_until,
)

from phagoflow import events as ev
from phagoflow.core.opera import load_field, read_plate
from phagoflow.core.simulate import SimulatedPlate, simulate_plate

FIELDS = ev.Topic.FIELDS_ACQUIRED.value
PLATES = ev.Topic.PLATES.value
DEAD = ev.Topic.DEADLETTER.value


def test_fields_published_as_they_land_then_plate_complete(
    local_stack: LocalStack, sim_plate: SimulatedPlate
) -> None:
    index, fields = harmony_files(sim_plate.export_dir)
    names = sorted(fields)
    watch = local_stack.tmp / "incoming"
    dest = watch / "plate1" / "Images"
    copy_into([index], dest)
    svc = ingest_service(local_stack, watch)
    try:
        copy_into(fields[names[0]], dest)
        scan_until(svc, lambda: count(local_stack, FIELDS) >= 1)
        # one field landed: published without waiting for the plate, and no PlateComplete yet
        first = local_stack.read(FIELDS, min_count=1)
        assert field_names(first) == [names[0]]
        assert count(local_stack, PLATES) == 0

        event = first[0].event
        assert isinstance(event, ev.FieldAcquired)
        assert first[0].key == ev.well_key(sim_plate.plate_id, event.field.well).encode()
        catalogue = read_plate(sim_plate.export_dir)
        assert event.pixel_size_um == catalogue.pixel_size_um
        assert (event.size_y, event.size_x) == catalogue.size_yx
        assert event.plate_fields_expected == len(names)
        assert event.well_fields_expected == 2
        store = local_stack.store()
        expected = load_field(catalogue, catalogue.fields[0].key)
        for i, role in enumerate(("dsred", "phluorin")):
            ch = event.channels[role]
            key = ev.raw_object_key(sim_plate.plate_id, catalogue.fields[0].key, role)
            assert ch.object.key == key
            data = store.get_bytes(key)
            assert hashlib.sha256(data).hexdigest() == ch.object.sha256
            assert ch.object.size_bytes == len(data)
            plane = tifffile.imread(io.BytesIO(data))
            np.testing.assert_array_equal(plane.astype(np.float32), expected[i])

        for name in names[1:]:
            copy_into(fields[name], dest)
        scan_until(svc, lambda: count(local_stack, PLATES) >= 1)
        assert field_names(local_stack.read(FIELDS)) == names  # each field exactly once
        (plate_rec,) = local_stack.read(PLATES)
        plate = plate_rec.event
        assert isinstance(plate, ev.PlateComplete)
        assert plate.plate == sim_plate.plate_id
        assert plate.fields_expected == plate.fields_published == len(names)
        assert list(plate.failed) == []
        manifest = store.get_json(ev.manifest_object_key(sim_plate.plate_id))
        assert manifest["plate_complete"] is True
        assert sorted(manifest["fields"]) == names
        assert plate.manifest.key == ev.manifest_object_key(sim_plate.plate_id)
    finally:
        svc.close()


def test_restart_neither_resends_nor_loses(
    local_stack: LocalStack, sim_plate: SimulatedPlate
) -> None:
    index, fields = harmony_files(sim_plate.export_dir)
    names = sorted(fields)
    watch = local_stack.tmp / "incoming"
    dest = watch / "p" / "Images"
    copy_into([index, *fields[names[0]], *fields[names[1]]], dest)
    first = ingest_service(local_stack, watch)
    scan_until(first, lambda: count(local_stack, FIELDS) >= 2)
    first.close()  # "crash" after two fields

    second = ingest_service(local_stack, watch)  # a new process: only the manifest in S3 remembers
    try:
        for _ in range(10):  # scans over the same, stable files publish nothing again
            second.scan()
            time.sleep(0.05)
        assert count(local_stack, FIELDS) == 2
        for name in names[2:]:
            copy_into(fields[name], dest)
        scan_until(second, lambda: count(local_stack, PLATES) >= 1)
        assert field_names(local_stack.read(FIELDS)) == names
    finally:
        second.close()


@pytest.mark.parametrize("fmt", ["flex"])
def test_flex_export(local_stack: LocalStack, tmp_path: Path, fmt: str) -> None:
    sim = simulate_plate(tmp_path / "sim", wells=1, fields=2, seed=3, export_format=fmt)
    watch = local_stack.tmp / "incoming"
    shutil.copytree(sim.export_dir, watch / "flexplate")
    svc = ingest_service(local_stack, watch)
    try:
        scan_until(svc, lambda: count(local_stack, PLATES) >= 1)
        records = local_stack.read(FIELDS)
        catalogue = read_plate(sim.export_dir)
        assert field_names(records) == sorted(f.key.name for f in catalogue.fields)
        event = records[0].event
        assert isinstance(event, ev.FieldAcquired)
        assert event.export_format == "flex"
        plane = tifffile.imread(
            io.BytesIO(local_stack.store().get_bytes(event.channels["dsred"].object.key))
        )
        key = ev.field_key(event.field)
        factor = event.channels["dsred"].intensity_factor or 1.0
        np.testing.assert_allclose(
            plane.astype(np.float32) * np.float32(factor), load_field(catalogue, key)[0]
        )
    finally:
        svc.close()


def test_slow_acquisition_is_not_mistaken_for_missing_files(
    local_stack: LocalStack, sim_plate: SimulatedPlate
) -> None:
    """Fields that keep arriving for longer than the missing timeout are not failed."""
    index, fields = harmony_files(sim_plate.export_dir)
    names = sorted(fields)
    dest = local_stack.tmp / "incoming" / "p" / "Images"
    copy_into([index], dest)
    svc = ingest_service(local_stack, local_stack.tmp / "incoming", ingest_missing_timeout_s=1.0)
    try:
        for name in names:  # 4 fields over ~2.4 s > the 1 s timeout, never 1 s quiet
            deadline = time.monotonic() + 0.6
            copy_into(fields[name], dest)
            while time.monotonic() < deadline:
                svc.scan()
                time.sleep(0.05)
        scan_until(svc, lambda: count(local_stack, PLATES) >= 1)
        assert count(local_stack, DEAD) == 0
        assert field_names(local_stack.read(FIELDS)) == names
    finally:
        svc.close()
