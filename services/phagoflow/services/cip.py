"""cip: ``FieldAcquired`` → core CIP → mask + objects in the store → ``MaskReady(method=cip)``.

``phagoflow serve cip`` (consumer group ``cip``; the deployable: ``services/cip/``). The loop is
the one segmentation service (:class:`~phagoflow.services.segmentation.SegmentationService`):
for each record of ``phagoflow.fields.acquired`` download both channel TIFFs (SHA-256 verified),
assemble the ``(2, H, W)`` float32 field exactly as :func:`phagoflow.core.opera.load_field` does,
segment with the core CIP segmenter (:func:`phagoflow.core.segmenters.make_segmenter`), measure
and count with :mod:`phagoflow.core.counting`, write the uint8 mask TIFF and the objects CSV
under deterministic keys, produce ``MaskReady`` and only then commit the offset. A poison record
goes to the dead-letter topic (see :class:`~phagoflow.services.kafkaio.ConsumerService`).

The store ↔ array helpers once defined here (``field_image``, ``field_nuclei``,
``channel_plane``, ``encode_mask``, ``objects_csv``) live in :mod:`phagoflow.services.fields`,
``segment_and_publish`` and ``segmentation_metrics`` in :mod:`phagoflow.services.segmentation`;
they are re-exported here for the modules that import them from ``cip``.
"""

from __future__ import annotations

from pydantic import Field

from phagoflow import events as ev
from phagoflow.core.cip import CipParameters
from phagoflow.core.segmenters import make_segmenter
from phagoflow.services.fields import (
    channel_plane,
    encode_mask,
    field_image,
    field_nuclei,
    objects_csv,
)
from phagoflow.services.segmentation import (
    SegmentationService,
    SegmentationSettings,
    segment_and_publish,
    segmentation_metrics,
)

__all__ = [
    "CipService",
    "CipSettings",
    "channel_plane",
    "encode_mask",
    "field_image",
    "field_nuclei",
    "objects_csv",
    "segment_and_publish",
    "segmentation_metrics",
]


class CipSettings(SegmentationSettings):
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


class CipService(SegmentationService):
    """Consumer group ``cip`` on ``phagoflow.fields.acquired``: the core CIP segmenter."""

    name = "cip"
    group = "cip"
    method = "cip"
    topics = (ev.Topic.FIELDS_ACQUIRED.value,)
    settings: CipSettings

    def __init__(self, settings: CipSettings, *, http_port: int | None = None) -> None:
        super().__init__(settings, http_port=http_port)
        self.segmenter = make_segmenter("cip", cip_params=settings.cip)
        #: CIP "model version": the fingerprint of parameters and phagoflow version (16 hex).
        self.model_version = self.segmenter.fingerprint[:16]
