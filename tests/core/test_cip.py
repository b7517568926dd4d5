"""Tests for phagoflow.core.cip on tiny synthetic Rosella scenes with known vesicles."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pydantic
import pytest
from scipy import ndimage as ndi

from phagoflow.core.cip import CipParameters, CipResult, segment_cip
from phagoflow.core.counting import ObjectRecord, measure_objects

OFFSET = 100.0  # camera offset, counts
CYTOSOL = 300.0  # cytosolic DsRed above offset, counts
CYTOSOL_RATIO = 0.8  # cytosolic pHluorin / DsRed (neutral pH)
PSF_UM = 0.25  # Gaussian PSF sigma
GLASS = 10.0  # medium autofluorescence above offset, counts
GLASS_FROM_UM = 28.0  # x (µm) beyond which the field is empty glass


@dataclass(frozen=True)
class Vesicle:
    y_um: float
    x_um: float
    diameter_um: float
    red: float  # peak-ish amplitude above cytosol (before blur), counts
    green_ratio: float  # pHluorin / DsRed of the vesicle signal


def phagophore(y: float, x: float, d: float = 0.5, red: float = 900.0) -> Vesicle:
    return Vesicle(y, x, d, red, 0.9)


def autolysosome(y: float, x: float, d: float = 1.2, red: float = 500.0) -> Vesicle:
    return Vesicle(y, x, d, red, 0.0)


def render(
    vesicles: list[Vesicle],
    pixel_size_um: float = 0.2,
    size_um: tuple[float, float] = (24.0, 32.0),
    *,
    rng: int = 0,
    cytosol: float = CYTOSOL,
    illumination: npt.NDArray[np.float64] | None = None,
    noise: bool = True,
) -> npt.NDArray[np.float32]:
    """A (2, H, W) float32 field: flat cytosol, glass strip, disk vesicles, PSF, shot + read noise.

    Vesicle footprints are rasterised with 4 × 4 super-sampling from physical coordinates, so
    the same scene can be rendered at any pixel size. Autolysosomes (green_ratio 0) also push
    half of the cytosolic pHluorin out of their footprint. ``illumination`` multiplies the
    signal (vignetting / gradient); the result includes the camera offset.
    """
    h = round(size_um[0] / pixel_size_um)
    w = round(size_um[1] / pixel_size_um)
    sub = (np.arange(4) + 0.5) / 4
    yy = (np.arange(h)[:, None] + sub[None, :]).ravel() * pixel_size_um
    xx = (np.arange(w)[:, None] + sub[None, :]).ravel() * pixel_size_um
    # cells everywhere except a strip of empty glass on the right (medium autofluorescence only)
    cells = np.where(np.arange(w) * pixel_size_um < GLASS_FROM_UM, 1.0, 0.0)[None, :]
    red = np.full((h, w), GLASS) + cytosol * cells
    green = np.full((h, w), GLASS) + cytosol * CYTOSOL_RATIO * cells
    for v in vesicles:
        inside = (yy[:, None] - v.y_um) ** 2 + (xx[None, :] - v.x_um) ** 2 <= (
            v.diameter_um / 2
        ) ** 2
        cover = inside.reshape(h, 4, w, 4).mean(axis=(1, 3))
        red += v.red * cover
        green += v.red * v.green_ratio * cover
        if v.green_ratio == 0:
            green -= 0.5 * cytosol * CYTOSOL_RATIO * cover
    signal = ndi.gaussian_filter(
        np.stack([red, green]), (0, PSF_UM / pixel_size_um, PSF_UM / pixel_size_um)
    )
    if illumination is not None:
        signal = signal * illumination
    out = signal + OFFSET
    if noise:
        gen = np.random.default_rng(rng)
        out = gen.poisson(np.clip(signal, 0, None)).astype(float) + OFFSET
        out += gen.normal(0.0, 3.0, out.shape)
    return np.asarray(out, dtype=np.float32)


def objects(result: CipResult, image: npt.NDArray[np.float32], px: float) -> list[ObjectRecord]:
    return measure_objects(image, result.mask, px)


def classes(objs: list[ObjectRecord]) -> list[str]:
    return sorted(o.class_ for o in objs)


def near(
    objs: list[ObjectRecord], y_um: float, x_um: float, px: float, tol_um: float = 0.4
) -> list[ObjectRecord]:
    return [
        o for o in objs if math.hypot(o.centroid_y * px - y_um, o.centroid_x * px - x_um) <= tol_um
    ]


# pixel centres are at integer coordinates, so a pixel-centred physical position is (i + 0.5) px
def test_each_class_detected_and_classified() -> None:
    px = 0.2
    scene = [phagophore(8.1, 10.1), autolysosome(16.1, 22.1)]
    image = render(scene, px)
    result = segment_cip(image, px)
    objs = objects(result, image, px)
    assert classes(objs) == ["autolysosome", "phagophore"]
    (p,) = near(objs, 8.1 - px / 2, 10.1 - px / 2, px)
    (a,) = near(objs, 16.1 - px / 2, 22.1 - px / 2, px)
    assert (p.class_, a.class_) == ("phagophore", "autolysosome")
    assert p.area_um2 < a.area_um2
    # outline: the autolysosome's half-maximum outline is close to its true footprint
    assert a.area_um2 == pytest.approx(math.pi * 0.6**2, rel=0.35)


def test_result_types_and_label_mask_consistency() -> None:
    px = 0.2
    scene = [phagophore(6, 6), autolysosome(12, 12), autolysosome(12, 13.1), phagophore(18, 25)]
    image = render(scene, px)
    result = segment_cip(image, px)
    assert result.mask.dtype == np.uint8 and result.mask.shape == image.shape[1:]
    assert result.labels.dtype == np.int32 and result.labels.shape == image.shape[1:]
    assert set(np.unique(result.mask)) <= {0, 1, 2}
    np.testing.assert_array_equal(result.labels > 0, result.mask > 0)
    by_components = measure_objects(image, result.mask, px)
    by_labels = measure_objects(image, result.mask, px, labels=result.labels)
    assert by_components == by_labels
    assert len(by_components) == int(result.labels.max())


def test_touching_blobs_are_split_with_a_background_line() -> None:
    px = 0.2
    # footprints of diameter 1.2 µm, centres 1.3 µm apart: their blurred outlines touch
    scene = [autolysosome(12.0, 15.0), autolysosome(12.0, 16.3)]
    image = render(scene, px)
    result = segment_cip(image, px)
    objs = objects(result, image, px)
    assert classes(objs) == ["autolysosome", "autolysosome"]
    # without the split the two would form one 8-connected component
    merged, n = ndi.label(result.mask > 0, structure=np.ones((3, 3)))
    assert n == 2 and merged.max() == 2
    # with a split disabled (no watershed markers apart) they are one object
    one = segment_cip(image, px, params=CipParameters(watershed_min_distance_um=1.5))
    assert len(objects(one, image, px)) == 1


def test_objects_below_min_area_dropped() -> None:
    px = 0.2
    image = render([phagophore(8, 8), autolysosome(16, 20)], px)
    default = objects(segment_cip(image, px), image, px)
    assert classes(default) == ["autolysosome", "phagophore"]
    phago_area = next(o.area_um2 for o in default if o.class_ == "phagophore")
    auto_area = next(o.area_um2 for o in default if o.class_ == "autolysosome")
    cut = (phago_area + auto_area) / 2
    params = CipParameters(min_area_um2=cut)
    assert classes(objects(segment_cip(image, px, params=params), image, px)) == ["autolysosome"]
    params = CipParameters(max_area_um2=cut)
    assert classes(objects(segment_cip(image, px, params=params), image, px)) == ["phagophore"]


def test_background_gradient_and_vignetting_create_no_objects() -> None:
    px = 0.2
    h, w = round(24 / px), round(32 / px)
    yy, xx = np.mgrid[0:h, 0:w]
    rho2 = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2
    illumination = (1 - 0.25 * rho2) * (0.6 + 0.8 * xx / w)  # vignetting × left-right gradient
    image = render([], px, illumination=illumination, rng=3)
    result = segment_cip(image, px)
    assert not result.mask.any()
    # the same illumination does not hide vesicles in the dim corner
    scene = [phagophore(2.0, 2.0), autolysosome(21.0, 3.0), phagophore(12, 16)]
    image = render(scene, px, illumination=illumination, rng=4)
    objs = objects(segment_cip(image, px), image, px)
    assert classes(objs) == ["autolysosome", "phagophore", "phagophore"]


def test_thin_ridges_create_no_objects() -> None:
    """Bright thin lines (cytoplasmic texture, membranes) are not round spots."""
    px = 0.2
    clean = render([], px, noise=False) - OFFSET
    h, w = clean.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    ridge = (np.abs(yy - 0.3 * xx - 30) < 0.6) | (np.abs(xx - 0.7 * w) < 0.6)
    clean[:, ridge] *= 2.5
    clean = ndi.gaussian_filter(clean, (0, PSF_UM / px, PSF_UM / px))
    gen = np.random.default_rng(6)
    noisy = gen.poisson(clean).astype(np.float32) + OFFSET + gen.normal(0, 3, clean.shape)
    assert not segment_cip(noisy.astype(np.float32), px).mask.any()
    # the same lines with a vesicle on them: the vesicle is still found
    vesicle = render([phagophore(12.1, 10.1)], px, noise=False) - render([], px, noise=False)
    spotted = noisy + vesicle
    objs = objects(segment_cip(spotted, px), spotted, px)
    assert classes(objs) == ["phagophore"]


def test_cytosol_step_edges_create_no_objects() -> None:
    """A bright cell next to empty glass and a dark nucleus: only edges, no vesicles."""
    px = 0.2
    image = render([], px, noise=False)
    h, w = image.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    glass = xx > w * 0.7
    nucleus = (yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (4 / px) ** 2
    signal = image - OFFSET
    signal[:, glass] = 5.0
    signal[:, nucleus] *= 0.25
    signal = ndi.gaussian_filter(signal, (0, PSF_UM / px, PSF_UM / px))
    gen = np.random.default_rng(5)
    noisy = gen.poisson(signal).astype(np.float32) + OFFSET + gen.normal(0, 3, signal.shape)
    assert not segment_cip(noisy.astype(np.float32), px).mask.any()


@pytest.mark.parametrize("value", [0.0, 100.0, 4095.0])
def test_flat_image_gives_no_objects(value: float) -> None:
    image = np.full((2, 64, 80), value, dtype=np.float32)
    result = segment_cip(image, 0.2)
    assert not result.mask.any() and not result.labels.any()


def test_noise_only_gives_no_objects() -> None:
    assert not segment_cip(render([], 0.2, rng=11), 0.2).mask.any()


@pytest.mark.parametrize("shape", [(64, 80), (1, 64, 80), (3, 64, 80), (2, 64, 80, 1), (2, 4, 80)])
def test_bad_shape_raises_with_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re_shape(shape)):
        segment_cip(np.zeros(shape, dtype=np.float32), 0.2)


def re_shape(shape: tuple[int, ...]) -> str:
    return r"\(" + r",\s*".join(str(s) for s in shape) + r",?\)"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_raises_with_shape(bad: float) -> None:
    image = np.zeros((2, 16, 16), dtype=np.float32)
    image[1, 3, 4] = bad
    with pytest.raises(ValueError, match=r"\(2, 16, 16\).*non-finite"):
        segment_cip(image, 0.2)


@pytest.mark.parametrize("px", [0.0, -0.2, math.nan, math.inf])
def test_bad_pixel_size_raises(px: float) -> None:
    with pytest.raises(ValueError, match="pixel_size_um"):
        segment_cip(np.zeros((2, 16, 16), dtype=np.float32), px)


def test_non_numeric_dtype_raises() -> None:
    with pytest.raises(ValueError, match=r"\(2, 16, 16\)"):
        segment_cip(np.zeros((2, 16, 16), dtype=bool), 0.2)


def test_uint16_input_accepted_like_float() -> None:
    px = 0.2
    image = render([phagophore(8, 8), autolysosome(16, 20)], px)
    as_uint16 = np.clip(np.rint(image), 0, 4095).astype(np.uint16)
    a = segment_cip(as_uint16, px)
    b = segment_cip(as_uint16.astype(np.float32), px)
    np.testing.assert_array_equal(a.mask, b.mask)


def test_parameters_in_um_scale_with_pixel_size() -> None:
    scene = [
        phagophore(5.0, 6.0),
        phagophore(15.0, 25.0),
        autolysosome(10.0, 12.0),
        autolysosome(18.0, 8.0, d=1.4),
        autolysosome(18.0, 9.3, d=1.0),  # touching the previous one
    ]
    counts = {}
    areas = {}
    for px in (0.2, 0.1):
        image = render(scene, px)
        objs = objects(segment_cip(image, px), image, px)
        counts[px] = classes(objs)
        areas[px] = sum(o.area_um2 for o in objs if o.class_ == "autolysosome")
    assert counts[0.2] == counts[0.1] == ["autolysosome"] * 3 + ["phagophore"] * 2
    assert areas[0.1] == pytest.approx(areas[0.2], rel=0.25)


def test_pixel_size_changes_physical_interpretation() -> None:
    """The same pixels read at half the pixel size are half as large: the um parameters see it."""
    image = render([autolysosome(12, 16, d=1.2)], 0.2)
    assert classes(objects(segment_cip(image, 0.2), image, 0.2)) == ["autolysosome"]
    # at 0.8 um/px the object would be ~5 um wide: above max_area_um2, and it is dropped
    assert not segment_cip(image, 0.8).mask.any()


@pytest.mark.parametrize("green_gain", [1.0, 0.35, 2.5])
def test_classification_uses_cytosol_relative_ratio(green_gain: float) -> None:
    """A different pHluorin gain (cytosol included) does not change the classes."""
    px = 0.2
    image = render([phagophore(8, 8), autolysosome(16, 20), phagophore(16, 8)], px)
    image[1] = (image[1] - OFFSET) * green_gain + OFFSET
    objs = objects(segment_cip(image, px), image, px)
    assert classes(objs) == ["autolysosome", "phagophore", "phagophore"]


def test_phagophore_touching_autolysosome_both_found() -> None:
    px = 0.2
    scene = [autolysosome(12.0, 15.0, d=1.4, red=700.0), phagophore(12.0, 15.95, red=600.0)]
    image = render(scene, px)
    assert classes(objects(segment_cip(image, px), image, px)) == ["autolysosome", "phagophore"]


def test_parameters_frozen_and_serialisable() -> None:
    params = CipParameters(threshold_k=6.0)
    with pytest.raises(pydantic.ValidationError):
        params.threshold_k = 7.0  # type: ignore[misc]
    dumped = params.model_dump()
    assert dumped["threshold_k"] == 6.0
    assert json.loads(json.dumps(dumped)) == dumped
    assert CipParameters(**dumped) == params
    assert CipParameters.model_validate_json(params.model_dump_json()) == params
    # every parameter is documented
    for name, field in CipParameters.model_fields.items():
        assert field.description, name


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dog_low_sigma_um": 1.0, "dog_high_sigma_um": 0.5},
        {"min_area_um2": 2.0, "max_area_um2": 1.0},
        {"threshold_k": 0.0},
        {"extent_fraction": 1.0},
        {"unknown": 1.0},
    ],
)
def test_invalid_parameters_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(pydantic.ValidationError):
        CipParameters(**kwargs)


def test_simulated_normal_fields_object_f1() -> None:
    """On the project simulator's "normal" preset CIP finds >= 85 % of objects, same class."""
    simulate = pytest.importorskip("phagoflow.core.simulate")
    params = simulate.SimulationParameters.preset("normal")
    tp = fp = fn = 0
    for seed in (1, 2):
        field = simulate.simulate_field(params, rng=seed)
        px = params.pixel_size_um
        result = segment_cip(field.image, px)
        truth = measure_objects(field.image, field.truth, px)
        pred = measure_objects(field.image, result.mask, px, labels=result.labels)
        for cls in ("phagophore", "autolysosome"):
            t = [o for o in truth if o.class_ == cls]
            p = [o for o in pred if o.class_ == cls]
            used: set[int] = set()
            for o in t:  # a true object is found if a same-class prediction contains its centre
                y, x = round(o.centroid_y), round(o.centroid_x)
                hit = [
                    i
                    for i, q in enumerate(p)
                    if i not in used and q.bbox_y0 <= y < q.bbox_y1 and q.bbox_x0 <= x < q.bbox_x1
                ]
                if hit:
                    used.add(hit[0])
                    tp += 1
                else:
                    fn += 1
            fp += len(p) - len(used)
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 >= 0.85, (tp, fp, fn)


