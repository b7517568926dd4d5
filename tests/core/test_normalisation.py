"""Tests for phagoflow.core.normalisation."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
from numpy.typing import NDArray

from phagoflow.core.normalisation import NormalisationConfig, normalise


def _field(seed: int = 0) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    x = np.empty((2, 64, 80), np.float32)
    x[0] = rng.normal(300, 20, (64, 80))
    x[1] = rng.normal(1500, 200, (64, 80))
    return x


def test_percentiles_map_to_zero_and_one_per_channel() -> None:
    x = _field()
    cfg = NormalisationConfig(clip=None)
    y = normalise(x, cfg)
    assert y.shape == x.shape and y.dtype == np.float32
    for c in range(2):
        lo, hi = np.percentile(y[c], [1.0, 99.8])
        assert lo == pytest.approx(0.0, abs=1e-5)
        assert hi == pytest.approx(1.0, abs=1e-5)


def test_invariant_to_gain_and_offset_per_field() -> None:
    x = _field(1)
    scaled = x * np.array([3.0, 0.5], np.float32)[:, None, None] + 100.0
    np.testing.assert_allclose(normalise(x), normalise(scaled), atol=1e-4)


def test_input_not_modified_and_integer_input_accepted() -> None:
    x = _field(2)
    before = x.copy()
    normalise(x)
    np.testing.assert_array_equal(x, before)
    u16 = np.round(x).astype(np.uint16)
    np.testing.assert_allclose(normalise(u16), normalise(u16.astype(np.float32)))


def test_clip_bounds() -> None:
    x = _field(3)
    x[0, 0, 0] = 1e6  # hot pixel
    y = normalise(x, NormalisationConfig(clip=(-1.0, 10.0)))
    assert y.max() == 10.0 and y.min() >= -1.0
    assert normalise(x, NormalisationConfig(clip=None)).max() > 10.0


def test_flat_channel_becomes_zero() -> None:
    x = _field(4)
    x[1] = 77.0
    y = normalise(x)
    assert np.all(y[1] == 0.0)
    assert y[0].std() > 0


def test_fixed_mode_uses_camera_counts() -> None:
    x = _field(5)
    cfg = NormalisationConfig(mode="fixed", fixed_low=(100.0, 200.0), fixed_high=(500.0, 1200.0))
    y = normalise(x, cfg)
    np.testing.assert_allclose(y[0], np.clip((x[0] - 100) / 400, -1, 10), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[1], np.clip((x[1] - 200) / 1000, -1, 10), rtol=1e-5, atol=1e-6)


def test_config_validation() -> None:
    with pytest.raises(pydantic.ValidationError, match="fixed_low"):
        NormalisationConfig(mode="fixed")
    with pytest.raises(pydantic.ValidationError, match="low_percentile"):
        NormalisationConfig(low_percentile=99.0, high_percentile=1.0)
    with pytest.raises(pydantic.ValidationError, match="clip"):
        NormalisationConfig(clip=(1.0, 0.0))
    with pytest.raises(pydantic.ValidationError):
        NormalisationConfig().mode = "fixed"  # type: ignore[misc]


def test_image_validation() -> None:
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        normalise(np.zeros((64, 80), np.float32))
    bad = _field()
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        normalise(bad)
    cfg = NormalisationConfig(mode="fixed", fixed_low=(0.0,), fixed_high=(1.0,))
    with pytest.raises(ValueError, match="channels"):
        normalise(_field(), cfg)
