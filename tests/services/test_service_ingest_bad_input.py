"""ingest and bad input: each malformed field or index ends as a DeadLetter, the rest goes on."""

from __future__ import annotations

from collections.abc import Callable
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
from phagoflow.core.simulate import SimulatedPlate

FIELDS = ev.Topic.FIELDS_ACQUIRED.value
PLATES = ev.Topic.PLATES.value
DEAD = ev.Topic.DEADLETTER.value


def test_truncated_tiff_is_dead_lettered_and_plate_completes(
    local_stack: LocalStack, sim_plate: SimulatedPlate
) -> None:
    index, fields = harmony_files(sim_plate.export_dir)
    names = sorted(fields)
    bad = names[1]
    watch = local_stack.tmp / "incoming"
    dest = watch / "p" / "Images"
    copy_into([index], dest)
    for name in names:
        copy_into(fields[name], dest)
    victim = dest / fields[bad][0].name
    victim.write_bytes(victim.read_bytes()[:5000])  # truncated TIFF
    svc = ingest_service(local_stack, watch)
    try:
        scan_until(svc, lambda: count(local_stack, PLATES) >= 1)
        assert field_names(local_stack.read(FIELDS)) == [n for n in names if n != bad]
        (letter,) = (r.event for r in local_stack.read(DEAD))
        assert isinstance(letter, ev.DeadLetter)
        assert letter.stage == "ingest"
        assert letter.field.plate == sim_plate.plate_id
        assert ev.field_key(letter.field).name == bad
        assert letter.path == victim.name
        assert victim.name in letter.error and "TIFF" in letter.error
        assert letter.payload.size_bytes == 5000  # the offending file is kept for inspection
        (plate_rec,) = local_stack.read(PLATES)
        plate = plate_rec.event
        assert isinstance(plate, ev.PlateComplete)
        assert plate.fields_published == len(names) - 1
        assert [ev.field_key(f.field).name for f in plate.failed] == [bad]
    finally:
        svc.close()


def test_broken_index_is_dead_lettered_and_other_exports_go_on(
    local_stack: LocalStack, sim_plate: SimulatedPlate
) -> None:
    index, fields = harmony_files(sim_plate.export_dir)
    watch = local_stack.tmp / "incoming"
    broken = watch / "broken" / "Images"
    broken.mkdir(parents=True)
    (broken / "Index.idx.xml").write_text("<EvaluationInputData><Plates><Plate>")
    good = watch / "good" / "Images"
    copy_into([index, *(f for fs in fields.values() for f in fs)], good)
    svc = ingest_service(local_stack, watch)
    try:
        scan_until(svc, lambda: count(local_stack, PLATES) >= 1)
        for _ in range(5):
            svc.scan()  # the same broken file is reported once, not at every scan
        letters = [r.event for r in local_stack.read(DEAD)]
        assert len(letters) == 1
        letter = letters[0]
        assert isinstance(letter, ev.DeadLetter)
        assert letter.error_type == "PlateFormatError"
        assert "Index.idx.xml" in letter.error
        assert letter.path == "broken/Images/Index.idx.xml"
        assert field_names(local_stack.read(FIELDS)) == sorted(fields)
    finally:
        svc.close()


def test_channel_missing_forever_is_dead_lettered(
    local_stack: LocalStack, sim_plate: SimulatedPlate
) -> None:
    index, fields = harmony_files(sim_plate.export_dir)
    names = sorted(fields)
    lost = names[0]
    watch = local_stack.tmp / "incoming"
    dest = watch / "p" / "Images"
    copy_into([index], dest)
    for name in names:
        copy_into(fields[name][:1] if name == lost else fields[name], dest)
    svc = ingest_service(local_stack, watch, ingest_missing_timeout_s=1.5)
    try:
        svc.scan()
        scan_until(svc, lambda: count(local_stack, FIELDS) >= len(names) - 1)
        assert count(local_stack, DEAD) == 0  # not yet: the file may still come
        scan_until(svc, lambda: count(local_stack, PLATES) >= 1)
        (letter,) = (r.event for r in local_stack.read(DEAD))
        assert isinstance(letter, ev.DeadLetter)
        assert ev.field_key(letter.field).name == lost
        assert "file not found" in letter.error and "still missing" in letter.error
        assert fields[lost][1].name in letter.error
        (plate_rec,) = local_stack.read(PLATES)
        assert isinstance(plate_rec.event, ev.PlateComplete)
        assert [ev.field_key(f.field).name for f in plate_rec.event.failed] == [lost]
    finally:
        svc.close()


