"""Tests of phagoflow.core.evaluation: every expected number is worked out by hand below."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from phagoflow.core import evaluation as ev
from phagoflow.core.evaluation import (
    BoxStats,
    EvaluationConfig,
    SegmentationScores,
    bf_score,
    confusion_matrix,
    count_errors,
    default_bf_tolerance,
    evaluate_masks,
    format_table,
    match_boxes,
)

# 4 x 4 field used for the pixel metrics.
TRUTH_4 = np.array(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 0, 0],
        [2, 2, 0, 0],
    ],
    dtype=np.uint8,
)
PRED_4 = np.array(
    [
        [0, 1, 1, 1],
        [0, 0, 1, 0],
        [2, 0, 0, 0],
        [2, 2, 2, 2],
    ],
    dtype=np.uint8,
)
# truth 0 (8 px) -> predicted 0,1,0,0 | 0,0,2,2 = five 0, one 1, two 2
# truth 1 (4 px) -> predicted 1,1,1,0               = one 0, three 1
# truth 2 (4 px) -> predicted 2,0,2,2               = one 0, three 2
CONFUSION_4 = [[5, 1, 2], [1, 3, 0], [1, 0, 3]]
# N = 16. One-vs-rest counts (TP = M[c,c], FN = row - TP, FP = column - TP, TN = N - rest):
#   class 0: TP 5, FN 3, FP 2 (7 - 5), TN 6
#   class 1: TP 3, FN 1, FP 1 (4 - 3), TN 11
#   class 2: TP 3, FN 1, FP 2 (5 - 3), TN 10
# truth pixel counts (weights): 8, 4, 4


def _square(shape: tuple[int, int], r0: int, c0: int, size: int, value: int = 1) -> np.ndarray:
    out = np.zeros(shape, dtype=np.uint8)
    out[r0 : r0 + size, c0 : c0 + size] = value
    return out


# ------------------------------------------------------------------ confusion and pixel metrics


def test_confusion_matrix_entries() -> None:
    m = confusion_matrix(TRUTH_4, PRED_4)
    assert m.dtype == np.int64
    assert m.tolist() == CONFUSION_4


def test_per_class_metrics_by_hand() -> None:
    r = evaluate_masks([(TRUTH_4, PRED_4)])
    pc = r.per_class
    # accuracy (TP + TN) / N: (5 + 6)/16, (3 + 11)/16, (3 + 10)/16
    np.testing.assert_allclose(pc["accuracy"], [11 / 16, 14 / 16, 13 / 16])
    # precision TP / (TP + FP): 5/7, 3/4, 3/5
    np.testing.assert_allclose(pc["precision"], [5 / 7, 3 / 4, 3 / 5])
    # recall TP / (TP + FN): 5/8, 3/4, 3/4
    np.testing.assert_allclose(pc["recall"], [5 / 8, 3 / 4, 3 / 4])
    # specificity TN / (TN + FP): 6/8, 11/12, 10/12
    np.testing.assert_allclose(pc["specificity"], [6 / 8, 11 / 12, 10 / 12])
    # IoU TP / (TP + FP + FN): 5/10, 3/5, 3/6
    np.testing.assert_allclose(pc["iou"], [0.5, 0.6, 0.5])
    # normalised confusion: rows divided by 8, 4, 4
    np.testing.assert_allclose(
        r.normalized_confusion, [[5 / 8, 1 / 8, 2 / 8], [1 / 4, 3 / 4, 0], [1 / 4, 0, 3 / 4]]
    )
    assert r.n_pixels == 16
    assert r.n_images == 1


def test_aggregations_by_hand() -> None:
    agg = evaluate_masks([(TRUTH_4, PRED_4)]).aggregate
    # global: trace / N = 11/16 for accuracy, precision and recall (micro averages)
    assert agg["accuracy"]["global"] == pytest.approx(11 / 16)
    assert agg["precision"]["global"] == pytest.approx(11 / 16)
    assert agg["recall"]["global"] == pytest.approx(11 / 16)
    # sum TN = 6 + 11 + 10 = 27, sum FP = 2 + 1 + 2 = 5 -> 27/32
    assert agg["specificity"]["global"] == pytest.approx(27 / 32)
    # sum TP = 11, sum FP = 5, sum FN = 3 + 1 + 1 = 5 -> 11/21
    assert agg["iou"]["global"] == pytest.approx(11 / 21)

    # mean over the three classes
    assert agg["accuracy"]["mean"] == pytest.approx((11 + 14 + 13) / 48)
    assert agg["precision"]["mean"] == pytest.approx((5 / 7 + 3 / 4 + 3 / 5) / 3)
    assert agg["recall"]["mean"] == pytest.approx((0.625 + 0.75 + 0.75) / 3)
    assert agg["specificity"]["mean"] == pytest.approx((0.75 + 11 / 12 + 10 / 12) / 3)
    assert agg["iou"]["mean"] == pytest.approx((0.5 + 0.6 + 0.5) / 3)

    # weighted by truth pixels 8, 4, 4 (sum 16)
    assert agg["accuracy"]["weighted"] == pytest.approx((8 * 11 + 4 * 14 + 4 * 13) / 16 / 16)
    assert agg["precision"]["weighted"] == pytest.approx((8 * 5 / 7 + 4 * 0.75 + 4 * 0.6) / 16)
    # (8 * 5/8 + 4 * 3/4 + 4 * 3/4) / 16 = (5 + 3 + 3) / 16 = global accuracy
    assert agg["recall"]["weighted"] == pytest.approx(11 / 16)
    # (8 * 6/8 + 4 * 11/12 + 4 * 10/12) / 16 = (6 + 11/3 + 10/3) / 16 = 13/16
    assert agg["specificity"]["weighted"] == pytest.approx(13 / 16)
    # (8 * 0.5 + 4 * 0.6 + 4 * 0.5) / 16 = 8.4 / 16
    assert agg["iou"]["weighted"] == pytest.approx(0.525)


def test_matlab_dataset_metrics() -> None:
    mat = evaluate_masks([(TRUTH_4, PRED_4)]).matlab
    assert mat["GlobalAccuracy"] == pytest.approx(11 / 16)
    # MATLAB's class accuracy is recall: mean(5/8, 3/4, 3/4)
    assert mat["MeanAccuracy"] == pytest.approx(2.125 / 3)
    assert mat["MeanIoU"] == pytest.approx(1.6 / 3)
    assert mat["WeightedIoU"] == pytest.approx(0.525)
    assert set(mat) == {"GlobalAccuracy", "MeanAccuracy", "MeanIoU", "WeightedIoU", "MeanBFScore"}


def test_undefined_ratios_are_nan_and_skipped() -> None:
    # class 2 absent from truth and prediction: precision/recall/IoU 0/0 -> nan, left out of means
    truth = np.array([[0, 0], [1, 1]], dtype=np.uint8)
    pred = np.array([[0, 1], [1, 1]], dtype=np.uint8)
    r = evaluate_masks([(truth, pred)])
    assert math.isnan(r.per_class["iou"][2])
    assert math.isnan(r.per_class["precision"][2])
    # class 2 specificity TN / (TN + FP) = 4 / 4
    assert r.per_class["specificity"][2] == pytest.approx(1.0)
    # IoU: class 0 1/2, class 1 2/3 -> mean (1/2 + 2/3) / 2
    assert r.aggregate["iou"]["mean"] == pytest.approx((0.5 + 2 / 3) / 2)


# ------------------------------------------------------------------------------- validation


def test_shape_mismatch_quotes_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        confusion_matrix(TRUTH_4, np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(3, 4\)"):
        evaluate_masks([(TRUTH_4, PRED_4[:3])])
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 3\)"):
        bf_score(TRUTH_4 > 0, PRED_4[:, :3] > 0)
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(2, 2\)"):
        match_boxes(TRUTH_4 > 0, np.zeros((2, 2), bool))


def test_label_and_dtype_validation() -> None:
    bad = TRUTH_4.copy()
    bad[0, 0] = 3
    with pytest.raises(ValueError, match=r"labels in \[0, 3\].*0\.\.2"):
        confusion_matrix(bad, PRED_4)
    with pytest.raises(ValueError, match="prediction"):
        SegmentationScores().add(TRUTH_4, PRED_4.astype(np.int16) - 1)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(TRUTH_4.astype(np.float32), PRED_4)
    with pytest.raises(ValueError, match="2-D"):
        confusion_matrix(TRUTH_4[None], PRED_4[None])
    with pytest.raises(ValueError, match="iou_threshold"):
        match_boxes(TRUTH_4 > 0, PRED_4 > 0, iou_threshold=0.0)
    with pytest.raises(ValueError, match="tolerance"):
        bf_score(TRUTH_4 > 0, PRED_4 > 0, tolerance_px=-1.0)


# ----------------------------------------------------------------------------------- BF score

# A 4 x 4 square at rows 3-6, cols 3-6 in a 10 x 10 image has a 12-pixel boundary ring:
# rows 3 and 6 (cols 3-6, 8 px) and cols 3 and 6 (rows 4-5, 4 px).
SQ = _square((10, 10), 3, 3, 4).astype(bool)


def test_bf_identical_masks_is_one() -> None:
    assert bf_score(SQ, SQ, tolerance_px=0) == (1.0, 1.0, 1.0)
    assert bf_score(SQ, SQ) == (1.0, 1.0, 1.0)


def test_bf_square_shifted_by_one_pixel() -> None:
    shifted = np.roll(SQ, 1, axis=1)  # cols 4-7
    # tolerance 0: coinciding boundary pixels are row 3 cols 4-6 and row 6 cols 4-6 = 6 of 12
    assert bf_score(SQ, shifted, tolerance_px=0) == pytest.approx((0.5, 0.5, 0.5))
    # tolerance 1: every boundary pixel has a boundary pixel of the other square 0 or 1 px away
    assert bf_score(SQ, shifted, tolerance_px=1) == pytest.approx((1.0, 1.0, 1.0))
    # default tolerance 0.0075 * hypot(10, 10) = 0.106 px behaves like 0
    assert bf_score(SQ, shifted) == pytest.approx((0.5, 0.5, 0.5))


def test_bf_square_shifted_by_two_pixels() -> None:
    shifted = np.roll(SQ, 2, axis=1)  # cols 5-8
    # tolerance 0: row 3 cols 5-6, row 6 cols 5-6 coincide = 4 of 12
    assert bf_score(SQ, shifted, tolerance_px=0) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    # tolerance 1: rows 3/6 cols 5, 6, 7 (3 + 3) and col 5 rows 4-5 (next to col 6) match;
    # col 8 (2 px from col 6) and the row pixels at col 8 do not: 8 of 12 each way
    assert bf_score(SQ, shifted, tolerance_px=1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))


def test_bf_small_square_inside_large_one() -> None:
    small = _square((10, 10), 4, 4, 2).astype(bool)  # all 4 pixels are boundary
    assert bf_score(SQ, small, tolerance_px=0) == (0.0, 0.0, 0.0)
    # tolerance 1: each small pixel is 1 px from the ring -> precision 4/4; ring pixels next to
    # the small square (2 per side, 8) match, the 4 corners are sqrt(2) away -> recall 8/12
    p, r, f = bf_score(SQ, small, tolerance_px=1)
    assert (p, r) == pytest.approx((1.0, 2 / 3))
    assert f == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))  # 0.8
    # tolerance sqrt(2) reaches the corners
    assert bf_score(SQ, small, tolerance_px=math.sqrt(2)) == pytest.approx((1.0, 1.0, 1.0))


def test_bf_image_frame_is_not_a_boundary() -> None:
    left5 = np.zeros((10, 10), bool)
    left5[:, :5] = True  # boundary: col 4 only (10 px), the frame does not count
    left6 = np.zeros((10, 10), bool)
    left6[:, :6] = True  # boundary: col 5 only
    assert bf_score(left5, left6, tolerance_px=0) == (0.0, 0.0, 0.0)
    assert bf_score(left5, left6, tolerance_px=1) == (1.0, 1.0, 1.0)


def test_bf_empty_boundaries() -> None:
    empty = np.zeros((10, 10), bool)
    assert all(math.isnan(v) for v in bf_score(empty, empty))
    assert all(math.isnan(v) for v in bf_score(~empty, ~empty))  # full masks: no boundary
    assert bf_score(SQ, empty, tolerance_px=2) == (0.0, 0.0, 0.0)  # missed region
    assert bf_score(empty, SQ, tolerance_px=2) == (0.0, 0.0, 0.0)  # spurious region


def test_default_tolerance_is_matlab_fraction_of_diagonal() -> None:
    # sqrt(512**2 + 680**2) = sqrt(724544) = 851.2015...; * 0.0075 = 6.384
    assert default_bf_tolerance((512, 680)) == pytest.approx(6.38401, abs=1e-4)


@pytest.mark.parametrize("tolerance", [0.0, 0.5, 1.0, 1.5, math.sqrt(5), 3.0, 6.38])
@pytest.mark.parametrize("method", ["offsets", "kdtree", "auto"])
def test_boundary_matching_equals_brute_force(tolerance: float, method: str) -> None:
    rng = np.random.default_rng(7)
    shape = (30, 41)
    src = np.flatnonzero(rng.random(shape) < 0.08)
    dst = np.flatnonzero(rng.random(shape) < 0.05)
    coords = lambda f: np.column_stack(np.divmod(f, shape[1]))  # noqa: E731
    expected = int((cdist(coords(src), coords(dst)).min(axis=1) <= tolerance + 1e-9).sum())
    assert ev._count_matched(src, dst, shape, tolerance, method=method) == expected


def test_bf_absent_classes_and_mean_over_images() -> None:
    sq1 = _square((10, 10), 3, 3, 4, value=1)
    sq2 = _square((10, 10), 3, 3, 4, value=2)
    sq2_shift = np.roll(sq2, 1, axis=1)
    # field A: identical class-1 squares, no class 2 -> bg 1, class 1 1, class 2 nan
    # field B: class-2 square shifted by 1 px, tolerance 0, no class 1:
    #   class 2: 6/12 both ways -> 0.5
    #   background boundary = the 16 bg pixels 4-adjacent to the square (rows 2 and 7, cols 3-6;
    #   cols 2 and 7, rows 3-6); shifted ring: rows 2 and 7 cols 4-7, cols 3 and 8 rows 3-6;
    #   common: rows 2 and 7, cols 4-6 = 6 of 16 -> 0.375
    r = evaluate_masks([(sq1, sq1), (sq2, sq2_shift)], bf_tolerance=0.0)
    bf = r.per_class["bf"]
    assert bf[0] == pytest.approx((1 + 0.375) / 2)  # 0.6875
    assert bf[1] == pytest.approx(1.0)  # field B (nan) skipped
    assert bf[2] == pytest.approx(0.5)  # field A (nan) skipped
    # MATLAB MeanBFScore: field A mean(1, 1) = 1; field B mean(0.375, 0.5) = 0.4375; -> 0.71875
    assert r.matlab["MeanBFScore"] == pytest.approx(0.71875)
    assert r.aggregate["bf"]["mean"] == pytest.approx(0.71875)
    # global: matched boundary px 16 + 12 + 6 + 6 = 40 of 16 + 12 + 16 + 12 = 56, both ways
    assert r.aggregate["bf_precision"]["global"] == pytest.approx(40 / 56)
    assert r.aggregate["bf"]["global"] == pytest.approx(40 / 56)
    # weighted by truth pixels: bg 84 + 84 = 168, class 1 16, class 2 16
    assert r.aggregate["bf"]["weighted"] == pytest.approx((168 * 0.6875 + 16 + 16 * 0.5) / 200)


def test_bf_class_only_in_prediction_scores_zero() -> None:
    blank = np.zeros((10, 10), np.uint8)
    pred = _square((10, 10), 3, 3, 4, value=1)
    r = evaluate_masks([(blank, pred)])
    # class 1 spurious -> 0; background: no true boundary, a predicted one -> 0; class 2 nan
    assert r.per_class["bf"][:2].tolist() == [0.0, 0.0]
    assert math.isnan(r.per_class["bf"][2])
    assert r.matlab["MeanBFScore"] == 0.0


def test_blank_fields_give_nan_bf_and_json_none() -> None:
    blank = np.zeros((6, 6), np.uint8)
    r = evaluate_masks([(blank, blank)])
    assert math.isnan(r.matlab["MeanBFScore"])
    assert r.matlab["GlobalAccuracy"] == 1.0
    d = r.to_dict()
    assert d["matlab"]["MeanBFScore"] is None
    json.dumps(d, allow_nan=False)


# ---------------------------------------------------------------------------- box surrogate


def _box_scene() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((12, 12), np.uint8)
    pred = np.zeros((12, 12), np.uint8)
    truth[0:2, 0:2] = 1  # A: exact match, IoU 1
    pred[0:2, 0:2] = 1
    truth[0:3, 6:9] = 1  # B: 3 x 3 box (9 px)
    pred[0:2, 6:7] = 1  # 2 x 1 box inside it: IoU 2 / 9
    pred[10:12, 0:2] = 1  # FP: no true object
    truth[10:12, 10:12] = 1  # FN: no predicted object
    truth[5:7, 5:7] = 2  # class 2: one exact match
    pred[5:7, 5:7] = 2
    return truth, pred


def test_match_boxes_counts_and_ious() -> None:
    truth, pred = _box_scene()
    m = match_boxes(truth == 1, pred == 1)
    assert (m.n_true, m.n_pred, m.n_matched) == (3, 3, 2)
    ious = sorted(iou for *_, iou in m.pairs)
    assert ious == pytest.approx([2 / 9, 1.0])
    assert m.true_boxes.tolist() == [[0, 0, 2, 2], [0, 6, 3, 9], [10, 10, 12, 12]]


def test_box_surrogate_in_evaluation() -> None:
    truth, pred = _box_scene()
    r = evaluate_masks([(truth, pred)])
    b = r.boxes["phagophore"]
    assert (b.n_true, b.n_pred, b.n_matched, b.n_low_iou, b.n_high_iou) == (3, 3, 2, 1, 1)
    assert b.false_positive_ratio == pytest.approx(1 / 3)  # 1 unmatched of 3 predicted
    assert b.false_negative_ratio == pytest.approx(1 / 3)  # 1 unmatched of 3 true
    assert (b.precision, b.recall, b.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert r.boxes["autolysosome"] == BoxStats(1, 1, 1, 0, 1)
    assert "background" not in r.boxes


def test_box_threshold_one_to_one_and_connectivity() -> None:
    truth = _square((8, 8), 0, 0, 4).astype(bool)  # 4 x 4 box, 16 px
    one_px = np.zeros((8, 8), bool)
    one_px[1, 1] = True  # IoU 1/16 = 0.0625
    assert match_boxes(truth, one_px).n_matched == 0
    low = match_boxes(truth, one_px, iou_threshold=0.05).stats()
    assert (low.n_matched, low.n_low_iou, low.n_high_iou) == (1, 1, 0)

    two = np.zeros((8, 8), bool)
    two[0:4, 0:2] = True  # box 4 x 2: IoU 8/16 = 0.5
    two[0:4, 3] = True  # separate (col 2 empty) box 4 x 1: IoU 4/16 = 0.25
    m = match_boxes(truth, two)
    assert m.n_pred == 2
    assert [(t, iou) for t, _, iou in m.pairs] == [(0, 0.5)]  # the better one, only once
    assert m.stats().false_positive_ratio == 0.5

    diagonal = np.zeros((8, 8), bool)
    diagonal[0, 0] = diagonal[1, 1] = True  # 8-connected: one object, box 2 x 2
    assert match_boxes(diagonal, diagonal).true_boxes.tolist() == [[0, 0, 2, 2]]


def test_box_stats_ratios_without_objects_are_nan() -> None:
    s = BoxStats()
    assert math.isnan(s.false_positive_ratio) and math.isnan(s.f1)
    assert s.to_dict()["precision"] is None
    assert BoxStats(1, 2, 1, 1, 0) + BoxStats(2, 1, 1, 0, 1) == BoxStats(3, 3, 2, 1, 1)


# ----------------------------------------------------------------- accumulation, serialisation


def _random_pairs(n: int, shape: tuple[int, int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(0, 3, shape).astype(np.uint8), rng.integers(0, 3, shape).astype(np.uint8))
        for _ in range(n)
    ]


def test_accumulation_equals_concatenated_image_for_pixel_metrics() -> None:
    (t1, p1), (t2, p2) = _random_pairs(2, (6, 6), seed=3)
    two = evaluate_masks([(t1, p1), (t2, p2)])
    one = evaluate_masks([(np.hstack([t1, t2]), np.hstack([p1, p2]))])
    np.testing.assert_array_equal(
        two.confusion, confusion_matrix(t1, p1) + confusion_matrix(t2, p2)
    )
    np.testing.assert_array_equal(two.confusion, one.confusion)
    for metric in ev.PIXEL_METRICS:
        np.testing.assert_allclose(two.per_class[metric], one.per_class[metric])
        for agg in ev.AGGREGATIONS:
            assert two.aggregate[metric][agg] == pytest.approx(one.aggregate[metric][agg])
    assert two.n_images == 2 and one.n_images == 1


def test_merge_equals_sequential_add_and_roundtrips_json() -> None:
    pairs = [*_random_pairs(3, (9, 7), seed=5), _box_scene()]
    a = SegmentationScores()
    for t, p in pairs[:2]:
        a.add(t, p)
    b = SegmentationScores()
    for t, p in pairs[2:]:
        b.add(t, p)
    merged = (a + b).result().to_dict()
    sequential = evaluate_masks(pairs).to_dict()
    assert merged == sequential
    restored = SegmentationScores.from_dict(json.loads(json.dumps((a + b).to_dict())))
    assert restored.n_images == 4
    assert restored.result().to_dict() == sequential


def test_merge_rejects_different_configs() -> None:
    a = SegmentationScores(config=EvaluationConfig(bf_tolerance_px=1.0))
    with pytest.raises(ValueError, match="different configs"):
        a.merge(SegmentationScores())


def test_to_dict_is_json_serialisable() -> None:
    truth, pred = _box_scene()
    d = evaluate_masks([(truth, pred), (TRUTH_4, PRED_4)]).to_dict()
    back = json.loads(json.dumps(d, allow_nan=False))
    assert back["confusion"] == (confusion_matrix(truth, pred) + CONFUSION_4).tolist()
    # 2 matches in the box scene + 1 in TRUTH_4/PRED_4 (2 x 2 true box inside a 2 x 3 one: 4/6)
    assert back["boxes"]["phagophore"]["n_matched"] == 3
    assert back["per_class"]["iou"]["autolysosome"] is not None
    assert set(back["aggregate"]["iou"]) == {"global", "mean", "weighted"}


def test_full_size_field_identical_masks() -> None:
    rng = np.random.default_rng(11)
    mask = np.zeros((512, 680), np.uint8)
    for _ in range(150):
        r, c = rng.integers(0, 508), rng.integers(0, 676)
        mask[r : r + rng.integers(1, 5), c : c + rng.integers(1, 5)] = rng.integers(1, 3)
    r = evaluate_masks([(mask, mask)])
    for metric in ("precision", "recall", "iou", "bf"):
        assert r.aggregate[metric]["mean"] == pytest.approx(1.0)
    for stats in r.boxes.values():
        assert stats.n_matched == stats.n_true == stats.n_pred > 0
        assert stats.n_high_iou == stats.n_matched


# ------------------------------------------------------------------------- table and counts


def test_format_table_rows_and_columns() -> None:
    cip = evaluate_masks([(TRUTH_4, PRED_4)])
    cdl = evaluate_masks([(TRUTH_4, TRUTH_4)])
    table = format_table({"cip": cip, "cdl": cdl})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "aggregation", "cip", "cdl"]
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines[2:]}
    assert rows[("iou", "mean")] == [f"{1.6 / 3:.4f}", "1.0000"]
    assert rows[("iou", "weighted")] == ["0.5250", "1.0000"]
    assert rows[("accuracy", "global")] == ["0.6875", "1.0000"]
    assert rows[("precision", "autolysosome")] == ["0.6000", "1.0000"]
    assert rows[("MATLAB", "WeightedIoU")] == ["0.5250", "1.0000"]
    assert any(
        line.split()[:5] == ["boxes", "phagophore", "false", "positive", "ratio"] for line in lines
    )
    with pytest.raises(ValueError, match="at least one"):
        format_table({})
    other = evaluate_masks([(TRUTH_4 > 0, PRED_4 > 0)], class_names=("bg", "fg"))
    with pytest.raises(ValueError, match="different classes"):
        format_table({"cip": cip, "two": other})


def test_count_errors_by_hand() -> None:
    truth = {"r01c01": (10, 4), "r01c02": (0, 2)}
    pred = {"r01c02": (1, 1), "r01c01": (12, 4)}
    e = count_errors(truth, pred)
    # MAE: class 0 (|12-10| + |1-0|) / 2 = 1.5; class 1 (0 + 1) / 2 = 0.5
    np.testing.assert_allclose(e.mae, [1.5, 0.5])
    # MRE: class 0 only well r01c01 (true 0 skipped): 2/10; class 1 (0/4 + 1/2) / 2 = 0.25
    np.testing.assert_allclose(e.mre, [0.2, 0.25])
    assert e.n_wells == 2 and e.n_relative.tolist() == [1, 2]
    assert e.to_dict(["phagophore", "autolysosome"])["mae"] == {
        "phagophore": 1.5,
        "autolysosome": 0.5,
    }
    all_zero = count_errors(np.zeros((3, 1)), np.ones((3, 1)))
    assert math.isnan(all_zero.mre[0]) and all_zero.mae[0] == 1.0


def test_count_errors_validation() -> None:
    with pytest.raises(ValueError, match="only in truth"):
        count_errors({"a": (1,), "b": (2,)}, {"a": (1,)})
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
        count_errors(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="both"):
        count_errors({"a": (1,)}, np.zeros((1, 1)))


# ----------------------------------------------------- issue 15: BF at 1 and 2 px, counts, table


def test_extra_bf_tolerances_by_hand() -> None:
    # SQ (rows/cols 3-6) as class 1, predicted shifted right by 2 px (cols 5-8); the class-1
    # boundaries are 12 px each (test_bf_square_shifted_by_two_pixels): 1/3 coincide, 2/3 lie
    # within 1 px, and within 2 px all do (col 8 is 2 px from col 6, col 3 from col 5).
    truth = SQ.astype(np.uint8)
    pred = np.roll(SQ, 2, axis=1).astype(np.uint8)
    r = evaluate_masks([(truth, pred)], class_names=("bg", "fg"))
    assert r.extra_bf_tolerances_px == (1.0, 2.0)
    assert r.per_class["bf"][1] == pytest.approx(1 / 3)  # paper tolerance 0.106 px here
    assert r.per_class["bf_1px"][1] == pytest.approx(2 / 3)
    assert r.per_class["bf_2px"][1] == pytest.approx(1.0)
    # the background class is scored the same way as bf_score does it
    for name, tol in (("bf_1px", 1.0), ("bf_2px", 2.0)):
        assert r.per_class[name][0] == pytest.approx(bf_score(~SQ, pred == 0, tolerance_px=tol)[2])
        assert r.aggregate[name]["mean"] == pytest.approx(np.mean(r.per_class[name]))
    table = format_table({"cip": r})
    assert any(line.split()[:2] == ["bf_2px", "fg"] for line in table.splitlines())


def test_extra_bf_tolerances_configurable_and_validated() -> None:
    r = evaluate_masks([(TRUTH_4, PRED_4)], extra_bf_tolerances=(1.5,))
    assert "bf_1.5px" in r.per_class and "bf_1px" not in r.per_class
    assert "bf_1px" not in evaluate_masks([(TRUTH_4, PRED_4)], extra_bf_tolerances=()).per_class
    with pytest.raises(ValueError, match="extra_bf_tolerances_px"):
        EvaluationConfig(extra_bf_tolerances_px=(-1.0,))
    with pytest.raises(ValueError, match="extra_bf_tolerances_px"):
        EvaluationConfig(extra_bf_tolerances_px=(1.0, 1.0))


def test_extra_bf_counts_roundtrip_and_legacy_dicts() -> None:
    pairs = [_box_scene(), (TRUTH_4, PRED_4)]
    scores = SegmentationScores()
    for t, p in pairs:
        scores.add(t, p)
    restored = SegmentationScores.from_dict(json.loads(json.dumps(scores.to_dict())))
    assert restored.result().to_dict() == scores.result().to_dict()
    legacy = scores.to_dict()
    del legacy["extra_boundary_counts"]
    del legacy["config"]["extra_bf_tolerances_px"]
    old = SegmentationScores.from_dict(legacy).result()
    assert "bf_1px" not in old.per_class
    assert old.aggregate["bf"] == scores.result().aggregate["bf"]


def test_count_errors_per_well_relative_and_pooled_by_hand() -> None:
    truth = {"r01c01": (10, 4), "r01c02": (0, 2)}
    pred = {"r01c02": (1, 1), "r01c01": (12, 4)}
    e = count_errors(truth, pred)
    assert e.wells == ("r01c01", "r01c02")
    # per well |p - t| / t: r01c01 2/10, 0/4; r01c02 no true phagophore, 1/2
    np.testing.assert_allclose(e.relative, [[0.2, 0.0], [np.nan, 0.5]])
    # pooled: phagophores (2 + 1) / (10 + 0) = 0.3; autolysosomes (0 + 1) / (4 + 2) = 1/6
    np.testing.assert_allclose(e.pooled_relative, [0.3, 1 / 6])
    np.testing.assert_allclose(e.max_relative, [0.2, 0.5])
    d = e.to_dict(["p", "a"])
    assert d["pooled_relative"] == {"p": pytest.approx(0.3), "a": pytest.approx(1 / 6)}


def test_condition_scores_by_hand() -> None:
    truth, pred = _box_scene()
    # classes merged: truth objects A, B, the missed one and the class-2 square (4); predicted
    # A, the 2 x 1 box inside B, the false positive and the class-2 square (4); A, B and the
    # class-2 square match -> F1 = 2 * 3 / (4 + 4) = 0.75 per field
    s = ev.condition_scores(
        [(truth, pred), (truth, pred)],
        wells=["a", "a"],
        true_counts=[(4, 1), (4, 1)],
        cpu_seconds=1.0,
    )
    assert (s.n_fields, s.n_true_objects) == (2, 8)
    assert s.f1_merged == pytest.approx(0.75)
    assert s.f1_phagophore == pytest.approx(2 / 3)  # 2 of 3 true, 2 of 3 predicted
    assert s.f1_autolysosome == pytest.approx(1.0)
    # foreground pixels: truth 4 + 9 + 4 + 4 = 21, prediction 4 + 2 + 4 + 4 = 14, both 10
    assert s.iou_merged == pytest.approx(10 / 25)
    # well "a": true 8 phagophores, 2 autolysosomes; predicted components 6 and 2
    assert s.count_mre_phagophore == pytest.approx(0.25)
    assert s.count_mre_autolysosome == pytest.approx(0.0)
    assert s.cpu_s_per_field == pytest.approx(0.5)
    assert s.miou == pytest.approx(evaluate_masks([(truth, pred)]).aggregate["iou"]["mean"])
    assert json.loads(json.dumps(s.to_dict()))["f1_merged"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both"):
        ev.condition_scores([(truth, pred)], wells=["a"])
    with pytest.raises(ValueError, match="1 fields"):
        ev.condition_scores([(truth, pred)], wells=["a", "b"], true_counts=[(1, 1), (1, 1)])


def test_format_condition_table() -> None:
    truth, pred = _box_scene()
    s = ev.condition_scores([(truth, pred)])
    nan_cpu = ev.condition_scores([(truth, truth)])
    table = ev.format_condition_table(
        {"normal": {"cip": s, "peer": nan_cpu}}, columns=("f1_merged", "cpu_s_per_field")
    )
    lines = table.splitlines()
    assert lines[0] == (
        "| condition | object F1 (classes merged): cip | object F1 (classes merged): peer"
        " | CPU s / field: cip | CPU s / field: peer |"
    )
    assert lines[1] == "|---|---:|---:|---:|---:|"
    assert lines[2] == "| normal | 0.750 | 1.000 | n/a | n/a |"
    with pytest.raises(ValueError, match="at least one"):
        ev.format_condition_table({})
    with pytest.raises(ValueError, match="unknown columns"):
        ev.format_condition_table({"normal": {"cip": s}}, columns=("nope",))
    with pytest.raises(ValueError, match="methods"):
        ev.format_condition_table({"a": {"cip": s}, "b": {"other": s}})
