from __future__ import annotations

import numpy as np
import pytest

from phagoflow.reporting.figures import (
    _row_letter,
    composite_rgb,
    overlay_mask,
    plate_grid,
    plot_plate_heatmaps,
    save_overlay_png,
)

PNG = b"\x89PNG\r\n\x1a\n"


def test_composite_maps_channels_to_red_and_green() -> None:
    img = np.zeros((2, 10, 12), np.float32)
    img[0, 2, 3] = 100.0  # DsRed only
    img[1, 5, 6] = 100.0  # pHluorin only
    rgb = composite_rgb(img, low=0, high=100)
    assert rgb.shape == (10, 12, 3)
    assert rgb[2, 3, 0] == 1.0 and rgb[2, 3, 1] == 0.0
    assert rgb[5, 6, 1] == 1.0 and rgb[5, 6, 0] == 0.0
    assert rgb[..., 2].max() == 0.0


def test_composite_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(3, 4, 4\)"):
        composite_rgb(np.zeros((3, 4, 4)))


def test_overlay_draws_outline_colours_only_around_objects() -> None:
    rgb = np.zeros((9, 9, 3), np.float32)
    mask = np.zeros((9, 9), np.uint8)
    mask[3:6, 3:6] = 2
    out = overlay_mask(rgb, mask)
    assert tuple(out[2, 4]) == (1.0, 0.0, 1.0)  # just outside the object: magenta outline
    assert out[0, 0].sum() == 0.0  # far away untouched
    with pytest.raises(ValueError, match="differ in shape"):
        overlay_mask(rgb, mask[:5])


def test_plate_grid_places_values_and_leaves_nan() -> None:
    grid = plate_grid({(1, 1): 3.0, (8, 12): 7.0, (9, 1): 1.0}, 8, 12)
    assert grid.shape == (8, 12)
    assert grid[0, 0] == 3.0 and grid[7, 11] == 7.0
    assert np.isnan(grid).sum() == 8 * 12 - 2


def test_row_letters() -> None:
    assert [_row_letter(r) for r in (1, 8, 26, 27, 32)] == ["A", "H", "Z", "AA", "AF"]


def test_pngs_are_written(tmp_path) -> None:
    grid = plate_grid({(2, 3): 5.0}, 8, 12)
    data = plot_plate_heatmaps([("a", grid), ("b", grid)], tmp_path / "h.png", title="t")
    assert data.startswith(PNG) and (tmp_path / "h.png").read_bytes() == data
    img = np.random.default_rng(0).random((2, 32, 40)).astype(np.float32)
    mask = np.zeros((32, 40), np.uint8)
    mask[5:9, 5:9] = 1
    assert save_overlay_png(img, {"CIP": mask}, tmp_path / "o.png").startswith(PNG)
