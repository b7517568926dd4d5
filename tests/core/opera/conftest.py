"""Fixtures of the Opera tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opera_plates import MakePlate, WrittenPlate, write_plate


@pytest.fixture
def make_plate(tmp_path: Path) -> MakePlate:
    """Factory: ``make_plate(fmt, wells=..., fields=2, planes=1, timepoints=1, **writer_kw)``."""
    counter = iter(range(1000))

    def _make(export_format: str, **kw: Any) -> WrittenPlate:
        return write_plate(tmp_path / f"plate{next(counter)}_{export_format}", export_format, **kw)

    return _make
