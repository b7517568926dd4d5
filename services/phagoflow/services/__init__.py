"""Streaming services: thin adapters between Kafka, the object store and the pure core.

``phagoflow serve <name>`` runs one of them until SIGTERM (see ``docs/streaming.md``):

- ``ingest`` (:mod:`phagoflow.services.ingest`): watch folder → object store → ``FieldAcquired``;
- ``cip`` (:mod:`phagoflow.services.cip`): ``FieldAcquired`` → core CIP → ``MaskReady``;
- ``inference`` (:mod:`phagoflow.services.inference`): ``FieldAcquired`` → tiles → Triton →
  ``MaskReady(method=cdl)``;
- ``metrics`` (:mod:`phagoflow.services.metrics`): ``MaskReady`` → per-well counts,
  ``WellComplete``, reports, Prometheus and the JSON API.

Shared plumbing: :mod:`~phagoflow.services.common` (settings, JSON logs, HTTP endpoints,
lifecycle), :mod:`~phagoflow.services.objectstore` (S3 with checksums and bounded retries),
:mod:`~phagoflow.services.kafkaio` (producer/consumer, at-least-once loop, dead letters).
Importing this package starts nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SERVICES", "build_service", "serve_service"]

#: Service name → (module, service class, settings class).
SERVICES: dict[str, tuple[str, str, str]] = {
    "ingest": ("phagoflow.services.ingest", "IngestService", "IngestSettings"),
    "cip": ("phagoflow.services.cip", "CipService", "CipSettings"),
    "metrics": ("phagoflow.services.metrics", "MetricsService", "MetricsSettings"),
    "inference": ("phagoflow.services.inference", "InferenceService", "InferenceSettings"),
}


def build_service(name: str, **settings: Any) -> Any:
    """The service ``name`` with settings from ``PHAGOFLOW_*`` (``settings`` override them)."""
    try:
        module_name, service_cls, settings_cls = SERVICES[name]
    except KeyError:
        raise ValueError(f"unknown service {name!r}; expected one of {sorted(SERVICES)}") from None
    module = importlib.import_module(module_name)
    return getattr(module, service_cls)(getattr(module, settings_cls)(**settings))


def serve_service(name: str, **settings: Any) -> int:
    """Run service ``name`` in this process until SIGTERM/SIGINT; returns the exit status."""
    from phagoflow.services.common import serve

    return serve(build_service(name, **settings))
