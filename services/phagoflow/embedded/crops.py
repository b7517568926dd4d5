"""Which objects the report shows up close: the most doubtful ones, and why.

A reviewer learns most from the objects the methods are least sure about, not from the busiest
fields. With CIP and CDL both run, an object is doubtful where their masks disagree
(:func:`mask_disagreements`): one method found it and the other did not, they gave it different
classes, or they drew it differently; the score is the number of pixels of the object (the
union of both masks) on which the two masks differ, doubled when they differ on all of it (a
missed or reclassified object); specks under :data:`MIN_OBJECT_PX` are not candidates. With one
method, an object is doubtful when its green/red ratio —
what tells a phagophore (both channels) from an autolysosome (DsRed only) — lies nearest the
plate's own boundary between the two classes (:func:`ratio_doubts`).

:func:`pick_doubts` ranks candidates over the plate — the strongest of each kind of
disagreement first (so the crops do not all show one kind), then one per field — and gives each
a window around it (:data:`CROP_PX` field pixels) and a sentence saying why it was chosen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from phagoflow.core.classes import OBJECT_CLASS_NAMES, OBJECT_CLASSES, ObjectClass
from phagoflow.core.counting import ObjectRecord
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.wells import well_name
from phagoflow.embedded.masks import mask_path, read_mask

if TYPE_CHECKING:
    from phagoflow.embedded.run import RunResult

__all__ = [
    "CROP_PX",
    "Doubt",
    "choose_doubts",
    "class_boundary",
    "mask_disagreements",
    "pick_doubts",
    "ratio_doubts",
]

#: Side of a crop in field pixels (64 px = 12.8 µm at 0.2 µm/px: a few cells' worth).
CROP_PX = 64
#: Smallest object (pixels, union of both masks) offered as a disagreement: a 1–3 px speck
#: that one method drew says little about the object classes.
MIN_OBJECT_PX = 6
_EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Doubt:
    """One doubtful object and where to look.

    Attributes
    ----------
    field : str
        Field name ``rRRcCCfFFpPP`` ("" until :func:`pick_doubts` sets it).
    centre : (float, float)
        Object centre (row, column) in field pixels.
    score : float
        Higher is more doubtful (only compared within one kind of candidate).
    reason : str
        Why it was chosen, in words.
    target : (int, int, int, int)
        The object's bounding box ``(y0, x0, y1, x1)`` in field pixels, half-open.
    box : (int, int, int, int)
        Crop ``(y0, x0, y1, x1)`` in field pixels, half-open.
    kind : str
        What kind of doubt: ``"only A"`` / ``"only B"`` (one method found it; A and B as in
        ``names`` of :func:`mask_disagreements`), ``"class"`` (different classes),
        ``"outline"`` (same class, outlines differ) or ``"ratio"`` (:func:`ratio_doubts`).
    """

    field: str
    centre: tuple[float, float]
    score: float
    reason: str
    target: tuple[int, int, int, int] = (0, 0, 0, 0)
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    kind: str = ""

    @property
    def caption(self) -> str:
        """Where the object is, in words, e.g. ``"B03, field 2, at x 312, y 140 px"``."""
        key = FieldKey.parse(self.field)
        cy, cx = self.centre
        return f"{well_name(key.row, key.col)}, field {key.field}, at x {cx:.0f}, y {cy:.0f} px"


def mask_disagreements(
    a: NDArray[Any], b: NDArray[Any], *, pixel_size_um: float, names: tuple[str, str]
) -> list[Doubt]:
    """Objects on which two class masks disagree, most doubtful first.

    Parameters
    ----------
    a, b : (H, W) uint8 ndarray
        Class masks (0 background, 1 phagophore, 2 autolysosome) of the same field.
    pixel_size_um : float
        µm per pixel (areas in the reasons).
    names : (str, str)
        Method names of ``a`` and ``b`` as shown (e.g. ``("CIP", "CDL")``).

    Returns
    -------
    list of Doubt
        One per connected object of the union of both foregrounds (8-connected) of at least
        :data:`MIN_OBJECT_PX` pixels with at least one pixel of disagreement; ``field`` and
        ``box`` unset.
    """
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} and {b.shape}")
    union, n = ndi.label((a > 0) | (b > 0), structure=_EIGHT)
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    differ = ndi.sum_labels(a != b, union, idx)
    size = ndi.sum_labels(np.ones_like(a, bool), union, idx)
    centres = ndi.center_of_mass(np.ones_like(a, bool), union, idx)
    votes_a = [ndi.sum_labels(a == c, union, idx) for c in OBJECT_CLASSES]
    votes_b = [ndi.sum_labels(b == c, union, idx) for c in OBJECT_CLASSES]
    slices = ndi.find_objects(union)
    out = []
    for i in np.flatnonzero((differ > 0) & (size >= MIN_OBJECT_PX)):
        va = (float(votes_a[0][i]), float(votes_a[1][i]))
        vb = (float(votes_b[0][i]), float(votes_b[1][i]))
        area = float(size[i]) * pixel_size_um**2
        fraction = float(differ[i] / size[i])
        reason, kind = _disagreement_reason(va, vb, area, fraction, names)
        cy, cx = centres[i]
        ys, xs = slices[i]
        target = (ys.start, xs.start, ys.stop, xs.stop)
        score = float(differ[i]) * (2.0 if fraction == 1.0 else 1.0)
        out.append(Doubt("", (float(cy), float(cx)), score, reason, target, kind=kind))
    out.sort(key=lambda d: (-d.score, d.reason))
    return out


def _disagreement_reason(
    va: tuple[float, float],
    vb: tuple[float, float],
    area_um2: float,
    fraction: float,
    names: tuple[str, str],
) -> tuple[str, str]:
    """Why two masks' votes for one object make it doubtful, in words, and the kind of doubt
    (:attr:`Doubt.kind`)."""
    na, nb = names
    cls_a = _vote_winner(va)
    cls_b = _vote_winner(vb)
    size = f"{area_um2:.2g} µm²"
    if not cls_a:
        return f"{nb} found {_a(cls_b)} ({size}) that {na} did not", "only B"
    if not cls_b:
        return f"{na} found {_a(cls_a)} ({size}) that {nb} did not", "only A"
    if cls_a != cls_b:
        return f"{na} calls it {_a(cls_a)}, {nb} {_a(cls_b)} ({size})", "class"
    why = f"both find {_a(cls_a)}, but their outlines differ on {fraction:.0%} of its {size}"
    return why, "outline"


def _vote_winner(votes: tuple[float, float]) -> str:
    """Class name of the larger of ``(phagophore, autolysosome)`` votes (ties: phagophore), or
    ``""`` when there is no vote."""
    if not sum(votes):
        return ""
    winner = ObjectClass.AUTOLYSOSOME if votes[1] > votes[0] else ObjectClass.PHAGOPHORE
    return winner.label


def _a(noun: str) -> str:
    """``"a phagophore"``, ``"an autolysosome"``."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def ratio_doubts(objects: Sequence[ObjectRecord], boundary: float) -> list[Doubt]:
    """Objects whose green/red ratio is nearest ``boundary`` (in log ratio), nearest first.

    The score is ``exp(−|log(ratio / boundary)|)``: 1 on the boundary.
    """
    out = []
    for o in objects:
        r = o.green_red_ratio
        if not (math.isfinite(r) and r > 0):
            continue
        score = math.exp(-abs(math.log(r / boundary)))
        reason = (
            f"it is called {_a(o.class_)}, but its green/red ratio {r:.2f} lies close to "
            f"{boundary:.2f}, this plate's boundary between phagophores (both channels) and "
            "autolysosomes (DsRed only)"
        )
        target = (o.bbox_y0, o.bbox_x0, o.bbox_y1, o.bbox_x1)
        out.append(Doubt("", (o.centroid_y, o.centroid_x), score, reason, target, kind="ratio"))
    out.sort(key=lambda d: -d.score)
    return out


