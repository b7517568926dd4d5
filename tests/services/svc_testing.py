"""Helpers for the streaming-service tests (imported by conftest.py and the tests).

Everything is real: tansu speaks the Kafka protocol, moto's server speaks S3. Services run in
threads of the test process (``Service.run_in_thread``) or are driven step by step.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from phagoflow import events as ev
from phagoflow.core.simulate import SimulatedPlate
from phagoflow.embedded.run import RunResult
from phagoflow.services.common import Service, ServiceSettings
from phagoflow.services.ingest import IngestService, IngestSettings
from phagoflow.services.metrics import MetricsService, MetricsSettings
from phagoflow.services.objectstore import ObjectStore
from phagoflow.stack import MotoS3Server, TansuBroker
from phagoflow.stack.local import ServiceProcess

S = TypeVar("S", bound=ServiceSettings)
T = TypeVar("T")
Svc = TypeVar("Svc", bound=Service)


@dataclass
class Record:
    """A decoded record of a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    event: Message | None  # None when the bytes do not decode (poison records)
    value: bytes = b""


@dataclass
class LocalStack:
    """Real broker + real S3 server + a bucket of its own, and services started on them."""

    broker: TansuBroker
    s3: MotoS3Server
    bucket: str
    tmp: Path
    services: list[tuple[Service, Any]] = field(default_factory=list)

    def common(self) -> dict[str, Any]:
        return {
            "kafka_bootstrap": self.broker.bootstrap_servers,
            "s3_endpoint": self.s3.endpoint,
            "s3_access_key": self.s3.access_key,
            "s3_secret_key": self.s3.secret_key,
            "bucket": self.bucket,
            "s3_retries": 3,
            "s3_retry_backoff_s": 0.2,
            "s3_timeout_s": 2.0,
            "log_json": True,
        }

    def env(self) -> dict[str, str]:
        """``PHAGOFLOW_*`` environment for service subprocesses."""
        return {f"PHAGOFLOW_{k.upper()}": str(v) for k, v in self.common().items()}

    def settings(self, cls: type[S], **overrides: Any) -> S:
        return cls(**{**self.common(), **overrides})

    def store(self) -> ObjectStore:
        return ObjectStore(
            self.s3.endpoint,
            self.s3.access_key,
            self.s3.secret_key,
            bucket=self.bucket,
            retries=3,
            backoff_s=0.2,
        )

    def start(self, service: Svc, timeout_s: float = 30.0, *, wait_ready: bool = True) -> Svc:
        """Run a service in a thread until the test ends; wait until it is ready."""
        thread = service.run_in_thread()
        self.services.append((service, thread))
        if wait_ready:
            assert service.wait_ready(timeout_s), f"{service.name} not ready in {timeout_s} s"
        return service

    def stop(self, service: Service, timeout_s: float = 30.0) -> None:
        for svc, thread in self.services:
            if svc is service:
                svc.stop()
                thread.join(timeout_s)
                assert not thread.is_alive(), f"{svc.name} did not stop in {timeout_s} s"

    def read(self, topic: str, *, min_count: int = 0, timeout_s: float = 20.0) -> list[Record]:
        """Every record of ``topic`` so far (waiting until at least ``min_count`` exist)."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.broker.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            ends = consumer.end_offsets(parts)
            deadline = time.monotonic() + timeout_s
            out: list[Record] = []
            while True:
                for tp, recs in consumer.poll(timeout_ms=200).items():
                    for r in recs:
                        try:
                            event = ev.decode_record(topic, r.value, list(r.headers or ()))
                        except ev.EventDecodeError:
                            event = None
                        out.append(Record(topic, tp.partition, r.offset, r.key, event, r.value))
                caught_up = all(consumer.position(tp) >= ends[tp] for tp in parts)
                if caught_up and len(out) >= min_count:
                    return sorted(out, key=lambda r: (r.partition, r.offset))
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{topic}: {len(out)} records after {timeout_s} s, wanted {min_count}"
                    )
                if caught_up:
                    ends = consumer.end_offsets(parts)
        finally:
            consumer.close()

    def processes(self, names: list[str], **env: str) -> dict[str, ServiceProcess]:
        """``phagoflow serve NAME`` processes (not started) on this broker and bucket.

        Each binds a port the OS picks (``PHAGOFLOW_<NAME>_PORT=0``) and reports it as
        ``.port`` once started; a restart after ``kill()`` reuses it. ``env`` adds
        ``PHAGOFLOW_*`` settings.
        """
        full = {
            **self.env(),
            "PHAGOFLOW_WATCH_DIR": str(self.tmp / "incoming"),
            "PHAGOFLOW_INGEST_POLL_S": "0.2",
            "PHAGOFLOW_INGEST_SETTLE_S": "0.3",
            "PHAGOFLOW_INGEST_QUIET_S": "2",
            "OMP_NUM_THREADS": "1",
            **env,
        }
        return {
            n: ServiceProcess(n, env=full, log_path=self.tmp / f"{n}.log", startup_timeout_s=90)
            for n in names
        }

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        producer = KafkaProducer(bootstrap_servers=self.broker.bootstrap_servers, acks="all")
        try:
            producer.send(topic, key=key, value=value).get(timeout=10)
        finally:
            producer.close()


def wait_for(check: Callable[[], T], *, timeout_s: float = 30.0, every_s: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail with the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout_s} s (last value {value!r})")
        time.sleep(every_s)


def harmony_files(export: Path) -> tuple[Path, dict[str, list[Path]]]:
    """The index and the channel files of each field (by field name) of a Harmony export."""
    index = next(p for p in export.iterdir() if p.name in ("Index.idx.xml", "Index.xml"))
    fields: dict[str, list[Path]] = {}
    for p in sorted(export.glob("*.tiff")):
        fields.setdefault(p.name.split("-")[0], []).append(p)
    return index, fields


def copy_into(files: list[Path], dest: Path) -> None:
    """Copy files as a microscope would: each written under a temporary name, then renamed."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        tmp = dest / f".{f.name}.part"
        shutil.copyfile(f, tmp)
        tmp.rename(dest / f.name)


