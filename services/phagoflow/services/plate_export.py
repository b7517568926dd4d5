"""metrics' OME-Zarr export: a complete plate, from the object store, as an OME-Zarr HCS plate.

With ``PHAGOFLOW_METRICS_OME_ZARR=true`` metrics writes, once a plate is complete, what
``phagoflow run --ome-zarr`` writes — the same :class:`~phagoflow.core.omezarr.OmeZarrPlateWriter`,
the same channel names, pixel type, label images and well table — from what the stream stored:
each field's raw channel TIFFs (ingest's manifest names their keys, checksums and channel names)
and each method's mask. The plate is written to a local temporary folder, then uploaded file by
file under ``reports/<plate>/<plate>.ome.zarr/`` (metadata last, see
:func:`~phagoflow.embedded.omezarr.publish_tree`).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tifffile

from phagoflow import events as ev
from phagoflow.core.counting import WellSummary
from phagoflow.core.omezarr import OmeZarrPlateWriter
from phagoflow.core.opera.catalogue import ROLE_ORDER, ChannelRole, FieldKey
from phagoflow.embedded.omezarr import (
    channel_names_by_role,
    ome_zarr_path,
    publish_tree,
    well_table,
)
from phagoflow.embedded.screen import Screen
from phagoflow.services.fields import channel_plane
from phagoflow.services.objectstore import ObjectStore

__all__ = ["export_plate_ome_zarr"]


def export_plate_ome_zarr(
    store: ObjectStore,
    plate: str,
    *,
    manifest: Mapping[str, Any],
    versions: Mapping[tuple[FieldKey, str], str],
    wells: Sequence[WellSummary],
    screen: Screen | None,
    methods: Sequence[str],
) -> str:
    """Write the plate as OME-Zarr into the store; returns the key of its folder.

    Parameters
    ----------
    store : ObjectStore
    plate : str
        Plate id.
    manifest : mapping
        Ingest's manifest of the plate (plate geometry, pixel size, field size, and per field
        the channel objects).
    versions : mapping of (FieldKey, method) to str
        The model version of each field's result per method (it names the mask object).
    wells, screen, methods
        What ``wells.csv`` was written from (the well table).
    """
    keys = sorted({key for key, _ in versions})
    channels = [manifest["fields"][k.name]["channels"] for k in keys]
    dtype = _plane_dtype(channels)
    size_yx = (int(manifest["size_yx"][0]), int(manifest["size_yx"][1]))
    name = ome_zarr_path(Path("."), plate).name
    with tempfile.TemporaryDirectory(prefix="phagoflow-omezarr-") as tmp:
        root = Path(tmp) / name
        writer = OmeZarrPlateWriter(
            root,
            plate_id=plate,
            plate_rows=int(manifest["plate_rows"]),
            plate_columns=int(manifest["plate_columns"]),
            channel_names=_channel_names(channels[0] if channels else {}),
            pixel_size_um=float(manifest["pixel_size_um"]),
            label_names=list(methods),
            dtype=dtype,
        )
        image_no: dict[tuple[int, int], int] = {}
        for key, chans in zip(keys, channels, strict=True):
            labels = {
                m: _mask(store, plate, key, m, versions[(key, m)], size_yx)
                for m in methods
                if (key, m) in versions
            }
            well = (key.row, key.col)
            image_no[well] = image_no.get(well, 0) + 1
            writer.add_field(
                *well, image_no[well], _planes(store, chans, size_yx, dtype), labels=labels
            )
        writer.set_well_table(well_table(wells, screen))
        writer.close()
        prefix = ev.report_object_key(plate, name)
        publish_tree(root, lambda k, data: store.put_bytes(k, data), prefix)
    return prefix


def _channel_names(channels: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """Plane names as ``run --ome-zarr`` gives them, from the manifest's channel names."""
    roles = [*ROLE_ORDER, ChannelRole.NUCLEI]
    return channel_names_by_role(
        {r: str(channels[r.value].get("name") or r.value) for r in roles if r.value in channels}
    )


def _plane_dtype(channels: Sequence[Mapping[str, Mapping[str, Any]]]) -> Any:
    """uint16 when every plane is raw counts (factor 1), else float32 (as ``run``)."""
    factors = {float(c.get("intensity_factor") or 1.0) for f in channels for c in f.values()}
    return np.uint16 if factors <= {1.0} else np.float32


def _planes(
    store: ObjectStore,
    channels: Mapping[str, Mapping[str, Any]],
    size_yx: tuple[int, int],
    dtype: Any,
) -> npt.NDArray[Any]:
    """``(C, Y, X)`` planes of one field: DsRed, pHluorin, then the nuclear stain if any."""
    roles = [r for r in (*ROLE_ORDER, ChannelRole.NUCLEI) if r.value in channels]
    planes = np.stack([channel_plane(_image(channels[r.value]), store, size_yx) for r in roles])
    if dtype == np.uint16:
        return np.asarray(np.clip(np.rint(planes), 0, 65535), dtype=np.uint16)
    return np.asarray(planes, dtype=np.float32)


def _image(entry: Mapping[str, Any]) -> ev.ChannelImage:
    image = ev.ChannelImage(object=ev.ObjectRef(key=entry["key"], sha256=entry.get("sha256", "")))
    factor = float(entry.get("intensity_factor") or 1.0)
    if factor != 1.0:
        image.intensity_factor = factor
    return image


def _mask(
    store: ObjectStore,
    plate: str,
    key: FieldKey,
    method: str,
    version: str,
    size_yx: tuple[int, int],
) -> npt.NDArray[np.uint8]:
    data = store.get_bytes(ev.mask_object_key(plate, key, method, version))
    mask = np.asarray(tifffile.imread(io.BytesIO(data)), dtype=np.uint8)
    if mask.shape != size_yx:
        raise ValueError(f"{key.name} {method} mask is {mask.shape}, expected {size_yx}")
    return mask
