"""End to end through the command line: simulate a tiny plate in each format, run, check outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from phagoflow.cli import main
from phagoflow.core.counting import WELL_COLUMNS

FORMATS = ("harmony4", "harmony5", "harmony6", "harmony7", "flex")


def _simulate(tmp_path: Path, fmt: str, wells: int = 2, fields: int = 1) -> Path:
    out = tmp_path / f"plate-{fmt}"
    assert (
        main(
            [
                "-q",
                "simulate",
                str(out),
                "--wells",
                str(wells),
                "--fields",
                str(fields),
                "--seed",
                "3",
                "--format",
                fmt,
                "--plate",
                f"T{fmt}",
            ]
        )
        == 0
    )
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_simulate_then_run_every_format(tmp_path: Path, fmt: str) -> None:
    plate = _simulate(tmp_path, fmt)
    out = tmp_path / "out"
    assert main(["-q", "run", str(plate), "--out", str(out), "--method", "cip"]) == 0

    masks = sorted((out / "masks" / "cip").glob("*.tiff"))
    assert [m.name for m in masks] == ["r02c02f01p01.tiff", "r02c03f01p01.tiff"]
    for m in masks:
        mask = tifffile.imread(m)
        assert mask.shape == (512, 680) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1, 2}
        assert (mask > 0).any()

    with (out / "wells.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[: len(WELL_COLUMNS)] == list(WELL_COLUMNS)
    assert [r["well"] for r in rows] == ["r02c02", "r02c03"]
    assert all(
        r["plate"] == f"T{fmt}" and r["method"] == "cip" and r["fields"] == "1" for r in rows
    )

    # wells.csv totals equal the objects.csv rows of the well
    with (out / "objects.csv").open() as fh:
        objects = list(csv.DictReader(fh))
    for r in rows:
        n_ph = sum(1 for o in objects if o["well"] == r["well"] and o["class"] == "phagophore")
        n_al = sum(1 for o in objects if o["well"] == r["well"] and o["class"] == "autolysosome")
        assert (int(r["phagophores"]), int(r["autolysosomes"])) == (n_ph, n_al)
        assert n_ph + n_al > 0

    run = json.loads((out / "run.json").read_text())
    assert run["export"]["plate_id"] == f"T{fmt}"
    assert len(run["export"]["index_sha256"]) == 64
    assert run["methods"]["cip"]["cip_parameters"]  # every CIP parameter recorded
    assert len(run["methods"]["cip"]["code_sha256"]) == 64
    assert run["failed_fields"] == []
    assert (out / "plate_heatmap.png").read_bytes().startswith(b"\x89PNG")
    html = (out / "report.html").read_text()
    assert f"Plate T{fmt}" in html and "data:image/png;base64," in html


def test_rerun_reuses_masks_and_counts_stay_equal(tmp_path: Path) -> None:
    plate = _simulate(tmp_path, "harmony5")
    out = tmp_path / "out"
    assert main(["-q", "run", str(plate), "--out", str(out)]) == 0
    first = (out / "wells.csv").read_text()
    assert main(["-q", "run", str(plate), "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["methods"]["cip"]["fields_reused"] == 2
    assert (out / "wells.csv").read_text() == first
    # a changed CIP parameter is a different provenance: nothing reused
    params = tmp_path / "cip.json"
    params.write_text(json.dumps({**run["methods"]["cip"]["cip_parameters"]}))
    assert main(["-q", "run", str(plate), "--out", str(out), "--cip-params", str(params)]) == 0
    assert json.loads((out / "run.json").read_text())["methods"]["cip"]["fields_reused"] == 2
    changed = dict(run["methods"]["cip"]["cip_parameters"])
    key = next(k for k, v in changed.items() if isinstance(v, float) and v > 0)
    changed[key] = changed[key] * 1.1
    params.write_text(json.dumps(changed))
    assert main(["-q", "run", str(plate), "--out", str(out), "--cip-params", str(params)]) == 0
    assert json.loads((out / "run.json").read_text())["methods"]["cip"]["fields_reused"] == 0


def test_bad_field_is_reported_and_the_rest_of_the_plate_is_processed(tmp_path: Path) -> None:
    plate = _simulate(tmp_path, "harmony5", wells=2, fields=2)
    victim = sorted(plate.rglob("r02c02f01p01-ch1*.tiff"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # truncated TIFF
    out = tmp_path / "out"
    # finished, but with a failed field: exit status 4, never 0
    assert main(["-q", "run", str(plate), "--out", str(out), "--workers", "2"]) == 4
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed_fields"
    failed = run["failed_fields"]
    assert len(failed) == 1 and failed[0]["field"] == "r02c02f01p01"
    assert victim.name in failed[0]["reason"]
    assert failed[0]["path"] == str(victim) and failed[0]["stage"] == "read"
    assert sorted(p.name for p in (out / "masks" / "cip").glob("*.tiff")) == [
        "r02c02f02p01.tiff",
        "r02c03f01p01.tiff",
        "r02c03f02p01.tiff",
    ]
    with (out / "wells.csv").open() as fh:
        fields = {
            r["well"]: (r["fields"], r["fields_ok"], r["fields_failed"]) for r in csv.DictReader(fh)
        }
    assert fields == {"r02c02": ("2", "1", "1"), "r02c03": ("2", "2", "0")}
    assert "r02c02f01p01" in (out / "report.html").read_text()
