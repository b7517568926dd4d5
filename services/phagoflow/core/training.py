"""Train the U-Net on fields and (weak or curated) masks: CDL on CIP labels, MDL on expert masks.

Pure: works on arrays. The CLI reads plates, computes CIP weak labels and calls
:func:`train_unet`; the result is saved with :func:`phagoflow.core.model_dir.save_model_dir`
(``outcome.card_extra()`` is the training record for the model card)::

    outcome = train_unet(TrainingData(images, labels, names), TrainingConfig(epochs=15))
    save_model_dir(path, outcome.model, outcome.unet_config, outcome.normalisation,
                   outcome.card_extra())

Recipe (paper defaults, see :class:`TrainingConfig`): fields are normalised once with the
model's :class:`~phagoflow.core.normalisation.NormalisationConfig` (the same function inference
uses); fields are split into train/validation deterministically by ``seed``; each epoch draws
``patches_per_epoch`` random ``patch_size`` patches from the training fields with random flips
and 90° rotations (a seeded ``numpy.random.Generator``); SGD with momentum 0.95, L2 1e-3,
lr 2e-3 × 0.8 every 3 epochs, batch 4, 15 epochs; loss: generalised Dice (+ optional
cross-entropy). After every epoch the validation fields are predicted *exactly as at inference*
(256-px tiles, 32 px border) and scored against the weak labels (and against true masks when
given, for reporting only). The best epoch by ``select_by`` is kept; early stopping is optional —
the paper found that fitting weak labels too closely reproduces their errors.

Determinism: on CPU, two runs with the same data, config and thread count give identical weights
(``torch.manual_seed`` inside a forked RNG, ``torch.use_deterministic_algorithms(True)``, fixed
threads; global torch settings are restored afterwards).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import ndimage
from tqdm.auto import tqdm

from phagoflow.core.classes import CLASS_NAMES, OBJECT_CLASSES
from phagoflow.core.evaluation.pixel import class_iou, confusion_matrix_ignoring
from phagoflow.core.inference import TorchBackend, tiled_logits
from phagoflow.core.losses import GeneralisedDiceLoss
from phagoflow.core.normalisation import NormalisationConfig, normalise
from phagoflow.core.unet import DEFAULT_BASE_CHANNELS, UNet, UNetConfig

__all__ = [
    "IGNORE_LABEL",
    "TRAINING_PRESETS",
    "EpochRecord",
    "IntensityAugmentation",
    "TrainingConfig",
    "TrainingData",
    "TrainingError",
    "TrainingOutcome",
    "ignore_boundary_band",
    "train_unet",
]

#: Label value excluded from the loss and from IoU against weak labels.
IGNORE_LABEL = 255

#: Named :class:`TrainingConfig` overrides (``phagoflow train --preset NAME``).
#:
#: ``mdl`` — fine-tuning CDL on curated masks (MDL). Measured with ``scripts/mdl_curve.py`` on
#: simulated plates (truth standing in for curated masks, 36-field held-out test plate, 2 CPU
#: cores): the paper's SGD recipe plateaued at mean IoU 0.81 with 10 or 30 curated fields;
#: Adam at 3e-3 with cross-entropy weighted 2 on top of the Dice loss, 24 epochs of 256 patches,
#: reached 0.854 (10 fields) — see docs/experiment.md.
TRAINING_PRESETS: dict[str, dict[str, object]] = {
    "paper": {},
    "mdl": {
        "optimizer": "adam",
        "learning_rate": 3e-3,
        "ce_weight": 2.0,
        "epochs": 24,
        "patches_per_epoch": 256,
    },
}
_N_CLASSES = 3


#: A class whose validation IoU against the labels stays below this at the best epoch counts as
#: "not learned" (seen on a harder simulated plate: phagophore IoU 0.015 after 12 epochs while every
#: converged run was above 0.3; docs/experiment.md).
UNLEARNED_CLASS_IOU = 0.05


class TrainingError(ValueError):
    """Training cannot start or cannot go on (no data, no objects, NaN loss, bad shapes)."""


class IntensityAugmentation(BaseModel):
    """Random intensity changes of a training patch (after normalisation), labels unchanged.

    Applied to each patch with probability ``probability``, in this order, per channel ``c``
    of the normalised patch ``x`` (dimensionless, see :mod:`phagoflow.core.normalisation`):

    1. contrast/gain: ``x ← x · g_c`` with ``log g_c ~ U(log gain[0], log gain[1])`` drawn
       per channel (``channel_gain_jitter``) around a common gain;
    2. offset: ``x ← x + o_c``, ``o_c ~ N(0, offset_sd)``;
    3. gamma: ``x ← sign(x) · |x|^γ``, ``log γ ~ U(log gamma[0], log gamma[1])`` (one per patch);
    4. noise: ``x ← x + n``, ``n ~ N(0, σ²)`` per pixel, ``σ ~ U(noise_sd)``.

    The weak labels were computed on the unperturbed field, so a dimmer, noisier copy keeps
    the teacher's answer: the network learns to find vesicles at contrasts where the teacher
    itself would fail (and to rely on relative, not absolute, brightness, like the CIP).

    Attributes
    ----------
    probability : float
        Chance that a patch is perturbed at all.
    gain : tuple of float
        Range of the common multiplicative gain (log-uniform).
    channel_gain_jitter : float
        Extra per-channel gain factor range ``(1/(1+j), 1+j)`` (log-uniform); 0 keeps the
        DsRed/pHluorin ratio, which decides the class.
    offset_sd : float
        Standard deviation of the additive per-channel offset.
    gamma : tuple of float
        Range of the gamma exponent (log-uniform).
    noise_sd : tuple of float
        Range of the standard deviation of additive Gaussian pixel noise.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    probability: float = Field(default=0.8, ge=0, le=1)
    gain: tuple[float, float] = (0.5, 1.5)
    channel_gain_jitter: float = Field(default=0.1, ge=0)
    offset_sd: float = Field(default=0.05, ge=0)
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_sd: tuple[float, float] = (0.0, 0.05)

    @field_validator("gain", "gamma")
    @classmethod
    def _positive_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"range must satisfy 0 < low <= high, got {v}")
        return v

    @field_validator("noise_sd")
    @classmethod
    def _noise_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1]:
            raise ValueError(f"noise_sd must satisfy 0 <= low <= high, got {v}")
        return v


