"""Generalised Dice loss (optionally + cross-entropy) for the U-Net, safe for absent classes.

The paper (and MATLAB's ``generalizedDice``) weights class ``c`` by ``w_c = 1 / (Σ_pixels T_c)²``
and computes, per image,

    loss = 1 − 2 Σ_c w_c Σ_i Y_ci T_ci / Σ_c w_c Σ_i (Y_ci² + T_ci²)

with ``Y`` the softmax probabilities and ``T`` the one-hot target. When a class is absent from an
image (common for 256-px patches), ``Σ T_c = 0`` and MATLAB divides by zero (inf weights, NaN
loss). Here an absent class gets a *finite* weight, chosen by ``absent_class_weight``:

- ``"max"`` (default, as MONAI does): the largest weight among the classes present in that image,
  i.e. the weight is capped. Its numerator term is 0, its denominator term ``w Σ Y_c²`` penalises
  probability mass put on a class that is not there (false positives);
- ``"zero"``: the class is left out of that image's Dice entirely.

Pixels labelled ``ignore_index`` (e.g. 255 for a band around weak-label boundaries) are excluded
from both the Dice sums and the cross-entropy. Images with no valid pixel contribute nothing; a
batch with no valid pixel at all gives a loss of 0 with zero gradients. The loss is never NaN or
inf for finite logits.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GeneralisedDiceLoss", "generalised_dice_loss"]


def generalised_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int | None = None,
    absent_class_weight: Literal["max", "zero"] = "max",
    batch_dice: bool = False,
) -> torch.Tensor:
    """Generalised Dice loss with class weights ``1 / (Σ target_c)²``.

    Parameters
    ----------
    logits : (N, K, H, W) tensor
        Raw network outputs (softmax is applied here).
    target : (N, H, W) integer tensor
        Class index per pixel in ``[0, K)``, or ``ignore_index``.
    ignore_index : int, optional
        Label value excluded from the loss (typically 255).
    absent_class_weight : {'max', 'zero'}
        Weight of a class absent from the target (see module docstring).
    batch_dice : bool
        ``False`` (default, as MATLAB): one Dice per image, averaged over the images that have
        valid pixels. ``True``: one Dice over all pixels of the batch (class sums over
        ``N, H, W``), so a class present anywhere in the batch keeps its true weight.

    Returns
    -------
    scalar tensor
        Loss in ``[0, 1]``; 0 for a perfect prediction.
    """
    _validate(logits, target)
    n_classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1)
    onehot, vmask = _masked_onehot(target.long(), n_classes, ignore_index, probs.dtype)
    probs = probs * vmask

    dims: tuple[int, ...] = (0, 2, 3) if batch_dice else (2, 3)
    count = onehot.sum(dim=dims)  # (K,) or (N, K)
    intersection = (probs * onehot).sum(dim=dims)
    union = (probs * probs).sum(dim=dims) + (onehot * onehot).sum(dim=dims)
    if batch_dice:
        count, intersection, union = count[None], intersection[None], union[None]
    present = count > 0
    # Weights 1/count², rescaled per image by the smallest count so they stay O(1) in float32
    # (Dice is invariant to a common factor of the weights).
    min_count = torch.where(present, count, torch.full_like(count, float("inf"))).amin(dim=1)
    has_valid = torch.isfinite(min_count)
    scale = torch.where(has_valid, min_count, torch.ones_like(min_count))
    weights = _class_weights(count, present, scale, absent_class_weight)
    numerator = 2.0 * (weights * intersection).sum(dim=1)
    denominator = (weights * union).sum(dim=1)
    dice = numerator / denominator.clamp(min=torch.finfo(probs.dtype).tiny)
    per_image = torch.where(has_valid, 1.0 - dice, torch.zeros_like(dice))
    n_valid = has_valid.sum()
    if int(n_valid) == 0:
        return (logits * 0.0).sum()
    return per_image.sum() / n_valid


def _masked_onehot(
    target: torch.Tensor, n_classes: int, ignore_index: int | None, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, K, H, W)`` one-hot target, zero on ignored pixels, and the ``(N, 1, H, W)`` mask
    of valid pixels; ``ValueError`` on a value outside ``[0, K)`` that is not ignored."""
    if ignore_index is not None:
        valid = target != ignore_index
        safe_target = torch.where(valid, target, torch.zeros_like(target))
    else:
        valid = torch.ones_like(target, dtype=torch.bool)
        safe_target = target
    if int(safe_target.max()) >= n_classes or int(safe_target.min()) < 0:
        raise ValueError(
            f"target values must lie in [0, {n_classes}) or equal ignore_index={ignore_index}, "
            f"got range [{int(target.min())}, {int(target.max())}]"
        )
    onehot = F.one_hot(safe_target, n_classes).permute(0, 3, 1, 2).to(dtype)
    vmask = valid.unsqueeze(1).to(dtype)
    return onehot * vmask, vmask