def _uint8_tiff(path: Path) -> None:
    tifffile.imwrite(path, np.zeros((512, 680), np.uint8))


def _small_tiff(path: Path) -> None:
    tifffile.imwrite(path, np.zeros((100, 100), np.uint16))


@pytest.mark.parametrize(
    ("damage", "expect"),
    [
        (lambda p: p.write_bytes(b""), "cannot read the TIFF"),
        (_uint8_tiff, "expected uint16"),
        (_small_tiff, "ImageSizeY x ImageSizeX"),
    ],
    ids=["zero-bytes", "wrong-dtype", "wrong-size"],
)
def test_bad_channel_files_are_dead_lettered(
    local_stack: LocalStack,
    sim_plate: SimulatedPlate,
    damage: Callable[[Path], None],
    expect: str,
) -> None:
    index, fields = harmony_files(sim_plate.export_dir)
    names = sorted(fields)
    bad = names[-1]
    dest = local_stack.tmp / "incoming" / "p" / "Images"
    copy_into([index, *(f for n in names for f in fields[n])], dest)
    damage(dest / fields[bad][1].name)
    svc = ingest_service(local_stack, local_stack.tmp / "incoming")
    try:
        scan_until(svc, lambda: count(local_stack, PLATES) >= 1)
        (letter,) = (r.event for r in local_stack.read(DEAD))
        assert isinstance(letter, ev.DeadLetter)
        assert ev.field_key(letter.field).name == bad
        assert expect in letter.error and fields[bad][1].name in letter.error
        assert field_names(local_stack.read(FIELDS)) == names[:-1]
    finally:
        svc.close()


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (lambda xml, f: xml.replace(f"<URL>{f}</URL>", f"<URL>../{f}</URL>"), "leaves the export"),
        (lambda xml, f: xml.replace(f"<URL>{f}</URL>", "<URL>/etc/passwd</URL>"), "absolute URL"),
    ],
    ids=["dotdot-url", "absolute-url"],
)
def test_unsafe_urls_are_dead_lettered_never_followed(
    local_stack: LocalStack,
    sim_plate: SimulatedPlate,
    edit: Callable[[str, str], str],
    expect: str,
) -> None:
    index, fields = harmony_files(sim_plate.export_dir)
    names = sorted(fields)
    bad = names[0]
    dest = local_stack.tmp / "incoming" / "p" / "Images"
    copy_into([*(f for n in names for f in fields[n])], dest)
    (dest / index.name).write_text(edit(index.read_text(), fields[bad][0].name))
    svc = ingest_service(local_stack, local_stack.tmp / "incoming")
    try:
        scan_until(svc, lambda: count(local_stack, PLATES) >= 1)
        (letter,) = (r.event for r in local_stack.read(DEAD))
        assert isinstance(letter, ev.DeadLetter)
        assert ev.field_key(letter.field).name == bad
        assert expect in letter.error
        assert not letter.HasField("payload")  # nothing outside the export is read or copied
        assert field_names(local_stack.read(FIELDS)) == names[1:]
    finally:
        svc.close()


def test_unknown_channel_names_are_dead_lettered(
    local_stack: LocalStack, sim_plate: SimulatedPlate
) -> None:
    index, fields = harmony_files(sim_plate.export_dir)
    dest = local_stack.tmp / "incoming" / "p" / "Images"
    copy_into([*(f for fs in fields.values() for f in fs)], dest)
    # an unknown name *and* far-red wavelengths: roles come from names and wavelengths, so
    # the channel must fit neither (Cy5 excited at 640 nm, emitting at 670 nm)
    xml = index.read_text().replace(">DsRed<", ">Cy5<")
    xml = xml.replace(">561<", ">640<").replace(">599<", ">670<")
    (dest / index.name).write_text(xml)
    svc = ingest_service(local_stack, local_stack.tmp / "incoming")
    try:
        scan_until(svc, lambda: count(local_stack, DEAD) >= 1)
        (letter,) = (r.event for r in local_stack.read(DEAD))
        assert isinstance(letter, ev.DeadLetter)
        assert letter.error_type == "PlateFormatError" and "Cy5" in letter.error
        assert count(local_stack, FIELDS) == 0
    finally:
        svc.close()
