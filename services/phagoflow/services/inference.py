"""inference: ``FieldAcquired`` → tiles → Triton (gRPC) → mask → ``MaskReady(method=cdl)``.

``phagoflow serve inference`` (consumer group ``cdl``; the deployable: ``services/inference/``),
the one segmentation loop (:class:`~phagoflow.services.segmentation.SegmentationService`) with
a Triton segmenter plugged in. The field is assembled as for cip
(:func:`phagoflow.services.fields.field_image`), then the core
:class:`~phagoflow.core.inference.Predictor` normalises it with the model card's normalisation,
cuts 256 × 256 tiles with a 32 px border (symmetric padding), and sends them in batches to
Triton through :class:`TritonTileBackend` — the core's tile-backend seam — before stitching and
taking the argmax. Objects are measured and counted with the core, as in ``phagoflow run``.

- **Model readiness**: setup waits (``PHAGOFLOW_TRITON_READY_TIMEOUT_S``) until Triton reports
  the model ready and pins the newest ready version (or ``PHAGOFLOW_TRITON_MODEL_VERSION``).
- **Promotion without downtime**: when a request for the pinned version fails and Triton serves
  another version instead (a promotion rewrote ``version_policy`` and Triton unloaded the old
  one: ``UNAVAILABLE ... is not at ready state``), the backend re-resolves and pins the version
  now serving (unless a version was configured explicitly), and the field is predicted again
  from its first tile, so that one mask never mixes two models. Each ``MaskReady``, mask key and
  objects key carries the version that produced that mask. No restart is needed.
- **Bounded in flight**: one request per worker at a time, ``PHAGOFLOW_INFERENCE_BATCH_SIZE``
  tiles each.
- **Timeouts and retries**: each request has a client timeout and is retried with exponential
  back-off; when Triton stays away, the record is not committed and is retried later (CIP
  results keep flowing meanwhile: the services are independent).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client import Counter
from pydantic import Field

from phagoflow import events as ev
from phagoflow.core.inference import Predictor, default_model_dir
from phagoflow.core.model_dir import ModelCard, read_model_card
from phagoflow.services.kafkaio import PermanentError, TransientError
from phagoflow.services.segmentation import SegmentationService, SegmentationSettings

__all__ = [
    "InferenceService",
    "InferenceSettings",
    "TritonSegmenter",
    "TritonTileBackend",
    "TritonUnavailable",
]

logger = logging.getLogger(__name__)

#: ``/readyz`` reason while Triton does not answer.
_TRITON_DOWN = "Triton unavailable"


class TritonUnavailable(TransientError):
    """Triton did not answer (or the model is not ready) after the bounded retries: transient."""


class ModelVersionChanged(TransientError):
    """The pinned version is no longer served and the backend switched to the serving one.

    Raised from the tile call that noticed it; the field must be predicted again from its first
    tile (:meth:`TritonSegmenter.segment` does), so that no mask mixes two versions.
    """


class InferenceSettings(SegmentationSettings):
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
    triton_probe_s : float
        While not ready because Triton did not answer, how often it is asked whether it serves
        again (``/readyz`` recovers without waiting for a record).
    triton_ready_timeout_s : float
        How long setup waits for the model to be ready before failing (then retried).
    model_dir : Path or None
        Model folder whose ``card.json`` gives the input normalisation (``PHAGOFLOW_MODEL_DIR``,
        the same setting as ``phagoflow run``); default: the packaged model.
    inference_batch_size : int
        Tiles per request.
    cell_readouts, cells
        As :class:`~phagoflow.settings.CellReadoutSettings` (the same variables as
        ``phagoflow run``).
    """

    inference_port: int = Field(default=8403, ge=0, le=65535)
    triton_url: str = "127.0.0.1:8001"
    triton_model: str = "autophagy_unet_cpu"
    triton_model_version: str = ""
    triton_timeout_s: float = Field(default=30.0, gt=0.0)
    triton_retries: int = Field(default=4, ge=1)
    triton_ready_timeout_s: float = Field(default=60.0, gt=0.0)
    triton_probe_s: float = Field(default=2.0, gt=0.0)
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
    follow : bool
        Switch to the version Triton serves when the pinned one stops being served (a
        promotion); False keeps the pinned version (an explicitly configured one).
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
        follow: bool = True,
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
        self.follow = follow
        self.timeout_s = timeout_s
        self.retries = retries
        self._should_stop = should_stop or (lambda: False)
        self.requests = 0
        #: Times the backend switched to another served version (promotions followed).
        self.switches = 0

    def ready_version(self, version: str | None = None) -> str | None:
        """The version Triton serves: ``version`` (default the pinned one) if ready, or with
        an empty version the newest ready one; None when none is ready or Triton is away.

        Every call has the client timeout: a frozen Triton must not hang the worker.
        """
        from tritonclient.utils import InferenceServerException

        wanted = self.version if version is None else version
        t = self.timeout_s
        try:
            if not self.client.is_model_ready(self.model, wanted, client_timeout=t):
                return None
            if wanted:
                return wanted
            versions = list(self.client.get_model_metadata(self.model, client_timeout=t).versions)
            ready = [
                v for v in versions if self.client.is_model_ready(self.model, v, client_timeout=t)
            ]
        except InferenceServerException:
            return None
        return (
            max(ready, key=lambda v: (len(v), int(v) if v.isdigit() else 0, v)) if ready else None
        )

    def _follow_serving(self) -> None:
        """After a failed request: if the pinned version is gone and another one serves,
        pin that one and raise :class:`ModelVersionChanged`; otherwise return (transient)."""
        if not self.follow or not self.version or self.ready_version() is not None:
            return
        serving = self.ready_version("")
        if serving is None or serving == self.version:
            return
        old, self.version = self.version, serving
        self.switches += 1
        logger.warning(
            "Triton model %s: version %s is no longer served; following version %s",
            self.model,
            old,
            serving,
        )
        raise ModelVersionChanged(f"model {self.model!r} version {old} replaced by {serving}")

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

    def _infer(self, inp: Any, out: Any) -> Any:
        """One request, answered or failed within ``timeout_s`` + 2 s whatever the server does.

        gRPC's own deadline is not enough: with Triton frozen (SIGSTOP) while a large request
        is being written, the blocking call was seen to hang far past its deadline, in
        ``call.next_event()`` (the HTTP/2 flow-control window never reopens). So the request
        is sent asynchronously and waited for here; past the hard deadline it is cancelled and
        the channel replaced (requests already stuck on it cannot block the next ones).
        """
        from tritonclient.utils import InferenceServerException

        done = threading.Event()
        answer: dict[str, Any] = {}

        def callback(result: Any, error: Any) -> None:
            answer["result"], answer["error"] = result, error
            done.set()

        call = self.client.async_infer(
            self.model,
            [inp],
            callback,
            model_version=self.version,
            outputs=[out],
            client_timeout=self.timeout_s,
        )
        hard_s = self.timeout_s + 2.0
        if not done.wait(hard_s):
            call.cancel()
            self._reconnect()
            raise InferenceServerException(f"no answer within {hard_s:g} s: cancelled, reconnected")
        if answer["error"] is not None:
            raise answer["error"]
        return answer["result"]

    def _reconnect(self) -> None:
        """A new gRPC channel; the old one is closed in the background (it may be wedged)."""
        old, self.client = self.client, self._grpc.InferenceServerClient(self.url)
        threading.Thread(target=old.close, name="triton-close", daemon=True).start()

    def __call__(self, tiles: NDArray[np.float32]) -> NDArray[np.float32]:
        from tritonclient.utils import InferenceServerException

        x = np.ascontiguousarray(tiles, dtype=np.float32)
        inp = self._grpc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = self._grpc.InferRequestedOutput("logits")
        delay = 0.5
        for attempt in range(1, self.retries + 1):
            try:
                result = self._infer(inp, out)
                logits = result.as_numpy("logits")
                if logits is None or logits.shape[:2] != (x.shape[0], 3):
                    raise PermanentError(f"Triton returned logits of shape {np.shape(logits)}")
                self.requests += 1
                return np.asarray(logits, dtype=np.float32)
            except InferenceServerException as exc:
                self._follow_serving()  # a promotion: re-resolve instead of retrying forever
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
    """A core :class:`~phagoflow.core.segmenters.Segmenter` whose U-Net runs on Triton.

    :attr:`last_version` is the Triton model version that produced the last mask (every tile
    of it): the version a result must be recorded under.

    Parameters
    ----------
    backend : TritonTileBackend
        Triton client; its ``version`` is the pinned version.
    card : ModelCard
        Card of the model serving at start (its normalisation is applied to the input).
    batch_size : int
        Tiles per request.
    card_source : callable, optional
        ``version -> ModelCard or None``: the card of another served version (the registry's),
        read when the backend follows a promotion, so that the new version's normalisation is
        applied; None (or a None answer) keeps the current card.
    """

    method = "cdl"
    #: Whole-field predictions tried when the served version changes during one field.
    attempts = 3

    def __init__(
        self,
        backend: TritonTileBackend,
        card: ModelCard,
        *,
        batch_size: int,
        card_source: Callable[[str], ModelCard | None] | None = None,
    ) -> None:
        self.backend = backend
        self.batch_size = batch_size
        self.card_source = card_source
        self._use_card(card)
        self._card_version = backend.version
        self.last_version = backend.version

    def _use_card(self, card: ModelCard) -> None:
        self.card = card
        self.predictor = Predictor(
            self.backend,
            normalisation=card.normalisation,
            in_channels=card.architecture.in_channels,
            batch_size=self.batch_size,
            card=card,
        )

    def _sync_card(self) -> None:
        """After a switch of version: the new version's card, when the registry has one."""
        version = self.backend.version
        if version == self._card_version or self.card_source is None:
            return
        card = self.card_source(version)  # StoreUnavailable: transient, the record is retried
        self._card_version = version
        if card is None:
            logger.warning("no card for model version %s: keeping %s", version, self.card.version)
        elif card != self.card:
            logger.info("model version %s: card %s (%s)", version, card.version, card.name)
            self._use_card(card)

    @property
    def provenance(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "triton_url": self.backend.url,
            "model": self.backend.model,
            "model_version": self.backend.version,
            "card_version": self.card.version,
            "model_pixel_size_um": self.card.pixel_size_um,
            "rescale_tolerance": self.predictor.rescale_tolerance,
            "min_object_area_um2": self.predictor.min_object_area_um2,
        }

    @property
    def fingerprint(self) -> str:
        return f"{self.backend.model}:{self.backend.version}"

    def segment(self, image: NDArray[Any], pixel_size_um: float) -> NDArray[Any]:
        """``(2, H, W)`` field → ``(H, W)`` uint8 mask, every tile from one model version.

        Raises
        ------
        ModelVersionChanged
            The served version changed during each of :attr:`attempts` predictions (transient:
            the record is retried later).
        TritonUnavailable
            Triton did not answer after the backend's retries.
        """
        for attempt in range(1, self.attempts + 1):
            self._sync_card()
            version = self.backend.version
            try:
                mask = self.predictor.predict(image, pixel_size_um)
            except ModelVersionChanged:
                if attempt == self.attempts:
                    raise
                continue  # the backend pinned the new version: predict the field again
            self.last_version = version
            return mask
        raise AssertionError("unreachable")  # pragma: no cover


