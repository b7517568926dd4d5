"""``info`` and ``check`` on vendor exports, and ``--channel-role`` on every command reading one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phagoflow.cli import main
from real_exports import EXPORTS, require

BY_NAME = {e.name: e for e in EXPORTS}
COMMANDS = {
    "run": ["run", "{export}", "--out", "{tmp}/out"],
    "train": ["train", "{export}", "--out", "{tmp}/model"],
    "evaluate": ["evaluate", "{export}", "--truth", "{tmp}"],
    "info": ["info", "{export}"],
    "check": ["check", "{export}"],
}


def _argv(command: str, export: Path, tmp: Path, *extra: str) -> list[str]:
    args = [a.format(export=export, tmp=tmp) for a in COMMANDS[command]]
    return ["-q", *args, *extra]


def test_info_on_a_vendor_export(capsys: pytest.CaptureFixture[str]) -> None:
    path = require(BY_NAME["harmony5_phenix_2021_cellpainting"])
    assert main(["info", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["plate_id"] == "BR00121482" and doc["format"] == "HarmonyV5"
    assert doc["fields"] == 1 and doc["size_yx"] == [1080, 1080]
    roles = {c["name"]: (c["role"], c["role_source"]) for c in doc["channels"]}
    assert roles["Alexa 568"] == ("dsred", "wavelengths 561/599 nm")
    assert roles["Alexa 488"] == ("phluorin", "wavelengths 488/522 nm")
    assert roles["488 long"][0] is None and "fit neither role" in roles["488 long"][1]
    assert doc["channel_roles_error"] is None


def test_info_prints_the_catalogue_and_exits_1_when_roles_cannot_be_assigned(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = require(BY_NAME["harmony5_sonata_2022"])
    assert main(["info", str(path)]) == 1
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["plate_id"] == "Test_Sample_BALL" and doc["pixel_size_um"] == pytest.approx(
        1.19595, abs=1e-5
    )
    assert "no channel has the dsred role" in doc["channel_roles_error"]
    assert "--channel-role NAME=ROLE" in err and "Traceback" not in err
    assert main(["info", str(path), "--channel-role", "Fluorescein (FITC)=both"]) == 0
    assert json.loads(capsys.readouterr().out)["fields"] == 2


def test_check_on_vendor_exports(capsys: pytest.CaptureFixture[str]) -> None:
    complete = require(BY_NAME["harmony5_phenix_2023_cellpainting"])
    assert main(["check", str(complete), "--quiet-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("complete\n")
    assert "channel roles: dsred = 'Alexa 568' (wavelengths 561/599 nm)" in out
    index_only = require(BY_NAME["harmony7_phenix_2024_index_only"])
    assert main(["check", str(index_only), "--quiet-seconds", "0"]) == 3
    out = capsys.readouterr().out
    assert out.startswith("incomplete\n") and "7 image file(s) missing" in out
    sonata = require(BY_NAME["harmony5_sonata_2022"])
    assert main(["check", str(sonata), "--quiet-seconds", "0"]) == 0  # roles: informational
    assert "channel roles: cannot be assigned" in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("Alexa 568", "expects NAME=ROLE, got 'Alexa 568'"),
        ("Alexa 568=blue", "unknown channel role"),
    ],
)
def test_bad_channel_role_is_refused_by_every_command(
    command: str, item: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = require(BY_NAME["harmony5_phenix_2021_cellpainting"])
    with pytest.raises(SystemExit) as exc:
        main(_argv(command, path, tmp_path, "--channel-role", item))
    assert exc.value.code != 0
    assert message in str(exc.value.code)
    assert not (tmp_path / "out").exists() and not (tmp_path / "model").exists()


def test_bad_channel_roles_setting_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = require(BY_NAME["harmony5_phenix_2021_cellpainting"])
    monkeypatch.setenv("PHAGOFLOW_CHANNEL_ROLES", "Alexa 568=purple")
    with pytest.raises(SystemExit) as exc:
        main(["info", str(path)])
    assert "PHAGOFLOW_CHANNEL_ROLES" in str(exc.value.code)
    assert "unknown channel role 'purple'" in str(exc.value.code)
    monkeypatch.setenv("PHAGOFLOW_CHANNEL_ROLES", "Alexa 568=dsred,Alexa 488=phluorin")
    assert main(["info", str(path)]) == 0


@pytest.mark.parametrize("command", ["train", "evaluate", "info", "check"])
def test_bad_setting_is_named_by_every_command(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = require(BY_NAME["harmony5_phenix_2021_cellpainting"])
    monkeypatch.setenv("PHAGOFLOW_WORKERS", "0")
    try:
        code = main(_argv(command, path, tmp_path))
        message = capsys.readouterr().err
    except SystemExit as exc:  # SystemExit("message") exits with status 1
        code, message = (1 if isinstance(exc.code, str) else exc.code), str(exc.code)
    assert code == 1
    assert "invalid setting PHAGOFLOW_WORKERS=" in message and "Traceback" not in message
    assert "\n" not in message.strip()