def _class_weights(
    count: torch.Tensor, present: torch.Tensor, scale: torch.Tensor, absent_class_weight: str
) -> torch.Tensor:
    """Per image and class ``(scale / count)²``; absent classes get 0 (``"zero"``) or the
    image's largest weight (``"max"``)."""
    weights = torch.where(present, (scale[:, None] / count.clamp(min=1.0)) ** 2, 0.0)
    if absent_class_weight == "max":
        w_max = weights.amax(dim=1, keepdim=True)
        weights = torch.where(present, weights, w_max.expand_as(weights))
    elif absent_class_weight != "zero":
        raise ValueError(
            f"absent_class_weight must be 'max' or 'zero', got {absent_class_weight!r}"
        )
    return weights


class GeneralisedDiceLoss(nn.Module):
    """Generalised Dice loss, optionally plus ``ce_weight`` × cross-entropy.

    Parameters
    ----------
    ce_weight : float
        Weight of the (unweighted, mean over valid pixels) cross-entropy term; 0 disables it.
    ignore_index : int, optional
        Label value excluded from both terms (typically 255).
    absent_class_weight : {'max', 'zero'}
        See :func:`generalised_dice_loss`.
    batch_dice : bool
        See :func:`generalised_dice_loss`.

    Notes
    -----
    ``forward(logits (N, K, H, W), target (N, H, W))`` returns a scalar tensor.
    """

    def __init__(
        self,
        ce_weight: float = 0.0,
        ignore_index: int | None = None,
        *,
        absent_class_weight: Literal["max", "zero"] = "max",
        batch_dice: bool = False,
    ) -> None:
        super().__init__()
        if ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {ce_weight}")
        self.ce_weight = float(ce_weight)
        self.ignore_index = ignore_index
        self.absent_class_weight: Literal["max", "zero"] = absent_class_weight
        self.batch_dice = batch_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss for logits ``(N, K, H, W)`` and integer target ``(N, H, W)``."""
        loss = generalised_dice_loss(
            logits,
            target,
            ignore_index=self.ignore_index,
            absent_class_weight=self.absent_class_weight,
            batch_dice=self.batch_dice,
        )
        if self.ce_weight > 0:
            target = target.long()
            if self.ignore_index is not None:
                n_valid = int((target != self.ignore_index).sum())
                if n_valid == 0:
                    return loss
                ce = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index)
            else:
                ce = F.cross_entropy(logits.float(), target)
            loss = loss + self.ce_weight * ce
        return loss


def _validate(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4:
        raise ValueError(f"logits must be (N, K, H, W), got {tuple(logits.shape)}")
    expected = (logits.shape[0], logits.shape[2], logits.shape[3])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must be (N, H, W) = {expected} to match logits {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )
    if target.is_floating_point():
        raise ValueError(f"target must be an integer tensor, got {target.dtype}")
