"""The CDL recipe: the one place where "U-Net trained on CIP weak labels" is defined.

Used by ``scripts/experiment.py`` (the paper's CIP-vs-CDL experiment on simulated plates) and
``scripts/make_default_model.py`` (the packaged default model), so the experiment measures
exactly what is shipped.

Pieces
------
- :func:`simulate_plate_fields` — a simulated plate *in memory*, field for field identical to
  what :func:`phagoflow.core.simulate.simulate_plate` writes (same well layout, well levels and
  per-field ``SeedSequence([seed, 1, row, col, field])``), without the TIFF round trip (a
  uint16 TIFF read back as float32 gives the same numbers).
- :func:`cip_weak_labels` — the weak labels: :func:`phagoflow.core.cip.segment_cip` on the raw
  float32 field with the default :class:`~phagoflow.core.cip.CipParameters`, exactly what
  ``phagoflow train --labels cip`` / the CIP segmenter computes. The truth is never used for
  training or model selection.
- :class:`Recipe` — every knob of the CDL training (frozen; recorded in the model card).
- :func:`train_cdl` — train (optionally an ensemble, optionally self-training rounds) and return
  a :class:`CdlModel` that predicts masks.
- :func:`score` — CIP or CDL masks against the truth: the paper's metrics plus per-well counts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage as ndi

from phagoflow.core.cip import CipParameters, segment_cip
from phagoflow.core.evaluation import evaluate_masks
from phagoflow.core.inference import TorchBackend, softmax, tiled_logits
from phagoflow.core.normalisation import NormalisationConfig, normalise
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.simulate import (
    SimulationParameters,
    plate_layout,
    simulate_field,
    well_level,
)
from phagoflow.core.training import (
    IntensityAugmentation,
    TrainingConfig,
    TrainingData,
    TrainingOutcome,
    train_unet,
)
from phagoflow.core.unet import UNet

_FIELD_TAG = 1  # simulate_plate's SeedSequence domain tag for fields (documented there)
_EIGHT = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class PlateField:
    """One simulated field with its truth (truth is for scoring only)."""

    key: FieldKey
    image: NDArray[np.float32]  # (2, H, W) camera counts [DsRed, pHluorin]
    truth: NDArray[np.uint8]  # (H, W)
    phagophores: int
    autolysosomes: int

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def well(self) -> str:
        return self.key.well


def simulate_plate_fields(
    params: SimulationParameters,
    *,
    seed: int,
    wells: int,
    fields: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[PlateField]:
    """Simulate a plate in memory, identical field for field to ``simulate_plate``."""
    out: list[PlateField] = []
    layout = plate_layout(wells)
    total = len(layout) * fields
    for r, c in layout:
        level = well_level(params, seed, r, c)
        for f in range(1, fields + 1):
            key = FieldKey(r, c, f)
            rng = np.random.default_rng(np.random.SeedSequence([seed, _FIELD_TAG, r, c, f]))
            sim = simulate_field(params, rng=rng, well_level=level)
            out.append(
                PlateField(
                    key=key,
                    image=sim.image.astype(np.float32),
                    truth=sim.truth,
                    phagophores=sim.phagophores,
                    autolysosomes=sim.autolysosomes,
                )
            )
            if progress is not None:
                progress(len(out), total)
    return out


def cip_weak_labels(
    fields: Sequence[PlateField],
    pixel_size_um: float,
    cip_params: CipParameters | None = None,
) -> list[NDArray[np.uint8]]:
    """CIP masks of the raw fields (the weak labels; no truth involved)."""
    params = cip_params if cip_params is not None else CipParameters()
    return [
        np.asarray(segment_cip(f.image, pixel_size_um, params=params).mask, dtype=np.uint8)
        for f in fields
    ]


# --------------------------------------------------------------------------- recipe


class Recipe(BaseModel):
    """Every knob of CDL training and prediction (frozen, JSON-serialisable).

    The training fields map one-to-one onto :class:`phagoflow.core.training.TrainingConfig`;
    the rest is what this module adds around :func:`~phagoflow.core.training.train_unet`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- training (TrainingConfig) --
    base_channels: int = 8
    epochs: int = 12
    patches_per_epoch: int = 256
    patch_size: int = 256
    batch_size: int = 4
    optimizer: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = 2e-3
    momentum: float = 0.95
    weight_decay: float = 1e-3
    lr_drop_factor: float = 0.8
    lr_drop_period: int = 3
    ce_weight: float = 0.5
    ignore_boundary_px: int = 0
    absent_class_weight: Literal["max", "zero"] = "max"
    select_by: Literal["val_loss", "val_miou"] = "val_loss"
    val_fraction: float = 0.10
    normalisation: NormalisationConfig = Field(default_factory=NormalisationConfig)
    intensity_augment: bool = False
    # -- weak-label targets (applied by weak_targets before training) --
    ignore_inner_px: tuple[int, int] = (0, 0)
    ignore_outer_px: tuple[int, int] = (0, 0)
    # -- around training --
    ensemble: int = Field(default=1, ge=1)
    self_training_rounds: int = Field(default=0, ge=0)
    self_training_target: Literal["student", "agree", "union"] = "student"
    # -- prediction --
    tta: bool = False

    def training_config(self, seed: int, *, threads: int | None) -> TrainingConfig:
        """The :class:`TrainingConfig` of one network of this recipe."""
        return TrainingConfig(
            base_channels=self.base_channels,
            epochs=self.epochs,
            patches_per_epoch=self.patches_per_epoch,
            patch_size=self.patch_size,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            learning_rate=self.learning_rate,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            lr_drop_factor=self.lr_drop_factor,
            lr_drop_period=self.lr_drop_period,
            ce_weight=self.ce_weight,
            ignore_boundary_px=self.ignore_boundary_px,
            absent_class_weight=self.absent_class_weight,
            select_by=self.select_by,
            val_fraction=self.val_fraction,
            normalisation=self.normalisation,
            intensity_augment=IntensityAugmentation() if self.intensity_augment else None,
            seed=seed,
            num_threads=threads,
        )

    @property
    def networks(self) -> int:
        """Networks trained in total (ensemble × (1 + self-training rounds))."""
        return self.ensemble * (1 + self.self_training_rounds)


