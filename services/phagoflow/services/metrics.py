"""metrics: per-well counts from ``MaskReady``, ``WellComplete``, reports, Prometheus, JSON API.

``phagoflow serve metrics`` (consumer group ``metrics``) consumes ``phagoflow.masks.cip``,
``phagoflow.masks.cdl``, ``phagoflow.plates`` and ``phagoflow.deadletter``:

- every ``MaskReady`` is stored under its field and method, de-duplicated on
  :func:`~phagoflow.events.result_identity` (a replay overwrites, never counts twice); the
  per-field counts are the core's :class:`~phagoflow.core.counting.FieldCounts`, and wells are
  summarised with :func:`phagoflow.core.counting.aggregate_wells`, exactly as ``phagoflow run``;
- a well whose expected fields all have a result (or failed) for a method gets one
  ``WellComplete``; a plate is complete once ingest published ``PlateComplete`` and every
  published field has a result or a failure for every method in ``PHAGOFLOW_METRICS_METHODS``;
  then ``reports/<plate>/wells.csv`` and ``reports/<plate>/plate_heatmap.png`` are written with
  the embedded runner's writers — and, when ingest found a plate map beside the export
  (``PlateComplete.plate_map``), ``plate_stats.csv``, ``hits.csv`` (and ``dose_response.csv``)
  with the plate statistics of ``phagoflow run --plate-map``, exported as
  ``phagoflow_plate_z_prime`` and ``phagoflow_plate_hits``;
- state survives restarts: after each batch the state is written to
  ``state/metrics/snapshot.json`` in the store and only then are the offsets committed, so a
  restart restores the snapshot and replays at most the records after it (de-duplicated).

HTTP on ``PHAGOFLOW_METRICS_PORT`` (default 8400): ``/healthz``, ``/readyz``, ``/metrics`` and
``GET /api/v1/plates``, ``/api/v1/plates/{plate}``, ``/api/v1/plates/{plate}/wells``.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import Field

from phagoflow import events as ev
from phagoflow.core.cells import FieldCells
from phagoflow.core.counting import FieldCounts, WellSummary, aggregate_wells, available_readouts
from phagoflow.core.opera.catalogue import FieldKey, PlateCatalogue
from phagoflow.core.qc import well_disagreement
from phagoflow.core.screening import ScreeningParameters
from phagoflow.embedded.screen import (
    Screen,
    load_plate_map,
    screen_statistics,
    statistics_record,
    write_screen_tables,
)
from phagoflow.services.common import ApiResponse, ServiceSettings, log_context
from phagoflow.services.kafkaio import (
    Batch,
    ConsumerService,
    dead_letter,
    deadletter_payload_key,
    publish,
)

__all__ = ["MetricsService", "MetricsSettings", "MetricsState", "PlateState"]

logger = logging.getLogger(__name__)

SNAPSHOT_KEY = "state/metrics/snapshot.json"
#: Dead-letter stage whose failures count against a method (ingest failures count against all).
_METHOD_STAGE = {"cip": "cip", "cdl": "inference", "mdl": "inference"}
_METHOD_ORDER = ("cip", "cdl", "mdl")


class MetricsSettings(ServiceSettings):
    """Settings of ``phagoflow serve metrics``.

    Attributes
    ----------
    metrics_port : int
        Port of ``/metrics``, ``/healthz``, ``/readyz`` and the JSON API
        (``PHAGOFLOW_METRICS_PORT``, default 8400).
    metrics_methods : list of str
        Methods a plate needs before it is complete (``PHAGOFLOW_METRICS_METHODS='["cip","cdl"]'``).
    metrics_keep_plates : int
        Completed plates kept in memory and in the snapshot (oldest reported ones are dropped;
        their reports stay in the store).
    metrics_max_poll_records : int
        Records per poll (one snapshot and commit per poll).
    screening : ScreeningParameters
        Plate statistics of a plate with a map (``PHAGOFLOW_SCREENING__*``, the same variables
        as ``phagoflow run``).
    metrics_ome_zarr : bool
        Also write each complete plate as an OME-Zarr HCS plate,
        ``reports/<plate>/<plate>.ome.zarr/`` (what ``phagoflow run --ome-zarr`` writes;
        :mod:`phagoflow.services.plate_export`).
    """

    metrics_port: int = Field(default=8400, ge=0, le=65535)
    metrics_methods: list[str] = Field(default_factory=lambda: ["cip"])
    metrics_keep_plates: int = Field(default=50, ge=1)
    metrics_max_poll_records: int = Field(default=200, ge=1)
    screening: ScreeningParameters = ScreeningParameters()
    metrics_ome_zarr: bool = False

    @property
    def http_port(self) -> int:
        return self.metrics_port


# --------------------------------------------------------------------------- state


@dataclass
class FieldResult:
    """One field's result for one method."""

    identity: str
    model_version: str
    counts: FieldCounts
    acquired_at: str | None = None


