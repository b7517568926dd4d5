"""One line naming the machine a measured figure comes from (benchmarks, experiments)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_description"]


def cpu_description() -> str:
    """``"x86_64, 2 cores (Intel(R) Xeon(R) Processor)"``: architecture, logical cores, CPU model.

    The model name comes from ``/proc/cpuinfo`` (``"unknown CPU"`` where there is none).
    """
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu})"