class TrainingConfig(BaseModel):
    """Hyper-parameters; defaults follow the paper.

    Attributes
    ----------
    optimizer : {'sgd', 'adam'}
        ``sgd`` (paper: momentum 0.95) or ``adam`` (betas 0.9/0.999, L2 ``weight_decay``).
        Measured on synthetic Rosella-like fields (10 fields of 256², 128-px patches, base 8,
        6 epochs × 256 patches): validation mean IoU per epoch 0.09/0.24/0.65/0.80/0.90/0.93
        with SGD lr 2e-3 vs 0.31/0.74/0.90/0.96/0.97/0.98 with Adam lr 1e-3. Adam fits faster;
        SGD stays the default because it is the published recipe and, on weak labels, a
        faster fit also reproduces the teacher's errors sooner (use early stopping with Adam).
    learning_rate : float
        Initial learning rate (2e-3).
    momentum : float
        SGD momentum (0.95).
    weight_decay : float
        L2 regularisation (1e-3).
    lr_drop_factor, lr_drop_period : float, int
        Multiply the learning rate by ``lr_drop_factor`` every ``lr_drop_period`` epochs.
    batch_size : int
        Patches per step (4).
    epochs : int
        Maximum number of epochs (15).
    patch_size : int
        Training patch side in pixels (256); a multiple of 8, at most the smallest field side.
    patches_per_epoch : int
        Random patches drawn per epoch (rounded up to whole batches). The default 512 takes
        ~30 s per epoch at base width 8 on 2 CPU cores (~17 patches/s).
    augment : bool
        Random horizontal flips and 90° rotations (the 8 symmetries of the square).
    intensity_augment : IntensityAugmentation, optional
        Random gain/offset/gamma/noise of the normalised patches; ``None`` (default) = off.
    val_fraction : float
        Fraction of *fields* held out for validation (0.10); at least one field when there are
        two or more fields and the fraction is > 0. Without validation fields the best epoch is
        chosen by training loss.
    seed : int
        Seeds the split, the patch sampling and the weight initialisation.
    early_stopping_patience : int, optional
        Stop after this many epochs without improvement of ``select_by``; ``None`` = off.
    select_by : {'val_loss', 'val_miou'}
        Checkpoint selection: lowest validation loss or highest mean IoU against the weak labels.
    ce_weight : float
        Weight of the cross-entropy added to the generalised Dice loss (0 = Dice only, paper).
    ignore_boundary_px : int
        Width (pixels) of a ring of background around every labelled object that is excluded
        from the loss (label 255), for weak labels with uncertain extents; 0 = off.
    absent_class_weight : {'max', 'zero'}
        Dice weight of a class absent from a patch (see :mod:`phagoflow.core.losses`).
    base_channels : int
        U-Net width (:class:`~phagoflow.core.unet.UNetConfig`).
    num_threads : int, optional
        Torch CPU threads during training (restored afterwards); ``None`` keeps the current
        setting. Determinism holds for a fixed thread count.
    device : str
        Torch device (``"cpu"``, ``"cuda"``); bitwise determinism is only promised on CPU.
    normalisation : NormalisationConfig
        Input normalisation (recorded in the model card, reused at inference).
    val_batch_size : int
        Tiles per forward pass during validation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    optimizer: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = Field(default=2e-3, gt=0)
    momentum: float = Field(default=0.95, ge=0, lt=1)
    weight_decay: float = Field(default=1e-3, ge=0)
    lr_drop_factor: float = Field(default=0.8, gt=0, le=1)
    lr_drop_period: int = Field(default=3, ge=1)
    batch_size: int = Field(default=4, ge=1)
    epochs: int = Field(default=15, ge=1)
    patch_size: int = Field(default=256, ge=8)
    patches_per_epoch: int = Field(default=512, ge=1)
    augment: bool = True
    intensity_augment: IntensityAugmentation | None = None
    val_fraction: float = Field(default=0.10, ge=0, lt=1)
    seed: int = 0
    early_stopping_patience: int | None = Field(default=None, ge=1)
    select_by: Literal["val_loss", "val_miou"] = "val_loss"
    ce_weight: float = Field(default=0.0, ge=0)
    ignore_boundary_px: int = Field(default=0, ge=0)
    absent_class_weight: Literal["max", "zero"] = "max"
    base_channels: int = Field(default=DEFAULT_BASE_CHANNELS, ge=1, le=256)
    num_threads: int | None = Field(default=None, ge=1)
    device: str = "cpu"
    normalisation: NormalisationConfig = Field(default_factory=NormalisationConfig)
    val_batch_size: int = Field(default=8, ge=1)

    @field_validator("patch_size")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v % 8:
            raise ValueError(f"patch_size must be a multiple of 8 (3 max-pools), got {v}")
        return v


@dataclass
class TrainingData:
    """Fields and masks to learn from.

    Attributes
    ----------
    images : list of (2, H, W) float32 ndarray
        Raw fields ``[DsRed, pHluorin]`` in camera counts (normalised inside).
    labels : list of (H, W) uint8 ndarray
        Masks to learn: 0 background, 1 phagophore, 2 autolysosome, 255 ignore.
    names : list of str
        One name per field (used in messages, split and checksums).
    truth : list of (H, W) uint8 ndarray, optional
        True masks, used only to report validation IoU (never for training or selection).
    """

    images: list[NDArray[np.float32]]
    labels: list[NDArray[np.uint8]]
    names: list[str]
    truth: list[NDArray[np.uint8]] | None = None


@dataclass(frozen=True)
class EpochRecord:
    """Metrics of one epoch (1-based). IoUs are per class [bg, phagophore, autolysosome]."""

    epoch: int
    learning_rate: float
    train_loss: float
    val_loss: float | None
    val_iou_weak: list[float | None]
    val_miou_weak: float | None
    val_iou_truth: list[float | None] | None
    val_miou_truth: float | None
    train_seconds: float
    val_seconds: float
    patches_per_s: float


@dataclass
class TrainingOutcome:
    """Result of :func:`train_unet`.

    Attributes
    ----------
    model : UNet
        Best checkpoint, on CPU, eval mode.
    history : list of EpochRecord
        One record per epoch run.
    best_epoch : int
        1-based epoch of ``model``.
    training_time_s : float
        Wall time of the whole run, seconds.
    """

    model: UNet
    history: list[EpochRecord]
    best_epoch: int
    training_time_s: float
    config: TrainingConfig
    unet_config: UNetConfig
    normalisation: NormalisationConfig
    train_names: list[str]
    val_names: list[str]
    num_threads: int
    stopped_early: bool
    data_checksums: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """Problems of the best checkpoint a user must see (empty when none).

        A class present in the validation labels whose IoU against them is below
        :data:`UNLEARNED_CLASS_IOU` at the best epoch was not learned: the model would report
        (almost) no objects of that class. Needs validation fields; truth is not used.
        """
        if not self.history or self.best_epoch < 1:
            return []
        rec = self.history[self.best_epoch - 1]
        out = []
        for cls, iou in enumerate(rec.val_iou_weak):
            if cls and iou is not None and iou < UNLEARNED_CLASS_IOU:
                out.append(
                    f"class {CLASS_NAMES[cls]} not learned: validation IoU against the labels "
                    f"{iou:.3f} at the best epoch ({rec.epoch}); train longer (--epochs) or with "
                    "another --seed before using this model"
                )
        return out

    def card_extra(self) -> dict[str, Any]:
        """JSON-serialisable training record for the model card."""
        return {
            "warnings": self.warnings,
            "trainer": "phagoflow.core.training.train_unet",
            "parameters": self.config.model_dump(mode="json"),
            "seed": self.config.seed,
            "num_threads": self.num_threads,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "training_time_s": round(self.training_time_s, 3),
            "history": [asdict(r) for r in self.history],
            "split": {"train": self.train_names, "val": self.val_names},
            "data_checksums": self.data_checksums,
        }


def train_unet(
    data: TrainingData,
    config: TrainingConfig | None = None,
    *,
    progress: bool = True,
    log: Callable[[dict[str, Any]], None] | None = None,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> TrainingOutcome:
    """Train a U-Net on ``data`` and return the best checkpoint.

    Parameters
    ----------
    data : TrainingData
        Raw fields and labels (weak CIP labels for CDL, curated masks for MDL).
    config : TrainingConfig, optional
        Hyper-parameters (paper defaults).
    progress : bool
        Show a tqdm progress bar with the loss and validation metrics.
    log : callable, optional
        Called with each epoch's :class:`EpochRecord` as a dict.
    init_state : mapping of str to Tensor, optional
        Initial weights (a ``state_dict`` of a U-Net with the architecture of ``config``) to
        fine-tune from instead of a random initialisation.

    Returns
    -------
    TrainingOutcome

    Raises
    ------
    TrainingError
        No fields; mismatched lists or shapes; fields smaller than the patch; labels outside
        {0, 1, 2, 255}; no object in any label; a non-finite loss (names epoch and step);
        ``init_state`` that does not fit the architecture.
    """
    cfg = config if config is not None else TrainingConfig()
    t_start = time.perf_counter()
    _validate_data(data, cfg)
    train_idx, val_idx = _split(len(data.images), cfg.val_fraction, cfg.seed)
    checksums = {
        name: {"image_sha256": _sha(img), "label_sha256": _sha(lab)}
        for name, img, lab in zip(data.names, data.images, data.labels, strict=True)
    }
    fields, labels = _prepared_fields(data, cfg)
    unet_config = UNetConfig(base_channels=cfg.base_channels)

    with _torch_state(cfg) as threads:
        loop = _TrainingLoop.start(cfg, unet_config, init_state)
        history, stopped_early = loop.run(
            fields, labels, data.truth, train_idx, val_idx, progress=progress, log=log
        )
        assert loop.best_state is not None
        loop.model.load_state_dict(loop.best_state)
        model = loop.model.cpu().eval()

    return TrainingOutcome(
        model=model,
        history=history,
        best_epoch=loop.best_epoch,
        training_time_s=time.perf_counter() - t_start,
        config=cfg,
        unet_config=unet_config,
        normalisation=cfg.normalisation,
        train_names=[data.names[i] for i in train_idx],
        val_names=[data.names[i] for i in val_idx],
        num_threads=threads,
        stopped_early=stopped_early,
        data_checksums=checksums,
    )


def _prepared_fields(
    data: TrainingData, cfg: TrainingConfig
) -> tuple[list[NDArray[np.float32]], list[NDArray[np.uint8]]]:
    """Normalised fields and (boundary-banded) uint8 labels, in the order of ``data``."""
    fields = []
    for name, img in zip(data.names, data.images, strict=True):
        try:
            fields.append(normalise(img, cfg.normalisation))
        except ValueError as exc:
            raise TrainingError(f"field {name}: {exc}") from exc
    labels = [
        ignore_boundary_band(np.asarray(lab, dtype=np.uint8), cfg.ignore_boundary_px)
        if cfg.ignore_boundary_px
        else np.asarray(lab, dtype=np.uint8)
        for lab in data.labels
    ]
    return fields, labels


@dataclass
class _TrainingLoop:
    """The model, optimiser and sampling state of one run, and its best checkpoint so far."""

    cfg: TrainingConfig
    model: UNet
    device: torch.device
    loss_fn: GeneralisedDiceLoss
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.StepLR
    rng: np.random.Generator
    steps: int
    best_state: dict[str, torch.Tensor] | None = None
    best_score: float = -math.inf
    best_epoch: int = 0
    since_best: int = 0

    @classmethod
    def start(
        cls,
        cfg: TrainingConfig,
        unet_config: UNetConfig,
        init_state: Mapping[str, torch.Tensor] | None,
    ) -> _TrainingLoop:
        """Seed torch, build the model (from ``init_state`` if given), loss and optimiser."""
        device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        model = UNet(unet_config).to(device)
        if init_state is not None:
            try:
                model.load_state_dict(dict(init_state), strict=True)
            except RuntimeError as exc:
                raise TrainingError(f"initial weights do not fit {unet_config!r}: {exc}") from exc
        loss_fn = GeneralisedDiceLoss(
            cfg.ce_weight, IGNORE_LABEL, absent_class_weight=cfg.absent_class_weight
        )
        optimiser = _make_optimiser(model, cfg)
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimiser, step_size=cfg.lr_drop_period, gamma=cfg.lr_drop_factor
        )
        rng = np.random.default_rng([cfg.seed, 1])
        steps = math.ceil(cfg.patches_per_epoch / cfg.batch_size)
        return cls(cfg, model, device, loss_fn, optimiser, scheduler, rng, steps)

    def run(
        self,
        fields: list[NDArray[np.float32]],
        labels: list[NDArray[np.uint8]],
        truth: list[NDArray[np.uint8]] | None,
        train_idx: list[int],
        val_idx: list[int],
        *,
        progress: bool,
        log: Callable[[dict[str, Any]], None] | None,
    ) -> tuple[list[EpochRecord], bool]:
        """Train epoch after epoch; returns the history and whether it stopped early."""
        cfg = self.cfg
        history: list[EpochRecord] = []
        total_steps = cfg.epochs * self.steps
        bar = tqdm(total=total_steps, disable=not progress, desc="train U-Net", unit="batch")
        try:
            for epoch in range(1, cfg.epochs + 1):
                lr = float(self.optimiser.param_groups[0]["lr"])
                t0 = time.perf_counter()
                train_loss = self._train_epoch(fields, labels, train_idx, epoch, lr, bar)
                t_train = time.perf_counter() - t0
                val = _validate_epoch(self.model, fields, labels, truth, val_idx, self.loss_fn, cfg)
                record = EpochRecord(
                    epoch=epoch,
                    learning_rate=lr,
                    train_loss=train_loss,
                    val_loss=val["loss"],
                    val_iou_weak=val["iou_weak"],
                    val_miou_weak=val["miou_weak"],
                    val_iou_truth=val["iou_truth"],
                    val_miou_truth=val["miou_truth"],
                    train_seconds=t_train,
                    val_seconds=time.perf_counter() - t0 - t_train,
                    patches_per_s=self.steps * cfg.batch_size / t_train,
                )
                history.append(record)
                bar.set_postfix(_postfix(record), refresh=True)
                if log is not None:
                    log(asdict(record))
                if self._keep_best(record, has_val=bool(val_idx)):
                    return history, True
        finally:
            bar.close()
        return history, False

    def _train_epoch(
        self,
        fields: list[NDArray[np.float32]],
        labels: list[NDArray[np.uint8]],
        train_idx: list[int],
        epoch: int,
        lr: float,
        bar: Any,
    ) -> float:
        """One epoch of ``steps`` batches, then a scheduler step; returns the mean loss."""
        self.model.train()
        total = 0.0
        for step in range(1, self.steps + 1):
            xb, yb = _sample_batch(fields, labels, train_idx, self.cfg, self.rng)
            x = torch.from_numpy(xb).to(self.device)
            y = torch.from_numpy(yb).to(self.device)
            loss = self.loss_fn(self.model(x), y)
            if not bool(torch.isfinite(loss)):
                raise TrainingError(
                    f"loss became {loss.item()} at epoch {epoch}, step {step} "
                    f"(learning rate {lr:g}); lower the learning rate or check the "
                    "input fields"
                )
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()
            self.optimiser.step()
            total += loss.item()
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{total / step:.4f}", refresh=False)
        self.scheduler.step()
        return total / self.steps

    def _keep_best(self, record: EpochRecord, *, has_val: bool) -> bool:
        """Keep the weights if ``record`` scores best so far; ``True`` when patience ran out."""
        score = _score(record, self.cfg.select_by, has_val=has_val)
        if score > self.best_score:
            self.best_score, self.best_epoch, self.since_best = score, record.epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return False
        self.since_best += 1
        patience = self.cfg.early_stopping_patience
        return patience is not None and self.since_best >= patience


def ignore_boundary_band(label: NDArray[np.uint8], width_px: int) -> NDArray[np.uint8]:
    """Mark a ring of background around every object as ignored (255).

    Parameters
    ----------
    label : (H, W) uint8 ndarray
        Mask with 0 background, 1/2 objects, 255 ignore.
    width_px : int
        Ring width in pixels (disk-shaped dilation radius); 0 returns a copy.

    Returns
    -------
    (H, W) uint8 ndarray
        Copy in which background pixels within ``width_px`` of an object are 255. Object
        pixels are kept, so even 2-px phagophores still count.
    """
    out = np.array(label, dtype=np.uint8, copy=True)
    if width_px <= 0:
        return out
    yy, xx = np.ogrid[-width_px : width_px + 1, -width_px : width_px + 1]
    disk = (yy * yy + xx * xx) <= width_px * width_px
    objects = np.isin(out, OBJECT_CLASSES)
    ring = ndimage.binary_dilation(objects, structure=disk) & (out == 0)
    out[ring] = IGNORE_LABEL
    return out


# ---------------------------------------------------------------------------- helpers


def _validate_data(data: TrainingData, cfg: TrainingConfig) -> None:
    n = len(data.images)
    if n == 0:
        raise TrainingError("no training fields: TrainingData.images is empty")
    if len(data.labels) != n or len(data.names) != n:
        raise TrainingError(
            f"TrainingData has {n} images, {len(data.labels)} labels and "
            f"{len(data.names)} names; they must match"
        )
    if data.truth is not None and len(data.truth) != n:
        raise TrainingError(f"TrainingData has {n} images but {len(data.truth)} truth masks")
    if len(set(data.names)) != n:
        raise TrainingError("TrainingData.names must be unique")
    allowed = np.array([0, 1, 2, IGNORE_LABEL])
    n_empty = 0
    for i, (name, img, lab) in enumerate(zip(data.names, data.images, data.labels, strict=True)):
        img_shape, lab_shape = np.shape(img), np.shape(lab)
        if len(img_shape) != 3 or img_shape[0] != 2:
            raise TrainingError(f"field {name}: image must be (2, H, W), got {img_shape}")
        if tuple(lab_shape) != tuple(img_shape[1:]):
            raise TrainingError(
                f"field {name}: image {img_shape} and label {lab_shape} differ in shape"
            )
        if min(lab_shape) < cfg.patch_size:
            raise TrainingError(
                f"field {name}: label {lab_shape} is smaller than patch_size {cfg.patch_size}"
            )
        if not np.issubdtype(np.asarray(lab).dtype, np.integer):
            raise TrainingError(f"field {name}: label dtype {np.asarray(lab).dtype} is not integer")
        values = np.unique(lab)
        if not np.isin(values, allowed).all():
            raise TrainingError(
                f"field {name}: label values {values.tolist()} outside {{0, 1, 2, 255}}"
            )
        if not np.isin(values, [1, 2]).any():
            n_empty += 1
        if data.truth is not None and np.shape(data.truth[i]) != tuple(lab_shape):
            raise TrainingError(
                f"field {name}: truth {np.shape(data.truth[i])} and label {lab_shape} differ"
            )
    if n_empty == n:
        raise TrainingError(f"CIP found no objects at all in {n} fields — nothing to learn")


def _split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    n_val = 0
    if val_fraction > 0 and n >= 2:
        n_val = min(n - 1, max(1, round(val_fraction * n)))
    perm = np.random.default_rng([seed, 0]).permutation(n)
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])


def _sample_batch(
    fields: list[NDArray[np.float32]],
    labels: list[NDArray[np.uint8]],
    train_idx: list[int],
    cfg: TrainingConfig,
    rng: np.random.Generator,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    p = cfg.patch_size
    xb = np.empty((cfg.batch_size, 2, p, p), dtype=np.float32)
    yb = np.empty((cfg.batch_size, p, p), dtype=np.int64)
    for b in range(cfg.batch_size):
        i = train_idx[int(rng.integers(len(train_idx)))]
        h, w = labels[i].shape
        y0, x0 = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
        img = fields[i][:, y0 : y0 + p, x0 : x0 + p]
        lab = labels[i][y0 : y0 + p, x0 : x0 + p]
        if cfg.augment:
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            img, lab = np.rot90(img, k, axes=(1, 2)), np.rot90(lab, k)
            if flip:
                img, lab = img[:, :, ::-1], lab[:, ::-1]
        xb[b] = img
        if cfg.intensity_augment is not None:
            xb[b] = _perturb_intensity(xb[b], cfg.intensity_augment, rng)
        yb[b] = lab
    return xb, yb


def _perturb_intensity(
    patch: NDArray[np.float32], aug: IntensityAugmentation, rng: np.random.Generator
) -> NDArray[np.float32]:
    """One random :class:`IntensityAugmentation` of a normalised ``(C, p, p)`` patch."""
    if rng.random() >= aug.probability:
        return patch
    n_ch = patch.shape[0]
    log_gain = rng.uniform(math.log(aug.gain[0]), math.log(aug.gain[1]))
    jitter = math.log1p(aug.channel_gain_jitter)
    gains = np.exp(log_gain + rng.uniform(-jitter, jitter, n_ch)).astype(np.float32)
    offsets = rng.normal(0.0, aug.offset_sd, n_ch).astype(np.float32) if aug.offset_sd else 0
    out = patch * gains[:, None, None] + np.asarray(offsets, np.float32).reshape(-1, 1, 1)
    gamma = math.exp(rng.uniform(math.log(aug.gamma[0]), math.log(aug.gamma[1])))
    if gamma != 1.0:
        out = np.sign(out) * np.abs(out) ** np.float32(gamma)
    sd = rng.uniform(aug.noise_sd[0], aug.noise_sd[1])
    if sd > 0:
        out = out + rng.normal(0.0, sd, out.shape).astype(np.float32)
    result: NDArray[np.float32] = out.astype(np.float32, copy=False)
    return result


def _validate_epoch(
    model: UNet,
    fields: list[NDArray[np.float32]],
    labels: list[NDArray[np.uint8]],
    truth: list[NDArray[np.uint8]] | None,
    val_idx: list[int],
    loss_fn: GeneralisedDiceLoss,
    cfg: TrainingConfig,
) -> dict[str, Any]:
    if not val_idx:
        return {"loss": None, "iou_weak": [], "miou_weak": None, "iou_truth": None,
                "miou_truth": None}  # fmt: skip
    backend = TorchBackend(model, device=cfg.device)
    conf_weak = np.zeros((_N_CLASSES, _N_CLASSES), dtype=np.int64)
    conf_truth = np.zeros((_N_CLASSES, _N_CLASSES), dtype=np.int64)
    losses = []
    for i in val_idx:
        logits = tiled_logits(fields[i], backend, batch_size=cfg.val_batch_size)
        with torch.no_grad():
            losses.append(
                float(
                    loss_fn(
                        torch.from_numpy(logits[None]),
                        torch.from_numpy(labels[i][None].astype(np.int64)),
                    )
                )
            )
        pred = np.argmax(logits, axis=0)
        conf_weak += _confusion(labels[i], pred)
        if truth is not None:
            conf_truth += _confusion(np.asarray(truth[i]), pred)
    iou_weak = _iou(conf_weak)
    iou_truth = _iou(conf_truth) if truth is not None else None
    return {
        "loss": float(np.mean(losses)),
        "iou_weak": iou_weak,
        "miou_weak": _mean(iou_weak),
        "iou_truth": iou_truth,
        "miou_truth": _mean(iou_truth) if iou_truth is not None else None,
    }


def _confusion(target: NDArray[Any], pred: NDArray[Any]) -> NDArray[np.int64]:
    """Rows: target class, columns: predicted class; target pixels outside [0, 3) are skipped."""
    return confusion_matrix_ignoring(target, pred, _N_CLASSES)


def _iou(conf: NDArray[np.int64]) -> list[float | None]:
    """Per-class IoU, ``None`` for a class neither in the target nor predicted."""
    return [None if math.isnan(v) else float(v) for v in class_iou(conf)]


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _score(record: EpochRecord, select_by: str, *, has_val: bool) -> float:
    if not has_val or record.val_loss is None:
        return -record.train_loss
    if select_by == "val_miou":
        return record.val_miou_weak if record.val_miou_weak is not None else -math.inf
    return -record.val_loss


def _postfix(record: EpochRecord) -> dict[str, str]:
    out = {"epoch": str(record.epoch), "loss": f"{record.train_loss:.4f}"}
    if record.val_loss is not None:
        out["val_loss"] = f"{record.val_loss:.4f}"
    if record.val_miou_weak is not None:
        out["val_mIoU"] = f"{record.val_miou_weak:.3f}"
    if record.val_miou_truth is not None:
        out["val_mIoU_truth"] = f"{record.val_miou_truth:.3f}"
    return out


def _make_optimiser(model: UNet, cfg: TrainingConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.learning_rate,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )


@contextlib.contextmanager
def _torch_state(cfg: TrainingConfig) -> Iterator[int]:
    """Fork torch's RNG, fix threads and deterministic algorithms; restore all afterwards."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    devices = [torch.device(cfg.device).index or 0] if cfg.device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        try:
            if cfg.num_threads is not None:
                torch.set_num_threads(cfg.num_threads)
            torch.use_deterministic_algorithms(True, warn_only=True)
            yield torch.get_num_threads()
        finally:
            torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
            torch.set_num_threads(prev_threads)


def _sha(array: NDArray[Any]) -> str:
    arr = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()
