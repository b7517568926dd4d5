"""Plate maps: which well holds what (``--plate-map FILE.csv``).

A plate map is a CSV file with a header row and one row per well::

    well,role,condition,compound,concentration,unit
    B02,negative,DMSO,DMSO,0.1,%
    B03,positive,Torin1 250 nM,Torin1,250,nM
    B04,sample,,CMPD-0042,10 µM,
    B05,empty,,,,

Columns (header names are case-insensitive; order is free; unknown columns are kept in
:attr:`PlateMapEntry.extra`):

``well`` (required)
    ``A01`` or ``rRRcCC`` (:func:`phagoflow.core.wells.parse_well`); it must lie on the plate
    (``plate_rows`` × ``plate_columns``) and appear once.
``role`` (required)
    ``negative`` (also ``negative control``, ``neg``), ``positive`` (``positive control``,
    ``pos``), ``sample`` or ``empty``; case-insensitive.
``condition``, ``compound`` (optional)
    Free text.
``concentration``, ``unit`` (optional)
    A number ≥ 0 and its unit, either in two columns or together in ``concentration``
    (``10 µM``, ``10uM``, ``0.1 %``). Molar units (``M``, ``mM``, ``µM``/``uM``, ``nM``,
    ``pM``), mass concentrations (``g/L``, ``mg/mL``, ``µg/mL``/``ug/mL``, ``ng/mL``) and
    ``%`` are accepted; :attr:`PlateMapEntry.concentration_base` converts to mol/L, g/L or %.

Wells not in the map have no role and are left out of plate statistics. Every problem of a
file is reported at once, by line, in a one-line :class:`PlateMapError`.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from phagoflow.core.wells import parse_well, well_name

__all__ = [
    "UNITS",
    "PlateMap",
    "PlateMapEntry",
    "PlateMapError",
    "Role",
    "parse_concentration",
    "parse_plate_map",
    "read_plate_map",
    "require_controls",
    "write_plate_map",
]


class PlateMapError(ValueError):
    """A plate map that cannot be used; the message lists the problems found, by line, on one
    line (the first ten, then how many more)."""


class Role(StrEnum):
    """What a well is for in the plate statistics."""

    NEGATIVE = "negative"  #: negative control (vehicle): the baseline of Z′ and percent of control
    POSITIVE = "positive"  #: positive control: the known effect of Z′
    SAMPLE = "sample"  #: a well under test (robust z, hit calls, dose response)
    EMPTY = "empty"  #: nothing in the well; never scored


_ROLE_ALIASES: dict[str, Role] = {
    "negative": Role.NEGATIVE,
    "negative control": Role.NEGATIVE,
    "negative_control": Role.NEGATIVE,
    "neg": Role.NEGATIVE,
    "positive": Role.POSITIVE,
    "positive control": Role.POSITIVE,
    "positive_control": Role.POSITIVE,
    "pos": Role.POSITIVE,
    "sample": Role.SAMPLE,
    "empty": Role.EMPTY,
}

#: Concentration units → (dimension, factor to the dimension's base unit). ``u`` and the Greek
#: ``μ`` are read as ``µ``; case does not matter (``ug/ml`` is ``µg/mL``).
UNITS: dict[str, tuple[str, float]] = {
    "M": ("molar", 1.0),
    "mM": ("molar", 1e-3),
    "µM": ("molar", 1e-6),
    "nM": ("molar", 1e-9),
    "pM": ("molar", 1e-12),
    "g/L": ("mass", 1.0),
    "mg/mL": ("mass", 1.0),
    "µg/mL": ("mass", 1e-3),
    "ng/mL": ("mass", 1e-6),
    "%": ("percent", 1.0),
}
_UNIT_LOOKUP = {u.lower(): u for u in UNITS} | {"um": "µM", "ug/ml": "µg/mL"}
_CONC_RE = re.compile(r"([0-9.eE+-]+)\s*(\S.*)?")
_REQUIRED = ("well", "role")
_KNOWN = ("well", "role", "condition", "compound", "concentration", "unit")


@dataclass(frozen=True)
class PlateMapEntry:
    """One well of a plate map.

    Attributes
    ----------
    row, col : int
        1-based well position.
    role : Role
    condition, compound : str
        Free text ("" when not given).
    concentration : float or None
        Concentration in ``unit``; ``None`` when not given.
    unit : str or None
        Canonical unit (a key of :data:`UNITS`), ``None`` without a concentration.
    extra : dict of str to str
        Columns the plate map has beyond the known ones.
    """

    row: int
    col: int
    role: Role
    condition: str = ""
    compound: str = ""
    concentration: float | None = None
    unit: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def well(self) -> str:
        """Display name, e.g. ``B05``."""
        return well_name(self.row, self.col)

    @property
    def concentration_base(self) -> tuple[float, str] | None:
        """Concentration in its dimension's base unit: ``(value, "M" | "g/L" | "%")``."""
        if self.concentration is None or self.unit is None:
            return None
        dimension, factor = UNITS[self.unit]
        base = {"molar": "M", "mass": "g/L", "percent": "%"}[dimension]
        return self.concentration * factor, base


