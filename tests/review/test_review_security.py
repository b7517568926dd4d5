"""Review app security: the token on every data read, blind mode, the rater owns a session, and
uploads checked from their header before any pixel is decoded."""

from __future__ import annotations

import io
import tracemalloc
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from review_helpers import ANON, SIZE_YX, TOKEN, auth, npy_bytes

from phagoflow.review.masks import UploadError, decode_mask

NPY = {"Content-Type": "application/x-npy"}


def _client(results_dir: Path, **settings: object) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from phagoflow.review.app import create_app
    from phagoflow.review.results import ResultsFolder
    from phagoflow.review.settings import ReviewSettings

    app = create_app(
        ResultsFolder(results_dir),
        ReviewSettings(
            token=TOKEN,
            users={"ana": "ana-token", "bob": "bob-token"},
            max_upload_bytes=65536,
            **settings,  # type: ignore[arg-type]
        ),
    )
    return TestClient(app, headers=auth())


@pytest.fixture
def blind(results_dir: Path) -> Iterator[object]:
    with _client(results_dir, blind=True) as c:  # type: ignore[attr-defined]
        yield c


@pytest.fixture
def app(results_dir: Path) -> Iterator[object]:
    with _client(results_dir) as c:  # type: ignore[attr-defined]
        yield c


def _field(client: object) -> str:
    plate = client.get("/api/plate").json()  # type: ignore[attr-defined]
    well = plate["wells"][0]["well"]
    return str(client.get(f"/api/wells/{well}/fields").json()["fields"][0]["field"])  # type: ignore[attr-defined]


def test_every_data_read_needs_the_token(app) -> None:  # type: ignore[no-untyped-def]
    field = _field(app)
    well = field[:6]
    reads = [
        "/api/plate",
        "/api/progress",
        f"/api/wells/{well}/fields",
        f"/api/fields/{field}",
        f"/api/fields/{field}/image",
        f"/api/fields/{field}/masks/cip",
        "/api/rating/sessions/0123456789abcdef",
        "/api/rating/sessions/0123456789abcdef/items/0/masks/A",
        "/api/no-such-thing",
    ]
    for path in reads:
        r = app.get(path, headers=ANON)
        assert r.status_code == 401, path
        assert "authentication required" in r.json()["detail"]
        assert app.get(path, headers=auth("wrong")).status_code == 401, path
    for path in reads[:6]:
        assert app.get(path).status_code == 200, path
    # the page, its static files and the probes stay open (they hold no plate data)
    for path in ("/", "/healthz", "/readyz", "/static/app.js"):
        assert app.get(path, headers=ANON).status_code == 200, path


def test_blind_mode_never_serves_a_mask_by_method(blind) -> None:  # type: ignore[no-untyped-def]
    field = _field(blind)
    for source in ("cip", "cdl", "curated"):
        r = blind.get(f"/api/fields/{field}/masks/{source}")
        assert r.status_code == 403 and "blind mode" in r.json()["detail"]
    plate = blind.get("/api/plate").json()
    assert plate["blind"] is True
    assert all(w["counts"] == {} and w["disagreement_total"] is None for w in plate["wells"])
    info = blind.get(f"/api/fields/{field}").json()
    assert info["counts"] == {} and info["masks"] == [] and info["provenance"] is None
    fields = blind.get(f"/api/wells/{field[:6]}/fields").json()["fields"]
    assert all(f["counts"] == {} and f["disagreement"] is None for f in fields)
    body = npy_bytes(np.zeros(SIZE_YX, np.uint8))
    r = blind.put(f"/api/fields/{field}/curated?user=rita", content=body, headers=NPY)
    assert r.status_code == 403
    # rating still works: masks only as slots
    sid = blind.post("/api/rating/sessions", json={"rater": "rita", "seed": 1}).json()["id"]
    r = blind.get(f"/api/rating/sessions/{sid}/items/0/masks/A")
    assert r.status_code == 200 and len(r.content) == SIZE_YX[0] * SIZE_YX[1]


def test_the_rater_is_the_tokens_user(app) -> None:  # type: ignore[no-untyped-def]
    ana = auth("ana-token")
    r = app.post("/api/rating/sessions", json={"rater": "mallory", "seed": 2}, headers=ana)
    assert r.status_code == 201 and r.json()["rater"] == "ana"
    sid = r.json()["id"]
    url = f"/api/rating/sessions/{sid}"
    scores = {"scores": {"A": 5, "B": 6}}
    for other in (auth(), auth("bob-token")):  # the shared token and another user
        assert app.get(url, headers=other).status_code == 403
        assert app.get(f"{url}/items/0/masks/A", headers=other).status_code == 403
        r = app.post(f"{url}/items/0", json=scores, headers=other)
        assert r.status_code == 403 and "'ana'" in r.json()["detail"]
    assert app.get(url, headers=ana).status_code == 200
    assert app.get(f"{url}/items/0/masks/A", headers=ana).status_code == 200
    assert app.post(f"{url}/items/0", json=scores, headers=ana).status_code == 201
    # a session started with the shared token (declared rater) is not a user's to take over
    shared = app.post("/api/rating/sessions", json={"rater": "rita", "seed": 3}).json()["id"]
    assert app.get(f"/api/rating/sessions/{shared}", headers=ana).status_code == 403
    assert app.get(f"/api/rating/sessions/{shared}").status_code == 200


def _peak_mib(func: object) -> float:
    tracemalloc.start()
    try:
        func()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_tiff_upload_is_checked_from_its_header_before_decoding() -> None:
    """A 14 kB deflate TIFF declaring 6000 x 6000 px (36 MB decoded): refused unread."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((6000, 6000), np.uint8), compression="zlib")
    bomb = buf.getvalue()
    assert len(bomb) < 65536

    def upload() -> None:
        with pytest.raises(UploadError, match=r"mask shape \(6000, 6000\)") as exc:
            decode_mask(bomb, "image/tiff", SIZE_YX, max_bytes=65536)
        assert exc.value.status == 422

    assert _peak_mib(upload) < 8  # never decoded: far below the 36 MB of pixels
    wrong_dtype = io.BytesIO()
    tifffile.imwrite(wrong_dtype, np.zeros(SIZE_YX, np.uint16), compression="zlib")
    with pytest.raises(UploadError, match="dtype is uint16"):
        decode_mask(wrong_dtype.getvalue(), "image/tiff", SIZE_YX, max_bytes=65536)


def test_npy_upload_is_checked_from_its_header_before_loading() -> None:
    """A .npy header declaring 100000 x 100000 px with almost no data behind it."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (100_000, 100_000)}
    )
    body = header.getvalue() + b"\x00" * 64  # magic + header, then 64 bytes of "pixels"
    assert body.startswith(b"\x93NUMPY")

    def upload() -> None:
        with pytest.raises(UploadError, match=r"mask shape \(100000, 100000\)"):
            decode_mask(body, "application/x-npy", SIZE_YX, max_bytes=65536)

    assert _peak_mib(upload) < 8  # 10 GB never allocated
