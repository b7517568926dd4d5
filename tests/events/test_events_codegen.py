"""The checked-in generated protobuf code matches the .proto files (stale code fails CI)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from phagoflow.events import codegen


def test_checked_in_code_is_current(tmp_path: Path) -> None:
    written = codegen.generate(tmp_path)
    assert sorted(p.name for p in written) == ["events_pb2.py", "events_pb2.pyi"]
    for path in written:
        checked_in = codegen.GENERATED_DIR / path.name
        assert checked_in.is_file(), f"missing generated file {checked_in}"
        assert checked_in.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"{checked_in} is stale: run `python -m phagoflow.events.codegen`"
        )
    assert codegen.check() == []


def test_check_detects_a_stale_schema(tmp_path: Path) -> None:
    proto_root = tmp_path / "proto"
    shutil.copytree(codegen.PROTO_ROOT, proto_root)
    proto = proto_root / codegen.PROTO_FILES[0]
    text = proto.read_text(encoding="utf-8")
    proto.write_text(
        text.replace("string producer = 3;", "string producer = 3;\n  string host = 4;"),
        encoding="utf-8",
    )
    assert sorted(codegen.check(proto_root=proto_root)) == ["events_pb2.py", "events_pb2.pyi"]


def test_check_detects_an_edited_generated_file(tmp_path: Path) -> None:
    for name in ("events_pb2.py", "events_pb2.pyi"):
        shutil.copy(codegen.GENERATED_DIR / name, tmp_path / name)
    with (tmp_path / "events_pb2.pyi").open("a", encoding="utf-8") as fh:
        fh.write("# hand edit\n")
    assert codegen.check(tmp_path) == ["events_pb2.pyi"]


def test_check_command_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert codegen.main(["--check"]) == 0
    assert capsys.readouterr().err == ""


def test_generated_classes_report_their_import_path() -> None:
    from phagoflow.events.v1 import events_pb2

    assert events_pb2.FieldAcquired.__module__ == "phagoflow.events.v1.events_pb2"
    assert events_pb2.DESCRIPTOR.name == "phagoflow/v1/events.proto"
    assert events_pb2.DESCRIPTOR.package == "phagoflow.v1"
