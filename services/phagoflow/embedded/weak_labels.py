"""Fields and their labels for training and evaluation, read from plate exports.

CIP weak labels are cached on disk by (index checksum, CIP fingerprint, field), so retraining on the
same plates does not re-run the CIP. The cache lives in ``PHAGOFLOW_CACHE_DIR`` (default
``~/.cache/phagoflow``); deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray
from tqdm import tqdm

from phagoflow.core.cip import CipParameters
from phagoflow.core.opera import PlateCatalogue, RoleOverrides, load_field, read_plate
from phagoflow.core.opera.catalogue import FieldRecord, PlateFormatError
from phagoflow.core.segmenters import CipSegmenter

__all__ = [
    "LabelledField",
    "default_cache_dir",
    "iter_fields",
    "load_masks_dir",
    "read_mask",
]

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$PHAGOFLOW_CACHE_DIR`` or ``~/.cache/phagoflow``."""
    env = os.environ.get("PHAGOFLOW_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "phagoflow"


@dataclass(frozen=True)
class LabelledField:
    """One field with its label mask (weak, curated or true)."""

    plate_id: str
    name: str
    image: NDArray[Any]  #: float32 (2, H, W) [DsRed, pHluorin]
    label: NDArray[Any]  #: uint8 (H, W) in {0, 1, 2}
    pixel_size_um: float
    sha256: str  #: checksum of the raw field pixels (training provenance)


def read_mask(path: Path, shape: tuple[int, ...]) -> NDArray[Any]:
    """Read a uint8 class mask and check it: shape ``shape``, values in {0, 1, 2}.

    Raises
    ------
    ValueError
        Naming the file, when it is unreadable, of the wrong shape/dtype or has other labels.
    """
    try:
        mask = tifffile.imread(path)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable TIFF mask ({exc})") from exc
    if mask.shape != shape:
        raise ValueError(f"{path}: mask shape {mask.shape} differs from the field {shape}")
    if mask.dtype != np.uint8:
        raise ValueError(f"{path}: mask dtype {mask.dtype}, expected uint8")
    if int(mask.max(initial=0)) > 2:
        raise ValueError(
            f"{path}: mask has labels above 2 (0 background, 1 phagophore, 2 autolysosome)"
        )
    return np.asarray(mask)


def load_masks_dir(directory: Path) -> dict[str, Path]:
    """Map field name (``rRRcCCfFFpPP``) -> mask path for every ``*.tif[f]`` in ``directory``."""
    if not directory.is_dir():
        raise ValueError(f"mask folder {directory} does not exist")
    return {p.name.split(".")[0]: p for p in sorted(directory.glob("*.tif*"))}


def _cip_label(
    cat: PlateCatalogue, rec: FieldRecord, image: NDArray[Any], seg: CipSegmenter, cache: Path
) -> NDArray[Any]:
    path = cache / cat.index_sha256[:16] / seg.fingerprint[:16] / f"{rec.key.name}.tiff"
    if path.exists():
        try:
            return read_mask(path, image.shape[1:])
        except ValueError:
            logger.warning("weak-label cache entry %s unreadable; recomputing", path)
    mask = seg.segment(image, cat.pixel_size_um)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tifffile.imwrite(tmp, mask, compression="zlib")
    os.replace(tmp, path)
    return mask


def iter_fields(
    exports: Sequence[Path],
    *,
    labels: str | Path = "cip",
    cip_params: CipParameters | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    channel_roles: RoleOverrides | None = None,
) -> Iterator[LabelledField]:
    """Yield every readable field of ``exports`` with its label mask.

    Parameters
    ----------
    exports : sequence of path
        Plate exports (anything :func:`phagoflow.core.opera.read_plate` accepts).
    labels : 'cip' or path
        ``'cip'`` computes CIP weak labels (cached); a folder holds masks named
        ``rRRcCCfFFpPP.tiff`` (curated masks for MDL, or truth); a sub-folder named after
        the plate id is searched first. Fields without a mask are skipped.
    cip_params : CipParameters, optional
        Parameters of the CIP that makes the weak labels.
    channel_roles : mapping, optional
        Channel-role override (``--channel-role``): channel name or id → ``"dsred"``,
        ``"phluorin"``, ``"both"`` or ``"none"`` (see :mod:`phagoflow.core.opera.roles`).

    Unreadable fields are logged and skipped, never fatal.
    """
    seg = CipSegmenter(cip_params) if labels == "cip" else None
    cache = cache_dir or default_cache_dir() / "weak_labels"
    for export in exports:
        cat = read_plate(export, channel_roles=channel_roles)
        masks: dict[str, Path] = {}
        if seg is None:
            root = Path(labels)
            masks = load_masks_dir(root / cat.plate_id if (root / cat.plate_id).is_dir() else root)
        records = [r for r in cat.fields if seg is not None or r.key.name in masks]
        bar = tqdm(records, desc=f"{cat.plate_id} labels", unit="field", disable=not progress)
        for rec in bar:
            try:
                image = load_field(cat, rec)
            except (PlateFormatError, OSError) as exc:
                logger.warning("skipping %s: %s", rec.key.name, exc)
                continue
            if seg is not None:
                label = _cip_label(cat, rec, image, seg, cache)
            else:
                label = read_mask(masks[rec.key.name], image.shape[1:])
            yield LabelledField(
                plate_id=cat.plate_id,
                name=rec.key.name,
                image=image,
                label=label,
                pixel_size_um=cat.pixel_size_um,
                sha256=hashlib.sha256(image.tobytes()).hexdigest(),
            )