@dataclass
class PlateState:
    """Everything metrics knows about one plate."""

    plate: str
    fields_expected: int = 0
    well_expected: dict[str, int] = field(default_factory=dict)
    results: dict[str, FieldResult] = field(default_factory=dict)  # "<field>/<method>"
    failures: dict[str, dict[str, str]] = field(default_factory=dict)  # "<stage>/<field|path>"
    ingest: dict[str, Any] | None = None  # PlateComplete summary
    wells_done: list[str] = field(default_factory=list)  # "<well>/<method>"
    reports: dict[str, str] = field(default_factory=dict)
    #: Plate statistics of a mapped plate, per method and readout (``statistics_record``).
    statistics: dict[str, Any] | None = None
    complete_at: str | None = None
    first_seen: float = field(default_factory=time.time)

    # ------------------------------------------------------------------ views

    def counts(self, method: str | None = None) -> list[FieldCounts]:
        return [r.counts for r in self.results.values() if method in (None, r.counts.method)]

    def methods_seen(self) -> list[str]:
        seen = {r.counts.method for r in self.results.values()}
        return [m for m in _METHOD_ORDER if m in seen] + sorted(seen - set(_METHOD_ORDER))

    def failed_fields(self, method: str, well: str | None = None) -> set[str]:
        """Fields failed for ``method`` (at ingest or at the method's stage)."""
        stages = {"ingest", _METHOD_STAGE.get(method, method)}
        return {
            f["field"]
            for f in self.failures.values()
            if f["field"] and f["stage"] in stages and well in (None, f["well"])
        }

    def done_fields(self, method: str, well: str | None = None) -> set[str]:
        return {
            r.counts.key.name
            for r in self.results.values()
            if r.counts.method == method and well in (None, r.counts.key.well)
        }

    def method_status(self, method: str) -> dict[str, Any]:
        done = self.done_fields(method)
        failed = self.failed_fields(method) - done
        ingest_failed = self.failed_fields("ingest")
        published = int(self.ingest["fields_published"]) if self.ingest is not None else None
        expected = self.fields_expected
        complete = published is not None and len(done | (failed - ingest_failed)) >= published
        return {
            "expected": expected,
            "published": published,
            "done": len(done),
            "failed": len(failed),
            "complete": complete,
        }

    def well_complete(self, well: str, method: str) -> bool:
        expected = self.well_expected.get(well, 0)
        resolved = self.done_fields(method, well) | self.failed_fields(method, well)
        return expected > 0 and len(resolved) >= expected

    # ------------------------------------------------------------------ (de)serialisation

    def to_json(self) -> dict[str, Any]:
        return {
            "plate": self.plate,
            "fields_expected": self.fields_expected,
            "well_expected": self.well_expected,
            "results": {
                k: {
                    "identity": r.identity,
                    "model_version": r.model_version,
                    "acquired_at": r.acquired_at,
                    "counts": r.counts.as_row(),
                    "cells": None if r.counts.cells is None else asdict(r.counts.cells),
                }
                for k, r in self.results.items()
            },
            "failures": self.failures,
            "ingest": self.ingest,
            "wells_done": self.wells_done,
            "reports": self.reports,
            "statistics": self.statistics,
            "complete_at": self.complete_at,
            "first_seen": self.first_seen,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PlateState:
        results = {}
        for k, r in doc.get("results", {}).items():
            c = r["counts"]
            counts = FieldCounts(
                plate=c["plate"],
                key=FieldKey.parse(c["field"]),
                method=c["method"],
                phagophores=int(c["phagophores"]),
                autolysosomes=int(c["autolysosomes"]),
                phagophore_area_um2=float(c["phagophore_area_um2"]),
                autolysosome_area_um2=float(c["autolysosome_area_um2"]),
                cells=FieldCells(**r["cells"]) if r.get("cells") else None,
            )
            results[k] = FieldResult(r["identity"], r["model_version"], counts, r["acquired_at"])
        return cls(
            plate=doc["plate"],
            fields_expected=int(doc.get("fields_expected", 0)),
            well_expected={k: int(v) for k, v in doc.get("well_expected", {}).items()},
            results=results,
            failures=doc.get("failures", {}),
            ingest=doc.get("ingest"),
            wells_done=list(doc.get("wells_done", [])),
            reports=dict(doc.get("reports", {})),
            statistics=doc.get("statistics"),
            complete_at=doc.get("complete_at"),
            first_seen=float(doc.get("first_seen", time.time())),
        )


class MetricsState:
    """All plates, with the rules that turn events into per-well results (thread-safe)."""

    def __init__(self, methods: Sequence[str]) -> None:
        self.methods = tuple(methods)
        self.plates: dict[str, PlateState] = {}
        self.lock = threading.RLock()

    def plate(self, plate: str) -> PlateState:
        state = self.plates.get(plate)
        if state is None:
            state = self.plates[plate] = PlateState(plate)
        return state

    def apply_mask_ready(self, event: ev.MaskReady) -> FieldResult | None:
        """Record a result; returns it when new (``None`` for a replay of a known identity)."""
        counts = ev.field_counts_from_mask_ready(event)
        identity = ev.result_identity(event.field, event.method, event.model_version)
        with self.lock:
            state = self.plate(counts.plate)
            slot = f"{counts.key.name}/{counts.method}"
            old = state.results.get(slot)
            if event.well_fields_expected:
                state.well_expected[counts.key.well] = int(event.well_fields_expected)
            if event.plate_fields_expected:
                state.fields_expected = max(state.fields_expected, int(event.plate_fields_expected))
            acquired = (
                ev.from_timestamp(event.acquired_at).isoformat()
                if event.HasField("acquired_at")
                else None
            )
            result = FieldResult(identity, event.model_version, counts, acquired)
            state.results[slot] = result  # a replay overwrites the same slot
            return None if old is not None and old.identity == identity else result

    def apply_plate_complete(self, event: ev.PlateComplete) -> None:
        with self.lock:
            state = self.plate(event.plate)
            state.fields_expected = max(state.fields_expected, int(event.fields_expected))
            state.ingest = {
                "measurement_id": event.measurement_id,
                "export_format": event.export_format,
                "plate_rows": int(event.plate_rows),
                "plate_columns": int(event.plate_columns),
                "fields_expected": int(event.fields_expected),
                "fields_published": int(event.fields_published),
                "manifest": event.manifest.key,
                "plate_map": event.plate_map.key if event.HasField("plate_map") else None,
                "plate_map_error": event.plate_map_error,
            }
            for f in event.failed:
                self._add_failure(
                    state, f.field if f.HasField("field") else None, f.stage, f.reason, f.path
                )

    def apply_dead_letter(self, event: ev.DeadLetter) -> None:
        if not event.HasField("field") or not event.field.plate:
            return
        with self.lock:
            state = self.plate(event.field.plate)
            self._add_failure(state, event.field, event.stage, event.error, event.path)

    @staticmethod
    def _add_failure(
        state: PlateState, fid: ev.FieldId | None, stage: str, reason: str, path: str
    ) -> None:
        name = ""
        well = ""
        if fid is not None and fid.well:
            well = fid.well
            try:
                name = ev.field_key(fid).name
            except ValueError:
                name = ""
        state.failures[f"{stage}/{name or path}"] = {
            "field": name,
            "well": well,
            "stage": stage,
            "reason": reason,
            "path": path,
        }

    # ------------------------------------------------------------------ derived views

    def wells(self, plate: str) -> list[WellSummary]:
        """Per-well summaries (core :func:`aggregate_wells`) of every method, partial wells too."""
        with self.lock:
            state = self.plates[plate]
            return aggregate_wells(state.counts())

    def complete(self, plate: str) -> bool:
        with self.lock:
            state = self.plates[plate]
            return state.ingest is not None and all(
                state.method_status(m)["complete"] for m in self.methods
            )

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {"version": 1, "plates": {p: s.to_json() for p, s in self.plates.items()}}

    @classmethod
    def from_json(cls, doc: dict[str, Any], methods: Sequence[str]) -> MetricsState:
        state = cls(methods)
        for plate, p in doc.get("plates", {}).items():
            state.plates[plate] = PlateState.from_json(p)
        return state


# --------------------------------------------------------------------------- Prometheus


class _StateCollector(Collector):
    """Per-well gauges generated from the state at scrape time (dropped plates vanish)."""

    def __init__(self, state_of: Any) -> None:
        self._state_of = state_of

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state: MetricsState = self._state_of()
        g = {key: GaugeMetricFamily(name, doc, labels=labels) for key, name, doc, labels in _GAUGES}
        with state.lock:
            for plate in list(state.plates):
                _add_plate(g, state, plate)
        yield from g.values()


#: The per-scrape gauges: key, name, help, labels (in exposition order).
_GAUGES: tuple[tuple[str, str, str, list[str]], ...] = (
    (
        "objects",
        "phagoflow_well_objects",
        "Objects counted in a well (total over its fields), per method and class",
        ["plate", "well", "method", "class"],
    ),
    (
        "fields",
        "phagoflow_well_fields",
        "Fields of a well with a result, per method",
        ["plate", "well", "method"],
    ),
    (
        "disagreement",
        "phagoflow_cip_cdl_disagreement",
        "Per-well CIP-vs-CDL relative difference of the total counts (|a-b|/mean)",
        ["plate", "well", "class"],
    ),
    (
        "expected",
        "phagoflow_plate_fields_expected",
        "Fields the plate's export announces (0 until the first field arrives)",
        ["plate"],
    ),
    (
        "plates",
        "phagoflow_plate_fields_done",
        "Fields with a result per plate and method",
        ["plate", "method"],
    ),
    ("complete", "phagoflow_plate_complete", "1 when the plate is complete", ["plate"]),
    (
        "z_prime",
        "phagoflow_plate_z_prime",
        "Z' of a mapped plate from its control wells, per method and readout",
        ["plate", "method", "readout"],
    ),
    (
        "hits",
        "phagoflow_plate_hits",
        "Hit wells of a mapped plate (robust z of the hit readout), per method",
        ["plate", "method"],
    ),
)


def _add_plate(g: dict[str, GaugeMetricFamily], state: MetricsState, plate: str) -> None:
    """One plate's samples of every gauge of :data:`_GAUGES` (under ``state.lock``)."""
    wells = state.wells(plate)
    for w in wells:
        g["objects"].add_metric([plate, w.well, w.method, "phagophore"], w.phagophores)
        g["objects"].add_metric([plate, w.well, w.method, "autolysosome"], w.autolysosomes)
        g["fields"].add_metric([plate, w.well, w.method], w.fields)
    for d in well_disagreement(wells, "cip", "cdl"):
        for cls, value in (("phagophore", d.phagophores), ("autolysosome", d.autolysosomes)):
            if math.isfinite(value):
                g["disagreement"].add_metric([plate, d.well, cls], value)
    ps = state.plates[plate]
    g["expected"].add_metric([plate], ps.fields_expected)
    for m in ps.methods_seen():
        g["plates"].add_metric([plate, m], len(ps.done_fields(m)))
    g["complete"].add_metric([plate], 1.0 if ps.complete_at else 0.0)
    _add_statistics(g["z_prime"], g["hits"], plate, ps.statistics)


def _add_statistics(
    z_prime: GaugeMetricFamily,
    hits: GaugeMetricFamily,
    plate: str,
    statistics: dict[str, Any] | None,
) -> None:
    """The plate-statistics gauges of one plate (nothing for a plate without a map)."""
    if not statistics:
        return
    for s in statistics["results"]:
        if s["z_prime"] is not None:
            z_prime.add_metric([plate, s["method"], s["readout"]], float(s["z_prime"]))
        if s["readout"] == statistics["hit_readout"]:
            hits.add_metric([plate, s["method"]], float(len(s["hits"])))


# --------------------------------------------------------------------------- the service


def _stub_catalogue(
    plate: str, ingest: dict[str, Any], wells: Sequence[WellSummary] = ()
) -> PlateCatalogue:
    """The plate geometry (and the wells with results) the embedded writers need; no files."""
    return PlateCatalogue(
        plate_id=plate,
        measurement_id=str(ingest.get("measurement_id", "")),
        export_format=str(ingest.get("export_format", "")),
        format_version="",
        root=Path("."),
        index_path=Path("."),
        index_sha256="",
        plate_rows=int(ingest.get("plate_rows") or 8),
        plate_columns=int(ingest.get("plate_columns") or 12),
        channels=(),
        pixel_size_um=float("nan"),
        size_yx=(0, 0),
        fields=(),
        wells=tuple(sorted({w.well for w in wells})),
    )


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsService(ConsumerService):
    """Aggregation, ``WellComplete``, reports, Prometheus and the JSON API.

    The one consumer loop (:class:`~phagoflow.services.kafkaio.ConsumerService`) with a batch
    hook, :meth:`process`: a batch is applied, its wells and plates completed and the state
    snapshot written before its offsets are committed.
    """

    name = "metrics"
    group = "metrics"
    topics = (
        ev.Topic.MASKS_CIP.value,
        ev.Topic.MASKS_CDL.value,
        ev.Topic.PLATES.value,
        ev.Topic.DEADLETTER.value,
    )
    dead_letters_help = "Dead letters seen on phagoflow.deadletter, by stage"
    settings: MetricsSettings

    def __init__(self, settings: MetricsSettings, *, http_port: int | None = None) -> None:
        super().__init__(settings, http_port=http_port)
        self.state = MetricsState(settings.metrics_methods)
        r = self.registry
        self.m_fields = Counter(
            "phagoflow_fields_processed_total",
            "Distinct field results received, per method",
            ["method"],
            registry=r,
        )
        self.m_replays = Counter(
            "phagoflow_duplicate_results_total",
            "MaskReady events of an already known result identity (replays, ignored)",
            ["method"],
            registry=r,
        )
        self.m_stage = Histogram(
            "phagoflow_stage_seconds",
            "Seconds per processing stage, as reported in MaskReady",
            ["stage", "method"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
        )
        self.m_latency = Histogram(
            "phagoflow_acquisition_to_result_seconds",
            "Seconds from field acquisition (file time) to its result reaching metrics",
            ["method"],
            registry=r,
            buckets=(0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300),
        )
        self.m_wells = Counter(
            "phagoflow_wells_complete_total",
            "WellComplete events published",
            ["method"],
            registry=r,
        )
        self.m_plates = Counter(
            "phagoflow_plates_reported_total", "Plates completed and reported", registry=r
        )
        r.register(_StateCollector(lambda: self.state))

    # ------------------------------------------------------------------ lifecycle

    @property
    def poll_records(self) -> int:
        return self.settings.metrics_max_poll_records

    def restore(self) -> None:
        """The state of the last snapshot, before the first poll."""
        doc = self.store.get_json(SNAPSHOT_KEY)
        if isinstance(doc, dict):
            restored = MetricsState.from_json(doc, self.settings.metrics_methods)
            with self.state.lock:
                self.state.plates = restored.plates
            logger.info("state restored from %s: %d plate(s)", SNAPSHOT_KEY, len(restored.plates))

    def process(self, batch: Batch) -> None:
        """Apply a batch, complete wells and plates, snapshot, and only then commit it."""
        touched: set[str] = set()
        try:
            for records in batch.values():
                for rec in records:
                    plate = self._apply(rec)
                    if plate:
                        touched.add(plate)
            self._after_batch(touched)
            self.store.put_json(SNAPSHOT_KEY, self.state.to_json())
        except Exception as exc:  # S3/Kafka down: nothing committed, the batch is replayed
            logger.warning(
                "cannot persist state (%s: %s); replaying the batch", type(exc).__name__, exc
            )
            self.rewind(batch)
            self.wait(1.0)
            return
        self.commit_batch(batch)

    # ------------------------------------------------------------------ records

    def _apply(self, rec: Any) -> str | None:
        """Apply one record to the state; returns the plate it touched."""
        try:
            event = ev.decode_record(rec.topic, rec.value, list(rec.headers or ()))
            if isinstance(event, ev.MaskReady):
                return self._on_mask_ready(event)
            if isinstance(event, ev.PlateComplete):
                self.state.apply_plate_complete(event)
                return event.plate
            if isinstance(event, ev.DeadLetter):
                self.m_dead.labels(event.stage or "unknown").inc()
                self.state.apply_dead_letter(event)
                return event.field.plate or None
        except (ev.EventDecodeError, ValueError) as exc:
            if rec.topic == ev.Topic.DEADLETTER.value:
                logger.error("undecodable dead letter %s@%d: %s", rec.topic, rec.offset, exc)
                return None
            assert self.producer is not None
            dead_letter(
                self.producer,
                self.store,
                stage="metrics",
                error_type=type(exc).__name__,
                error=str(exc),
                payload=bytes(rec.value or b""),
                payload_key=deadletter_payload_key("metrics", rec.topic, rec.partition, rec.offset),
                source_topic=rec.topic,
                source_partition=rec.partition,
                source_offset=rec.offset,
                key=rec.key.decode(errors="replace") if rec.key else "",
            )
        return None

    def _on_mask_ready(self, event: ev.MaskReady) -> str:
        method = ev.method_name(event.method)
        new = self.state.apply_mask_ready(event)
        if new is None:
            self.m_replays.labels(method).inc()
            return event.field.plate
        self.m_fields.labels(method).inc()
        for stage, seconds in event.stage_seconds.items():
            self.m_stage.labels(stage, method).observe(seconds)
        if event.HasField("acquired_at"):
            latency = (datetime.now(UTC) - ev.from_timestamp(event.acquired_at)).total_seconds()
            self.m_latency.labels(method).observe(max(latency, 0.0))
        return event.field.plate

    # ------------------------------------------------------------------ completion

    def _after_batch(self, plates: Iterable[str]) -> None:
        for plate in sorted(plates):
            with log_context(plate=plate):
                self._wells_complete(plate)
                if self.state.complete(plate) and self.state.plates[plate].complete_at is None:
                    self._report(plate)
        self._evict()

    def _wells_complete(self, plate: str) -> None:
        assert self.producer is not None
        state = self.state.plates[plate]
        summaries = {(w.well, w.method): w for w in self.state.wells(plate)}
        for (well, method), summary in sorted(summaries.items()):
            tag = f"{well}/{method}"
            if tag in state.wells_done or not state.well_complete(well, method):
                continue
            versions = sorted(
                {
                    r.model_version
                    for r in state.results.values()
                    if r.counts.method == method and r.counts.key.well == well
                }
            )
            failed = [
                ev.FieldFailure(
                    field=ev.field_id(plate, FieldKey.parse(f["field"])),
                    path=f["path"],
                    stage=f["stage"],
                    reason=f["reason"],
                )
                for f in state.failures.values()
                if f["well"] == well and f["field"] in state.failed_fields(method, well)
            ]
            event = ev.well_complete_from_summary(
                summary,
                header=ev.new_header("metrics"),
                model_version=",".join(versions),
                failed=failed,
                completed_at=datetime.now(UTC),
            )
            publish(self.producer, ev.Topic.WELLS.value, event)
            state.wells_done.append(tag)
            self.m_wells.labels(method).inc()
            logger.info("well %s complete for %s", well, method, extra={"well": well})

    def _report(self, plate: str) -> None:
        """wells.csv and the plate heat-map, with the embedded runner's writers."""
        from phagoflow.embedded.report import write_heatmap
        from phagoflow.embedded.run import write_wells_csv

        state = self.state.plates[plate]
        assert state.ingest is not None
        wells = self.state.wells(plate)
        methods = state.methods_seen()
        catalogue = _stub_catalogue(plate, state.ingest, wells)
        with tempfile.TemporaryDirectory(prefix="phagoflow-metrics-") as tmp:
            out = Path(tmp)
            screen = self._screen(plate, out, catalogue, wells, methods)
            write_wells_csv(out / "wells.csv", wells, methods, screen=screen)
            write_heatmap(out / "plate_heatmap.png", catalogue, wells, methods)
            written = [out / "wells.csv", out / "plate_heatmap.png"]
            if screen is not None:
                written += write_screen_tables(out, screen)
                record = statistics_record(screen)
                record["plate_map"]["path"] = (state.ingest or {}).get("plate_map")
                state.statistics = record
            for path in written:
                ctype = "image/png" if path.suffix == ".png" else "text/csv"
                ref = self.store.put_bytes(
                    ev.report_object_key(plate, path.name), path.read_bytes(), content_type=ctype
                )
                state.reports[path.name] = ref.key
        if self.settings.metrics_ome_zarr:
            self._ome_zarr(plate, wells, screen, methods)
        state.complete_at = datetime.now(UTC).isoformat()
        self.m_plates.inc()
        logger.info("plate %s complete: reports %s", plate, sorted(state.reports.values()))

    def _ome_zarr(
        self,
        plate: str,
        wells: Sequence[WellSummary],
        screen: Screen | None,
        methods: Sequence[str],
    ) -> None:
        """``reports/<plate>/<plate>.ome.zarr/``; a failure is logged, the reports stand."""
        from phagoflow.services.plate_export import export_plate_ome_zarr

        state = self.state.plates[plate]
        versions = {
            (r.counts.key, r.counts.method): r.model_version for r in state.results.values()
        }
        try:
            manifest = self.store.get_json(str((state.ingest or {})["manifest"]))
            if not isinstance(manifest, dict):
                raise ValueError("ingest's manifest of the plate is missing")
            key = export_plate_ome_zarr(
                self.store,
                plate,
                manifest=manifest,
                versions=versions,
                wells=wells,
                screen=screen,
                methods=methods,
            )
        except Exception as exc:  # a plate's OME-Zarr is an extra: the counts are reported
            logger.error("plate %s: OME-Zarr not written: %s: %s", plate, type(exc).__name__, exc)
            return
        state.reports[key.rsplit("/", 1)[-1]] = key

    def _screen(
        self,
        plate: str,
        tmp: Path,
        catalogue: PlateCatalogue,
        wells: Sequence[WellSummary],
        methods: Sequence[str],
    ) -> Screen | None:
        """The plate statistics with the plate map ingest stored, as ``run --plate-map``.

        ``None`` for a plate without a map, or when the map no longer fits what was counted
        (logged; the counts are reported without statistics).
        """
        state = self.state.plates[plate]
        key = (state.ingest or {}).get("plate_map")
        if not key:
            return None
        path = tmp / "plate_map.csv"
        path.write_bytes(self.store.get_bytes(key))
        readouts = available_readouts(
            nuclei=any(w.cells is not None for w in wells),
            cells=any(math.isfinite(w.cytoplasm_area_um2) for w in wells),
        )
        try:
            screen = load_plate_map(path, catalogue, self.settings.screening, readouts)
        except ValueError as exc:  # PlateMapError, or a hit readout that was not measured
            logger.error("plate %s: no plate statistics: %s", plate, " ".join(str(exc).split()))
            return None
        finally:
            path.unlink()
        return screen_statistics(screen, wells, methods, plate=plate)

    def _evict(self) -> None:
        """Keep at most ``metrics_keep_plates`` reported plates (oldest reported dropped)."""
        with self.state.lock:
            done = sorted((s.complete_at, p) for p, s in self.state.plates.items() if s.complete_at)
            for _, plate in done[: max(len(done) - self.settings.metrics_keep_plates, 0)]:
                del self.state.plates[plate]

    # ------------------------------------------------------------------ JSON API

    def plate_summary(self, plate: str) -> dict[str, Any]:
        with self.state.lock:
            state = self.state.plates[plate]
            methods = list(dict.fromkeys([*self.state.methods, *state.methods_seen()]))
            return {
                "plate": plate,
                # complete once every result is in AND wells.csv + heat-map are written
                "complete": state.complete_at is not None,
                "ingest_complete": state.ingest is not None,
                "fields_expected": state.fields_expected,
                "fields_published": (state.ingest or {}).get("fields_published"),
                "methods": {m: state.method_status(m) for m in methods},
                "failed": sorted(state.failures.values(), key=lambda f: (f["field"], f["path"])),
                "reports": dict(state.reports),
                "plate_map_error": (state.ingest or {}).get("plate_map_error") or None,
                "statistics": state.statistics,
                "completed_at": state.complete_at,
            }

    def well_rows(self, plate: str) -> list[dict[str, Any]]:
        with self.state.lock:
            state = self.state.plates[plate]
            rows = []
            for w in self.state.wells(plate):
                row = {k: _json_number(v) for k, v in w.as_row().items()}
                row["fields_expected"] = state.well_expected.get(w.well, 0)
                row["complete"] = state.well_complete(w.well, w.method)
                rows.append(row)
            return rows

    def api(self, path: str) -> ApiResponse | None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] != ["api", "v1"] or len(parts) < 3 or parts[2] != "plates":
            return None
        with self.state.lock:
            if len(parts) == 3:
                return 200, [self.plate_summary(p) for p in sorted(self.state.plates)]
            plate = parts[3]
            if plate not in self.state.plates:
                return 404, {"error": f"unknown plate {plate!r}"}
            if len(parts) == 4:
                return 200, self.plate_summary(plate)
            if len(parts) == 5 and parts[4] == "wells":
                return 200, self.well_rows(plate)
        return None
