"""A real tansu broker: topic creation, keyed produce, group consume with explicit commit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from phagoflow import events as ev
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.stack import StackError, TansuBroker, candidate_port, kafka_api_versions_ok

#: Consumer settings that make a group join take ~2 s on tansu (see docs/streaming.md).
GROUP_SETTINGS: dict[str, Any] = {
    "enable_auto_commit": False,
    "max_poll_interval_ms": 10_000,
    "session_timeout_ms": 3_000,
    "heartbeat_interval_ms": 1_000,
    "auto_offset_reset": "earliest",
}


def _partitions(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(topics)}
    finally:
        admin.close()


def test_broker_answers_kafka_protocol(tansu_broker: TansuBroker) -> None:
    assert tansu_broker.url == f"tcp://127.0.0.1:{tansu_broker.port}"
    assert tansu_broker.bootstrap_servers == f"127.0.0.1:{tansu_broker.port}"
    assert kafka_api_versions_ok(tansu_broker.host, tansu_broker.port)
    # a dead endpoint: a port the OS just handed out and nobody listens on (refused connection)
    assert not kafka_api_versions_ok("127.0.0.1", candidate_port())


def test_create_topics_explicit_partitions_and_idempotent(tansu_broker: TansuBroker) -> None:
    bootstrap = tansu_broker.bootstrap_servers
    first = ev.create_topics(bootstrap)
    # The session broker may already hold the topics from another test: then nothing is new.
    again = ev.create_topics(bootstrap)
    assert again == []
    assert set(first) <= set(ev.ALL_TOPICS)
    assert _partitions(bootstrap, list(ev.ALL_TOPICS)) == dict.fromkeys(ev.ALL_TOPICS, 6)


def test_create_topics_creates_only_missing(tansu_broker: TansuBroker, unique: str) -> None:
    bootstrap = tansu_broker.bootstrap_servers
    a, b = f"t.{unique}.a", f"t.{unique}.b"
    assert ev.create_topics(bootstrap, 2, topics=[a]) == [a]
    assert ev.create_topics(bootstrap, 3, topics=[a, b]) == [b]
    assert _partitions(bootstrap, [a, b]) == {a: 2, b: 3}  # an existing topic is left as is


def test_create_topics_rejects_bad_partitions() -> None:
    with pytest.raises(ValueError, match="partitions"):
        ev.create_topics("127.0.0.1:1", 0)


def test_well_events_share_a_partition(tansu_broker: TansuBroker, unique: str) -> None:
    topic = f"t.{unique}.fields"
    ev.create_topics(tansu_broker.bootstrap_servers, topics=[topic])
    producer = KafkaProducer(bootstrap_servers=tansu_broker.bootstrap_servers, acks="all")
    try:
        parts = set()
        for field in (1, 2, 3, 4):
            event = ev.FieldAcquired(field=ev.field_id("P1", FieldKey(3, 4, field)))
            md = producer.send(topic, key=ev.event_key(event), value=ev.encode(event)).get(10)
            parts.add(md.partition)
        assert len(parts) == 1
    finally:
        producer.close()


def test_produce_and_consume_field_acquired_with_explicit_commit(
    tansu_broker: TansuBroker, unique: str
) -> None:
    bootstrap = tansu_broker.bootstrap_servers
    ev.create_topics(bootstrap)
    topic = ev.Topic.FIELDS_ACQUIRED.value
    plate = f"PLATE-{unique}"
    event = ev.FieldAcquired(
        header=ev.new_header("test"),
        field=ev.field_id(plate, FieldKey(row=2, col=7, field=5)),
        pixel_size_um=0.2,
        size_x=680,
        size_y=512,
    )
    event.channels["dsred"].object.key = ev.raw_object_key(plate, FieldKey(2, 7, 5), "dsred")

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        md = producer.send(
            topic, key=ev.event_key(event), value=ev.encode(event), headers=ev.kafka_headers(event)
        ).get(timeout=10)
    finally:
        producer.close()

    group = f"g-{unique}"
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, **GROUP_SETTINGS)
    try:
        found = None
        deadline = time.monotonic() + 25
        while found is None and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    if rec.key == ev.event_key(event):
                        found = rec
        assert found is not None, "event not consumed within 25 s"
        assert (found.partition, found.offset) == (md.partition, md.offset)
        assert ev.parse_well_key(found.key) == (plate, "r02c07")
        decoded = ev.decode_record(found.topic, found.value, found.headers)
        assert decoded == event
        tp = TopicPartition(topic, found.partition)
        # At-least-once: commit the *next* offset to read, only after the work is durable.
        consumer.commit({tp: OffsetAndMetadata(found.offset + 1, "", -1)})
        assert consumer.committed(tp) == found.offset + 1
    finally:
        consumer.close()

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    assert offsets[TopicPartition(topic, md.partition)].offset == md.offset + 1


def test_fixed_port_in_use_is_a_clear_error(tansu_broker: TansuBroker, tmp_path: Path) -> None:
    clash = TansuBroker(
        port=tansu_broker.port, log_path=tmp_path / "clash.log", startup_timeout_s=5
    )
    with pytest.raises(StackError, match="already in use"):
        clash.start()
    assert not clash.running
    assert kafka_api_versions_ok(tansu_broker.host, tansu_broker.port)  # the original still serves
