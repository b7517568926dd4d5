"""Under CI a missing tool fails the test that needs it; locally it skips."""

from __future__ import annotations

import pytest

from ci_tools import require, require_executable


def test_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_executable("phagoflow-no-such-tool", "apt-get install nothing")


def test_missing_tool_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="phagoflow-no-such-tool not found"):
        require_executable("phagoflow-no-such-tool", "apt-get install nothing")


def test_present_tool_and_no_problem_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require_executable("sh", "it is always there").endswith("/sh")
    require(None)
