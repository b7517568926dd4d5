"""The "N new plates since the last model" rule (pure) and its inputs from the bucket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from phagoflow.k8s.trigger import CompletedPlate, completed_plates, retrain_due

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _plates(*hours: float) -> list[CompletedPlate]:
    return [
        CompletedPlate(f"P{i}", T0 + timedelta(hours=h), f"/data/P{i}") for i, h in enumerate(hours)
    ]


def test_counts_only_plates_after_the_model() -> None:
    plates = _plates(1, 2, 5, 6, 7)
    d = retrain_due(plates, T0 + timedelta(hours=3), min_new_plates=3)
    assert d.due and [p.plate for p in d.new_plates] == ["P2", "P3", "P4"]
    d = retrain_due(plates, T0 + timedelta(hours=3), min_new_plates=4)
    assert not d.due and len(d.new_plates) == 3 and "wait" in d.reason


def test_boundary_and_no_model() -> None:
    plates = _plates(3, 4)
    # a plate completed exactly when the model was stored was part of it
    assert len(retrain_due(plates, T0 + timedelta(hours=3), min_new_plates=1).new_plates) == 1
    d = retrain_due(plates, None, min_new_plates=2)
    assert d.due and "ever" in d.reason
    d = retrain_due({p.plate: p for p in plates}, None, min_new_plates=3)
    assert not d.due


def test_sorted_oldest_first() -> None:
    plates = list(reversed(_plates(1, 2, 3)))
    assert [p.plate for p in retrain_due(plates, None, min_new_plates=1).new_plates] == [
        "P0",
        "P1",
        "P2",
    ]


def test_invalid_input() -> None:
    with pytest.raises(ValueError, match="min_new_plates"):
        retrain_due([], None, min_new_plates=0)
    with pytest.raises(ValueError, match="timezone"):
        retrain_due(_plates(1), datetime(2026, 1, 1), min_new_plates=1)


def test_completed_plates_from_manifests(s3_server, unique) -> None:  # type: ignore[no-untyped-def]
    from phagoflow.services.objectstore import ObjectStore

    store = ObjectStore(
        s3_server.endpoint,
        s3_server.access_key,
        s3_server.secret_key,
        bucket=f"trig-{unique}",
        retries=2,
        backoff_s=0.1,
    )
    store.ensure_bucket()
    at = T0.isoformat()
    store.put_json(
        "manifests/P1/ingest.json",
        {"plate": "P1", "plate_complete": True, "updated_at": at, "export_root": "/data/P1"},
    )
    store.put_json(
        "manifests/P2/ingest.json", {"plate": "P2", "plate_complete": False, "updated_at": at}
    )
    (p,) = completed_plates(store)
    assert (p.plate, p.completed_at, p.export_root) == ("P1", T0, "/data/P1")