def test_separate_instances_breaks_eight_connectivity() -> None:
    from phagoflow.core.cip import _separate_instances

    labels = np.zeros((6, 8), dtype=np.int32)
    labels[1:5, 1:4] = 1
    labels[1:5, 4:7] = 2  # edge-touching
    labels[5, 7] = 3  # corner-touching label 2 at (4, 6)
    out = _separate_instances(labels)
    assert set(np.unique(out)) == {0, 1, 2, 3}
    for value in (1, 2, 3):
        grown = ndi.binary_dilation(out == value, structure=np.ones((3, 3)))
        others = (out > 0) & (out != value)
        assert not (grown & others).any(), value
    assert ((labels > 0) & (out == 0)).sum() <= 5  # one line, not a wide gap


def test_largest_piece_keeps_one_piece_per_region() -> None:
    from phagoflow.core.cip import _largest_piece

    regions = np.zeros((8, 10), dtype=np.int32)
    regions[1:4, 1:4] = 4  # main piece of region 4
    regions[6, 1] = 4  # loose pixel of region 4
    regions[1:3, 7:9] = 9
    out = _largest_piece(regions)
    assert out[6, 1] == 0
    np.testing.assert_array_equal(out[1:4, 1:4], 4)
    np.testing.assert_array_equal(out[1:3, 7:9], 9)


