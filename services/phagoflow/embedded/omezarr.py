"""``phagoflow run --ome-zarr``: the plate, its masks and well table as an OME-Zarr HCS plate.

After the tables, :func:`write_run_ome_zarr` reads every counted field again (raw camera counts,
as acquired: uint16; a ``.flex`` plate with a Factor other than 1 is written as float32), its
stored masks of every method, and writes ``OUT/<plate>.ome.zarr`` with
:class:`phagoflow.core.omezarr.OmeZarrPlateWriter`: channels named as in the export (DsRed,
pHluorin, the nuclear stain when there is one), the pixel size in µm, one label image per method
and a well table of the per-well numbers. The plate is written under a temporary name and
renamed, so a stopped run never leaves half a plate under the final name. An interrupted run
writes none.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from phagoflow.core.omezarr import OmeZarrPlateWriter
from phagoflow.core.opera import PlateCatalogue, load_field, load_nuclei
from phagoflow.core.opera.catalogue import ROLE_ORDER, ChannelRole, FieldRecord
from phagoflow.embedded.masks import mask_path, read_mask

if TYPE_CHECKING:
    from phagoflow.core.counting import WellSummary
    from phagoflow.embedded.run import RunResult
    from phagoflow.embedded.screen import Screen

__all__ = [
    "channel_names",
    "channel_names_by_role",
    "ome_zarr_path",
    "publish_tree",
    "well_table",
    "write_run_ome_zarr",
]

#: Per-well numbers in the OME-Zarr well table, prefixed by the method (``cip_phagophores``).
_TABLE_NUMBERS = (
    "fields_ok",
    "fields_failed",
    "phagophores",
    "autolysosomes",
    "phagophores_per_field_mean",
    "autolysosomes_per_field_mean",
    "autolysosome_phagophore_ratio",
    "phagophores_per_cell",
    "autolysosomes_per_cell",
    "phagophores_per_1000um2",
    "autolysosomes_per_1000um2",
)


def ome_zarr_path(out: Path, plate_id: str) -> Path:
    """``OUT/<plate>.ome.zarr`` (characters other than letters, digits, ``-_.`` become ``_``)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in plate_id) or "plate"
    return out / f"{safe}.ome.zarr"


def channel_names(catalogue: PlateCatalogue) -> tuple[str, ...]:
    """Names of the planes written: DsRed and pHluorin roles, then the nuclear stain."""
    return channel_names_by_role({role: c.name for c in catalogue.channels for role in c.roles})


def channel_names_by_role(by_role: Mapping[ChannelRole, str]) -> tuple[str, ...]:
    """:func:`channel_names` from a role → channel name mapping (the stream's manifest)."""
    names = [by_role.get(role, str(role)) for role in ROLE_ORDER]
    if len(set(names)) < len(names):  # one channel standing in for both roles
        names = [f"{n} ({role})" for n, role in zip(names, ROLE_ORDER, strict=True)]
    if ChannelRole.NUCLEI in by_role:
        names.append(by_role[ChannelRole.NUCLEI])
    return tuple(names)


def _planes(catalogue: PlateCatalogue, record: FieldRecord, dtype: Any) -> NDArray[Any]:
    image = load_field(catalogue, record)
    nuclear = load_nuclei(catalogue, record) if catalogue.nuclear_channel is not None else None
    planes = image if nuclear is None else np.concatenate([image, nuclear[None]])
    if dtype == np.uint16:
        return np.asarray(np.clip(np.rint(planes), 0, 65535), dtype=np.uint16)
    return np.asarray(planes, dtype=np.float32)


def _plane_dtype(catalogue: PlateCatalogue) -> Any:
    """uint16 when every plane is raw counts (Factor 1), else float32 (counts × Factor)."""
    factors = {src.factor for r in catalogue.fields for src in r.sources.values()}
    return np.uint16 if factors <= {1.0} else np.float32


