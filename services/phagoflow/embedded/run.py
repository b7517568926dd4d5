"""The embedded runner: one plate export in, masks + tables + pictures + provenance out.

``phagoflow run EXPORT --out OUT`` calls :func:`run_plate`, which needs no servers: it reads the
export with :mod:`phagoflow.core.opera`, segments every field with each requested
:class:`~phagoflow.core.segmenters.Segmenter`, counts objects with
:mod:`phagoflow.core.counting`, and writes::

    OUT/masks/<method>/rRRcCCfFFpPP.tiff   uint8 label mask per field (0/1/2), field-sized, with
                                           its mask record (what made it) in the TIFF
    OUT/objects.csv                        one row per object
    OUT/wells.csv                          one row per imaged well and method
    OUT/plate_heatmap.png                  per-field means, per-cell / per-area readouts and the
                                           ratio on the plate layout; failed fields marked
    OUT/plate_stats.csv, hits.csv,         with --plate-map: Z′ per method and readout, the hits,
    OUT/dose_response.csv                  4PL fits (phagoflow.embedded.screen)
    OUT/PLATE.ome.zarr                     with --ome-zarr: the plate as OME-Zarr 0.5 HCS
    OUT/report.html                        failures, Z′ and hits first, then heat-maps, tables,
                                           crops of the most doubtful objects
    OUT/run.json                           provenance: index checksum, parameters, versions, timings

Before any work the output folder, the free space and the worker count are checked
(:mod:`phagoflow.embedded.preflight`); a refusal is a :class:`RunError` and leaves ``OUT`` as it
was. Re-running on the same OUT reuses a field's mask only when the record stored in the mask
matches, key by key, what this run would record (:mod:`phagoflow.embedded.masks`); objects are
re-measured from the stored masks, which is cheap. An interrupted run (Ctrl-C) stops its workers
at once, writes the tables, ``run.json`` and the report of the fields finished so far, marked
``interrupted``, and a re-run resumes from every finished field. Masks of a method not run this
time (``--method cdl`` into a folder made with ``--method cip``) are measured again and kept in
the tables. A field that cannot be read or segmented is reported, never fatal; an output folder
that cannot be written stops the run.

Cell readouts (nuclei from a nuclear-stain channel, cytoplasm area from the Rosella signal,
:func:`phagoflow.core.cells.field_cells`) are measured from each field's images on every run,
once per field whatever the methods; they are not cached, because they depend on no mask and on
no segmentation parameter, only on the pixels and :class:`~phagoflow.core.cells.CellParameters`
(recorded in ``run.json``), and recomputing them costs about what segmenting a field with the
CIP does.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from phagoflow import __version__
from phagoflow.core.cells import CellParameters, FieldCells, field_cells
from phagoflow.core.cip import CipParameters
from phagoflow.core.counting import (
    OBJECT_COLUMNS,
    WELL_COLUMNS,
    FailedField,
    FieldCounts,
    ObjectRecord,
    WellSummary,
    aggregate_wells,
    available_readouts,
    count_field,
    measure_objects,
)
from phagoflow.core.opera import PlateCatalogue, RoleOverrides, load_field, load_nuclei, read_plate
from phagoflow.core.opera.catalogue import FieldKey, FieldRecord, PlateFormatError
from phagoflow.core.qc import well_disagreement
from phagoflow.core.screening import ScreeningParameters
from phagoflow.core.segmenters import METHODS, Segmenter, make_segmenter
from phagoflow.embedded.fieldpool import FieldPool, PoolError, WorkerFailure
from phagoflow.embedded.masks import (
    REUSE_KEYS,
    SOURCE_KEYS,
    clear_stale_temps,
    code_digest,
    mask_path,
    mask_record,
    read_mask,
    reuse_mismatch,
    source_digests,
    write_mask,
)
from phagoflow.embedded.preflight import (
    RunError,
    check_free_space,
    check_out_dir,
    check_workers,
    estimate_output_bytes,
    output_lock,
)
from phagoflow.embedded.screen import (
    SCREEN_COLUMNS,
    Screen,
    load_plate_map,
    screen_statistics,
    statistics_record,
    well_screen_values,
    write_screen_tables,
)

__all__ = [
    "STATUS_COMPLETE",
    "STATUS_FAILED_FIELDS",
    "STATUS_INTERRUPTED",
    "FieldOutcome",
    "RunError",
    "RunResult",
    "run_plate",
    "write_wells_csv",
]

logger = logging.getLogger(__name__)

_PACKAGES = ("numpy", "scipy", "scikit-image", "tifffile", "pydantic", "torch", "onnxruntime")

#: Where each method's mask-making code starts (hashed with its phagoflow.core imports, and
#: with segmenters.py, into every mask record: see phagoflow.embedded.masks.code_digest).
_MASK_CODE = {"cip": "phagoflow.core.cip", "cdl": "phagoflow.core.inference"}

#: :attr:`RunResult.status`: every field of every method succeeded.
STATUS_COMPLETE = "complete"
#: Every field was tried; some could not be read or segmented (listed in ``failures``).
STATUS_FAILED_FIELDS = "failed_fields"
#: Stopped by Ctrl-C (or SIGTERM) part way: the outputs cover the fields finished so far.
STATUS_INTERRUPTED = "interrupted"


@dataclass
class FieldOutcome:
    """What happened to one field for one method.

    Attributes
    ----------
    name, method : str
        Field name ``rRRcCCfFFpPP`` and method.
    objects, counts
        The measured objects and their counts; empty / ``None`` unless the field was counted.
    error : str or None
        Why the field failed (``"Type: message"``); ``None`` when it did not fail.
    stage : str
        Where it failed: ``"read"``, ``"cells"``, ``"segment"``, ``"write"``, ``"measure"`` or
        ``"worker"``.
    path : str
        The file a failure is about (the source file named by the error, else the field's
        source files joined by ``" + "``; the mask for a write failure).
    reused : bool
        The stored mask was used: its record matched this run's (or, ``kept``, the pixels).
    kept : bool
        The method was not run this time; its stored mask was measured.
    not_kept : str
        For ``kept``: why the stored mask could not be used (no counts, not a failure).
    recomputed_because : str
        Why a stored mask was not reused (``"no mask"``, ``"fingerprint changed"``, ...).
    made_by : dict or None
        For ``kept``: fingerprint, version and segmenter provenance from the mask record.
    fatal : bool
        The output folder could not be written: the run stops.
    seconds : dict of str to float
        ``read``, ``cells``, ``segment`` and ``measure`` wall times, in seconds.
    """

    name: str
    method: str
    objects: list[ObjectRecord] = field(default_factory=list)
    counts: FieldCounts | None = None
    error: str | None = None
    stage: str = ""
    path: str = ""
    reused: bool = False
    kept: bool = False
    not_kept: str = ""
    recomputed_because: str = ""
    made_by: dict[str, Any] | None = None
    fatal: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    """Summary returned by :func:`run_plate`.

    ``methods`` are every method with results in ``OUT`` (``methods_run`` plus
    ``kept_methods``); ``status`` is one of :data:`STATUS_COMPLETE`,
    :data:`STATUS_FAILED_FIELDS`, :data:`STATUS_INTERRUPTED`; ``fields_total`` counts the
    plate's fields, readable or not. ``screen`` holds the plate map and statistics
    (``--plate-map``), ``readouts`` the readouts the wells have, ``ome_zarr`` the OME-Zarr
    plate written (``--ome-zarr``).
    """

    out_dir: Path
    catalogue: PlateCatalogue
    methods: tuple[str, ...]
    wells: list[WellSummary]
    outcomes: list[FieldOutcome]
    failures: list[dict[str, str]]
    seconds: float
    status: str = STATUS_COMPLETE
    methods_run: tuple[str, ...] = ()
    kept_methods: tuple[str, ...] = ()
    fields_total: int = 0
    screen: Screen | None = None
    readouts: tuple[str, ...] = ()
    ome_zarr: Path | None = None

    @property
    def fields_done(self) -> int:
        """Fields with at least one method counted."""
        return len({o.name for o in self.outcomes if o.counts is not None})

    @property
    def interrupted(self) -> bool:
        return self.status == STATUS_INTERRUPTED


@dataclass(frozen=True)
class _Plan:
    """What a run does, decided in the parent before any field is touched (picklable: it is
    sent to every worker; the segmenters are built from ``specs`` there)."""

    methods: tuple[str, ...]
    kept: tuple[str, ...]
    specs: dict[str, dict[str, Any]]
    made_by: dict[str, dict[str, Any]]
    threads: int
    settings: dict[str, Any]
    cells: CellParameters | None = None

    @property
    def all_methods(self) -> tuple[str, ...]:
        return tuple(m for m in METHODS if m in self.methods or m in self.kept)


# --------------------------------------------------------------------------- worker state
# One process-wide state per worker, set by _init_worker; the parent uses it too when workers=1.
_STATE: dict[str, Any] = {}


def _set_threads(threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


def _init_state(
    catalogue: PlateCatalogue, out_dir: Path, segmenters: dict[str, Segmenter], plan: _Plan
) -> None:
    _STATE.clear()
    _STATE.update(
        catalogue=catalogue, out_dir=out_dir, segmenters=segmenters, plan=plan, digests={}
    )


def _init_worker(catalogue: PlateCatalogue, out_dir: Path, plan: _Plan) -> None:
    _set_threads(plan.threads)
    segmenters = {m: make_segmenter(m, **kw) for m, kw in plan.specs.items()}
    _init_state(catalogue, out_dir, segmenters, plan)


def _process_field(record: FieldRecord) -> list[FieldOutcome]:
    """Load one field, then segment (or reuse) and count it with every method (in a worker)."""
    catalogue: PlateCatalogue = _STATE["catalogue"]
    plan: _Plan = _STATE["plan"]
    t0 = time.perf_counter()
    try:
        image = load_field(catalogue, record)
        nuclear = load_nuclei(catalogue, record) if plan.cells is not None else None
        sources = source_digests(record, catalogue.root, _STATE["digests"])
    except (PlateFormatError, OSError, ValueError) as exc:
        return _all_failed(record, plan, exc, "read")
    t_read = time.perf_counter() - t0
    try:
        cells = _cells(image, nuclear, catalogue.pixel_size_um, plan.cells)
    except (ValueError, ArithmeticError) as exc:
        logger.exception("field %s: measuring its cells failed", record.key.name)
        return _all_failed(record, plan, exc, "cells")
    t_cells = time.perf_counter() - t0 - t_read
    pixels = mask_record(
        {},
        field=record.key.name,
        shape=(image.shape[1], image.shape[2]),
        pixel_size_um=catalogue.pixel_size_um,
        sources=sources,
    )
    loaded = _LoadedField(record, image, pixels, cells)
    outcomes = [_segment_one(m, loaded) for m in plan.methods]
    for o in outcomes:
        o.seconds.update(read=t_read, cells=t_cells)
    return outcomes + [_keep_one(m, loaded) for m in plan.kept]


def _all_failed(record: FieldRecord, plan: _Plan, exc: Exception, stage: str) -> list[FieldOutcome]:
    """The field failed before any method could run: one failed outcome per method."""
    reason, path = f"{type(exc).__name__}: {exc}", _failing_file(record, str(exc))
    return [
        FieldOutcome(record.key.name, m, error=reason, stage=stage, path=path)
        for m in plan.all_methods
    ]


def _cells(
    image: NDArray[Any],
    nuclear: NDArray[Any] | None,
    pixel_size_um: float,
    params: CellParameters | None,
) -> FieldCells | None:
    """The field's cells (:func:`~phagoflow.core.cells.field_cells`); ``None`` when off."""
    if params is None:
        return None
    return field_cells(image, nuclear, pixel_size_um=pixel_size_um, params=params)


