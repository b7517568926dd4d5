"""Plate statistics of a screen: Z′, robust z, percent of control, hits, 4PL dose response.

All functions are pure: arrays or a :class:`~phagoflow.core.platemap.PlateMap` in, numbers
and dataclasses out. :func:`plate_statistics` applies them to one readout of one plate and one
method (e.g. CIP phagophores per cell); the writers put the results in ``plate_stats.csv``,
``hits.csv`` and ``dose_response.csv``.

Definitions
-----------
Z′ factor (Zhang, Chung & Oldenburg 1999, doi:10.1177/108705719900400206)
    ``Z′ = 1 − 3 (σ₊ + σ₋) / |μ₊ − μ₋|`` over the positive (+) and negative (−) control wells,
    with sample standard deviations (``ddof=1``). 1 is ideal, ≥ 0.5 an excellent assay,
    0–0.5 marginal, < 0 the controls overlap. Needs ≥ 2 wells of each control.
Robust z-score
    ``z = (x − median(S)) / (1.4826 · MAD(S))`` where ``S`` are the plate's *sample* wells and
    ``MAD`` the median absolute deviation; 1.4826 makes the MAD a consistent estimate of σ
    for normal data (Birmingham et al. 2009, doi:10.1038/nmeth.1351). Computed for every
    well, controls included, against the sample distribution. NaN when ``MAD = 0``.
Percent of control
    ``100 · x / mean(negative controls)``: 100 % is the vehicle level.
Hit
    A *sample* well whose robust z passes :attr:`ScreeningParameters.hit_z` in
    :attr:`ScreeningParameters.hit_direction` (``"up"``: ``z ≥ hit_z``; ``"down"``:
    ``z ≤ −hit_z``; ``"both"``: ``|z| ≥ hit_z``). Default: ``|z| ≥ 3``, i.e. about three
    robust standard deviations from the plate's typical sample.
4-parameter logistic (4PL)
    ``y = bottom + (top − bottom) / (1 + 10^((log10 EC50 − log10 c) · hill))``, fitted by
    least squares (:func:`scipy.optimize.curve_fit`) on wells with concentration > 0. The
    EC50 confidence interval is ``10^(log10 EC50 ± t · se)``: ``se`` from the fit's
    covariance, ``t`` the Student quantile for :attr:`ScreeningParameters.ci_level` with
    ``n − 4`` degrees of freedom (asymmetric in concentration, symmetric in log).
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import optimize, stats

from phagoflow.core.counting import READOUTS
from phagoflow.core.platemap import PlateMap, PlateMapEntry, Role
from phagoflow.core.wells import well_name

__all__ = [
    "AUTO_HIT_READOUTS",
    "MAD_TO_SD",
    "DoseResponseFit",
    "PlateStatistics",
    "ScreeningParameters",
    "WellStatistics",
    "call_hits",
    "fit_four_pl",
    "four_pl",
    "percent_of_control",
    "plate_statistics",
    "robust_z",
    "write_dose_response_csv",
    "write_hits_csv",
    "write_plate_stats_csv",
    "z_prime",
]

FloatArray = npt.NDArray[np.float64]

#: Scale that makes the median absolute deviation estimate σ of normal data.
MAD_TO_SD = 1.4826


class ScreeningParameters(BaseModel):
    """Tunables of the plate statistics (frozen; recorded in ``run.json``).

    Nested in the run settings as ``PHAGOFLOW_SCREENING__<NAME>``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    hit_z: float = Field(
        3.0, gt=0, description="Robust-z threshold of a hit (|z| ≥ hit_z for 'both')."
    )
    hit_direction: Literal["up", "down", "both"] = Field(
        "both", description="Which side of the sample distribution counts as a hit."
    )
    z_prime_acceptable: float = Field(
        0.5, le=1, description="Z′ at or above which the plate is flagged acceptable."
    )
    min_controls: int = Field(
        2, ge=2, description="Control wells of each kind needed for Z′ (standard deviations)."
    )
    ci_level: float = Field(0.95, gt=0, lt=1, description="Confidence level of the EC50 interval.")
    min_dose_points: int = Field(
        5, ge=5, description="Wells with concentration > 0 needed for a 4PL fit (≥ 1 d.o.f.)."
    )
    min_concentrations: int = Field(
        4, ge=4, description="Distinct concentrations > 0 needed for a 4PL fit."
    )
    hit_readout: str = Field(
        "auto",
        description="Readout whose robust z calls the hits (hits.csv, wells.csv, the report): "
        "a wells.csv readout column, or 'auto' — phagophores per cell with a nuclear stain, "
        "else per 1,000 µm² of cytoplasm, else per field.",
    )

    @field_validator("hit_readout")
    @classmethod
    def _known_readout(cls, value: str) -> str:
        if value != "auto" and value not in READOUTS:
            raise ValueError(f"must be 'auto' or one of {', '.join(READOUTS)}, got {value!r}")
        return value

    def resolve_hit_readout(self, available: Sequence[str]) -> str:
        """The hit readout among ``available`` (``'auto'`` picks the first of
        :data:`AUTO_HIT_READOUTS` there).

        Raises
        ------
        ValueError
            If the requested readout cannot be computed for this plate (e.g. per cell
            without a nuclear stain).
        """
        if self.hit_readout == "auto":
            return next(r for r in AUTO_HIT_READOUTS if r in available)
        if self.hit_readout not in available:
            need = READOUTS[self.hit_readout].needs
            why = "a nuclear-stain channel" if need == "nuclei" else "cell readouts"
            raise ValueError(
                f"hit readout {self.hit_readout!r} needs {why}, which this run does not have; "
                f"available: {', '.join(available)}"
            )
        return self.hit_readout


