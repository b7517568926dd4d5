"""Tests for phagoflow.core.losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from phagoflow.core.losses import GeneralisedDiceLoss, generalised_dice_loss


def _target(seed: int = 0, n: int = 2, h: int = 16, w: int = 16, k: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, k, (n, h, w), generator=g)


def _perfect_logits(target: torch.Tensor, k: int = 3) -> torch.Tensor:
    return 30.0 * F.one_hot(target, k).permute(0, 3, 1, 2).float()


def _reference(logits: torch.Tensor, target: torch.Tensor) -> float:
    """MATLAB's per-image formula with raw weights 1/count² (all classes present)."""
    probs = torch.softmax(logits.double(), 1).numpy()
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).double().numpy()
    losses = []
    for y, t in zip(probs, onehot, strict=True):
        w = 1.0 / t.sum(axis=(1, 2)) ** 2
        num = 2 * (w * (y * t).sum(axis=(1, 2))).sum()
        den = (w * (y**2 + t**2).sum(axis=(1, 2))).sum()
        losses.append(1 - num / den)
    return float(np.mean(losses))


@pytest.mark.parametrize("batch_dice", [False, True])
def test_perfect_prediction_gives_zero(batch_dice: bool) -> None:
    t = _target()
    loss = generalised_dice_loss(_perfect_logits(t), t, batch_dice=batch_dice)
    assert 0.0 <= float(loss) < 1e-4


def test_wrong_prediction_gives_nearly_one() -> None:
    t = _target()
    loss = generalised_dice_loss(_perfect_logits((t + 1) % 3), t)
    assert float(loss) > 0.95


def test_matches_matlab_formula_when_all_classes_present() -> None:
    t = _target(seed=3)
    logits = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert float(generalised_dice_loss(logits, t)) == pytest.approx(_reference(logits, t), 1e-5)


def test_weights_favour_rare_class() -> None:
    t = torch.zeros(1, 16, 16, dtype=torch.long)
    t[0, :2, :2] = 1  # 4 px of class 1
    t[0, 8:, :] = 2  # 128 px of class 2
    good = _perfect_logits(t)
    miss_rare = good.clone()
    miss_rare[0, :, :2, :2] = _perfect_logits(torch.zeros(1, 2, 2, dtype=torch.long))[0]
    miss_common = good.clone()
    miss_common[0, :, 8:10, :2] = _perfect_logits(torch.zeros(1, 2, 2, dtype=torch.long))[0]
    # the same 4 wrong pixels cost far more on the rare class
    assert float(generalised_dice_loss(miss_rare, t)) > 10 * float(
        generalised_dice_loss(miss_common, t)
    )


@pytest.mark.parametrize("absent", ["max", "zero"])
@pytest.mark.parametrize("batch_dice", [False, True])
def test_absent_class_gives_finite_loss_and_gradients(absent: str, batch_dice: bool) -> None:
    t = torch.zeros(2, 16, 16, dtype=torch.long)
    t[:, 4:6, 4:6] = 1  # class 2 absent everywhere
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    loss = generalised_dice_loss(logits, t, absent_class_weight=absent, batch_dice=batch_dice)  # type: ignore[arg-type]
    loss.backward()  # type: ignore[no-untyped-call]
    assert torch.isfinite(loss)
    assert 0.0 < loss.item() < 1.0
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert float(logits.grad.abs().sum()) > 0


def test_absent_class_false_positives_cost_more_with_max_weight() -> None:
    t = torch.zeros(1, 16, 16, dtype=torch.long)
    t[0, 4:8, 4:8] = 1
    logits = _perfect_logits(t)
    logits[0, 2, :3, :3] = 60.0  # predict absent class 2 on 9 background pixels
    with_max = float(generalised_dice_loss(logits, t, absent_class_weight="max"))
    with_zero = float(generalised_dice_loss(logits, t, absent_class_weight="zero"))
    assert with_max > with_zero > 0


def test_all_background_target() -> None:
    t = torch.zeros(2, 16, 16, dtype=torch.long)
    assert float(generalised_dice_loss(_perfect_logits(t), t)) < 1e-4
    logits = torch.zeros(2, 3, 16, 16, requires_grad=True)
    loss = generalised_dice_loss(logits, t)
    loss.backward()  # type: ignore[no-untyped-call]
    assert torch.isfinite(loss) and 0.0 < loss.item() < 1.0
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_ignore_index_excludes_pixels() -> None:
    t = _target(seed=5)
    t_ign = t.clone()
    t_ign[:, :, :8] = 255
    logits = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    other = logits.clone()
    other[:, :, :, :8] = torch.randn(2, 3, 16, 8)  # change only ignored pixels
    loss_fn = GeneralisedDiceLoss(ce_weight=1.0, ignore_index=255)
    assert float(loss_fn(logits, t_ign)) == pytest.approx(float(loss_fn(other, t_ign)), 1e-6)
    # and equals the loss of the valid half alone
    half = loss_fn(logits[:, :, :, 8:].contiguous(), t[:, :, 8:].contiguous())
    assert float(loss_fn(logits, t_ign)) == pytest.approx(float(half), 1e-5)
    x = logits.clone().requires_grad_(True)
    loss_fn(x, t_ign).backward()
    assert x.grad is not None
    assert float(x.grad[:, :, :, :8].abs().max()) == 0.0
    assert float(x.grad[:, :, :, 8:].abs().max()) > 0.0


def test_all_pixels_ignored_gives_zero_and_zero_gradients() -> None:
    t = torch.full((1, 8, 8), 255, dtype=torch.long)
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    loss = GeneralisedDiceLoss(ce_weight=0.5, ignore_index=255)(x, t)
    loss.backward()
    assert loss.item() == 0.0
    assert x.grad is not None and float(x.grad.abs().max()) == 0.0


def test_cross_entropy_term_is_added() -> None:
    t = _target()
    logits = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    dice = float(GeneralisedDiceLoss()(logits, t))
    both = float(GeneralisedDiceLoss(ce_weight=0.5)(logits, t))
    assert both == pytest.approx(dice + 0.5 * float(F.cross_entropy(logits, t)), 1e-5)


def test_validation_errors() -> None:
    logits = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="target must be"):
        generalised_dice_loss(logits, torch.zeros(1, 8, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        generalised_dice_loss(logits, torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        generalised_dice_loss(logits, torch.full((1, 8, 8), 255, dtype=torch.long))
    with pytest.raises(ValueError, match="ce_weight"):
        GeneralisedDiceLoss(ce_weight=-1.0)
