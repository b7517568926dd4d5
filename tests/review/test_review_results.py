"""ResultsFolder: catalogue-checked names, masks, counts and disagreement; the review CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from review_helpers import SIZE_YX

from phagoflow.cli import main
from phagoflow.review.masks import UploadError, decode_mask, save_curated
from phagoflow.review.results import ResultsError, ResultsFolder


def test_field_key_accepts_only_catalogue_names(results_dir: Path) -> None:
    r = ResultsFolder(results_dir)
    assert sorted(r.fields) == [f"r02c0{w}f0{f}p01" for w in (2, 3) for f in (1, 2)]
    assert r.field_key("r02c02f01p01").name == "r02c02f01p01"
    for bad in ("../run", "r02c02f01p01/../../x", "r02c02f03p01", "", "r02c02f01p01\x00"):
        with pytest.raises(KeyError):
            r.field_key(bad)
    key = r.field_key("r02c03f02p01")
    assert r.mask_path(key, "cdl") == results_dir.resolve() / "masks/cdl/r02c03f02p01.tiff"
    assert r.mask_path(key, "curated") == results_dir.resolve() / "curated/r02c03f02p01.tiff"
    with pytest.raises(KeyError, match="no mask source"):
        r.mask_path(key, "../masks/cip")


def test_counts_and_disagreement_from_tables(results_dir: Path) -> None:
    r = ResultsFolder(results_dir)
    assert r.methods == ("cip", "cdl")
    for summary in r.fields.values():
        a, b = summary.counts["cip"], summary.counts["cdl"]
        rel = [
            abs(a[c] - b[c]) / ((a[c] + b[c]) / 2) if a[c] + b[c] else 0.0
            for c in ("phagophore", "autolysosome")
        ]
        assert summary.disagreement == pytest.approx(np.mean(rel))
    for well in r.wells.values():
        assert len(well.fields) == 2
        dis = [r.fields[f].disagreement for f in well.fields]
        assert dis == sorted(dis, reverse=True)
        assert not math.isnan(well.disagreement_total)


def test_bad_masks_are_ignored(results_dir: Path) -> None:
    r = ResultsFolder(results_dir)
    key = r.field_key("r02c02f01p01")
    tifffile.imwrite(r.mask_path(key, "cip"), np.zeros((3, 3), np.uint8))
    assert r.mask(key, "cip") is None
    r.mask_path(key, "cdl").write_bytes(b"garbage")
    assert r.mask(key, "cdl") is None
    assert r.mask(key, "curated") is None


def test_missing_run_json_and_moved_export(tmp_path: Path, results_dir: Path) -> None:
    with pytest.raises(ResultsError, match="not a phagoflow results folder"):
        ResultsFolder(tmp_path)
    run = json.loads((results_dir / "run.json").read_text())
    export = run["export"]["root"]
    run["export"]["root"] = str(tmp_path / "gone")
    (results_dir / "run.json").write_text(json.dumps(run))
    with pytest.raises(ResultsError, match="cannot read the plate export"):
        ResultsFolder(results_dir)
    assert ResultsFolder(results_dir, export=export).plate_id.startswith("SIM")


def test_decode_mask_branches() -> None:
    import io

    good = np.zeros(SIZE_YX, np.uint8)
    buf = io.BytesIO()
    np.save(buf, good)
    assert decode_mask(buf.getvalue(), "application/x-npy; q=1", SIZE_YX, max_bytes=10**6).shape
    with pytest.raises(UploadError) as exc:
        decode_mask(buf.getvalue(), "application/x-npy", SIZE_YX, max_bytes=100)
    assert exc.value.status == 413
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UploadError, match="dtype is object") as exc:  # refused from the header
        decode_mask(buf.getvalue(), "application/x-npy", SIZE_YX, max_bytes=10**6)
    assert exc.value.status == 422


def test_save_curated_is_atomic_and_records_changes(tmp_path: Path) -> None:
    start = np.zeros((4, 5), np.uint8)
    mask = start.copy()
    mask[1, 1:3] = 2
    doc = save_curated(
        mask,
        tmp_path / "c" / "f.tiff",
        tmp_path / "c" / "f.json",
        plate_id="P",
        field="f",
        user="u",
        started_from="cdl",
        start_mask=start,
        seconds_editing=1.23456,
        authenticated_user=False,
    )
    assert doc["pixels_changed"] == 2
    assert doc["seconds_editing"] == 1.235
    assert doc["pixels_per_class"] == {"background": 18, "phagophore": 0, "autolysosome": 2}
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["f.json", "f.tiff"]


def test_review_cli_serves_with_generated_token(
    results_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    seen = {}

    def fake_run(app, host: str, port: int, log_level: str) -> None:  # type: ignore[no-untyped-def]
        seen.update(app=app, host=host, port=port)

    monkeypatch.delenv("PHAGOFLOW_REVIEW_TOKEN", raising=False)
    monkeypatch.setattr(uvicorn, "run", fake_run)
    assert main(["review", str(results_dir), "--port", "9123"]) == 0
    out = capsys.readouterr().out
    assert seen["host"] == "127.0.0.1" and seen["port"] == 9123
    token = out.split("#token=")[1].split()[0]
    assert len(token) >= 24
    assert "token generated" in out
    assert seen["app"].state.tokens.shared == token.encode()


def test_review_cli_reports_bad_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", str(tmp_path)]) == 1
    assert "not a phagoflow results folder" in capsys.readouterr().err


def test_well_disagreement_read_from_wells_csv_columns(results_dir: Path) -> None:
    import csv

    path = results_dir / "wells.csv"
    rows = list(csv.DictReader(path.open()))
    cols = ["cip_cdl_disagreement_phagophores", "cip_cdl_disagreement_autolysosomes"]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, [*rows[0].keys(), *cols])
        w.writeheader()
        for row in rows:
            w.writerow(row | {cols[0]: "0.5", cols[1]: "0.25" if row["well"] == "r02c02" else ""})
    r = ResultsFolder(results_dir)
    assert r.wells["r02c02"].disagreement == {"phagophore": 0.5, "autolysosome": 0.25}
    assert r.wells["r02c02"].disagreement_total == pytest.approx(0.375)
    assert r.wells["r02c03"].disagreement == {"phagophore": 0.5}
