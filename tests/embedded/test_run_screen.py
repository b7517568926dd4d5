"""``phagoflow run --plate-map --ome-zarr`` on a simulated screen with a nuclear stain.

One simulated screen (16 wells × 2 fields, Hoechst channel, 3 negative and 3 positive controls
with a planted 4× phagophore effect, one planted sample hit) is run once through the command
line; the tests check the hits against the planted wells, the cell counts against the
simulator's truth, the OME-Zarr plate read back by ngff-zarr, and the provenance. Plate-map
refusals run on a tiny plate and must leave ``--out`` untouched.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from phagoflow.cli import main
from phagoflow.core.opera import load_field, load_nuclei, read_plate
from phagoflow.embedded.masks import read_mask
from phagoflow.embedded.screen import planted_and_hits

ngff_zarr = pytest.importorskip("ngff_zarr")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("screen")
    plate = tmp / "plate"
    argv = ["-q", "simulate", str(plate), "--wells", "16", "--fields", "2", "--seed", "1",
            "--plate", "SCR1", "--nuclear", "--screen", "--effect", "4", "--well-sigma", "0.05",
            "--plate-gradient", "0"]  # fmt: skip
    assert main(argv) == 0
    out = tmp / "out"
    run = ["-q", "run", str(plate), "--out", str(out), "--workers", "2",
           "--plate-map", str(plate / "plate_map.csv"), "--ome-zarr"]  # fmt: skip
    rc = main(run)
    first = {n: (out / n).read_bytes() for n in ("wells.csv", "plate_stats.csv", "hits.csv")}
    rc_again = main(run)  # masks reused, cells measured again: the same tables
    return {"plate": plate, "out": out, "rc": (rc, rc_again), "first": first}


def test_the_hits_are_the_planted_wells(screen: dict[str, Any]) -> None:
    assert screen["rc"] == (0, 0)
    planted, hits = planted_and_hits(
        screen["plate"] / "truth" / "wells.csv", screen["out"] / "hits.csv"
    )
    assert planted and hits == {"cip": planted}
    stats = {r["readout"]: r for r in _rows(screen["out"] / "plate_stats.csv")}
    per_cell = stats["phagophores_per_cell"]
    assert per_cell["hit_readout"] == "True" and per_cell["n_hits"] == str(len(planted))
    # cells vary from field to field: normalising by them is what makes the screen usable
    assert float(per_cell["z_prime"]) >= 0.5 and per_cell["z_prime_acceptable"] == "True"
    assert float(per_cell["z_prime"]) > float(stats["phagophores_per_field_mean"]["z_prime"])


def test_wells_csv_carries_role_robust_z_and_hit(screen: dict[str, Any]) -> None:
    rows = {r["well"]: r for r in _rows(screen["out"] / "wells.csv")}
    planted, _ = planted_and_hits(
        screen["plate"] / "truth" / "wells.csv", screen["out"] / "hits.csv"
    )
    plate_map = {r["well"]: r for r in _rows(screen["plate"] / "plate_map.csv")}
    for well_id, row in rows.items():
        a01 = f"{chr(64 + int(row['row']))}{int(row['col']):02d}"
        assert row["role"] == plate_map[a01]["role"]
        assert row["hit_readout"] == "phagophores_per_cell"
        assert (row["hit"] == "True") == (a01 in planted), well_id
        per_cell = int(row["phagophores"]) / int(row["cells"])
        assert float(row["phagophores_per_cell"]) == pytest.approx(per_cell, rel=1e-5)
        per_area = 1000 * int(row["phagophores"]) / float(row["cytoplasm_area_um2"])
        assert float(row["phagophores_per_1000um2"]) == pytest.approx(per_area, rel=1e-5)


def test_cell_counts_against_the_simulated_truth(screen: dict[str, Any]) -> None:
    truth: dict[str, int] = {}
    for r in _rows(screen["plate"] / "truth" / "counts.csv"):
        truth[r["well"]] = truth.get(r["well"], 0) + int(r["nuclei"])
    rows = {r["well"]: r for r in _rows(screen["out"] / "wells.csv")}
    found = {w: int(r["cells"]) for w, r in rows.items()}
    assert set(found) == set(truth)
    errors = [found[w] / truth[w] - 1 for w in truth]
    assert max(abs(e) for e in errors) <= 0.10  # every well within 10 % of its true nuclei
    assert abs(sum(found.values()) / sum(truth.values()) - 1) <= 0.03  # the plate within 3 %


def test_a_rerun_gives_the_same_tables(screen: dict[str, Any]) -> None:
    for name, first in screen["first"].items():
        assert (screen["out"] / name).read_bytes() == first, name


def test_provenance_records_cells_screening_and_plate_map(screen: dict[str, Any]) -> None:
    doc = json.loads((screen["out"] / "run.json").read_text())
    assert doc["cells"]["measured"] is True and doc["cells"]["cached"] is False
    assert doc["cells"]["nuclear_channel"] == "HOECHST 33342"
    assert doc["cells"]["parameters"]["split_h_um"] == 0.8
    stats = doc["statistics"]
    assert stats["hit_readout"] == "phagophores_per_cell"
    assert stats["parameters"]["hit_z"] == 3.0 and stats["parameters"]["hit_direction"] == "both"
    assert len(stats["plate_map"]["sha256"]) == 64
    assert stats["plate_map"]["wells"] == {"negative": 3, "positive": 3, "sample": 10, "empty": 0}
    assert doc["settings"]["screening"] == stats["parameters"]
    assert doc["ome_zarr"] == str(screen["out"] / "SCR1.ome.zarr")


def test_report_opens_with_z_prime_and_the_hits_in_a01_names(screen: dict[str, Any]) -> None:
    html = (screen["out"] / "report.html").read_text()
    heads = [h.split("</h2>")[0] for h in html.split("<h2>")[1:]]
    assert heads[:2] == ["Failures", "Plate quality and hits"]
    planted, _ = planted_and_hits(
        screen["plate"] / "truth" / "wells.csv", screen["out"] / "hits.csv"
    )
    quality = html.split("<h2>")[2]
    assert "<b>Phagophores per cell</b> (calls the hits)" in quality
    for well in planted:
        assert f"<td>{well}</td>" in quality
    assert "r02c0" not in html  # no file-form well name shown to a person
    assert "phagophores_per_field_mean" not in html  # columns in words
    assert html.count('<figure class="crop">') == 4 and "chosen because" in html


def test_ome_zarr_read_back_by_ngff_zarr(screen: dict[str, Any]) -> None:
    path = screen["out"] / "SCR1.ome.zarr"
    hcs = ngff_zarr.from_hcs_zarr(str(path), validate=True)
    assert hcs.metadata.name == "SCR1" and hcs.metadata.field_count == 2
    cat = read_plate(screen["plate"])
    assert len(hcs.metadata.wells) == len(cat.wells)
    record = cat.fields[3]  # some field: B03 field 2 in the A01 layout
    key = record.key
    ms = hcs.get_well(chr(64 + key.row), f"{key.col:02d}").get_image(key.field - 1)
    image = ms.images[0]
    assert image.dims == ("c", "y", "x") and image.scale == {"c": 1.0, "y": 0.2, "x": 0.2}
    assert [c.label for c in ms.metadata.omero.channels] == ["DsRed", "pHluorin", "HOECHST 33342"]
    got = np.asarray(image.data)
    assert got.dtype == np.uint16
    planes = np.concatenate([load_field(cat, record), load_nuclei(cat, record)[None]])  # type: ignore[index]
    np.testing.assert_array_equal(got, planes.astype(np.uint16))
    label_path = path / _image_path(key) / "labels" / "cip"
    labels = ngff_zarr.from_ngff_zarr(str(label_path), validate=True)
    stored = read_mask(screen["out"] / "masks" / "cip" / f"{key.name}.tiff", cat.size_yx)
    assert stored is not None
    np.testing.assert_array_equal(np.asarray(labels.images[0].data), stored[0])


def _image_path(key: Any) -> str:
    return f"{chr(64 + key.row)}/{key.col:02d}/{key.field - 1}"


# --------------------------------------------------------------------------- refusals
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 wells × 1 field (B02 … B05), no nuclear stain: read-only."""
    plate = tmp_path_factory.mktemp("tiny") / "plate"
    assert main(["-q", "simulate", str(plate), "--wells", "4", "--fields", "1", "--seed", "2"]) == 0
    return plate