#: The recipe the experiment and ``make model`` use (see docs/experiment.md for the evidence).
DEFAULT_RECIPE = Recipe()


def recipe_with(base: Recipe, overrides: dict[str, Any]) -> Recipe:
    """A copy of ``base`` with ``overrides`` validated (``key=value`` from the command line)."""
    return Recipe.model_validate({**base.model_dump(), **overrides})


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["ce_weight=0.5", "tta=true"]`` → ``{"ce_weight": "0.5", "tta": "true"}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _disk(radius: int) -> NDArray[np.bool_]:
    yy, xx = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return np.asarray((yy * yy + xx * xx) <= radius * radius)


def weak_targets(label: NDArray[np.uint8], recipe: Recipe) -> NDArray[np.uint8]:
    """Training targets from a weak label: uncertain bands around outlines become 255.

    ``ignore_inner_px[c-1]``: object pixels of class ``c`` within that many pixels of the
    object's outline are ignored, except each object's innermost pixels (its distance-transform
    maximum), so every object keeps a core. ``ignore_outer_px[c-1]``: background within that
    many pixels of a class-``c`` object is ignored.
    """
    out = np.array(label, dtype=np.uint8, copy=True)
    for c in (1, 2):
        k_in, k_out = recipe.ignore_inner_px[c - 1], recipe.ignore_outer_px[c - 1]
        obj = label == c
        if k_out > 0:
            ring = ndi.binary_dilation(obj, structure=_disk(k_out)) & (label == 0)
            out[ring] = 255
        if k_in > 0 and obj.any():
            dist = ndi.distance_transform_edt(obj)
            lab, n = ndi.label(obj, structure=_EIGHT)
            peak = ndi.maximum(dist, lab, index=np.arange(1, n + 1))
            peak_img = np.concatenate([[0.0], np.asarray(peak)])[lab]
            band = obj & (dist <= k_in) & (dist < peak_img)
            out[band] = 255
    return out


# --------------------------------------------------------------------------- model


@dataclass
class CdlModel:
    """Trained CDL network(s) and how to predict with them."""

    networks: list[UNet]
    normalisation: NormalisationConfig
    tta: bool
    outcomes: list[TrainingOutcome] = field(default_factory=list)
    threads: int | None = None

    def proba(self, image: NDArray[np.float32]) -> NDArray[np.float32]:
        """Class probabilities ``(3, H, W)`` averaged over networks (and flips with TTA)."""
        x = normalise(image, self.normalisation)
        acc: NDArray[np.float32] | None = None
        n = 0
        flips = (
            [(False, False), (True, False), (False, True), (True, True)]
            if self.tta
            else [(False, False)]
        )
        for net in self.networks:
            backend = TorchBackend(net, threads=self.threads)
            for fy, fx in flips:
                xi = x
                if fy:
                    xi = xi[:, ::-1, :]
                if fx:
                    xi = xi[:, :, ::-1]
                p = softmax(tiled_logits(np.ascontiguousarray(xi), backend), axis=0)
                if fy:
                    p = p[:, ::-1, :]
                if fx:
                    p = p[:, :, ::-1]
                acc = p.copy() if acc is None else acc + p
                n += 1
        assert acc is not None
        out: NDArray[np.float32] = acc / np.float32(n)
        return out

    def predict(self, image: NDArray[np.float32]) -> NDArray[np.uint8]:
        """Class mask ``(H, W)`` uint8."""
        return np.argmax(self.proba(image), axis=0).astype(np.uint8)


def _self_training_targets(
    proba: NDArray[np.float32], weak: NDArray[np.uint8], how: str
) -> NDArray[np.uint8]:
    pred = np.argmax(proba, axis=0).astype(np.uint8)
    if how == "student":
        return pred
    if how == "agree":  # keep pixels where teacher and student agree, ignore the rest
        out = pred.copy()
        out[pred != weak] = 255
        return out
    if how == "union":  # objects of either; student class wins where both have one
        out = weak.copy()
        obj = pred > 0
        out[obj] = pred[obj]
        return out
    raise ValueError(f"unknown self_training_target {how!r}")


