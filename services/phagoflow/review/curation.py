"""Correction time: how long reviewers spent correcting masks, from the curated provenance.

The browser measures, per field, the *active* editing time of each save (the gaps between its
actions — opening the field, strokes, fills, deletions, undo/redo, save — each counted at most
60 s, so an idle tab adds at most a minute) and counts the edit operations; both travel with
``PUT /api/fields/{field}/curated`` and are stored in the provenance as ``seconds_editing`` and
``edit_operations`` (``null`` when a client did not measure them, e.g. a script). A field saved
several times keeps the earlier saves under ``history``; its correction time is the sum over all
its saves.

:func:`curation_report` sums this over a plate (fields curated and timed, total, median and mean
minutes per timed field, edit operations, per user); ``phagoflow curation report`` prints it and
``GET /api/progress`` carries :func:`curation_summary`.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_EDIT_OPERATIONS",
    "MAX_SECONDS_EDITING",
    "FieldCorrection",
    "curation_report",
    "curation_summary",
    "field_correction",
    "format_curation_report",
    "read_curated_sidecars",
]

logger = logging.getLogger(__name__)

#: Largest accepted editing time of one save, in seconds (24 h).
MAX_SECONDS_EDITING = 24 * 3600.0
#: Largest accepted number of edit operations of one save.
MAX_EDIT_OPERATIONS = 1_000_000


@dataclass(frozen=True)
class FieldCorrection:
    """The correction effort of one curated field, over all its saves.

    Attributes
    ----------
    field : str
        Field name.
    saves : int
        Number of saves (the current one plus its ``history``; 0 without provenance).
    seconds : float or None
        Sum of the measured editing seconds of the saves; ``None`` when no save was timed.
    edit_operations : int or None
        Sum of the counted edit operations; ``None`` when no save counted them.
    by_user : dict of str to (int, float)
        Per user who saved: number of saves and measured seconds.
    """

    field: str
    saves: int
    seconds: float | None
    edit_operations: int | None
    by_user: dict[str, tuple[int, float]]


def _bounded(value: Any, limit: float) -> float | None:
    """``value`` as a float when it is a number in ``[0, limit]``, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if 0.0 <= number <= limit else None


def field_correction(field: str, doc: Mapping[str, Any]) -> FieldCorrection:
    """Sum the measured time and operations of a provenance document and its ``history``."""
    if not doc:
        return FieldCorrection(field, 0, None, None, {})
    history = doc.get("history")
    saves = [h for h in history if isinstance(h, Mapping)] if isinstance(history, list) else []
    saves.append(doc)
    seconds: float | None = None
    operations: int | None = None
    by_user: dict[str, tuple[int, float]] = {}
    for save in saves:
        sec = _bounded(save.get("seconds_editing"), MAX_SECONDS_EDITING)
        if sec is not None:
            seconds = (seconds or 0.0) + sec
        ops = _bounded(save.get("edit_operations"), MAX_EDIT_OPERATIONS)
        if ops is not None:
            operations = (operations or 0) + int(ops)
        user = str(save.get("user", ""))
        n, total = by_user.get(user, (0, 0.0))
        by_user[user] = (n + 1, total + (sec or 0.0))
    return FieldCorrection(field, len(saves), seconds, operations, by_user)


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _mean(values: list[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60.0, 3)


def curation_report(provenances: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Correction effort of the curated fields of a plate.

    Parameters
    ----------
    provenances : mapping of str to mapping
        Field name → provenance document of its curated mask (``{}`` when it has none).

    Returns
    -------
    dict
        ``plate_id`` (from the documents, ``None`` if they do not say), ``fields_curated``,
        ``fields_timed`` (fields with at least one timed save), ``saves``, ``seconds_total``,
        ``minutes_total``, ``minutes_median`` and ``minutes_mean`` (per timed field; ``None``
        when none is timed), ``edit_operations_total``, ``edit_operations_median`` (per field
        that counted them), ``by_user`` (user → ``saves``, ``fields``, ``minutes_total``) and
        ``fields`` (per field: ``field``, ``saves``, ``minutes``, ``edit_operations``).
    """
    corrections = [field_correction(name, doc) for name, doc in sorted(provenances.items())]
    timed = [c.seconds for c in corrections if c.seconds is not None]
    operations = [c.edit_operations for c in corrections if c.edit_operations is not None]
    by_user: dict[str, dict[str, Any]] = {}
    for c in corrections:
        for user, (n, sec) in c.by_user.items():
            entry = by_user.setdefault(user, {"saves": 0, "fields": 0, "seconds": 0.0})
            entry["saves"] += n
            entry["fields"] += 1
            entry["seconds"] += sec
    plates = {str(d["plate_id"]) for d in provenances.values() if d.get("plate_id")}
    seconds_total = float(sum(timed))
    return {
        "plate_id": plates.pop() if len(plates) == 1 else None,
        "fields_curated": len(corrections),
        "fields_timed": len(timed),
        "saves": sum(c.saves for c in corrections),
        "seconds_total": round(seconds_total, 3),
        "minutes_total": _minutes(seconds_total),
        "minutes_median": _minutes(_median(timed)),
        "minutes_mean": _minutes(_mean(timed)),
        "edit_operations_total": int(sum(operations)),
        "edit_operations_median": _median([float(o) for o in operations]),
        "by_user": {
            user: {
                "saves": e["saves"],
                "fields": e["fields"],
                "minutes_total": _minutes(e["seconds"]),
            }
            for user, e in sorted(by_user.items())
        },
        "fields": [
            {
                "field": c.field,
                "saves": c.saves,
                "minutes": _minutes(c.seconds),
                "edit_operations": c.edit_operations,
            }
            for c in corrections
        ],
    }


def curation_summary(provenances: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The plate totals of :func:`curation_report` (no per-field or per-user lists)."""
    report = curation_report(provenances)
    return {
        k: report[k]
        for k in (
            "fields_timed",
            "seconds_total",
            "minutes_total",
            "minutes_median",
            "edit_operations_total",
        )
    }


def read_curated_sidecars(folder: Path) -> dict[str, dict[str, Any]]:
    """Provenance sidecars ``<field>.json`` of a curated-mask folder, by field name.

    Unreadable files are skipped with a warning; a mask without a sidecar is not listed.
    """
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("skipping %s: %s", path, exc)
            continue
        if isinstance(doc, dict):
            docs[path.stem] = doc
    return docs


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_curation_report(report: Mapping[str, Any]) -> str:
    """Plain-text summary of :func:`curation_report`."""
    plate = f" of plate {report['plate_id']}" if report.get("plate_id") else ""
    lines = [
        f"curation{plate}: {report['fields_curated']} field(s) curated, "
        f"{report['fields_timed']} timed, {report['saves']} save(s)",
        f"  correction time: total {_fmt(report['minutes_total'])} min, "
        f"median {_fmt(report['minutes_median'], 2)} min per field, "
        f"mean {_fmt(report['minutes_mean'], 2)} min",
        f"  edit operations: total {report['edit_operations_total']}, "
        f"median {_fmt(report['edit_operations_median'])} per field",
    ]
    if report["by_user"]:
        lines.append(f"  {'user':<20} {'saves':>6} {'fields':>7} {'minutes':>8}")
        for user, u in report["by_user"].items():
            lines.append(
                f"  {user or '?':<20} {u['saves']:>6} {u['fields']:>7} "
                f"{_fmt(u['minutes_total']):>8}"
            )
    return "\n".join(lines)