@dataclass(frozen=True)
class _LoadedField:
    """One field as every method's step sees it (in a worker).

    Attributes
    ----------
    record : FieldRecord
        The field's index entry.
    image : (2, H, W) ndarray
        DsRed and pHluorin planes.
    pixels : dict
        The mask-record keys that identify these pixels (field, shape, pixel size, sources).
    cells : FieldCells or None
        The field's cells, when cell readouts are on.
    """

    record: FieldRecord
    image: NDArray[Any]
    pixels: dict[str, Any]
    cells: FieldCells | None

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the field in pixels."""
        return (self.image.shape[1], self.image.shape[2])


def _segment_one(method: str, loaded: _LoadedField) -> FieldOutcome:
    """Reuse the stored mask if its record matches this run's, else segment and store."""
    catalogue: PlateCatalogue = _STATE["catalogue"]
    plan: _Plan = _STATE["plan"]
    record, image = loaded.record, loaded.image
    name = record.key.name
    path = mask_path(_STATE["out_dir"], method, name)
    expected = {**loaded.pixels, **plan.made_by[method]}
    t1 = time.perf_counter()
    stored = read_mask(path, loaded.shape)
    why = "no mask" if stored is None else reuse_mismatch(stored[1], expected, REUSE_KEYS)
    if stored is not None and why is None:
        mask = stored[0]
    else:
        try:
            mask = _STATE["segmenters"][method].segment(image, catalogue.pixel_size_um)
        except Exception as exc:
            logger.exception("field %s failed with %s", name, method)
            reason, files = f"{type(exc).__name__}: {exc}", _failing_file(record, str(exc))
            return FieldOutcome(name, method, error=reason, stage="segment", path=files)
        try:
            write_mask(path, mask, {**expected, "created": _now()})
        except OSError as exc:
            reason = f"cannot write {path}: {exc.strerror or exc}"
            return FieldOutcome(
                name, method, error=reason, stage="write", path=str(path), fatal=True
            )
    outcome = _measured(method, loaded, mask)
    outcome.reused, outcome.recomputed_because = why is None, why or ""
    outcome.seconds["segment"] = time.perf_counter() - t1 - outcome.seconds.get("measure", 0.0)
    return outcome