def well_table(
    wells: Sequence[WellSummary], screen: Screen | None = None
) -> list[dict[str, object]]:
    """One row per well: position, plate-map entry and hit call, then numbers per method.

    Method columns are prefixed by the method (``cip_phagophores_per_cell``); numbers that
    were not measured are NaN, text that the map does not give is "".
    """
    rows: dict[tuple[int, int], dict[str, object]] = {}
    for w in wells:
        row = rows.setdefault((w.row, w.col), _well_head(screen, w.row, w.col))
        row["fields"] = max(int(row.get("fields", 0)), w.fields)  # type: ignore[call-overload]
        row["cells"] = float(w.cells) if w.cells is not None else math.nan
        row["cytoplasm_area_um2"] = w.cytoplasm_area_um2
        values = w.as_row()
        for name in _TABLE_NUMBERS:
            v = values[name]
            row[f"{w.method}_{name}"] = math.nan if v is None else float(v)
        if screen is not None:
            row |= _well_stats_columns(screen, w.method, w.row, w.col)
    columns = list(dict.fromkeys(k for r in rows.values() for k in r))
    return [{k: r.get(k, math.nan) for k in columns} for _, r in sorted(rows.items())]


def _well_head(screen: Screen | None, row: int, col: int) -> dict[str, object]:
    head: dict[str, object] = {"row": row, "col": col}
    if screen is not None:
        entry = screen.plate_map.entries.get((row, col))
        head["role"] = entry.role.value if entry is not None else ""
        head["compound"] = entry.compound if entry is not None else ""
    return head


def _well_stats_columns(screen: Screen, method: str, row: int, col: int) -> dict[str, object]:
    stats = screen.of(method)
    ws = None
    if stats is not None:
        ws = next((s for s in stats.wells if (s.row, s.col) == (row, col)), None)
    return {
        f"{method}_robust_z": ws.robust_z if ws is not None else math.nan,
        f"{method}_hit": bool(ws is not None and ws.hit),
    }


def write_run_ome_zarr(result: RunResult, *, progress: bool = False) -> Path:
    """Write ``OUT/<plate>.ome.zarr`` of a finished run; returns its path.

    Fields that failed (no counts for any method) are left out; a well keeps the fields that
    were counted, numbered 0, 1, … in acquisition order (field, then plane, then timepoint).
    An earlier plate under the same name is replaced once the new one is whole.

    Raises
    ------
    OSError
        The plate cannot be written (the previous one, if any, is kept).
    """
    cat, out = result.catalogue, result.out_dir
    final = ome_zarr_path(out, cat.plate_id)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    counted = {o.name for o in result.outcomes if o.counts is not None}
    records = [r for r in cat.fields if r.key.name in counted]
    dtype = _plane_dtype(cat)
    writer = OmeZarrPlateWriter(
        tmp,
        plate_id=cat.plate_id,
        plate_rows=cat.plate_rows,
        plate_columns=cat.plate_columns,
        channel_names=channel_names(cat),
        pixel_size_um=cat.pixel_size_um,
        label_names=result.methods,
        dtype=dtype,
    )
    image_no: dict[tuple[int, int], int] = {}
    try:
        for record in tqdm(records, desc="OME-Zarr", unit="field", disable=not progress):
            labels = {}
            for method in result.methods:
                stored = read_mask(mask_path(out, method, record.key.name), cat.size_yx)
                if stored is not None:
                    labels[method] = stored[0]
            well = (record.key.row, record.key.col)
            image_no[well] = image_no.get(well, 0) + 1
            planes = _planes(cat, record, dtype)
            writer.add_field(*well, image_no[well], planes, labels=labels)
        writer.set_well_table(well_table(result.wells, result.screen))
        writer.close()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def publish_tree(root: Path, put: Callable[[str, bytes], object], prefix: str) -> int:
    """Hand every file under ``root`` to ``put(prefix/relative/path, bytes)``; returns the count.

    How a plate written to a local folder reaches an object store (metrics' ``.ome.zarr``):
    files are sent in sorted order, metadata (``zarr.json``) of each group after its arrays'
    chunks, so a reader that finds the root metadata finds everything it names.
    """
    files = sorted(p for p in root.rglob("*") if p.is_file())
    files.sort(key=lambda p: (p.name == "zarr.json", -len(p.relative_to(root).parts)))
    for path in files:
        put(f"{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes())
    return len(files)