@dataclass(frozen=True)
class PlateMap:
    """A validated plate map (see the module docstring for the file format).

    Attributes
    ----------
    plate_rows, plate_columns : int
        Plate geometry the map was checked against.
    entries : dict of (int, int) to PlateMapEntry
        One entry per mapped well, keyed by ``(row, col)``.
    source : str
        Where the map came from (a path or ``"<text>"``), for messages and provenance.
    """

    plate_rows: int
    plate_columns: int
    entries: Mapping[tuple[int, int], PlateMapEntry]
    source: str = "<text>"

    def role(self, row: int, col: int) -> Role | None:
        """Role of a well, ``None`` for a well the map does not list."""
        entry = self.entries.get((row, col))
        return entry.role if entry is not None else None

    def wells(self, role: Role) -> list[tuple[int, int]]:
        """Positions ``(row, col)`` of the wells with ``role``, in plate order."""
        return sorted(k for k, e in self.entries.items() if e.role == role)

    def counts(self) -> dict[Role, int]:
        """Number of wells per role (every role present, 0 when absent)."""
        out = dict.fromkeys(Role, 0)
        for e in self.entries.values():
            out[e.role] += 1
        return out


def parse_concentration(value: str, unit: str = "") -> tuple[float | None, str | None]:
    """``("10 µM", "")`` or ``("10", "uM")`` → ``(10.0, "µM")``; ``("", "")`` → ``(None, None)``.

    Raises
    ------
    ValueError
        For a value that is not a finite number ≥ 0, a missing or unknown unit, or a unit
        given twice with different values.
    """
    text, unit = value.strip(), unit.strip()
    if not text:
        if unit:
            raise ValueError(f"unit {unit!r} without a concentration")
        return None, None
    m = _CONC_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"concentration {value!r} is not a number")
    try:
        number = float(m.group(1))
    except ValueError:
        raise ValueError(f"concentration {value!r} is not a number") from None
    inline = (m.group(2) or "").strip()
    if inline and unit and _canonical_unit(inline) != _canonical_unit(unit):
        raise ValueError(f"concentration {value!r} contradicts unit column {unit!r}")
    given = inline or unit
    if not given:
        raise ValueError(f"concentration {value!r} has no unit; units: {', '.join(UNITS)}")
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"concentration must be a finite number >= 0, got {value!r}")
    return number, _canonical_unit(given)


def _canonical_unit(unit: str) -> str:
    key = unit.strip().replace("μ", "µ").lower()
    if key not in _UNIT_LOOKUP:
        raise ValueError(f"unknown concentration unit {unit!r}; units: {', '.join(UNITS)}")
    return _UNIT_LOOKUP[key]


def parse_plate_map(
    text: str, *, plate_rows: int = 8, plate_columns: int = 12, source: str = "<text>"
) -> PlateMap:
    """Parse and validate a plate map given as CSV text.

    Parameters
    ----------
    text : str
        CSV with a header row (see the module docstring).
    plate_rows, plate_columns : int, default 8 and 12
        Plate geometry (96 wells by default) every well must fit.
    source : str, optional
        Name used in messages (a path).

    Returns
    -------
    PlateMap

    Raises
    ------
    PlateMapError
        Listing every problem: missing columns, unknown or off-plate wells, duplicate wells,
        bad roles, bad concentrations or units; or a map without any well.
    """
    _validate_geometry(plate_rows, plate_columns)
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise PlateMapError(
            f"{source}: plate map needs the columns {list(_REQUIRED)}; missing {missing} "
            f"(header: {header})"
        )
    reader.fieldnames = header
    entries: dict[tuple[int, int], PlateMapEntry] = {}
    lines: dict[tuple[int, int], int] = {}
    errors: list[str] = []
    for line_no, raw in enumerate(reader, start=2):
        row = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(row.values()):
            continue
        try:
            entry = _entry(row, plate_rows, plate_columns)
        except ValueError as exc:
            errors.append(f"line {line_no}: {exc}")
            continue
        key = (entry.row, entry.col)
        if key in entries:
            errors.append(
                f"line {line_no}: duplicate well {entry.well} (first on line {lines[key]})"
            )
            continue
        entries[key], lines[key] = entry, line_no
    if not entries and not errors:
        errors.append("no wells listed")
    if errors:
        raise PlateMapError(f"{source}: {len(errors)} problem(s): " + _summary(errors))
    return PlateMap(plate_rows, plate_columns, entries, source)


