"""Blind pairwise rating of masks, and the per-rater report (paper: expert rating 1–10 + KS test).

A :class:`RatingSession` lists fields in random order; for each field the two compared mask
sources (e.g. CIP and CDL) are shown as slots ``A`` and ``B`` in a random order, so the rater never
learns which method is which. The session (with its hidden slot → method map) is stored server-side
in ``RESULTS/ratings/sessions/<id>.json``; each score becomes one JSON line in
``RESULTS/ratings/<rater>.jsonl``::

    {"session": ..., "rater": ..., "field": ..., "slot": "A", "method": "cdl", "score": 7,
     "rated_at": "2026-11-26T02:00:00+00:00"}

:func:`rating_report` keeps the last score per (rater, session, field, method), and per rater
gives the score distribution and mean per method and a two-sample Kolmogorov–Smirnov test
(:func:`scipy.stats.ks_2samp`) for every pair of methods; :func:`write_rating_report` writes
``report.json`` and a ``report.png`` of the distributions.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCORE_RANGE",
    "SLOTS",
    "RatingItem",
    "RatingSession",
    "create_session",
    "format_rating_report",
    "load_session",
    "rating_report",
    "ratings_dir",
    "read_ratings",
    "record_scores",
    "write_rating_report",
]

#: Slot labels shown to the rater, in display order.
SLOTS = ("A", "B")
#: Inclusive score range.
SCORE_RANGE = (1, 10)

_SESSION_RE = re.compile(r"[0-9a-f]{16}")


class RatingItem(BaseModel):
    """One field of a session and its hidden slot → method assignment."""

    model_config = ConfigDict(frozen=True)

    field: str
    slots: dict[str, str]


class RatingSession(BaseModel):
    """A blinded rating session (stored server-side; the client only sees fields and slots)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=_SESSION_RE.pattern)
    rater: str
    methods: tuple[str, str]
    created: str
    items: tuple[RatingItem, ...]
    #: True when created with the rater's personal token: only that token may then use it.
    personal: bool = False


def ratings_dir(results_root: Path) -> Path:
    """``RESULTS/ratings``."""
    return results_root / "ratings"


def _session_path(results_root: Path, session_id: str) -> Path:
    if not _SESSION_RE.fullmatch(session_id):
        raise KeyError(f"no rating session {session_id[:40]!r}")
    return ratings_dir(results_root) / "sessions" / f"{session_id}.json"


