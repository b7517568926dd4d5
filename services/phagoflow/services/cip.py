"""cip: ``FieldAcquired`` → core CIP → mask + objects in the store → ``MaskReady(method=cip)``.

``phagoflow serve cip`` (consumer group ``cip``). For each record of
``phagoflow.fields.acquired``: download both channel TIFFs (SHA-256 verified), assemble the
``(2, H, W)`` float32 field exactly as :func:`phagoflow.core.opera.load_field` does (uint16 ×
intensity factor, ``[DsRed, pHluorin]``), segment with the core CIP segmenter
(:func:`phagoflow.core.segmenters.make_segmenter`), measure and count with
:mod:`phagoflow.core.counting`, write the uint8 mask TIFF and the objects CSV under deterministic
keys, produce ``MaskReady`` and only then commit the offset. A poison record goes to the
dead-letter topic (see :class:`~phagoflow.services.kafkaio.ConsumerService`).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import tifffile
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import Field

from phagoflow import events as ev
from phagoflow.core.cells import CellParameters, field_cells
from phagoflow.core.cip import CipParameters
from phagoflow.core.counting import OBJECT_COLUMNS, ObjectRecord, count_field, measure_objects
from phagoflow.core.opera.catalogue import ROLE_ORDER, ChannelRole, FieldKey
from phagoflow.core.segmenters import Segmenter, make_segmenter
from phagoflow.services.common import ServiceSettings, log_context
from phagoflow.services.kafkaio import ConsumerService, PermanentError, publish
from phagoflow.services.objectstore import ObjectStore
from phagoflow.settings import CellReadoutSettings

__all__ = [
    "CipService",
    "CipSettings",
    "channel_plane",
    "encode_mask",
    "field_image",
    "field_nuclei",
    "objects_csv",
    "segment_and_publish",
]

logger = logging.getLogger(__name__)

_STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)


def segmentation_metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """The metrics every segmenting service (cip, inference) exports, in one place.

    ``phagoflow_fields_processed_total{method}`` and ``phagoflow_stage_seconds{stage,method}``
    (the dashboard and alert rules of the Helm chart read these names).
    """
    fields = Counter(
        "phagoflow_fields_processed_total",
        "Fields segmented, per method",
        ["method"],
        registry=registry,
    )
    stage = Histogram(
        "phagoflow_stage_seconds",
        "Seconds per processing stage",
        ["stage", "method"],
        registry=registry,
        buckets=_STAGE_BUCKETS,
    )
    return fields, stage


class CipSettings(ServiceSettings, CellReadoutSettings):
    """Settings of ``phagoflow serve cip``.

    Attributes
    ----------
    cip_port : int
        HTTP port (``PHAGOFLOW_CIP_PORT``).
    cip : CipParameters
        CIP parameters (``PHAGOFLOW_CIP__THRESHOLD_K=5`` etc., as for ``phagoflow run``).
    cell_readouts, cells
        As :class:`~phagoflow.settings.CellReadoutSettings` (the same variables as
        ``phagoflow run``).
    """

    cip_port: int = Field(default=8402, ge=0, le=65535)
    cip: CipParameters = CipParameters()

    @property
    def http_port(self) -> int:
        return self.cip_port


def field_image(
    event: ev.FieldAcquired, store: ObjectStore
) -> tuple[FieldKey, npt.NDArray[np.float32], float]:
    """Download and assemble the ``(2, H, W)`` float32 field of a :class:`FieldAcquired`.

    The channels are ordered ``[DsRed, pHluorin]`` and multiplied by their intensity factor,
    exactly as :func:`phagoflow.core.opera.load_field` does for the same export.

    Raises
    ------
    PermanentError
        A channel is missing from the event, or its TIFF is unreadable or not ``(size_y,
        size_x)`` uint16.
    ObjectMissing, ChecksumMismatch, StoreUnavailable
        From the store.
    """
    key = ev.field_key(event.field)
    h, w = int(event.size_y), int(event.size_x)
    if h < 1 or w < 1:
        raise PermanentError(f"{key.name}: FieldAcquired without a field size ({w} x {h})")
    if not math.isfinite(event.pixel_size_um) or event.pixel_size_um <= 0:
        raise PermanentError(f"{key.name}: invalid pixel size {event.pixel_size_um} um")
    image = np.empty((2, h, w), dtype=np.float32)
    for i, role in enumerate(ROLE_ORDER):
        if role.value not in event.channels:
            raise PermanentError(f"{key.name}: FieldAcquired has no {role.value} channel")
        image[i] = channel_plane(event.channels[role.value], store, (h, w))
    return key, image, float(event.pixel_size_um)


def field_nuclei(event: ev.FieldAcquired, store: ObjectStore) -> npt.NDArray[np.float32] | None:
    """The ``(H, W)`` float32 nuclear-stain plane of a field, or ``None`` when it has none.

    As :func:`phagoflow.core.opera.load_nuclei`: raw counts × intensity factor. Raises as
    :func:`field_image`.
    """
    channel = event.channels.get(ChannelRole.NUCLEI.value)
    if channel is None:
        return None
    return channel_plane(channel, store, (int(event.size_y), int(event.size_x)))


def channel_plane(
    channel: ev.ChannelImage, store: ObjectStore, shape: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """One channel's uint16 TIFF from the store, as float32 × its intensity factor."""
    data = store.get_bytes(channel.object.key, sha256=channel.object.sha256 or None)
    try:
        plane = tifffile.imread(io.BytesIO(data))
    except Exception as exc:
        raise PermanentError(
            f"{channel.object.key}: cannot read the TIFF ({type(exc).__name__}: {exc})"
        ) from exc
    if plane.shape != shape or plane.dtype != np.uint16:
        raise PermanentError(
            f"{channel.object.key}: {plane.dtype} {plane.shape}, expected uint16 {shape}"
        )
    out = plane.astype(np.float32)
    factor = channel.intensity_factor if channel.HasField("intensity_factor") else 1.0
    if factor != 1.0:
        out *= np.float32(factor)
    return out


