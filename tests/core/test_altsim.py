"""Tests of the independent Rosella field generator (phagoflow.core.altsim)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import ndimage as ndi

from phagoflow.core.altsim import AltSimParameters, render_field

SMALL = (128, 160)  # pixels; a few cells, fast


def _params(**update: object) -> AltSimParameters:
    base = {"size_yx": SMALL, "colony_fraction": (0.9, 0.9), "cluster_fraction": 0.0}
    return AltSimParameters.model_validate({**base, **update})


def test_deterministic_and_seed_dependent() -> None:
    a = render_field(_params(), rng=3)
    b = render_field(_params(), rng=3)
    c = render_field(_params(), rng=4)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.truth, b.truth)
    assert not np.array_equal(a.image, c.image)


def test_output_types_and_truth_consistency() -> None:
    f = render_field(_params(phagophore_density=(0.05, 0.05)), rng=1, well_level=2.0)
    assert f.image.shape == (2, *SMALL) and f.image.dtype == np.uint16
    assert f.truth.shape == SMALL and f.truth.dtype == np.uint8
    assert set(np.unique(f.truth)) <= {0, 1, 2}
    np.testing.assert_array_equal(f.truth > 0, f.instances > 0)
    ids = np.unique(f.instances[f.instances > 0])
    np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))  # numbered 1..N
    # every object has one class; counts cover the objects centred in the field
    cls = ndi.maximum(f.truth, f.instances, ids)
    assert np.array_equal(cls, ndi.minimum(f.truth, f.instances, ids))
    assert 0 < f.phagophores + f.autolysosomes <= ids.size
    assert f.image.max() <= 4095  # 12 bits


def test_well_level_zero_has_no_vesicles() -> None:
    f = render_field(_params(), rng=2, well_level=0.0)
    assert not f.truth.any() and f.phagophores == f.autolysosomes == 0


def test_bleed_through_moves_dsred_into_the_green_channel() -> None:
    dark = {"glass_counts": 0.0, "stray_counts": 0.0, "hot_pixel_fraction": 0.0}
    plain = render_field(_params(**dark), rng=5)
    bled = render_field(_params(bleed_red_to_green=0.2, **dark), rng=5)
    red = plain.image[0].astype(float) - 100  # the camera offset
    extra = bled.image[1].astype(float).mean() - plain.image[1].astype(float).mean()
    # 20 % of the DsRed signal; the Poisson draws differ, hence the tolerance
    assert extra == pytest.approx(0.2 * red.mean(), rel=0.05)


def test_elongated_vesicles_are_elongated() -> None:
    def aspect(params: AltSimParameters) -> float:
        f = render_field(params, rng=7, well_level=3.0)
        ratios = []
        for sl, i in zip(ndi.find_objects(f.instances), range(1, 10**6), strict=False):
            if sl is None:
                continue
            ys, xs = np.nonzero(f.instances[sl] == i)
            if ys.size < 12:
                continue
            ev = np.linalg.eigvalsh(np.cov(np.stack([ys, xs])))
            ratios.append(np.sqrt(ev[1] / max(ev[0], 1e-9)))
        return float(np.median(ratios))

    round_ = aspect(_params(pixel_size_um=0.1))
    long_ = aspect(_params(pixel_size_um=0.1, elongated_fraction=1.0, elongated_aspect=(3, 3)))
    assert round_ < 1.4 < 2.0 < long_


def test_validation() -> None:
    with pytest.raises(ValueError, match="well_level"):
        render_field(_params(), rng=0, well_level=-1.0)
    with pytest.raises(ValidationError, match="low <= high"):
        AltSimParameters(phagophore_diameter_um=(0.6, 0.3))
    with pytest.raises(ValidationError, match="at least"):
        AltSimParameters(size_yx=(8, 8))
    with pytest.raises(ValidationError, match="aspect"):
        AltSimParameters(aspect_ratio=(0.5, 1.0))
