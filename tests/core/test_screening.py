"""Tests of the plate statistics (phagoflow.core.screening) against hand-computed values."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from phagoflow.core.platemap import parse_plate_map
from phagoflow.core.screening import (
    ScreeningParameters,
    call_hits,
    fit_four_pl,
    four_pl,
    percent_of_control,
    plate_statistics,
    robust_z,
    write_dose_response_csv,
    write_hits_csv,
    write_plate_stats_csv,
    z_prime,
)

# --- Z′, robust z, percent of control ---------------------------------------------------------


def test_z_prime_by_hand() -> None:
    # positive mean 12, s.d. 2; negative mean 2, s.d. 1: 1 - 3 (2 + 1) / 10 = 0.1
    assert z_prime([10, 12, 14], [1, 2, 3]) == pytest.approx(0.1)
    # the sign of the effect does not matter; NaNs are dropped
    assert z_prime([1, 2, 3, np.nan], [10, 12, 14]) == pytest.approx(0.1)
    # perfectly separated controls without spread: 1
    assert z_prime([5, 5], [1, 1]) == 1.0
    assert z_prime([1, 2], [2, 1]) == -math.inf


def test_z_prime_needs_two_controls() -> None:
    with pytest.raises(ValueError, match="positive needs at least 2 finite value"):
        z_prime([1, np.nan], [1, 2])
    with pytest.raises(ValueError, match="negative needs at least 2"):
        z_prime([1, 2], [3])


def test_robust_z_by_hand() -> None:
    samples = [1.0, 2.0, 3.0, 4.0, 100.0]
    # median 3; |x - 3| = 2, 1, 0, 1, 97 -> MAD 1; scale 1.4826
    z = robust_z(samples, samples)
    np.testing.assert_allclose(z, np.array([-2, -1, 0, 1, 97]) / 1.4826)
    # scores other wells against the sample distribution; NaN stays NaN
    np.testing.assert_allclose(robust_z([6.0, np.nan], samples), [3 / 1.4826, np.nan])
    assert np.isnan(robust_z([1.0, 2.0], [5.0, 5.0, 5.0])).all()  # MAD 0


def test_percent_of_control_by_hand() -> None:
    np.testing.assert_allclose(percent_of_control([2.0, 4.0, 6.0], [3.0, 5.0]), [50, 100, 150])
    assert np.isnan(percent_of_control([1.0], [0.0, 0.0])).all()


@pytest.mark.parametrize(
    ("direction", "expected"),
    [("both", [True, False, True, False]), ("up", [True, False, False, False]),
     ("down", [False, False, True, False])],
)  # fmt: skip
def test_hit_calls(direction: str, expected: list[bool]) -> None:
    z = [3.0, 2.99, -3.5, np.nan]
    assert call_hits(z, threshold=3.0, direction=direction).tolist() == expected


def test_hit_call_options_validated() -> None:
    with pytest.raises(ValueError, match="direction must be"):
        call_hits([1.0], direction="sideways")
    with pytest.raises(ValueError, match="threshold must be > 0"):
        call_hits([1.0], threshold=0)
    with pytest.raises(ValidationError):
        ScreeningParameters(hit_z=-1)


# --- 4PL ----------------------------------------------------------------------------------


def test_four_pl_shape() -> None:
    y = four_pl([1e-9, 1e-7, 1e-5], bottom=10, top=110, ec50=1e-7, hill=1.0)
    np.testing.assert_allclose(y, [10 + 100 / 101, 60, 110 - 100 / 101])


def test_fit_recovers_exact_parameters() -> None:
    c = np.logspace(-9, -5, 9)
    y = four_pl(c, bottom=5.0, top=50.0, ec50=2e-7, hill=1.3)
    fit = fit_four_pl(c, y, compound="X", unit="M")
    assert fit.converged and fit.n == 9
    assert fit.bottom == pytest.approx(5.0, abs=1e-6)
    assert fit.top == pytest.approx(50.0, abs=1e-6)
    assert fit.ec50 == pytest.approx(2e-7, rel=1e-6)
    assert fit.hill == pytest.approx(1.3, rel=1e-6)
    assert fit.ec50_ci_low <= fit.ec50 <= fit.ec50_ci_high


def test_fit_decreasing_response() -> None:
    c = np.logspace(-2, 2, 8)
    y = four_pl(c, bottom=100.0, top=20.0, ec50=1.5, hill=2.0)
    fit = fit_four_pl(c, y)
    assert (fit.bottom, fit.top, fit.ec50) == pytest.approx((100.0, 20.0, 1.5), rel=1e-5)


def test_ec50_confidence_interval_by_hand() -> None:
    # fixed residual pattern, so the interval has a width that the textbook formula predicts:
    # s² = RSS / (n - 4), cov = s² (JᵀJ)⁻¹ with J the Jacobian in (bottom, top, log EC50, hill)
    c = np.repeat(np.logspace(-8, -4, 6), 2)
    wiggle = np.tile([1.5, -1.5], 6) * np.linspace(1, 2, 12)
    y = four_pl(c, bottom=10.0, top=90.0, ec50=1e-6, hill=1.0) + wiggle
    fit = fit_four_pl(c, y, ci_level=0.9)
    b, t, le, h = fit.bottom, fit.top, math.log10(fit.ec50), fit.hill
    x = np.log10(c)
    u = 10.0 ** ((le - x) * h)
    d = 1.0 / (1.0 + u)
    dexp = -(t - b) * d**2 * u * math.log(10)  # derivative of y by the exponent (le - x) h
    jac = np.stack([1 - d, d, dexp * h, dexp * (le - x)], axis=1)
    resid = y - (b + (t - b) * d)
    s2 = resid @ resid / (c.size - 4)
    se = math.sqrt(s2 * np.linalg.inv(jac.T @ jac)[2, 2])
    q = stats.t.ppf(0.95, c.size - 4)
    assert fit.ec50_ci_low == pytest.approx(10 ** (le - q * se), rel=1e-4)
    assert fit.ec50_ci_high == pytest.approx(10 ** (le + q * se), rel=1e-4)
    assert fit.ec50_ci_low < 1e-6 < fit.ec50_ci_high
    assert fit.ci_level == 0.9


def test_fit_refuses_too_few_concentrations() -> None:
    fit = fit_four_pl([0.0, 1.0, 2.0, 3.0, 3.0], [1.0, 2.0, 3.0, 4.0, 4.0])
    assert not fit.converged and math.isnan(fit.ec50)
    assert "needs >= 4 distinct concentrations" in fit.message
    with pytest.raises(ValueError, match="same length"):
        fit_four_pl([1.0, 2.0], [1.0])


# --- one plate --------------------------------------------------------------------------------

MAP = """well,role,compound,concentration,unit
B02,negative,DMSO,,
B03,negative,DMSO,,
B04,negative,DMSO,,
B05,positive,Torin1,250,nM
B06,positive,Torin1,250,nM
B07,positive,Torin1,250,nM
C02,sample,A,,
C03,sample,B,,
C04,sample,C,,
C05,sample,D,,
C06,sample,E,,
C07,sample,F,,
D02,empty,,,
"""


def _values() -> dict[tuple[int, int], float]:
    v = {(2, 2): 1.0, (2, 3): 2.0, (2, 4): 3.0, (2, 5): 10.0, (2, 6): 12.0, (2, 7): 14.0}
    v |= {(3, c): x for c, x in zip(range(2, 8), [2.0, 2.5, 3.0, 3.5, 2.0, 30.0], strict=True)}
    v[(4, 2)] = 99.0  # an empty well's value is never used
    return v


def test_plate_statistics_by_hand() -> None:
    pm = parse_plate_map(MAP)
    s = plate_statistics(_values(), pm, plate="P1", method="cip", readout="phagophores_per_cell")
    assert s.z_prime == pytest.approx(1 - 3 * (2 + 1) / 10)
    assert (s.n_negative, s.n_positive, s.n_samples) == (3, 3, 6)
    assert not s.z_prime_acceptable
    # samples 2, 2.5, 3, 3.5, 2, 30 -> median 2.75; |x - m| = .75 .25 .25 .75 .75 27.25 -> MAD .75
    assert (s.sample_median, s.sample_mad) == pytest.approx((2.75, 0.75))
    by_well = {w.well: w for w in s.wells}
    assert "D02" not in by_well  # empty wells are not scored
    assert by_well["C07"].robust_z == pytest.approx((30 - 2.75) / (1.4826 * 0.75))
    assert by_well["C07"].percent_of_control == pytest.approx(1500.0)
    assert [w.well for w in s.hits] == ["C07"]
    # a positive control far from the samples is not a hit: only samples are called
    assert by_well["B07"].robust_z > 3 and not by_well["B07"].hit


def test_failed_wells_are_left_out() -> None:
    pm = parse_plate_map(MAP)
    values = _values()
    del values[(2, 7)]  # all fields of a positive control failed
    values[(3, 7)] = math.nan
    s = plate_statistics(values, pm, plate="P1", method="cip", readout="r")
    assert s.n_positive == 2 and s.n_samples == 5
    assert s.z_prime == pytest.approx(z_prime([10, 12], [1, 2, 3]))
    assert s.hits == ()
    del values[(2, 6)]
    assert math.isnan(plate_statistics(values, pm, plate="P1", method="cip", readout="r").z_prime)


def test_dose_response_per_compound_in_base_units() -> None:
    rows = ["well,role,compound,concentration,unit", "B02,negative,DMSO,,", "B03,negative,DMSO,,"]
    conc_nm = [1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0]
    values = {(2, 2): 1.0, (2, 3): 1.0}
    for i, c in enumerate(conc_nm):
        # mixed units for one compound: 1000 nM is written as 1 µM
        text = f"{c / 1000:g},µM" if c >= 1000 else f"{c:g},nM"
        rows.append(f"C{i + 2:02d},sample,Y,{text}")
        values[(3, i + 2)] = float(four_pl([c * 1e-9], 1.0, 4.0, 40e-9, 1.0)[0])
    pm = parse_plate_map("\n".join(rows) + "\n")
    s = plate_statistics(values, pm, plate="P", method="cip", readout="r")
    (fit,) = s.dose_response
    assert fit.compound == "Y" and fit.unit == "M" and fit.n == 8
    assert fit.ec50 == pytest.approx(40e-9, rel=1e-5)


def test_writers(tmp_path: Path) -> None:
    pm = parse_plate_map(MAP)
    s = plate_statistics(_values(), pm, plate="P1", method="cip", readout="phagophores_per_cell")
    with (write_plate_stats_csv(tmp_path / "plate_stats.csv", [s])).open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["z_prime"]) == pytest.approx(0.1)
    assert row["n_hits"] == "1" and row["hit_z"] == "3" and row["hit_direction"] == "both"
    assert row["z_prime_acceptable"] == "False" and row["z_prime_threshold"] == "0.5"
    with (write_hits_csv(tmp_path / "hits.csv", [s])).open() as fh:
        (hit,) = list(csv.DictReader(fh))
    assert (hit["well"], hit["role"], hit["compound"], hit["value"]) == ("C07", "sample", "F", "30")
    with (write_dose_response_csv(tmp_path / "dose.csv", [s])).open() as fh:
        assert list(csv.DictReader(fh)) == []


def test_ec50_interval_covers_the_truth_at_its_level() -> None:
    # 200 noisy replicate plates from a fixed seed (deterministic): a 95 % interval must cover
    # the true EC50 in roughly 95 % of them (binomial s.d. 1.5 %), not 50 % or 100 %
    rng = np.random.default_rng(1234)
    c = np.repeat(np.logspace(-9, -5, 7), 3)
    truth = four_pl(c, bottom=1.0, top=3.0, ec50=3e-7, hill=1.0)
    covered = []
    for _ in range(200):
        fit = fit_four_pl(c, truth + rng.normal(0.0, 0.15, c.size))
        assert fit.converged
        covered.append(fit.ec50_ci_low <= 3e-7 <= fit.ec50_ci_high)
    assert 0.89 <= np.mean(covered) <= 0.99