# --------------------------------------------------------------- issue 15: a CIP that adapts


def test_dense_puncta_next_to_each_other_are_all_found() -> None:
    """A 3 × 3 grid of phagophores 1.4 µm apart: each keeps its contrast against the cytosol.

    Before issue 15 the contrast ring (1.2 µm, upper quartile) ran over the neighbours and 5
    of the 9 were rejected; at 1 µm spacing (saddles at ~40 % of the peaks) both fail.
    """
    px = 0.2
    scene = [
        phagophore(9.0 + 1.4 * i, 12.0 + 1.4 * j, red=700.0) for i in range(3) for j in range(3)
    ]
    image = render(scene, px, rng=21)
    objs = objects(segment_cip(image, px), image, px)
    assert classes(objs) == ["phagophore"] * 9
    for v in scene:
        assert len(near(objs, v.y_um - px / 2, v.x_um - px / 2, px)) == 1


def test_hot_pixels_are_not_vesicles() -> None:
    """A single bright pixel in both channels is narrower than anything seen through the PSF."""
    px = 0.2
    image = render([phagophore(12.1, 10.1)], px, rng=22)
    for y, x in ((30, 40), (80, 120), (100, 20)):
        image[:, y, x] += 1500.0
    objs = objects(segment_cip(image, px), image, px)
    assert classes(objs) == ["phagophore"]


