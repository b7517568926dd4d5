"""Tests for phagoflow.core.model_dir."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch

from phagoflow.core.model_dir import (
    CARD_FILE,
    ONNX_FILE,
    TORCH_FILE,
    ModelDirError,
    load_model_dir,
    read_model_card,
    save_model_dir,
    sha256_file,
)
from phagoflow.core.normalisation import NormalisationConfig
from phagoflow.core.unet import UNet, UNetConfig


def _model(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(UNetConfig(base_channels=4))
    # non-trivial BatchNorm running statistics, so the round trip checks buffers too
    net.train()
    with torch.no_grad():
        net(torch.randn(2, 2, 32, 32) * 3 + 1)
    return net.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, UNet]:
    path = tmp_path_factory.mktemp("models") / "m1"
    net = _model()
    save_model_dir(
        path,
        net,
        net.config,
        NormalisationConfig(high_percentile=99.5),
        {"seed": 7, "history": [{"epoch": 1, "val_loss": 0.5}]},
    )
    return path, net


def _copy(saved: tuple[Path, UNet], tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(saved[0], dst)
    return dst


def test_round_trip(saved: tuple[Path, UNet]) -> None:
    path, net = saved
    assert sorted(p.name for p in path.iterdir()) == [CARD_FILE, ONNX_FILE, TORCH_FILE]
    loaded, card = load_model_dir(path)
    assert not loaded.training
    assert loaded.config == net.config == card.architecture
    ref = net.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, ref[key]), key
    x = torch.randn(1, 2, 32, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert card.normalisation == NormalisationConfig(high_percentile=99.5)
    assert card.classes == {0: "background", 1: "phagophore", 2: "autolysosome"}
    assert card.checksums == {f: sha256_file(path / f) for f in (TORCH_FILE, ONNX_FILE)}
    assert card.training == {"seed": 7, "history": [{"epoch": 1, "val_loss": 0.5}]}
    assert card.version.startswith("sha-") and len(card.version) == 16
    assert {"torch", "onnxruntime", "numpy", "phagoflow"} <= set(card.software)
    raw = json.loads((path / CARD_FILE).read_text())
    assert raw["classes"] == {"0": "background", "1": "phagophore", "2": "autolysosome"}


def test_onnx_has_dynamic_batch_and_spatial_dims(saved: tuple[Path, UNet]) -> None:
    graph = onnx.load(str(saved[0] / ONNX_FILE))
    opsets = {o.domain: o.version for o in graph.opset_import}
    assert opsets[""] >= 17
    (inp,) = graph.graph.input
    (out,) = graph.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = inp.type.tensor_type.shape.dim
    out_dims = out.type.tensor_type.shape.dim
    assert [d.dim_value for d in in_dims][1] == 2
    assert [d.dim_value for d in out_dims][1] == 3
    for dims in (in_dims, out_dims):
        assert all(dims[i].dim_param and not dims[i].dim_value for i in (0, 2, 3))


def test_save_refuses_to_overwrite_and_checks_config(
    saved: tuple[Path, UNet], tmp_path: Path
) -> None:
    net = saved[1]
    with pytest.raises(FileExistsError, match="overwrite"):
        save_model_dir(saved[0], net, net.config, NormalisationConfig(), {})
    with pytest.raises(ValueError, match="does not match"):
        save_model_dir(tmp_path / "x", net, UNetConfig(base_channels=8), NormalisationConfig())
    with pytest.raises(ValueError, match="JSON"):
        save_model_dir(tmp_path / "y", net, net.config, NormalisationConfig(), {"x": object()})
    other = _model(seed=1)
    dst = _copy(saved, tmp_path)
    card = save_model_dir(dst, other, other.config, NormalisationConfig(), overwrite=True)
    assert card.version != read_model_card(saved[0]).version
    assert torch.equal(load_model_dir(dst)[0].head.weight, other.head.weight)


@pytest.mark.parametrize("fname", [TORCH_FILE, ONNX_FILE])
def test_checksum_mismatch_names_the_file(
    saved: tuple[Path, UNet], tmp_path: Path, fname: str
) -> None:
    path = _copy(saved, tmp_path)
    with open(path / fname, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelDirError, match=rf"{fname}.*checksum"):
        load_model_dir(path)


@pytest.mark.parametrize("fname", [TORCH_FILE, ONNX_FILE, CARD_FILE])
def test_missing_file_names_the_file(saved: tuple[Path, UNet], tmp_path: Path, fname: str) -> None:
    path = _copy(saved, tmp_path)
    (path / fname).unlink()
    with pytest.raises(ModelDirError, match=fname.replace(".", r"\.")):
        load_model_dir(path)


@pytest.mark.parametrize(
    "garble",
    [
        lambda t: t[: len(t) // 2],  # truncated JSON
        lambda t: t.replace('"architecture"', '"architektur"'),  # schema violation
        lambda t: t.replace('"base_channels": 4', '"base_channels": "four"'),
        lambda t: "\udcff",  # not UTF-8 once written with surrogateescape
    ],
)
def test_garbled_card(saved: tuple[Path, UNet], tmp_path: Path, garble: object) -> None:
    path = _copy(saved, tmp_path)
    text = (path / CARD_FILE).read_text()
    (path / CARD_FILE).write_bytes(garble(text).encode("utf-8", "surrogateescape"))  # type: ignore[operator]
    with pytest.raises(ModelDirError, match=r"card\.json"):
        load_model_dir(path)


def test_weights_that_do_not_fit_the_card(saved: tuple[Path, UNet], tmp_path: Path) -> None:
    path = _copy(saved, tmp_path)
    card = json.loads((path / CARD_FILE).read_text())
    card["architecture"]["base_channels"] = 8  # checksums still fine, architecture is not
    (path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelDirError, match=r"model\.pt does not fit"):
        load_model_dir(path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        read_model_card(tmp_path / "nope")
