"""The command line: every sub-command has --help; errors are clear and non-zero."""

from __future__ import annotations

import pytest

from phagoflow.cli import get_arg_parser, main

SUBCOMMANDS = sorted(get_arg_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def test_expected_subcommands_exist() -> None:
    assert {"simulate", "run", "info", "check"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_for_every_subcommand(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"phagoflow {command}" in out
    assert "--" in out or "positional" in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "simulate" in capsys.readouterr().out


def test_missing_export_is_a_clear_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["-q", "run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "nowhere" in err


def test_bad_cip_params_file(tmp_path) -> None:
    bad = tmp_path / "cip.json"
    bad.write_text('{"no_such_parameter": 1}')
    with pytest.raises(SystemExit, match=r"cip\.json"):
        main(["-q", "run", str(tmp_path), "--out", str(tmp_path / "o"), "--cip-params", str(bad)])
