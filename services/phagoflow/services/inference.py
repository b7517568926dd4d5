"""inference: ``FieldAcquired`` → tiles → Triton (gRPC) → mask → ``MaskReady(method=cdl)``.

``phagoflow serve inference`` (consumer group ``cdl``). The field is assembled like the cip
service does (:func:`phagoflow.services.cip.field_image`), then the core
:class:`~phagoflow.core.inference.Predictor` normalises it with the model card's normalisation,
cuts 256 × 256 tiles with a 32 px border (symmetric padding), and sends them in batches to
Triton through :class:`TritonTileBackend` — the core's tile-backend seam — before stitching and
taking the argmax. Objects are measured and counted with the core, as in ``phagoflow run``.

- **Model readiness**: setup waits (``PHAGOFLOW_TRITON_READY_TIMEOUT_S``) until Triton reports
  the model ready; the version reported by Triton is the ``model_version`` of every result.
- **Bounded in flight**: one request per worker at a time, ``PHAGOFLOW_INFERENCE_BATCH_SIZE``
  tiles each.
- **Timeouts and retries**: each request has a client timeout and is retried with exponential
  back-off; when Triton stays away, the record is not committed and is retried later (CIP
  results keep flowing meanwhile: the services are independent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client import Counter
from pydantic import Field

from phagoflow import events as ev
from phagoflow.core.inference import Predictor, default_model_dir
from phagoflow.core.model_dir import ModelCard, read_model_card
from phagoflow.services.cip import segment_and_publish, segmentation_metrics
from phagoflow.services.common import ServiceSettings, log_context
from phagoflow.services.kafkaio import ConsumerService, PermanentError, TransientError

__all__ = [
    "InferenceService",
    "InferenceSettings",
    "TritonSegmenter",
    "TritonTileBackend",
    "TritonUnavailable",
]

logger = logging.getLogger(__name__)


class TritonUnavailable(TransientError):
    """Triton did not answer (or the model is not ready) after the bounded retries: transient."""


class InferenceSettings(ServiceSettings):
    """Settings of ``phagoflow serve inference``.

    Attributes
    ----------
    inference_port : int
        HTTP port (``PHAGOFLOW_INFERENCE_PORT``).
    triton_url : str
        Triton gRPC address ``host:port``.
    triton_model : str
        Model name in the repository (``autophagy_unet_cpu`` locally).
    triton_model_version : str
        Version to call; empty: the newest version Triton reports ready.
    triton_timeout_s : float
        Client timeout of one inference request.
    triton_retries : int
        Attempts per request before the record is retried later.
    triton_ready_timeout_s : float
        How long setup waits for the model to be ready before failing (then retried).
    model_dir : Path or None
        Model folder whose ``card.json`` gives the input normalisation (``PHAGOFLOW_MODEL_DIR``,
        the same setting as ``phagoflow run``); default: the packaged model.
    inference_batch_size : int
        Tiles per request.
    """

    inference_port: int = Field(default=8403, ge=0, le=65535)
    triton_url: str = "127.0.0.1:8001"
    triton_model: str = "autophagy_unet_cpu"
    triton_model_version: str = ""
    triton_timeout_s: float = Field(default=30.0, gt=0.0)
    triton_retries: int = Field(default=4, ge=1)
    triton_ready_timeout_s: float = Field(default=60.0, gt=0.0)
    model_dir: Path | None = None
    inference_batch_size: int = Field(default=8, ge=1, le=64)

    @property
    def http_port(self) -> int:
        return self.inference_port


class TritonTileBackend:
    """Tiles ``(n, 2, t, t)`` → logits ``(n, 3, t, t)`` through Triton's gRPC API.

    Parameters
    ----------
    url : str
        Triton gRPC address.
    model : str
        Model name; input ``"input"``, output ``"logits"``.
    version : str
        Model version, or empty for the newest ready one.
    timeout_s : float
        Client timeout per request.
    retries : int
        Attempts per request (exponential back-off from 0.5 s, capped at 5 s).
    should_stop : callable, optional
        Returns True when the service is stopping (retries end early).
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        version: str = "",
        timeout_s: float = 30.0,
        retries: int = 4,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.client = grpcclient.InferenceServerClient(url)
        self.url = url
        self.model = model
        self.version = version
        self.timeout_s = timeout_s
        self.retries = retries
        self._should_stop = should_stop or (lambda: False)
        self.requests = 0

    def ready_version(self) -> str | None:
        """The version Triton serves (the requested one, or the newest ready), else None."""
        from tritonclient.utils import InferenceServerException

        try:
            if not self.client.is_model_ready(self.model, self.version):
                return None
            if self.version:
                return self.version
            versions = list(self.client.get_model_metadata(self.model).versions)
        except InferenceServerException:
            return None
        ready = [v for v in versions if self.client.is_model_ready(self.model, v)]
        return max(ready, key=lambda v: (len(v), v)) if ready else None

    def wait_ready(self, timeout_s: float) -> str:
        """Block until the model is ready; returns its version.

        Raises
        ------
        TritonUnavailable
            Not ready within ``timeout_s`` (or stopping).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            version = self.ready_version()
            if version is not None:
                return version
            if time.monotonic() > deadline or self._should_stop():
                raise TritonUnavailable(
                    f"model {self.model!r} not ready on Triton {self.url} after {timeout_s:g} s"
                )
            time.sleep(0.5)

    def __call__(self, tiles: NDArray[np.float32]) -> NDArray[np.float32]:
        from tritonclient.utils import InferenceServerException

        x = np.ascontiguousarray(tiles, dtype=np.float32)
        inp = self._grpc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = self._grpc.InferRequestedOutput("logits")
        delay = 0.5
        for attempt in range(1, self.retries + 1):
            try:
                result = self.client.infer(
                    self.model,
                    [inp],
                    model_version=self.version,
                    outputs=[out],
                    client_timeout=self.timeout_s,
                )
                logits = result.as_numpy("logits")
                if logits is None or logits.shape[:2] != (x.shape[0], 3):
                    raise PermanentError(f"Triton returned logits of shape {np.shape(logits)}")
                self.requests += 1
                return np.asarray(logits, dtype=np.float32)
            except InferenceServerException as exc:
                if attempt == self.retries or self._should_stop():
                    raise TritonUnavailable(
                        f"Triton {self.url} model {self.model!r}: {exc} (after {attempt} attempts)"
                    ) from exc
                logger.warning(
                    "Triton request failed (attempt %d/%d): %s; retrying in %.1f s",
                    attempt,
                    self.retries,
                    exc,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")  # pragma: no cover


class TritonSegmenter:
    """A core :class:`~phagoflow.core.segmenters.Segmenter` whose U-Net runs on Triton."""

    method = "cdl"

    def __init__(self, backend: TritonTileBackend, card: ModelCard, *, batch_size: int) -> None:
        self.backend = backend
        self.card = card
        self.predictor = Predictor(
            backend,
            normalisation=card.normalisation,
            in_channels=card.architecture.in_channels,
            batch_size=batch_size,
            card=card,
        )

    @property
    def provenance(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "triton_url": self.backend.url,
            "model": self.backend.model,
            "model_version": self.backend.version,
            "card_version": self.card.version,
        }

    @property
    def fingerprint(self) -> str:
        return f"{self.backend.model}:{self.backend.version}"

    def segment(self, image: NDArray[Any], pixel_size_um: float) -> NDArray[Any]:
        return self.predictor.predict(image)


class InferenceService(ConsumerService):
    """Consumer group ``cdl`` on ``phagoflow.fields.acquired``."""

    name = "inference"
    group = "cdl"
    topics = (ev.Topic.FIELDS_ACQUIRED.value,)
    max_poll_records = 1
    retry_backoff_s = 2.0
    settings: InferenceSettings

    def __init__(self, settings: InferenceSettings, *, http_port: int | None = None) -> None:
        super().__init__(settings, http_port=http_port)
        path = settings.model_dir if settings.model_dir is not None else default_model_dir()
        self.card = read_model_card(path)
        self.backend: TritonTileBackend | None = None
        self.segmenter: TritonSegmenter | None = None
        self.model_version = ""
        self.m_fields, self.m_stage = segmentation_metrics(self.registry)
        self.m_triton_errors = Counter(
            "phagoflow_triton_unavailable_total",
            "Records postponed because Triton did not answer",
            registry=self.registry,
        )

    def setup(self) -> None:
        s = self.settings
        self.backend = TritonTileBackend(
            s.triton_url,
            s.triton_model,
            version=s.triton_model_version,
            timeout_s=s.triton_timeout_s,
            retries=s.triton_retries,
            should_stop=lambda: self.stopping,
        )
        version = self.backend.wait_ready(s.triton_ready_timeout_s)
        self.backend.version = version
        self.model_version = version
        self.segmenter = TritonSegmenter(self.backend, self.card, batch_size=s.inference_batch_size)
        logger.info("Triton model %s version %s ready at %s", s.triton_model, version, s.triton_url)
        super().setup()

    def handle(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        assert self.producer is not None and self.segmenter is not None
        event = ev.decode_record(topic, value, headers)
        if not isinstance(event, ev.FieldAcquired) or not event.HasField("field"):
            raise PermanentError(f"{topic}[{partition}]@{offset}: not a FieldAcquired with a field")
        fid = event.field
        try:
            name = ev.field_key(fid).name
        except ValueError as exc:
            raise PermanentError(str(exc)) from exc
        with log_context(plate=fid.plate, well=fid.well, field=name):
            try:
                ready = segment_and_publish(
                    event,
                    store=self.store,
                    segmenter=self.segmenter,
                    method="cdl",
                    model_name=self.settings.triton_model,
                    model_version=self.model_version,
                    producer=self.producer,
                    producer_name=self.name,
                )
            except TritonUnavailable:
                self.m_triton_errors.inc()
                self.set_not_ready("Triton unavailable")
                raise
            self.set_ready()
            for stage, seconds in ready.stage_seconds.items():
                self.m_stage.labels(stage, "cdl").observe(seconds)
            self.m_fields.labels("cdl").inc()
            logger.info(
                "field %s: %d phagophores, %d autolysosomes (cdl v%s)",
                name,
                ready.counts["phagophore"].objects,
                ready.counts["autolysosome"].objects,
                self.model_version,
            )