def ingest_service(stack: LocalStack, watch: Path, **overrides: object) -> IngestService:
    options: dict[str, object] = {
        "watch_dir": watch,
        "ingest_poll_s": 0.05,
        "ingest_settle_s": 0.1,
        "ingest_quiet_s": 0.3,
        "ingest_missing_timeout_s": 30.0,
        **overrides,
    }
    settings = stack.settings(IngestSettings, **options)
    svc = IngestService(settings, http_port=0)
    svc.setup()
    return svc


def scan_until(svc: IngestService, check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "ingest did not get there in time"
        svc.scan()
        time.sleep(0.05)


def count(stack: LocalStack, topic: str) -> int:
    return len(stack.read(topic, timeout_s=5))


def field_names(records: list[Record]) -> list[str]:
    out = []
    for r in records:
        assert isinstance(r.event, ev.FieldAcquired)
        out.append(ev.field_key(r.event.field).name)
    return sorted(out)


# --------------------------------------------------------------------------- fault runs


#: Per-well numbers compared between a disturbed stack run and `phagoflow run`.
WellRow = tuple[str, str, int, int, int]  # well, method, fields, phagophores, autolysosomes


def reference_wells(reference: RunResult, methods: tuple[str, ...]) -> list[WellRow]:
    """The undisturbed per-well numbers of the embedded run, for ``methods``."""
    return sorted(
        (w.well, w.method, w.fields, w.phagophores, w.autolysosomes)
        for w in reference.wells
        if w.method in methods
    )


@dataclass
class PlateRun:
    """A plate streamed through services running in threads of the test process.

    ``start_pipeline`` starts ingest (watching ``tmp/incoming``) and metrics for ``methods``;
    the test adds the segmenting workers (and its fault). ``feed`` copies the plate field by
    field, ``wait_complete`` waits for the metrics API to say ``complete``, and ``check`` asserts
    what every fault test must hold: per-well counts equal the undisturbed run, every field has
    a result for each method, no field counted twice, no dead letter.
    """

    stack: LocalStack
    plate: SimulatedPlate
    methods: tuple[str, ...] = ("cip",)
    metrics: MetricsService | None = None
    #: Extra :class:`MetricsSettings` (e.g. ``{"metrics_ome_zarr": True}``).
    metrics_options: dict[str, Any] = field(default_factory=dict)

    def start_pipeline(self) -> None:
        watch = self.stack.tmp / "incoming"
        ingest = IngestService(
            self.stack.settings(
                IngestSettings,
                watch_dir=watch,
                ingest_poll_s=0.1,
                ingest_settle_s=0.2,
                ingest_quiet_s=1.0,
            ),
            http_port=0,
        )
        self.stack.start(ingest)
        settings = self.stack.settings(
            MetricsSettings, metrics_methods=list(self.methods), **self.metrics_options
        )
        self.metrics = self.stack.start(MetricsService(settings, http_port=0))

    def feed(self, names: list[str] | None = None, *, interval_s: float = 0.0) -> None:
        """Copy the index, then the files of each field in ``names`` (default all)."""
        index, fields = harmony_files(self.plate.export_dir)
        dest = self.stack.tmp / "incoming" / "plate" / "Images"
        if not (dest / index.name).exists():
            copy_into([index], dest)
        for name in sorted(fields) if names is None else names:
            copy_into(fields[name], dest)
            time.sleep(interval_s)

    def api(self, path: str) -> Any:
        import json
        import urllib.error
        import urllib.request

        assert self.metrics is not None
        url = f"http://127.0.0.1:{self.metrics.port}/api/v1/plates/{self.plate.plate_id}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError):
            return None

    def done(self, method: str) -> int:
        """Fields with a result for ``method`` so far (metrics' view)."""
        status = self.api("")
        return int(status["methods"][method]["done"]) if status else 0

    def wait_complete(self, timeout_s: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.api("")
            if status is not None and status["complete"]:
                return dict(status)
            assert time.monotonic() < deadline, f"plate not complete in {timeout_s} s: {status}"
            time.sleep(0.25)

    def check(self, reference: RunResult) -> None:
        status = self.wait_complete()
        n = len(harmony_files(self.plate.export_dir)[1])
        assert status["failed"] == [], status["failed"]
        for method in self.methods:
            assert status["methods"][method]["done"] == n, status["methods"]
        rows = self.api("/wells")
        got = sorted(
            (r["well"], r["method"], r["fields"], r["phagophores"], r["autolysosomes"])
            for r in rows
        )
        assert got == reference_wells(reference, self.methods)
        letters = self.stack.read(ev.Topic.DEADLETTER.value, timeout_s=5)
        assert letters == [], [r.event for r in letters]
