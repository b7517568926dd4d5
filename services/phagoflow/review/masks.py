"""Validated mask uploads and curated masks with provenance.

An upload is the request body in one of two encodings, chosen by ``Content-Type``:
``application/x-npy`` (a NumPy ``.npy`` file, what the browser sends) or ``image/tiff`` (a
single-page TIFF, for scripts). :func:`decode_mask` checks size, encoding, dtype (uint8) and shape
(equal to the field) from the file's header *before* decoding any pixel, then the labels
(0, 1, 2) and raises :class:`UploadError` carrying the HTTP status
and a message that names what was expected. :func:`curated_provenance` builds the provenance
document of a curated mask and :func:`encode_curated` its TIFF bytes; :func:`save_curated` writes
both to ``RESULTS/curated/rRRcCCfFFpPP.tiff`` and its JSON sidecar atomically (the object-store
mode puts the same bytes under ``curated/<plate>/``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tifffile

from phagoflow import __version__
from phagoflow.core.classes import ObjectClass

__all__ = [
    "MASK_MEDIA_TYPES",
    "UploadError",
    "curated_provenance",
    "decode_mask",
    "encode_curated",
    "save_curated",
]

#: Accepted ``Content-Type`` values of a mask upload.
MASK_MEDIA_TYPES = ("application/x-npy", "image/tiff")

_MAX_LABEL = max(ObjectClass)


class UploadError(ValueError):
    """A rejected upload: ``status`` is the HTTP status to answer, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_mask(
    body: bytes, media_type: str, shape: tuple[int, int], *, max_bytes: int
) -> npt.NDArray[np.uint8]:
    """Decode and validate an uploaded label mask.

    Parameters
    ----------
    body : bytes
        The request body.
    media_type : {'application/x-npy', 'image/tiff'}
        Its ``Content-Type`` (parameters after ``;`` are ignored).
    shape : (H, W) tuple of int
        The field size in pixels; the mask must have exactly this shape.
    max_bytes : int
        Size limit of ``body`` in bytes.

    Returns
    -------
    (H, W) ndarray of uint8
        Labels 0 background, 1 phagophore, 2 autolysosome.

    Raises
    ------
    UploadError
        413 too large, 415 unsupported media type, 400 undecodable body, 422 wrong dtype,
        shape or labels.
    """
    media = media_type.split(";")[0].strip().lower()
    if len(body) > max_bytes:
        raise UploadError(413, f"upload of {len(body)} bytes exceeds the limit of {max_bytes}")
    if media not in MASK_MEDIA_TYPES:
        raise UploadError(
            415, f"unsupported Content-Type {media!r}; send one of {list(MASK_MEDIA_TYPES)}"
        )
    if not body:
        raise UploadError(400, "empty upload: the body must hold the mask")
    try:
        if media == "application/x-npy":
            array = _decode_npy(body, shape)
        else:
            array = _decode_tiff(body, shape)
    except UploadError:
        raise
    except Exception as exc:
        raise UploadError(400, f"cannot decode the {media} body: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise UploadError(400, f"the {media} body does not hold an array")
    _check_header(array.dtype, tuple(array.shape), shape)
    top = int(array.max(initial=0))
    if top > _MAX_LABEL:
        bad = int(np.count_nonzero(array > _MAX_LABEL))
        raise UploadError(
            422,
            f"mask holds label {top} ({bad} pixel(s) above {_MAX_LABEL}); allowed labels are "
            + ", ".join(f"{int(c)} {c.label}" for c in ObjectClass),
        )
    return np.ascontiguousarray(array)


def _check_header(dtype: np.dtype[Any], got: tuple[int, ...], shape: tuple[int, int]) -> None:
    """422 unless ``dtype`` is uint8 and ``got`` equals the field ``shape``."""
    if dtype != np.uint8:
        raise UploadError(422, f"mask dtype is {dtype}; expected uint8")
    if got != tuple(shape):
        raise UploadError(422, f"mask shape {got} does not match the field shape {tuple(shape)}")


def _decode_npy(body: bytes, shape: tuple[int, int]) -> npt.NDArray[Any]:
    """``.npy`` bytes → array; shape and dtype are checked from the header first."""
    fmt: Any = np.lib.format  # numpy ships no type hints for its .npy header readers
    buf = io.BytesIO(body)
    version = fmt.read_magic(buf)
    read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    got, fortran, dtype = read_header(buf)
    _check_header(np.dtype(dtype), tuple(got), shape)
    if fortran:
        raise UploadError(422, "mask is in Fortran order; send a C-ordered array")
    return np.asarray(np.load(io.BytesIO(body), allow_pickle=False))


def _decode_tiff(body: bytes, shape: tuple[int, int]) -> npt.NDArray[Any]:
    """Single-page TIFF bytes → array; pages, shape, dtype and tile size are checked from the
    header before any pixel is decoded (a small compressed file cannot declare a huge image)."""
    with tifffile.TiffFile(io.BytesIO(body)) as tif:
        if len(tif.pages) != 1:
            raise UploadError(422, f"TIFF has {len(tif.pages)} pages; expected 1")
        page = tif.pages.first
        _check_header(np.dtype(page.dtype), tuple(page.shape), shape)
        if page.is_tiled and (page.tilelength > shape[0] or page.tilewidth > shape[1]):
            raise UploadError(
                422, f"TIFF tiles of {page.tilelength} x {page.tilewidth} exceed the field"
            )
        return page.asarray()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def encode_curated(mask: npt.NDArray[np.uint8]) -> bytes:
    """A curated ``(H, W)`` uint8 mask as zlib-compressed TIFF bytes (the masks' file format)."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, mask, compression="zlib", metadata=None)
    return buf.getvalue()


def curated_provenance(
    mask: npt.NDArray[np.uint8],
    *,
    plate_id: str,
    field: str,
    user: str,
    started_from: str,
    start_mask: npt.NDArray[np.uint8] | None,
    seconds_editing: float | None,
    authenticated_user: bool,
    edit_operations: int | None = None,
    previous: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The provenance document of a curated mask (what the ``.json`` sidecar holds).

    Parameters
    ----------
    mask : (H, W) ndarray of uint8
        The validated curated mask.
    plate_id, field : str
        Identity of the field.
    user : str
        Who curated it.
    started_from : str
        Mask source the correction started from (``cip``, ``cdl``, ``curated`` or ``empty``).
    start_mask : (H, W) ndarray of uint8, optional
        That mask as stored now, to record its checksum and the number of changed pixels.
    seconds_editing : float or None
        Active editing time of this save, in seconds, as the client measured it (the browser
        counts the gaps between actions, each at most 60 s); ``None`` when not measured.
    authenticated_user : bool
        True when ``user`` comes from a personal token rather than the client's declaration.
    edit_operations : int, optional
        Edit operations of this save (strokes, fills, deletions, undo/redo); ``None`` when not
        counted.
    previous : dict, optional
        The provenance of the curated mask being replaced; kept under ``history``.
    now : datetime, optional
        Save time (UTC); default now.

    Returns
    -------
    dict
        ``plate_id``, ``field``, ``user``, ``user_authenticated``, ``saved_at``,
        ``started_from``, ``started_from_sha256``, ``pixels_changed``, ``seconds_editing``,
        ``edit_operations``, ``mask_sha256``, ``pixels_per_class``, ``phagoflow_version``,
        ``history``.
    """
    counts = np.bincount(mask.ravel(), minlength=len(ObjectClass))
    history: list[dict[str, Any]] = []
    if previous:
        history = list(previous.get("history", []))
        history.append({k: v for k, v in previous.items() if k != "history"})
    return {
        "plate_id": plate_id,
        "field": field,
        "user": user,
        "user_authenticated": authenticated_user,
        "saved_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "started_from": started_from,
        "started_from_sha256": (
            _sha256(np.ascontiguousarray(start_mask).tobytes()) if start_mask is not None else None
        ),
        "pixels_changed": (
            int(np.count_nonzero(start_mask != mask)) if start_mask is not None else None
        ),
        "seconds_editing": (
            round(float(seconds_editing), 3) if seconds_editing is not None else None
        ),
        "edit_operations": int(edit_operations) if edit_operations is not None else None,
        "mask_sha256": _sha256(np.ascontiguousarray(mask).tobytes()),
        "pixels_per_class": {c.label: int(counts[c]) for c in ObjectClass},
        "phagoflow_version": __version__,
        "history": history,
    }


def save_curated(
    mask: npt.NDArray[np.uint8],
    mask_path: Path,
    sidecar_path: Path,
    *,
    plate_id: str,
    field: str,
    **provenance: Any,
) -> dict[str, Any]:
    """Write a curated mask and its provenance sidecar atomically; return the sidecar.

    Parameters
    ----------
    mask : (H, W) ndarray of uint8
        The validated curated mask.
    mask_path, sidecar_path : Path
        ``RESULTS/curated/<field>.tiff`` and ``.json``, built by the caller from a catalogue key.
    plate_id, field : str
        Identity of the field.
    **provenance
        The other keyword arguments of :func:`curated_provenance` (``user``, ``started_from``,
        ``start_mask``, ``seconds_editing``, ``authenticated_user``, ``edit_operations``,
        ``previous``, ``now``).

    Returns
    -------
    dict
        The provenance written to ``sidecar_path``.
    """
    doc = curated_provenance(mask, plate_id=plate_id, field=field, **provenance)
    _atomic_write(mask_path, encode_curated(mask))
    _atomic_write(sidecar_path, (json.dumps(doc, indent=2) + "\n").encode())
    return doc
