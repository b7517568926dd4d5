"""Tests for phagoflow.core.counting: exact measurements on drawn shapes, exact aggregation."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from phagoflow.core.counting import (
    FIELD_COLUMNS,
    OBJECT_COLUMNS,
    WELL_COLUMNS,
    FieldCounts,
    aggregate_wells,
    count_field,
    measure_objects,
)
from phagoflow.core.opera.catalogue import FieldKey


def _scene() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """A 3x3 phagophore square and a 4x5 autolysosome rectangle with known intensities."""
    image = np.zeros((2, 20, 30), dtype=np.float32)
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[2:5, 3:6] = 1  # 9 px
    image[0, 2:5, 3:6] = 100.0
    image[1, 2:5, 3:6] = 50.0
    image[1, 3, 4] = 140.0  # green mean (8*50 + 140)/9 = 60
    mask[10:14, 20:25] = 2  # 20 px
    image[0, 10:14, 20:25] = 200.0
    image[1, 10:14, 20:25] = 10.0
    return image, mask


def test_areas_means_ratio_bbox_centroid_exact() -> None:
    image, mask = _scene()
    objs = measure_objects(image, mask, 0.25)
    assert [o.class_ for o in objs] == ["phagophore", "autolysosome"]
    assert [o.object for o in objs] == [1, 2]
    p, a = objs
    assert p.area_um2 == pytest.approx(9 * 0.0625)
    assert a.area_um2 == pytest.approx(20 * 0.0625)
    assert p.mean_dsred == pytest.approx(100.0)
    assert p.mean_phluorin == pytest.approx(60.0)
    assert p.green_red_ratio == pytest.approx(0.6)
    assert a.green_red_ratio == pytest.approx(0.05)
    assert (p.bbox_y0, p.bbox_x0, p.bbox_y1, p.bbox_x1) == (2, 3, 5, 6)
    assert (a.bbox_y0, a.bbox_x0, a.bbox_y1, a.bbox_x1) == (10, 20, 14, 25)
    assert (p.centroid_y, p.centroid_x) == pytest.approx((3.0, 4.0))
    assert (a.centroid_y, a.centroid_x) == pytest.approx((11.5, 22.0))


def test_area_scales_with_pixel_size() -> None:
    image, mask = _scene()
    a1 = measure_objects(image, mask, 0.2)[1].area_um2
    a2 = measure_objects(image, mask, 0.4)[1].area_um2
    assert a2 == pytest.approx(4 * a1)


def test_eight_connectivity_joins_diagonal_pixels() -> None:
    image = np.ones((2, 6, 6), dtype=np.float32)
    mask = np.zeros((6, 6), dtype=np.uint8)
    mask[1, 1] = mask[2, 2] = 1  # corner-touching: one object
    mask[4, 4] = 1  # separate
    objs = measure_objects(image, mask, 1.0)
    assert sorted(o.area_um2 for o in objs) == [1.0, 2.0]


def test_classes_touching_are_separate_objects() -> None:
    image = np.ones((2, 5, 8), dtype=np.float32)
    mask = np.zeros((5, 8), dtype=np.uint8)
    mask[1:4, 1:4] = 1
    mask[1:4, 4:7] = 2
    objs = measure_objects(image, mask, 1.0)
    assert [(o.class_, o.area_um2) for o in objs] == [("phagophore", 9.0), ("autolysosome", 9.0)]


def test_labels_split_a_component_and_vote_class() -> None:
    image, mask = _scene()
    labels = np.zeros(mask.shape, dtype=np.int32)
    labels[10:14, 20:22] = 5
    labels[10:14, 22:25] = 7
    labels[2:5, 3:6] = 3
    objs = measure_objects(image, mask, 1.0, labels=labels)
    assert [(o.class_, o.area_um2) for o in objs] == [
        ("phagophore", 9.0),
        ("autolysosome", 8.0),
        ("autolysosome", 12.0),
    ]


def test_zero_red_gives_nan_ratio_and_empty_mask_no_objects() -> None:
    image = np.zeros((2, 4, 4), dtype=np.float32)
    mask = np.zeros((4, 4), dtype=np.uint8)
    assert measure_objects(image, mask, 0.2) == []
    mask[1, 1] = 2
    (obj,) = measure_objects(image, mask, 0.2)
    assert math.isnan(obj.green_red_ratio)


def test_row_has_object_columns() -> None:
    image, mask = _scene()
    row = measure_objects(image, mask, 0.2)[0].as_row()
    assert tuple(row) == OBJECT_COLUMNS
    assert row["class"] == "phagophore"


@pytest.mark.parametrize(
    ("image_shape", "mask_shape"),
    [((20, 30), (20, 30)), ((3, 20, 30), (20, 30)), ((2, 20, 30), (20, 31))],
)
def test_bad_shapes_raise_quoting_shape(
    image_shape: tuple[int, ...], mask_shape: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match=r"\(\d+, \d+"):
        measure_objects(np.zeros(image_shape), np.zeros(mask_shape, dtype=np.uint8), 0.2)


def test_bad_mask_values_labels_and_pixel_size_raise() -> None:
    image, mask = _scene()
    with pytest.raises(ValueError, match="0, 1 or 2"):
        measure_objects(image, mask * 2, 0.2)
    with pytest.raises(ValueError, match="integer"):
        measure_objects(image, mask.astype(np.float32), 0.2)
    with pytest.raises(ValueError, match="pixel_size_um"):
        measure_objects(image, mask, 0.0)
    with pytest.raises(ValueError, match="disagree"):
        measure_objects(image, mask, 0.2, labels=np.zeros(mask.shape, dtype=np.int32))


KEY = FieldKey(2, 5, 1)


def test_count_field() -> None:
    image, mask = _scene()
    mask[15:17, 2:4] = 1  # second phagophore, 4 px
    fc = count_field(measure_objects(image, mask, 0.5), plate="P1", key=KEY, method="cip")
    assert (fc.phagophores, fc.autolysosomes) == (2, 1)
    assert fc.phagophore_area_um2 == pytest.approx(13 * 0.25)
    assert fc.autolysosome_area_um2 == pytest.approx(20 * 0.25)
    row = fc.as_row()
    assert tuple(row) == FIELD_COLUMNS
    assert (row["well"], row["field"]) == ("r02c05", "r02c05f01p01")


def _fc(plate: str, row: int, col: int, field: int, method: str, p: int, a: int) -> FieldCounts:
    return FieldCounts(plate, FieldKey(row, col, field), method, p, a, 0.5 * p, 2.0 * a)


def test_aggregate_wells_totals_means_sd_sorted() -> None:
    fields = [
        _fc("P2", 1, 1, 1, "cip", 1, 1),
        _fc("P1", 2, 3, 1, "cip", 2, 4),
        _fc("P1", 2, 3, 2, "cip", 4, 8),
        _fc("P1", 2, 3, 3, "cip", 9, 0),
        _fc("P1", 2, 3, 1, "cdl", 7, 3),
        _fc("P1", 1, 12, 1, "cip", 0, 5),
    ]
    wells = aggregate_wells(fields)
    assert [(w.plate, w.well, w.method) for w in wells] == [
        ("P1", "r01c12", "cip"),
        ("P1", "r02c03", "cdl"),
        ("P1", "r02c03", "cip"),
        ("P2", "r01c01", "cip"),
    ]
    w = wells[2]
    assert (w.row, w.col, w.fields, w.phagophores, w.autolysosomes) == (2, 3, 3, 15, 12)
    assert w.phagophores_per_field_mean == pytest.approx(5.0)
    # sample sd of (2, 4, 9): deviations -3, -1, 4 -> sqrt(26 / 2)
    assert w.phagophores_per_field_sd == pytest.approx(math.sqrt(13.0))
    assert w.autolysosomes_per_field_mean == pytest.approx(4.0)
    assert w.autolysosomes_per_field_sd == pytest.approx(4.0)
    assert w.phagophore_area_um2 == pytest.approx(7.5)
    assert w.autolysosome_area_um2 == pytest.approx(24.0)
    assert w.autolysosome_phagophore_ratio == pytest.approx(12 / 15)
    single = wells[1]
    assert (single.fields, single.phagophores_per_field_sd) == (1, 0.0)
    assert math.isnan(wells[0].autolysosome_phagophore_ratio)
    assert tuple(w.as_row()) == WELL_COLUMNS
    assert WELL_COLUMNS[:8] == (
        "plate",
        "well",
        "row",
        "col",
        "method",
        "fields",
        "phagophores",
        "autolysosomes",
    )


def test_aggregate_wells_rejects_duplicates_and_accepts_empty() -> None:
    assert aggregate_wells([]) == []
    dup = _fc("P1", 1, 1, 1, "cip", 1, 1)
    with pytest.raises(ValueError, match="duplicate"):
        aggregate_wells([dup, dup])


def test_aggregate_wells_keeps_failed_fields_and_wells_whose_every_field_failed() -> None:
    counted = [_fc("P1", 2, 3, 1, "cip", 4, 2), _fc("P1", 2, 3, 2, "cdl", 6, 1)]
    failed = [
        ("P1", FieldKey(2, 3, 2), "cip"),  # r02c03: one of two cip fields lost
        ("P1", FieldKey(2, 3, 2), "cip"),  # reported twice: counts once
        ("P1", FieldKey(2, 3, 2), "cdl"),  # also counted for cdl: counted wins
        ("P1", FieldKey(4, 5, 1), "cip"),  # r04c05: every field failed
        ("P1", FieldKey(4, 5, 2), "cip"),
    ]
    wells = {(w.well, w.method): w for w in aggregate_wells(counted, failed=failed)}
    assert sorted(wells) == [("r02c03", "cdl"), ("r02c03", "cip"), ("r04c05", "cip")]
    half = wells[("r02c03", "cip")]
    assert (half.fields, half.fields_ok, half.fields_failed) == (2, 1, 1)
    assert (half.phagophores, half.phagophores_per_field_mean) == (4, 4.0)
    cdl = wells[("r02c03", "cdl")]
    assert (cdl.fields, cdl.fields_ok, cdl.fields_failed) == (1, 1, 0)
    lost = wells[("r04c05", "cip")]
    assert (lost.row, lost.col, lost.fields, lost.fields_ok, lost.fields_failed) == (4, 5, 2, 0, 2)
    assert math.isnan(lost.phagophores_per_field_mean) and math.isnan(lost.phagophores_per_field_sd)
    row = lost.as_row()
    assert row["phagophores"] is None and row["autolysosome_area_um2"] is None  # blank, not 0
    assert half.as_row()["phagophores"] == 4
