"""Streaming event contracts: protobuf messages, topics, deterministic keys, (de)serialisation.

The schemas live in ``proto/phagoflow/v1/events.proto`` (package ``phagoflow.v1``); the Python
code generated from them is checked in under :mod:`phagoflow.events.v1` and re-exported here.
Messages carry object keys, never pixels. See ``docs/streaming.md``.

Keys and identities are deterministic, so a replay overwrites instead of double counting:

- Kafka message key: :func:`well_key` → ``"<plate>/<well>"``, e.g. ``"P001/r02c05"`` (the plate
  percent-escaped so that it never contains ``/``); every event of a well goes to one partition.
- Field result identity: :func:`result_identity` →
  ``"<plate>/<well>/<field name>/<method>/<model version>"``.
- Object keys: :func:`raw_object_key`, :func:`mask_object_key`, :func:`objects_object_key`.

Kafka is imported only inside :func:`create_topics`; everything else needs protobuf only.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from phagoflow import __version__
from phagoflow.core.cells import FieldCells as CoreFieldCells
from phagoflow.core.counting import CLASS_NAMES, FieldCounts, WellSummary
from phagoflow.core.opera.catalogue import ChannelRole, FieldKey
from phagoflow.events.v1.events_pb2 import (
    ChannelImage,
    ClassCount,
    DeadLetter,
    EventHeader,
    FieldAcquired,
    FieldCells,
    FieldFailure,
    FieldId,
    MaskReady,
    Method,
    ObjectRef,
    PlateComplete,
    WellComplete,
)

__all__ = [
    "ALL_TOPICS",
    "CONTENT_TYPE",
    "DEFAULT_PARTITIONS",
    "EVENT_TYPES",
    "HEADER_CONTENT_TYPE",
    "HEADER_EVENT_TYPE",
    "TOPIC_EVENT_TYPES",
    "ChannelImage",
    "ClassCount",
    "DeadLetter",
    "EventDecodeError",
    "EventHeader",
    "FieldAcquired",
    "FieldCells",
    "FieldFailure",
    "FieldId",
    "MaskReady",
    "Method",
    "ObjectRef",
    "PlateComplete",
    "Topic",
    "WellComplete",
    "create_topics",
    "decode",
    "decode_record",
    "encode",
    "event_key",
    "field_counts_from_mask_ready",
    "field_id",
    "field_key",
    "from_timestamp",
    "kafka_headers",
    "manifest_object_key",
    "mask_object_key",
    "mask_topic",
    "method_from_name",
    "method_name",
    "new_header",
    "objects_object_key",
    "parse_well_key",
    "plate_map_object_key",
    "raw_object_key",
    "report_object_key",
    "result_identity",
    "set_counts",
    "to_timestamp",
    "well_complete_from_summary",
    "well_key",
]

E = TypeVar("E", bound=Message)


class Topic(StrEnum):
    """Kafka topics of the pipeline; every message is keyed :func:`well_key`."""

    FIELDS_ACQUIRED = "phagoflow.fields.acquired"  #: FieldAcquired, by ingest
    MASKS_CIP = "phagoflow.masks.cip"  #: MaskReady(method=cip), by the cip service
    MASKS_CDL = "phagoflow.masks.cdl"  #: MaskReady(method=cdl), by the inference service
    WELLS = "phagoflow.wells"  #: WellComplete, by metrics
    PLATES = "phagoflow.plates"  #: PlateComplete, by ingest
    DEADLETTER = "phagoflow.deadletter"  #: DeadLetter, by any stage


#: Every topic, in pipeline order.
ALL_TOPICS: tuple[str, ...] = tuple(t.value for t in Topic)
#: Partitions per topic unless told otherwise (the unit of consumer parallelism).
DEFAULT_PARTITIONS = 6
#: Message type carried by each topic.
TOPIC_EVENT_TYPES: Mapping[str, type[Message]] = {
    Topic.FIELDS_ACQUIRED.value: FieldAcquired,
    Topic.MASKS_CIP.value: MaskReady,
    Topic.MASKS_CDL.value: MaskReady,
    Topic.WELLS.value: WellComplete,
    Topic.PLATES.value: PlateComplete,
    Topic.DEADLETTER.value: DeadLetter,
}
#: Fully qualified protobuf name → class, for every top-level event.
EVENT_TYPES: Mapping[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (FieldAcquired, MaskReady, WellComplete, PlateComplete, DeadLetter)
}
#: Kafka header names and the content type written by :func:`kafka_headers`.
HEADER_CONTENT_TYPE = "content-type"
HEADER_EVENT_TYPE = "phagoflow-event-type"
CONTENT_TYPE = b"application/x-protobuf"

_WELL_RE = re.compile(r"r(\d{2,})c(\d{2,})")
_METHODS: dict[str, Method] = {
    "cip": Method.METHOD_CIP,
    "cdl": Method.METHOD_CDL,
    "mdl": Method.METHOD_MDL,
}
_METHOD_NAMES: dict[int, str] = {int(v): k for k, v in _METHODS.items()}
_METHOD_TOPICS: dict[str, str] = {"cip": Topic.MASKS_CIP.value, "cdl": Topic.MASKS_CDL.value}


class EventDecodeError(ValueError):
    """Bytes that are not a valid event of the expected type (a dead-letter reason)."""


# --------------------------------------------------------------------------- keys and identities


def _validate_plate(plate: str) -> None:
    if (
        not plate
        or plate in (".", "..")
        or plate != plate.strip()
        or any(ord(c) < 32 for c in plate)
    ):
        raise ValueError(
            "plate id must be non-empty, not '.' or '..', without surrounding spaces or control "
            f"chars: {plate!r}"
        )


def _validate_well(well: str) -> None:
    if _WELL_RE.fullmatch(well) is None:
        raise ValueError(f"well must be of the form rRRcCC (e.g. 'r02c05'): {well!r}")


def _escape(part: str) -> str:
    """Percent-escape a plate id for keys (``/``, ``%`` and other unsafe characters)."""
    return quote(part, safe="-_.~")


def well_key(plate: str, well: str) -> str:
    """Kafka message key ``"<plate>/<well>"`` of every event about one well.

    Parameters
    ----------
    plate : str
        Plate id; characters such as ``/`` are percent-escaped, so ordinary barcodes are unchanged.
    well : str
        Well name ``rRRcCC``.

    Raises
    ------
    ValueError
        If the plate is empty or the well is not ``rRRcCC``.
    """
    _validate_plate(plate)
    _validate_well(well)
    return f"{_escape(plate)}/{well}"


def parse_well_key(key: str | bytes) -> tuple[str, str]:
    """Inverse of :func:`well_key`: ``(plate, well)``; raises ``ValueError`` on anything else."""
    text = key.decode("utf-8") if isinstance(key, bytes) else key
    plate_part, sep, well = text.rpartition("/")
    if not sep or "/" in plate_part or not plate_part:
        raise ValueError(f"not a well key of the form <plate>/<well>: {text!r}")
    _validate_well(well)
    plate = unquote(plate_part)
    _validate_plate(plate)
    return plate, well


def field_id(plate: str, key: FieldKey) -> FieldId:
    """Build the protobuf :class:`FieldId` of a core :class:`FieldKey`."""
    _validate_plate(plate)
    return FieldId(
        plate=plate, well=key.well, field=key.field, plane=key.plane, timepoint=key.timepoint
    )


def field_key(fid: FieldId) -> FieldKey:
    """The core :class:`FieldKey` of a protobuf :class:`FieldId`.

    Raises
    ------
    ValueError
        If the well is not ``rRRcCC`` or field/plane are 0 (unset; both are 1-based).
    """
    m = _WELL_RE.fullmatch(fid.well)
    if m is None:
        raise ValueError(f"FieldId.well must be of the form rRRcCC: {fid.well!r}")
    if fid.field < 1 or fid.plane < 1:
        raise ValueError(
            f"FieldId field and plane are 1-based, got field={fid.field}, plane={fid.plane}"
        )
    return FieldKey(
        row=int(m.group(1)),
        col=int(m.group(2)),
        field=fid.field,
        plane=fid.plane,
        timepoint=fid.timepoint,
    )


def result_identity(fid: FieldId, method: str | int, model_version: str) -> str:
    """Deterministic identity of one field's result: replays share it, so never count twice.

    Returns ``"<plate>/<well>/<field name>/<method>/<model version>"``, e.g.
    ``"P001/r02c05/r02c05f03p01/cdl/3"``.
    """
    name = method if isinstance(method, str) else method_name(method)
    return f"{well_key(fid.plate, fid.well)}/{field_key(fid).name}/{name}/{model_version or '-'}"


def event_key(event: Message) -> bytes:
    """Kafka key (UTF-8 :func:`well_key`) of any phagoflow event.

    A :class:`DeadLetter` uses its ``key`` field (which may be empty for an unparseable file).

    Raises
    ------
    ValueError
        For a message type that is not an event or has no plate/well.
    """
    if isinstance(event, FieldAcquired | MaskReady):
        return well_key(event.field.plate, event.field.well).encode()
    if isinstance(event, WellComplete):
        return well_key(event.plate, event.well).encode()
    if isinstance(event, PlateComplete):
        _validate_plate(event.plate)
        return _escape(event.plate).encode()
    if isinstance(event, DeadLetter):
        return event.key.encode()
    raise ValueError(f"not a phagoflow event: {type(event).__name__}")


# --------------------------------------------------------------------------- object keys


def _field_prefix(plate: str, key: FieldKey) -> str:
    _validate_plate(plate)
    return f"{_escape(plate)}/{key.well}/{key.name}"


def raw_object_key(plate: str, key: FieldKey, role: ChannelRole | str) -> str:
    """Object key of one raw channel TIFF: ``raw/<plate>/<well>/<field name>/<role>.tiff``."""
    role_value = ChannelRole(role).value
    return f"raw/{_field_prefix(plate, key)}/{role_value}.tiff"


def _result_prefix(plate: str, key: FieldKey, method: str, model_version: str) -> str:
    if method not in _METHOD_NAMES.values():
        raise ValueError(f"method must be one of {sorted(_METHOD_NAMES.values())}: {method!r}")
    if "/" in model_version:
        raise ValueError(f"model version must not contain '/': {model_version!r}")
    version = model_version or "-"
    _validate_plate(plate)
    return f"results/{_escape(plate)}/{method}/{version}/{key.well}/{key.name}"


def mask_object_key(plate: str, key: FieldKey, method: str, model_version: str) -> str:
    """``results/<plate>/<method>/<model version>/<well>/<field name>.mask.tiff`` (uint8 mask)."""
    return _result_prefix(plate, key, method, model_version) + ".mask.tiff"


def objects_object_key(plate: str, key: FieldKey, method: str, model_version: str) -> str:
    """``results/<plate>/<method>/<model version>/<well>/<field name>.objects.csv``."""
    return _result_prefix(plate, key, method, model_version) + ".objects.csv"


def manifest_object_key(plate: str) -> str:
    """Ingest manifest of a plate: ``manifests/<plate>/ingest.json``."""
    _validate_plate(plate)
    return f"manifests/{_escape(plate)}/ingest.json"


def plate_map_object_key(plate: str) -> str:
    """A plate map as ingest found it beside the export: ``plates/<plate>/plate_map.csv``."""
    _validate_plate(plate)
    return f"plates/{_escape(plate)}/plate_map.csv"


def report_object_key(plate: str, name: str) -> str:
    """Per-plate report file written by metrics: ``reports/<plate>/<name>`` (e.g. ``wells.csv``)."""
    _validate_plate(plate)
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"report name must be a plain file name: {name!r}")
    return f"reports/{_escape(plate)}/{name}"


# --------------------------------------------------------------------------- methods and topics


def method_name(method: int) -> str:
    """``Method.METHOD_CIP`` → ``"cip"`` (the core's method names); ``ValueError`` if unset."""
    try:
        return _METHOD_NAMES[int(method)]
    except KeyError:
        raise ValueError(f"unknown or unspecified method enum value {method}") from None


def method_from_name(name: str) -> Method:
    """``"cip"`` → ``Method.METHOD_CIP``; ``ValueError`` for other names."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"method must be one of {sorted(_METHODS)}: {name!r}") from None


def mask_topic(method: str | int) -> str:
    """Topic of the :class:`MaskReady` events of a method (``cip`` or ``cdl``)."""
    name = method if isinstance(method, str) else method_name(method)
    try:
        return _METHOD_TOPICS[name]
    except KeyError:
        raise ValueError(f"no mask topic for method {name!r}") from None


# --------------------------------------------------------------------------- timestamps, headers


def to_timestamp(when: datetime) -> Timestamp:
    """Protobuf Timestamp of an aware datetime (naive datetimes are rejected)."""
    if when.tzinfo is None:
        raise ValueError(f"timestamps must be timezone-aware, got naive {when.isoformat()}")
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(UTC))
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    """Aware UTC datetime of a protobuf Timestamp."""
    return ts.ToDatetime(tzinfo=UTC)


def new_header(producer: str, *, now: datetime | None = None) -> EventHeader:
    """A fresh :class:`EventHeader`: random event id, production time, ``producer/version``.

    Parameters
    ----------
    producer : str
        Service name, e.g. ``"ingest"``; recorded as ``"phagoflow-ingest/<version>"``.
    now : datetime, optional
        Production time (aware); defaults to the current UTC time.
    """
    when = datetime.now(UTC) if now is None else now
    return EventHeader(
        event_id=str(uuid.uuid4()),
        produced_at=to_timestamp(when),
        producer=f"phagoflow-{producer}/{__version__}",
    )


def kafka_headers(event: Message) -> list[tuple[str, bytes]]:
    """Kafka record headers naming the payload type, for generic tools and dead letters."""
    return [
        (HEADER_CONTENT_TYPE, CONTENT_TYPE),
        (HEADER_EVENT_TYPE, event.DESCRIPTOR.full_name.encode()),
    ]


# --------------------------------------------------------------------------- (de)serialisation


def encode(event: Message) -> bytes:
    """Serialise an event deterministically (map entries sorted), so equal events give equal bytes.

    Raises
    ------
    ValueError
        If a message that needs a field identity has none.
    """
    if isinstance(event, FieldAcquired | MaskReady) and not event.HasField("field"):
        raise ValueError(f"{type(event).__name__} without a field identity")
    return event.SerializeToString(deterministic=True)


def decode(event_type: type[E], data: bytes) -> E:
    """Parse ``data`` as ``event_type``.

    Raises
    ------
    EventDecodeError
        If the bytes are not a valid message of that type (truncated, garbage, wrong wire types).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EventDecodeError(f"expected bytes for {event_type.__name__}, got {type(data)}")
    msg = event_type()
    try:
        msg.ParseFromString(bytes(data))
    except DecodeError as exc:
        raise EventDecodeError(
            f"cannot decode {len(data)} bytes as {event_type.DESCRIPTOR.full_name}: {exc}"
        ) from exc
    return msg


def decode_record(
    topic: str, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None
) -> Message:
    """Decode a Kafka record value by its topic (and check its type header when present).

    Raises
    ------
    EventDecodeError
        Unknown topic, type header naming another type, or undecodable bytes.
    """
    try:
        event_type = TOPIC_EVENT_TYPES[topic]
    except KeyError:
        raise EventDecodeError(f"no event type registered for topic {topic!r}") from None
    for name, raw in headers or ():
        if name == HEADER_EVENT_TYPE and raw.decode(errors="replace") != (
            expected := event_type.DESCRIPTOR.full_name
        ):
            raise EventDecodeError(
                f"record on {topic!r} declares type {raw.decode(errors='replace')!r}, "
                f"expected {expected!r}"
            )
    return decode(event_type, value)


# --------------------------------------------------------------------------- core conversions


def set_counts(event: MaskReady, counts: FieldCounts) -> MaskReady:
    """Fill ``event.counts`` from a core :class:`FieldCounts` (one entry per class); returns it.

    Raises
    ------
    ValueError
        If the counts belong to another field or method than the event.
    """
    if event.HasField("field") and field_key(event.field) != counts.key:
        raise ValueError(
            f"counts of field {counts.key.name} given for event of {field_key(event.field).name}"
        )
    if event.method != Method.METHOD_UNSPECIFIED and method_name(event.method) != counts.method:
        raise ValueError(
            f"counts of method {counts.method!r} given for a {method_name(event.method)!r} event"
        )
    event.counts.clear()
    event.counts["phagophore"].CopyFrom(
        ClassCount(objects=counts.phagophores, area_um2=counts.phagophore_area_um2)
    )
    event.counts["autolysosome"].CopyFrom(
        ClassCount(objects=counts.autolysosomes, area_um2=counts.autolysosome_area_um2)
    )
    event.ClearField("cells")
    if counts.cells is not None:
        event.cells.CopyFrom(_cells_message(counts.cells))
    return event


def _cells_message(cells: CoreFieldCells) -> FieldCells:
    """The :class:`FieldCells` message of a core ``FieldCells`` (``None`` fields left unset)."""
    msg = FieldCells(cytoplasm_area_um2=cells.cytoplasm_area_um2, cell_area_um2=cells.cell_area_um2)
    if cells.n_cells is not None:
        msg.n_cells = cells.n_cells
    if cells.nuclear_area_um2 is not None:
        msg.nuclear_area_um2 = cells.nuclear_area_um2
    return msg


def _core_cells(event: MaskReady) -> CoreFieldCells | None:
    """The core ``FieldCells`` of a :class:`MaskReady`; ``None`` when it carries none."""
    if not event.HasField("cells"):
        return None
    msg = event.cells
    return CoreFieldCells(
        n_cells=msg.n_cells if msg.HasField("n_cells") else None,
        nuclear_area_um2=msg.nuclear_area_um2 if msg.HasField("nuclear_area_um2") else None,
        cytoplasm_area_um2=msg.cytoplasm_area_um2,
        cell_area_um2=msg.cell_area_um2,
    )


def field_counts_from_mask_ready(event: MaskReady) -> FieldCounts:
    """The core :class:`FieldCounts` carried by a :class:`MaskReady` (exact round trip).

    Raises
    ------
    ValueError
        If the event lacks a field, a method, or a class count, or names an unknown class.
    """
    unknown = set(event.counts) - set(CLASS_NAMES.values())
    if unknown:
        raise ValueError(f"MaskReady counts name unknown classes {sorted(unknown)}")
    missing = set(CLASS_NAMES.values()) - set(event.counts)
    if missing:
        raise ValueError(f"MaskReady counts lack classes {sorted(missing)}")
    if not event.HasField("field"):
        raise ValueError("MaskReady without a field identity")
    phago, auto = event.counts["phagophore"], event.counts["autolysosome"]
    return FieldCounts(
        plate=event.field.plate,
        key=field_key(event.field),
        method=method_name(event.method),
        phagophores=phago.objects,
        autolysosomes=auto.objects,
        phagophore_area_um2=phago.area_um2,
        autolysosome_area_um2=auto.area_um2,
        cells=_core_cells(event),
    )


def well_complete_from_summary(
    summary: WellSummary,
    *,
    header: EventHeader,
    model_version: str = "",
    failed: Iterable[FieldFailure] = (),
    completed_at: datetime | None = None,
) -> WellComplete:
    """Build the :class:`WellComplete` event of a core :class:`WellSummary` (same numbers)."""
    event = WellComplete(
        header=header,
        plate=summary.plate,
        well=summary.well,
        method=method_from_name(summary.method),
        model_version=model_version,
        fields=summary.fields,
        phagophores=summary.phagophores,
        autolysosomes=summary.autolysosomes,
        phagophores_per_field_mean=summary.phagophores_per_field_mean,
        phagophores_per_field_sd=summary.phagophores_per_field_sd,
        autolysosomes_per_field_mean=summary.autolysosomes_per_field_mean,
        autolysosomes_per_field_sd=summary.autolysosomes_per_field_sd,
        phagophore_area_um2=summary.phagophore_area_um2,
        autolysosome_area_um2=summary.autolysosome_area_um2,
        autolysosome_phagophore_ratio=summary.autolysosome_phagophore_ratio,
        failed=list(failed),
        cytoplasm_area_um2=summary.cytoplasm_area_um2,
        cell_area_um2=summary.cell_area_um2,
        phagophores_per_cell=summary.phagophores_per_cell,
        autolysosomes_per_cell=summary.autolysosomes_per_cell,
        phagophores_per_1000um2=summary.phagophores_per_1000um2,
        autolysosomes_per_1000um2=summary.autolysosomes_per_1000um2,
    )
    if summary.cells is not None:
        event.cells = summary.cells
    if completed_at is not None:
        event.completed_at.CopyFrom(to_timestamp(completed_at))
    return event


# --------------------------------------------------------------------------- Kafka administration


def create_topics(
    bootstrap: str | Sequence[str],
    partitions: int = DEFAULT_PARTITIONS,
    *,
    topics: Iterable[str] = ALL_TOPICS,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the pipeline topics with explicit partitions; existing topics are left as they are.

    Parameters
    ----------
    bootstrap : str or sequence of str
        Kafka bootstrap servers, ``"host:port"``.
    partitions : int
        Partitions per new topic (default 6).
    topics : iterable of str
        Topic names; defaults to :data:`ALL_TOPICS`.
    replication_factor : int
        1 for a single local broker; 3 on a production cluster.
    timeout_s : float
        Broker-side creation timeout and client request timeout.

    Returns
    -------
    list of str
        The topics this call created (empty when all existed: the call is idempotent).

    Raises
    ------
    ValueError
        If ``partitions`` or ``replication_factor`` is below 1, or a topic name is not a valid
        Kafka name (1–249 characters of ``[a-zA-Z0-9._-]``).
    RuntimeError
        If the broker refuses a topic for a reason other than "already exists".
    """
    if partitions < 1 or replication_factor < 1:
        raise ValueError(
            f"partitions and replication_factor must be >= 1, got {partitions}, "
            f"{replication_factor}"
        )
    wanted = list(dict.fromkeys(topics))
    bad = [t for t in wanted if _TOPIC_RE.fullmatch(t) is None or t in (".", "..")]
    if bad:
        raise ValueError(f"invalid Kafka topic names (1-249 of [a-zA-Z0-9._-]): {bad}")
    from kafka import KafkaAdminClient

    timeout_ms = int(timeout_s * 1000)
    admin: Any = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=f"phagoflow-admin/{__version__}",
        request_timeout_ms=timeout_ms,
    )
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if not missing:
            return []
        spec = {
            t: {"num_partitions": partitions, "replication_factor": replication_factor}
            for t in missing
        }
        response = admin.create_topics(
            spec, timeout_ms=timeout_ms, raise_errors=False, wait_for_metadata=True
        )
        created: list[str] = []
        errors: list[str] = []
        for result in response.get("topics", []):
            code = int(result.get("error_code", 0))
            if code == 0:
                created.append(str(result["name"]))
            elif code != _TOPIC_ALREADY_EXISTS:
                errors.append(f"{result['name']}: [{code}] {result.get('error_message')}")
        if errors:
            raise RuntimeError("topic creation failed: " + "; ".join(errors))
        return sorted(created, key=wanted.index)
    finally:
        admin.close()


_TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code TOPIC_ALREADY_EXISTS
_TOPIC_RE = re.compile(r"[a-zA-Z0-9._-]{1,249}")