def encode_mask(mask: npt.NDArray[Any]) -> bytes:
    """uint8 class mask as a zlib-compressed TIFF (the embedded runner's mask format)."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(mask, dtype=np.uint8), compression="zlib", metadata=None)
    return buf.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def objects_csv(plate: str, key: FieldKey, method: str, objects: Sequence[ObjectRecord]) -> bytes:
    """Per-object table of one field, the columns of the embedded ``objects.csv``."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(("plate", "well", "field", "method", *OBJECT_COLUMNS))
    for obj in objects:
        row = obj.as_row()
        writer.writerow(
            (plate, key.well, key.name, method, *(_csv_value(row[c]) for c in OBJECT_COLUMNS))
        )
    return buf.getvalue().encode()


def segment_and_publish(
    event: ev.FieldAcquired,
    *,
    store: ObjectStore,
    segmenter: Segmenter,
    method: str,
    model_name: str,
    model_version: str | Callable[[], str],
    producer: Any,
    producer_name: str,
    cells: CellParameters | None = None,
) -> ev.MaskReady:
    """Core segmentation of one field, results to the store, ``MaskReady`` produced (acked).

    The segmenter is the core's (:class:`~phagoflow.core.segmenters.Segmenter`), so the masks and
    counts are those of ``phagoflow run``. ``model_version`` is the version results are keyed
    and labelled with, or a function called *after* segmentation that gives it (CDL: the Triton
    version that produced this mask, which a promotion can change between fields). With
    ``cells`` the field's cells are measured as ``phagoflow run`` measures them
    (:func:`~phagoflow.core.cells.field_cells`, the nuclear plane when the event has one) and
    travel in ``MaskReady.cells``.
    """
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    key, image, pixel_size_um = field_image(event, store)
    plate = event.field.plate
    t1 = time.perf_counter()
    stages["download"] = t1 - t0
    mask = segmenter.segment(image, pixel_size_um)
    if callable(model_version):
        model_version = model_version()
    t2 = time.perf_counter()
    stages["segment"] = t2 - t1
    objects = measure_objects(image, mask, pixel_size_um)
    field = None
    if cells is not None:
        nuclear = field_nuclei(event, store)
        field = field_cells(image, nuclear, pixel_size_um=pixel_size_um, params=cells)
    counts = count_field(objects, plate=plate, key=key, method=method, cells=field)
    t3 = time.perf_counter()
    stages["measure"] = t3 - t2
    mask_ref = store.put_bytes(
        ev.mask_object_key(plate, key, method, model_version),
        encode_mask(mask),
        content_type="image/tiff",
    )
    objects_ref = store.put_bytes(
        ev.objects_object_key(plate, key, method, model_version),
        objects_csv(plate, key, method, objects),
        content_type="text/csv",
    )
    stages["upload"] = time.perf_counter() - t3
    ready = ev.MaskReady(
        header=ev.new_header(producer_name),
        field=event.field,
        method=ev.method_from_name(method),
        model_name=model_name,
        model_version=model_version,
        mask=mask_ref,
        objects=objects_ref,
        pixel_size_um=event.pixel_size_um,
        well_fields_expected=event.well_fields_expected,
        plate_fields_expected=event.plate_fields_expected,
    )
    if event.HasField("acquired_at"):
        ready.acquired_at.CopyFrom(event.acquired_at)
    ev.set_counts(ready, counts)
    for stage, seconds in stages.items():
        ready.stage_seconds[stage] = seconds
    publish(producer, ev.mask_topic(method), ready)
    return ready


class CipService(ConsumerService):
    """Consumer group ``cip`` on ``phagoflow.fields.acquired``."""

    name = "cip"
    group = "cip"
    topics = (ev.Topic.FIELDS_ACQUIRED.value,)
    settings: CipSettings

    def __init__(self, settings: CipSettings, *, http_port: int | None = None) -> None:
        super().__init__(settings, http_port=http_port)
        self.segmenter = make_segmenter("cip", cip_params=settings.cip)
        #: CIP "model version": the fingerprint of parameters and phagoflow version (16 hex).
        self.model_version = self.segmenter.fingerprint[:16]
        self.m_fields, self.m_stage = segmentation_metrics(self.registry)

    def handle(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        event = ev.decode_record(topic, value, headers)
        if not isinstance(event, ev.FieldAcquired) or not event.HasField("field"):
            raise PermanentError(f"{topic}[{partition}]@{offset}: not a FieldAcquired with a field")
        fid = event.field
        try:
            name = ev.field_key(fid).name
        except ValueError as exc:
            raise PermanentError(str(exc)) from exc
        with log_context(plate=fid.plate, well=fid.well, field=name):
            assert self.producer is not None
            ready = segment_and_publish(
                event,
                store=self.store,
                segmenter=self.segmenter,
                method="cip",
                model_name="cip",
                model_version=self.model_version,
                producer=self.producer,
                producer_name=self.name,
                cells=self.settings.cell_parameters,
            )
            for stage, seconds in ready.stage_seconds.items():
                self.m_stage.labels(stage, "cip").observe(seconds)
            self.m_fields.labels("cip").inc()
            logger.info(
                "field %s: %d phagophores, %d autolysosomes",
                name,
                ready.counts["phagophore"].objects,
                ready.counts["autolysosome"].objects,
            )
