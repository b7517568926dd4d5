"""Which objects the report shows up close (phagoflow.embedded.crops), on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from phagoflow.embedded.crops import (
    CROP_PX,
    MIN_OBJECT_PX,
    Doubt,
    choose_doubts,
    mask_disagreements,
)

SHAPE = (120, 160)


def _masks() -> tuple[np.ndarray, np.ndarray]:
    """Five objects: only in A, only in B, classes swapped, outlines differ, and a speck."""
    a = np.zeros(SHAPE, np.uint8)
    b = np.zeros(SHAPE, np.uint8)
    a[10:14, 10:14] = 1  # only A: a 16 px phagophore
    b[10:15, 50:55] = 2  # only B: a 25 px autolysosome
    a[60:64, 10:14] = 1  # A phagophore, B autolysosome
    b[60:64, 10:14] = 2
    a[60:66, 60:66] = 2  # both autolysosome; B's is one row shorter
    b[60:65, 60:66] = 2
    a[100, 100] = 1  # a 1 px speck only in A: no candidate
    assert MIN_OBJECT_PX > 1
    return a, b


def test_each_disagreement_says_what_kind_it_is_and_why() -> None:
    a, b = _masks()
    doubts = mask_disagreements(a, b, pixel_size_um=0.2, names=("CIP", "CDL"))
    by_kind = {d.kind: d for d in doubts}
    assert sorted(by_kind) == ["class", "only A", "only B", "outline"] and len(doubts) == 4
    assert by_kind["only A"].reason == "CIP found a phagophore (0.64 µm²) that CDL did not"
    assert by_kind["only B"].reason == "CDL found an autolysosome (1 µm²) that CIP did not"
    assert by_kind["class"].reason == "CIP calls it a phagophore, CDL an autolysosome (0.64 µm²)"
    assert by_kind["outline"].reason.startswith("both find an autolysosome, but their outlines")
    assert by_kind["only B"].target == (10, 50, 15, 55)
    # whole-object disagreements count double: the 25 px miss outranks the 6 px outline gap
    assert doubts[0].kind == "only B" and doubts[-1].kind == "outline"


def test_masks_of_different_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        mask_disagreements(np.zeros((4, 4)), np.zeros((4, 5)), pixel_size_um=0.2, names=("A", "B"))


def _doubt(field: str, kind: str, score: float, y: float = 40.0) -> Doubt:
    return Doubt(field, (y, 50.0), score, f"{kind} {score}", (0, 0, 1, 1), kind=kind)


def test_the_crops_show_every_kind_before_more_of_the_commonest() -> None:
    # ten strong "only B" doubts in ten fields would otherwise fill all four crops
    found = [_doubt(f"r02c0{i}f01p01", "only B", 100.0 - i) for i in range(2, 10)]
    found += [_doubt("r03c02f01p01", "class", 9.0), _doubt("r03c03f01p01", "outline", 3.0)]
    chosen = choose_doubts(found, 4, SHAPE)
    assert [d.kind for d in chosen] == ["only B", "class", "outline", "only B"]
    assert [d.score for d in chosen] == [98.0, 9.0, 3.0, 97.0]
    assert len({d.field for d in chosen}) == 4  # one per field while there are fields
    for d in chosen:
        y0, x0, y1, x1 = d.box
        assert (y1 - y0, x1 - x0) == (CROP_PX, CROP_PX)
        assert min(y0, x0) >= 0 and y1 <= SHAPE[0] and x1 <= SHAPE[1]


def test_a_second_crop_of_one_field_never_repeats_the_first() -> None:
    field = "r02c02f01p01"
    found = [_doubt(field, "only B", 10.0), _doubt(field, "only B", 9.0, y=45.0)]
    found.append(_doubt(field, "only B", 8.0, y=100.0))
    chosen = choose_doubts(found, 3, SHAPE)
    assert [d.score for d in chosen] == [10.0, 8.0]  # 9.0 lies 5 px from the first
    assert choose_doubts(found, 0, SHAPE) == []
