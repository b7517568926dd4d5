"""Model registry against the real moto S3 server: push, fetch, promote, rollback, CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from phagoflow.cli import main
from phagoflow.core.model_dir import read_model_card
from phagoflow.registry.store import ModelRegistry, RegistryError
from phagoflow.registry.triton import pin_version, read_config
from phagoflow.services.objectstore import ChecksumMismatch, ObjectStore
from phagoflow.stack import MotoS3Server

ROOT = Path(__file__).resolve().parents[2]
GPU_CONFIG = (ROOT / "model_repository/autophagy_unet/config.pbtxt").read_text()


def test_push_numbers_versions_and_dedups(
    store: ObjectStore, make_model: Callable[..., Path]
) -> None:
    reg = ModelRegistry(store)
    a = reg.push(make_model(1), source="job-a")
    b = reg.push(make_model(2))
    again = reg.push(make_model(1))
    assert (a.version, b.version, again.version) == (1, 2, 1)
    assert a.card_version == read_model_card(make_model(1)).version
    keys = store.list_keys("models/autophagy_unet/")
    assert "models/autophagy_unet/1/model.onnx" in keys
    assert "models/autophagy_unet/2/card.json" in keys
    assert [v.version for v in reg.versions()] == [1, 2]
    assert reg.serving() is None


def test_fetch_verifies_checksums(
    store: ObjectStore, make_model: Callable[..., Path], tmp_path: Path
) -> None:
    reg = ModelRegistry(store)
    reg.push(make_model(1))
    out = reg.fetch(1, tmp_path / "v1")
    assert (out / "model.onnx").read_bytes() == (make_model(1) / "model.onnx").read_bytes()
    store.put_bytes("models/autophagy_unet/1/model.onnx", b"not the model")
    with pytest.raises(ChecksumMismatch):
        reg.fetch(1, tmp_path / "again")
    with pytest.raises(RegistryError, match="no version 7"):
        reg.fetch(7, tmp_path / "none")


def test_promote_pins_triton_config(store: ObjectStore, make_model: Callable[..., Path]) -> None:
    reg = ModelRegistry(store)
    reg.push(make_model(1))
    reg.push(make_model(2))
    with pytest.raises(RegistryError, match="Triton config"):
        reg.promote(1)
    reg.promote(1, base_config=GPU_CONFIG, reason="first")
    config = read_config(store.get_bytes("models/autophagy_unet/config.pbtxt").decode())
    assert config.name == "autophagy_unet" and config.backend == "onnxruntime"
    assert list(config.version_policy.specific.versions) == [1]
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    reg.promote(2)  # keeps the stored config, re-pinned
    config = read_config(reg.config_text() or "")
    assert list(config.version_policy.specific.versions) == [2]
    assert config.optimization == read_config(GPU_CONFIG).optimization
    assert reg.serving() == 2
    assert [(e.action, e.version, e.previous) for e in reg.state().history] == [
        ("promote", 1, None),
        ("promote", 2, 1),
    ]


def test_rollback_walks_back(store: ObjectStore, make_model: Callable[..., Path]) -> None:
    reg = ModelRegistry(store)
    with pytest.raises(RegistryError, match="nothing is serving"):
        reg.rollback()
    for seed in (1, 2, 3):
        reg.promote(reg.push(make_model(seed)).version, base_config=GPU_CONFIG)
    assert reg.rollback().serving == 2
    assert reg.rollback().serving == 1
    with pytest.raises(RegistryError, match="first served"):
        reg.rollback()
    assert reg.rollback(to=3).serving == 3
    assert list(read_config(reg.config_text() or "").version_policy.specific.versions) == [3]


def test_pin_version_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="positive"):
        pin_version(GPU_CONFIG, 0)
    with pytest.raises(ValueError, match="invalid Triton config"):
        pin_version(GPU_CONFIG.replace("max_batch_size", "max_batch"), 1)


def test_cli_push_promote_list_rollback(
    s3_server: MotoS3Server,
    store: ObjectStore,
    make_model: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    for k, v in {
        "S3_ENDPOINT": s3_server.endpoint,
        "S3_ACCESS_KEY": s3_server.access_key,
        "S3_SECRET_KEY": s3_server.secret_key,
        "BUCKET": store.bucket,
        "S3_RETRIES": "2",
    }.items():
        monkeypatch.setenv(f"PHAGOFLOW_{k}", v)
    config = str(ROOT / "model_repository/autophagy_unet/config.pbtxt")
    assert main(["model", "push", str(make_model(1)), "--promote", "--triton-config", config]) == 0
    assert "first version" in capsys.readouterr().out
    assert main(["model", "push", str(make_model(2))]) == 0
    # a second promotion needs the gate's plates (or --force)
    assert main(["model", "promote", "2"]) == 1
    assert "--plates" in capsys.readouterr().err
    assert main(["model", "promote", "2", "--force"]) == 0
    assert main(["model", "list"]) == 0
    out = capsys.readouterr().out
    assert "*    2" in out and "forced" in out
    assert main(["model", "rollback"]) == 0
    assert "serving version 1 again" in capsys.readouterr().out
    assert main(["model", "pull", "serving", str(tmp_path / "pulled")]) == 0
    assert (tmp_path / "pulled" / "card.json").is_file()
    assert main(["model", "pull", "9", str(tmp_path / "x")]) == 1
