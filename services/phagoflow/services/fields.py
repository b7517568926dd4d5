"""Fields in the bucket as arrays, and results as bucket objects: the services' shared I/O.

Every consumer of ``FieldAcquired`` reads a field the same way: the segmentation services
(:mod:`~phagoflow.services.segmentation`), the review app's store
(:mod:`phagoflow.review.store`) and the OME-Zarr export of metrics
(:mod:`~phagoflow.services.plate_export`). A field is assembled exactly as
:func:`phagoflow.core.opera.load_field` assembles it from an export (uint16 × intensity factor,
``[DsRed, pHluorin]``), so the streaming results equal ``phagoflow run``'s. Results are written
in the embedded runner's formats (uint8 zlib TIFF masks, the ``objects.csv`` columns).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import tifffile

from phagoflow import events as ev
from phagoflow.core.counting import OBJECT_COLUMNS, ObjectRecord
from phagoflow.core.opera.catalogue import ROLE_ORDER, ChannelRole, FieldKey
from phagoflow.services.kafkaio import PermanentError
from phagoflow.services.objectstore import ObjectStore

__all__ = ["channel_plane", "encode_mask", "field_image", "field_nuclei", "objects_csv"]


def field_image(
    event: ev.FieldAcquired, store: ObjectStore
) -> tuple[FieldKey, npt.NDArray[np.float32], float]:
    """Download and assemble the ``(2, H, W)`` float32 field of a :class:`FieldAcquired`.

    The channels are ordered ``[DsRed, pHluorin]`` and multiplied by their intensity factor,
    exactly as :func:`phagoflow.core.opera.load_field` does for the same export.

    Raises
    ------
    PermanentError
        A channel is missing from the event, or its TIFF is unreadable or not ``(size_y,
        size_x)`` uint16.
    ObjectMissing, ChecksumMismatch, StoreUnavailable
        From the store.
    """
    key = ev.field_key(event.field)
    h, w = int(event.size_y), int(event.size_x)
    if h < 1 or w < 1:
        raise PermanentError(f"{key.name}: FieldAcquired without a field size ({w} x {h})")
    if not math.isfinite(event.pixel_size_um) or event.pixel_size_um <= 0:
        raise PermanentError(f"{key.name}: invalid pixel size {event.pixel_size_um} um")
    image = np.empty((2, h, w), dtype=np.float32)
    for i, role in enumerate(ROLE_ORDER):
        if role.value not in event.channels:
            raise PermanentError(f"{key.name}: FieldAcquired has no {role.value} channel")
        image[i] = channel_plane(event.channels[role.value], store, (h, w))
    return key, image, float(event.pixel_size_um)


def field_nuclei(event: ev.FieldAcquired, store: ObjectStore) -> npt.NDArray[np.float32] | None:
    """The ``(H, W)`` float32 nuclear-stain plane of a field, or ``None`` when it has none.

    As :func:`phagoflow.core.opera.load_nuclei`: raw counts × intensity factor. Raises as
    :func:`field_image`.
    """
    channel = event.channels.get(ChannelRole.NUCLEI.value)
    if channel is None:
        return None
    return channel_plane(channel, store, (int(event.size_y), int(event.size_x)))


def channel_plane(
    channel: ev.ChannelImage, store: ObjectStore, shape: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """One channel's uint16 TIFF from the store, as float32 × its intensity factor."""
    data = store.get_bytes(channel.object.key, sha256=channel.object.sha256 or None)
    try:
        plane = tifffile.imread(io.BytesIO(data))
    except Exception as exc:
        raise PermanentError(
            f"{channel.object.key}: cannot read the TIFF ({type(exc).__name__}: {exc})"
        ) from exc
    if plane.shape != shape or plane.dtype != np.uint16:
        raise PermanentError(
            f"{channel.object.key}: {plane.dtype} {plane.shape}, expected uint16 {shape}"
        )
    out = plane.astype(np.float32)
    factor = channel.intensity_factor if channel.HasField("intensity_factor") else 1.0
    if factor != 1.0:
        out *= np.float32(factor)
    return out


def encode_mask(mask: npt.NDArray[Any]) -> bytes:
    """uint8 class mask as a zlib-compressed TIFF (the embedded runner's mask format)."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(mask, dtype=np.uint8), compression="zlib", metadata=None)
    return buf.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def objects_csv(plate: str, key: FieldKey, method: str, objects: Sequence[ObjectRecord]) -> bytes:
    """Per-object table of one field, the columns of the embedded ``objects.csv``."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(("plate", "well", "field", "method", *OBJECT_COLUMNS))
    for obj in objects:
        row = obj.as_row()
        writer.writerow(
            (plate, key.well, key.name, method, *(_csv_value(row[c]) for c in OBJECT_COLUMNS))
        )
    return buf.getvalue().encode()
