"""When to retrain: the "N new plates since the last model" rule (pure) and its inputs.

The rule is a pure function of plain values so it is tested without any server;
:func:`completed_plates` and :func:`last_model_time` read those values from the bucket (ingest
manifests, the model registry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phagoflow.registry.store import ModelRegistry
    from phagoflow.services.objectstore import ObjectStore

__all__ = [
    "CompletedPlate",
    "RetrainDecision",
    "completed_plates",
    "last_model_time",
    "retrain_due",
]


@dataclass(frozen=True)
class CompletedPlate:
    """A plate ingest declared complete.

    Attributes
    ----------
    plate : str
        Plate id.
    completed_at : datetime
        Aware UTC time of the manifest's last update (its completion).
    export_root : str
        The export folder as ingest saw it (the training pod mounts the share at the same path).
    """

    plate: str
    completed_at: datetime
    export_root: str = ""


@dataclass(frozen=True)
class RetrainDecision:
    """Outcome of :func:`retrain_due`.

    Attributes
    ----------
    due : bool
        Whether to start a training Job.
    new_plates : tuple of CompletedPlate
        Plates completed after the last model, oldest first.
    reason : str
        One readable line.
    """

    due: bool
    new_plates: tuple[CompletedPlate, ...]
    reason: str


def retrain_due(
    plates: Mapping[str, CompletedPlate] | list[CompletedPlate],
    last_model_at: datetime | None,
    *,
    min_new_plates: int,
) -> RetrainDecision:
    """Retrain once at least ``min_new_plates`` plates completed after the last model.

    Parameters
    ----------
    plates : list or mapping of CompletedPlate
        Completed plates (each once).
    last_model_at : datetime or None
        When the newest model version was stored (aware); ``None``: no model yet, every plate
        counts.
    min_new_plates : int
        N of the rule (>= 1).

    Raises
    ------
    ValueError
        ``min_new_plates < 1`` or a naive datetime.
    """
    if min_new_plates < 1:
        raise ValueError(f"min_new_plates must be >= 1, got {min_new_plates}")
    items = list(plates.values()) if isinstance(plates, Mapping) else list(plates)
    for t in [last_model_at, *(p.completed_at for p in items)]:
        if t is not None and t.tzinfo is None:
            raise ValueError(f"datetimes must be timezone-aware, got {t!r}")
    new = tuple(
        sorted(
            (p for p in items if last_model_at is None or p.completed_at > last_model_at),
            key=lambda p: (p.completed_at, p.plate),
        )
    )
    since = "ever" if last_model_at is None else f"since {last_model_at.isoformat()}"
    due = len(new) >= min_new_plates
    verb = "retrain" if due else "wait"
    return RetrainDecision(
        due, new, f"{verb}: {len(new)} new plate(s) {since} (threshold {min_new_plates})"
    )


def completed_plates(store: ObjectStore) -> list[CompletedPlate]:
    """Plates whose ingest manifest says ``plate_complete`` (``manifests/<plate>/ingest.json``)."""
    out = []
    for key in store.list_keys("manifests/"):
        if not key.endswith("/ingest.json"):
            continue
        doc = store.get_json(key)
        if not isinstance(doc, dict) or not doc.get("plate_complete"):
            continue
        out.append(
            CompletedPlate(
                plate=str(doc.get("plate", key.split("/")[1])),
                completed_at=datetime.fromisoformat(str(doc["updated_at"])),
                export_root=str(doc.get("export_root", "")),
            )
        )
    return out


def last_model_time(registry: ModelRegistry) -> datetime | None:
    """When the newest stored version was pushed (``None`` when the registry is empty)."""
    versions = registry.versions()
    return datetime.fromisoformat(versions[-1].pushed_at) if versions else None
