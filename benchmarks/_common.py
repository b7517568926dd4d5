"""Shared helpers for the benchmark scripts (not a test: these print figures)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from phagoflow.reporting.machine import cpu_description

BENCH_DIR = Path(os.environ.get("PHAGOFLOW_BENCH_DIR", "bench-out"))


def machine() -> str:
    """One line describing the machine the figures come from."""
    return f"{cpu_description()}, Python {platform.python_version()}"


def ensure_plate(wells: int = 24, fields: int = 4, seed: int = 7, fmt: str = "harmony5") -> Path:
    """Simulate (once) the benchmark plate: 24 wells x 4 fields = 96 fields by default."""
    from phagoflow.core.simulate import simulate_plate

    out = BENCH_DIR / f"plate-{wells}x{fields}-s{seed}-{fmt}"
    marker = out / ".complete"
    if not marker.exists():
        plate = simulate_plate(
            out, wells=wells, fields=fields, seed=seed, export_format=fmt, progress=True
        )
        marker.write_text(str(plate.export_dir))
    return Path(marker.read_text())
