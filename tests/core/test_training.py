"""Tests for phagoflow.core.training (tiny synthetic fields, a few seconds each)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from phagoflow.core import training
from phagoflow.core.inference import load_predictor
from phagoflow.core.model_dir import load_model_dir, save_model_dir
from phagoflow.core.training import (
    IGNORE_LABEL,
    TrainingConfig,
    TrainingData,
    TrainingError,
    ignore_boundary_band,
    train_unet,
)


def _synthetic_field(seed: int, size: int = 64) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Poisson background, small puncta in both channels (1), larger red-only blobs (2)."""
    rng = np.random.default_rng(seed)
    img = rng.poisson(100, size=(2, size, size)).astype(np.float32)
    lab = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(6):
        cy, cx = rng.integers(4, size - 4, 2)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= 2
        img[:, disk] += 800
        lab[disk] = 1
    for _ in range(3):
        cy, cx = rng.integers(6, size - 6, 2)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= 12
        img[0, disk] += 900
        lab[disk] = 2
    return img, lab


def _data(n: int = 3, *, truth: bool = False) -> TrainingData:
    pairs = [_synthetic_field(i) for i in range(n)]
    labels = [p[1] for p in pairs]
    return TrainingData(
        images=[p[0] for p in pairs],
        labels=labels,
        names=[f"f{i}" for i in range(n)],
        truth=[lab.copy() for lab in labels] if truth else None,
    )


def _config(**kw: Any) -> TrainingConfig:
    base: dict[str, Any] = {
        "epochs": 2,
        "patch_size": 32,
        "patches_per_epoch": 8,
        "batch_size": 4,
        "base_channels": 4,
        "num_threads": 2,
        "val_fraction": 0.34,
        "learning_rate": 0.01,
        "seed": 3,
    }
    base.update(kw)
    return TrainingConfig(**base)


def test_paper_defaults() -> None:
    cfg = TrainingConfig()
    assert (cfg.optimizer, cfg.momentum, cfg.weight_decay, cfg.learning_rate) == (
        "sgd",
        0.95,
        1e-3,
        2e-3,
    )
    assert (cfg.lr_drop_factor, cfg.lr_drop_period, cfg.batch_size, cfg.epochs) == (0.8, 3, 4, 15)
    assert (cfg.patch_size, cfg.val_fraction, cfg.augment) == (256, 0.10, True)
    with pytest.raises(ValueError, match="multiple of 8"):
        TrainingConfig(patch_size=60)


def test_two_epochs_run_and_record_history(tmp_path: Path) -> None:
    logged: list[dict[str, Any]] = []
    out = train_unet(_data(truth=True), _config(), progress=False, log=logged.append)
    assert len(out.history) == 2 and [r.epoch for r in out.history] == [1, 2]
    assert logged == [r.__dict__ for r in out.history]
    assert out.best_epoch in (1, 2)
    assert out.history[1].learning_rate == pytest.approx(0.01)  # drop only after 3 epochs
    for rec in out.history:
        assert np.isfinite(rec.train_loss) and rec.val_loss is not None
        assert len(rec.val_iou_weak) == 3 and rec.val_miou_weak is not None
        assert rec.val_miou_truth == pytest.approx(rec.val_miou_weak)  # truth == labels here
        assert rec.patches_per_s > 0
    assert len(out.val_names) == 1 and len(out.train_names) == 2
    assert set(out.val_names + out.train_names) == {"f0", "f1", "f2"}
    assert not out.model.training
    extra = out.card_extra()
    json.dumps(extra, allow_nan=False)
    assert extra["seed"] == 3 and len(extra["history"]) == 2
    assert set(extra["data_checksums"]) == {"f0", "f1", "f2"}
    # the outcome saves as a model folder and predicts
    save_model_dir(tmp_path / "m", out.model, out.unet_config, out.normalisation, extra)
    _, card = load_model_dir(tmp_path / "m")
    assert card.training["best_epoch"] == out.best_epoch
    mask = load_predictor(tmp_path / "m", threads=1).predict(_synthetic_field(9)[0])
    assert mask.shape == (64, 64)


def test_deterministic_for_a_seed() -> None:
    data = _data()
    a = train_unet(data, _config(), progress=False)
    b = train_unet(data, _config(), progress=False)
    c = train_unet(data, _config(seed=4), progress=False)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [r.train_loss for r in a.history] == [r.train_loss for r in b.history]
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_torch_global_state_is_restored() -> None:
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    rng_state = torch.random.get_rng_state()
    train_unet(_data(2), _config(epochs=1, num_threads=1, val_fraction=0.0), progress=False)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det
    assert torch.equal(torch.random.get_rng_state(), rng_state)


def test_adam_and_ce_and_ignore_band_options_run() -> None:
    cfg = _config(optimizer="adam", learning_rate=1e-3, ce_weight=0.5, ignore_boundary_px=1)
    out = train_unet(_data(), cfg, progress=False)
    assert all(np.isfinite(r.train_loss) for r in out.history)


def test_no_validation_fields_selects_by_train_loss() -> None:
    out = train_unet(_data(2), _config(val_fraction=0.0), progress=False)
    assert out.val_names == [] and all(r.val_loss is None for r in out.history)
    best = min(out.history, key=lambda r: r.train_loss)
    assert out.best_epoch == best.epoch


def test_early_stopping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training, "_score", lambda *a, **k: 0.0)  # never improves after epoch 1
    out = train_unet(_data(), _config(epochs=6, early_stopping_patience=2), progress=False)
    assert [r.epoch for r in out.history] == [1, 2, 3]
    assert out.stopped_early and out.best_epoch == 1