def _keep_one(method: str, loaded: _LoadedField) -> FieldOutcome:
    """Measure the stored mask of a method not run this time, if it was made from these pixels."""
    name = loaded.record.key.name
    stored = read_mask(mask_path(_STATE["out_dir"], method, name), loaded.shape)
    why = "no mask" if stored is None else reuse_mismatch(stored[1], loaded.pixels, SOURCE_KEYS)
    if stored is None or why is not None:
        return FieldOutcome(name, method, kept=True, not_kept=why or "")
    outcome = _measured(method, loaded, stored[0])
    outcome.reused = outcome.kept = True
    rec = stored[1] or {}
    outcome.made_by = {k: rec.get(k) for k in ("fingerprint", "phagoflow_version", "segmenter")}
    return outcome


def _measured(method: str, loaded: _LoadedField, mask: NDArray[Any]) -> FieldOutcome:
    """Objects and counts of ``mask`` on the field (a failed outcome if measuring raised)."""
    catalogue: PlateCatalogue = _STATE["catalogue"]
    key = loaded.record.key
    name = key.name
    t = time.perf_counter()
    try:
        objects = measure_objects(loaded.image, mask, catalogue.pixel_size_um)
        counts = count_field(
            objects, plate=catalogue.plate_id, key=key, method=method, cells=loaded.cells
        )
    except Exception as exc:
        logger.exception("field %s: measuring the %s mask failed", name, method)
        return FieldOutcome(name, method, error=f"{type(exc).__name__}: {exc}", stage="measure")
    seconds = {"measure": time.perf_counter() - t}
    return FieldOutcome(name, method, objects=objects, counts=counts, seconds=seconds)


