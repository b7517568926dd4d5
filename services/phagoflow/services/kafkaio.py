"""Kafka producer/consumer helpers and the at-least-once consumer loop with dead letters.

:class:`ConsumerService` is the one consumer loop of the services that consume a topic (cip
and inference record by record, metrics batch by batch): it polls a few records, hands each
to :meth:`ConsumerService.handle`, and commits ``offset + 1``
only after ``handle`` returned, i.e. after the results are durable (objects written, event
produced and acknowledged). A :class:`PermanentError` (undecodable bytes, missing or corrupt
object, unreadable image) sends the record to ``phagoflow.deadletter`` — the payload copied to
the object store, the source topic/partition/offset named — and processing continues. Any other
error (S3 or Kafka unavailable) is transient: nothing is committed, the consumer seeks back to
the record, waits and tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from google.protobuf.message import Message
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from phagoflow import events as ev
from phagoflow.services.common import Service, ServiceSettings, log_context
from phagoflow.services.objectstore import (
    ChecksumMismatch,
    ObjectMissing,
    ObjectStore,
    StoreUnavailable,
)

__all__ = [
    "ConsumerService",
    "PermanentError",
    "TransientError",
    "commit",
    "consumer_lag",
    "dead_letter",
    "deadletter_payload_key",
    "make_consumer",
    "make_producer",
    "publish",
]

logger = logging.getLogger(__name__)


class TransientError(RuntimeError):
    """A dependency is unavailable (e.g. Triton): retry the input later, never dead-letter it."""


class PermanentError(ValueError):
    """An input that will never succeed (bad bytes, missing object, unreadable image)."""

    def __init__(self, message: str, *, error_type: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type or type(self).__name__


def make_producer(settings: ServiceSettings, client_id: str) -> KafkaProducer:
    """A producer that waits for every broker acknowledgement (``acks=all``).

    Not idempotent (kafka-python 3 makes producers idempotent by default): a restarted broker
    does not know the producer id and answers every send with ``OutOfOrderSequenceNumber``
    until the process restarts. Order is kept by one request in flight, and every consumer
    de-duplicates on deterministic result identities, so a retried send is harmless.
    """
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        retries=5,
        linger_ms=5,
        max_in_flight_requests_per_connection=1,
        enable_idempotence=False,
        request_timeout_ms=15_000,
    )


def make_consumer(
    settings: ServiceSettings,
    group: str,
    topics: Sequence[str],
    *,
    client_id: str,
    max_poll_records: int = 4,
) -> KafkaConsumer:
    """A group consumer with manual commits, reading from the beginning when the group is new.

    The group timings come from the settings (short ones for the local tansu broker, see
    ``docs/streaming.md``: the broker holds a join for about half the session timeout).
    """
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_poll_records,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
    )
    consumer.subscribe(list(topics))
    return consumer


def publish(producer: KafkaProducer, topic: str, event: Message, *, timeout_s: float = 30.0) -> Any:
    """Produce one event keyed :func:`~phagoflow.events.event_key` and wait for the ack."""
    future = producer.send(
        topic,
        key=ev.event_key(event),
        value=ev.encode(event),
        headers=ev.kafka_headers(event),
    )
    return future.get(timeout=timeout_s)


def deadletter_payload_key(stage: str, topic: str, partition: int, offset: int) -> str:
    """``deadletter/<stage>/<topic>/<partition>/<offset>.bin`` (a replay overwrites it)."""
    return f"deadletter/{stage}/{topic or 'files'}/{partition}/{offset}.bin"


def dead_letter(
    producer: KafkaProducer,
    store: ObjectStore,
    *,
    stage: str,
    error_type: str,
    error: str,
    payload: bytes | None,
    payload_key: str,
    payload_type: str = "",
    source_topic: str = "",
    source_partition: int = -1,
    source_offset: int = -1,
    key: str = "",
    field: ev.FieldId | None = None,
    path: str = "",
    attempts: int = 1,
) -> ev.DeadLetter:
    """Copy the failed payload to the store and publish a :class:`DeadLetter` (acknowledged)."""
    letter = ev.DeadLetter(
        header=ev.new_header(stage),
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        key=key,
        stage=stage,
        error_type=error_type,
        error=error,
        payload_type=payload_type,
        path=path,
        attempts=attempts,
        failed_at=ev.to_timestamp(datetime.now(UTC)),
    )
    if payload is not None:
        letter.payload.CopyFrom(store.put_bytes(payload_key, payload))
    if field is not None:
        letter.field.CopyFrom(field)
    publish(producer, ev.Topic.DEADLETTER.value, letter)
    logger.error(
        "dead letter from %s: %s: %s (source %s[%d]@%d, key %r, path %r)",
        stage,
        error_type,
        error,
        source_topic or "-",
        source_partition,
        source_offset,
        key,
        path,
    )
    return letter


def commit(consumer: KafkaConsumer, offsets: dict[TopicPartition, OffsetAndMetadata]) -> bool:
    """Commit offsets; False (logged) when the group rebalanced meanwhile.

    The results are durable already; the records will simply be delivered again (to this or
    another member) and their deterministic keys make the replay harmless.
    """
    try:
        consumer.commit(offsets)
    except KafkaError as exc:
        logger.warning(
            "offset commit failed (%s: %s); records will be redelivered", type(exc).__name__, exc
        )
        return False
    return True


def consumer_lag(consumer: KafkaConsumer) -> dict[TopicPartition, int]:
    """Records not yet consumed per assigned partition (end offset - position)."""
    parts = list(consumer.assignment())
    if not parts:
        return {}
    ends = consumer.end_offsets(parts)
    lag: dict[TopicPartition, int] = {}
    for tp in parts:
        try:
            pos = consumer.position(tp)
        except Exception:
            continue
        lag[tp] = max(int(ends.get(tp, pos)) - int(pos), 0)
    return lag


def lag_gauge(registry: CollectorRegistry) -> Gauge:
    """``phagoflow_consumer_lag{group,topic,partition}``: records not yet consumed."""
    return Gauge(
        "phagoflow_consumer_lag",
        "Records not yet consumed, per topic and partition",
        ["group", "topic", "partition"],
        registry=registry,
    )


def record_lag(
    consumer: KafkaConsumer | None,
    gauge: Gauge,
    group: str,
    last_at: float,
    *,
    every_s: float = 5.0,
) -> float:
    """Set ``gauge`` from ``consumer``'s lag at most every ``every_s`` seconds.

    Returns the new "last updated" time (``time.monotonic()``), ``last_at`` when skipped. A failure
    to read the lag is logged at debug level only: a metric must not stop the service.
    """
    now = time.monotonic()
    if consumer is None or now - last_at < every_s:
        return last_at
    try:
        for tp, lag in consumer_lag(consumer).items():
            gauge.labels(group, tp.topic, str(tp.partition)).set(lag)
    except Exception as exc:
        logger.debug("consumer lag unavailable: %s", exc)
    return now


#: What :meth:`ConsumerService.poll` returns: records per partition, in offset order.
Batch = dict[TopicPartition, list[Any]]


class ConsumerService(Service):
    """A service consuming one or more topics at least once: the one consumer loop.

    Each :meth:`step` polls a batch and hands it to :meth:`process`. By default a batch is
    handled one record at a time: :meth:`handle` (to implement) processes a record durably and
    its offset + 1 is committed only then; a poison record is dead-lettered and committed, a
    transient failure seeks back to the record and waits. A service that must make a whole
    batch durable before committing (metrics: its snapshot) overrides :meth:`process` and uses
    :meth:`rewind` / :meth:`commit_batch`.

    Subclasses set :attr:`group` and :attr:`topics`.
    """

    group: ClassVar[str] = ""
    topics: ClassVar[tuple[str, ...]] = ()
    #: Records per poll: keep a poll's work well inside ``max_poll_interval_ms``.
    max_poll_records: ClassVar[int] = 2
    #: Seconds to wait before retrying a record after a transient error.
    retry_backoff_s: ClassVar[float] = 1.0
    #: Attempts before a record failing with an unexpected error is dead-lettered.
    max_unexpected_attempts: ClassVar[int] = 3
    #: Help of ``phagoflow_dead_letters_total{stage}`` (metrics counts the ones it sees).
    dead_letters_help: ClassVar[str] = "Inputs sent to phagoflow.deadletter, by stage"

    def __init__(self, settings: ServiceSettings, *, http_port: int | None = None) -> None:
        super().__init__(settings, http_port=http_port)
        self.store = ObjectStore.from_settings(settings)
        self.producer: KafkaProducer | None = None
        self.consumer: KafkaConsumer | None = None
        self.m_records = Counter(
            "phagoflow_records_total",
            "Kafka records handled, by outcome (ok, dead_letter, retry)",
            ["service", "topic", "outcome"],
            registry=self.registry,
        )
        self.m_dead = Counter(
            "phagoflow_dead_letters_total",
            self.dead_letters_help,
            ["stage"],
            registry=self.registry,
        )
        self.m_lag = lag_gauge(self.registry)
        self.m_handle = Histogram(
            "phagoflow_record_seconds",
            "Seconds to handle one record, end to end",
            ["service"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
        )
        self._last_lag = 0.0
        self._attempts: dict[tuple[str, int, int], int] = {}

    # ------------------------------------------------------------------ to implement

    def handle(self, record: Any) -> None:
        """Process one record durably; raise :class:`PermanentError` for a poison input.

        ``record`` is a kafka-python ``ConsumerRecord`` (``topic``, ``partition``, ``offset``,
        ``key``, ``value``, ``headers``). Required unless :meth:`process` is overridden.
        """
        raise NotImplementedError(f"{type(self).__name__} handles no single records")

    def restore(self) -> None:
        """Restore state before the first poll (metrics: its snapshot); nothing by default."""

    @property
    def poll_records(self) -> int:
        """Records per poll (:attr:`max_poll_records` unless a setting says otherwise)."""
        return self.max_poll_records

    # ------------------------------------------------------------------ lifecycle

    def setup(self) -> None:
        self.store.ensure_bucket()
        self.restore()
        self.producer = make_producer(self.settings, f"phagoflow-{self.name}")
        self.consumer = make_consumer(
            self.settings,
            self.group,
            self.topics,
            client_id=f"phagoflow-{self.name}",
            max_poll_records=self.poll_records,
        )

    def step(self) -> None:
        assert self.consumer is not None
        batch = self.consumer.poll(timeout_ms=500)
        self._update_lag()
        if batch:
            self.process(batch)

    def process(self, batch: Batch) -> None:
        """Handle and commit a batch record by record (the batch hook; see the class doc)."""
        assert self.consumer is not None
        # Stop between records, never in the middle of one; unhandled records are re-polled.
        for tp, records in batch.items():
            for rec in records:
                if self.stopping:
                    self.consumer.seek(tp, rec.offset)
                    self._seek_rest(batch, tp)
                    return
                if not self._handle_record(rec):
                    self.consumer.seek(tp, rec.offset)
                    self._seek_rest(batch, tp)
                    self.wait(self.retry_backoff_s)
                    return

    def rewind(self, batch: Batch) -> None:
        """Seek every partition of ``batch`` back to its first record (nothing committed)."""
        assert self.consumer is not None
        for tp, records in batch.items():
            if records:
                self.consumer.seek(tp, records[0].offset)

    def commit_batch(self, batch: Batch) -> bool:
        """Commit the last offset + 1 of every partition of ``batch`` (see :func:`commit`)."""
        assert self.consumer is not None
        offsets = {
            tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)
            for tp, records in batch.items()
            if records
        }
        return commit(self.consumer, offsets)

    def _seek_rest(self, batch: Batch, done_upto: TopicPartition) -> None:
        """Seek partitions after ``done_upto`` back to their first unhandled record."""
        assert self.consumer is not None
        after = False
        for tp, records in batch.items():
            if after and records:
                self.consumer.seek(tp, records[0].offset)
            if tp == done_upto:
                after = True

    def _handle_record(self, rec: Any) -> bool:
        """Handle and commit one record; False when it must be retried (transient error)."""
        assert self.consumer is not None and self.producer is not None
        tp = TopicPartition(rec.topic, rec.partition)
        t0 = time.perf_counter()
        with log_context(topic=rec.topic):
            try:
                self.handle(rec)
                outcome: str | None = "ok"
            except (PermanentError, ev.EventDecodeError, ObjectMissing, ChecksumMismatch) as exc:
                outcome = self._dead_letter_or_retry(rec, exc)
            except Exception as exc:
                outcome = self._on_failure(rec, exc)
        if outcome is None:
            return False
        self._attempts.pop((rec.topic, rec.partition, rec.offset), None)
        commit(self.consumer, {tp: OffsetAndMetadata(rec.offset + 1, "", -1)})
        self.m_records.labels(self.name, rec.topic, outcome).inc()
        self.m_handle.labels(self.name).observe(time.perf_counter() - t0)
        return True

    def _dead_letter_or_retry(self, rec: Any, exc: Exception) -> str | None:
        """Dead-letter a poison record: ``"dead_letter"``, or None (retry) when the store is
        away."""
        try:
            self._dead_letter(rec, exc)
        except (StoreUnavailable, OSError) as dl_exc:
            logger.warning("cannot dead-letter %s@%d yet: %s", rec.topic, rec.offset, dl_exc)
            self.m_records.labels(self.name, rec.topic, "retry").inc()
            return None
        return "dead_letter"

    def _on_failure(self, rec: Any, exc: Exception) -> str | None:
        """A failure that is not a poison input: retry (None), or dead-letter once it repeats.

        An unexpected error (not a known outage) that repeats
        :attr:`max_unexpected_attempts` times is a poison input, not an outage.
        """
        known = isinstance(exc, TransientError | StoreUnavailable | KafkaError | OSError)
        ident = (rec.topic, rec.partition, rec.offset)
        self._attempts[ident] = attempts = self._attempts.get(ident, 0) + 1
        if not known and attempts >= self.max_unexpected_attempts:
            logger.exception("giving up on %s[%d]@%d", *ident)
            try:
                self._dead_letter(rec, exc, attempts=attempts)
            except (StoreUnavailable, OSError, KafkaError):
                return None
            return "dead_letter"
        logger.warning(
            "%s failure on %s[%d]@%d (%s: %s); will retry",
            "transient" if known else "unexpected",
            rec.topic,
            rec.partition,
            rec.offset,
            type(exc).__name__,
            exc,
        )
        self.m_records.labels(self.name, rec.topic, "retry").inc()
        return None

    def _dead_letter(self, rec: Any, exc: Exception, *, attempts: int = 1) -> None:
        assert self.producer is not None
        field: ev.FieldId | None = None
        try:
            event = ev.decode_record(rec.topic, rec.value, list(rec.headers or ()))
        except (ev.EventDecodeError, ValueError):
            event = None
        if isinstance(event, ev.FieldAcquired | ev.MaskReady) and event.HasField("field"):
            field = event.field
        error_type = getattr(exc, "error_type", type(exc).__name__)
        dead_letter(
            self.producer,
            self.store,
            stage=self.name,
            error_type=str(error_type),
            error=str(exc),
            payload=bytes(rec.value) if rec.value is not None else b"",
            payload_key=deadletter_payload_key(self.name, rec.topic, rec.partition, rec.offset),
            payload_type=ev.TOPIC_EVENT_TYPES[rec.topic].DESCRIPTOR.full_name
            if rec.topic in ev.TOPIC_EVENT_TYPES
            else "",
            source_topic=rec.topic,
            source_partition=rec.partition,
            source_offset=rec.offset,
            key=rec.key.decode(errors="replace") if rec.key else "",
            field=field,
            attempts=attempts,
        )
        self.m_dead.labels(self.name).inc()

    def _update_lag(self) -> None:
        self._last_lag = record_lag(self.consumer, self.m_lag, self.group, self._last_lag)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close(autocommit=False)
            self.consumer = None
        if self.producer is not None:
            self.producer.flush(timeout=10)
            self.producer.close(timeout=10)
            self.producer = None