#: Problems quoted in a :class:`PlateMapError` before "... and N more".
_MAX_LISTED = 10


def _summary(errors: list[str]) -> str:
    """The problems on one line: the first :data:`_MAX_LISTED`, then how many more."""
    shown = "; ".join(errors[:_MAX_LISTED])
    more = len(errors) - _MAX_LISTED
    return shown + (f"; ... and {more} more" if more > 0 else "")


def _entry(row: dict[str, str], plate_rows: int, plate_columns: int) -> PlateMapEntry:
    r, c = parse_well(row.get("well", ""))
    if r > plate_rows or c > plate_columns:
        raise ValueError(
            f"well {row['well']!r} is not on a {plate_rows} × {plate_columns} plate "
            f"(last well {well_name(plate_rows, plate_columns)})"
        )
    role_text = " ".join(row.get("role", "").lower().split())
    if role_text not in _ROLE_ALIASES:
        raise ValueError(
            f"role {row.get('role', '')!r} of well {well_name(r, c)} is not one of "
            f"negative, positive, sample, empty"
        )
    conc, unit = parse_concentration(row.get("concentration", ""), row.get("unit", ""))
    extra = {k: v for k, v in row.items() if k not in _KNOWN}
    return PlateMapEntry(
        row=r,
        col=c,
        role=_ROLE_ALIASES[role_text],
        condition=row.get("condition", ""),
        compound=row.get("compound", ""),
        concentration=conc,
        unit=unit,
        extra=extra,
    )


def read_plate_map(path: str | Path, *, plate_rows: int = 8, plate_columns: int = 12) -> PlateMap:
    """Read and validate a plate-map CSV file (UTF-8); see :func:`parse_plate_map`.

    Raises
    ------
    PlateMapError
        If the file cannot be read or is not a valid plate map.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlateMapError(f"{p}: cannot read plate map: {exc}") from exc
    return parse_plate_map(text, plate_rows=plate_rows, plate_columns=plate_columns, source=str(p))


def require_controls(plate_map: PlateMap, *, min_negative: int = 2, min_positive: int = 2) -> None:
    """Check that a map has enough control wells for plate statistics (Z′ needs two of each).

    Raises
    ------
    PlateMapError
        Naming the roles that have too few wells.
    """
    if min_negative < 1 or min_positive < 1:
        raise ValueError(
            f"min_negative and min_positive must be >= 1, got {min_negative}, {min_positive}"
        )
    counts = plate_map.counts()
    short = [
        f"{n} {role.value} control well(s), need >= {need}"
        for role, need in ((Role.NEGATIVE, min_negative), (Role.POSITIVE, min_positive))
        if (n := counts[role]) < need
    ]
    if short:
        raise PlateMapError(
            f"{plate_map.source}: plate statistics need control wells: " + "; ".join(short)
        )


def write_plate_map(path: str | Path, entries: Iterable[PlateMapEntry]) -> Path:
    """Write entries as a plate-map CSV that :func:`read_plate_map` reads back unchanged."""
    p = Path(path)
    rows = sorted(entries, key=lambda e: (e.row, e.col))
    with p.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(_KNOWN)
        for e in rows:
            conc = "" if e.concentration is None else repr(e.concentration)
            writer.writerow([e.well, e.role.value, e.condition, e.compound, conc, e.unit or ""])
    return p


def _validate_geometry(plate_rows: int, plate_columns: int) -> None:
    if plate_rows < 1 or plate_columns < 1:
        raise ValueError(
            f"plate_rows and plate_columns must be >= 1, got {plate_rows} × {plate_columns}"
        )
