"""The review app on a plate in the object store (real moto S3 server, real services' code).

The plate gets into the bucket the way the stack puts it there: the real ingest service (driven
scan by scan against a real tansu broker) uploads the channels and the manifest, then the cip
service's ``segment_and_publish`` writes CIP masks and object tables for every field and, with
the core U-Net, CDL ones for all but one field (as the inference service does with Triton). The
app is exercised through FastAPI's TestClient on a fresh copy of that bucket per test.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from kafka import KafkaConsumer, TopicPartition
from review_helpers import ANON, SIZE_YX, TOKEN, auth, npy_bytes

from phagoflow import events as ev
from phagoflow.cli import main
from phagoflow.core.counting import aggregate_wells
from phagoflow.core.opera import load_field, read_plate
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.segmenters import make_segmenter
from phagoflow.review.results import ResultsError, ResultsUnavailable
from phagoflow.review.settings import ReviewSettings
from phagoflow.review.store import (
    StoreResults,
    curated_mask_key,
    curated_provenance_key,
    list_plates,
)
from phagoflow.services.cip import segment_and_publish
from phagoflow.services.ingest import IngestService, IngestSettings
from phagoflow.services.kafkaio import make_producer
from phagoflow.services.objectstore import ObjectStore
from phagoflow.stack import MotoS3Server, TansuBroker, candidate_port

NPY = {"Content-Type": "application/x-npy"}


def _dead_endpoint() -> str:
    """``host:port`` where nothing listens: a port the OS just handed out and nobody bound.

    For a refused connection only (S3 "down"); no server is ever started on it.
    """
    return f"127.0.0.1:{candidate_port()}"


@dataclass
class StoredPlate:
    """What the services wrote for the simulated plate, and what they reported."""

    plate_id: str
    export: Path
    objects: dict[str, bytes]  # every object of the bucket after the services ran
    ready: dict[tuple[str, str], ev.MaskReady]  # (field, method) -> MaskReady
    no_cdl: str  # the field left without a CDL result


def _store(server: MotoS3Server, bucket: str, **kw: object) -> ObjectStore:
    options: dict = {"retries": 2, "backoff_s": 0.1, "timeout_s": 2.0, **kw}
    return ObjectStore(
        server.endpoint, server.access_key, server.secret_key, bucket=bucket, **options
    )


def _field_events(bootstrap: str, n: int) -> list[ev.FieldAcquired]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        tp = TopicPartition(ev.Topic.FIELDS_ACQUIRED.value, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        out: list[ev.FieldAcquired] = []
        deadline = time.monotonic() + 20
        while len(out) < n:
            assert time.monotonic() < deadline, f"{len(out)} FieldAcquired, wanted {n}"
            for recs in consumer.poll(timeout_ms=200).values():
                for r in recs:
                    event = ev.decode_record(r.topic, r.value, list(r.headers or ()))
                    assert isinstance(event, ev.FieldAcquired)
                    out.append(event)
        return out
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def stored(
    simulated: tuple[Path, Path, str],
    s3_server: MotoS3Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> StoredPlate:
    """Ingest + cip + CDL on the 2-well x 2-field plate; every object of the bucket kept."""
    export, _truth, plate_id = simulated
    tmp = tmp_path_factory.mktemp("stored")
    bucket = f"rv-{uuid.uuid4().hex[:10]}"
    s3_server.ensure_buckets([bucket])
    # a broker of the module's own: fresh_broker is per test, and the topic names are fixed
    with TansuBroker(log_path=tmp / "tansu.log") as broker:
        ev.create_topics(broker.bootstrap_servers, partitions=1)
        settings = IngestSettings(
            kafka_bootstrap=broker.bootstrap_servers,
            s3_endpoint=s3_server.endpoint,
            s3_access_key=s3_server.access_key,
            s3_secret_key=s3_server.secret_key,
            bucket=bucket,
            watch_dir=tmp / "incoming",
            ingest_settle_s=0.0,
            ingest_quiet_s=0.0,
        )
        shutil.copytree(export, settings.watch_dir / export.name)
        ingest = IngestService(settings, http_port=0)
        ingest.setup()
        store = _store(s3_server, bucket)
        try:
            deadline = time.monotonic() + 20
            while not (store.get_json(ev.manifest_object_key(plate_id)) or {}).get(
                "plate_complete"
            ):
                assert time.monotonic() < deadline, "ingest did not complete the plate"
                ingest.scan()
                time.sleep(0.05)
        finally:
            ingest.close()
        events = sorted(
            _field_events(broker.bootstrap_servers, 4), key=lambda e: ev.field_key(e.field).name
        )
        producer = make_producer(settings, "review-test")
        try:
            cip = make_segmenter("cip")
            cdl = make_segmenter("cdl", threads=1)
            ready = {}
            for i, event in enumerate(events):
                name = ev.field_key(event.field).name
                for method, seg, version in (("cip", cip, cip.fingerprint[:16]), ("cdl", cdl, "1")):
                    if method == "cdl" and i == 1:
                        continue  # one field still waits for inference
                    ready[(name, method)] = segment_and_publish(
                        event,
                        store=store,
                        segmenter=seg,
                        method=method,
                        model_name=method,
                        model_version=version,
                        producer=producer,
                        producer_name=method,
                    )
        finally:
            producer.close()
    objects = {k: store.get_bytes(k) for k in store.list_keys("")}
    no_cdl = ev.field_key(events[1].field).name
    return StoredPlate(plate_id, export, objects, ready, no_cdl)


def _fill(server: MotoS3Server, objects: dict[str, bytes]) -> ObjectStore:
    bucket = f"rv-{uuid.uuid4().hex[:10]}"
    server.ensure_buckets([bucket])
    store = _store(server, bucket)
    for key, data in objects.items():
        store.put_bytes(key, data)
    return store


@pytest.fixture
def store(stored: StoredPlate, s3_server: MotoS3Server) -> ObjectStore:
    """A fresh bucket holding a copy of what the services wrote."""
    return _fill(s3_server, stored.objects)


@pytest.fixture
def results(store: ObjectStore, stored: StoredPlate, tmp_path: Path) -> StoreResults:
    return StoreResults(store, stored.plate_id, state_dir=tmp_path / "state", refresh_s=0.0)


@pytest.fixture
def client(results: StoreResults) -> Iterator[object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette: "use httpx2" deprecation
        from fastapi.testclient import TestClient

    from phagoflow.review.app import create_app

    with TestClient(create_app(results, ReviewSettings(token=TOKEN)), headers=auth()) as c:
        yield c


def _counts(ready: ev.MaskReady) -> dict[str, int]:
    c = ev.field_counts_from_mask_ready(ready)
    return {"phagophore": c.phagophores, "autolysosome": c.autolysosomes}


def _raw(resp) -> np.ndarray:  # type: ignore[no-untyped-def]
    shape = tuple(int(v) for v in resp.headers["X-Shape"].split(","))
    return np.frombuffer(resp.content, dtype=resp.headers["X-Dtype"]).reshape(shape)


# ----------------------------------------------------------------------------- reads
def test_plate_view_from_the_store(client, stored: StoredPlate) -> None:  # type: ignore[no-untyped-def]
    j = client.get("/api/plate").json()
    assert j["plate_id"] == stored.plate_id
    assert j["methods"] == ["cip", "cdl"]
    assert j["sources"] == ["cip", "cdl", "curated"]
    assert j["size_yx"] == list(SIZE_YX)
    assert j["rows"] >= 2 and j["columns"] >= 3  # holds r02c02 and r02c03
    assert [w["well"] for w in j["wells"]] == ["r02c02", "r02c03"]
    for w in j["wells"]:  # no wells.csv yet: the fields' MaskReady counts added up
        for method in ("cip", "cdl"):
            expected = {"phagophore": 0, "autolysosome": 0}
            for (name, m), ready in stored.ready.items():
                if m == method and name.startswith(w["well"]):
                    for cls, n in _counts(ready).items():
                        expected[cls] += n
            assert w["counts"][method] == expected, (w["well"], method)
    assert j["progress"] == {"curated": 0, "total": 4, "fraction": 0.0}
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True}


def test_well_fields_carry_per_field_counts(client, stored: StoredPlate) -> None:  # type: ignore[no-untyped-def]
    well = stored.no_cdl[:6]
    fields = client.get(f"/api/wells/{well}/fields").json()["fields"]
    assert sorted(f["field"] for f in fields) == [f"{well}f01p01", f"{well}f02p01"]
    for f in fields:
        assert f["counts"]["cip"] == _counts(stored.ready[(f["field"], "cip")])
        if f["field"] == stored.no_cdl:
            assert "cdl" not in f["counts"]  # no result yet, not zero objects
            assert f["disagreement"] is None
        else:
            assert f["counts"]["cdl"] == _counts(stored.ready[(f["field"], "cdl")])
            assert f["disagreement"] is not None
    assert fields[0]["disagreement"] is not None  # the field that has both sorts first


def test_field_image_is_the_exported_field(client, stored: StoredPlate) -> None:  # type: ignore[no-untyped-def]
    catalogue = read_plate(stored.export)
    for name in ("r02c02f01p01", stored.no_cdl):
        info = client.get(f"/api/fields/{name}").json()
        assert info["size_yx"] == list(SIZE_YX)
        expected_masks = ["cip"] if name == stored.no_cdl else ["cip", "cdl"]
        assert info["masks"] == expected_masks
        got = _raw(client.get(f"/api/fields/{name}/image"))
        want = load_field(catalogue, FieldKey.parse(name))
        np.testing.assert_array_equal(got, np.clip(np.rint(want), 0, 65535).astype(np.uint16))


def test_masks_per_method_are_what_the_services_wrote(client, stored: StoredPlate) -> None:  # type: ignore[no-untyped-def]
    for (name, method), ready in stored.ready.items():
        r = client.get(f"/api/fields/{name}/masks/{method}")
        assert r.status_code == 200, r.text
        stored_mask = tifffile.imread(io.BytesIO(stored.objects[ready.mask.key]))
        np.testing.assert_array_equal(_raw(r), stored_mask)
    assert client.get(f"/api/fields/{stored.no_cdl}/masks/cdl").status_code == 404
    assert client.get("/api/fields/r02c02f01p01/masks/curated").status_code == 404
    assert client.get("/api/fields/r02c02f01p01/masks/truth").status_code == 404
    assert client.get("/api/fields/..%2Fraw/image").status_code == 404
    assert client.get("/api/fields/r09c09f01p01/image").status_code == 404


# ----------------------------------------------------------------------------- writes
def test_put_curated_lands_in_the_store_and_reads_back(  # type: ignore[no-untyped-def]
    client, store: ObjectStore, stored: StoredPlate, tmp_path: Path
) -> None:
    name = "r02c02f01p01"
    start = _raw(client.get(f"/api/fields/{name}/masks/cdl"))
    edited = start.copy()
    edited[5:9, 7:12] = 2
    query = "user=ana&started_from=cdl&seconds_editing=75&edit_operations=4"
    url = f"/api/fields/{name}/curated?{query}"
    assert client.put(url, content=npy_bytes(edited), headers=NPY | ANON).status_code == 401
    assert not store.list_keys("curated/")
    r = client.put(url, content=npy_bytes(edited), headers=auth() | NPY)
    assert r.status_code == 201, r.text
    doc = r.json()["provenance"]
    key = FieldKey.parse(name)
    assert curated_mask_key(stored.plate_id, key) == f"curated/{stored.plate_id}/{name}.tiff"
    np.testing.assert_array_equal(
        tifffile.imread(io.BytesIO(store.get_bytes(curated_mask_key(stored.plate_id, key)))),
        edited,
    )
    assert store.get_json(curated_provenance_key(stored.plate_id, key)) == doc
    assert doc["plate_id"] == stored.plate_id and doc["field"] == name
    assert doc["user"] == "ana" and doc["started_from"] == "cdl"
    assert doc["pixels_changed"] == int(np.count_nonzero(start != edited))
    assert doc["seconds_editing"] == 75 and doc["edit_operations"] == 4
    assert r.json()["progress"]["curated"] == 1
    assert r.json()["progress"]["correction"]["minutes_total"] == 1.25
    np.testing.assert_array_equal(_raw(client.get(f"/api/fields/{name}/masks/curated")), edited)
    assert client.get(f"/api/fields/{name}").json()["provenance"] == doc

    # a new app on the same bucket sees it; a second save keeps the first in its history
    again = StoreResults(store, stored.plate_id, state_dir=tmp_path / "other")
    assert again.curated_names() == [name]
    assert again.provenance(key) == doc
    np.testing.assert_array_equal(again.mask(key, "curated"), edited)
    second = again.save_curated(
        key,
        np.zeros(SIZE_YX, np.uint8),
        user="ben",
        started_from="curated",
        start_mask=edited,
        seconds_editing=30.0,
        edit_operations=1,
        authenticated_user=False,
        previous=again.provenance(key),
    )
    assert [h["user"] for h in second["history"]] == ["ana"]
    assert store.get_json(curated_provenance_key(stored.plate_id, key)) == second


def test_curated_upload_is_validated_as_in_folder_mode(client, store: ObjectStore) -> None:  # type: ignore[no-untyped-def]
    bad = np.zeros((SIZE_YX[0], SIZE_YX[1] - 1), np.uint8)
    r = client.put(
        "/api/fields/r02c02f01p01/curated?user=ana",
        content=npy_bytes(bad),
        headers=auth() | NPY,
    )
    assert r.status_code == 422
    assert "does not match the field shape" in r.json()["detail"]
    assert not store.list_keys("curated/")


def test_rating_sessions_use_the_local_state_folder(client, results: StoreResults) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/rating/sessions", json={"rater": "rita", "seed": 1}, headers=auth())
    assert r.status_code == 201, r.text
    assert len(r.json()["items"]) == 3  # fields with both a CIP and a CDL mask
    assert list((results.root / "ratings" / "sessions").glob("*.json"))


def test_refresh_picks_up_new_results_and_the_metrics_wells_csv(  # type: ignore[no-untyped-def]
    client, store: ObjectStore, stored: StoredPlate
) -> None:
    from phagoflow.embedded.run import write_wells_csv

    # the missing CDL result arrives (same bytes as another field's, under its own keys)
    other = next(n for (n, m) in stored.ready if m == "cdl")
    key = FieldKey.parse(stored.no_cdl)
    src = stored.ready[(other, "cdl")]
    mask_key = ev.mask_object_key(stored.plate_id, key, "cdl", "1")
    store.put_bytes(mask_key, stored.objects[src.mask.key])
    table = stored.objects[src.objects.key].decode().replace(other, stored.no_cdl)
    store.put_bytes(ev.objects_object_key(stored.plate_id, key, "cdl", "1"), table.encode())
    # metrics writes wells.csv with the embedded writer; one number changed to see it is used
    counts = [ev.field_counts_from_mask_ready(r) for r in stored.ready.values()]
    path = Path(store.bucket + "-wells.csv")
    try:
        write_wells_csv(path, aggregate_wells(counts), ["cip", "cdl"])
        rows = list(csv.DictReader(path.open()))
    finally:
        path.unlink(missing_ok=True)
    rows[0]["phagophores"] = "1234"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    store.put_bytes(ev.report_object_key(stored.plate_id, "wells.csv"), buf.getvalue().encode())

    j = client.get("/api/plate").json()  # refresh_s=0: re-reads the store
    well = next(w for w in j["wells"] if w["well"] == rows[0]["well"])
    assert well["counts"][rows[0]["method"]]["phagophore"] == 1234
    info = client.get(f"/api/fields/{stored.no_cdl}").json()
    assert info["masks"] == ["cip", "cdl"]
    assert info["counts"]["cdl"] == _counts(src)


def test_store_going_away_makes_readyz_fail(client, results: StoreResults, s3_server) -> None:  # type: ignore[no-untyped-def]
    results.store = ObjectStore(
        _dead_endpoint(), "x", "y", bucket=results.store.bucket, retries=1, timeout_s=1
    )
    assert client.get("/api/plate").status_code == 200  # the last state is still served
    r = client.get("/readyz")
    assert r.status_code == 503
    assert "not reachable" in r.json()["reason"]
    r = client.get("/api/fields/r02c02f01p01/masks/cip")
    assert r.status_code == 503
    assert "not reachable" in r.json()["detail"]


# ----------------------------------------------------------------------------- errors
def test_unknown_plate_lists_the_plates(store: ObjectStore, stored: StoredPlate) -> None:
    assert list_plates(store) == [stored.plate_id]
    with pytest.raises(ResultsError, match=r"'NOPE' is not in bucket .*plates in the bucket: SIM"):
        StoreResults(store, "NOPE")


def test_plate_without_masks(stored: StoredPlate, s3_server: MotoS3Server) -> None:
    ingest_only = {k: v for k, v in stored.objects.items() if not k.startswith("results/")}
    store = _fill(s3_server, ingest_only)
    with pytest.raises(ResultsError, match="has no masks yet"):
        StoreResults(store, stored.plate_id)


def test_unreachable_store() -> None:
    dead = ObjectStore(_dead_endpoint(), "x", "y", bucket="phagoflow", retries=1)
    with pytest.raises(ResultsUnavailable, match="not reachable"):
        StoreResults(dead, "SIM5")


@pytest.fixture
def s3_env(
    monkeypatch: pytest.MonkeyPatch, s3_server: MotoS3Server, store: ObjectStore, tmp_path: Path
) -> ObjectStore:
    for name, value in {
        "S3_ENDPOINT": s3_server.endpoint,
        "S3_ACCESS_KEY": s3_server.access_key,
        "S3_SECRET_KEY": s3_server.secret_key,
        "BUCKET": store.bucket,
        "S3_RETRIES": "1",
        "S3_TIMEOUT_S": "1",
        "REVIEW_STATE_DIR": str(tmp_path / "state"),
    }.items():
        monkeypatch.setenv(f"PHAGOFLOW_{name}", value)
    monkeypatch.delenv("PHAGOFLOW_REVIEW_TOKEN", raising=False)
    monkeypatch.delenv("PHAGOFLOW_REVIEW_PLATE", raising=False)
    return store


def test_cli_review_s3_serves_the_plate(  # type: ignore[no-untyped-def]
    s3_env: ObjectStore, stored: StoredPlate, monkeypatch, capsys
) -> None:
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert main(["review", "--s3", stored.plate_id, "--port", "9124"]) == 0
    assert seen["port"] == 9124
    assert isinstance(seen["app"].state.results, StoreResults)
    assert f"plate {stored.plate_id}, 4 fields" in capsys.readouterr().out


def test_cli_errors_exit_1_with_a_message(  # type: ignore[no-untyped-def]
    s3_env: ObjectStore, stored: StoredPlate, monkeypatch, capsys
) -> None:
    import phagoflow.services.common as common

    monkeypatch.setattr(common, "configure_logging", lambda *a, **kw: None)
    assert main(["review", "--s3", "NOPE"]) == 1
    assert f"plates in the bucket: {stored.plate_id}" in capsys.readouterr().err
    assert main(["serve", "review"]) == 1  # PHAGOFLOW_REVIEW_PLATE unset
    assert "no plate chosen: set PHAGOFLOW_REVIEW_PLATE" in capsys.readouterr().err
    assert main(["review"]) == 1
    assert "either RESULTS_DIR or --s3 PLATE" in capsys.readouterr().err
    monkeypatch.setenv("PHAGOFLOW_S3_ENDPOINT", _dead_endpoint())
    assert main(["review", "--s3", stored.plate_id]) == 1
    assert "is not reachable" in capsys.readouterr().err


def test_cli_curation_report_from_the_store(  # type: ignore[no-untyped-def]
    s3_env: ObjectStore, client, stored: StoredPlate, capsys
) -> None:
    for name, seconds in (("r02c02f01p01", 120), ("r02c02f02p01", 60)):
        mask = np.zeros(SIZE_YX, np.uint8)
        r = client.put(
            f"/api/fields/{name}/curated?user=ana&seconds_editing={seconds}&edit_operations=3",
            content=npy_bytes(mask),
            headers=auth() | NPY,
        )
        assert r.status_code == 201, r.text
    assert main(["curation", "report", "--s3", stored.plate_id, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plate_id"] == stored.plate_id
    assert report["fields_curated"] == 2
    assert report["minutes_total"] == 3.0
    assert report["minutes_median"] == 1.5
    assert report["edit_operations_total"] == 6
