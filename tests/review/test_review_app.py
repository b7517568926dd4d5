"""API tests of the review app: every endpoint, authentication, and each invalid upload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from review_helpers import ANON, SIZE_YX, TOKEN, auth, npy_bytes, tiff_bytes

FIELD = "r02c02f01p01"
NPY = {"Content-Type": "application/x-npy"}


def _fields(client) -> list[str]:  # type: ignore[no-untyped-def]
    wells = client.get("/api/plate").json()["wells"]
    return [
        f["field"]
        for w in wells
        for f in client.get(f"/api/wells/{w['well']}/fields").json()["fields"]
    ]


def _nothing_written(results_dir: Path) -> None:
    assert not (results_dir / "curated").exists() or not any((results_dir / "curated").iterdir())


# ----------------------------------------------------------------------------- reads
def test_index_and_static_served(client) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/")
    assert page.status_code == 200
    assert "phagoflow review" in page.text
    js = client.get("/static/app.js")
    assert js.status_code == 200
    assert "npyBytes" in js.text


def test_plate_lists_wells_with_counts_and_disagreement(client, results_dir: Path) -> None:  # type: ignore[no-untyped-def]
    j = client.get("/api/plate").json()
    assert j["methods"] == ["cip", "cdl"]
    assert j["sources"] == ["cip", "cdl", "curated"]
    assert j["size_yx"] == list(SIZE_YX)
    assert [w["well"] for w in j["wells"]] == ["r02c02", "r02c03"]
    wells_csv = (results_dir / "wells.csv").read_text().splitlines()
    for w in j["wells"]:
        cip, cdl = w["counts"]["cip"], w["counts"]["cdl"]
        row = next(r for r in wells_csv if r.split(",")[1] == w["well"] and ",cip," in r)
        assert cip["phagophore"] == int(row.split(",")[6])
        mean = (cip["phagophore"] + cdl["phagophore"]) / 2
        expected = abs(cip["phagophore"] - cdl["phagophore"]) / mean if mean else 0.0
        assert w["disagreement"]["phagophore"] == pytest.approx(expected, abs=1e-4)
    assert j["progress"] == {"curated": 0, "total": 4, "fraction": 0.0}


def test_well_fields_sorted_by_disagreement(client) -> None:  # type: ignore[no-untyped-def]
    j = client.get("/api/wells/r02c02/fields").json()
    values = [f["disagreement"] for f in j["fields"]]
    assert len(values) == 2
    assert values == sorted(values, reverse=True)
    assert all(not f["curated"] for f in j["fields"])


def test_wells_and_fields_are_shown_by_a01_names(client) -> None:  # type: ignore[no-untyped-def]
    # a person reads B02 (as on the plate and in the report); routes and files keep r02c02
    wells = client.get("/api/plate").json()["wells"]
    assert [(w["well"], w["name"]) for w in wells] == [("r02c02", "B02"), ("r02c03", "B03")]
    by_id = client.get("/api/wells/r02c02/fields").json()
    assert client.get("/api/wells/B02/fields").json() == by_id  # either name finds the well
    assert by_id["name"] == "B02"
    assert {f["field"]: f["label"] for f in by_id["fields"]} == {
        "r02c02f01p01": "B02 field 1",
        "r02c02f02p01": "B02 field 2",
    }
    info = client.get(f"/api/fields/{FIELD}").json()
    assert (info["label"], info["well_name"]) == ("B02 field 1", "B02")
    js = client.get("/static/app.js").text
    assert "<td>${w.well}</td>" not in js and "<td>${f.field}</td>" not in js


@pytest.mark.parametrize("well", ["r09c09", "H09", "B02x", "B" + "0" * 40 + "2"])
def test_unknown_well_is_404(client, well: str) -> None:  # type: ignore[no-untyped-def]
    r = client.get(f"/api/wells/{well}/fields")
    assert r.status_code == 404
    assert f"no well {well[:40]!r}" in r.json()["detail"]


def test_field_info_image_and_masks(client, results_dir: Path) -> None:  # type: ignore[no-untyped-def]
    info = client.get(f"/api/fields/{FIELD}").json()
    assert info["masks"] == ["cip", "cdl"]
    assert info["well"] == "r02c02"
    assert info["provenance"] is None
    assert len(info["contrast"]) == 2
    assert info["contrast"][0]["low"] < info["contrast"][0]["high"]
    img = client.get(f"/api/fields/{FIELD}/image")
    assert img.headers["x-shape"] == f"2,{SIZE_YX[0]},{SIZE_YX[1]}"
    assert img.headers["x-dtype"] == "uint16"
    pixels = np.frombuffer(img.content, "<u2").reshape(2, *SIZE_YX)
    assert pixels.max() > 0
    for method in ("cip", "cdl"):
        r = client.get(f"/api/fields/{FIELD}/masks/{method}")
        assert r.status_code == 200
        got = np.frombuffer(r.content, np.uint8).reshape(SIZE_YX)
        np.testing.assert_array_equal(
            got, tifffile.imread(results_dir / "masks" / method / f"{FIELD}.tiff")
        )


def test_missing_and_unknown_masks_are_404(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get(f"/api/fields/{FIELD}/masks/curated")
    assert r.status_code == 404
    assert "no curated mask" in r.json()["detail"]
    r = client.get(f"/api/fields/{FIELD}/masks/truth")
    assert r.status_code == 404
    assert "no mask source 'truth'" in r.json()["detail"]


@pytest.mark.parametrize(
    "name",
    ["r02c02f09p01", "....etc", "r02c02f01p01.tiff", "r02c02f01p01%00", "R02C02F01P01"],
)
def test_unknown_field_names_are_404(client, name: str) -> None:  # type: ignore[no-untyped-def]
    for path in (f"/api/fields/{name}", f"/api/fields/{name}/image"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "no field" in r.json()["detail"]


def test_path_traversal_never_reaches_the_filesystem(client, results_dir: Path) -> None:  # type: ignore[no-untyped-def]
    secret = results_dir.parent / "secret.tiff"
    tifffile.imwrite(secret, np.ones(SIZE_YX, np.uint8))
    for path in (
        "/api/fields/..%2Fsecret/masks/cip",
        "/api/fields/../../secret/image",
        f"/api/fields/{FIELD}/masks/..%2F..%2F..%2Fsecret",
        f"/api/fields/{FIELD}/masks/%2E%2E%2Fcip",
        "/static/%2E%2E/%2E%2E/secret.tiff",
        "/static/..%2F..%2F..%2Fsecret.tiff",
        "/static/../results.py",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
    mask = np.ones(SIZE_YX, np.uint8)
    for name in ("..%2F..%2Fsecret", "..", "%2E%2E"):
        r = client.put(
            f"/api/fields/{name}/curated?user=bob", content=npy_bytes(mask), headers=auth() | NPY
        )
        assert r.status_code in (404, 405), name
    assert tifffile.imread(secret).sum() == mask.sum()  # untouched
    _nothing_written(results_dir)
    assert sorted(p.name for p in results_dir.parent.iterdir()) == ["results", "secret.tiff"]


# ----------------------------------------------------------------------------- writes
def test_put_curated_saves_mask_and_provenance(client, results_dir: Path) -> None:  # type: ignore[no-untyped-def]
    start = tifffile.imread(results_dir / "masks" / "cdl" / f"{FIELD}.tiff")
    edited = start.copy()
    edited[5:9, 7:12] = 1
    r = client.put(
        f"/api/fields/{FIELD}/curated?user=bob&started_from=cdl&seconds_editing=42.5",
        content=npy_bytes(edited),
        headers=auth() | NPY,
    )
    assert r.status_code == 201, r.text
    doc = r.json()["provenance"]
    saved = tifffile.imread(results_dir / "curated" / f"{FIELD}.tiff")
    np.testing.assert_array_equal(saved, edited)
    sidecar = json.loads((results_dir / "curated" / f"{FIELD}.json").read_text())
    assert sidecar == doc
    assert doc["user"] == "bob"
    assert doc["user_authenticated"] is False
    assert doc["started_from"] == "cdl"
    assert doc["seconds_editing"] == 42.5
    assert doc["pixels_changed"] == int(np.count_nonzero(start != edited))
    assert doc["saved_at"].endswith("+00:00")
    assert r.json()["progress"]["curated"] == 1
    # now visible everywhere
    assert client.get(f"/api/fields/{FIELD}").json()["masks"] == ["cip", "cdl", "curated"]
    got = client.get(f"/api/fields/{FIELD}/masks/curated").content
    np.testing.assert_array_equal(np.frombuffer(got, np.uint8).reshape(SIZE_YX), edited)
    assert client.get("/api/progress").json()["by_well"]["r02c02"] == {"curated": 1, "total": 2}
    assert client.get("/api/plate").json()["wells"][0]["curated"] == 1


def test_second_save_keeps_history_and_tiff_upload_works(client, results_dir: Path) -> None:  # type: ignore[no-untyped-def]
    first = np.zeros(SIZE_YX, np.uint8)
    first[0:3, 0:3] = 2
    r1 = client.put(
        f"/api/fields/{FIELD}/curated?user=bob", content=npy_bytes(first), headers=auth() | NPY
    )
    assert r1.status_code == 201
    second = first.copy()
    second[50:52, 50:52] = 1
    r2 = client.put(
        f"/api/fields/{FIELD}/curated?started_from=curated",
        content=tiff_bytes(second),
        headers=auth("ana-personal-token") | {"Content-Type": "image/tiff"},
    )
    assert r2.status_code == 201, r2.text
    doc = r2.json()["provenance"]
    assert doc["user"] == "ana"  # personal token wins over any declared name
    assert doc["user_authenticated"] is True
    assert doc["pixels_changed"] == 4
    assert [h["user"] for h in doc["history"]] == ["bob"]
    np.testing.assert_array_equal(
        tifffile.imread(results_dir / "curated" / f"{FIELD}.tiff"), second
    )


def test_auth_endpoint(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/api/auth", headers=auth()).json() == {"ok": True, "user": None}
    assert client.get("/api/auth", headers=auth("ana-personal-token")).json()["user"] == "ana"
    assert client.get("/api/auth", headers=ANON).status_code == 401


GOOD = np.zeros(SIZE_YX, np.uint8)


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (npy_bytes(GOOD), NPY | ANON, 401, "authentication required"),
        (npy_bytes(GOOD), NPY | auth("wrong-token"), 401, "invalid token"),
        (npy_bytes(GOOD), NPY | {"Authorization": TOKEN}, 401, "authentication required"),
        (npy_bytes(GOOD[:, :-1]), NPY | auth(), 422, "does not match the field shape (96, 128)"),
        (npy_bytes(GOOD.T.copy()), NPY | auth(), 422, "mask shape (128, 96)"),
        (npy_bytes(GOOD.astype(np.uint16)), NPY | auth(), 422, "dtype is uint16; expected uint8"),
        (npy_bytes(GOOD.astype(np.float32)), NPY | auth(), 422, "expected uint8"),
        (npy_bytes(np.full(SIZE_YX, 3, np.uint8)), NPY | auth(), 422, "holds label 3"),
        (b"\x00" * 70_000, NPY | auth(), 413, "exceeds the limit of 65536"),
        (b"not a numpy file", NPY | auth(), 400, "cannot decode the application/x-npy body"),
        (b"", NPY | auth(), 400, "empty upload"),
        (npy_bytes(GOOD), {"Content-Type": "image/png"} | auth(), 415, "unsupported Content-Type"),
        (tiff_bytes(np.stack([GOOD, GOOD])), {"Content-Type": "image/tiff"} | auth(), 422, ""),
    ],
    ids=[
        "no-token",
        "bad-token",
        "not-bearer",
        "wrong-shape",
        "transposed",
        "uint16",
        "float32",
        "label-3",
        "too-large",
        "garbage",
        "empty",
        "png",
        "tiff-3d",
    ],
)
def test_invalid_uploads_are_rejected_and_nothing_written(  # type: ignore[no-untyped-def]
    client, results_dir: Path, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    r = client.put(f"/api/fields/{FIELD}/curated?user=bob", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    _nothing_written(results_dir)
    assert client.get("/api/progress").json()["curated"] == 0


def test_label_3_message_counts_pixels(client, results_dir: Path) -> None:  # type: ignore[no-untyped-def]
    bad = GOOD.copy()
    bad[0, :5] = 3
    r = client.put(
        f"/api/fields/{FIELD}/curated?user=bob", content=npy_bytes(bad), headers=auth() | NPY
    )
    assert r.status_code == 422
    assert "label 3 (5 pixel(s) above 2)" in r.json()["detail"]
    _nothing_written(results_dir)


def test_declared_content_length_over_limit_is_413(client, results_dir: Path) -> None:  # type: ignore[no-untyped-def]
    r = client.put(
        f"/api/fields/{FIELD}/curated?user=bob",
        content=b"x" * 10,
        headers=auth() | NPY | {"Content-Length": "99999999"},
    )
    assert r.status_code in (400, 413)  # h11 may refuse the lying header itself
    _nothing_written(results_dir)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "give your name as 'user'"),
        ("user=../etc", "give your name as 'user'"),
        ("user=bob&started_from=truth", "started_from must be one of"),
        ("user=bob&seconds_editing=-1", "greater than or equal to 0"),
    ],
)
def test_bad_curation_parameters(client, results_dir: Path, query: str, message: str) -> None:  # type: ignore[no-untyped-def]
    r = client.put(
        f"/api/fields/{FIELD}/curated?{query}", content=npy_bytes(GOOD), headers=auth() | NPY
    )
    assert r.status_code == 422
    assert message in json.dumps(r.json()["detail"])
    _nothing_written(results_dir)


def test_create_app_requires_a_token(results_dir: Path) -> None:
    from phagoflow.review.app import create_app
    from phagoflow.review.results import ResultsFolder
    from phagoflow.review.settings import ReviewSettings

    with pytest.raises(ValueError, match="token is unset"):
        create_app(ResultsFolder(results_dir), ReviewSettings(token=None))
    settings, generated = ReviewSettings(token=None).with_token()
    assert generated
    assert settings.token is not None
    assert len(settings.token.get_secret_value()) >= 24
    same, generated = settings.with_token()
    assert not generated
    assert same.token == settings.token


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from phagoflow.review.settings import ReviewSettings

    monkeypatch.setenv("PHAGOFLOW_REVIEW_TOKEN", "from-env")
    monkeypatch.setenv("PHAGOFLOW_REVIEW_MAX_UPLOAD_BYTES", "2048")
    s = ReviewSettings()
    assert s.token is not None
    assert s.token.get_secret_value() == "from-env"
    assert s.max_upload_bytes == 2048
    assert "from-env" not in repr(s)
