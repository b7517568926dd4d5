"""Well names: ``A01`` for people, ``rRRcCC`` for files — one home for both.

Files, events and object keys keep Harmony's ``rRRcCC`` form (``r02c05``), which sorts and
parses without ambiguity; everything shown to a person (report, review app, tables printed by
the command line, plate maps) uses the plate's own ``A01`` form: row letter(s), column number
zero-padded to two digits (``B05``). Rows past Z continue ``AA``, ``AB`` … as on 1536-well
plates (32 rows: ``A`` … ``Z``, ``AA`` … ``AF``).

Both forms are accepted wherever a well is read (:func:`parse_well`): ``B05``, ``B5``, ``b05``
and ``r02c05`` all name row 2, column 5.
"""

from __future__ import annotations

import re

__all__ = [
    "PLATE_FORMATS",
    "parse_well",
    "plate_geometry",
    "row_letter",
    "row_number",
    "to_display",
    "well_id",
    "well_name",
]

#: Standard plate formats: wells → (rows, columns).
PLATE_FORMATS: dict[int, tuple[int, int]] = {
    6: (2, 3),
    12: (3, 4),
    24: (4, 6),
    48: (6, 8),
    96: (8, 12),
    384: (16, 24),
    1536: (32, 48),
}

_RRCC_RE = re.compile(r"r(\d{1,3})c(\d{1,3})", re.IGNORECASE)
_A01_RE = re.compile(r"([A-Za-z]{1,2})(\d{1,3})")


def row_letter(row: int) -> str:
    """Row letter(s) of a 1-based row: 1 → ``"A"``, 26 → ``"Z"``, 27 → ``"AA"``.

    Raises
    ------
    ValueError
        If ``row`` is < 1.
    """
    _validate_index("row", row)
    letters = ""
    while row > 0:
        row, rem = divmod(row - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters


def row_number(letters: str) -> int:
    """Inverse of :func:`row_letter` (case-insensitive): ``"B"`` → 2, ``"AA"`` → 27.

    Raises
    ------
    ValueError
        If ``letters`` is empty or holds anything but the letters A–Z.
    """
    if not letters or not letters.isascii() or not letters.isalpha():
        raise ValueError(f"row letters must be A-Z, got {letters!r}")
    n = 0
    for ch in letters.upper():
        n = n * 26 + (ord(ch) - ord("A") + 1)
    return n


def well_name(row: int, col: int) -> str:
    """Display name ``A01`` of a well (1-based row and column): (2, 5) → ``"B05"``."""
    _validate_index("col", col)
    return f"{row_letter(row)}{col:02d}"


def well_id(row: int, col: int) -> str:
    """File form ``rRRcCC`` of a well (1-based row and column): (2, 5) → ``"r02c05"``."""
    _validate_index("row", row)
    _validate_index("col", col)
    return f"r{row:02d}c{col:02d}"


def parse_well(name: str) -> tuple[int, int]:
    """``(row, col)`` (1-based) of a well named ``B05``, ``B5``, ``b05`` or ``r02c05``.

    Surrounding white space is ignored.

    Raises
    ------
    ValueError
        If ``name`` is neither form, or row or column is 0.
    """
    text = name.strip()
    m = _RRCC_RE.fullmatch(text)
    if m is not None:
        row, col = int(m.group(1)), int(m.group(2))
    else:
        m = _A01_RE.fullmatch(text)
        if m is None:
            raise ValueError(f"not a well name (A01 or rRRcCC): {name!r}")
        row, col = row_number(m.group(1)), int(m.group(2))
    if row < 1 or col < 1:
        raise ValueError(f"well rows and columns start at 1, got {name!r}")
    return row, col


def to_display(name: str) -> str:
    """Any accepted well name → its ``A01`` display form: ``"r02c05"`` → ``"B05"``."""
    return well_name(*parse_well(name))


def plate_geometry(wells: int) -> tuple[int, int]:
    """``(rows, columns)`` of a standard plate format (6 … 1536 wells).

    Raises
    ------
    ValueError
        If ``wells`` is not one of :data:`PLATE_FORMATS`.
    """
    try:
        return PLATE_FORMATS[wells]
    except KeyError:
        raise ValueError(
            f"unknown plate format {wells!r} wells; choose one of {sorted(PLATE_FORMATS)}"
        ) from None


def _validate_index(what: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"well {what} must be >= 1, got {value!r}")
