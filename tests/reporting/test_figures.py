from __future__ import annotations

import numpy as np
import pytest

from phagoflow.reporting.figures import (
    CLASS_COLOURS,
    PlatePanel,
    composite_rgb,
    outlined_crop,
    overlay_mask,
    plate_grid,
    plot_plate_heatmaps,
    save_crop_png,
    save_overlay_png,
    scale_bar_um,
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
    out = overlay_mask(rgb + 0.5, mask)
    assert np.allclose(out[2, 4], CLASS_COLOURS[2])  # just outside the object: its outline
    assert tuple(out[4, 4]) == (0.5, 0.5, 0.5)  # the object's own pixels stay visible
    assert tuple(out[0, 0]) == (0.5, 0.5, 0.5)  # far away untouched
    edged = overlay_mask(rgb + 0.5, mask, edge=True)
    assert tuple(edged[1, 4]) == (0.0, 0.0, 0.0)  # a black ring outside the outline
    assert np.allclose(edged[2, 4], CLASS_COLOURS[2])
    with pytest.raises(ValueError, match="differ in shape"):
        overlay_mask(rgb, mask[:5])


def test_plate_grid_places_values_and_leaves_nan() -> None:
    grid = plate_grid({(1, 1): 3.0, (8, 12): 7.0, (9, 1): 1.0}, 8, 12)
    assert grid.shape == (8, 12)
    assert grid[0, 0] == 3.0 and grid[7, 11] == 7.0
    assert np.isnan(grid).sum() == 8 * 12 - 2


def test_outline_colours_contrast_with_the_channels() -> None:
    # the composite is red (DsRed), green (pHluorin) and yellow (both): no outline may be
    # close to any of them, nor to black
    for colour in CLASS_COLOURS.values():
        for channel in ((1, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, 0)):
            assert np.abs(np.subtract(colour, channel)).sum() >= 1.0, (colour, channel)


def test_crop_is_full_resolution_magnified_without_interpolation() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((2, 40, 50)).astype(np.float32)
    mask = np.zeros((40, 50), np.uint8)
    mask[20:24, 30:34] = 1
    crop = outlined_crop(img, None, (10, 20, 30, 45), zoom=4)
    assert crop.shape == (80, 100, 3)
    full = composite_rgb(img)
    assert np.array_equal(crop[0:4, 0:4], np.broadcast_to(full[10, 20], (4, 4, 3)))
    assert np.array_equal(crop[4 * 5 : 4 * 5 + 4, 4 * 7], np.broadcast_to(full[15, 27], (4, 3)))
    lined = outlined_crop(img, mask, (10, 20, 30, 45), zoom=4)
    # the object's pixels are untouched, the ring just outside is the phagophore colour
    assert np.array_equal(lined[40:56, 40:56], crop[40:56, 40:56])
    assert np.allclose(lined[39, 45], CLASS_COLOURS[1])
    # two screen pixels wide at 4x (a 1 px line vanished on the bright composite), edged black
    assert np.allclose(lined[38, 45], CLASS_COLOURS[1])
    assert tuple(lined[37, 45]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="width"):
        overlay_mask(crop, np.zeros(crop.shape[:2], np.uint8), width=0)


@pytest.mark.parametrize(
    ("width_px", "px_um", "expected"), [(256, 0.05, 2.0), (256, 0.2, 10.0), (100, 0.1, 2.0)]
)
def test_scale_bar_is_a_round_length_of_about_a_quarter(
    width_px: int, px_um: float, expected: float
) -> None:
    assert scale_bar_um(width_px, px_um) == expected


def test_shared_scale_and_units_on_panels(tmp_path) -> None:
    grid = plate_grid({(2, 3): 5.0, (2, 4): 2.0}, 8, 12)
    panels = [
        PlatePanel("CIP", grid, unit="phagophores / cell", vmax=10.0),
        PlatePanel("CDL", grid * 2, unit="phagophores / cell", vmax=10.0),
        None,
        PlatePanel("z", grid - 3, cmap="RdBu_r", centred=True, rings=np.isfinite(grid)),
    ]
    data = plot_plate_heatmaps(panels, tmp_path / "h.png", ncols=2, legend="ringed: hits")
    assert data.startswith(PNG)
    crop = np.zeros((64, 64, 3), np.float32)
    png = save_crop_png([("a", crop), ("b", crop)], pixel_size_um=0.05, zoom=4, target=(5, 5, 9, 9))
    assert png.startswith(PNG)


def test_pngs_are_written(tmp_path) -> None:
    grid = plate_grid({(2, 3): 5.0}, 8, 12)
    data = plot_plate_heatmaps([("a", grid), ("b", grid)], tmp_path / "h.png", title="t")
    assert data.startswith(PNG) and (tmp_path / "h.png").read_bytes() == data
    img = np.random.default_rng(0).random((2, 32, 40)).astype(np.float32)
    mask = np.zeros((32, 40), np.uint8)
    mask[5:9, 5:9] = 1
    assert save_overlay_png(img, {"CIP": mask}, tmp_path / "o.png").startswith(PNG)
