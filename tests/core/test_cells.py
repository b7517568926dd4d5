"""Tests of the per-cell / per-area readouts (phagoflow.core.cells)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from phagoflow.core.cells import (
    CellParameters,
    cytoplasm_mask,
    field_cells,
    per_area,
    per_cell,
    segment_nuclei,
)
from phagoflow.core.simulate import (
    NuclearStainParameters,
    ScreenDesign,
    SimulationParameters,
    simulate_field,
    simulate_plate,
)

PX = 0.2  # µm per pixel


def _disks(
    shape: tuple[int, int], centres: list[tuple[float, float]], radius: float, *, seed: int = 0
) -> npt.NDArray[np.float32]:
    """Bright disks (1000 counts) on a 100-count background with Poisson-like noise."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape, 100.0)
    for cy, cx in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1000.0
    rng = np.random.default_rng(seed)
    return (img + rng.normal(0.0, 8.0, shape)).astype(np.float32)


def test_separate_and_touching_nuclei_are_counted_once_each() -> None:
    # radius 15 px = 3 µm; the touching pair overlaps by a third of a radius (a clear neck)
    img = _disks((120, 200), [(40, 40), (40, 110), (90, 100), (90, 125)], 15)
    labels = segment_nuclei(img, pixel_size_um=PX)
    assert labels.dtype == np.int32 and labels.shape == img.shape
    assert labels.max() == 4
    assert np.array_equal(np.unique(labels), np.arange(5))
    # each disk's centre carries its own label
    centre_ids = {int(labels[y, x]) for y, x in [(40, 40), (40, 110), (90, 100), (90, 125)]}
    assert len(centre_ids) == 4 and 0 not in centre_ids


def test_an_elongated_nucleus_is_not_split() -> None:
    yy, xx = np.mgrid[:100, :160]
    img = np.where(((yy - 50) / 16) ** 2 + ((xx - 80) / 24) ** 2 <= 1, 1000.0, 100.0)
    assert segment_nuclei(img.astype(np.float32), pixel_size_um=PX).max() == 1


def test_scales_follow_the_pixel_size() -> None:
    # the same nuclei imaged at half the resolution are the same nuclei
    fine = _disks((240, 400), [(80, 80), (80, 220), (180, 200), (180, 250)], 30)
    coarse = fine.reshape(120, 2, 200, 2).mean(axis=(1, 3))
    assert segment_nuclei(fine, pixel_size_um=0.1).max() == 4
    assert segment_nuclei(coarse, pixel_size_um=0.2).max() == 4
    # debris under the minimum nucleus area (8 µm² = 200 px at 0.2 µm) is dropped
    unsmoothed = CellParameters(nuclei_smooth_um=0)
    small = _disks((80, 80), [(40, 40)], 5)  # 81 px = 3.2 µm²
    assert segment_nuclei(small, pixel_size_um=PX, params=unsmoothed).max() == 0
    big = _disks((80, 80), [(40, 40)], 9)  # 253 px = 10 µm²
    assert segment_nuclei(big, pixel_size_um=PX, params=unsmoothed).max() == 1


def test_empty_or_flat_planes_have_no_nuclei() -> None:
    noise = np.random.default_rng(3).normal(110.0, 8.0, (128, 128)).astype(np.float32)
    assert segment_nuclei(noise, pixel_size_um=PX).max() == 0
    assert segment_nuclei(np.full((32, 32), 7.0), pixel_size_um=PX).max() == 0
    assert not cytoplasm_mask(noise, pixel_size_um=PX).any()


def test_local_threshold_option() -> None:
    img = _disks((120, 200), [(40, 40), (40, 110), (90, 160)], 15)
    img *= np.linspace(0.5, 1.0, 200, dtype=np.float32)[None, :]  # uneven illumination
    params = CellParameters(nuclei_threshold="local", local_block_um=20)
    assert segment_nuclei(img, pixel_size_um=PX, params=params).max() == 3


def test_cytoplasm_mask_excludes_dark_nuclei_and_given_nuclei() -> None:
    yy, xx = np.mgrid[:100, :100]
    cell = (np.abs(yy - 50) <= 35) & (np.abs(xx - 50) <= 35)
    nucleus = (yy - 50) ** 2 + (xx - 50) ** 2 <= 15**2
    dsred = np.where(cell & ~nucleus, 500.0, np.where(nucleus, 180.0, 110.0))
    dsred = dsred + np.random.default_rng(0).normal(0, 5, dsred.shape)
    mask = cytoplasm_mask(
        dsred, dsred, pixel_size_um=PX, params=CellParameters(cytoplasm_smooth_um=0)
    )
    truth = cell & ~nucleus
    assert abs(int(mask.sum()) - int(truth.sum())) < 0.03 * truth.sum()
    bigger = (yy - 50) ** 2 + (xx - 50) ** 2 <= 20**2
    with_nuclei = cytoplasm_mask(dsred, pixel_size_um=PX, nuclei=bigger)
    assert not with_nuclei[bigger].any()


