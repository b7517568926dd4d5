"""One segmentation service: ``FieldAcquired`` → segmenter → mask + objects → ``MaskReady``.

CIP (:mod:`~phagoflow.services.cip`) and the U-Net on Triton
(:mod:`~phagoflow.services.inference`) run the same loop, :class:`SegmentationService`: decode
the record, assemble the field from the store (:func:`~phagoflow.services.fields.field_image`),
segment it with a core :class:`~phagoflow.core.segmenters.Segmenter`, measure and count with
:mod:`phagoflow.core.counting` (and the cells with :mod:`phagoflow.core.cells`), write the mask
and the objects under deterministic keys, produce ``MaskReady`` and only then let the consumer
loop commit (:class:`~phagoflow.services.kafkaio.ConsumerService`). A method plugs in its
segmenter, its model name and version, and, where it has one, its error handling
(:meth:`SegmentationService.segment`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Histogram

from phagoflow import events as ev
from phagoflow.core.cells import CellParameters, field_cells
from phagoflow.core.counting import FieldCounts, ObjectRecord, count_field, measure_objects
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.segmenters import Segmenter
from phagoflow.services.common import ServiceSettings, log_context
from phagoflow.services.fields import encode_mask, field_image, field_nuclei, objects_csv
from phagoflow.services.kafkaio import ConsumerService, PermanentError, publish
from phagoflow.services.objectstore import ObjectStore
from phagoflow.settings import CellReadoutSettings

__all__ = [
    "SegmentationService",
    "SegmentationSettings",
    "field_event",
    "segment_and_publish",
    "segmentation_metrics",
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


@dataclass
class _Segmented:
    """One field segmented, measured and counted (nothing written yet)."""

    key: FieldKey
    mask: npt.NDArray[Any]
    objects: list[ObjectRecord]
    counts: FieldCounts
    model_version: str
    stages: dict[str, float] = field(default_factory=dict)


def _segment(
    event: ev.FieldAcquired,
    store: ObjectStore,
    segmenter: Segmenter,
    method: str,
    model_version: str | Callable[[], str],
    cells: CellParameters | None,
) -> _Segmented:
    """Download, segment, measure and count one field, timing each stage."""
    t0 = time.perf_counter()
    key, image, pixel_size_um = field_image(event, store)
    t1 = time.perf_counter()
    mask = segmenter.segment(image, pixel_size_um)
    version = model_version() if callable(model_version) else model_version
    t2 = time.perf_counter()
    objects = measure_objects(image, mask, pixel_size_um)
    cell_table = None
    if cells is not None:
        nuclear = field_nuclei(event, store)
        cell_table = field_cells(image, nuclear, pixel_size_um=pixel_size_um, params=cells)
    counts = count_field(objects, plate=event.field.plate, key=key, method=method, cells=cell_table)
    stages = {"download": t1 - t0, "segment": t2 - t1, "measure": time.perf_counter() - t2}
    return _Segmented(key, mask, objects, counts, version, stages)


def _mask_ready(
    event: ev.FieldAcquired,
    seg: _Segmented,
    refs: tuple[ev.ObjectRef, ev.ObjectRef],
    *,
    method: str,
    model_name: str,
    producer_name: str,
) -> ev.MaskReady:
    """The ``MaskReady`` of a segmented field whose mask and objects are stored at ``refs``."""
    ready = ev.MaskReady(
        header=ev.new_header(producer_name),
        field=event.field,
        method=ev.method_from_name(method),
        model_name=model_name,
        model_version=seg.model_version,
        mask=refs[0],
        objects=refs[1],
        pixel_size_um=event.pixel_size_um,
        well_fields_expected=event.well_fields_expected,
        plate_fields_expected=event.plate_fields_expected,
    )
    if event.HasField("acquired_at"):
        ready.acquired_at.CopyFrom(event.acquired_at)
    ev.set_counts(ready, seg.counts)
    for stage, seconds in seg.stages.items():
        ready.stage_seconds[stage] = seconds
    return ready


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
    seg = _segment(event, store, segmenter, method, model_version, cells)
    plate, version = event.field.plate, seg.model_version
    t0 = time.perf_counter()
    mask_ref = store.put_bytes(
        ev.mask_object_key(plate, seg.key, method, version),
        encode_mask(seg.mask),
        content_type="image/tiff",
    )
    objects_ref = store.put_bytes(
        ev.objects_object_key(plate, seg.key, method, version),
        objects_csv(plate, seg.key, method, seg.objects),
        content_type="text/csv",
    )
    seg.stages["upload"] = time.perf_counter() - t0
    ready = _mask_ready(
        event,
        seg,
        (mask_ref, objects_ref),
        method=method,
        model_name=model_name,
        producer_name=producer_name,
    )
    publish(producer, ev.mask_topic(method), ready)
    return ready


def field_event(record: Any) -> tuple[ev.FieldAcquired, str]:
    """The ``FieldAcquired`` of a Kafka record and its field's name (``r02c03f01``).

    Raises
    ------
    PermanentError
        Not a ``FieldAcquired`` with a valid field (the record is dead-lettered).
    EventDecodeError
        Undecodable bytes (dead-lettered too).
    """
    event = ev.decode_record(record.topic, record.value, list(record.headers or ()))
    if not isinstance(event, ev.FieldAcquired) or not event.HasField("field"):
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        raise PermanentError(f"{where}: not a FieldAcquired with a field")
    try:
        name = ev.field_key(event.field).name
    except ValueError as exc:
        raise PermanentError(str(exc)) from exc
    return event, name


class SegmentationSettings(ServiceSettings, CellReadoutSettings):
    """Settings every segmentation service shares: the service's and the cell readouts'.

    ``cell_readouts`` and ``cells`` are :class:`~phagoflow.settings.CellReadoutSettings`, the
    same variables as ``phagoflow run``.
    """


class SegmentationService(ConsumerService):
    """``FieldAcquired`` → :attr:`segmenter` → stored mask and objects → ``MaskReady(method)``.

    A method sets :attr:`method`, :attr:`group`, the :attr:`segmenter` (in ``__init__`` or
    ``setup``), :attr:`model_name` and :attr:`model_version`; it may wrap :meth:`segment`
    (inference: Triton's readiness and version switches) and override :meth:`result_version`.
    """

    topics = (ev.Topic.FIELDS_ACQUIRED.value,)
    #: Method name in object keys, events and metric labels (``cip``, ``cdl``).
    method: ClassVar[str] = ""
    settings: SegmentationSettings

    def __init__(self, settings: SegmentationSettings, *, http_port: int | None = None) -> None:
        super().__init__(settings, http_port=http_port)
        self.segmenter: Segmenter | None = None
        #: Model name in ``MaskReady`` (``cip``, or the Triton model).
        self.model_name = self.method
        #: The version results are keyed and labelled with (see :meth:`result_version`).
        self.model_version = ""
        self.m_fields, self.m_stage = segmentation_metrics(self.registry)

    def result_version(self) -> str:
        """The version of the mask just segmented (called after segmentation)."""
        return self.model_version

    def segment(self, event: ev.FieldAcquired) -> ev.MaskReady:
        """Segment one field, store its results and produce its ``MaskReady`` (acknowledged)."""
        assert self.producer is not None and self.segmenter is not None
        return segment_and_publish(
            event,
            store=self.store,
            segmenter=self.segmenter,
            method=self.method,
            model_name=self.model_name,
            model_version=self.result_version,
            producer=self.producer,
            producer_name=self.name,
            cells=self.settings.cell_parameters,
        )

    def handle(self, record: Any) -> None:
        event, name = field_event(record)
        with log_context(plate=event.field.plate, well=event.field.well, field=name):
            ready = self.segment(event)
            for stage, seconds in ready.stage_seconds.items():
                self.m_stage.labels(stage, self.method).observe(seconds)
            self.m_fields.labels(self.method).inc()
            logger.info(
                "field %s: %d phagophores, %d autolysosomes (%s v%s)",
                name,
                ready.counts["phagophore"].objects,
                ready.counts["autolysosome"].objects,
                self.method,
                ready.model_version,
            )
