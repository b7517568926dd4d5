"""Versioned, checksummed model folders: ``model.pt`` + ``model.onnx`` + ``card.json``.

A model folder is everything needed to reproduce a U-Net's output::

    <dir>/model.pt     torch state_dict (torch.save), loaded with weights_only=True
    <dir>/model.onnx   the same network, opset 17, input "input" (N, 2, H, W) float32,
                       output "logits" (N, 3, H, W) float32; N, H and W are dynamic
                       (H, W multiples of 8)
    <dir>/card.json    ModelCard: architecture, normalisation, classes, sha256 of both files,
                       software versions and whatever training recorded (parameters, metrics
                       per epoch, seed, training time, training-data checksums)

:func:`load_model_dir` / :func:`read_model_card` verify the checksums and fail loudly with
:class:`ModelDirError` (a ``ValueError``) naming the offending file: missing file, checksum
mismatch, unreadable or malformed card, weights that do not fit the architecture. There is no
fallback model. ``card.json`` is written last, so a folder without it is an interrupted save.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import platform
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from phagoflow.core.classes import CLASS_NAMES
from phagoflow.core.normalisation import NormalisationConfig
from phagoflow.core.unet import UNet, UNetConfig

__all__ = [
    "CARD_FILE",
    "ONNX_FILE",
    "ONNX_INPUT",
    "ONNX_OPSET",
    "ONNX_OUTPUT",
    "TORCH_FILE",
    "ModelCard",
    "ModelDirError",
    "OnnxInfo",
    "export_onnx",
    "load_model_dir",
    "read_model_card",
    "save_model_dir",
    "sha256_file",
    "software_versions",
]

TORCH_FILE = "model.pt"
ONNX_FILE = "model.onnx"
CARD_FILE = "card.json"
ONNX_INPUT = "input"
ONNX_OUTPUT = "logits"
ONNX_OPSET = 17
_CARD_FORMAT = 1


class ModelDirError(ValueError):
    """A model folder is missing a file, fails a checksum or has a malformed card.

    The message always names the offending file.
    """


class OnnxInfo(BaseModel):
    """How to call ``model.onnx``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    opset: int = ONNX_OPSET
    input_name: str = ONNX_INPUT
    output_name: str = ONNX_OUTPUT
    input_layout: str = "NCHW float32, channels [DsRed, pHluorin], H and W multiples of 8"


