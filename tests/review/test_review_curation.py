"""Correction time: stored with each save, validated, summed by /api/progress and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from review_helpers import SIZE_YX, auth, npy_bytes

from phagoflow.cli import main
from phagoflow.review.curation import (
    curation_report,
    field_correction,
    format_curation_report,
    read_curated_sidecars,
)

NPY = {"Content-Type": "application/x-npy"}
MASK = np.zeros(SIZE_YX, np.uint8)


def _save(client, field: str, query: str):  # type: ignore[no-untyped-def]
    return client.put(
        f"/api/fields/{field}/curated?user=ana&started_from=cdl&{query}",
        content=npy_bytes(MASK),
        headers=auth() | NPY,
    )


def test_saves_store_time_and_operations_and_progress_sums_them(  # type: ignore[no-untyped-def]
    client, results_dir: Path
) -> None:
    r = _save(client, "r02c02f01p01", "seconds_editing=90&edit_operations=7")
    assert r.status_code == 201, r.text
    doc = json.loads((results_dir / "curated" / "r02c02f01p01.json").read_text())
    assert doc["seconds_editing"] == 90
    assert doc["edit_operations"] == 7
    # a second save of the same field adds its own time; the first is kept in the history
    for field, query in (
        ("r02c02f01p01", "seconds_editing=30&edit_operations=2"),
        ("r02c03f01p01", "seconds_editing=240&edit_operations=20"),
    ):
        assert _save(client, field, query).status_code == 201
    # a script's upload without measurements: curated, but not timed
    r = _save(client, "r02c03f02p01", "")
    doc = r.json()["provenance"]
    assert doc["seconds_editing"] is None and doc["edit_operations"] is None
    progress = client.get("/api/progress").json()
    assert progress["curated"] == 3
    assert progress["correction"] == {
        "fields_timed": 2,
        "seconds_total": 360.0,
        "minutes_total": 6.0,
        "minutes_median": 3.0,  # (90 + 30) s and 240 s
        "edit_operations_total": 29,
    }
    assert "correction" not in client.get("/api/plate").json()["progress"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("seconds_editing=86401", "less than or equal to 86400"),
        ("seconds_editing=-0.5", "greater than or equal to 0"),
        ("seconds_editing=nan", "finite number"),
        ("seconds_editing=inf", "finite number"),
        ("edit_operations=-1", "greater than or equal to 0"),
        ("edit_operations=2.5", "valid integer"),
        ("edit_operations=1000001", "less than or equal to 1000000"),
    ],
)
def test_out_of_range_measurements_are_refused(  # type: ignore[no-untyped-def]
    client, results_dir: Path, query: str, message: str
) -> None:
    r = _save(client, "r02c02f01p01", query)
    assert r.status_code == 422
    detail = json.dumps(r.json()["detail"])
    assert message in detail
    assert query.split("=")[0] in detail  # names the parameter
    assert not (results_dir / "curated").exists()


def test_report_sums_over_saves_and_users() -> None:
    docs = {
        "r02c02f01p01": {
            "plate_id": "P1",
            "user": "ben",
            "seconds_editing": 30.0,
            "edit_operations": 2,
            "history": [{"user": "ana", "seconds_editing": 90.0, "edit_operations": 7}],
        },
        "r02c03f01p01": {"plate_id": "P1", "user": "ana", "seconds_editing": 240.0},
        "r02c03f02p01": {"plate_id": "P1", "user": "bot", "seconds_editing": None},
        "r02c04f01p01": {"plate_id": "P1", "user": "eve", "seconds_editing": "a lot"},
        "r02c05f01p01": {},  # a mask without provenance
    }
    report = curation_report(docs)
    assert report["plate_id"] == "P1"
    assert report["fields_curated"] == 5
    assert report["fields_timed"] == 2
    assert report["saves"] == 5
    assert report["minutes_total"] == 6.0
    assert report["minutes_median"] == 3.0
    assert report["minutes_mean"] == 3.0
    assert report["edit_operations_total"] == 9
    assert report["edit_operations_median"] == 9.0  # one field counted operations
    assert report["by_user"]["ana"] == {"saves": 2, "fields": 2, "minutes_total": 5.5}
    assert report["by_user"]["ben"] == {"saves": 1, "fields": 1, "minutes_total": 0.5}
    first = next(f for f in report["fields"] if f["field"] == "r02c02f01p01")
    assert first == {"field": "r02c02f01p01", "saves": 2, "minutes": 2.0, "edit_operations": 9}
    text = format_curation_report(report)
    assert "5 field(s) curated, 2 timed, 5 save(s)" in text
    assert "total 6.0 min, median 3.00 min per field" in text
    assert field_correction("x", {"seconds_editing": 1e9}).seconds is None  # beyond 24 h


def test_report_of_an_empty_folder(tmp_path: Path) -> None:
    report = curation_report(read_curated_sidecars(tmp_path / "curated"))
    assert report["fields_curated"] == 0
    assert report["minutes_median"] is None
    assert "0 field(s) curated" in format_curation_report(report)


def test_cli_curation_report(  # type: ignore[no-untyped-def]
    client, results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _save(client, "r02c02f01p01", "seconds_editing=45&edit_operations=3").status_code == 201
    assert _save(client, "r02c02f02p01", "seconds_editing=135&edit_operations=5").status_code == 201
    (results_dir / "curated" / "broken.json").write_text("{not json")
    assert main(["curation", "report", str(results_dir)]) == 0
    out = capsys.readouterr().out
    assert "2 field(s) curated, 2 timed, 2 save(s)" in out
    assert "total 3.0 min, median 1.50 min per field" in out
    assert "edit operations: total 8" in out
    assert main(["curation", "report", str(results_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["minutes_total"] == 3.0
    assert main(["curation", "report", str(results_dir / "nope")]) == 1
    assert "is not a folder" in capsys.readouterr().err
