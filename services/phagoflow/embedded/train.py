"""``phagoflow train``: plate exports + labels in, a versioned U-Net model folder out.

:func:`train_model` reads every field of one or more plate exports with its label mask
(:func:`phagoflow.embedded.weak_labels.iter_fields`), trains the U-Net with
:func:`phagoflow.core.training.train_unet` and writes the model folder with
:func:`phagoflow.core.model_dir.save_model_dir`::

    MODEL_DIR/model.pt     torch state_dict
    MODEL_DIR/model.onnx   the same network for ONNX Runtime / Triton
    MODEL_DIR/card.json    architecture, normalisation, checksums, software versions and the
                           training record (see below)

Labels:

* ``labels="cip"`` (CDL, the default): CIP weak labels for every field, cached on disk by
  (index checksum, CIP fingerprint, field) — no human label at all;
* ``labels=<folder>`` (MDL): masks ``rRRcCCfFFpPP.tiff`` (uint8, 0/1/2) — e.g. expert-curated
  masks; a sub-folder named after the plate id is searched first, fields without a mask are
  skipped.

``truth`` (optional, same layout) holds true masks used **only** to report validation IoU against
the truth per epoch; it never influences training or checkpoint selection. ``init`` fine-tunes
from an existing model folder (its architecture and normalisation are kept).

The card's ``training`` section holds :meth:`~phagoflow.core.training.TrainingOutcome.card_extra`
(parameters, seed, metrics per epoch, split, ``data_checksums``: per-field image and label
sha256 keyed ``PLATE/rRRcCCfFFpPP``, training time) plus ``data``: the label source (and CIP
parameters and fingerprint), every export with its plate id, format, index sha256 and number of
fields used (and held out, ``fields_holdout``), ``n_holdout``, ``holdout_fraction``,
``fields_digest`` (sha256 of ``data_checksums`` as sorted-key JSON: one value that
changes whenever any training field or label does), the truth folder, the model fine-tuned from
(``init``: folder, name, version, checksums) and the time spent reading fields and making labels.
Package versions are in the card's ``software`` section.

Held-out fields (``holdout``, MDL "Part B"): a fraction of the labelled fields is kept out of
training *and* validation (:func:`select_holdout`: drawn with the training seed, round-robin over
wells) and listed in the card as ``training.split.holdout`` (``PLATE/rRRcCCfFFpPP``, like
``split.train`` and ``split.val``), so that ``phagoflow evaluate --held-out-by MODEL_DIR`` scores
methods on exactly the curated fields the model never saw.

Every refusal raises :class:`~phagoflow.core.training.TrainingError`,
:class:`~phagoflow.core.model_dir.ModelDirError`,
:class:`~phagoflow.core.opera.catalogue.PlateFormatError` or another ``ValueError`` with a message
naming the problem; the CLI prints it and exits 1. The output folder is checked *before* the
(possibly long) training starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phagoflow.core.cip import CipParameters
from phagoflow.core.classes import OBJECT_CLASSES
from phagoflow.core.model_dir import (
    CARD_FILE,
    ONNX_FILE,
    TORCH_FILE,
    ModelCard,
    load_model_dir,
    save_model_dir,
)
from phagoflow.core.opera import PlateCatalogue, RoleOverrides, read_plate
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.segmenters import CipSegmenter
from phagoflow.core.training import (
    TrainingConfig,
    TrainingData,
    TrainingError,
    TrainingOutcome,
    train_unet,
)
from phagoflow.core.unet import UNetConfig
from phagoflow.embedded.weak_labels import iter_fields, load_masks_dir, read_mask

__all__ = ["TrainResult", "check_output_dir", "select_holdout", "train_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_model` produced.

    Attributes
    ----------
    model_dir : Path
        The model folder written.
    card : ModelCard
        Its ``card.json``.
    n_fields : int
        Fields trained and validated on (all exports).
    best_epoch : int
        1-based epoch kept.
    training_time_s : float
        Wall time of :func:`~phagoflow.core.training.train_unet`, seconds.
    labels_time_s : float
        Wall time spent reading fields and making or reading labels, seconds.
    holdout : list of str
        Fields kept out of training and validation (``PLATE/rRRcCCfFFpPP``).
    """

    model_dir: Path
    card: ModelCard
    n_fields: int
    best_epoch: int
    training_time_s: float
    labels_time_s: float
    holdout: list[str] = field(default_factory=list)


