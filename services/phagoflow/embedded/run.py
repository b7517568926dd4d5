"""The embedded runner: one plate export in, masks + tables + pictures + provenance out.

``phagoflow run EXPORT --out OUT`` calls :func:`run_plate`, which needs no servers: it reads the
export with :mod:`phagoflow.core.opera`, segments every field with each requested
:class:`~phagoflow.core.segmenters.Segmenter`, counts objects with
:mod:`phagoflow.core.counting`, and writes::

    OUT/masks/<method>/rRRcCCfFFpPP.tiff   uint8 label mask per field (0/1/2), field-sized
    OUT/objects.csv                        one row per object
    OUT/wells.csv                          one row per well and method
    OUT/plate_heatmap.png                  counts on the plate layout, per class and method
    OUT/report.html                        self-contained summary, heat-maps, overlays, failures
    OUT/run.json                           provenance: index checksum, parameters, versions, timings

Re-running on the same OUT skips the segmentation of fields whose mask was written by a
segmenter with the same fingerprint (parameters, model checksum, version); objects are re-measured
from the stored masks, which is cheap. A field that cannot be read is reported, never fatal.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray
from tqdm import tqdm

from phagoflow import __version__
from phagoflow.core.cip import CipParameters
from phagoflow.core.counting import (
    OBJECT_COLUMNS,
    WELL_COLUMNS,
    FieldCounts,
    ObjectRecord,
    WellSummary,
    aggregate_wells,
    count_field,
    measure_objects,
)
from phagoflow.core.opera import PlateCatalogue, RoleOverrides, load_field, read_plate
from phagoflow.core.opera.catalogue import FieldKey, FieldRecord, PlateFormatError
from phagoflow.core.qc import well_disagreement
from phagoflow.core.segmenters import Segmenter, make_segmenter

__all__ = ["FieldOutcome", "RunResult", "run_plate", "write_wells_csv"]

logger = logging.getLogger(__name__)

_PACKAGES = ("numpy", "scipy", "scikit-image", "tifffile", "pydantic", "torch", "onnxruntime")


@dataclass
class FieldOutcome:
    """What happened to one field for one method."""

    name: str
    method: str
    objects: list[ObjectRecord] = field(default_factory=list)
    counts: FieldCounts | None = None
    error: str | None = None
    reused: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    """Summary returned by :func:`run_plate`."""

    out_dir: Path
    catalogue: PlateCatalogue
    methods: tuple[str, ...]
    wells: list[WellSummary]
    outcomes: list[FieldOutcome]
    failures: list[dict[str, str]]
    seconds: float

    @property
    def fields_done(self) -> int:
        return sum(1 for o in self.outcomes if o.error is None)


# --------------------------------------------------------------------------- worker state
# One process-wide state per worker, set by _init_worker; the parent uses it too when workers=1.
_STATE: dict[str, Any] = {}


def _init_worker(
    catalogue: PlateCatalogue,
    out_dir: Path,
    specs: dict[str, dict[str, Any]],
    reuse: dict[str, str],
    threads: int,
) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    _STATE.clear()
    _STATE.update(
        catalogue=catalogue,
        out_dir=out_dir,
        segmenters={m: make_segmenter(m, **kw) for m, kw in specs.items()},
        reuse=reuse,
    )


def _mask_path(out_dir: Path, method: str, name: str) -> Path:
    return out_dir / "masks" / method / f"{name}.tiff"


def _write_mask(path: Path, mask: NDArray[Any]) -> None:
    """Write atomically: a crash never leaves a half-written mask that a re-run would trust."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tifffile.imwrite(tmp, mask, compression="zlib", metadata=None)
    os.replace(tmp, path)


def _read_mask(path: Path, shape: tuple[int, ...]) -> NDArray[Any] | None:
    try:
        mask = tifffile.imread(path)
    except Exception:
        return None
    if mask.shape != shape or mask.dtype != np.uint8 or mask.max(initial=0) > 2:
        return None
    return np.asarray(mask)