#: Order in which ``hit_readout='auto'`` picks the readout that calls hits.
AUTO_HIT_READOUTS = (
    "phagophores_per_cell",
    "phagophores_per_1000um2",
    "phagophores_per_field_mean",
)


# --------------------------------------------------------------------------- scalar statistics


def z_prime(positive: npt.ArrayLike, negative: npt.ArrayLike) -> float:
    """Z′ factor of two sets of control wells.

    Parameters
    ----------
    positive, negative : (N,) array_like of float
        Readout of the positive and negative control wells (N ≥ 2 each; NaNs dropped).

    Returns
    -------
    float
        ``1 − 3 (σ₊ + σ₋) / |μ₊ − μ₋|``; ``-inf`` when the means are equal.

    Raises
    ------
    ValueError
        If either set has fewer than 2 finite values.
    """
    pos = _finite("positive", positive, minimum=2)
    neg = _finite("negative", negative, minimum=2)
    gap = abs(float(pos.mean() - neg.mean()))
    spread = float(pos.std(ddof=1) + neg.std(ddof=1))
    if gap == 0:
        return -math.inf
    return 1.0 - 3.0 * spread / gap


def robust_z(values: npt.ArrayLike, reference: npt.ArrayLike) -> FloatArray:
    """Robust z-scores of ``values`` against the median and MAD of ``reference``.

    Parameters
    ----------
    values : (N,) array_like of float
        Readouts to score (NaN stays NaN).
    reference : (M,) array_like of float
        The distribution to score against — the plate's sample wells (M ≥ 1; NaNs dropped).

    Returns
    -------
    (N,) ndarray of float64
        ``(x − median) / (1.4826 · MAD)``; all NaN when the MAD is 0.
    """
    ref = _finite("reference", reference, minimum=1)
    x = np.asarray(values, dtype=np.float64)
    centre = float(np.median(ref))
    scale = MAD_TO_SD * float(np.median(np.abs(ref - centre)))
    if scale == 0:
        return np.full(x.shape, np.nan)
    z: FloatArray = (x - centre) / scale
    return z


def percent_of_control(values: npt.ArrayLike, negative: npt.ArrayLike) -> FloatArray:
    """``100 · x / mean(negative)`` (NaN when the negative-control mean is 0).

    Parameters
    ----------
    values : (N,) array_like of float
    negative : (M,) array_like of float
        Negative-control readouts (M ≥ 1; NaNs dropped).
    """
    neg = _finite("negative", negative, minimum=1)
    x = np.asarray(values, dtype=np.float64)
    mean = float(neg.mean())
    if mean == 0:
        return np.full(x.shape, np.nan)
    return np.asarray(100.0 * x / mean, dtype=np.float64)