def test_validation_quotes_shapes_and_values() -> None:
    with pytest.raises(ValueError, match=r"image must be a \(Y, X\) plane, got shape \(2, 8, 8\)"):
        segment_nuclei(np.zeros((2, 8, 8)), pixel_size_um=PX)
    with pytest.raises(ValueError, match="pixel_size_um must be a positive number, got 0"):
        segment_nuclei(np.zeros((8, 8)), pixel_size_um=0)
    with pytest.raises(ValueError, match=r"phluorin must have the shape \(8, 8\).*\(8, 9\)"):
        cytoplasm_mask(np.zeros((8, 8)), np.zeros((8, 9)), pixel_size_um=PX)
    with pytest.raises(ValueError, match=r"image must be \(2, Y, X\).*\(8, 8\)"):
        field_cells(np.zeros((8, 8)), pixel_size_um=PX)


def test_per_cell_and_per_area_by_hand() -> None:
    assert per_cell(30, 12) == 2.5
    assert math.isnan(per_cell(3, 0)) and math.isnan(per_cell(3, None))
    assert per_area(5, 2500.0) == 2.0  # per 1,000 µm²
    assert per_area(5, 2500.0, unit_um2=100.0) == 0.2
    assert math.isnan(per_area(5, 0.0))
    with pytest.raises(ValueError, match="unit_um2 must be > 0"):
        per_area(1, 1.0, unit_um2=0)


# --- against simulated truth --------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simulated_field_counts_and_areas_match_truth(seed: int) -> None:
    p = SimulationParameters()
    f = simulate_field(p, rng=seed, nuclear=NuclearStainParameters())
    assert f.nuclear_image is not None and f.cells is not None and f.nuclei is not None
    got = field_cells(f.image, f.nuclear_image, pixel_size_um=p.pixel_size_um)
    assert got.n_cells is not None and got.nuclear_area_um2 is not None
    assert abs(got.n_cells / f.n_nuclei - 1) <= 0.08  # measured: |error| <= 3.3 % (seeds 0-7)
    true_cyto = np.count_nonzero((f.cells > 0) & ~f.nuclei) * p.pixel_size_um**2
    assert abs(got.cytoplasm_area_um2 / true_cyto - 1) <= 0.12  # measured: -9 % … -1 %
    true_nuc = np.count_nonzero(f.nuclei) * p.pixel_size_um**2
    assert abs(got.nuclear_area_um2 / true_nuc - 1) <= 0.15
    assert got.cell_area_um2 == pytest.approx(got.cytoplasm_area_um2 + got.nuclear_area_um2)
    # without a nuclear channel: no cell count, the cytoplasm area alone
    alone = field_cells(f.image, pixel_size_um=p.pixel_size_um)
    assert alone.n_cells is None and alone.nuclear_area_um2 is None
    assert abs(alone.cytoplasm_area_um2 / true_cyto - 1) <= 0.25  # measured: -2 % … +17 %


def test_per_cell_counts_on_a_simulated_plate_with_a_nuclear_channel(tmp_path: Path) -> None:
    from phagoflow.core.opera import load_field, load_nuclei, read_plate

    sim = simulate_plate(
        tmp_path, wells=2, fields=2, seed=5, nuclear=NuclearStainParameters(),
        screen=ScreenDesign(n_negative=1, n_positive=1, n_planted=0),
    )  # fmt: skip
    catalogue = read_plate(sim.export_dir)
    assert catalogue.nuclear_channel is not None
    assert catalogue.nuclear_channel.name == "HOECHST 33342"
    with sim.counts_csv.open() as fh:
        truth = {(int(r["row"]), int(r["col"]), int(r["field"])): r for r in csv.DictReader(fh)}
    assert len(truth) == 4
    for record in catalogue.fields:
        key = record.key
        nuclear = load_nuclei(catalogue, record)
        assert nuclear is not None
        got = field_cells(load_field(catalogue, record), nuclear, pixel_size_um=0.2)
        want = int(truth[key.row, key.col, key.field]["nuclei"])
        assert got.n_cells is not None and want > 0
        assert abs(got.n_cells - want) <= max(2, 0.1 * want), (key, got.n_cells, want)