def test_refuses_no_fields() -> None:
    with pytest.raises(TrainingError, match="no training fields"):
        train_unet(TrainingData([], [], []), _config(), progress=False)


def test_refuses_labels_without_objects() -> None:
    data = _data(2)
    data.labels = [np.zeros_like(lab) for lab in data.labels]
    with pytest.raises(TrainingError, match="no objects at all in 2 fields — nothing to learn"):
        train_unet(data, _config(), progress=False)


def test_refuses_nan_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    class NanLoss(torch.nn.Module):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__()

        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return logits.mean() * float("nan")

    monkeypatch.setattr(training, "GeneralisedDiceLoss", NanLoss)
    with pytest.raises(TrainingError, match=r"nan at epoch 1, step 1"):
        train_unet(_data(), _config(), progress=False)


def test_refuses_absurd_learning_rate() -> None:
    with pytest.raises(TrainingError, match=r"at epoch \d+, step \d+ \(learning rate 1e\+30\)"):
        train_unet(_data(), _config(learning_rate=1e30, epochs=3), progress=False)


def test_refuses_bad_shapes_and_values() -> None:
    data = _data(2)
    data.labels[1] = data.labels[1][:, :60]
    with pytest.raises(TrainingError, match=r"f1: image \(2, 64, 64\) and label \(64, 60\)"):
        train_unet(data, _config(), progress=False)
    data = _data(2)
    data.images[0] = data.images[0][:1]
    with pytest.raises(TrainingError, match=r"f0: image must be \(2, H, W\)"):
        train_unet(data, _config(), progress=False)
    data = _data(2)
    data.labels[0] = (data.labels[0] * 3).astype(np.uint8)
    with pytest.raises(TrainingError, match="outside"):
        train_unet(data, _config(), progress=False)
    with pytest.raises(TrainingError, match="smaller than patch_size 128"):
        train_unet(_data(2), _config(patch_size=128), progress=False)
    data = _data(2)
    data.images[1][0, 5, 5] = np.nan
    with pytest.raises(TrainingError, match=r"field f1: .*NaN"):
        train_unet(data, _config(), progress=False)
    data = _data(2)
    data.names = ["a"]
    with pytest.raises(TrainingError, match="must match"):
        train_unet(data, _config(), progress=False)


def test_ignore_boundary_band() -> None:
    lab = np.zeros((9, 9), np.uint8)
    lab[4, 4] = 1
    out = ignore_boundary_band(lab, 1)
    assert out[4, 4] == 1  # object kept, even a one-pixel punctum
    assert out[3, 4] == out[5, 4] == out[4, 3] == out[4, 5] == IGNORE_LABEL
    assert out[3, 3] == 0  # disk, not square
    assert (out == IGNORE_LABEL).sum() == 4
    np.testing.assert_array_equal(ignore_boundary_band(lab, 0), lab)
    assert lab.max() == 1  # input untouched


def test_intensity_augmentation_changes_patches_not_labels() -> None:
    rng = np.random.default_rng(0)
    patch = rng.normal(0.0, 1.0, (2, 16, 16)).astype(np.float32)
    aug = training.IntensityAugmentation(probability=1.0, noise_sd=(0.0, 0.0), offset_sd=0.0)
    out = training._perturb_intensity(patch, aug, np.random.default_rng(1))
    assert out.dtype == np.float32 and out.shape == patch.shape
    assert not np.allclose(out, patch)
    # without offset/noise it is a monotone map per channel: pixel order is kept
    for c in range(2):
        assert np.array_equal(np.argsort(out[c].ravel()), np.argsort(patch[c].ravel()))
    off = training.IntensityAugmentation(probability=0.0)
    assert training._perturb_intensity(patch, off, np.random.default_rng(1)) is patch


def test_intensity_augmentation_validates_ranges() -> None:
    with pytest.raises(ValueError, match="0 < low <= high"):
        training.IntensityAugmentation(gain=(1.5, 0.5))
    with pytest.raises(ValueError, match="noise_sd"):
        training.IntensityAugmentation(noise_sd=(-0.1, 0.1))


def test_training_with_intensity_augmentation_is_deterministic() -> None:
    cfg = _config(intensity_augment=training.IntensityAugmentation())
    a = train_unet(_data(), cfg, progress=False)
    b = train_unet(_data(), cfg, progress=False)
    assert [r.train_loss for r in a.history] == [r.train_loss for r in b.history]
    plain = train_unet(_data(), _config(), progress=False)
    assert [r.train_loss for r in a.history] != [r.train_loss for r in plain.history]


def test_unlearned_class_is_reported_in_warnings_and_card() -> None:
    import dataclasses

    out = train_unet(_data(), _config(), progress=False)
    rec = out.history[out.best_epoch - 1]
    good = dataclasses.replace(rec, val_iou_weak=[0.99, 0.40, 0.60])
    bad = dataclasses.replace(rec, val_iou_weak=[0.99, 0.01, 0.60])
    absent = dataclasses.replace(rec, val_iou_weak=[0.99, None, 0.60])
    history = list(out.history)
    history[out.best_epoch - 1] = good
    assert dataclasses.replace(out, history=history).warnings == []
    history[out.best_epoch - 1] = absent
    assert dataclasses.replace(out, history=history).warnings == []
    history[out.best_epoch - 1] = bad
    flagged = dataclasses.replace(out, history=history)
    assert len(flagged.warnings) == 1
    assert "phagophore not learned" in flagged.warnings[0]
    assert flagged.card_extra()["warnings"] == flagged.warnings
    json.dumps(flagged.card_extra())
