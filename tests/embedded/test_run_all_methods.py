"""`phagoflow run --method all`: both mask folders, both methods in wells.csv, disagreement."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from phagoflow.cli import main
from phagoflow.core.counting import WELL_COLUMNS
from phagoflow.core.qc import relative_difference
from unet_testing import random_unet_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init U-Net folder: enough to exercise the CDL path (not its quality)."""
    return random_unet_dir(tmp_path_factory.mktemp("model") / "m")


def test_run_all_writes_both_methods_and_disagreement(tmp_path: Path, model_dir: Path) -> None:
    plate = tmp_path / "plate"
    assert main(["-q", "simulate", str(plate), "--wells", "2", "--fields", "1", "--seed", "5"]) == 0
    out = tmp_path / "out"
    rc = main(["-q", "run", str(plate), "--out", str(out), "--method", "all",
               "--model", str(model_dir)])  # fmt: skip
    assert rc == 0
    for method in ("cip", "cdl"):
        masks = sorted((out / "masks" / method).glob("*.tiff"))
        assert len(masks) == 2
        m = tifffile.imread(masks[0])
        assert m.shape == (512, 680) and m.dtype == np.uint8 and m.max() <= 2

    with (out / "wells.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["well"], r["method"]) for r in rows) == [
        ("r02c02", "cdl"), ("r02c02", "cip"), ("r02c03", "cdl"), ("r02c03", "cip")]  # fmt: skip
    by = {(r["well"], r["method"]): r for r in rows}
    for well in ("r02c02", "r02c03"):
        expected = relative_difference(
            int(by[(well, "cip")]["phagophores"]), int(by[(well, "cdl")]["phagophores"])
        )
        for method in ("cip", "cdl"):
            got = float(by[(well, method)]["cip_cdl_disagreement_phagophores"])
            assert got == pytest.approx(expected, rel=1e-5)

    run = json.loads((out / "run.json").read_text())
    assert set(run["methods"]) == {"cip", "cdl"}
    assert run["methods"]["cdl"]["model_name"] == "test-unet"
    assert len(run["methods"]["cdl"]["fingerprint"]) == 64
    html = (out / "report.html").read_text()
    assert "CDL" in html and "disagreement" in html.lower()


def test_missing_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plate = tmp_path / "plate"
    assert main(["-q", "simulate", str(plate), "--wells", "1", "--fields", "1"]) == 0
    rc = main(["-q", "run", str(plate), "--out", str(tmp_path / "o"), "--method", "cdl",
               "--model", str(tmp_path / "no-model")])  # fmt: skip
    assert rc == 1
    assert "no-model" in capsys.readouterr().err


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_running_another_method_keeps_the_first_methods_results(
    tmp_path: Path, model_dir: Path
) -> None:
    plate = tmp_path / "plate"
    assert main(["-q", "simulate", str(plate), "--wells", "2", "--fields", "1", "--seed", "5"]) == 0
    out = tmp_path / "out"
    assert main(["-q", "run", str(plate), "--out", str(out), "--method", "cip"]) == 0
    cip_masks = {p.name: p.read_bytes() for p in (out / "masks" / "cip").glob("*.tiff")}
    cip_wells = [{c: r[c] for c in WELL_COLUMNS} for r in _rows(out / "wells.csv")]
    cip_objects = _rows(out / "objects.csv")
    cip_fp = json.loads((out / "run.json").read_text())["methods"]["cip"]["fingerprint"]

    rc = main(["-q", "run", str(plate), "--out", str(out), "--method", "cdl",
               "--model", str(model_dir)])  # fmt: skip
    assert rc == 0
    assert {p.name: p.read_bytes() for p in (out / "masks" / "cip").glob("*.tiff")} == cip_masks
    rows = _rows(out / "wells.csv")
    assert [{c: r[c] for c in WELL_COLUMNS} for r in rows if r["method"] == "cip"] == cip_wells
    assert {r["method"] for r in rows} == {"cip", "cdl"}
    assert "cip_cdl_disagreement_phagophores" in rows[0]
    assert [o for o in _rows(out / "objects.csv") if o["method"] == "cip"] == cip_objects
    methods = json.loads((out / "run.json").read_text())["methods"]
    assert methods["cdl"]["ran"] is True and methods["cdl"]["fields_done"] == 2
    assert methods["cip"]["ran"] is False and methods["cip"]["fields_done"] == 2
    assert [m["fingerprint"] for m in methods["cip"]["kept_from_masks"]] == [cip_fp]
