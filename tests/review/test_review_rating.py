"""Blind rating: sessions, storage, the API flow, and the report through to the KS test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from review_helpers import ANON, SIZE_YX, auth
from scipy.stats import ks_2samp

from phagoflow.cli import main
from phagoflow.review.rating import (
    RatingSession,
    create_session,
    load_session,
    rating_report,
    read_ratings,
    record_scores,
    write_rating_report,
)

FIELDS = [f"r02c0{w}f0{f}p01" for w in (2, 3) for f in (1, 2)]


# ----------------------------------------------------------------------------- core
def test_session_is_shuffled_blinded_and_stored(tmp_path: Path) -> None:
    orders, first_slots = set(), []
    for seed in range(12):
        s = create_session(tmp_path, "rita", ("cip", "cdl"), FIELDS, rng=seed)
        assert sorted(i.field for i in s.items) == sorted(FIELDS)
        assert all(sorted(i.slots.values()) == ["cdl", "cip"] for i in s.items)
        orders.add(tuple(i.field for i in s.items))
        first_slots += [i.slots["A"] for i in s.items]
        assert load_session(tmp_path, s.id) == s
    assert len(orders) > 1  # field order varies
    assert 0.25 < first_slots.count("cip") / len(first_slots) < 0.75  # both slot orders occur


def test_session_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two different"):
        create_session(tmp_path, "rita", ("cip", "cip"), FIELDS)
    with pytest.raises(ValueError, match="no field has both"):
        create_session(tmp_path, "rita", ("cip", "cdl"), [])
    assert len(create_session(tmp_path, "r", ("cip", "cdl"), FIELDS, n_fields=2).items) == 2
    for bad in ("../../etc/passwd", "0123", "ZZZZZZZZZZZZZZZZ", "0123456789abcdef"):
        with pytest.raises(KeyError):
            load_session(tmp_path, bad)


def test_record_scores_validates(tmp_path: Path) -> None:
    s = create_session(tmp_path, "rita", ("cip", "cdl"), FIELDS, rng=0)
    with pytest.raises(IndexError):
        record_scores(tmp_path, s, 4, {"A": 1, "B": 2})
    with pytest.raises(ValueError, match="one score per slot"):
        record_scores(tmp_path, s, 0, {"A": 1})
    with pytest.raises(ValueError, match="expected 1–10"):
        record_scores(tmp_path, s, 0, {"A": 11, "B": 2})
    assert read_ratings(tmp_path) == []
    lines = record_scores(tmp_path, s, 0, {"A": 9, "B": 2})
    assert {(ln["method"], ln["score"]) for ln in lines} == {
        (s.items[0].slots["A"], 9),
        (s.items[0].slots["B"], 2),
    }
    assert (tmp_path / "ratings" / "rita.jsonl").read_text().count("\n") == 2


def test_report_matches_scipy_and_keeps_last_score() -> None:
    cip = [3, 4, 4, 5, 2, 3, 4]
    cdl = [7, 8, 6, 9, 7, 8, 5]
    ratings = []
    for i, (a, b) in enumerate(zip(cip, cdl, strict=True)):
        for method, score in (("cip", a), ("cdl", b)):
            ratings.append(
                {"rater": "r1", "session": "s", "field": f"f{i}", "method": method, "score": score}
            )
    # an earlier score of f0/cdl that a re-rating replaced
    ratings.insert(0, {"rater": "r1", "session": "s", "field": "f0", "method": "cdl", "score": 1})
    ratings.append({"rater": "r2", "session": "t", "field": "f0", "method": "cip", "score": 6})
    ratings.append({"rater": "r2", "session": "t", "field": "f0", "method": "cdl", "score": 6})
    rep = rating_report(ratings)
    r1 = rep["raters"]["r1"]
    assert r1["n"] == {"cdl": 7, "cip": 7}
    assert r1["mean"]["cdl"] == pytest.approx(np.mean(cdl))
    assert r1["histogram"]["cip"][3 - 1] == 2  # two 3s
    assert sum(r1["histogram"]["cdl"]) == 7
    ks = r1["ks"][0]
    expected = ks_2samp(cdl, cip)
    assert (ks["a"], ks["b"]) == ("cdl", "cip")
    assert ks["statistic"] == pytest.approx(expected.statistic)
    assert ks["pvalue"] == pytest.approx(expected.pvalue)
    assert ks["pvalue"] < 0.01
    assert rep["raters"]["r2"]["ks"][0]["statistic"] == 0.0
    assert rep["mean"]["cip"] == pytest.approx(np.mean([*cip, 6]))
    assert rep["n_ratings"] == 16


# ----------------------------------------------------------------------------- API flow
def test_rating_flow_through_api_to_ks_report(client, results_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/rating/sessions", json={"rater": "rita", "seed": 3}, headers=ANON)
    assert r.status_code == 401
    r = client.post("/api/rating/sessions", json={"rater": "rita", "seed": 3}, headers=auth())
    assert r.status_code == 201, r.text
    view = r.json()
    sid = view["id"]
    assert view["methods"] == ["cdl", "cip"]
    assert len(view["items"]) == 4
    text = json.dumps(view)
    assert '"A"' in text and "slots" in text
    assert "cip" not in json.dumps(view["items"])  # blinded: no method per item or slot

    stored = RatingSession.model_validate_json(
        (results_dir / "ratings" / "sessions" / f"{sid}.json").read_text()
    )
    cip_dir = results_dir / "masks" / "cip"
    import tifffile

    for item in view["items"]:
        shown = {}
        for slot in ("A", "B"):
            m = client.get(f"/api/rating/sessions/{sid}/items/{item['index']}/masks/{slot}")
            assert m.status_code == 200
            assert "cip" not in json.dumps(dict(m.headers)) and "cdl" not in json.dumps(
                dict(m.headers)
            )
            shown[slot] = np.frombuffer(m.content, np.uint8).reshape(SIZE_YX)
        hidden = stored.items[item["index"]].slots
        cip_slot = "A" if hidden["A"] == "cip" else "B"
        truth_cip = tifffile.imread(cip_dir / f"{item['field']}.tiff")
        np.testing.assert_array_equal(shown[cip_slot], truth_cip)
        # the rater likes the CIP mask (here: the truth) better
        scores = {cip_slot: 8, ("B" if cip_slot == "A" else "A"): 3}
        r = client.post(
            f"/api/rating/sessions/{sid}/items/{item['index']}",
            json={"scores": scores},
            headers=auth(),
        )
        assert r.status_code == 201, r.text
        assert r.json()["recorded"] == 2
    assert r.json()["remaining"] == 0
    assert all(it["rated"] for it in client.get(f"/api/rating/sessions/{sid}").json()["items"])

    assert main(["rating", "report", str(results_dir)]) == 0
    out = capsys.readouterr().out
    assert "KS cdl vs cip" in out
    report = json.loads((results_dir / "ratings" / "report.json").read_text())
    rita = report["raters"]["rita"]
    assert rita["mean"] == {"cdl": 3.0, "cip": 8.0}
    assert rita["ks"][0]["statistic"] == 1.0
    png = (results_dir / "ratings" / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_rating_api_errors(client, results_dir: Path) -> None:  # type: ignore[no-untyped-def]
    h = auth()
    bad_methods = {"rater": "rita", "methods": ["cip", "truth"]}
    r = client.post("/api/rating/sessions", json=bad_methods, headers=h)
    assert r.status_code == 422
    assert "methods must be two of" in r.json()["detail"]
    r = client.post("/api/rating/sessions", json={"rater": "../x"}, headers=h)
    assert r.status_code == 422
    # no curated masks yet: no field to compare
    r = client.post(
        "/api/rating/sessions", json={"rater": "rita", "methods": ["cip", "curated"]}, headers=h
    )
    assert r.status_code == 422
    assert "no field has both" in r.json()["detail"]
    assert client.get("/api/rating/sessions/0123456789abcdef").status_code == 404
    assert client.get("/api/rating/sessions/..%2F..%2Frun").status_code == 404
    sid = client.post("/api/rating/sessions", json={"rater": "rita"}, headers=h).json()["id"]
    assert client.get(f"/api/rating/sessions/{sid}/items/9/masks/A").status_code == 404
    assert client.get(f"/api/rating/sessions/{sid}/items/0/masks/C").status_code == 404
    for scores, code in (({"A": 0, "B": 5}, 422), ({"A": 5}, 422), ({"A": 5, "C": 5}, 422)):
        r = client.post(f"/api/rating/sessions/{sid}/items/0", json={"scores": scores}, headers=h)
        assert r.status_code == code, scores
    r = client.post(
        f"/api/rating/sessions/{sid}/items/0", json={"scores": {"A": 5, "B": 5}}, headers=ANON
    )
    assert r.status_code == 401
    assert read_ratings(results_dir) == []


def test_personal_token_names_the_rater(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post(
        "/api/rating/sessions",
        json={"rater": "somebody-else"},
        headers=auth("ana-personal-token"),
    )
    assert r.status_code == 201
    assert r.json()["rater"] == "ana"


def test_report_with_no_ratings(tmp_path: Path) -> None:
    out = write_rating_report(tmp_path)
    assert json.loads((out / "report.json").read_text())["raters"] == {}
    assert (out / "report.png").is_file()


def test_rating_report_cli_needs_results(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["rating", "report", str(tmp_path)]) == 1
    assert "not a results folder" in capsys.readouterr().err
