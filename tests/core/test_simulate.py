"""Tests of the Rosella plate simulator (phagoflow.core.simulate)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import tifffile
from pydantic import ValidationError
from scipy import ndimage as ndi

from phagoflow.core.simulate import (
    PRESETS,
    NuclearStainParameters,
    ScreenDesign,
    SimulatedField,
    SimulationParameters,
    plate_layout,
    screen_plate_map,
    simulate_field,
    simulate_plate,
    well_level,
)

SMALL = (160, 200)  # pixels; a few cells, fast


def _opera_writer_available() -> bool:
    try:
        if importlib.util.find_spec("phagoflow.core.opera") is None:
            return False
        from phagoflow.core.opera import open_writer, read_plate  # noqa: F401
    except ImportError:
        return False
    return True


needs_opera = pytest.mark.skipif(
    not _opera_writer_available(),
    reason="phagoflow.core.opera.open_writer/read_plate not importable (opera package missing)",
)


@pytest.fixture(scope="module")
def normal_field() -> SimulatedField:
    # full-size field, dense colony, high vesicle level: many objects for the statistics
    params = SimulationParameters(colony_coverage=(0.9, 0.9))
    return simulate_field(params, rng=11, well_level=1.5)


@pytest.fixture(scope="module")
def harder_field() -> SimulatedField:
    params = SimulationParameters.preset("harder").model_copy(
        update={"colony_coverage": (0.9, 0.9)}
    )
    return simulate_field(params, rng=11, well_level=1.5)


def _signal(field: SimulatedField, params: SimulationParameters) -> npt.NDArray[np.float64]:
    return field.image.astype(float) - params.offset


# --- shapes, dtypes, determinism -----------------------------------------------------------


def test_field_shapes_dtypes_and_range(normal_field: SimulatedField) -> None:
    f = normal_field
    assert f.image.shape == (2, 512, 680)
    assert f.image.dtype == np.uint16
    assert int(f.image.max()) <= 4095
    assert f.truth.shape == (512, 680)
    assert f.truth.dtype == np.uint8
    assert set(np.unique(f.truth)) <= {0, 1, 2}
    assert f.phagophores > 20 and f.autolysosomes > 20
    # the camera offset shows in the empty background
    assert f.cells is not None
    bg = f.image[0][f.cells == 0]
    if bg.size > 1000:
        assert 80 < np.median(bg) < 160


def test_size_follows_parameters() -> None:
    f = simulate_field(SimulationParameters(size_yx=SMALL), rng=0)
    assert f.image.shape == (2, *SMALL)
    assert f.truth.shape == SMALL


def test_same_seed_same_pixels_different_seed_differs() -> None:
    p = SimulationParameters(size_yx=SMALL)
    a = simulate_field(p, rng=5)
    b = simulate_field(p, rng=np.random.default_rng(5))
    c = simulate_field(p, rng=6)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.truth, b.truth)
    assert (a.phagophores, a.autolysosomes) == (b.phagophores, b.autolysosomes)
    assert not np.array_equal(a.image, c.image)


def test_truth_counts_match_instances(normal_field: SimulatedField) -> None:
    f = normal_field
    assert f.instances is not None
    ids = np.unique(f.instances[f.instances > 0])
    assert ids.size == f.phagophores + f.autolysosomes
    assert ids[0] == 1 and ids[-1] == ids.size  # numbered 1..N, every object owns pixels
    # truth and instances mark the same pixels, and each instance has exactly one class
    np.testing.assert_array_equal(f.truth > 0, f.instances > 0)
    classes = ndi.labeled_comprehension(f.truth, f.instances, ids, np.ptp, float, -1)
    assert np.all(classes == 0)
    per_class = ndi.maximum(f.truth, f.instances, ids)
    assert np.count_nonzero(np.asarray(per_class) == 1) == f.phagophores
    assert np.count_nonzero(np.asarray(per_class) == 2) == f.autolysosomes
    # touching objects merge in the class mask: never more components than objects
    n_components = sum(ndi.label(f.truth == k)[1] for k in (1, 2))
    assert n_components <= ids.size


def test_empty_field_has_no_objects() -> None:
    f = simulate_field(SimulationParameters(size_yx=SMALL, colony_coverage=(0.0, 0.0)), rng=1)
    assert f.phagophores == 0 and f.autolysosomes == 0
    assert not f.truth.any()
    assert int(f.image.max()) < 300  # offset + background + noise only


# --- objects: sizes, colours, placement -----------------------------------------------------


def _isolated_diameters_um(
    f: SimulatedField, cls: int, pixel_size_um: float
) -> npt.NDArray[np.float64]:
    """Equivalent diameters (µm) of truth components of class ``cls`` holding one object."""
    assert f.instances is not None
    lab, n = ndi.label(f.truth == cls)
    idx = np.arange(1, n + 1)
    n_obj = ndi.labeled_comprehension(f.instances, lab, idx, lambda v: np.unique(v).size, int, 0)
    area = ndi.sum_labels(np.ones_like(lab), lab, idx)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    keep = (n_obj == 1) & ~np.isin(idx, edge)
    return np.asarray(2 * np.sqrt(area[keep] / np.pi) * pixel_size_um, dtype=np.float64)


def test_object_sizes_in_stated_ranges(normal_field: SimulatedField) -> None:
    p = SimulationParameters()
    phago = _isolated_diameters_um(normal_field, 1, p.pixel_size_um)
    auto = _isolated_diameters_um(normal_field, 2, p.pixel_size_um)
    assert phago.size > 30 and auto.size > 30
    px = p.pixel_size_um  # footprints are whole pixels: allow one pixel of rasterisation
    lo, hi = p.phagophore_diameter_um
    assert lo - px <= np.median(phago) <= hi
    assert np.mean((phago >= lo - px) & (phago <= hi + px)) > 0.9
    lo, hi = p.autolysosome_diameter_um
    assert lo <= np.median(auto) <= hi
    assert np.mean((auto >= lo - px) & (auto <= hi + px)) > 0.9
    assert np.median(auto) > 1.5 * np.median(phago)


def test_phagophores_both_channels_autolysosomes_red_only(normal_field: SimulatedField) -> None:
    f = normal_field
    p = SimulationParameters()
    sig = _signal(f, p)
    red, green = sig
    assert f.cells is not None and f.nuclei is not None
    cyto = (f.cells > 0) & ~f.nuclei & (ndi.binary_dilation(f.truth > 0, iterations=4) == 0)
    ratio_p = green[f.truth == 1].sum() / red[f.truth == 1].sum()
    ratio_a = green[f.truth == 2].sum() / red[f.truth == 2].sum()
    assert ratio_p > 0.65
    assert ratio_a < 0.5
    assert ratio_p - ratio_a > 0.35
    # both kinds are brighter than the cytosol in DsRed
    assert red[f.truth == 1].mean() > 1.3 * red[cyto].mean()
    assert red[f.truth == 2].mean() > 1.3 * red[cyto].mean()
    # phagophores are bright in pHluorin too; autolysosomes are not (green quenched)
    assert green[f.truth == 1].mean() > 1.3 * green[cyto].mean()
    assert green[f.truth == 2].mean() < green[cyto].mean()


def test_objects_lie_in_cytoplasm(normal_field: SimulatedField) -> None:
    f = normal_field
    assert f.cells is not None and f.nuclei is not None and f.instances is not None
    obj = f.truth > 0
    assert np.mean(f.cells[obj] > 0) > 0.99
    assert np.mean(f.nuclei[obj]) < 0.05
    ids = np.arange(1, int(f.instances.max()) + 1)
    cy, cx = np.round(np.array(ndi.center_of_mass(obj, f.instances, ids)).T).astype(int)
    inside = (f.cells[cy, cx] > 0) & ~f.nuclei[cy, cx]
    assert inside.mean() > 0.95


def test_nuclei_darker_than_cytoplasm(normal_field: SimulatedField) -> None:
    f = normal_field
    assert f.cells is not None and f.nuclei is not None
    red = _signal(f, SimulationParameters())[0]
    nuc = ndi.binary_erosion(f.nuclei, iterations=3)
    cyto = ndi.binary_erosion((f.cells > 0) & ~f.nuclei, iterations=2) & (f.truth == 0)
    assert nuc.sum() > 1000 and cyto.sum() > 1000
    assert np.median(red[nuc]) < 0.5 * np.median(red[cyto])


def _touching_ids(inst: npt.NDArray[np.int32]) -> set[int]:
    """Ids of objects with an 8-neighbour pixel owned by another object."""
    ids: set[int] = set()
    padded = np.pad(inst, 1)
    h, w = inst.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            ids.update(np.unique(inst[(inst > 0) & (shifted > 0) & (shifted != inst)]).tolist())
    return ids


def test_clusters_make_touching_objects() -> None:
    def touching_fraction(cluster_fraction: float) -> float:
        p = SimulationParameters(
            size_yx=(256, 320), colony_coverage=(1.0, 1.0), cluster_fraction=cluster_fraction
        )
        touching = total = 0
        for seed in range(3):
            inst = simulate_field(p, rng=seed).instances
            assert inst is not None
            touching += len(_touching_ids(inst))
            total += int(inst.max())
        return touching / total

    assert touching_fraction(0.6) > touching_fraction(0.0) + 0.15


def test_well_level_scales_counts() -> None:
    p = SimulationParameters(size_yx=(256, 320), colony_coverage=(1.0, 1.0))
    low = sum(simulate_field(p, rng=s, well_level=0.3).phagophores for s in range(3))
    high = sum(simulate_field(p, rng=s, well_level=2.0).phagophores for s in range(3))
    none = simulate_field(p, rng=0, well_level=0.0)
    assert high > 3 * low > 0
    assert none.phagophores == none.autolysosomes == 0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_well_level_raises(bad: float) -> None:
    with pytest.raises(ValueError, match="well_level"):
        simulate_field(SimulationParameters(size_yx=SMALL), rng=0, well_level=bad)


# --- optics and camera ---------------------------------------------------------------------


def _flat_params(vignetting: float) -> SimulationParameters:
    return SimulationParameters(
        size_yx=(200, 260),
        colony_coverage=(1.0, 1.0),
        nucleus_level=1.0,
        membrane_level=1.0,
        expression_sigma=0.0,
        texture_low=0.0,
        texture_ridge=0.0,
        phagophores_per_cell=(0.0, 0.0),
        autolysosomes_per_cell=(0.0, 0.0),
        vignetting=vignetting,
    )


@pytest.mark.parametrize("strength", [0.0, 0.4])
def test_vignetting_darkens_corners(strength: float) -> None:
    p = _flat_params(strength)
    red = _signal(simulate_field(p, rng=3), p)[0]
    h, w = red.shape
    c = 24
    centre = red[h // 2 - c : h // 2 + c, w // 2 - c : w // 2 + c].mean()
    corners = np.mean(
        [red[:c, :c].mean(), red[:c, -c:].mean(), red[-c:, :c].mean(), red[-c:, -c:].mean()]
    )
    if strength == 0:
        assert 0.9 < corners / centre < 1.1
    else:
        assert corners / centre < 1 - 0.6 * strength


def test_psf_blurs_objects() -> None:
    base = {"size_yx": (200, 260), "colony_coverage": (1.0, 1.0), "read_noise": 0.0}
    sharp = SimulationParameters.model_validate({**base, "psf_sigma_um": 0.0})
    blurred = SimulationParameters.model_validate({**base, "psf_sigma_um": 0.3})
    a = simulate_field(sharp, rng=4).image[0].astype(float)
    b = simulate_field(blurred, rng=4).image[0].astype(float)
    # same scene; blur removes pixel-to-pixel structure (differences between neighbours)
    assert np.abs(np.diff(b, axis=1)).mean() < 0.8 * np.abs(np.diff(a, axis=1)).mean()


def test_noise_follows_gain_and_read_noise() -> None:
    quiet = _flat_params(0.0).model_copy(update={"gain": 0.5, "read_noise": 0.0})
    noisy = _flat_params(0.0).model_copy(update={"gain": 8.0, "read_noise": 10.0})
    sd_quiet = np.std(np.diff(simulate_field(quiet, rng=2).image[0].astype(float), axis=1))
    sd_noisy = np.std(np.diff(simulate_field(noisy, rng=2).image[0].astype(float), axis=1))
    assert sd_noisy > 2.5 * sd_quiet


# --- parameters and presets ---------------------------------------------------------------


def test_presets_differ_as_documented(
    normal_field: SimulatedField, harder_field: SimulatedField
) -> None:
    assert set(PRESETS) == {"normal", "harder"}
    normal = SimulationParameters.preset("normal")
    harder = SimulationParameters.preset("harder")
    assert normal == SimulationParameters()
    assert harder.cytoplasm_dsred < normal.cytoplasm_dsred
    assert harder.phagophore_peak < normal.phagophore_peak
    assert harder.autolysosome_peak < normal.autolysosome_peak
    assert harder.expression_sigma > normal.expression_sigma
    assert harder.vignetting > normal.vignetting
    # the rendered fields show it: dimmer vesicles relative to the camera noise
    sig_n = _signal(normal_field, normal)[0]
    sig_h = _signal(harder_field, harder)[0]
    assert sig_h[harder_field.truth > 0].mean() < 0.6 * sig_n[normal_field.truth > 0].mean()
    # uneven expression: the spread of per-cell cytosol levels is larger
    assert normal_field.cells is not None and harder_field.cells is not None

    def cell_spread(f: SimulatedField, sig: npt.NDArray[np.float64]) -> float:
        assert f.cells is not None and f.nuclei is not None
        cyto = (f.cells > 0) & ~f.nuclei & (f.truth == 0)
        ids = np.unique(f.cells[cyto])
        means = np.asarray(ndi.mean(sig, np.where(cyto, f.cells, 0), ids))
        return float(np.std(np.log(np.clip(means, 1, None))))

    assert cell_spread(harder_field, sig_h) > 1.5 * cell_spread(normal_field, sig_n)


def test_unknown_preset_raises() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        SimulationParameters.preset("easy")


@pytest.mark.parametrize(
    "update",
    [
        {"phagophore_diameter_um": (0.6, 0.3)},
        {"colony_coverage": (0.5, 1.5)},
        {"nucleus_fraction": (0.5, 1.2)},
        {"pixel_size_um": 0.0},
        {"vignetting": 1.0},
        {"size_yx": (8, 8)},
        {"no_such_field": 1},
    ],
)
def test_invalid_parameters_raise(update: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SimulationParameters.model_validate(update)


def test_parameters_are_frozen() -> None:
    p = SimulationParameters()
    with pytest.raises(ValidationError):
        p.offset = 5.0  # type: ignore[misc]


# --- plates -------------------------------------------------------------------------------


def test_plate_layout() -> None:
    eight = plate_layout(8)
    assert eight[0] == (2, 2) and eight[-1] == (2, 9)
    sixty = plate_layout(60)
    assert len(set(sixty)) == 60
    assert all(2 <= r <= 7 and 2 <= c <= 11 for r, c in sixty)
    full = plate_layout(96)
    assert full[0] == (1, 1) and len(set(full)) == 96
    for bad in (0, 97):
        with pytest.raises(ValueError, match="wells"):
            plate_layout(bad)


def test_well_level_is_deterministic_and_structured() -> None:
    p = SimulationParameters()
    assert well_level(p, 0, 2, 3) == well_level(p, 0, 2, 3)
    assert well_level(p, 0, 2, 3) != well_level(p, 1, 2, 3)
    levels = [well_level(p, 0, r, c) for r, c in plate_layout(60)]
    assert np.std(np.log(levels)) > 0.1
    flat = p.model_copy(update={"well_level_sigma": 0.0, "plate_gradient": 2.0})
    assert well_level(flat, 0, 4, 12) / well_level(flat, 0, 4, 1) == pytest.approx(3.0)


def _read_counts(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@needs_opera
def test_simulate_plate_writes_export_truth_and_counts(tmp_path: Path) -> None:
    from phagoflow.core.opera import load_field, read_plate

    params = SimulationParameters(size_yx=(128, 160))
    plate = simulate_plate(tmp_path / "p", wells=2, fields=2, seed=7, params=params)
    assert plate.plate_id == "SIM0007"
    assert plate.n_fields == 4
    assert plate.truth_dir == tmp_path / "p" / "truth"
    rows = _read_counts(plate.counts_csv)
    assert list(rows[0]) == [
        "plate",
        "well",
        "row",
        "col",
        "field",
        "plane",
        "phagophores",
        "autolysosomes",
    ]
    assert len(rows) == 4
    assert {(r["row"], r["col"]) for r in rows} == {("2", "2"), ("2", "3")}
    for r in rows:
        name = f"r{int(r['row']):02d}c{int(r['col']):02d}f{int(r['field']):02d}p01"
        truth = tifffile.imread(plate.truth_dir / f"{name}.tiff")
        inst = tifffile.imread(plate.truth_dir / "instances" / f"{name}.tiff")
        assert truth.dtype == np.uint8 and truth.shape == (128, 160)
        ids = np.unique(inst[inst > 0])
        cls = np.asarray(ndi.maximum(truth, inst, ids)) if ids.size else np.zeros(0)
        assert int(r["phagophores"]) == np.count_nonzero(cls == 1)
        assert int(r["autolysosomes"]) == np.count_nonzero(cls == 2)
        assert r["plate"] == "SIM0007" and r["well"] == name[:6]

    cat = read_plate(plate.export_dir)
    assert cat.plate_id == "SIM0007"
    assert cat.size_yx == (128, 160)
    assert cat.pixel_size_um == pytest.approx(0.2)
    assert len(cat.fields) == 4 and not cat.problems
    image = load_field(cat, cat.fields[0])
    assert image.shape == (2, 128, 160)
    assert 0 < float(image.max()) <= 4095


@needs_opera
def test_plate_fields_do_not_depend_on_generation_order(tmp_path: Path) -> None:
    from phagoflow.core.opera import FieldKey, load_field, read_plate

    params = SimulationParameters(size_yx=(96, 128))
    small = simulate_plate(tmp_path / "a", wells=1, fields=1, seed=3, params=params)
    big = simulate_plate(tmp_path / "b", wells=3, fields=2, seed=3, params=params)
    other = simulate_plate(tmp_path / "c", wells=1, fields=1, seed=4, params=params)
    key = FieldKey(2, 2, 1)
    img_small = load_field(read_plate(small.export_dir), key)
    img_big = load_field(read_plate(big.export_dir), key)
    img_other = load_field(read_plate(other.export_dir), key)
    np.testing.assert_array_equal(img_small, img_big)
    assert not np.array_equal(img_small, img_other)
    t_small = tifffile.imread(small.truth_dir / f"{key.name}.tiff")
    t_big = tifffile.imread(big.truth_dir / f"{key.name}.tiff")
    np.testing.assert_array_equal(t_small, t_big)


@needs_opera
def test_simulate_plate_flex_format(tmp_path: Path) -> None:
    from phagoflow.core.opera import read_plate

    params = SimulationParameters(size_yx=(64, 80))
    plate = simulate_plate(
        tmp_path,
        wells=1,
        fields=2,
        seed=1,
        export_format="flex",
        params=params,
        plate_id="P1",
        progress=True,
    )
    assert plate.plate_id == "P1"
    cat = read_plate(plate.export_dir)
    assert cat.export_format == "flex"
    assert len(cat.fields) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"wells": 0}, "wells"), ({"fields": 0}, "fields"), ({"seed": -1}, "seed")],
)
def test_simulate_plate_rejects_bad_arguments(
    tmp_path: Path, kwargs: dict[str, int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        simulate_plate(tmp_path, **kwargs)  # type: ignore[arg-type]


# --- nuclear channel and simulated screens (issue 13) ----------------------------------------


def test_nuclear_channel_leaves_the_rosella_channels_and_truth_unchanged() -> None:
    p = SimulationParameters(size_yx=SMALL, colony_coverage=(0.9, 0.9))
    plain = simulate_field(p, rng=4, well_level=1.2)
    with_nuclei = simulate_field(p, rng=4, well_level=1.2, nuclear=NuclearStainParameters())
    assert plain.nuclear_image is None
    np.testing.assert_array_equal(plain.image, with_nuclei.image)
    np.testing.assert_array_equal(plain.truth, with_nuclei.truth)
    img = with_nuclei.nuclear_image
    assert img is not None and img.dtype == np.uint16 and img.shape == SMALL
    assert with_nuclei.nuclei is not None and with_nuclei.cells is not None
    inside = with_nuclei.nuclei
    cyto = (with_nuclei.cells > 0) & ~inside
    # Hoechst: bright nuclei (~900 counts above the offset), dark cytoplasm (4 %)
    assert np.median(img[inside]) > 600 + p.offset
    assert np.median(img[cyto]) < 0.2 * np.median(img[inside])
    assert with_nuclei.n_nuclei == np.unique(with_nuclei.cells[inside]).size > 0


def test_phagophore_factor_plants_phagophores_only() -> None:
    p = SimulationParameters(colony_coverage=(0.9, 0.9))
    base = simulate_field(p, rng=8)
    planted = simulate_field(p, rng=8, phagophore_factor=3.0)
    assert 2.4 < planted.phagophores / base.phagophores < 3.6
    assert 0.75 < planted.autolysosomes / base.autolysosomes < 1.33
    with pytest.raises(ValueError, match="phagophore_factor must be a finite number >= 0"):
        simulate_field(p, rng=8, phagophore_factor=-1.0)


def test_screen_plate_map_places_controls_doses_and_planted_hits() -> None:
    layout = plate_layout(24)  # B02..B11, C02..C11, D02..D05
    design = ScreenDesign(
        n_negative=3, n_positive=3, n_planted=2, effect=4.0,
        dose_concentrations_um=(10.0, 0.1, 1.0), dose_ec50_um=1.0, dose_hill=1.0,
    )  # fmt: skip
    entries, factors = screen_plate_map(layout, design, seed=3)
    assert len(entries) == 24
    by_well = {e.well: e for e in entries}
    # column by column: negatives in the leftmost wells, positives in the rightmost
    assert [w for w, e in by_well.items() if e.role == "negative"] == ["B02", "C02", "D02"]
    assert sorted(w for w, e in by_well.items() if e.role == "positive") == ["B11", "C10", "C11"]
    doses = sorted((e.concentration, e.well) for e in entries if e.compound == "DOSE-1")
    assert [c for c, _ in doses] == [0.1, 1.0, 10.0]
    assert [w for _, w in doses] == ["B03", "C03", "D03"]  # ascending with the layout
    rc = {e.well: (e.row, e.col) for e in entries}
    assert factors[rc["C03"]] == pytest.approx(1 + 3 / 2)  # at the EC50: half the effect
    planted = [w for w, e in by_well.items() if e.role == "sample" and factors.get(rc[w]) == 4.0]
    assert len(planted) == 2
    assert screen_plate_map(layout, design, seed=3) == (entries, factors)  # deterministic
    with pytest.raises(ValueError, match="needs 25 wells, the plate has 24"):
        screen_plate_map(layout, design.model_copy(update={"n_planted": 16}))
    with pytest.raises(ValidationError):
        ScreenDesign(dose_concentrations_um=(0.0,))


@needs_opera
def test_simulate_plate_writes_a_plate_map_with_a_planted_effect(tmp_path: Path) -> None:
    from phagoflow.core.platemap import Role, read_plate_map

    p = SimulationParameters(size_yx=(192, 256), colony_coverage=(0.9, 0.9), well_level_sigma=0.0)
    design = ScreenDesign(n_negative=2, n_positive=2, n_planted=1, effect=4.0)
    sim = simulate_plate(tmp_path, wells=6, fields=2, seed=1, params=p, screen=design)
    assert sim.plate_map == tmp_path / "plate_map.csv"
    pm = read_plate_map(sim.plate_map)
    assert pm.counts()[Role.NEGATIVE] == 2 and pm.counts()[Role.POSITIVE] == 2
    wells = {(int(r["row"]), int(r["col"])): r for r in _read_counts(sim.truth_dir / "wells.csv")}
    assert {w["role"] for w in wells.values()} == {"negative", "positive", "sample"}
    assert sum(w["planted"] == "True" for w in wells.values()) == 1
    per_well: dict[tuple[int, int], int] = {}
    for row in _read_counts(sim.counts_csv):
        key = (int(row["row"]), int(row["col"]))
        per_well[key] = per_well.get(key, 0) + int(row["phagophores"])
    assert "nuclei" not in _read_counts(sim.counts_csv)[0]  # no nuclear channel asked for
    neg = [per_well[k] for k in pm.wells(Role.NEGATIVE)]
    pos = [per_well[k] for k in pm.wells(Role.POSITIVE)]
    assert min(pos) > 2 * max(neg)


def test_nuclear_channel_needs_a_harmony_export(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only be simulated into Harmony exports"):
        simulate_plate(tmp_path, wells=1, fields=1, export_format="flex",
                       nuclear=NuclearStainParameters())  # fmt: skip