def class_boundary(objects: Sequence[ObjectRecord]) -> float | None:
    """Geometric mean of the median green/red ratios of the plate's two classes, or ``None``
    when either class has no object with a ratio."""
    medians = []
    for name in OBJECT_CLASS_NAMES.values():
        ratios = [o.green_red_ratio for o in objects if o.class_ == name]
        ratios = [r for r in ratios if math.isfinite(r) and r > 0]
        if not ratios:
            return None
        medians.append(float(np.median(ratios)))
    return math.sqrt(medians[0] * medians[1])


def _box(
    centre: tuple[float, float], shape: tuple[int, int], side: int
) -> tuple[int, int, int, int]:
    h, w = shape
    side_y, side_x = min(side, h), min(side, w)
    y0 = min(max(0, round(centre[0]) - side_y // 2), h - side_y)
    x0 = min(max(0, round(centre[1]) - side_x // 2), w - side_x)
    return (y0, x0, y0 + side_y, x0 + side_x)


def pick_doubts(result: RunResult, n: int) -> list[Doubt]:
    """The ``n`` most doubtful objects of a run, each with its crop box (:func:`choose_doubts`).

    With ``cip`` and ``cdl`` both counted, the candidates are mask disagreements in the
    ``4 n`` fields whose counts differ most; else ratio doubts over every counted field.
    """
    if n <= 0:
        return []
    if "cip" in result.methods and "cdl" in result.methods:
        found = _mask_candidates(result, n)
    else:
        found = _ratio_candidates(result)
    return choose_doubts(found, n, result.catalogue.size_yx)


def choose_doubts(found: Sequence[Doubt], n: int, shape: tuple[int, int]) -> list[Doubt]:
    """``n`` of the candidates ``found`` (each with its ``field`` set), each given its crop box
    in a field of ``shape``.

    First the strongest candidate of each kind (:attr:`Doubt.kind`) in a field not yet shown,
    so that the crops show every kind of disagreement there is and not n times the commonest;
    then the strongest of each further field; then the rest, never a crop that mostly repeats
    another.
    """
    ranked = sorted(found, key=lambda d: -d.score)
    chosen: list[Doubt] = []
    for d in ranked:  # the best of each kind
        if len(chosen) < n and all(c.kind != d.kind and c.field != d.field for c in chosen):
            chosen.append(d)
    for d in ranked:  # then the best of each field
        if len(chosen) < n and all(c.field != d.field for c in chosen):
            chosen.append(d)
    for d in ranked:  # then the rest
        if len(chosen) < n and not any(_overlaps(c, d) for c in chosen):
            chosen.append(d)
    return [replace(d, box=_box(d.centre, shape, CROP_PX)) for d in chosen]


def _overlaps(a: Doubt, b: Doubt) -> bool:
    near = CROP_PX / 2
    return (
        a.field == b.field
        and max(abs(a.centre[0] - b.centre[0]), abs(a.centre[1] - b.centre[1])) < near
    )


def _mask_candidates(result: RunResult, n: int) -> list[Doubt]:
    by_field: dict[str, dict[str, int]] = {}
    for o in result.outcomes:
        if o.counts is not None:
            by_field.setdefault(o.name, {})[o.method] = o.counts.phagophores + (
                o.counts.autolysosomes
            )
    both = {k: v for k, v in by_field.items() if "cip" in v and "cdl" in v}

    def gap(name: str) -> float:
        c = both[name]
        return abs(c["cip"] - c["cdl"]) / max(1, c["cip"] + c["cdl"])

    ranked = sorted(both, key=lambda k: (-gap(k), k))
    shape = result.catalogue.size_yx
    out: list[Doubt] = []
    for name in ranked[: 4 * n]:
        masks = [read_mask(mask_path(result.out_dir, m, name), shape) for m in ("cip", "cdl")]
        if masks[0] is None or masks[1] is None:
            continue
        doubts = mask_disagreements(
            masks[0][0],
            masks[1][0],
            pixel_size_um=result.catalogue.pixel_size_um,
            names=("CIP", "CDL"),
        )
        out += [replace(d, field=name) for d in _best_of_each_kind(doubts, 3)]
    return out


def _ratio_candidates(result: RunResult) -> list[Doubt]:
    objects = [o for oc in result.outcomes if oc.counts is not None for o in oc.objects]
    boundary = class_boundary(objects)
    if boundary is None:
        return []
    out: list[Doubt] = []
    for oc in result.outcomes:
        if oc.counts is not None:
            best = ratio_doubts(oc.objects, boundary)[:3]
            out += [replace(d, field=oc.name) for d in best]
    return out


def _best_of_each_kind(doubts: Sequence[Doubt], n: int) -> list[Doubt]:
    """Up to ``n`` of ``doubts`` (sorted, strongest first): the best of each kind, then the
    strongest others; strongest first."""
    best: dict[str, Doubt] = {}
    for d in doubts:
        best.setdefault(d.kind, d)
    picked = list(best.values())[:n]
    picked += [d for d in doubts if d not in picked][: n - len(picked)]
    return sorted(picked, key=lambda d: -d.score)
