"""U-Net inference on whole fields: normalise → tiles → batches → backend → stitch → argmax.

The network call is hidden behind a *tile backend*: any callable taking float32 tiles
``(N, 2, tile, tile)`` and returning float32 logits ``(N, 3, tile, tile)``. Two are provided —
:class:`OnnxRuntimeBackend` (default) and :class:`TorchBackend` — and a Triton client can be
plugged in the same way (it serves the same ``model.onnx``, input ``"input"``, output
``"logits"``)::

    predictor = Predictor(my_triton_call, normalisation=card.normalisation)

Tiling follows the paper (:mod:`phagoflow.core.tiling`: 256 × 256 tiles, 32 px border, symmetric
padding). Logits of the kept tile centres are stitched, then softmax (probabilities) and argmax
(mask) are taken per pixel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage as ndi

from phagoflow.core.model_dir import (
    ONNX_FILE,
    ModelCard,
    ModelDirError,
    load_model_dir,
    read_model_card,
)
from phagoflow.core.normalisation import NormalisationConfig, normalise
from phagoflow.core.tiling import make_tiles, stitch_tiles
from phagoflow.core.unet import UNet

__all__ = [
    "BACKENDS",
    "MIN_OBJECT_AREA_UM2",
    "RESCALE_TOLERANCE",
    "OnnxRuntimeBackend",
    "Predictor",
    "TileBackend",
    "TorchBackend",
    "default_model_dir",
    "drop_small_objects",
    "load_predictor",
    "resample_planes",
    "resize_planes",
    "softmax",
    "tiled_logits",
]

#: Default :attr:`Predictor.rescale_tolerance`: fields within 10 % of the model's pixel size
#: are not resampled (interpolation would blur them for no gain).
RESCALE_TOLERANCE: Final[float] = 0.1

#: Default :attr:`Predictor.min_object_area_um2`: predicted objects below 0.05 µm² (one pixel
#: at 0.2 µm/px, under the optical resolution) are dropped. Chosen on the stress suite's
#: validation plates (docs/experiment.md): hot pixels and noise specks became autolysosomes.
MIN_OBJECT_AREA_UM2: Final[float] = 0.05

#: Tiles in, logits out: ``(N, C, t, t)`` float32 → ``(N, K, t, t)`` float32.
TileBackend = Callable[[NDArray[np.float32]], NDArray[np.float32]]

#: Backend names understood by :func:`load_predictor`.
BACKENDS: tuple[str, ...] = ("onnxruntime", "torch")


class OnnxRuntimeBackend:
    """Run ``model.onnx`` with ONNX Runtime on CPU.

    Parameters
    ----------
    model : Path or bytes
        ONNX file or its bytes (input ``"input"``, output ``"logits"``).
    threads : int, optional
        ``intra_op_num_threads``; ``None`` lets ONNX Runtime use all physical cores.
    providers : list of str, optional
        Execution providers; default ``["CPUExecutionProvider"]``.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model: Path | bytes,
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 0 if threads is None else threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(
            source, opts, providers=providers or ["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.threads = threads

    def __call__(self, tiles: NDArray[np.float32]) -> NDArray[np.float32]:
        """Logits ``(N, K, t, t)`` for tiles ``(N, C, t, t)``."""
        out = self.session.run([self.output_name], {self.input_name: tiles})[0]
        return np.asarray(out, dtype=np.float32)


class TorchBackend:
    """Run a :class:`~phagoflow.core.unet.UNet` with torch (eval mode, no autograd).

    Parameters
    ----------
    model : UNet
        The network; it is put in eval mode.
    threads : int, optional
        Torch intra-op threads *during each call* (the previous setting is restored after);
        ``None`` keeps the process setting.
    device : str
        Torch device, e.g. ``"cpu"`` or ``"cuda"``.
    """

    name = "torch"

    def __init__(self, model: UNet, *, threads: int | None = None, device: str = "cpu") -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.threads = threads

    def __call__(self, tiles: NDArray[np.float32]) -> NDArray[np.float32]:
        """Logits ``(N, K, t, t)`` for tiles ``(N, C, t, t)``."""
        with _torch_threads(self.threads), torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32)).to(self.device)
            out: NDArray[np.float32] = self.model(x).float().cpu().numpy()
        return out


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def softmax(logits: NDArray[np.float32], axis: int = 0) -> NDArray[np.float32]:
    """Numerically stable softmax along ``axis`` (float32 in, float32 out)."""
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    out: NDArray[np.float32] = z.astype(np.float32, copy=False)
    return out