def train_cdl(
    images: Sequence[NDArray[np.float32]],
    weak_labels: Sequence[NDArray[np.uint8]],
    names: Sequence[str],
    recipe: Recipe,
    *,
    seed: int,
    threads: int | None = 2,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> CdlModel:
    """Train the recipe's network(s) on weak labels only.

    Seeds: ensemble member ``k`` of round ``r`` uses ``seed * 1000 + 100 * r + k``.
    """
    targets = [weak_targets(np.asarray(w, dtype=np.uint8), recipe) for w in weak_labels]
    model: CdlModel | None = None
    for rnd in range(recipe.self_training_rounds + 1):
        nets: list[UNet] = []
        outcomes: list[TrainingOutcome] = []
        for k in range(recipe.ensemble):
            net_seed = seed * 1000 + 100 * rnd + k
            t0 = time.perf_counter()

            def _epoch(rec: dict[str, Any], rnd: int = rnd, k: int = k) -> None:
                if not progress:
                    val = rec["val_miou_weak"]
                    log(
                        f"      r{rnd} n{k} epoch {rec['epoch']:2d}: loss {rec['train_loss']:.4f}"
                        f", val loss {rec['val_loss'] or float('nan'):.4f}, val mIoU(weak) "
                        f"{val if val is not None else float('nan'):.3f}, "
                        f"{rec['patches_per_s']:.1f} patches/s"
                    )

            out = train_unet(
                TrainingData(list(images), targets, list(names)),
                recipe.training_config(net_seed, threads=threads),
                progress=progress,
                log=_epoch,
            )
            log(
                f"    round {rnd} net {k}: seed {net_seed}, best epoch {out.best_epoch}/"
                f"{len(out.history)}, {time.perf_counter() - t0:.0f} s"
            )
            nets.append(out.model)
            outcomes.append(out)
        prev = model.outcomes if model is not None else []
        model = CdlModel(nets, recipe.normalisation, recipe.tta, prev + outcomes, threads)
        if rnd < recipe.self_training_rounds:
            targets = [
                _self_training_targets(model.proba(img), w, recipe.self_training_target)
                for img, w in zip(images, weak_labels, strict=True)
            ]
    assert model is not None
    return model


# --------------------------------------------------------------------------- scoring


def count_objects(mask: NDArray[Any]) -> tuple[int, int]:
    """Phagophores and autolysosomes of a mask: 8-connected components per class.

    Same definition as :func:`phagoflow.core.counting.measure_objects` without instance labels.
    """
    return (
        int(ndi.label(mask == 1, structure=_EIGHT)[1]),
        int(ndi.label(mask == 2, structure=_EIGHT)[1]),
    )


def score(fields: Sequence[PlateField], masks: Sequence[NDArray[Any]]) -> dict[str, float]:
    """The experiment's metrics of ``masks`` against the fields' truth."""
    res = evaluate_masks((f.truth, m) for f, m in zip(fields, masks, strict=True))
    iou = res.per_class["iou"]
    boxes_p, boxes_a = res.boxes["phagophore"], res.boxes["autolysosome"]
    true_w: dict[str, list[int]] = {}
    pred_w: dict[str, list[int]] = {}
    for f, m in zip(fields, masks, strict=True):
        t = true_w.setdefault(f.well, [0, 0])
        p = pred_w.setdefault(f.well, [0, 0])
        t[0] += f.phagophores
        t[1] += f.autolysosomes
        cp, ca = count_objects(m)
        p[0] += cp
        p[1] += ca
    wells = sorted(true_w)
    t_arr = np.array([true_w[w] for w in wells], dtype=np.float64)
    p_arr = np.array([pred_w[w] for w in wells], dtype=np.float64)
    mae = np.abs(p_arr - t_arr).mean(axis=0)
    mre = (np.abs(p_arr - t_arr) / np.maximum(t_arr, 1)).mean(axis=0)
    return {
        "miou": float(res.aggregate["iou"]["mean"]),
        "fg_miou": float((iou[1] + iou[2]) / 2),
        "iou_bg": float(iou[0]),
        "iou_phagophore": float(iou[1]),
        "iou_autolysosome": float(iou[2]),
        "bf": float(res.aggregate["bf"]["mean"]),
        "f1_phagophore": float(boxes_p.f1),
        "f1_autolysosome": float(boxes_a.f1),
        "f1": float((boxes_p + boxes_a).f1),
        "precision_phagophore": float(boxes_p.precision),
        "recall_phagophore": float(boxes_p.recall),
        "precision_autolysosome": float(boxes_a.precision),
        "recall_autolysosome": float(boxes_a.recall),
        "count_mae_phagophore": float(mae[0]),
        "count_mae_autolysosome": float(mae[1]),
        "count_mae": float(mae.mean()),
        "count_mre_phagophore": float(mre[0]),
        "count_mre_autolysosome": float(mre[1]),
        "n_fields": float(len(fields)),
        "n_wells": float(len(wells)),
    }


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample s.d. (0 for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), sd if math.isfinite(sd) else 0.0
