"""Tests for phagoflow.core.inference (ONNX Runtime and torch backends, Predictor)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from phagoflow.core import inference
from phagoflow.core.inference import (
    OnnxRuntimeBackend,
    Predictor,
    TorchBackend,
    load_predictor,
    softmax,
)
from phagoflow.core.model_dir import ModelDirError, load_model_dir, save_model_dir
from phagoflow.core.normalisation import NormalisationConfig
from phagoflow.core.unet import UNet, UNetConfig


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = UNet(UNetConfig(base_channels=8))
    net.train()
    with torch.no_grad():  # realistic BatchNorm statistics
        net(torch.rand(4, 2, 64, 64) * 2)
    path = tmp_path_factory.mktemp("inference") / "model"
    save_model_dir(path, net.eval(), net.config, NormalisationConfig(), {})
    return path


def _field(h: int = 200, w: int = 300, seed: int = 0) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    x = rng.poisson(100, size=(2, h, w)).astype(np.float32)
    yy, xx = rng.integers(0, h, 30), rng.integers(0, w, 30)
    x[0, yy, xx] += 2000  # red puncta
    x[1, yy[:15], xx[:15]] += 1500  # half of them also green
    return x


def test_onnx_and_torch_agree(model_dir: Path) -> None:
    field = _field()
    ort_pred = load_predictor(model_dir, backend="onnxruntime", threads=2, batch_size=4)
    torch_pred = load_predictor(model_dir, backend="torch", threads=2, batch_size=3)
    a, b = ort_pred.logits(field), torch_pred.logits(field)
    assert a.shape == b.shape == (3, 200, 300)
    assert float(np.abs(a - b).max()) < 1e-3
    assert (a.argmax(0) == b.argmax(0)).mean() > 0.999


def test_predict_outputs(model_dir: Path) -> None:
    pred = load_predictor(model_dir, threads=1)
    field = _field(130, 90, seed=1)
    mask = pred.predict(field)
    assert mask.shape == (130, 90) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1, 2}
    probs = pred.predict_proba(field)
    assert probs.shape == (3, 130, 90) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    m2, p2 = pred.predict_with_proba(field)
    np.testing.assert_array_equal(m2, mask)
    np.testing.assert_array_equal(m2, probs.argmax(0))
    np.testing.assert_allclose(p2, probs)
    np.testing.assert_array_equal(pred(field), mask)
    assert pred.card is not None and pred.model_dir == model_dir


def test_batch_size_does_not_change_result(model_dir: Path) -> None:
    field = _field(400, 420, seed=2)  # 3 x 3 tiles
    one = load_predictor(model_dir, batch_size=1, threads=1).logits(field)
    many = load_predictor(model_dir, batch_size=5, threads=1).logits(field)
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_normalisation_is_applied(model_dir: Path) -> None:
    pred = load_predictor(model_dir, threads=1)
    field = _field(seed=3)
    scaled = field * 4.0 + 50.0  # per-field percentiles absorb gain and offset
    np.testing.assert_allclose(pred.logits(field), pred.logits(scaled), atol=1e-3)


def test_custom_backend_is_pluggable() -> None:
    calls: list[tuple[int, ...]] = []

    def backend(tiles: NDArray[np.float32]) -> NDArray[np.float32]:
        calls.append(tiles.shape)
        red, green = tiles[:, 0], tiles[:, 1]
        logits = np.stack([np.full_like(red, 0.5), green + red - 1.0, red - green], axis=1)
        out: NDArray[np.float32] = logits.astype(np.float32)
        return out

    field = np.zeros((2, 64, 64), np.float32)
    field[:, 10:13, 10:13] = 10.0  # both channels: phagophore
    field[0, 40:46, 40:46] = 10.0  # red only: autolysosome
    field += np.random.default_rng(0).normal(0, 0.01, field.shape).astype(np.float32)
    pred = Predictor(backend, normalisation=NormalisationConfig(), batch_size=2)
    mask = pred.predict(field)
    assert calls == [(1, 2, 256, 256)]
    assert (mask[10:13, 10:13] == 1).all()
    assert (mask[41:45, 41:45] == 2).all()
    assert (mask[25:35, 25:35] == 0).all()


def test_backend_with_wrong_output_shape_is_rejected() -> None:
    pred = Predictor(
        lambda t: np.zeros((t.shape[0], 3, 8, 8), np.float32), normalisation=NormalisationConfig()
    )
    with pytest.raises(ValueError, match="backend returned"):
        pred.predict(np.random.default_rng(0).random((2, 32, 32)).astype(np.float32))


def test_field_validation(model_dir: Path) -> None:
    pred = load_predictor(model_dir, threads=1)
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        pred.predict(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        pred.predict(np.zeros((32, 32), np.float32))


def test_load_predictor_errors(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        load_predictor(model_dir, backend="tensorrt")
    with pytest.raises(ModelDirError, match="does not exist"):
        load_predictor(tmp_path / "missing")
    monkeypatch.setattr(inference, "default_model_dir", lambda: tmp_path / "default")
    with pytest.raises(ModelDirError, match="make model"):
        load_predictor()
    with pytest.raises(ValueError, match="batch_size"):
        load_predictor(model_dir, batch_size=0)


def test_default_model_dir_is_inside_the_package() -> None:
    path = inference.default_model_dir()
    assert path.parts[-3:] == ("phagoflow", "models", "default")


def test_backends_directly(model_dir: Path) -> None:
    tiles = np.random.default_rng(0).random((2, 2, 64, 64)).astype(np.float32)
    ort_out = OnnxRuntimeBackend(model_dir / "model.onnx", threads=1)(tiles)
    net, _ = load_model_dir(model_dir)
    before = torch.get_num_threads()
    torch_out = TorchBackend(net, threads=1)(tiles)
    assert torch.get_num_threads() == before  # restored
    assert ort_out.shape == torch_out.shape == (2, 3, 64, 64)
    assert float(np.abs(ort_out - torch_out).max()) < 1e-3
    with pytest.raises(ValueError, match="threads"):
        OnnxRuntimeBackend(model_dir / "model.onnx", threads=0)


def test_softmax_is_stable() -> None:
    x = np.array([[1000.0, -1000.0], [0.0, 0.0]], np.float32)
    p = softmax(x, axis=0)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(0), 1.0)
    assert p[0, 0] == pytest.approx(1.0)
