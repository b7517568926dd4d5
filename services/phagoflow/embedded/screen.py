"""Plate statistics of an embedded run: the plate map, Z′, robust z, hits and dose response.

``phagoflow run --plate-map FILE.csv`` reads the map before any work (:func:`load_plate_map`:
every well must lie on the export's plate, and a map asks for statistics, so it needs control
wells that were imaged), and after the run computes, per method and readout,
:func:`phagoflow.core.screening.plate_statistics` of the per-well summaries
(:func:`screen_statistics`). The results go to::

    OUT/plate_stats.csv      one row per method and readout: Z′, control means and s.d., hits
    OUT/hits.csv             the hit wells of the hit readout (A01 names), strongest first
    OUT/dose_response.csv    4PL fits of the hit readout (when the map gives concentrations)

and, for the hit readout, into ``wells.csv`` (:data:`SCREEN_COLUMNS`), the report and
``run.json`` (:func:`statistics_record`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phagoflow.core.counting import WellSummary
from phagoflow.core.opera import PlateCatalogue
from phagoflow.core.platemap import PlateMap, PlateMapError, Role, read_plate_map, require_controls
from phagoflow.core.screening import (
    PlateStatistics,
    ScreeningParameters,
    WellStatistics,
    plate_statistics,
    write_dose_response_csv,
    write_hits_csv,
    write_plate_stats_csv,
)
from phagoflow.core.wells import parse_well, well_name

__all__ = [
    "SCREEN_COLUMNS",
    "Screen",
    "load_plate_map",
    "planted_and_hits",
    "planted_wells",
    "screen_statistics",
    "statistics_record",
    "well_screen_values",
    "write_screen_tables",
]

#: Columns ``wells.csv`` gains with a plate map: the well's entry, then the statistics of the
#: hit readout for the row's method.
SCREEN_COLUMNS = (
    "role",
    "condition",
    "compound",
    "concentration",
    "unit",
    "hit_readout",
    "robust_z",
    "percent_of_control",
    "hit",
)


@dataclass(frozen=True)
class Screen:
    """A plate map and the statistics computed with it.

    Attributes
    ----------
    plate_map : PlateMap
    params : ScreeningParameters
    readouts : tuple of str
        Readouts with statistics (:data:`~phagoflow.core.counting.READOUTS` names).
    hit_readout : str
        The readout whose robust z calls the hits.
    statistics : tuple of PlateStatistics
        One per method and readout (empty until :func:`screen_statistics`).
    sha256 : str
        Checksum of the plate-map file ("" for a map not read from a file).
    """

    plate_map: PlateMap
    params: ScreeningParameters
    readouts: tuple[str, ...]
    hit_readout: str
    statistics: tuple[PlateStatistics, ...] = ()
    sha256: str = ""

    def of(self, method: str, readout: str | None = None) -> PlateStatistics | None:
        """The statistics of ``method`` for ``readout`` (default: the hit readout)."""
        want = (method, readout or self.hit_readout)
        return next((s for s in self.statistics if (s.method, s.readout) == want), None)

    @property
    def hit_statistics(self) -> list[PlateStatistics]:
        """The statistics of the hit readout, one per method."""
        return [s for s in self.statistics if s.readout == self.hit_readout]


def load_plate_map(
    path: Path,
    catalogue: PlateCatalogue,
    params: ScreeningParameters,
    readouts: Sequence[str],
) -> Screen:
    """Read and check ``--plate-map`` against the export, before any work.

    Parameters
    ----------
    path : Path
        The plate-map CSV (:mod:`phagoflow.core.platemap` format).
    catalogue : PlateCatalogue
        The export: its plate geometry bounds the wells; its imaged wells must hold the
        controls.
    params : ScreeningParameters
        ``min_controls`` and the hit readout.
    readouts : sequence of str
        Readouts this run can compute (:func:`~phagoflow.core.counting.available_readouts`).

    Returns
    -------
    Screen
        Without statistics yet.

    Raises
    ------
    PlateMapError
        A map that cannot be read or parsed, with too few control wells, or whose control
        wells were not imaged (one line naming them).
    ValueError
        A hit readout this run cannot compute (e.g. per cell without a nuclear stain).
    """
    plate_map = read_plate_map(
        path, plate_rows=catalogue.plate_rows, plate_columns=catalogue.plate_columns
    )
    n = params.min_controls
    require_controls(plate_map, min_negative=n, min_positive=n)
    imaged = {parse_well(w) for w in catalogue.wells} or {
        (r.key.row, r.key.col) for r in catalogue.fields
    }
    for role in (Role.NEGATIVE, Role.POSITIVE):
        wells = plate_map.wells(role)
        seen = [w for w in wells if w in imaged]
        if len(seen) < n:
            missing = ", ".join(well_name(*w) for w in wells if w not in imaged)
            raise PlateMapError(
                f"{path}: only {len(seen)} of the {len(wells)} {role.value} control wells were "
                f"imaged (not imaged: {missing}); plate statistics need >= {n}"
            )
    return Screen(
        plate_map=plate_map,
        params=params,
        readouts=tuple(readouts),
        hit_readout=params.resolve_hit_readout(readouts),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def screen_statistics(
    screen: Screen, wells: Sequence[WellSummary], methods: Sequence[str], *, plate: str
) -> Screen:
    """``screen`` with the statistics of every method and readout of ``wells``.

    A well with no field counted has no readout (NaN): it is left out of every statistic
    rather than read as zero.
    """
    results = []
    for method in methods:
        mine = [w for w in wells if w.method == method]
        for readout in screen.readouts:
            values = {(w.row, w.col): w.readout(readout) for w in mine}
            results.append(
                plate_statistics(
                    values,
                    screen.plate_map,
                    plate=plate,
                    method=method,
                    readout=readout,
                    params=screen.params,
                )
            )
    return Screen(
        screen.plate_map,
        screen.params,
        screen.readouts,
        screen.hit_readout,
        tuple(results),
        screen.sha256,
    )


def write_screen_tables(out: Path, screen: Screen) -> list[Path]:
    """Write ``plate_stats.csv``, ``hits.csv`` and, when the map has concentrations,
    ``dose_response.csv`` into ``out``; returns the paths written."""
    written = [
        write_plate_stats_csv(
            out / "plate_stats.csv", screen.statistics, hit_readout=screen.hit_readout
        ),
        write_hits_csv(out / "hits.csv", screen.hit_statistics),
    ]
    if any(e.concentration is not None for e in screen.plate_map.entries.values()):
        written.append(write_dose_response_csv(out / "dose_response.csv", screen.hit_statistics))
    return written


def well_screen_values(screen: Screen, well: WellSummary) -> dict[str, Any]:
    """The :data:`SCREEN_COLUMNS` of one ``wells.csv`` row (blank where the map says nothing)."""
    row, col = well.row, well.col
    entry = screen.plate_map.entries.get((row, col))
    values: dict[str, Any] = dict.fromkeys(SCREEN_COLUMNS)
    if entry is None:
        return values
    values.update(
        role=entry.role.value,
        condition=entry.condition,
        compound=entry.compound,
        concentration=entry.concentration,
        unit=entry.unit,
    )
    stats = screen.of(well.method)
    ws = _well_stats(stats, row, col) if stats is not None else None
    if ws is not None:
        values.update(
            hit_readout=screen.hit_readout,
            robust_z=ws.robust_z,
            percent_of_control=ws.percent_of_control,
            hit=ws.hit,
        )
    return values


def _well_stats(stats: PlateStatistics, row: int, col: int) -> WellStatistics | None:
    return next((w for w in stats.wells if (w.row, w.col) == (row, col)), None)


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def statistics_record(screen: Screen) -> dict[str, Any]:
    """The ``run.json`` entry: the map, the parameters and each method and readout's Z′."""
    pm = screen.plate_map
    return {
        "plate_map": {
            "path": pm.source,
            "sha256": screen.sha256,
            "wells": {role.value: n for role, n in pm.counts().items()},
        },
        "parameters": screen.params.model_dump(),
        "hit_readout": screen.hit_readout,
        "readouts": list(screen.readouts),
        "results": [
            {
                "method": s.method,
                "readout": s.readout,
                "z_prime": _number(s.z_prime),
                "z_prime_acceptable": s.z_prime_acceptable,
                "n_negative": s.n_negative,
                "n_positive": s.n_positive,
                "n_samples": s.n_samples,
                "hits": [w.well for w in s.hits],
            }
            for s in screen.statistics
        ],
    }


