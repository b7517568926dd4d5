"""Label masks that say what made them: the resume rule of ``phagoflow run``.

Every mask ``OUT/masks/<method>/rRRcCCfFFpPP.tiff`` carries, in its TIFF ImageDescription tag, a
JSON *mask record*: the method, the segmenter's fingerprint and provenance (every CIP parameter,
or the model's checksums and backend), the phagoflow version and a digest of the segmentation
source code (:func:`code_digest`), the field, its size and pixel
size, and for each channel role the source file (relative to the export), page, factor and
SHA-256. Mask and record are one file, written to a temporary name and renamed
(:func:`write_mask`), so a mask is never seen with another mask's record, whatever moment a run
is stopped at.

Reuse is decided per field from that record alone (:func:`reuse_mismatch`): a stored mask is
reused only when every key of :data:`REUSE_KEYS` equals what this run would record. A run-level
file such as ``run.json`` plays no part, so an interrupted run, or one run with other
parameters, can never make a later run trust a mask it did not make.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import math
import os
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray

from phagoflow.core.opera.catalogue import ROLE_ORDER, FieldRecord

__all__ = [
    "MASK_SCHEMA",
    "REUSE_KEYS",
    "SOURCE_KEYS",
    "clear_stale_temps",
    "code_digest",
    "mask_path",
    "mask_record",
    "read_mask",
    "reuse_mismatch",
    "source_digests",
    "write_mask",
]

#: Version of the mask record layout; a record of another version is never reused.
MASK_SCHEMA = 1

#: Record keys that describe the field's pixels: they must match for a mask to be measured.
SOURCE_KEYS: tuple[str, ...] = ("schema", "field", "shape", "pixel_size_um", "sources")

#: Record keys compared, one by one, before a stored mask is reused instead of recomputed.
REUSE_KEYS: tuple[str, ...] = (
    *SOURCE_KEYS,
    "method",
    "fingerprint",
    "phagoflow_version",
    "code_sha256",
)

_TMP_GLOB = ".*.tiff.*.tmp"
_CHUNK = 1 << 20


def mask_path(out_dir: Path, method: str, name: str) -> Path:
    """``out_dir/masks/<method>/<name>.tiff``."""
    return out_dir / "masks" / method / f"{name}.tiff"


def _sha256(path: Path, cache: MutableMapping[tuple[str, int, int], str]) -> str:
    """SHA-256 of a file, cached by (path, size, mtime) (a ``.flex`` file holds many fields)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    digest = cache.get(key)
    if digest is None:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        digest = cache[key] = h.hexdigest()
    return digest


