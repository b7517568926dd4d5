"""create_topics argument checks and broker-error handling (a real broker: tests/stack)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from phagoflow import events as ev


class FakeAdmin:
    """Stands in for kafka.KafkaAdminClient: records requests, answers with given error codes."""

    instances: ClassVar[list[FakeAdmin]] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.closed = False
        self.requests: list[dict[str, Any]] = []
        FakeAdmin.instances.append(self)

    existing: ClassVar[tuple[str, ...]] = ()
    codes: ClassVar[dict[str, int]] = {}

    def list_topics(self) -> list[str]:
        return list(self.existing)

    def create_topics(self, spec: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.requests.append({"spec": spec, **kw})
        return {
            "topics": [
                {"name": n, "error_code": self.codes.get(n, 0), "error_message": "boom"}
                for n in spec
            ]
        }

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_admin(monkeypatch: pytest.MonkeyPatch) -> type[FakeAdmin]:
    FakeAdmin.instances = []
    FakeAdmin.existing = ()
    FakeAdmin.codes = {}
    monkeypatch.setattr("kafka.KafkaAdminClient", FakeAdmin)
    return FakeAdmin


def test_requests_explicit_partitions_for_missing_topics_only(fake_admin: type[FakeAdmin]) -> None:
    fake_admin.existing = ("phagoflow.wells",)
    created = ev.create_topics("h:1", 4, replication_factor=2)
    assert created == [t for t in ev.ALL_TOPICS if t != "phagoflow.wells"]
    (admin,) = fake_admin.instances
    (request,) = admin.requests
    assert set(request["spec"]) == set(created)
    assert all(
        v == {"num_partitions": 4, "replication_factor": 2} for v in request["spec"].values()
    )
    assert request["raise_errors"] is False
    assert admin.closed


def test_all_existing_makes_no_request(fake_admin: type[FakeAdmin]) -> None:
    fake_admin.existing = ev.ALL_TOPICS
    assert ev.create_topics("h:1") == []
    assert fake_admin.instances[0].requests == []
    assert fake_admin.instances[0].closed


def test_already_exists_race_is_fine_other_errors_raise(fake_admin: type[FakeAdmin]) -> None:
    fake_admin.codes = {"phagoflow.wells": 36}
    assert "phagoflow.wells" not in ev.create_topics("h:1")
    fake_admin.codes = {"phagoflow.plates": 38}  # INVALID_REPLICATION_FACTOR
    with pytest.raises(RuntimeError, match=r"phagoflow.plates: \[38\]"):
        ev.create_topics("h:1")
    assert fake_admin.instances[-1].closed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"partitions": 0}, "partitions"),
        ({"replication_factor": 0}, "replication_factor"),
        ({"topics": ["bad topic!"]}, "invalid Kafka topic"),
        ({"topics": [""]}, "invalid Kafka topic"),
        ({"topics": ["x" * 250]}, "invalid Kafka topic"),
        ({"topics": [".."]}, "invalid Kafka topic"),
    ],
)
def test_rejects_bad_arguments_before_connecting(
    fake_admin: type[FakeAdmin], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        ev.create_topics("h:1", **kwargs)
    assert fake_admin.instances == []
