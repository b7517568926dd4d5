"""A plate Harmony itself wrote, through ingest and the cip service (real tansu + S3 server).

The vendor export (an Operetta CLS plate, LZW TIFFs, one FITC channel standing in for both
Rosella roles through ``PHAGOFLOW_CHANNEL_ROLES``) is copied into the watch folder as a
microscope writes it: ingest must call the compressed plate complete, upload the planes, and the
cip service must decode them and produce the same masks and counts as ``phagoflow run``.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from svc_testing import LocalStack, copy_into, ingest_service, scan_until

from phagoflow import events as ev
from phagoflow.embedded.run import run_plate
from phagoflow.services.cip import CipService, CipSettings
from real_exports import EXPORTS, require

SONATA = next(e for e in EXPORTS if e.name == "harmony5_sonata_2022")
ROLES = "Fluorescein (FITC)=both"


def _plates(stack: LocalStack) -> list[ev.PlateComplete]:
    records = stack.read(ev.Topic.PLATES.value, timeout_s=5)
    return [r.event for r in records if isinstance(r.event, ev.PlateComplete)]


@pytest.mark.slow
def test_vendor_lzw_plate_through_ingest_and_cip(
    local_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = require(SONATA) / "Images"
    watch = local_stack.tmp / "incoming"
    copy_into(sorted(p for p in images.iterdir() if p.is_file()), watch / "sonata" / "Images")
    for p in (watch / "sonata" / "Images").iterdir():
        p.chmod(0o644)  # the shared copy has no write bits; a microscope's files have
    monkeypatch.setenv("PHAGOFLOW_CHANNEL_ROLES", ROLES)
    ingest = ingest_service(local_stack, watch)
    try:
        scan_until(ingest, lambda: bool(_plates(local_stack)), timeout_s=30)
    finally:
        ingest.close()
    (plate,) = _plates(local_stack)
    assert plate.fields_published == plate.fields_expected == 2 and not plate.failed

    local_stack.start(CipService(local_stack.settings(CipSettings), http_port=0))
    records = local_stack.read(ev.Topic.MASKS_CIP.value, min_count=2, timeout_s=120)
    reference = run_plate(
        images, tmp_path / "ref", channel_roles={"Fluorescein (FITC)": "both"}, progress=False
    )
    by_name = {o.name: o for o in reference.outcomes if o.method == "cip"}
    store = local_stack.store()
    for rec in records:
        assert isinstance(rec.event, ev.MaskReady)
        counts = ev.field_counts_from_mask_ready(rec.event)
        assert counts == by_name[counts.key.name].counts
        mask = tifffile.imread(io.BytesIO(store.get_bytes(rec.event.mask.key)))
        ref = tifffile.imread(reference.out_dir / "masks" / "cip" / f"{counts.key.name}.tiff")
        np.testing.assert_array_equal(mask, ref)
    assert not local_stack.read(ev.Topic.DEADLETTER.value, timeout_s=2)
    shutil.rmtree(watch)