def tiled_logits(
    field: NDArray[np.float32],
    backend: TileBackend,
    *,
    batch_size: int = 8,
    tile: int = 256,
    border: int = 32,
) -> NDArray[np.float32]:
    """Logits of an already *normalised* field, computed tile by tile.

    Parameters
    ----------
    field : (C, H, W) float32 ndarray
        Normalised field (see :func:`~phagoflow.core.normalisation.normalise`).
    backend : TileBackend
        ``(n, C, tile, tile)`` → ``(n, K, tile, tile)`` logits.
    batch_size : int
        Tiles per backend call.
    tile, border : int
        Tile side and discarded border, in pixels (256 and 32 in the paper); ``tile`` must be a
        multiple of 8 for the U-Net.

    Returns
    -------
    (K, H, W) float32 ndarray
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tiles, layout = make_tiles(
        np.ascontiguousarray(field, dtype=np.float32), tile=tile, border=border
    )
    outputs = []
    for start in range(0, len(tiles), batch_size):
        batch = tiles[start : start + batch_size]
        out = np.asarray(backend(batch), dtype=np.float32)
        if out.ndim != 4 or out.shape[0] != len(batch) or out.shape[2:] != batch.shape[2:]:
            raise ValueError(
                f"backend returned {out.shape} for tiles {batch.shape}; expected "
                f"({len(batch)}, K, {tile}, {tile})"
            )
        outputs.append(out)
    return stitch_tiles(np.concatenate(outputs, axis=0), layout)


@dataclass(eq=False)
class Predictor:
    """Field in, class mask (and probabilities) out.

    Parameters
    ----------
    backend : TileBackend
        Tiles ``(n, 2, tile, tile)`` float32 → logits ``(n, 3, tile, tile)`` float32.
    normalisation : NormalisationConfig
        Must be the model's (from its card).
    in_channels : int
        Channels of a field (2: ``[DsRed, pHluorin]``).
    batch_size : int
        Tiles per backend call.
    tile, border : int
        Tiling in pixels (paper: 256, 32).
    card : ModelCard, optional
        Model card, for provenance.
    model_dir : Path, optional
        Folder the model came from, for provenance.
    rescale_tolerance : float or None
        Relative pixel-size difference (field vs the card's ``training.pixel_size_um``) up to
        which fields are used as they come; beyond it :meth:`logits` resamples them. ``None``
        never resamples.
    min_object_area_um2 : float
        :meth:`predict` with a pixel size drops objects (8-connected, per class) of a smaller
        area in µm²; 0 keeps every object.
    """

    backend: TileBackend
    _: KW_ONLY
    normalisation: NormalisationConfig
    in_channels: int = 2
    batch_size: int = 8
    tile: int = 256
    border: int = 32
    card: ModelCard | None = None
    model_dir: Path | None = None
    rescale_tolerance: float | None = RESCALE_TOLERANCE
    min_object_area_um2: float = MIN_OBJECT_AREA_UM2

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        tile, border = self.tile, self.border
        if tile % 8 or tile - 2 * border <= 0 or border < 0:
            raise ValueError(
                f"need tile a multiple of 8 and 0 <= 2*border < tile, got tile={tile}, "
                f"border={border}"
            )

    def scale_for(self, pixel_size_um: float | None) -> float:
        """Zoom factor that brings a field of ``pixel_size_um`` (µm) to the model's pixel size.

        1.0 (no resampling) when either pixel size is unknown or they differ by at most
        :attr:`rescale_tolerance` (relative); else ``pixel_size_um / model pixel size`` (< 1
        shrinks a finely sampled field, > 1 enlarges a coarse one).
        """
        model_um = self.card.pixel_size_um if self.card is not None else None
        if pixel_size_um is None or model_um is None or self.rescale_tolerance is None:
            return 1.0
        scale = float(pixel_size_um) / model_um
        return 1.0 if abs(scale - 1.0) <= self.rescale_tolerance else scale

    def logits(
        self, field: NDArray[Any], pixel_size_um: float | None = None
    ) -> NDArray[np.float32]:
        """Per-class logits ``(K, H, W)`` float32 of a raw field ``(2, H, W)``.

        With ``pixel_size_um`` (µm) the field is first resampled to the model's training pixel
        size (:meth:`scale_for`) and the logits are resampled back to ``(H, W)``: the network
        sees vesicles at the size, in pixels, it learnt them.
        """
        self._validate_field(field)
        x = normalise(field, self.normalisation)
        scale = self.scale_for(pixel_size_um)
        if scale != 1.0:
            x = resample_planes(x, scale)
        out = tiled_logits(
            x, self.backend, batch_size=self.batch_size, tile=self.tile, border=self.border
        )
        if scale != 1.0:
            out = resize_planes(out, (field.shape[1], field.shape[2]))
        return out

    def predict(self, field: NDArray[Any], pixel_size_um: float | None = None) -> NDArray[np.uint8]:
        """Class mask ``(H, W)`` uint8 (0 background, 1 phagophore, 2 autolysosome).

        ``field`` is a raw ``(2, H, W)`` float32 field ``[DsRed, pHluorin]`` in camera counts;
        ``pixel_size_um`` (µm) enables resampling to the model's pixel size (:meth:`logits`)
        and drops objects under :attr:`min_object_area_um2`.
        """
        return self._mask(self.logits(field, pixel_size_um), pixel_size_um)

    def predict_proba(
        self, field: NDArray[Any], pixel_size_um: float | None = None
    ) -> NDArray[np.float32]:
        """Class probabilities ``(3, H, W)`` float32 (softmax of the logits)."""
        return softmax(self.logits(field, pixel_size_um), axis=0)

    def predict_with_proba(
        self, field: NDArray[Any], pixel_size_um: float | None = None
    ) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
        """``(mask (H, W) uint8, probabilities (3, H, W) float32)`` in one pass (the mask as
        :meth:`predict` makes it, the probabilities as the network gave them)."""
        logits = self.logits(field, pixel_size_um)
        return self._mask(logits, pixel_size_um), softmax(logits, axis=0)

    def _mask(self, logits: NDArray[np.float32], pixel_size_um: float | None) -> NDArray[np.uint8]:
        """Argmax of ``logits``, without objects under :attr:`min_object_area_um2` when the
        pixel size (µm) is known."""
        mask = _argmax(logits)
        if pixel_size_um is None or self.min_object_area_um2 <= 0:
            return mask
        return drop_small_objects(mask, self.min_object_area_um2 / float(pixel_size_um) ** 2)

    __call__ = predict

    def _validate_field(self, field: NDArray[Any]) -> None:
        shape = np.shape(field)
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ValueError(
                f"field must be ({self.in_channels}, H, W) [DsRed, pHluorin], got shape {shape}"
            )


def resample_planes(planes: NDArray[Any], scale: float) -> NDArray[np.float32]:
    """Zoom every plane of ``planes`` (C, H, W) by ``scale`` (bilinear, anti-aliased when
    shrinking); returns ``(C, round(H·scale), round(W·scale))`` float32, each side at least 1.
    """
    h, w = planes.shape[1], planes.shape[2]
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    return resize_planes(planes, shape, anti_aliasing=scale < 1.0)


def resize_planes(
    planes: NDArray[Any], shape: tuple[int, int], *, anti_aliasing: bool = False
) -> NDArray[np.float32]:
    """Resize every plane of ``planes`` (C, H, W) to ``shape`` (H', W') pixels, bilinear."""
    from skimage.transform import resize

    out = resize(  # type: ignore[no-untyped-call]
        np.asarray(planes, dtype=np.float32),
        (planes.shape[0], *shape),
        order=1,
        mode="symmetric",
        anti_aliasing=anti_aliasing,
        preserve_range=True,
    )
    return np.ascontiguousarray(out, dtype=np.float32)


def drop_small_objects(mask: NDArray[np.uint8], min_area_px: float) -> NDArray[np.uint8]:
    """``mask`` (H, W) with every object (8-connected, per class) under ``min_area_px`` pixels
    set to background (0); a new array."""
    out = mask.copy()
    for value in np.unique(mask[mask > 0]):
        labels, n = ndi.label(mask == value, structure=np.ones((3, 3), bool))
        small = np.bincount(labels.ravel(), minlength=n + 1) < min_area_px
        small[0] = False
        out[small[labels]] = 0
    return out


def _argmax(logits: NDArray[np.float32]) -> NDArray[np.uint8]:
    out: NDArray[np.uint8] = np.argmax(logits, axis=0).astype(np.uint8)
    return out


def default_model_dir() -> Path:
    """The packaged default model folder ``phagoflow/models/default`` (built by ``make model``)."""
    return Path(str(files("phagoflow").joinpath("models", "default")))


def load_predictor(
    model_dir: Path | None = None,
    *,
    backend: Literal["onnxruntime", "torch"] | str = "onnxruntime",
    batch_size: int = 8,
    threads: int | None = None,
    tile: int = 256,
    border: int = 32,
) -> Predictor:
    """A :class:`Predictor` for a verified model folder.

    Parameters
    ----------
    model_dir : Path, optional
        Model folder (see :mod:`phagoflow.core.model_dir`); default: the packaged model
        :func:`default_model_dir`.
    backend : {'onnxruntime', 'torch'}
        ``onnxruntime`` runs ``model.onnx``; ``torch`` runs ``model.pt`` on CPU.
    batch_size : int
        Tiles per backend call.
    threads : int, optional
        CPU threads for the backend; ``None`` = library default.
    tile, border : int
        Tiling in pixels (paper: 256, 32).

    Raises
    ------
    ModelDirError
        Missing folder/file, checksum mismatch or malformed card (checksums are always verified).
    ValueError
        Unknown backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    path = Path(model_dir) if model_dir is not None else default_model_dir()
    if model_dir is None and not (path / "card.json").is_file():
        raise ModelDirError(
            f"no packaged default model at {path}/card.json; build it with `make model` "
            "or pass a model folder"
        )
    tile_backend: TileBackend
    if backend == "torch":
        model, card = load_model_dir(path)
        tile_backend = TorchBackend(model, threads=threads)
    else:
        card = read_model_card(path)
        tile_backend = OnnxRuntimeBackend(path / ONNX_FILE, threads=threads)
    return Predictor(
        tile_backend,
        normalisation=card.normalisation,
        in_channels=card.architecture.in_channels,
        batch_size=batch_size,
        tile=tile,
        border=border,
        card=card,
        model_dir=path,
    )