def _core_imports(path: Path) -> list[str]:
    """``phagoflow.core`` modules a source file imports, lazily imported ones included."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return [n for n in names if n.startswith("phagoflow.core.")]


def code_digest(walk: Sequence[str], also: Sequence[str] = ()) -> str:
    """SHA-256 of the source code that makes a method's masks.

    The package version alone does not change when the code does (a development checkout, a
    patched install), so mask records also carry this digest.

    Parameters
    ----------
    walk : sequence of str
        Modules hashed together with every ``phagoflow.core`` module they import, at any depth.
    also : sequence of str
        Modules hashed on their own (their imports are not followed).

    Returns
    -------
    str
        Hex digest over the module names and source bytes, in name order.
    """
    files: dict[str, Path] = {}
    todo = [(name, True) for name in walk] + [(name, False) for name in also]
    while todo:
        name, follow = todo.pop()
        if name in files:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # e.g. "pkg.module.ClassName" from a from-import
            continue
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        files[name] = Path(spec.origin)
        if follow:
            todo += [(n, True) for n in _core_imports(files[name])]
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].read_bytes() + b"\0")
    return h.hexdigest()


def source_digests(
    record: FieldRecord, root: Path, cache: MutableMapping[tuple[str, int, int], str]
) -> dict[str, dict[str, Any]]:
    """The field's DsRed and pHluorin sources: file (relative to ``root``), page, factor, sha256.

    Only the roles a mask is made from (:data:`~phagoflow.core.opera.catalogue.ROLE_ORDER`).

    Raises
    ------
    OSError
        A source file cannot be read.
    """
    out: dict[str, dict[str, Any]] = {}
    for role in ROLE_ORDER:
        src = record.sources.get(role)
        if src is None:
            continue  # load_field has already refused such a field
        try:
            name = str(src.path.relative_to(root))
        except ValueError:
            name = str(src.path)
        out[str(role)] = {
            "file": name,
            "page": src.page,
            "factor": src.factor,
            "sha256": _sha256(src.path, cache),
        }
    return out


def mask_record(
    segmenter: Mapping[str, Any],
    *,
    field: str,
    shape: tuple[int, int],
    pixel_size_um: float,
    sources: Mapping[str, Any],
) -> dict[str, Any]:
    """The record a mask made now would carry.

    Parameters
    ----------
    segmenter : mapping
        ``method``, ``fingerprint``, ``phagoflow_version`` and ``segmenter`` (the segmenter's
        provenance), the same for every field of a run.
    field : str
        Field name ``rRRcCCfFFpPP``.
    shape : (H, W) tuple of int
        Field size in pixels.
    pixel_size_um : float
        Pixel size in µm (NaN when unknown: recorded as null).
    sources : mapping
        :func:`source_digests` of the field.
    """
    return {
        "schema": MASK_SCHEMA,
        **segmenter,
        "field": field,
        "shape": [int(shape[0]), int(shape[1])],
        "pixel_size_um": pixel_size_um if math.isfinite(pixel_size_um) else None,
        "sources": dict(sources),
    }


def write_mask(path: Path, mask: NDArray[Any], record: Mapping[str, Any]) -> None:
    """Write the mask and its record as one file, atomically (temporary name, then rename).

    Raises
    ------
    OSError
        The folder cannot be written (read-only, full); no file under ``path``'s name changes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tifffile.imwrite(
            tmp, mask, compression="zlib", metadata=None, description=json.dumps(dict(record))
        )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_mask(
    path: Path, shape: tuple[int, int]
) -> tuple[NDArray[np.uint8], dict[str, Any] | None] | None:
    """A stored mask and its record; ``None`` when missing, unreadable or not a valid mask.

    The record is ``None`` when the file has none (a mask from before records existed, or not
    written by phagoflow: a description without a ``schema`` key is not a record). A mask of
    the wrong shape or dtype, or with values above 2, is not a mask.
    """
    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages.first
            description = page.description
            mask = page.asarray()
    except Exception:  # missing, truncated, not a TIFF: all mean "no usable mask"
        return None
    if mask.shape != tuple(shape) or mask.dtype != np.uint8 or mask.max(initial=0) > 2:
        return None
    try:
        record = json.loads(description) if description else None
    except ValueError:
        record = None
    if not (isinstance(record, dict) and "schema" in record):
        record = None  # e.g. tifffile's own {"shape": [...]}: not a mask record
    return np.asarray(mask), record


def reuse_mismatch(
    stored: Mapping[str, Any] | None, expected: Mapping[str, Any], keys: tuple[str, ...]
) -> str | None:
    """Why a stored mask cannot stand for ``expected``; ``None`` when every key matches.

    Parameters
    ----------
    stored : mapping or None
        The record read with the mask (``None``: the mask has no record).
    expected : mapping
        :func:`mask_record` of this run for the field.
    keys : tuple of str
        :data:`REUSE_KEYS` to reuse a mask in place of segmenting, :data:`SOURCE_KEYS` to
        measure another method's mask on the same pixels.

    Returns
    -------
    str or None
        e.g. ``"fingerprint changed"``; the first differing key, in ``keys`` order.
    """
    if stored is None:
        return "no mask record"
    for key in keys:
        if stored.get(key) != expected.get(key):
            return f"{key} changed"
    return None


def clear_stale_temps(masks_dir: Path) -> int:
    """Delete temporary masks a stopped run left in ``masks_dir/<method>/``; returns how many."""
    n = 0
    if masks_dir.is_dir():
        for tmp in masks_dir.glob(f"*/{_TMP_GLOB}"):
            tmp.unlink(missing_ok=True)
            n += 1
    return n