# --------------------------------------------------------------------------- demo check
def planted_wells(truth_wells: Path) -> list[str]:
    """A01 names of the planted sample wells of a simulated screen, sorted.

    Parameters
    ----------
    truth_wells : Path
        ``truth/wells.csv`` of ``phagoflow simulate --screen`` (column ``planted``).
    """
    import csv

    from phagoflow.core.wells import to_display

    with truth_wells.open(newline="") as fh:
        return sorted(to_display(r["well"]) for r in csv.DictReader(fh) if r["planted"] == "True")


def planted_and_hits(truth_wells: Path, hits_csv: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The planted wells (:func:`planted_wells`) and the hits of each method in ``hits_csv``
    (``hits.csv`` of ``phagoflow run --plate-map``), A01 names."""
    import csv

    from phagoflow.core.wells import to_display

    hits: dict[str, list[str]] = {}
    with hits_csv.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            hits.setdefault(r["method"], []).append(to_display(r["well"]))
    return planted_wells(truth_wells), {m: sorted(w) for m, w in hits.items()}


def _check_planted(argv: Sequence[str]) -> int:
    """``python -m phagoflow.embedded.screen check-planted TRUTH_WELLS HITS``: exit 0 when
    every method's hits are exactly the planted wells (``make demo``)."""
    if len(argv) != 3 or argv[0] != "check-planted":
        print("usage: python -m phagoflow.embedded.screen check-planted TRUTH_WELLS.csv HITS.csv")
        return 2
    planted, hits = planted_and_hits(Path(argv[1]), Path(argv[2]))
    ok = bool(hits) and all(found == planted for found in hits.values())
    found = "; ".join(f"{m.upper()} {' '.join(w) or 'none'}" for m, w in sorted(hits.items()))
    verdict = "the hits are the planted wells" if ok else "the hits are NOT the planted wells"
    print(f"demo: planted {' '.join(planted) or 'none'}; hits {found or 'none'}: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    sys.exit(_check_planted(sys.argv[1:]))