def _process_field(record: FieldRecord) -> list[FieldOutcome]:
    """Load one field and segment + count it with every method (runs in a worker)."""
    catalogue: PlateCatalogue = _STATE["catalogue"]
    out_dir: Path = _STATE["out_dir"]
    segmenters: dict[str, Segmenter] = _STATE["segmenters"]
    reuse: dict[str, str] = _STATE["reuse"]
    name = record.key.name
    t0 = time.perf_counter()
    try:
        image = load_field(catalogue, record)
    except (PlateFormatError, OSError, ValueError) as exc:
        return [FieldOutcome(name, m, error=f"{type(exc).__name__}: {exc}") for m in segmenters]
    t_read = time.perf_counter() - t0
    outcomes = []
    for method, segmenter in segmenters.items():
        path = _mask_path(out_dir, method, name)
        t1 = time.perf_counter()
        mask = _read_mask(path, image.shape[1:]) if method in reuse else None
        reused = mask is not None
        try:
            if mask is None:
                mask = segmenter.segment(image, catalogue.pixel_size_um)
                _write_mask(path, mask)
            t2 = time.perf_counter()
            objects = measure_objects(image, mask, catalogue.pixel_size_um)
            counts = count_field(objects, plate=catalogue.plate_id, key=record.key, method=method)
        except Exception as exc:
            logger.exception("field %s failed with %s", name, method)
            outcomes.append(FieldOutcome(name, method, error=f"{type(exc).__name__}: {exc}"))
            continue
        t3 = time.perf_counter()
        outcomes.append(
            FieldOutcome(
                name,
                method,
                objects=objects,
                counts=counts,
                reused=reused,
                seconds={"read": t_read, "segment": t2 - t1, "measure": t3 - t2},
            )
        )
    return outcomes