@pytest.mark.parametrize("px", [0.06, 0.4])
def test_extreme_pixel_sizes_find_the_same_objects(px: float) -> None:
    scene = [
        phagophore(5.0, 6.0),
        phagophore(15.0, 25.0),
        autolysosome(10.0, 12.0),
        autolysosome(18.0, 8.0, d=1.4),
    ]
    image = render(scene, px)
    objs = objects(segment_cip(image, px), image, px)
    assert classes(objs) == ["autolysosome"] * 2 + ["phagophore"] * 2


def test_sub_resolution_phagophore_outline_is_near_its_footprint() -> None:
    """The half-maximum outline of a 0.5 µm punctum would be ≈ 3× its area; the model's is not."""
    px = 0.1
    image = render([phagophore(12.05, 16.05, d=0.5)], px, rng=23)
    (obj,) = objects(segment_cip(image, px), image, px)
    true_area = math.pi * 0.25**2
    assert true_area / 1.5 < obj.area_um2 < 1.5 * true_area
    half_max = segment_cip(image, px, params=CipParameters(min_vesicle_diameter_um=1.2))
    assert objects(half_max, image, px)[0].area_um2 > 2 * obj.area_um2  # the prior decides


def test_noise_model_is_not_fooled_by_integer_rounding() -> None:
    """σ ≈ 0.45 counts on integer data: 1.4826 × the median |Haar| alone would say 0.74."""
    from phagoflow.core.cip import _noise_model

    gen = np.random.default_rng(24)
    flat = np.rint(100.0 + gen.normal(0.0, 0.4, (256, 256))).astype(np.float32)
    model = _noise_model(flat, dark=100.0)
    assert model.gain == 0.0  # the levels span too little for a slope
    assert math.sqrt(model.read2) == pytest.approx(float(flat.std()), rel=0.15)
    shot = gen.poisson(np.linspace(10, 2000, 256)[None, :].repeat(256, 0)).astype(np.float32)
    model = _noise_model(shot, dark=0.0)
    assert model.gain == pytest.approx(1.0, rel=0.15)  # Poisson: σ² = I


