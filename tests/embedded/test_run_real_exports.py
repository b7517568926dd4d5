"""``phagoflow run --method all`` on the real pixels of every vendor-written export.

These plates are Cell Painting and leukaemia plates, not Rosella: the counts mean nothing
biologically, so the test checks that the whole pipeline runs on Harmony's own LZW TIFFs (with
the role override a non-Rosella plate needs), exits 0, and writes field-sized masks and the
plate's wells — not segmentation quality. The exports are read in place (their folder has no
write bits in CI); each test skips when its export is absent.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from phagoflow.cli import main
from phagoflow.core.opera import read_plate
from real_exports import EXPORTS, RealExport, ids, require

WITH_PIXELS = tuple(e for e in EXPORTS if e.has_pixels)


@pytest.mark.slow
@pytest.mark.parametrize("export", WITH_PIXELS, ids=ids(WITH_PIXELS))
def test_run_all_methods_on_vendor_pixels(tmp_path: Path, export: RealExport) -> None:
    path = require(export)
    out = tmp_path / "out"
    roles = [arg for item in export.roles for arg in ("--channel-role", item)]
    argv = ["-q", "run", str(path), "--out", str(out), "--method", "all", *roles]
    assert main(argv) == 0

    cat = read_plate(path, channel_roles=dict(i.split("=", 1) for i in export.roles))
    for method in ("cip", "cdl"):
        masks = sorted((out / "masks" / method).glob("*.tiff"))
        assert [m.stem for m in masks] == [rec.key.name for rec in cat.fields]
        for m in masks:
            mask = tifffile.imread(m)
            assert mask.shape == cat.size_yx and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 1, 2}
    with (out / "wells.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted({r["well"] for r in rows}) == list(cat.wells)
    assert {r["method"] for r in rows} == {"cip", "cdl"}

    run = json.loads((out / "run.json").read_text())
    assert run["export"]["plate_id"] == cat.plate_id
    assert run["export"]["pixel_size_um"] == pytest.approx(cat.pixel_size_um)
    given = {c["name"]: c["role"] for c in run["export"]["channels"] if c["role"]}
    for item in export.roles:
        name, role = item.split("=", 1)
        assert given[name] == ("dsred+phluorin" if role == "both" else role)
    assert run["failed_fields"] == []