class InferenceService(SegmentationService):
    """Consumer group ``cdl`` on ``phagoflow.fields.acquired``: the U-Net on Triton.

    The shared segmentation loop with :class:`TritonSegmenter` plugged in (set up once Triton
    reports the model ready), the Triton model as model name, the version that produced each
    mask as its version (:meth:`result_version`), and Triton's outages handled in
    :meth:`segment`.
    """

    name = "inference"
    group = "cdl"
    method = "cdl"
    topics = (ev.Topic.FIELDS_ACQUIRED.value,)
    max_poll_records = 1
    retry_backoff_s = 2.0
    settings: InferenceSettings

    def __init__(self, settings: InferenceSettings, *, http_port: int | None = None) -> None:
        super().__init__(settings, http_port=http_port)
        path = settings.model_dir if settings.model_dir is not None else default_model_dir()
        self.card = read_model_card(path)
        self.backend: TritonTileBackend | None = None
        self.model_name = settings.triton_model
        self.m_triton_errors = Counter(
            "phagoflow_triton_unavailable_total",
            "Records postponed because Triton did not answer",
            registry=self.registry,
        )
        self.m_switches = Counter(
            "phagoflow_model_version_switches_total",
            "Times inference followed Triton to a newly served model version (promotions)",
            registry=self.registry,
        )
        self._switches_seen = 0
        self._last_probe = 0.0

    def setup(self) -> None:
        s = self.settings
        self.backend = TritonTileBackend(
            s.triton_url,
            s.triton_model,
            version=s.triton_model_version,
            follow=not s.triton_model_version,  # an explicitly configured version stays pinned
            timeout_s=s.triton_timeout_s,
            retries=s.triton_retries,
            should_stop=lambda: self.stopping,
        )
        self._switches_seen = 0
        version = self.backend.wait_ready(s.triton_ready_timeout_s)
        self.backend.version = version
        self.model_version = version
        self.segmenter = TritonSegmenter(
            self.backend, self.card, batch_size=s.inference_batch_size, card_source=self.card_of
        )
        logger.info("Triton model %s version %s ready at %s", s.triton_model, version, s.triton_url)
        super().setup()

    def segment(self, event: ev.FieldAcquired) -> ev.MaskReady:
        """The shared loop's segmentation, with Triton's outages and version switches counted.

        :class:`TritonUnavailable` marks the service not ready (``/readyz`` 503) and is raised
        on (the record is retried later); the next answered field marks it ready again.
        """
        try:
            ready = super().segment(event)
        except TritonUnavailable:
            self.m_triton_errors.inc()
            self.set_not_ready(_TRITON_DOWN)
            raise
        finally:
            self._count_switches()
        self.set_ready()
        return ready

    def step(self) -> None:
        """The shared loop's step, then readiness recovered while idle (see below)."""
        super().step()
        self._recover_readiness()

    def _recover_readiness(self) -> None:
        """Ready again once Triton serves a version, even if no record comes to prove it.

        A worker marked not ready by an outage would otherwise stay 503 until its next answered
        field, forever when the group moved its partitions away meanwhile. Triton is asked at
        most every ``triton_probe_s`` seconds, and only while not ready because of it.
        """
        if self.backend is None or self.readiness()[0]:
            return
        if self._not_ready_reason != _TRITON_DOWN:
            return
        now = time.monotonic()
        if now - self._last_probe < self.settings.triton_probe_s:
            return
        self._last_probe = now
        if self.backend.ready_version("") is not None:
            logger.info("Triton serves model %s again: ready", self.model_name)
            self.set_ready()

    def card_of(self, version: str) -> ModelCard | None:
        """Card of Triton ``version`` from the model registry in the bucket, else None.

        The registry stores ``models/<triton model>/<version>/card.json`` (checksummed); a
        local stack without a registry answers None and the start card is kept.
        """
        from phagoflow.registry.store import ModelRegistry, RegistryError
        from phagoflow.services.objectstore import ObjectMissing

        if not version.isdigit():
            return None
        try:
            return ModelRegistry(self.store, model=self.settings.triton_model).card(int(version))
        except (RegistryError, ObjectMissing, ValueError) as exc:
            logger.warning(
                "no registry card for %s v%s: %s", self.settings.triton_model, version, exc
            )
            return None

    def result_version(self) -> str:
        """The Triton version that produced the segmenter's last mask."""
        assert isinstance(self.segmenter, TritonSegmenter)
        self.model_version = self.segmenter.last_version
        return self.model_version

    def _count_switches(self) -> None:
        assert self.backend is not None
        if self.backend.switches > self._switches_seen:
            self.m_switches.inc(self.backend.switches - self._switches_seen)
            self._switches_seen = self.backend.switches
