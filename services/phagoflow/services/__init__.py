"""Streaming services: thin adapters between Kafka, the object store and the pure core.

``phagoflow serve <name>`` (or the deployable's entry point, ``services/<name>/main.py``) runs
one of them until SIGTERM (see ``docs/streaming.md`` and ``docs/architecture.md``):

- ``ingest`` (:mod:`phagoflow.services.ingest`): watch folder → object store → ``FieldAcquired``;
- ``cip`` (:mod:`phagoflow.services.cip`): ``FieldAcquired`` → core CIP → ``MaskReady``;
- ``inference`` (:mod:`phagoflow.services.inference`): ``FieldAcquired`` → tiles → Triton →
  ``MaskReady(method=cdl)``;
- ``metrics`` (:mod:`phagoflow.services.metrics`): ``MaskReady`` → per-well counts,
  ``WellComplete``, reports, Prometheus and the JSON API;
- ``review`` (:mod:`phagoflow.review.store`): the review-and-correct app on a plate in the
  bucket (uvicorn, not a Kafka consumer).

cip and inference are one segmentation service (:mod:`~phagoflow.services.segmentation`) with
the method plugged in; every Kafka consumer runs the one loop of
:class:`~phagoflow.services.kafkaio.ConsumerService`. Shared plumbing:
:mod:`~phagoflow.services.common` (settings, JSON logs, HTTP endpoints, lifecycle),
:mod:`~phagoflow.services.objectstore` (S3 with checksums and bounded retries),
:mod:`~phagoflow.services.kafkaio` (producer/consumer, at-least-once loop, dead letters),
:mod:`~phagoflow.services.fields` (fields from the bucket as arrays, results as objects).
Importing this package starts nothing and needs none of the ``stream`` extra's clients.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["SERVICES", "ServiceSpec", "build_service", "main", "serve_service"]

#: Top-level modules of the ``stream`` extra (``pip install 'phagoflow[stream]'``).
STREAM_MODULES = frozenset({"kafka", "minio", "google", "prometheus_client", "tritonclient"})
#: ... and of every extra a deployable may need (review: the web app).
_EXTRA_MODULES = STREAM_MODULES | {"fastapi", "uvicorn", "starlette"}


@dataclass(frozen=True)
class ServiceSpec:
    """How to build and run one deployable (its folder: ``services/<name>/``).

    Attributes
    ----------
    module : str
        Module defining the service and its settings.
    service : str
        A :class:`~phagoflow.services.common.Service` subclass run by
        :func:`~phagoflow.services.common.serve`, or, with ``entry``, a function
        ``(settings) -> exit status`` that serves by itself (review: uvicorn).
    settings : str
        Its settings class (``PHAGOFLOW_*`` variables).
    entry : bool
        ``service`` is such a function, not a ``Service``.
    extras : tuple of str
        The extras it needs beyond the core (named in the error when one is missing).
    """

    module: str
    service: str
    settings: str
    entry: bool = False
    extras: tuple[str, ...] = ("stream",)


#: Service name → how to build it. ``phagoflow serve NAME`` accepts exactly these names.
SERVICES: dict[str, ServiceSpec] = {
    "ingest": ServiceSpec("phagoflow.services.ingest", "IngestService", "IngestSettings"),
    "cip": ServiceSpec("phagoflow.services.cip", "CipService", "CipSettings"),
    "metrics": ServiceSpec("phagoflow.services.metrics", "MetricsService", "MetricsSettings"),
    "inference": ServiceSpec(
        "phagoflow.services.inference", "InferenceService", "InferenceSettings"
    ),
    "review": ServiceSpec(
        "phagoflow.review.store",
        "serve_review_service",
        "ReviewServiceSettings",
        entry=True,
        extras=("stream", "review"),
    ),
}


class MissingExtra(ImportError):
    """A service's optional dependencies are not installed; the message names the extra."""


def _spec(name: str) -> ServiceSpec:
    try:
        return SERVICES[name]
    except KeyError:
        raise ValueError(f"unknown service {name!r}; expected one of {sorted(SERVICES)}") from None


@contextlib.contextmanager
def _extras_of(name: str, spec: ServiceSpec) -> Iterator[None]:
    """Turn a missing optional client inside the block into :class:`MissingExtra`."""
    try:
        yield
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in _EXTRA_MODULES:
            raise
        extras = ",".join(spec.extras)
        raise MissingExtra(
            f"phagoflow serve {name} needs the {' and '.join(spec.extras)} extra "
            f"(no module {top!r}): pip install 'phagoflow[{extras}]'"
        ) from exc


def _import(name: str, spec: ServiceSpec) -> Any:
    """The service's module; a missing optional client raises :class:`MissingExtra`."""
    with _extras_of(name, spec):
        return importlib.import_module(spec.module)


def build_service(name: str, **settings: Any) -> Any:
    """The service ``name`` with settings from ``PHAGOFLOW_*`` (``settings`` override them).

    Raises
    ------
    ValueError
        Unknown name, or a deployable that is not a :class:`~phagoflow.services.common.Service`
        (review: run it with :func:`serve_service`).
    MissingExtra
        Its optional dependencies are not installed.
    """
    spec = _spec(name)
    if spec.entry:
        raise ValueError(f"{name} is not a Service object; run it with serve_service({name!r})")
    module = _import(name, spec)
    return getattr(module, spec.service)(getattr(module, spec.settings)(**settings))


def serve_service(name: str, **settings: Any) -> int:
    """Run service ``name`` in this process until SIGTERM/SIGINT; returns the exit status.

    A missing extra (and, for review, a plate that cannot be opened) is one line on stderr and
    exit status 1, as ``phagoflow serve`` reports it.
    """
    spec = _spec(name)
    try:
        if not spec.entry:
            service = build_service(name, **settings)
            from phagoflow.services.common import serve

            return serve(service)
        module = _import(name, spec)
        with _extras_of(name, spec):
            return int(getattr(module, spec.service)(getattr(module, spec.settings)(**settings)))
    except MissingExtra as exc:
        print(f"phagoflow: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # review: a plate the bucket cannot give (ResultsError)
        if not spec.entry:
            raise
        print(f"phagoflow: {exc}", file=sys.stderr)
        return 1


def main(name: str) -> None:
    """Entry point of a deployable's ``services/<name>/main.py``: serve, exit with its status."""
    sys.exit(serve_service(name))