def call_hits(
    z: npt.ArrayLike, *, threshold: float = 3.0, direction: str = "both"
) -> npt.NDArray[np.bool_]:
    """Hit calls from robust z-scores (NaN is never a hit).

    Parameters
    ----------
    z : (N,) array_like of float
    threshold : float, default 3.0
        ``> 0``.
    direction : {'both', 'up', 'down'}, default 'both'
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold!r}")
    zz = np.asarray(z, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if direction == "up":
            out = zz >= threshold
        elif direction == "down":
            out = zz <= -threshold
        elif direction == "both":
            out = np.abs(zz) >= threshold
        else:
            raise ValueError(f"direction must be 'both', 'up' or 'down', got {direction!r}")
    return np.asarray(out & np.isfinite(zz), dtype=np.bool_)


def _finite(name: str, values: npt.ArrayLike, *, minimum: int) -> FloatArray:
    flat = np.asarray(values, dtype=np.float64).ravel()
    arr: FloatArray = flat[np.isfinite(flat)]
    if arr.size < minimum:
        raise ValueError(f"{name} needs at least {minimum} finite value(s), got {arr.size}")
    return arr


# --------------------------------------------------------------------------- dose response


@dataclass(frozen=True)
class DoseResponseFit:
    """A 4PL fit of one compound (concentrations in the compound's base unit).

    Attributes
    ----------
    compound : str
    unit : str
        Base unit of ``ec50`` and the CI: ``"M"``, ``"g/L"`` or ``"%"``.
    n : int
        Wells used (concentration > 0, finite readout).
    bottom, top, ec50, hill : float
        Fitted parameters (NaN when the fit failed); ``bottom`` is approached at low
        concentration, ``top`` at high.
    ec50_ci_low, ec50_ci_high : float
        Confidence interval of the EC50 at ``ci_level`` (NaN when not estimable).
    ci_level : float
    converged : bool
    message : str
        Why the fit failed or is uncertain ("" when fine).
    """

    compound: str
    unit: str
    n: int
    bottom: float
    top: float
    ec50: float
    hill: float
    ec50_ci_low: float
    ec50_ci_high: float
    ci_level: float
    converged: bool
    message: str = ""


def four_pl(
    concentration: npt.ArrayLike, bottom: float, top: float, ec50: float, hill: float
) -> FloatArray:
    """4-parameter logistic: ``bottom + (top − bottom) / (1 + (ec50 / c)^hill)``.

    Parameters
    ----------
    concentration : (N,) array_like of float
        Concentrations > 0, in the unit of ``ec50``.
    """
    c = np.asarray(concentration, dtype=np.float64)
    return _four_pl_log(np.log10(c), bottom, top, math.log10(ec50), hill)


def _four_pl_log(
    log_c: FloatArray, bottom: float, top: float, log_ec50: float, hill: float
) -> FloatArray:
    with np.errstate(over="ignore"):
        return np.asarray(
            bottom + (top - bottom) / (1.0 + np.power(10.0, (log_ec50 - log_c) * hill)),
            dtype=np.float64,
        )


def _four_pl_jacobian(
    log_c: FloatArray, bottom: float, top: float, log_ec50: float, hill: float
) -> FloatArray:
    """``(N, 4)`` derivatives of :func:`_four_pl_log` in (bottom, top, log10 EC50, hill)."""
    with np.errstate(over="ignore", invalid="ignore"):
        u = np.power(10.0, (log_ec50 - log_c) * hill)
        d = 1.0 / (1.0 + u)
        g = -(top - bottom) * d * d * u * math.log(10.0)  # d y / d (exponent)
        jac = np.stack([1.0 - d, d, g * hill, g * (log_ec50 - log_c)], axis=1)
    return np.asarray(np.nan_to_num(jac), dtype=np.float64)


def fit_four_pl(
    concentration: npt.ArrayLike,
    response: npt.ArrayLike,
    *,
    compound: str = "",
    unit: str = "",
    ci_level: float = 0.95,
) -> DoseResponseFit:
    """Least-squares 4PL fit with a confidence interval of the EC50.

    Parameters
    ----------
    concentration : (N,) array_like of float
        Concentrations; values ≤ 0 or non-finite (and their responses) are left out.
    response : (N,) array_like of float
        Readout per well (non-finite values left out).
    compound, unit : str, optional
        Copied into the result.
    ci_level : float, default 0.95
        Confidence level of the EC50 interval (needs N ≥ 5 used wells).

    Returns
    -------
    DoseResponseFit
        ``converged`` is False (and the parameters NaN) when fewer than 4 wells remain or
        the optimiser does not converge; the CI is NaN when it cannot be estimated.
    """
    c, y = _validate_dose(concentration, response)
    n = int(c.size)
    if n < 4 or np.unique(c).size < 4:
        return _failed(compound, unit, n, ci_level, "needs >= 4 distinct concentrations > 0")
    log_c = np.log10(c)
    order = np.argsort(log_c)
    k = max(1, n // 4)
    p0 = [
        float(y[order[:k]].mean()),
        float(y[order[-k:]].mean()),
        float(np.median(log_c)),
        1.0,
    ]
    try:
        with warnings.catch_warnings():  # an inestimable covariance only costs the CI
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            popt, pcov = optimize.curve_fit(
                _four_pl_log, log_c, y, p0=p0, jac=_four_pl_jacobian, maxfev=20000
            )
    except (RuntimeError, ValueError) as exc:
        return _failed(compound, unit, n, ci_level, f"fit did not converge: {exc}")
    bottom, top, log_ec50, hill = (float(v) for v in popt)
    lo = hi = math.nan
    message = ""
    var = float(pcov[2, 2])
    if n > 4 and math.isfinite(var) and var >= 0:
        t = float(stats.t.ppf(0.5 + ci_level / 2, n - 4))
        half = t * math.sqrt(var)
        lo, hi = 10.0 ** (log_ec50 - half), 10.0 ** (log_ec50 + half)
    else:
        message = "EC50 confidence interval not estimable (n <= 4 or singular covariance)"
    if not (log_c.min() <= log_ec50 <= log_c.max()):
        message = "EC50 outside the tested concentration range"
    return DoseResponseFit(
        compound, unit, n, bottom, top, 10.0**log_ec50, hill, lo, hi, ci_level, True, message
    )


def _validate_dose(
    concentration: npt.ArrayLike, response: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    c = np.asarray(concentration, dtype=np.float64).ravel()
    y = np.asarray(response, dtype=np.float64).ravel()
    if c.shape != y.shape:
        raise ValueError(
            f"concentration and response must have the same length, got {c.shape} and {y.shape}"
        )
    keep = np.isfinite(c) & (c > 0) & np.isfinite(y)
    return c[keep], y[keep]


def _failed(compound: str, unit: str, n: int, ci_level: float, message: str) -> DoseResponseFit:
    nan = math.nan
    return DoseResponseFit(
        compound, unit, n, nan, nan, nan, nan, nan, nan, ci_level, False, message
    )


# --------------------------------------------------------------------------- one plate


@dataclass(frozen=True)
class WellStatistics:
    """Statistics of one mapped well for one readout.

    Attributes
    ----------
    row, col : int
    role : Role
    compound, condition : str
    concentration : float or None
    unit : str or None
    value : float
        The readout (NaN when the well has none, e.g. all its fields failed).
    robust_z, percent_of_control : float
        NaN when not computable.
    hit : bool
        Only sample wells can be hits.
    """

    row: int
    col: int
    role: Role
    compound: str
    condition: str
    concentration: float | None
    unit: str | None
    value: float
    robust_z: float
    percent_of_control: float
    hit: bool

    @property
    def well(self) -> str:
        """Display name, e.g. ``B05``."""
        return well_name(self.row, self.col)


@dataclass(frozen=True)
class PlateStatistics:
    """Everything :func:`plate_statistics` computed for one plate, method and readout.

    Attributes
    ----------
    plate, method, readout : str
    z_prime : float
        NaN when the plate has too few control wells with a readout.
    z_prime_acceptable : bool
        ``z_prime >= params.z_prime_acceptable``.
    negative_mean, negative_sd, positive_mean, positive_sd : float
    n_negative, n_positive, n_samples : int
        Wells of each role with a finite readout.
    sample_median, sample_mad : float
    wells : tuple of WellStatistics
        Every mapped, non-empty well, in plate order.
    dose_response : tuple of DoseResponseFit
        One fit per sample compound with concentrations (may be empty).
    params : ScreeningParameters
    """

    plate: str
    method: str
    readout: str
    z_prime: float
    z_prime_acceptable: bool
    negative_mean: float
    negative_sd: float
    positive_mean: float
    positive_sd: float
    n_negative: int
    n_positive: int
    n_samples: int
    sample_median: float
    sample_mad: float
    wells: tuple[WellStatistics, ...]
    dose_response: tuple[DoseResponseFit, ...]
    params: ScreeningParameters

    @property
    def hits(self) -> tuple[WellStatistics, ...]:
        """The hit wells, strongest first (largest |robust z|)."""
        return tuple(sorted((w for w in self.wells if w.hit), key=lambda w: -abs(w.robust_z)))


def plate_statistics(
    values: Mapping[tuple[int, int], float],
    plate_map: PlateMap,
    *,
    plate: str,
    method: str,
    readout: str,
    params: ScreeningParameters | None = None,
) -> PlateStatistics:
    """Z′, robust z, percent of control, hits and 4PL fits of one readout on one plate.

    Parameters
    ----------
    values : dict of (int, int) to float
        Readout per well ``(row, col)`` (e.g. phagophores per cell); wells missing here, or
        NaN, have no readout (failed) and are left out of every statistic.
    plate_map : PlateMap
    plate, method, readout : str
        Labels copied into the result (``method`` e.g. ``"cip"``).
    params : ScreeningParameters, optional

    Returns
    -------
    PlateStatistics
        Z′ is NaN when fewer than ``params.min_controls`` wells of a control kind have a
        readout (the caller decides whether that is an error; see
        :func:`phagoflow.core.platemap.require_controls`).
    """
    p = params if params is not None else ScreeningParameters()
    mapped = [e for k, e in sorted(plate_map.entries.items()) if e.role != Role.EMPTY]
    val = np.array([float(values.get((e.row, e.col), math.nan)) for e in mapped])
    role = np.array([e.role.value for e in mapped])
    ok = np.isfinite(val)
    neg, pos, smp = (
        val[ok & (role == r.value)] for r in (Role.NEGATIVE, Role.POSITIVE, Role.SAMPLE)
    )
    zp = z_prime(pos, neg) if min(pos.size, neg.size) >= p.min_controls else math.nan
    z = robust_z(val, smp) if smp.size else np.full(val.shape, np.nan)
    poc = percent_of_control(val, neg) if neg.size else np.full(val.shape, np.nan)
    hit = call_hits(z, threshold=p.hit_z, direction=p.hit_direction) & (role == Role.SAMPLE.value)
    wells = _well_statistics(mapped, val, z, poc, hit)
    median = float(np.median(smp)) if smp.size else math.nan
    return PlateStatistics(
        plate=plate,
        method=method,
        readout=readout,
        z_prime=zp,
        z_prime_acceptable=bool(math.isfinite(zp) and zp >= p.z_prime_acceptable),
        negative_mean=_mean(neg),
        negative_sd=_sd(neg),
        positive_mean=_mean(pos),
        positive_sd=_sd(pos),
        n_negative=int(neg.size),
        n_positive=int(pos.size),
        n_samples=int(smp.size),
        sample_median=median,
        sample_mad=float(np.median(np.abs(smp - median))) if smp.size else math.nan,
        wells=wells,
        dose_response=_dose_fits(mapped, val, p),
        params=p,
    )


def _well_statistics(
    mapped: Sequence[PlateMapEntry],
    val: FloatArray,
    z: FloatArray,
    poc: FloatArray,
    hit: npt.NDArray[np.bool_],
) -> tuple[WellStatistics, ...]:
    """One :class:`WellStatistics` per mapped well: its map entry and its numbers."""
    return tuple(
        WellStatistics(
            e.row,
            e.col,
            e.role,
            e.compound,
            e.condition,
            e.concentration,
            e.unit,
            float(val[i]),
            float(z[i]),
            float(poc[i]),
            bool(hit[i]),
        )
        for i, e in enumerate(mapped)
    )


def _mean(a: FloatArray) -> float:
    return float(a.mean()) if a.size else math.nan


def _sd(a: FloatArray) -> float:
    return float(a.std(ddof=1)) if a.size >= 2 else math.nan


def _dose_fits(
    mapped: Sequence[PlateMapEntry], val: FloatArray, p: ScreeningParameters
) -> tuple[DoseResponseFit, ...]:
    """One 4PL fit per sample compound with enough concentrations (in base units)."""
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for e, v in zip(mapped, val, strict=True):
        base = e.concentration_base
        if e.role != Role.SAMPLE or base is None or not e.compound:
            continue
        conc, unit = base
        if conc > 0 and math.isfinite(v):
            groups.setdefault((e.compound, unit), []).append((conc, float(v)))
    fits = []
    for (compound, unit), pts in sorted(groups.items()):
        c = np.array([x for x, _ in pts])
        if c.size < p.min_dose_points or np.unique(c).size < p.min_concentrations:
            continue
        y = np.array([v for _, v in pts])
        fits.append(fit_four_pl(c, y, compound=compound, unit=unit, ci_level=p.ci_level))
    return tuple(fits)


# --------------------------------------------------------------------------- writers

_STATS_COLUMNS = (
    "plate", "method", "readout", "hit_readout", "z_prime", "z_prime_acceptable",
    "z_prime_threshold", "negative_mean", "negative_sd", "n_negative", "positive_mean",
    "positive_sd", "n_positive", "n_samples", "sample_median", "sample_mad", "hit_z",
    "hit_direction", "n_hits",
)  # fmt: skip
_HIT_COLUMNS = (
    "plate", "method", "readout", "well", "row", "col", "role", "compound", "condition",
    "concentration", "unit", "value", "robust_z", "percent_of_control",
)  # fmt: skip
_DOSE_COLUMNS = (
    "plate", "method", "readout", "compound", "unit", "n", "bottom", "top", "ec50", "hill",
    "ec50_ci_low", "ec50_ci_high", "ci_level", "converged", "message",
)  # fmt: skip


def _fmt(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, Role):
        return value.value
    return "" if value is None else value


def _write_rows(
    path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, object]]
) -> Path:
    p = Path(path)
    with p.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})
    return p


def _labels(s: PlateStatistics) -> dict[str, object]:
    return {"plate": s.plate, "method": s.method, "readout": s.readout}


def _stats_row(s: PlateStatistics, hit_readout: str | None) -> dict[str, object]:
    row = _labels(s) | {k: getattr(s, k) for k in _STATS_COLUMNS if hasattr(s, k)}
    return row | {
        "hit_readout": s.readout == hit_readout,
        "z_prime_threshold": s.params.z_prime_acceptable,
        "hit_z": s.params.hit_z,
        "hit_direction": s.params.hit_direction,
        "n_hits": len(s.hits),
    }


def write_plate_stats_csv(
    path: str | Path, results: Iterable[PlateStatistics], *, hit_readout: str | None = None
) -> Path:
    """``plate_stats.csv``: one row per plate, method and readout (Z′, controls, hit count).

    Column ``hit_readout`` is True on the rows of ``hit_readout``, the readout that calls the
    hits of ``hits.csv`` (``n_hits`` of the other rows is what that readout would call).
    """
    return _write_rows(path, _STATS_COLUMNS, (_stats_row(s, hit_readout) for s in results))


def write_hits_csv(path: str | Path, results: Iterable[PlateStatistics]) -> Path:
    """``hits.csv``: one row per hit well (A01 names), strongest first within each readout."""
    return _write_rows(path, _HIT_COLUMNS, _item_rows(results, "hits", _HIT_COLUMNS))


def write_dose_response_csv(path: str | Path, results: Iterable[PlateStatistics]) -> Path:
    """``dose_response.csv``: one row per 4PL fit (EC50 and its CI in the base unit)."""
    return _write_rows(path, _DOSE_COLUMNS, _item_rows(results, "dose_response", _DOSE_COLUMNS))


def _item_rows(
    results: Iterable[PlateStatistics], items: str, columns: Sequence[str]
) -> Iterator[dict[str, object]]:
    """One row per element of each result's ``items`` list: the plate labels and its columns."""
    for s in results:
        for item in getattr(s, items):
            yield _labels(s) | {k: getattr(item, k) for k in columns if hasattr(item, k)}