def _failing_file(record: FieldRecord, message: str) -> str:
    """The source file an error message names, else all of the field's source files."""
    files = sorted({str(src.path) for src in record.sources.values()})
    named = [f for f in files if f in message or Path(f).name in message]
    return named[0] if named else " + ".join(files)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- provenance
def _package_versions() -> dict[str, str]:
    versions = {"phagoflow": __version__, "python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


# --------------------------------------------------------------------------- main entry
def run_plate(
    export: Path | str,
    out_dir: Path | str,
    *,
    methods: Sequence[str] = ("cip",),
    model_dir: Path | None = None,
    workers: int = 1,
    cip_params: CipParameters | None = None,
    backend: str = "onnxruntime",
    batch_size: int = 8,
    threads: int | None = None,
    overlays: int = 4,
    progress: bool = True,
    channel_roles: RoleOverrides | None = None,
    plate_map: Path | None = None,
    ome_zarr: bool = False,
    cell_readouts: bool = True,
    cell_params: CellParameters | None = None,
    screening: ScreeningParameters | None = None,
) -> RunResult:
    """Process one plate export end to end with no servers.

    Parameters
    ----------
    export : path
        The folder holding the index (or its parent), or a folder of ``.flex`` files.
    out_dir : path
        Output folder (created); see the module docstring for its layout.
    methods : sequence of {'cip', 'cdl'}
        Segmentation methods to run on every field.
    model_dir : path, optional
        U-Net model folder for ``cdl``; default: the packaged model.
    workers : int
        Worker processes, at least 1 (fields are processed in parallel).
    cip_params : CipParameters, optional
        CIP parameters; recorded in every CIP mask and in ``run.json``.
    backend : {'onnxruntime', 'torch'}
        U-Net backend.
    batch_size : int
        U-Net tiles (256 × 256 px) per forward pass.
    threads : int, optional
        Intra-op threads per worker (default: cores // workers, at least 1).
    overlays : int
        Number of field overlays in the report (none when interrupted).
    progress : bool
        Show a progress bar.
    channel_roles : mapping, optional
        Channel-role override (``--channel-role``): channel name or id → ``"dsred"``,
        ``"phluorin"``, ``"both"`` or ``"none"`` (see :mod:`phagoflow.core.opera.roles`).
    plate_map : path, optional
        Plate-map CSV (``--plate-map``): checked against the export before any work; plate
        statistics are computed with it (:mod:`phagoflow.embedded.screen`).
    ome_zarr : bool
        Also write ``OUT/<plate>.ome.zarr`` (OME-Zarr 0.5 HCS; needs the ``ome-zarr`` extra).
    cell_readouts : bool
        Measure each field's cells for the per-cell / per-area readouts.
    cell_params : CellParameters, optional
        Nuclei and cytoplasm segmentation parameters (µm).
    screening : ScreeningParameters, optional
        Hit threshold, direction and readout, Z′ threshold, 4PL settings.

    Returns
    -------
    RunResult
        With ``status`` :data:`STATUS_INTERRUPTED` when a ``KeyboardInterrupt`` stopped the
        field loop (the outputs then cover the finished fields).

    Raises
    ------
    RunError
        Before any work: bad ``workers``, an output folder that is a file, not writable, in
        use by another run or without room; or later, when the output folder stops accepting
        writes (the finished masks are kept).
    PlateFormatError, ModelDirError
        The export or the model folder cannot be used.
    PlateMapError
        The plate map cannot be used with this export (before any work).
    """
    started = time.perf_counter()
    out = Path(out_dir)
    check_workers(workers)
    methods = tuple(dict.fromkeys(methods))
    room = check_out_dir(out, methods)
    catalogue = _read_export(export, channel_roles)
    cells = (cell_params or CellParameters()) if cell_readouts else None
    has_nuclei = catalogue.nuclear_channel is not None
    readouts = tuple(available_readouts(nuclei=has_nuclei, cells=cells is not None))
    params = screening or ScreeningParameters()
    screen = load_plate_map(plate_map, catalogue, params, readouts) if plate_map else None
    if ome_zarr:
        _check_ome_zarr()
    settings = {
        "workers": workers,
        "threads": threads or max(1, (os.cpu_count() or 1) // workers),
        "inference_backend": backend,
        "inference_batch_size": batch_size,
        "overlays": overlays,
        "channel_roles": dict(channel_roles or {}),
        **_analysis_settings(cells, params, plate_map, readouts),
        "ome_zarr": ome_zarr,
    }
    plan, segmenters = _make_plan(
        out, methods, settings, cip_params=cip_params, model_dir=model_dir, cells=cells
    )
    settings["preflight"] = _make_room(out, room, catalogue, len(methods), ome_zarr=ome_zarr)
    # Imported now (matplotlib, ~0.6 s), not after a Ctrl-C: the partial report comes sooner.
    # Not at module level: the workers import this module and never draw.
    import phagoflow.embedded.report  # noqa: F401

    with output_lock(out):
        clear_stale_temps(out / "masks")
        _log_start(catalogue, plan)
        outcomes, stop = _segment_plate(catalogue, out, plan, segmenters, progress=progress)
        return _finish(
            catalogue,
            out,
            plan,
            _Ending(outcomes, stop, time.perf_counter() - started, screen, readouts, progress),
        )


def _read_export(export: Path | str, channel_roles: RoleOverrides | None) -> PlateCatalogue:
    """The export's catalogue; :class:`RunError` when it holds no field at all."""
    catalogue = read_plate(export, channel_roles=channel_roles)
    if not catalogue.fields and not catalogue.problems:
        raise RunError(f"{catalogue.index_path}: the export has no acquired field to process")
    return catalogue


def _analysis_settings(
    cells: CellParameters | None,
    screening: ScreeningParameters,
    plate_map: Path | None,
    readouts: Sequence[str],
) -> dict[str, Any]:
    """The provenance entries of the cell and screening analysis (``run.json`` ``settings``)."""
    return {
        "cell_readouts": cells is not None,
        "cells": cells.model_dump() if cells is not None else None,
        "screening": screening.model_dump(),
        "plate_map": str(plate_map) if plate_map else None,
        "readouts": list(readouts),
    }


def _make_room(
    out: Path, room: Path, catalogue: PlateCatalogue, n_methods: int, *, ome_zarr: bool
) -> dict[str, int]:
    """Check the free space the run needs and create ``out``; return the preflight record.

    Raises
    ------
    RunError
        Too little room (:func:`check_free_space`) or ``out`` cannot be created.
    """
    needed = estimate_output_bytes(len(catalogue.fields), catalogue.size_yx, n_methods)
    if ome_zarr:
        needed += _ome_zarr_bytes(catalogue)
    free = check_free_space(room, needed)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    return {"free_bytes": free, "needed_bytes_estimate": needed}


def _check_ome_zarr() -> None:
    """``--ome-zarr`` needs the ``ome-zarr`` extra (zarr, ome-zarr-models): say so up front."""
    try:
        import ome_zarr_models  # noqa: F401
        import zarr  # noqa: F401
    except ImportError as exc:
        raise RunError(
            f"--ome-zarr needs the ome-zarr extra ({exc.name} is missing): "
            "pip install 'phagoflow[ome-zarr]'"
        ) from None


def _ome_zarr_bytes(catalogue: PlateCatalogue) -> int:
    """Room for the OME-Zarr copy: every plane uncompressed (uint16), an upper bound."""
    h, w = catalogue.size_yx
    planes = 2 + (catalogue.nuclear_channel is not None)
    return len(catalogue.fields) * planes * h * w * 2


def _make_plan(
    out: Path,
    methods: tuple[str, ...],
    settings: dict[str, Any],
    *,
    cip_params: CipParameters | None,
    model_dir: Path | None,
    cells: CellParameters | None = None,
) -> tuple[_Plan, dict[str, Segmenter]]:
    """Build the segmenters once in the parent: validates the model early, gives provenance."""
    specs: dict[str, dict[str, Any]] = {}
    for m in methods:
        if m == "cip":
            specs[m] = {"cip_params": cip_params if cip_params is not None else CipParameters()}
        else:
            specs[m] = {
                "model_dir": model_dir,
                "backend": settings["inference_backend"],
                "batch_size": settings["inference_batch_size"],
                "threads": settings["threads"],
            }
    segmenters = {m: make_segmenter(m, **kw) for m, kw in specs.items()}
    made_by = {
        m: {
            "method": m,
            "fingerprint": s.fingerprint,
            "phagoflow_version": __version__,
            "code_sha256": code_digest(
                [_MASK_CODE.get(m, "phagoflow.core.segmenters")], ["phagoflow.core.segmenters"]
            ),
            "segmenter": s.provenance,
        }
        for m, s in segmenters.items()
    }
    kept = tuple(m for m in METHODS if m not in methods and any((out / "masks" / m).glob("*.tiff")))
    plan = _Plan(methods, kept, specs, made_by, settings["threads"], settings, cells)
    return plan, segmenters


def _log_start(catalogue: PlateCatalogue, plan: _Plan) -> None:
    logger.info(
        "plate %s: %d fields, %d wells, methods %s, %d worker(s)%s",
        catalogue.plate_id,
        len(catalogue.fields),
        len(catalogue.wells),
        ",".join(plan.methods),
        plan.settings["workers"],
        f"; keeping the masks of {','.join(plan.kept)}" if plan.kept else "",
    )


def _segment_plate(
    catalogue: PlateCatalogue,
    out: Path,
    plan: _Plan,
    segmenters: dict[str, Segmenter],
    *,
    progress: bool,
) -> tuple[list[FieldOutcome], str | None]:
    """Every field through :func:`_process_field`; returns the outcomes and why it stopped early.

    The reason is :data:`STATUS_INTERRUPTED` after a ``KeyboardInterrupt`` (the workers are
    terminated at once), a message when the output folder could not be written, else ``None``.
    """
    outcomes: list[FieldOutcome] = []
    stop: str | None = None
    bar = tqdm(
        total=len(catalogue.fields),
        desc=f"{catalogue.plate_id} fields",
        unit="field",
        disable=not progress,
    )
    results = _iterate(catalogue, out, plan, segmenters)
    try:
        for field_outcomes in results:
            outcomes.extend(field_outcomes)
            bar.update(1)
            fatal = next((o for o in field_outcomes if o.fatal), None)
            if fatal is not None:
                stop = str(fatal.error)
                break
    except KeyboardInterrupt:
        stop = STATUS_INTERRUPTED
        logger.info("interrupted after %d fields: stopping the workers", bar.n)
    except PoolError as exc:
        raise RunError(str(exc)) from None
    finally:
        results.close()  # terminates the workers when the loop did not run to its end
        bar.close()
    if stop is not None:
        logger.debug("workers stopped; writing the partial results")
    return outcomes, stop


def _iterate(
    catalogue: PlateCatalogue, out: Path, plan: _Plan, segmenters: dict[str, Segmenter]
) -> Generator[list[FieldOutcome], None, None]:
    """Outcomes field by field: in this process (1 worker), else in a :class:`FieldPool`."""
    workers = plan.settings["workers"]
    if workers <= 1 or len(catalogue.fields) <= 1:
        _set_threads(plan.threads)
        _init_state(catalogue, out, segmenters, plan)
        try:
            for record in catalogue.fields:
                yield _process_field(record)
        finally:
            _STATE.clear()
        return
    pool: FieldPool[FieldRecord, list[FieldOutcome]]
    with FieldPool(_process_field, workers, _init_worker, (catalogue, out, plan)) as pool:
        for record, result in pool.run(catalogue.fields):
            if isinstance(result, WorkerFailure):
                files = _failing_file(record, "")
                result = [
                    FieldOutcome(
                        record.key.name, m, error=result.reason, stage="worker", path=files
                    )
                    for m in plan.all_methods
                ]
            yield result


# --------------------------------------------------------------------------- finishing
@dataclass(frozen=True)
class _Ending:
    """How the field loop ended, and what the outputs need besides the outcomes."""

    outcomes: list[FieldOutcome]
    stop: str | None
    seconds: float
    screen: Screen | None
    readouts: tuple[str, ...]
    progress: bool = False


def _finish(catalogue: PlateCatalogue, out: Path, plan: _Plan, end: _Ending) -> RunResult:
    """Tables, heat-map, ``run.json`` and report of the outcomes; the status decides the rest."""
    result = _result(catalogue, out, plan, end)
    fatal = end.stop is not None and end.stop != STATUS_INTERRUPTED
    try:
        _write_outputs(result, plan, progress=end.progress)
    except OSError as exc:
        if not fatal:
            raise RunError(
                f"cannot write the results in {out} ({exc}); the masks written so far are kept "
                "and a re-run resumes from them"
            ) from None
        logger.warning("could not write the partial results either: %s", exc)
    if fatal:
        done = result.fields_done
        raise RunError(
            f"{end.stop}; stopped: the {done} field(s) finished are kept, a re-run resumes"
        )
    _log_done(result)
    return result


def _result(catalogue: PlateCatalogue, out: Path, plan: _Plan, end: _Ending) -> RunResult:
    """The :class:`RunResult` of the outcomes: wells, failures, status, plate statistics."""
    order = plan.all_methods
    outcomes = sorted(end.outcomes, key=lambda o: (o.name, order.index(o.method)))
    failures = _failure_rows(catalogue, outcomes)
    wells = aggregate_wells(
        (o.counts for o in outcomes if o.counts is not None),
        failed=_failed_fields(catalogue, outcomes, order),
    )
    status = (
        STATUS_INTERRUPTED
        if end.stop == STATUS_INTERRUPTED
        else STATUS_FAILED_FIELDS
        if failures
        else STATUS_COMPLETE
    )
    with_results = tuple(m for m in order if m in plan.methods or any(w.method == m for w in wells))
    keyed = {p.key for p in catalogue.problems if p.key is not None}
    screen = end.screen
    if screen is not None:
        screen = screen_statistics(screen, wells, with_results, plate=catalogue.plate_id)
    return RunResult(
        out_dir=out,
        catalogue=catalogue,
        methods=with_results,
        wells=wells,
        outcomes=outcomes,
        failures=failures,
        seconds=end.seconds,
        status=status,
        methods_run=plan.methods,
        kept_methods=tuple(m for m in plan.kept if m in with_results),
        fields_total=len(catalogue.fields) + len(keyed - {r.key for r in catalogue.fields}),
        screen=screen,
        readouts=end.readouts,
    )


def _failed_fields(
    catalogue: PlateCatalogue, outcomes: list[FieldOutcome], methods: tuple[str, ...]
) -> list[FailedField]:
    plate = catalogue.plate_id
    failed = [(plate, FieldKey.parse(o.name), o.method) for o in outcomes if o.error is not None]
    failed += [(plate, p.key, m) for p in catalogue.problems if p.key is not None for m in methods]
    return failed


def _failure_rows(catalogue: PlateCatalogue, outcomes: list[FieldOutcome]) -> list[dict[str, str]]:
    """One row per failed field and cause: field, methods, stage, file, reason."""
    rows = [
        {
            "field": p.key.name if p.key else "",
            "method": "all",
            "stage": "read",
            "path": p.path,
            "reason": p.reason,
        }
        for p in catalogue.problems
    ]
    grouped: dict[tuple[str, str, str, str], list[str]] = {}
    for o in outcomes:
        if o.error is not None:
            grouped.setdefault((o.name, o.stage, o.path, o.error), []).append(o.method)
    rows += [
        {"field": name, "method": ",".join(ms), "stage": stage, "path": path, "reason": reason}
        for (name, stage, path, reason), ms in grouped.items()
    ]
    return rows


def _log_done(result: RunResult) -> None:
    logger.info(
        "plate %s %s: %d/%d fields in %.1f s, %d failure(s); report %s",
        result.catalogue.plate_id,
        result.status,
        result.fields_done,
        result.fields_total,
        result.seconds,
        len(result.failures),
        result.out_dir / "report.html",
    )


def _write_outputs(result: RunResult, plan: _Plan, *, progress: bool = False) -> None:
    from phagoflow.embedded.report import write_heatmap, write_report

    out = result.out_dir
    _write_objects_csv(out / "objects.csv", result.catalogue, result.outcomes)
    write_wells_csv(out / "wells.csv", result.wells, result.methods, screen=result.screen)
    if result.screen is not None:
        write_screen_tables(out, result.screen)
    write_heatmap(
        out / "plate_heatmap.png",
        result.catalogue,
        result.wells,
        result.methods,
        readouts=result.readouts,
    )
    if plan.settings["ome_zarr"] and not result.interrupted:
        from phagoflow.embedded.omezarr import write_run_ome_zarr

        result.ome_zarr = write_run_ome_zarr(result, progress=progress)
    _write_run_json(out / "run.json", result, plan)
    overlays = 0 if result.interrupted else int(plan.settings["overlays"])
    write_report(out / "report.html", result, n_overlays=overlays)


# --------------------------------------------------------------------------- writers
def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _write_objects_csv(path: Path, catalogue: PlateCatalogue, outcomes: list[FieldOutcome]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("plate", "well", "field", "method", *OBJECT_COLUMNS))
        for o in outcomes:
            if o.counts is None:
                continue
            key = FieldKey.parse(o.name)
            for obj in o.objects:
                row = obj.as_row()
                writer.writerow(
                    (
                        catalogue.plate_id,
                        key.well,
                        o.name,
                        o.method,
                        *(_csv_value(row[c]) for c in OBJECT_COLUMNS),
                    )
                )
    os.replace(tmp, path)


#: Extra wells.csv columns when both CIP and CDL ran (see phagoflow.core.qc.relative_difference).
DISAGREEMENT_COLUMNS = ("cip_cdl_disagreement_phagophores", "cip_cdl_disagreement_autolysosomes")


def write_wells_csv(
    path: Path,
    wells: list[WellSummary],
    methods: Sequence[str],
    *,
    screen: Screen | None = None,
) -> None:
    """Write ``wells.csv``: one row per well and method, atomically (temp file + rename).

    Columns are :data:`~phagoflow.core.counting.WELL_COLUMNS` (``fields_ok`` and
    ``fields_failed`` included; a well with no field counted has empty totals; the cell
    columns are empty when cells were not measured), plus the two :data:`DISAGREEMENT_COLUMNS`
    when both ``cip`` and ``cdl`` ran (empty unless both methods counted the same number of
    fields of the well, see :func:`~phagoflow.embedded.report.comparable_wells`), plus, with a
    plate map (``screen``), the :data:`~phagoflow.embedded.screen.SCREEN_COLUMNS` (role,
    compound, robust z, percent of control and hit call of the hit readout). The one writer of
    this table: the embedded run and the streaming metrics service produce the same bytes.
    """
    from phagoflow.embedded.report import comparable_wells

    both = "cip" in methods and "cdl" in methods
    dis = (
        {(d.plate, d.well): d for d in well_disagreement(comparable_wells(wells), "cip", "cdl")}
        if both
        else {}
    )
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        extra = (*(DISAGREEMENT_COLUMNS if both else ()), *(SCREEN_COLUMNS if screen else ()))
        writer.writerow((*WELL_COLUMNS, *extra))
        for w in wells:
            row = w.as_row()
            values = [_csv_value(row[c]) for c in WELL_COLUMNS]
            if both:
                d = dis.get((w.plate, w.well))
                pair = (d.phagophores, d.autolysosomes) if d else (math.nan, math.nan)
                values += [_csv_value(v) for v in pair]
            if screen is not None:
                cols = well_screen_values(screen, w)
                values += ["" if cols[c] is None else _csv_value(cols[c]) for c in SCREEN_COLUMNS]
            writer.writerow(values)
    os.replace(tmp, path)


def _method_summary(result: RunResult, plan: _Plan, method: str) -> dict[str, Any]:
    mine = [o for o in result.outcomes if o.method == method]
    done = [o for o in mine if o.counts is not None]
    seg_times = [o.seconds.get("segment", 0.0) for o in done if not o.reused]
    doc: dict[str, Any] = {
        "ran": method in plan.methods,
        "fields_done": len(done),
        "fields_failed": sum(o.error is not None for o in mine),
        "fields_reused": sum(o.reused for o in done),
        "segment_seconds_mean": float(np.mean(seg_times)) if seg_times else None,
    }
    if method in plan.methods:
        made_by = plan.made_by[method]
        doc = {
            **made_by["segmenter"],
            "fingerprint": made_by["fingerprint"],
            "code_sha256": made_by["code_sha256"],
            **doc,
        }
        doc["fields_recomputed"] = dict(Counter(o.recomputed_because for o in done if not o.reused))
    else:
        distinct = {json.dumps(o.made_by, sort_keys=True): o.made_by for o in done}
        doc["kept_from_masks"] = list(distinct.values())
        doc["fields_not_kept"] = dict(Counter(o.not_kept for o in mine if o.not_kept))
    return doc


def _write_run_json(path: Path, result: RunResult, plan: _Plan) -> None:
    cat = result.catalogue
    doc = {
        "phagoflow_version": __version__,
        "created": _now(),
        "status": result.status,
        "export": {
            "plate_id": cat.plate_id,
            "measurement_id": cat.measurement_id,
            "format": cat.export_format,
            "format_version": cat.format_version,
            "root": str(cat.root),
            "index": str(cat.index_path),
            "index_sha256": cat.index_sha256,
            "plate_rows": cat.plate_rows,
            "plate_columns": cat.plate_columns,
            "pixel_size_um": cat.pixel_size_um,
            "size_yx": list(cat.size_yx),
            "channels": [c.as_record() for c in cat.channels],
            "fields": len(cat.fields),
            "wells": len(cat.wells),
        },
        "fields_total": result.fields_total,
        "fields_done": result.fields_done,
        "methods": {m: _method_summary(result, plan, m) for m in result.methods},
        "resume": "per field, from the record inside each mask (TIFF ImageDescription); "
        "run.json plays no part in reuse",
        "workers": plan.settings["workers"],
        "settings": plan.settings,
        "packages": _package_versions(),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
        "timings": {
            "total_seconds": result.seconds,
            "fields_per_hour": (
                3600.0 * result.fields_done / result.seconds if result.seconds > 0 else None
            ),
        },
        "failed_fields": result.failures,
        "cells": _cells_record(result, plan),
        "statistics": statistics_record(result.screen) if result.screen is not None else None,
        "ome_zarr": str(result.ome_zarr) if result.ome_zarr is not None else None,
    }
    _atomic_text(path, json.dumps(doc, indent=2, default=str) + "\n")


def _cells_record(result: RunResult, plan: _Plan) -> dict[str, Any]:
    """``run.json``'s cell readouts: on or off, the nuclear channel, parameters, the method."""
    nuclear = result.catalogue.nuclear_channel
    return {
        "measured": plan.cells is not None,
        "nuclear_channel": nuclear.name if nuclear is not None else None,
        "parameters": plan.cells.model_dump() if plan.cells is not None else None,
        "readouts": list(result.readouts),
        "cached": False,
        "method": "nuclei: Otsu threshold + distance-transform h-maxima watershed; cytoplasm: "
        "Otsu threshold of the smoothed DsRed + pHluorin signal (phagoflow.core.cells)",
    }
