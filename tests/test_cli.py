"""The command line: every sub-command has --help; errors are clear and non-zero."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

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


# ----------------------------------------------------------------------------- phagoflow run:
# bad --out / --workers / PHAGOFLOW_* inputs are refused before any work, in one line, and
# leave what is already in --out untouched.
@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 1-well, 1-field plate and a finished results folder of it: (export, results)."""
    tmp = tmp_path_factory.mktemp("cli-run")
    assert main(["-q", "simulate", str(tmp / "plate"), "--wells", "1", "--fields", "1"]) == 0
    export, out = tmp / "plate" / "Images", tmp / "results"
    assert main(["-q", "run", str(export), "--out", str(out)]) == 0
    return export, out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the run gets as far as segmenting a field."""
    import phagoflow.embedded.run as run_module

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run started segmenting before refusing its input")

    monkeypatch.setattr(run_module, "_segment_plate", boom)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_run_refuses_workers_below_one(
    tmp_path: Path, workers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["-q", "run", str(tmp_path), "--out", str(out), "--workers", workers])
    assert exc.value.code == 2
    assert "--workers: must be a whole number of at least 1" in capsys.readouterr().err
    assert not out.exists()


def test_run_plate_refuses_workers_below_one(tmp_path: Path) -> None:
    from phagoflow.embedded.run import RunError, run_plate

    for workers in (0, -1):
        with pytest.raises(RunError, match="at least 1"):
            run_plate(tmp_path, tmp_path / "out", workers=workers)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PHAGOFLOW_WORKERS", "0"),
        ("PHAGOFLOW_CIP__THRESHOLD_K", "high"),
        ("PHAGOFLOW_OVERLAYS", "-3"),
    ],
)
def test_run_bad_setting_is_one_line(
    results: tuple[Path, Path],
    tmp_path: Path,
    variable: str,
    value: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    export, _ = results
    monkeypatch.setenv(variable, value)
    out = tmp_path / "out"
    assert main(["-q", "run", str(export), "--out", str(out)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert f"{variable}={value!r}" in line
    assert not out.exists()


def test_run_out_that_is_a_file(
    results: tuple[Path, Path], tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    export, _ = results
    target = tmp_path / "wells.csv"
    target.write_text("precious\n")
    for out in (target, target / "sub"):
        assert main(["-q", "run", str(export), "--out", str(out)]) == 1
        assert "is a file" in _one_line(capsys.readouterr().err)
    assert target.read_text() == "precious\n"


@pytest.fixture
def read_only_results(results: tuple[Path, Path], tmp_path: Path) -> Iterator[Path]:
    """A copy of the results folder that cannot be written (chmod; a read-only bind mount for
    root, whom permission bits do not stop); skips where neither is possible."""
    copy = tmp_path / "results"
    shutil.copytree(results[1], copy)
    if os.geteuid() != 0:
        for p in (copy, *copy.rglob("*")):
            if p.is_dir():
                p.chmod(0o555)
        yield copy
        for p in (copy, *copy.rglob("*")):
            if p.is_dir():
                p.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(copy), str(copy)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only folder as root here: {mounted.stderr!r}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(copy)], check=True)
        yield copy
    finally:
        subprocess.run(["umount", str(copy)], check=True)


def test_run_read_only_out_is_refused_before_any_work(
    results: tuple[Path, Path],
    read_only_results: Path,
    no_work: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    export, _ = results
    before = _snapshot(read_only_results)
    assert main(["-q", "run", str(export), "--out", str(read_only_results)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "cannot write in" in line and str(read_only_results) in line
    assert _snapshot(read_only_results) == before


def test_run_without_room_is_refused_and_keeps_the_results(
    results: tuple[Path, Path],
    tmp_path: Path,
    no_work: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import phagoflow.embedded.preflight as preflight

    export, done = results
    out = tmp_path / "results"
    shutil.copytree(done, out)
    before = _snapshot(out)
    full = shutil.disk_usage(out)._replace(free=64 * 1024)
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: full)
    assert main(["-q", "run", str(export), "--out", str(out)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "not enough free space" in line and "MiB needed" in line
    assert _snapshot(out) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_run_on_a_really_small_file_system_is_refused(
    results: tuple[Path, Path], tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    export, _ = results
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr!r}")
    try:
        assert main(["-q", "run", str(export), "--out", str(small / "out")]) == 1
        assert "not enough free space" in _one_line(capsys.readouterr().err)
        assert not (small / "out").exists()
    finally:
        subprocess.run(["umount", str(small)], check=True)