class ModelCard(BaseModel):
    """Contents of ``card.json``.

    Attributes
    ----------
    format_version : int
        Card schema version (1).
    name, version : str
        Model name and version; ``version`` defaults to a content hash of the weight files, so
        result keys built from it change whenever the weights do.
    created : str
        ISO 8601 UTC time of saving.
    architecture : UNetConfig
        Network architecture.
    normalisation : NormalisationConfig
        Input normalisation used at training and required at inference.
    classes : dict of int to str
        Mask value → class name.
    checksums : dict of str to str
        File name → sha256 hex digest (``model.pt``, ``model.onnx``).
    onnx : OnnxInfo
        ONNX opset and tensor names.
    software : dict of str to str
        Package versions at save time.
    training : dict
        Whatever the trainer recorded (JSON-serialisable).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = _CARD_FORMAT
    name: str = "phagoflow-unet"
    version: str
    created: str
    architecture: UNetConfig
    normalisation: NormalisationConfig
    classes: dict[int, str] = Field(default_factory=lambda: dict(enumerate(CLASS_NAMES)))
    checksums: dict[str, str]
    onnx: OnnxInfo = Field(default_factory=OnnxInfo)
    software: dict[str, str] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)

    @property
    def pixel_size_um(self) -> float | None:
        """Pixel size (µm) of the fields the model was trained on (``training.pixel_size_um``).

        ``None`` when the card does not say (models made before it was recorded, or trained on
        fields of mixed pixel sizes): inference then uses fields as they come.
        """
        value = self.training.get("pixel_size_um")
        if isinstance(value, int | float) and math.isfinite(value) and value > 0:
            return float(value)
        return None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def software_versions() -> dict[str, str]:
    """Versions of the packages that determine a model's numbers."""
    import onnx
    import onnxruntime

    from phagoflow import __version__

    return {
        "phagoflow": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def save_model_dir(
    path: Path,
    model: UNet,
    config: UNetConfig,
    normalisation: NormalisationConfig,
    card_extra: dict[str, Any] | None = None,
    *,
    name: str = "phagoflow-unet",
    version: str | None = None,
    overwrite: bool = False,
) -> ModelCard:
    """Write a model folder (``model.pt``, ``model.onnx``, ``card.json``).

    Parameters
    ----------
    path : Path
        Folder to create (parents too).
    model : UNet
        Trained network; it is copied to CPU in eval mode for export, the original is unchanged.
    config : UNetConfig
        Its architecture; must equal ``model.config``.
    normalisation : NormalisationConfig
        Normalisation the model was trained with.
    card_extra : dict, optional
        JSON-serialisable training record stored under ``card["training"]`` (parameters,
        metrics per epoch, seed, training time, data checksums, ...).
    name : str
        Model name for the card.
    version : str, optional
        Version string; default ``"sha-" + first 12 hex of sha256(model.pt ‖ model.onnx)``.
    overwrite : bool
        Replace an existing model folder at ``path`` instead of raising ``FileExistsError``.

    Returns
    -------
    ModelCard
        The card written to ``card.json``.

    Raises
    ------
    ValueError
        ``config`` differs from ``model.config`` or ``card_extra`` is not JSON-serialisable.
    ModelDirError
        The exported ONNX graph does not reproduce the torch logits (max abs diff > 1e-3).
    """
    if config != model.config:
        raise ValueError(f"config {config!r} does not match model.config {model.config!r}")
    extra = dict(card_extra or {})
    try:
        json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"card_extra must be JSON-serialisable (no NaN/inf): {exc}") from exc
    path = _prepare_folder(Path(path), overwrite=overwrite)
    cpu_model = copy.deepcopy(model).cpu().eval()
    state = {k: v.detach().clone() for k, v in cpu_model.state_dict().items()}
    _atomic_write(path / TORCH_FILE, _torch_bytes(state))
    onnx_bytes = export_onnx(cpu_model)  # exports a copy; cpu_model stays untouched
    _check_onnx(onnx_bytes, cpu_model, path / ONNX_FILE)
    _atomic_write(path / ONNX_FILE, onnx_bytes)

    checksums = {f: sha256_file(path / f) for f in (TORCH_FILE, ONNX_FILE)}
    if version is None:
        both = (checksums[TORCH_FILE] + checksums[ONNX_FILE]).encode()
        version = "sha-" + hashlib.sha256(both).hexdigest()[:12]
    card = ModelCard(
        name=name,
        version=version,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        architecture=config,
        normalisation=normalisation,
        checksums=checksums,
        software=software_versions(),
        training=extra,
    )
    text = json.dumps(card.model_dump(mode="json"), indent=2, sort_keys=False, allow_nan=False)
    _atomic_write(path / CARD_FILE, (text + "\n").encode())
    return card


def _prepare_folder(path: Path, *, overwrite: bool) -> Path:
    """Create ``path`` for a new model; refuse to replace one unless ``overwrite``."""
    if not overwrite and any((path / f).exists() for f in (TORCH_FILE, ONNX_FILE, CARD_FILE)):
        raise FileExistsError(f"{path} already holds a model; pass overwrite=True to replace it")
    path.mkdir(parents=True, exist_ok=True)
    if (path / CARD_FILE).exists():
        (path / CARD_FILE).unlink()  # an interrupted overwrite must not leave a stale card
    return path