# --------------------------------------------------------------------------- provenance
def _package_versions() -> dict[str, str]:
    versions = {"phagoflow": __version__, "python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def _previous_fingerprints(out_dir: Path, index_sha256: str) -> dict[str, str]:
    """Fingerprints of the last run in ``out_dir`` on the same export, by method."""
    try:
        previous = json.loads((out_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    if previous.get("export", {}).get("index_sha256") != index_sha256:
        return {}
    return {m: v["fingerprint"] for m, v in previous.get("methods", {}).items()}


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
        Worker processes (fields are processed in parallel).
    cip_params : CipParameters, optional
        CIP parameters; recorded in ``run.json``.
    threads : int, optional
        Intra-op threads per worker (default: cores // workers, at least 1).
    overlays : int
        Number of field overlays in the report.
    channel_roles : mapping, optional
        Channel-role override (``--channel-role``): channel name or id → ``"dsred"``,
        ``"phluorin"``, ``"both"`` or ``"none"`` (see :mod:`phagoflow.core.opera.roles`).

    Returns
    -------
    RunResult
    """
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    catalogue = read_plate(export, channel_roles=channel_roles)
    methods = tuple(dict.fromkeys(methods))
    cip_params = cip_params if cip_params is not None else CipParameters()
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    specs: dict[str, dict[str, Any]] = {}
    for m in methods:
        if m == "cip":
            specs[m] = {"cip_params": cip_params}
        else:
            specs[m] = {
                "model_dir": model_dir,
                "backend": backend,
                "batch_size": batch_size,
                "threads": threads,
            }
    # Build once in the parent: validates the model folder early and gives fingerprints.
    parent_segmenters = {m: make_segmenter(m, **kw) for m, kw in specs.items()}
    fingerprints = {m: s.fingerprint for m, s in parent_segmenters.items()}
    previous = _previous_fingerprints(out, catalogue.index_sha256)
    reuse = {m: fp for m, fp in fingerprints.items() if previous.get(m) == fp}
    logger.info(
        "plate %s: %d fields, %d wells, methods %s, %d worker(s)%s",
        catalogue.plate_id,
        len(catalogue.fields),
        len(catalogue.wells),
        ",".join(methods),
        workers,
        f"; reusing masks for {','.join(reuse)}" if reuse else "",
    )

    outcomes: list[FieldOutcome] = []
    bar = tqdm(
        total=len(catalogue.fields),
        desc=f"{catalogue.plate_id} fields",
        unit="field",
        disable=not progress,
    )
    try:
        for field_outcomes in _iterate(catalogue, out, specs, reuse, workers, threads):
            outcomes.extend(field_outcomes)
            bar.update(1)
    finally:
        bar.close()
    outcomes.sort(key=lambda o: (o.name, methods.index(o.method)))

    failures = [
        {"field": p.key.name if p.key else "", "path": p.path, "reason": p.reason, "stage": "read"}
        for p in catalogue.problems
    ]
    failures += [
        {"field": o.name, "path": "", "reason": o.error, "stage": o.method}
        for o in outcomes
        if o.error is not None
    ]
    wells = aggregate_wells(o.counts for o in outcomes if o.counts is not None)
    elapsed = time.perf_counter() - started

    _write_objects_csv(out / "objects.csv", catalogue, outcomes)
    write_wells_csv(out / "wells.csv", wells, methods)
    from phagoflow.embedded.report import write_heatmap, write_report

    write_heatmap(out / "plate_heatmap.png", catalogue, wells, methods)
    result = RunResult(out, catalogue, methods, wells, outcomes, failures, elapsed)
    _write_run_json(out / "run.json", result, parent_segmenters, fingerprints, workers)
    write_report(out / "report.html", result, n_overlays=overlays)
    logger.info(
        "plate %s done: %d/%d fields in %.1f s, %d failure(s); report %s",
        catalogue.plate_id,
        len({o.name for o in outcomes if o.error is None}),
        len(catalogue.fields) + len(catalogue.problems),
        elapsed,
        len(failures),
        out / "report.html",
    )
    return result


def _iterate(
    catalogue: PlateCatalogue,
    out: Path,
    specs: dict[str, dict[str, Any]],
    reuse: dict[str, str],
    workers: int,
    threads: int,
) -> Iterator[list[FieldOutcome]]:
    args = (catalogue, out, specs, reuse, threads)
    if workers <= 1 or len(catalogue.fields) <= 1:
        _init_worker(*args)
        try:
            for record in catalogue.fields:
                yield _process_field(record)
        finally:
            _STATE.clear()
        return
    # spawn, not fork: torch/ONNX Runtime thread pools do not survive a fork safely.
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=args,
    ) as pool:
        futures = [pool.submit(_process_field, record) for record in catalogue.fields]
        for fut in as_completed(futures):
            yield fut.result()


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
            if o.error is not None:
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


def write_wells_csv(path: Path, wells: list[WellSummary], methods: Sequence[str]) -> None:
    """Write ``wells.csv``: one row per well and method, atomically (temp file + rename).

    Columns are :data:`~phagoflow.core.counting.WELL_COLUMNS`, plus the two
    :data:`DISAGREEMENT_COLUMNS` when both ``cip`` and ``cdl`` ran. The one writer of this
    table: the embedded run and the streaming metrics service produce the same bytes.
    """
    both = "cip" in methods and "cdl" in methods
    dis = {(d.plate, d.well): d for d in well_disagreement(wells, "cip", "cdl")} if both else {}
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow((*WELL_COLUMNS, *(DISAGREEMENT_COLUMNS if both else ())))
        for w in wells:
            row = w.as_row()
            values = [_csv_value(row[c]) for c in WELL_COLUMNS]
            if both:
                d = dis.get((w.plate, w.well))
                pair = (d.phagophores, d.autolysosomes) if d else (math.nan, math.nan)
                values += [_csv_value(v) for v in pair]
            writer.writerow(values)
    os.replace(tmp, path)


def _write_run_json(
    path: Path,
    result: RunResult,
    segmenters: dict[str, Segmenter],
    fingerprints: dict[str, str],
    workers: int,
) -> None:
    cat = result.catalogue
    per_method: dict[str, Any] = {}
    for m, seg in segmenters.items():
        done = [o for o in result.outcomes if o.method == m and o.error is None]
        seg_times = [o.seconds.get("segment", 0.0) for o in done if not o.reused]
        per_method[m] = {
            **seg.provenance,
            "fingerprint": fingerprints[m],
            "fields_done": len(done),
            "fields_reused": sum(o.reused for o in done),
            "segment_seconds_mean": float(np.mean(seg_times)) if seg_times else None,
        }
    doc = {
        "phagoflow_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
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
        "methods": per_method,
        "workers": workers,
        "packages": _package_versions(),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
        "timings": {
            "total_seconds": result.seconds,
            "fields_per_hour": (
                3600.0 * len(cat.fields) / result.seconds if result.seconds > 0 else None
            ),
        },
        "failed_fields": result.failures,
    }
    _atomic_text(path, json.dumps(doc, indent=2, default=str) + "\n")