def test_blurred_sphere_table_limits() -> None:
    from phagoflow.core.cip import _halfmax_radius, _radius_from_halfmax

    assert float(_halfmax_radius(0.0, 2.0)) == pytest.approx(2.0 * 1.1774, rel=1e-3)
    # a sphere much larger than the blur: its own half maximum, sqrt(3)/2 of its radius
    assert float(_halfmax_radius(40.0, 2.0)) == pytest.approx(40.0 * math.sqrt(3) / 2, rel=0.02)
    area = math.pi * float(_halfmax_radius(3.0, 1.5)) ** 2
    assert float(_radius_from_halfmax(np.array([area]), 1.5)[0]) == pytest.approx(3.0, rel=1e-3)


def test_calibration_estimates_and_records() -> None:
    from phagoflow.core.cip import calibrate_cip

    simulate = pytest.importorskip("phagoflow.core.simulate")
    params = simulate.SimulationParameters(psf_sigma_um=0.34, size_yx=(256, 340))
    fields = [simulate.simulate_field(params, rng=30 + i, well_level=2.0).image for i in range(3)]
    calibrated = calibrate_cip(fields, 0.2, source="test plate")
    assert calibrated.calibration is not None
    assert calibrated.calibration["source"] == "test plate"
    assert calibrated.calibration["psf_sigma_um"]["before"] == CipParameters().psf_sigma_um
    # the blur is wider than the default's 0.25 µm: the estimate moves towards 0.34
    assert calibrated.psf_sigma_um > 0.28
    assert 0.3 <= calibrated.ratio_threshold <= 0.75
    assert json.loads(calibrated.model_dump_json())["calibration"]["fields"] == 3
    with pytest.raises(ValueError, match="at least one"):
        calibrate_cip([], 0.2)
