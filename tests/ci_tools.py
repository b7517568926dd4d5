"""Real tools a test needs (Prometheus, promtool, Chromium): skip locally, fail under ``CI``.

CI must never pass without having run a test against the real program, so when the environment
variable ``CI`` is set a missing tool fails the test with the reason; on a development machine
it skips. ``.ci/run`` installs every tool listed here.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["require", "require_executable"]


def require(problem: str | None) -> None:
    """Skip (locally) or fail (under ``CI``) with ``problem``; nothing when it is None."""
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem} (CI is set: this test must run)", pytrace=False)
    pytest.skip(problem)


def require_executable(name: str, install: str) -> str:
    """The path of executable ``name`` on PATH, else skip/fail naming ``install``."""
    path = shutil.which(name)
    require(None if path else f"{name} not found on PATH ({install})")
    assert path is not None
    return path