def create_session(
    results_root: Path,
    rater: str,
    methods: tuple[str, str],
    fields: Sequence[str],
    *,
    n_fields: int | None = None,
    rng: np.random.Generator | int | None = None,
    personal: bool = False,
) -> RatingSession:
    """Create and store a session over ``fields`` (shuffled) with randomised slot order.

    Parameters
    ----------
    results_root : Path
        The results folder.
    rater : str
        Rater name (already validated by the caller: it becomes a file name).
    methods : (str, str)
        The two mask sources to compare.
    fields : sequence of str
        Fields where both sources have a mask.
    n_fields : int, optional
        Rate at most this many fields (a random subset); default all.
    rng : Generator or int, optional
        Randomness for the field order and the slot assignment.
    personal : bool
        The rater authenticated with a personal token (the session is then theirs only).

    Raises
    ------
    ValueError
        The two methods are equal or no field is available.
    """
    if methods[0] == methods[1]:
        raise ValueError(f"compare two different mask sources, got {methods[0]!r} twice")
    if not fields:
        raise ValueError(f"no field has both a {methods[0]!r} and a {methods[1]!r} mask")
    gen = np.random.default_rng(rng)
    order = [fields[i] for i in gen.permutation(len(fields))]
    if n_fields is not None:
        order = order[: max(1, n_fields)]
    items = []
    for name in order:
        pair = list(methods) if gen.random() < 0.5 else [methods[1], methods[0]]
        items.append(RatingItem(field=name, slots=dict(zip(SLOTS, pair, strict=True))))
    session = RatingSession(
        id=secrets.token_hex(8),
        rater=rater,
        methods=methods,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        items=tuple(items),
        personal=personal,
    )
    path = _session_path(results_root, session.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(session.model_dump_json(indent=2))
    os.replace(tmp, path)
    return session


def load_session(results_root: Path, session_id: str) -> RatingSession:
    """Load a stored session; ``KeyError`` when the id is malformed or unknown."""
    path = _session_path(results_root, session_id)
    try:
        return RatingSession.model_validate_json(path.read_text())
    except OSError as exc:
        raise KeyError(f"no rating session {session_id!r}") from exc


def record_scores(
    results_root: Path,
    session: RatingSession,
    index: int,
    scores: dict[str, int],
    *,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Append the scores of item ``index`` (one per slot) to ``RESULTS/ratings/<rater>.jsonl``.

    Raises
    ------
    IndexError
        ``index`` is outside the session.
    ValueError
        A slot is missing or unknown, or a score is outside :data:`SCORE_RANGE`.
    """
    if not 0 <= index < len(session.items):
        raise IndexError(f"item {index} outside session of {len(session.items)} item(s)")
    if set(scores) != set(SLOTS):
        raise ValueError(f"give one score per slot {list(SLOTS)}, got {sorted(scores)}")
    lo, hi = SCORE_RANGE
    for slot, score in scores.items():
        if not lo <= score <= hi:
            raise ValueError(f"score of slot {slot} is {score}; expected {lo}–{hi}")
    item = session.items[index]
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    lines = [
        {
            "session": session.id,
            "rater": session.rater,
            "field": item.field,
            "slot": slot,
            "method": item.slots[slot],
            "score": int(scores[slot]),
            "rated_at": stamp,
        }
        for slot in SLOTS
    ]
    path = ratings_dir(results_root) / f"{session.rater}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write("".join(json.dumps(line) + "\n" for line in lines))
    return lines


def read_ratings(results_root: Path) -> list[dict[str, Any]]:
    """Every rating line under ``RESULTS/ratings/*.jsonl`` (malformed lines are skipped)."""
    out: list[dict[str, Any]] = []
    for path in sorted(ratings_dir(results_root).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and {"rater", "method", "score", "field"} <= doc.keys():
                out.append(doc)
    return out


def rating_report(ratings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Summarise ratings per rater: distribution, mean and KS test between methods.

    The last score per (rater, session, field, method) counts (a re-rated item replaces the
    earlier score).

    Returns
    -------
    dict
        ``{"raters": {rater: {"n": {m: n}, "mean": {m: x}, "histogram": {m: [n_1..n_10]},
        "ks": [{"a", "b", "statistic", "pvalue"}]}}, "mean": {m: x}, "n_ratings": n}``.
    """
    from scipy.stats import ks_2samp

    last: dict[tuple[str, str, str, str], int] = {}
    for r in ratings:
        last[(str(r["rater"]), str(r.get("session", "")), str(r["field"]), str(r["method"]))] = int(
            r["score"]
        )
    by_rater: dict[str, dict[str, list[int]]] = {}
    for (rater, _s, _f, method), score in last.items():
        by_rater.setdefault(rater, {}).setdefault(method, []).append(score)
    lo, hi = SCORE_RANGE
    raters: dict[str, Any] = {}
    pooled: dict[str, list[int]] = {}
    for rater, per_method in sorted(by_rater.items()):
        entry: dict[str, Any] = {"n": {}, "mean": {}, "histogram": {}, "ks": []}
        for method, scores in sorted(per_method.items()):
            pooled.setdefault(method, []).extend(scores)
            entry["n"][method] = len(scores)
            entry["mean"][method] = float(np.mean(scores))
            entry["histogram"][method] = np.bincount(
                np.asarray(scores) - lo, minlength=hi - lo + 1
            ).tolist()
        for a, b in itertools.combinations(sorted(per_method), 2):
            res = ks_2samp(per_method[a], per_method[b])
            entry["ks"].append(
                {"a": a, "b": b, "statistic": float(res.statistic), "pvalue": float(res.pvalue)}
            )
        raters[rater] = entry
    return {
        "raters": raters,
        "mean": {m: float(np.mean(s)) for m, s in sorted(pooled.items())},
        "n_ratings": len(last),
    }


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raters = list(report["raters"])
    fig, axes = plt.subplots(
        1, max(1, len(raters)), figsize=(4.2 * max(1, len(raters)), 3.2), squeeze=False
    )
    lo, hi = SCORE_RANGE
    xs = np.arange(lo, hi + 1)
    for ax, rater in zip(axes[0], raters, strict=False):
        entry = report["raters"][rater]
        methods = list(entry["histogram"])
        width = 0.8 / max(1, len(methods))
        for i, method in enumerate(methods):
            ax.bar(
                xs + (i - (len(methods) - 1) / 2) * width,
                entry["histogram"][method],
                width=width,
                label=f"{method} (mean {entry['mean'][method]:.1f})",
            )
        ks = "; ".join(f"KS p={k['pvalue']:.3g}" for k in entry["ks"])
        ax.set_title(f"{rater}\n{ks}", fontsize=9)
        ax.set_xlabel("score")
        ax.set_xticks(xs)
        ax.set_ylabel("fields")
        ax.legend(fontsize=8)
    if not raters:
        axes[0][0].text(0.5, 0.5, "no ratings yet", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_rating_report(results_root: Path | str, out_dir: Path | str | None = None) -> Path:
    """Write ``report.json`` and ``report.png`` (default in ``RESULTS/ratings``); return the dir."""
    root = Path(results_root)
    out = Path(out_dir) if out_dir is not None else ratings_dir(root)
    out.mkdir(parents=True, exist_ok=True)
    report = rating_report(read_ratings(root))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, out / "report.png")
    return out


def format_rating_report(report: dict[str, Any]) -> str:
    """A plain-text table of a :func:`rating_report` result."""
    lines = [f"{'rater':<16} {'method':<10} {'n':>4} {'mean':>6}"]
    for rater, entry in report["raters"].items():
        for method in entry["n"]:
            lines.append(
                f"{rater:<16} {method:<10} {entry['n'][method]:>4} {entry['mean'][method]:>6.2f}"
            )
        for k in entry["ks"]:
            lines.append(
                f"{rater:<16} KS {k['a']} vs {k['b']}: D={k['statistic']:.3f} p={k['pvalue']:.3g}"
            )
    for method, mean in report["mean"].items():
        lines.append(f"{'(all raters)':<16} {method:<10} {'':>4} {mean:>6.2f}")
    return "\n".join(lines)