CONTROLS = "well,role\nB02,negative\nB03,negative\nB04,positive\nB05,positive\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("well,role\nI01,sample\n", "well 'I01' is not on a 8 × 12 plate (last well H12)"),
        ("well,role\nB02,negative\nr02c02,sample\n", "line 3: duplicate well B02"),
        ("well,role\nB02,control\n", "role 'control' of well B02 is not one of"),
        ("well,role\nB02,negative\nB03,positive\n", "plate statistics need control wells"),
        (
            CONTROLS.replace("B03", "C03"),
            "only 1 of the 2 negative control wells were imaged (not imaged: C03)",
        ),
        ("well\nB02\n", "plate map needs the columns"),
    ],
)
def test_a_bad_plate_map_is_one_line_exit_1_and_nothing_written(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    plate_map = tmp_path / "map.csv"
    plate_map.write_text(text)
    out = tmp_path / "out"
    rc = main(["-q", "run", str(tiny), "--out", str(out), "--plate-map", str(plate_map)])
    err = capsys.readouterr().err
    assert rc == 1
    assert message in err and err.startswith("phagoflow: ") and err.count("\n") == 1
    assert not out.exists()


def test_a_missing_plate_map_file(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    rc = main(["-q", "run", str(tiny), "--out", str(out), "--plate-map", str(tmp_path / "no.csv")])
    assert rc == 1 and "cannot read plate map" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_a_per_cell_hit_readout_needs_a_nuclear_stain(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plate_map = tmp_path / "map.csv"
    plate_map.write_text(CONTROLS)
    monkeypatch.setenv("PHAGOFLOW_SCREENING__HIT_READOUT", "phagophores_per_cell")
    out = tmp_path / "out"
    rc = main(["-q", "run", str(tiny), "--out", str(out), "--plate-map", str(plate_map)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and not out.exists()
    assert "hit readout 'phagophores_per_cell' needs a nuclear-stain channel" in err


def test_a_bad_screening_setting_is_named(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHAGOFLOW_SCREENING__HIT_Z", "-1")
    rc = main(["-q", "run", str(tiny), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "PHAGOFLOW_SCREENING__HIT_Z=" in err and err.count("\n") == 1
