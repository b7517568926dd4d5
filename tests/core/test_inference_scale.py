"""The U-Net sees fields at its training pixel size: resampling in :class:`Predictor`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from phagoflow.core.inference import (
    Predictor,
    drop_small_objects,
    load_predictor,
    resample_planes,
)
from phagoflow.core.model_dir import ModelCard, read_model_card
from phagoflow.core.normalisation import NormalisationConfig
from phagoflow.embedded.train import _training_pixel_size
from unet_testing import random_unet_dir


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> ModelCard:
    path = tmp_path_factory.mktemp("scale") / "model"
    return read_model_card(random_unet_dir(path, {"pixel_size_um": 0.2}))


def _spot_backend(calls: list[tuple[int, ...]]):  # type: ignore[no-untyped-def]
    """Logits that call a pixel a phagophore where the red tile is bright (no network)."""

    def backend(tiles: NDArray[np.float32]) -> NDArray[np.float32]:
        calls.append(tiles.shape)
        red = tiles[:, 0]
        logits = np.stack([np.full_like(red, 0.5), 2 * red - 0.5, np.zeros_like(red)], axis=1)
        return logits.astype(np.float32)

    return backend


def _disk_field(h: int, w: int, radius_px: float) -> NDArray[np.float32]:
    yy, xx = np.mgrid[:h, :w]
    field = np.zeros((2, h, w), np.float32)
    field[0] = 10.0 * (np.hypot(yy - h / 2, xx - w / 2) <= radius_px)
    field += np.random.default_rng(0).normal(0, 0.01, field.shape).astype(np.float32)
    return field


def test_card_pixel_size_is_read_and_checked(card: ModelCard) -> None:
    assert card.pixel_size_um == pytest.approx(0.2)
    for bad in (None, 0, -0.1, float("nan"), "0.2"):
        assert card.model_copy(update={"training": {"pixel_size_um": bad}}).pixel_size_um is None
    assert card.model_copy(update={"training": {}}).pixel_size_um is None


def test_scale_follows_the_tolerance(card: ModelCard) -> None:
    pred = Predictor(lambda t: t, normalisation=NormalisationConfig(), card=card)
    assert pred.scale_for(None) == 1.0
    assert pred.scale_for(0.21) == 1.0  # within 10 %
    assert pred.scale_for(0.1) == pytest.approx(0.5)
    assert pred.scale_for(0.4) == pytest.approx(2.0)
    pred.rescale_tolerance = None
    assert pred.scale_for(0.1) == 1.0
    no_card = Predictor(lambda t: t, normalisation=NormalisationConfig())
    assert no_card.scale_for(0.1) == 1.0


def test_a_finely_sampled_field_is_shrunk_and_its_mask_comes_back_full_size(
    card: ModelCard,
) -> None:
    calls: list[tuple[int, ...]] = []
    pred = Predictor(_spot_backend(calls), normalisation=NormalisationConfig(), card=card)
    field = _disk_field(512, 680, radius_px=20)
    native = pred.predict(field)
    n_native = sum(c[0] for c in calls)
    calls.clear()
    mask = pred.predict(field, pixel_size_um=0.1)
    n_scaled = sum(c[0] for c in calls)
    assert mask.shape == native.shape == (512, 680)
    assert n_native == 12 and n_scaled == 4  # 256 x 340 px fit in 2 x 2 tiles
    disk = np.hypot(*(np.mgrid[:512, :680] - np.array([256, 340])[:, None, None])) <= 20
    iou = (mask.astype(bool) & disk).sum() / (mask.astype(bool) | disk).sum()
    assert iou > 0.9  # the object keeps its place and size in field pixels


def test_a_coarse_field_is_enlarged(card: ModelCard) -> None:
    calls: list[tuple[int, ...]] = []
    pred = Predictor(_spot_backend(calls), normalisation=NormalisationConfig(), card=card)
    mask = pred.predict(_disk_field(128, 160, radius_px=5), pixel_size_um=0.4)
    assert mask.shape == (128, 160)
    assert sum(c[0] for c in calls) == 4  # 256 x 320 px
    assert mask[64, 80] == 1 and mask[5, 5] == 0


def test_resample_planes_shapes() -> None:
    planes = np.ones((3, 10, 7), np.float32)
    assert resample_planes(planes, 0.5).shape == (3, 5, 4)
    assert resample_planes(planes, 0.01).shape == (3, 1, 1)
    np.testing.assert_allclose(resample_planes(planes, 2.0), 1.0, rtol=1e-6)


def test_the_packaged_model_knows_its_pixel_size() -> None:
    pred = load_predictor()
    assert pred.card is not None and pred.card.pixel_size_um == pytest.approx(0.2)


def test_training_records_one_pixel_size_or_none(caplog: pytest.LogCaptureFixture) -> None:
    one = [{"pixel_size_um": 0.2, "fields": 3}, {"pixel_size_um": 0.2, "fields": 2}]
    assert _training_pixel_size(one) == pytest.approx(0.2)
    ignored = [*one, {"pixel_size_um": 0.1, "fields": 0}]  # an export that gave no field
    assert _training_pixel_size(ignored) == pytest.approx(0.2)
    with caplog.at_level(logging.WARNING):
        mixed = [*one, {"pixel_size_um": 0.1, "fields": 1}]
        assert _training_pixel_size(mixed) is None
    assert "different pixel sizes (0.1, 0.2 µm)" in caplog.text


def test_load_predictor_uses_the_card(tmp_path: Path) -> None:
    pred = load_predictor(random_unet_dir(tmp_path / "m"))
    assert pred.scale_for(0.1) == 1.0  # a card without a pixel size: fields as they come


def test_drop_small_objects_keeps_classes_and_large_objects() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[1, 1] = 2  # a hot pixel called autolysosome
    mask[5:8, 5:8] = 2  # 9 px
    mask[12, 12] = 1
    mask[12, 13] = 2  # touching, other class: each is its own 1-px object
    mask[15:17, 15:17] = 1  # 4 px
    mask[18, 2] = 1
    mask[19, 3] = 1  # diagonal neighbours: one 8-connected object of 2 px
    out = drop_small_objects(mask, 2)
    assert out[1, 1] == 0 and out[12, 12] == 0 and out[12, 13] == 0
    assert (out[5:8, 5:8] == 2).all() and (out[15:17, 15:17] == 1).all()
    assert out[18, 2] == 1 and out[19, 3] == 1
    assert mask[1, 1] == 2  # the input is untouched
    np.testing.assert_array_equal(drop_small_objects(mask, 0), mask)


def test_predict_drops_specks_only_when_the_pixel_size_is_known(card: ModelCard) -> None:
    pred = Predictor(_spot_backend([]), normalisation=NormalisationConfig(), card=card)
    field = _disk_field(256, 256, radius_px=12)  # over 0.2 % of the field: the 99.8th percentile
    field[0, 20, 20] = 10.0  # a one-pixel speck, as bright as the vesicle
    assert pred.predict(field)[20, 20] == 1  # no pixel size: every object kept
    mask = pred.predict(field, pixel_size_um=0.2)  # 0.04 µm² < 0.05 µm²
    assert mask[20, 20] == 0 and mask[128, 128] == 1
    with_proba, proba = pred.predict_with_proba(field, pixel_size_um=0.2)
    np.testing.assert_array_equal(with_proba, mask)  # the same mask
    assert proba.shape == (3, 256, 256)
    pred.min_object_area_um2 = 0.0
    assert pred.predict(field, pixel_size_um=0.2)[20, 20] == 1