def export_onnx(model: UNet) -> bytes:
    """ONNX bytes of ``model`` (eval mode, CPU): opset 17, dynamic batch and spatial dims.

    Uses the TorchScript-based exporter (``dynamo=False``), which needs no ``onnxscript``; its
    deprecation warning is silenced here.
    """
    model = copy.deepcopy(model).cpu().eval()
    dummy = torch.zeros(1, model.config.in_channels, 64, 64)
    dyn = {0: "batch", 2: "height", 3: "width"}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        target = Path(tmp) / ONNX_FILE
        torch.onnx.export(
            model,
            (dummy,),
            target,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: dyn, ONNX_OUTPUT: dyn},
            do_constant_folding=True,
        )
        return target.read_bytes()


def read_model_card(path: Path, *, verify: bool = True) -> ModelCard:
    """Parse ``card.json`` and (by default) verify the checksums of the files it lists.

    Raises
    ------
    ModelDirError
        Missing folder or file, unreadable/malformed card, checksum mismatch.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"model folder {path} does not exist")
    card_path = path / CARD_FILE
    if not card_path.is_file():
        raise ModelDirError(f"{card_path} is missing (not a model folder, or an interrupted save)")
    try:
        raw = json.loads(card_path.read_text(encoding="utf-8"))
        card = ModelCard.model_validate(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
        raise ModelDirError(f"{card_path} is unreadable or malformed: {exc}") from exc
    for required in (TORCH_FILE, ONNX_FILE):
        if required not in card.checksums:
            raise ModelDirError(f"{card_path} lists no sha256 for {required}")
    if verify:
        for fname, expected in card.checksums.items():
            if Path(fname).name != fname or fname in ("", ".", ".."):
                raise ModelDirError(f"{card_path} lists an unsafe file name {fname!r}")
            fpath = path / fname
            if not fpath.is_file():
                raise ModelDirError(f"{fpath} is missing")
            actual = sha256_file(fpath)
            if actual != expected:
                raise ModelDirError(
                    f"{fpath} fails its checksum: sha256 {actual[:16]}…, card.json says "
                    f"{expected[:16]}… (file changed or corrupted)"
                )
    return card


def load_model_dir(path: Path) -> tuple[UNet, ModelCard]:
    """Load the torch network of a verified model folder.

    Returns
    -------
    model : UNet
        In eval mode, on CPU.
    card : ModelCard

    Raises
    ------
    ModelDirError
        See :func:`read_model_card`; also when ``model.pt`` cannot be read or does not fit the
        card's architecture.
    """
    path = Path(path)
    card = read_model_card(path)
    pt = path / TORCH_FILE
    try:
        state = torch.load(pt, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises many types for corrupt pickles/zips
        raise ModelDirError(f"{pt} cannot be loaded as a state_dict: {exc}") from exc
    if not isinstance(state, dict):
        raise ModelDirError(f"{pt} holds a {type(state).__name__}, expected a state_dict")
    model = UNet(card.architecture)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelDirError(
            f"{pt} does not fit the architecture in {path / CARD_FILE}: {exc}"
        ) from exc
    return model.eval(), card


def _torch_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _check_onnx(onnx_bytes: bytes, model: UNet, where: Path) -> None:
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(onnx.load_from_string(onnx_bytes))
    except Exception as exc:
        raise ModelDirError(f"{where}: exported ONNX graph is invalid: {exc}") from exc
    x = torch.from_numpy(
        np.random.default_rng(0).normal(size=(2, model.config.in_channels, 64, 96))
    ).float()
    with torch.no_grad():
        expected = model(x).numpy()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    got = sess.run([ONNX_OUTPUT], {ONNX_INPUT: x.numpy()})[0]
    diff = float(np.max(np.abs(np.asarray(got) - expected)))
    if got.shape != expected.shape or diff > 1e-3:
        raise ModelDirError(
            f"{where}: ONNX output {got.shape} differs from torch {expected.shape} "
            f"(max abs logit diff {diff:.2e})"
        )