def check_output_dir(path: Path, *, overwrite: bool = False) -> None:
    """Refuse early an output folder that cannot receive a model.

    Raises
    ------
    ValueError
        ``path`` is an existing file, already holds a model (unless ``overwrite``), or cannot be
        created or written to.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} exists and is not a folder")
    existing = [f for f in (TORCH_FILE, ONNX_FILE, CARD_FILE) if (path / f).exists()]
    if existing and not overwrite:
        raise ValueError(
            f"{path} already holds a model ({', '.join(existing)}); choose another folder or "
            "pass --overwrite"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"cannot write a model to {path}: {exc}") from exc


def select_holdout(names: Sequence[str], fraction: float, seed: int) -> list[str]:
    """Choose the fields kept out of training and validation, spread over wells.

    ``max(1, round(fraction * n))`` of the ``n`` fields are taken (none when ``fraction`` is 0):
    the fields are shuffled with ``seed``, grouped by plate and well (in the order their first
    field comes up), then taken round-robin over the wells — one field of every well before a
    second of any well.

    Parameters
    ----------
    names : sequence of str
        Field names ``PLATE/rRRcCCfFFpPP`` (the names of the card's ``split``); a name whose
        last part is not a field name counts as a well of its own.
    fraction : float
        Fraction of the fields to hold out, in [0, 1).
    seed : int
        The training seed (:attr:`~phagoflow.core.training.TrainingConfig.seed`); the draw uses
        its own stream, independent of the train/validation split.

    Returns
    -------
    list of str
        The held-out names, in the order of ``names``.

    Raises
    ------
    TrainingError
        ``fraction`` outside [0, 1), duplicate names, or a hold-out that would leave no field to
        train on (a single field, or a fraction that rounds to every field).
    """
    if not 0 <= fraction < 1:
        raise TrainingError(f"holdout must be in [0, 1), got {fraction}")
    n = len(names)
    if len(set(names)) != n:
        raise TrainingError("field names must be unique to choose held-out fields")
    if fraction == 0 or n == 0:
        return []
    n_hold = max(1, round(fraction * n))
    if n_hold >= n:
        raise TrainingError(
            f"holdout {fraction:g} of {n} labelled field(s) would hold out {n_hold}, leaving no "
            "field to train on; label more fields or lower --holdout"
        )
    by_well: dict[str, list[int]] = {}
    for i in np.random.default_rng([seed, 2]).permutation(n):
        by_well.setdefault(_well_of(names[int(i)]), []).append(int(i))
    depth = max(len(ws) for ws in by_well.values())
    spread = [ws[k] for k in range(depth) for ws in by_well.values() if k < len(ws)]
    return [names[i] for i in sorted(spread[:n_hold])]


def _well_of(name: str) -> str:
    """``PLATE/rRRcCC`` of ``PLATE/rRRcCCfFFpPP`` (the name itself if it is no field name)."""
    plate, _, fname = name.rpartition("/")
    try:
        return f"{plate}/{FieldKey.parse(fname).well}"
    except ValueError:
        return name


def _truth_masks(truth: Path, plate_id: str) -> dict[str, Path]:
    root = truth / plate_id if (truth / plate_id).is_dir() else truth
    return load_masks_dir(root)


def _config_for_init(config: TrainingConfig, card: ModelCard, init: Path) -> TrainingConfig:
    """Take the architecture width and normalisation of the model fine-tuned from."""
    arch = card.architecture
    if arch != UNetConfig(base_channels=arch.base_channels):
        raise TrainingError(
            f"{init}: cannot fine-tune a U-Net of architecture {arch!r}; training builds "
            "in_channels=2, n_classes=3, depth=3"
        )
    explicit = config.model_fields_set
    if "base_channels" in explicit and config.base_channels != arch.base_channels:
        raise TrainingError(
            f"--base-channels {config.base_channels} differs from the model in {init} "
            f"({arch.base_channels}); leave it out to fine-tune"
        )
    if "normalisation" in explicit and config.normalisation != card.normalisation:
        raise TrainingError(
            f"the normalisation differs from the model in {init}; leave it out to fine-tune"
        )
    return config.model_copy(
        update={"base_channels": arch.base_channels, "normalisation": card.normalisation}
    )


def train_model(
    exports: Sequence[Path],
    out: Path,
    *,
    labels: str | Path = "cip",
    config: TrainingConfig | None = None,
    truth: Path | None = None,
    init: Path | None = None,
    cip_params: CipParameters | None = None,
    cache_dir: Path | None = None,
    overwrite: bool = False,
    name: str = "phagoflow-unet",
    progress: bool = True,
    holdout: float = 0.0,
    channel_roles: RoleOverrides | None = None,
) -> TrainResult:
    """Train a U-Net on the fields of ``exports`` and write a model folder to ``out``.

    Parameters
    ----------
    exports : sequence of Path
        Plate exports (anything :func:`phagoflow.core.opera.read_plate` accepts).
    out : Path
        Model folder to write (``model.pt``, ``model.onnx``, ``card.json``).
    labels : 'cip' or Path
        ``"cip"``: CIP weak labels (CDL); a folder: masks ``rRRcCCfFFpPP.tiff`` (MDL).
    config : TrainingConfig, optional
        Hyper-parameters (paper defaults).
    truth : Path, optional
        Folder of true masks (or one sub-folder per plate id), for validation reporting only.
        Every field trained on must have one, else truth reporting is switched off (warning).
    init : Path, optional
        Model folder to fine-tune from; its width and normalisation are used.
    cip_params : CipParameters, optional
        Parameters of the CIP that makes the weak labels (``labels="cip"``).
    cache_dir : Path, optional
        Weak-label cache (default ``$PHAGOFLOW_CACHE_DIR`` or ``~/.cache/phagoflow``).
    overwrite : bool
        Replace a model already in ``out``.
    name : str
        Model name in the card.
    progress : bool
        Progress bars (labels, training).
    holdout : float
        Fraction of the labelled fields (all exports together) kept out of training and
        validation (:func:`select_holdout` with ``config.seed``); recorded in the card as
        ``training.split.holdout``. 0 (default) holds out none.
    channel_roles : mapping, optional
        Channel-role override (``--channel-role``): channel name or id → ``"dsred"``,
        ``"phluorin"``, ``"both"`` or ``"none"`` (see :mod:`phagoflow.core.opera.roles`).

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingError
        No fields, no object in any label, a non-finite loss, initial weights that do not fit,
        ``holdout`` outside [0, 1) or leaving no field to train on.
    ModelDirError
        ``init`` is not a valid model folder (no card.json, checksum mismatch, ...).
    PlateFormatError
        An export cannot be read.
    ValueError
        ``out`` cannot receive a model; a label or truth mask of the wrong shape, dtype or values
        (the message names the file); a label or truth folder that does not exist.
    """
    if not exports:
        raise TrainingError("no plate export given")
    cfg = config if config is not None else TrainingConfig()
    if not 0 <= holdout < 1:
        raise TrainingError(f"--holdout must be in [0, 1), got {holdout}")
    out = Path(out)
    check_output_dir(out, overwrite=overwrite)
    cfg, init_state, init_record = _load_init(cfg, init)
    _check_label_sources(labels, truth)
    cip = CipSegmenter(cip_params) if labels == "cip" else None

    data, held = _training_fields(
        exports,
        labels=labels,
        truth=truth,
        holdout=holdout,
        seed=cfg.seed,
        cip_params=cip_params,
        cache_dir=cache_dir,
        progress=progress,
        channel_roles=channel_roles,
    )
    labels_source = "cip" if labels == "cip" else str(Path(labels).resolve())
    outcome, truth_used = _fit(data, truth, labels_source, cfg, init_state, progress=progress)
    extra = _card_extra(
        outcome,
        data,
        held,
        labels_source=labels_source,
        cip=cip,
        holdout=holdout,
        truth=truth,
        truth_used=truth_used,
        init_record=init_record,
    )
    card = _write_model(out, outcome, extra, name=name, overwrite=overwrite)
    return TrainResult(
        model_dir=out,
        card=card,
        n_fields=len(data.names),
        best_epoch=outcome.best_epoch,
        training_time_s=outcome.training_time_s,
        labels_time_s=data.seconds,
        holdout=held,
    )


def _fit(
    data: _Fields,
    truth: Path | None,
    labels_source: str,
    cfg: TrainingConfig,
    init_state: dict[str, Any] | None,
    *,
    progress: bool,
) -> tuple[TrainingOutcome, bool]:
    """Train on ``data``; return the outcome and whether truth masks were reported on."""
    truth_list = _complete_truth(data, truth)
    logger.info(
        "training on %d fields of %d plate(s) (labels: %s; %.1f s to read and label)",
        len(data.names),
        len(data.exports),
        labels_source,
        data.seconds,
    )
    outcome = train_unet(
        TrainingData(images=data.images, labels=data.masks, names=data.names, truth=truth_list),
        cfg,
        progress=progress,
        log=_log_epoch,
        init_state=init_state,
    )
    return outcome, truth_list is not None


def _training_fields(
    exports: Sequence[Path],
    *,
    labels: str | Path,
    truth: Path | None,
    holdout: float,
    seed: int,
    cip_params: CipParameters | None,
    cache_dir: Path | None,
    progress: bool,
    channel_roles: RoleOverrides | None,
) -> tuple[_Fields, list[str]]:
    """The fields to train and validate on, and the held-out ones (:func:`select_holdout`)."""
    data = _read_exports(
        exports,
        labels=labels,
        truth=truth,
        cip_params=cip_params,
        cache_dir=cache_dir,
        progress=progress,
        channel_roles=channel_roles,
    )
    if not data.names:
        where = "CIP labels" if labels == "cip" else f"a mask in {labels} matching a field name"
        raise TrainingError(
            f"no training fields: no readable field with {where} in "
            f"{', '.join(str(e) for e in exports)}"
        )
    held = select_holdout(data.names, holdout, seed)
    if held:
        data.drop(held)
        logger.info(
            "holding out %d of %d labelled field(s) from training and validation (--holdout "
            "%g, seed %d): %s",
            len(held),
            len(held) + len(data.names),
            holdout,
            seed,
            ", ".join(held),
        )
    if not any(bool(np.isin(m, OBJECT_CLASSES).any()) for m in data.masks):
        source = "CIP found" if labels == "cip" else f"the masks in {labels} hold"
        raise TrainingError(
            f"{source} no objects at all in {len(data.names)} fields — nothing to learn"
        )
    return data, held


def _card_extra(
    outcome: TrainingOutcome,
    data: _Fields,
    held: list[str],
    *,
    labels_source: str,
    cip: CipSegmenter | None,
    holdout: float,
    truth: Path | None,
    truth_used: bool,
    init_record: dict[str, Any] | None,
) -> dict[str, Any]:
    """The card's ``training`` section: the outcome's record plus ``split.holdout`` and ``data``."""
    extra = outcome.card_extra()
    extra["split"]["holdout"] = held
    extra["pixel_size_um"] = _training_pixel_size(data.exports)
    extra["data"] = {
        "labels": labels_source,
        "cip_parameters": cip.params.model_dump(mode="json") if cip is not None else None,
        "cip_fingerprint": cip.fingerprint if cip is not None else None,
        "exports": data.exports,
        "n_fields": len(data.names),
        "holdout_fraction": holdout,
        "n_holdout": len(held),
        "fields_digest": _fields_digest(outcome.data_checksums),
        "truth": str(Path(truth).resolve()) if truth is not None else None,
        "truth_used": truth_used,
        "init": init_record,
        "labels_time_s": round(data.seconds, 3),
    }
    return extra


def _write_model(
    out: Path, outcome: TrainingOutcome, extra: dict[str, Any], *, name: str, overwrite: bool
) -> ModelCard:
    """Write the model folder and log what was written."""
    card = save_model_dir(
        out,
        outcome.model,
        outcome.unet_config,
        outcome.normalisation,
        extra,
        name=name,
        overwrite=overwrite,
    )
    logger.info(
        "model %s %s written to %s (best epoch %d, %.1f s training)",
        card.name,
        card.version,
        out,
        outcome.best_epoch,
        outcome.training_time_s,
    )
    return card


@dataclass
class _Fields:
    """The labelled fields read from the exports (parallel lists) and one record per export."""

    images: list[NDArray[np.float32]] = field(default_factory=list)
    masks: list[NDArray[np.uint8]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    truth: list[NDArray[np.uint8] | None] = field(default_factory=list)
    exports: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def drop(self, held: Sequence[str]) -> None:
        """Remove the ``held`` fields and count them per export as ``fields_holdout``."""
        held_set = set(held)
        keep = [i for i, n in enumerate(self.names) if n not in held_set]
        self.images = [self.images[i] for i in keep]
        self.masks = [self.masks[i] for i in keep]
        self.truth = [self.truth[i] for i in keep] if self.truth else []
        self.names = [self.names[i] for i in keep]
        for rec in self.exports:
            n_held = sum(h.startswith(f"{rec['plate_id']}/") for h in held)
            rec["fields"] -= n_held
            rec["fields_holdout"] = n_held


def _load_init(
    cfg: TrainingConfig, init: Path | None
) -> tuple[TrainingConfig, dict[str, Any] | None, dict[str, Any] | None]:
    """The config adapted to the model fine-tuned from, its weights and its card record."""
    if init is None:
        return cfg, None, None
    init_model, init_card = load_model_dir(Path(init))
    cfg = _config_for_init(cfg, init_card, Path(init))
    record = {
        "model_dir": str(Path(init).resolve()),
        "name": init_card.name,
        "version": init_card.version,
        "checksums": dict(init_card.checksums),
    }
    return cfg, init_model.state_dict(), record


def _check_label_sources(labels: str | Path, truth: Path | None) -> None:
    """Refuse a label or truth folder that does not exist (before any field is read)."""
    if labels != "cip" and not Path(labels).is_dir():
        raise ValueError(f"label folder {labels} does not exist (pass --labels cip or a folder)")
    if truth is not None and not Path(truth).is_dir():
        raise ValueError(f"truth folder {truth} does not exist")


def _read_exports(
    exports: Sequence[Path],
    *,
    labels: str | Path,
    truth: Path | None,
    cip_params: CipParameters | None,
    cache_dir: Path | None,
    progress: bool,
    channel_roles: RoleOverrides | None,
) -> _Fields:
    """Every labelled field of ``exports`` (with its truth mask when ``truth`` is given)."""
    t0 = time.perf_counter()
    data = _Fields()
    seen: set[str] = set()
    for export in exports:
        cat = read_plate(export, channel_roles=channel_roles)
        truth_paths = _truth_masks(Path(truth), cat.plate_id) if truth is not None else {}
        n_before = len(data.names)
        for lf in iter_fields(
            [export],
            labels=labels,
            cip_params=cip_params,
            cache_dir=cache_dir,
            progress=progress,
            channel_roles=channel_roles,
        ):
            name_ = f"{lf.plate_id}/{lf.name}"
            if name_ in seen:
                raise TrainingError(
                    f"field {lf.name} of plate {lf.plate_id} appears twice: the same plate was "
                    "given more than once"
                )
            data.images.append(lf.image)
            data.masks.append(lf.label)
            data.names.append(name_)
            seen.add(name_)
            if truth is not None:
                tpath = truth_paths.get(lf.name)
                h, w = lf.label.shape
                data.truth.append(None if tpath is None else read_mask(tpath, (int(h), int(w))))
        data.exports.append(_export_record(export, cat, len(data.names) - n_before))
    data.seconds = time.perf_counter() - t0
    return data


def _export_record(export: Path, cat: PlateCatalogue, n_fields: int) -> dict[str, Any]:
    """The card's record of one export (``training.data.exports``)."""
    return {
        "path": str(Path(export).resolve()),
        "index": str(cat.index_path),
        "plate_id": cat.plate_id,
        "format": cat.format_version,
        "index_sha256": cat.index_sha256,
        "fields": n_fields,
        "fields_holdout": 0,
        "fields_in_catalogue": len(cat.fields),
        "pixel_size_um": cat.pixel_size_um,
    }


def _training_pixel_size(exports: Sequence[dict[str, Any]]) -> float | None:
    """The pixel size (µm) shared by every export trained on, or ``None`` when they differ.

    Recorded as the card's ``training.pixel_size_um``: inference resamples fields of another
    pixel size to it (:meth:`phagoflow.core.inference.Predictor.scale_for`).
    """
    sizes = {round(float(e["pixel_size_um"]), 6) for e in exports if e["fields"] > 0}
    if len(sizes) != 1:
        if sizes:
            logger.warning(
                "the training exports have different pixel sizes (%s µm): the model card records "
                "none, so inference will not resample fields",
                ", ".join(f"{v:g}" for v in sorted(sizes)),
            )
        return None
    return sizes.pop()


def _complete_truth(data: _Fields, truth: Path | None) -> list[NDArray[np.uint8]] | None:
    """The truth masks of every field, or ``None`` (warning) when some field has none."""
    if truth is None:
        return None
    missing = [n for n, t in zip(data.names, data.truth, strict=True) if t is None]
    if missing:
        logger.warning(
            "no truth mask in %s for %d of %d fields (e.g. %s); validation against the "
            "truth is off",
            truth,
            len(missing),
            len(data.names),
            missing[0],
        )
        return None
    return [t for t in data.truth if t is not None]


def _log_epoch(rec: dict[str, Any]) -> None:
    """One log line per epoch: losses, validation mean IoU, speed."""
    parts = [f"epoch {rec['epoch']}", f"loss {rec['train_loss']:.4f}"]
    if rec["val_loss"] is not None:
        parts.append(f"val loss {rec['val_loss']:.4f}")
    if rec["val_miou_weak"] is not None:
        parts.append(f"val mIoU (labels) {rec['val_miou_weak']:.3f}")
    if rec["val_miou_truth"] is not None:
        parts.append(f"val mIoU (truth) {rec['val_miou_truth']:.3f}")
    parts.append(f"{rec['patches_per_s']:.1f} patches/s")
    logger.info(", ".join(parts))


def _fields_digest(data_checksums: dict[str, Any]) -> str:
    """sha256 of the per-field checksums as sorted-key JSON (the card's ``fields_digest``)."""
    return hashlib.sha256(json.dumps(data_checksums, sort_keys=True).encode()).hexdigest()
