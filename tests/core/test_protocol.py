"""Tests of the stress conditions (phagoflow.core.stress) and the plate protocol (protocol)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from phagoflow.core.altsim import AltSimParameters
from phagoflow.core.protocol import (
    SEED_RANGES,
    PlateSpec,
    ProtocolError,
    Role,
    plate_set,
    render_plate,
    require_reportable,
    require_tunable,
    role_of_seed,
)
from phagoflow.core.simulate import SimulationParameters
from phagoflow.core.stress import CONDITIONS, condition, condition_params

# --------------------------------------------------------------------------------- conditions


@pytest.mark.parametrize("name", list(CONDITIONS))
def test_every_condition_has_both_variants_and_the_test_one_is_shifted(name: str) -> None:
    tuning, test = condition_params(name, "tuning"), condition_params(name, "test")
    assert type(tuning) is type(test)
    assert isinstance(tuning, SimulationParameters | AltSimParameters)
    assert test.psf_sigma_um == pytest.approx(1.12 * tuning.psf_sigma_um)  # other settings
    assert test.pixel_size_um == tuning.pixel_size_um  # the condition itself is kept
    assert condition(name).tag == zlib.crc32(name.encode()) & 0x7FFFFFFF


def test_condition_settings_match_their_names() -> None:
    assert condition_params("pixel_0.06").pixel_size_um == 0.06
    assert condition_params("pixel_0.4").pixel_size_um == 0.4
    assert condition("channel_order").channel_ids == (2, 1)
    generators = {c.generator for c in CONDITIONS.values()}
    assert generators == {"simulate", "altsim"}  # not only presets of one simulator
    with pytest.raises(ValueError, match="unknown condition"):
        condition("nope")
    with pytest.raises(ValueError, match="variant"):
        condition_params("normal", "final")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- protocol


def test_seed_ranges_are_disjoint_and_roles_found() -> None:
    ranges = list(SEED_RANGES.values())
    for i, a in enumerate(ranges):
        for b in ranges[i + 1 :]:
            assert not set(a) & set(b)
    assert role_of_seed(7000) is Role.TEST
    assert role_of_seed(5001) is Role.VALIDATION
    assert role_of_seed(150) is Role.TRAINING
    assert role_of_seed(900) is None  # the old experiment's test plate is no test plate


def test_plate_spec_refuses_a_seed_of_another_role() -> None:
    with pytest.raises(ProtocolError, match="not a test seed"):
        PlateSpec("normal", Role.TEST, 5000)
    with pytest.raises(ProtocolError, match="unknown condition"):
        PlateSpec("nope", Role.TEST, 7000)
    assert PlateSpec("normal", Role.TEST, 7000).variant == "test"
    assert PlateSpec("normal", Role.VALIDATION, 5000).variant == "tuning"


def test_reporting_and_tuning_guards() -> None:
    test = plate_set(Role.TEST, ["normal", "harder"], plates=2)
    val = plate_set(Role.VALIDATION, ["normal"])
    assert [s.seed for s in test] == [7000, 7001, 7000, 7001]
    require_reportable(test)
    require_tunable(val)
    with pytest.raises(ProtocolError, match=r"validation:normal:5000"):
        require_reportable(test + val)
    with pytest.raises(ProtocolError, match="test plates may not"):
        require_tunable(test[0])
    with pytest.raises(ProtocolError, match="none given"):
        require_reportable([])


def test_fields_do_not_depend_on_plate_size() -> None:
    one = render_plate(PlateSpec("normal", Role.VALIDATION, 5003, wells=1, fields=1))
    two = render_plate(PlateSpec("normal", Role.VALIDATION, 5003, wells=2, fields=1))
    np.testing.assert_array_equal(one.fields[0].image, two.fields[0].image)
    assert two.wells == (0, 1)
    counts = two.true_counts()
    assert counts["w00"] == (two.fields[0].phagophores, two.fields[0].autolysosomes)


def test_channel_order_goes_through_the_reader_by_name() -> None:
    pytest.importorskip("phagoflow.core.opera")
    from phagoflow.core.protocol import _iter_fields

    spec = PlateSpec("channel_order", Role.VALIDATION, 5004, wells=1, fields=1)
    (_, plain), *_ = _iter_fields(spec)  # the rendering before the export round trip
    read = render_plate(spec).fields[0]
    # written pHluorin-first (channel ids 2, 1) and read back as [DsRed, pHluorin] by name
    assert read.image.dtype == np.float32
    np.testing.assert_array_equal(read.image, plain.image.astype(np.float32))
    np.testing.assert_array_equal(read.truth, plain.truth)
    assert read.pixel_size_um == pytest.approx(plain.pixel_size_um)
