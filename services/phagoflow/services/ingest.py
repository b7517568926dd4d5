"""ingest: watch a directory (by polling) for Opera exports and publish each field as it lands.

``phagoflow serve ingest``. Network shares deliver no inotify events, so the watch directory is
scanned every ``PHAGOFLOW_INGEST_POLL_S`` seconds. Every folder holding a Harmony index
(``Index.idx.xml`` / ``Index.xml``) or ``.flex`` files is an export. For each export:

1. the index must be stable (size and mtime unchanged for ``PHAGOFLOW_INGEST_SETTLE_S``) and parse
   with the core reader (:func:`phagoflow.core.opera.parse_index` / ``build_catalogue``); an
   index that stays broken becomes one :class:`DeadLetter` (the other exports go on);
2. a field is published as soon as every channel file of it exists and is stable: the core reads
   it (:func:`phagoflow.core.opera.load_field`, which rejects truncated TIFFs, wrong size or
   dtype), each channel plane is uploaded as a single-plane uint16 TIFF under
   :func:`~phagoflow.events.raw_object_key` (SHA-256 recorded, server ETag checked), then a
   :class:`FieldAcquired` is produced and acknowledged — without waiting for the plate;
3. a per-plate manifest (:func:`~phagoflow.events.manifest_object_key`) records published and
   failed fields after each one, so a restarted ingest neither re-sends nor loses fields;
4. a field that cannot be read, or whose channel file is still missing after
   ``PHAGOFLOW_INGEST_MISSING_TIMEOUT_S``, becomes a :class:`DeadLetter` (stage ``ingest``, the
   file copied to the store) and is listed as failed;
5. a plate map (``plate_map.csv``, the ``phagoflow run --plate-map`` format) in the export
   folder or the measurement folder above it is checked as ``run`` checks it and uploaded
   (:func:`~phagoflow.events.plate_map_object_key`); ``PlateComplete`` names it, and metrics
   computes the plate statistics with it. A map that fails the checks becomes one
   :class:`DeadLetter` and ``PlateComplete.plate_map_error``; the counts go on without it;
6. :class:`PlateComplete` is published once the core completeness rule
   (:func:`phagoflow.core.opera.check_complete`) holds and every field is published or failed —
   or, when some fields failed for good, once every field is resolved and nothing changed for
   the quiet period.

No science here: reading, validation and completeness are the core's.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections import Counter as CountOf
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from kafka import KafkaProducer
from prometheus_client import Counter, Gauge, Histogram
from pydantic import Field

from phagoflow import events as ev
from phagoflow.core.counting import available_readouts
from phagoflow.core.opera import (
    FieldProblem,
    FieldReadError,
    PlateCatalogue,
    PlateFormatError,
    PlateIndex,
    build_catalogue,
    check_complete,
    load_field,
    parse_index,
)
from phagoflow.core.opera.catalogue import ChannelRole, FieldRecord
from phagoflow.core.screening import ScreeningParameters
from phagoflow.embedded.screen import load_plate_map
from phagoflow.services.common import Service, ServiceSettings, log_context
from phagoflow.services.kafkaio import dead_letter, make_producer, publish
from phagoflow.services.objectstore import ObjectStore, sha256_hex
from phagoflow.settings import ChannelRolesSetting

__all__ = ["IngestService", "IngestSettings"]

logger = logging.getLogger(__name__)

_HARMONY_INDEX_NAMES = ("Index.idx.xml", "Index.xml")
_MISSING_PREFIX = "file not found"
_MAX_PAYLOAD_BYTES = 64 << 20


class IngestSettings(ServiceSettings):
    """Settings of ``phagoflow serve ingest`` (``PHAGOFLOW_*``; shared ones in the base class).

    Attributes
    ----------
    watch_dir : Path
        Folder scanned for exports (``PHAGOFLOW_WATCH_DIR``, default ``var/incoming``).
    ingest_port : int
        HTTP port of ``/healthz``, ``/readyz``, ``/metrics`` (``PHAGOFLOW_INGEST_PORT``).
    ingest_poll_s : float
        Seconds between scans.
    ingest_settle_s : float
        A file counts as written once its size and mtime did not change for this long.
    ingest_missing_timeout_s : float
        A channel file the index declares fails its field when it is still missing after the
        export was quiet (no file added or changed) for this long.
    ingest_quiet_s : float
        Quiet period of the completeness rule (no file changed for this long).
    channel_roles : dict
        Channel-role override (``PHAGOFLOW_CHANNEL_ROLES=NAME=ROLE,...``, as ``--channel-role``):
        channel name or id → ``dsred``, ``phluorin``, ``both`` or ``none``.
    ingest_plate_map_name : str
        File name of a plate's map, looked for in the export folder, then in the folder above
        it (the measurement folder) unless that is the watch folder itself.
    screening : ScreeningParameters
        ``min_controls`` and the hit readout the map is checked against (``PHAGOFLOW_SCREENING__*``,
        the same variables as ``phagoflow run`` and metrics).
    """

    watch_dir: Path = Path("var/incoming")
    ingest_port: int = Field(default=8401, ge=0, le=65535)
    ingest_poll_s: float = Field(default=1.0, gt=0.0)
    ingest_settle_s: float = Field(default=2.0, ge=0.0)
    ingest_missing_timeout_s: float = Field(default=300.0, gt=0.0)
    ingest_quiet_s: float = Field(default=10.0, ge=0.0)
    channel_roles: ChannelRolesSetting = Field(default_factory=dict)
    ingest_plate_map_name: str = Field(default="plate_map.csv", pattern=r"^[^/\\]+$")
    screening: ScreeningParameters = ScreeningParameters()

    @property
    def http_port(self) -> int:
        return self.ingest_port


@dataclass
class _Export:
    """What ingest knows of one export folder between scans."""

    root: Path
    fmt: str
    first_seen: float
    plate: str | None = None
    manifest: dict[str, Any] | None = None
    index_failures: set[str] = field(default_factory=set)
    first_seen_wall: float = field(default_factory=time.time)
    #: Signature of the index files when the plate was found complete (skip re-parsing).
    done_sig: str | None = None


def _plate_geometry(catalogue: PlateCatalogue) -> dict[str, Any]:
    """Plate layout and field geometry recorded in the manifest (read by the review app)."""
    return {
        "plate_rows": catalogue.plate_rows,
        "plate_columns": catalogue.plate_columns,
        "pixel_size_um": catalogue.pixel_size_um,
        "size_yx": list(catalogue.size_yx),
    }


def _manifest_field(event: ev.FieldAcquired, acquired: float) -> dict[str, Any]:
    """A published field's entry in the plate manifest (``fields.<name>``)."""
    return {
        "published_at": datetime.now(UTC).isoformat(),
        "acquired_at": _iso(acquired),
        "channels": {
            r: {
                "key": c.object.key,
                "sha256": c.object.sha256,
                "intensity_factor": c.intensity_factor or 1.0,
                "name": c.channel_name,
            }
            for r, c in event.channels.items()
        },
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class IngestService(Service):
    """Polling watcher → object store → ``FieldAcquired`` / ``PlateComplete`` / ``DeadLetter``."""

    name = "ingest"
    settings: IngestSettings

    def __init__(self, settings: IngestSettings, *, http_port: int | None = None) -> None:
        super().__init__(settings, http_port=http_port)
        self.store = ObjectStore.from_settings(settings)
        self.producer: KafkaProducer | None = None
        self._exports: dict[Path, _Export] = {}
        # path -> (size, mtime_ns, monotonic time the pair was first seen)
        self._stat: dict[Path, tuple[int, int, float]] = {}
        self._last_scan = 0.0
        r = self.registry
        self.m_fields = Counter(
            "phagoflow_fields_acquired_total", "Fields published as FieldAcquired", registry=r
        )
        self.m_bytes = Counter(
            "phagoflow_ingest_bytes_total", "Raw channel bytes uploaded", registry=r
        )
        self.m_dead = Counter(
            "phagoflow_dead_letters_total",
            "Inputs sent to the dead-letter topic",
            ["stage"],
            registry=r,
        )
        self.m_plates = Counter(
            "phagoflow_plates_complete_total", "PlateComplete events published", registry=r
        )
        self.m_pending = Gauge(
            "phagoflow_ingest_fields_pending", "Fields seen but not yet stable", registry=r
        )
        self.m_stage = Histogram(
            "phagoflow_stage_seconds",
            "Seconds per processing stage",
            ["stage", "method"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16),
        )

    # ------------------------------------------------------------------ lifecycle

    def setup(self) -> None:
        self.settings.watch_dir.mkdir(parents=True, exist_ok=True)
        self.store.ensure_bucket()
        self.producer = make_producer(self.settings, "phagoflow-ingest")

    def step(self) -> None:
        wait = self.settings.ingest_poll_s - (time.monotonic() - self._last_scan)
        if wait > 0 and self.wait(wait):
            return
        self._last_scan = time.monotonic()
        self.scan()

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(timeout=10)
            self.producer.close(timeout=10)
            self.producer = None

    # ------------------------------------------------------------------ scanning

    def scan(self) -> None:
        """One pass over the watch directory (public for tests)."""
        pending = 0
        for root, fmt in self._discover():
            if self.stopping:
                break
            export = self._exports.get(root)
            if export is None:
                export = self._exports[root] = _Export(root, fmt, time.monotonic())
            try:
                pending += self._scan_export(export)
            except (OSError, RuntimeError) as exc:  # S3/Kafka down: retried next scan
                logger.warning("export %s: %s: %s; retrying", root, type(exc).__name__, exc)
        self.m_pending.set(pending)

    def _discover(self) -> list[tuple[Path, str]]:
        found: list[tuple[Path, str]] = []
        for dirpath, dirnames, filenames in os.walk(self.settings.watch_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            names = set(filenames)
            if any(n in names for n in _HARMONY_INDEX_NAMES):
                found.append((Path(dirpath), "harmony"))
            elif any(n.lower().endswith(".flex") for n in names):
                found.append((Path(dirpath), "flex"))
        return found

    def _stable(self, path: Path) -> bool | None:
        """True when unchanged for the settle interval; False while changing; None if missing."""
        try:
            st = os.stat(path)
        except OSError:
            self._stat.pop(path, None)
            return None
        now = time.monotonic()
        sig = (st.st_size, st.st_mtime_ns)
        prev = self._stat.get(path)
        if prev is None or prev[:2] != sig:
            self._stat[path] = (*sig, now)
            return self.settings.ingest_settle_s <= 0
        return now - prev[2] >= self.settings.ingest_settle_s

    def _index_files(self, export: _Export) -> list[Path]:
        if export.fmt == "harmony":
            return [export.root / n for n in _HARMONY_INDEX_NAMES if (export.root / n).exists()]
        return sorted(p for p in export.root.iterdir() if p.name.lower().endswith(".flex"))

    def _scan_export(self, export: _Export) -> int:
        """Publish what is ready in one export; returns the number of fields still pending."""
        index_files = self._index_files(export)
        sig = _signature(index_files)
        if export.done_sig is not None and export.done_sig == sig:
            return 0  # complete and unchanged: nothing to parse
        if export.fmt == "harmony" and not all(self._stable(p) for p in index_files):
            return 0
        try:
            index = parse_index(export.root)
            catalogue = build_catalogue(index, channel_roles=self.settings.channel_roles or None)
        except PlateFormatError as exc:
            if all(self._stable(p) for p in index_files):  # a file still being written may heal
                self._index_failed(export, index_files, exc)
            return 0
        if export.manifest is None or export.plate != catalogue.plate_id:
            export.plate = catalogue.plate_id
            export.manifest = self._load_manifest(catalogue, export)
        manifest = export.manifest
        if manifest.get("plate_complete"):
            export.done_sig = sig
            return 0
        expected = _expected_fields(index)
        pending = 0
        with log_context(plate=catalogue.plate_id):
            for record in catalogue.fields:
                if self.stopping:
                    return pending
                name = record.key.name
                if name in manifest["fields"] or name in manifest["failed"]:
                    continue
                ready = [self._stable(src.path) for src in record.sources.values()]
                if not all(ready):
                    pending += 1
                    continue
                with log_context(well=record.key.well, field=name):
                    self._publish_field(export, catalogue, record, expected)
            for problem in catalogue.problems:
                pending += self._handle_problem(export, catalogue, problem)
            if pending == 0 and not self.stopping:
                self._maybe_complete(export, catalogue, index)
        return pending

    # ------------------------------------------------------------------ manifest

    def _load_manifest(self, catalogue: PlateCatalogue, export: _Export) -> dict[str, Any]:
        key = ev.manifest_object_key(catalogue.plate_id)
        doc = self.store.get_json(key)
        if isinstance(doc, dict) and doc.get("measurement_id") == catalogue.measurement_id:
            logger.info(
                "plate %s: manifest restored (%d published, %d failed)",
                catalogue.plate_id,
                len(doc.get("fields", {})),
                len(doc.get("failed", {})),
            )
            doc.setdefault("fields", {})
            doc.setdefault("failed", {})
            doc.update(_plate_geometry(catalogue))  # manifests written before these existed
            return doc
        if isinstance(doc, dict):
            logger.warning(
                "plate %s: manifest of measurement %r replaced by measurement %r",
                catalogue.plate_id,
                doc.get("measurement_id"),
                catalogue.measurement_id,
            )
        return {
            "plate": catalogue.plate_id,
            "measurement_id": catalogue.measurement_id,
            "export_format": catalogue.export_format,
            "format_version": catalogue.format_version,
            "export_root": str(export.root),
            **_plate_geometry(catalogue),
            "fields": {},
            "failed": {},
            "plate_complete": False,
        }

    def _save_manifest(self, plate: str, manifest: dict[str, Any]) -> ev.ObjectRef:
        manifest["updated_at"] = datetime.now(UTC).isoformat()
        return self.store.put_json(ev.manifest_object_key(plate), manifest)

    # ------------------------------------------------------------------ fields

    def _publish_field(
        self,
        export: _Export,
        catalogue: PlateCatalogue,
        record: FieldRecord,
        expected: tuple[dict[str, int], int],
    ) -> None:
        assert self.producer is not None and export.manifest is not None
        key = record.key
        plate = catalogue.plate_id
        t0 = time.perf_counter()
        try:
            load_field(catalogue, record)  # the core's validation: size, dtype, truncation
            planes = {role: _read_plane(src.path, src.page) for role, src in record.sources.items()}
        except (FieldReadError, OSError, ValueError) as exc:
            bad = _failing_path(exc, record)
            self._fail(export, catalogue, key.name, exc, path=bad, fid=ev.field_id(plate, key))
            return
        event = ev.FieldAcquired(
            header=ev.new_header("ingest"),
            field=ev.field_id(plate, key),
            pixel_size_um=catalogue.pixel_size_um,
            size_x=catalogue.size_yx[1],
            size_y=catalogue.size_yx[0],
            measurement_id=catalogue.measurement_id,
            export_format=catalogue.export_format,
            format_version=catalogue.format_version,
            well_fields_expected=expected[0].get(key.well, 0),
            plate_fields_expected=expected[1],
        )
        uploaded, acquired = self._upload_channels(event, catalogue, record, planes)
        event.acquired_at.CopyFrom(ev.to_timestamp(datetime.fromtimestamp(acquired, UTC)))
        t1 = time.perf_counter()
        publish(self.producer, ev.Topic.FIELDS_ACQUIRED.value, event)
        export.manifest["fields"][key.name] = _manifest_field(event, acquired)
        self._save_manifest(plate, export.manifest)
        self.m_fields.inc()
        self.m_bytes.inc(uploaded)
        self.m_stage.labels("upload", "ingest").observe(t1 - t0)
        logger.info("field %s published (%d bytes)", key.name, uploaded)

    def _upload_channels(
        self,
        event: ev.FieldAcquired,
        catalogue: PlateCatalogue,
        record: FieldRecord,
        planes: dict[ChannelRole, bytes],
    ) -> tuple[int, float]:
        """Store a field's channel TIFFs and describe them in ``event``.

        Returns the bytes uploaded and the newest file time of the channels (epoch seconds).
        """
        channel_of = {role: c for c in catalogue.channels for role in c.roles}
        mtimes = []
        uploaded = 0
        for role, src in record.sources.items():
            data = planes[role]
            ref = self.store.put_bytes(
                ev.raw_object_key(catalogue.plate_id, record.key, role),
                data,
                content_type="image/tiff",
            )
            uploaded += len(data)
            image = event.channels[role.value]
            image.object.CopyFrom(ref)
            image.channel_id = channel_of[role].channel_id
            image.channel_name = channel_of[role].name
            if src.factor != 1.0:
                image.intensity_factor = src.factor
            mtimes.append(os.stat(src.path).st_mtime)
        return uploaded, max(mtimes)

    def _fail(
        self,
        export: _Export,
        catalogue: PlateCatalogue,
        ident: str,
        exc: Exception | str,
        *,
        path: Path | None,
        fid: ev.FieldId | None,
    ) -> None:
        """Dead-letter one field (or file) and record it as failed in the manifest."""
        assert self.producer is not None and export.manifest is not None
        reason = str(exc)
        error_type = type(exc).__name__ if isinstance(exc, Exception) else "MissingChannel"
        rel = _relative(path, export.root)
        payload = _read_payload(path)
        plate = catalogue.plate_id
        dead_letter(
            self.producer,
            self.store,
            stage="ingest",
            error_type=error_type,
            error=reason,
            payload=payload,
            payload_key=f"deadletter/ingest/{ev.manifest_object_key(plate).split('/')[1]}/"
            f"{ident.replace('/', '_')}.bin",
            key=ev.well_key(plate, fid.well) if fid is not None else "",
            field=fid,
            path=rel,
        )
        export.manifest["failed"][ident] = {
            "field": ident if fid is not None else "",
            "well": fid.well if fid is not None else "",
            "path": rel,
            "stage": "ingest",
            "reason": reason,
        }
        self._save_manifest(plate, export.manifest)
        self.m_dead.labels("ingest").inc()

    def _handle_problem(
        self, export: _Export, catalogue: PlateCatalogue, problem: FieldProblem
    ) -> int:
        """Dead-letter a catalogue problem once it is final; returns 1 while it may resolve.

        A declared file that is missing may still arrive: it fails only after the missing
        timeout. A file that exists but is unusable (e.g. a ``.flex`` file whose XML does not
        parse yet) fails once it is stable. Other problems (unsafe URLs) fail at once; files
        outside the export are never read.
        """
        assert export.manifest is not None
        ident = problem.key.name if problem.key is not None else f"file:{problem.path}"
        if ident in export.manifest["failed"] or ident in export.manifest["fields"]:
            return 0
        inside = _inside(Path(problem.path), export.root) if problem.path else None
        reason = problem.reason
        error: Exception | str = PlateFormatError(reason)
        if reason.startswith(_MISSING_PREFIX):
            # Acquisition may take hours: a file is missing for good only once the whole export
            # has been quiet (no file added or changed) for the timeout.
            quiet = time.time() - max(_newest_mtime(export.root), export.first_seen_wall)
            if quiet < self.settings.ingest_missing_timeout_s:
                return 1
            error = (
                f"{reason} (still missing after the export was quiet for {quiet:.0f} s; "
                f"timeout {self.settings.ingest_missing_timeout_s:g} s)"
            )
            inside = None
        elif inside is not None and self._stable(inside) is False:
            return 1
        fid = ev.field_id(catalogue.plate_id, problem.key) if problem.key is not None else None
        name = problem.key.name if problem.key is not None else ""
        with log_context(well=fid.well if fid else "", field=name):
            self._fail(export, catalogue, ident, error, path=inside, fid=fid)
        if inside is None and problem.path:
            export.manifest["failed"][ident]["path"] = _relative(Path(problem.path), export.root)
            self._save_manifest(catalogue.plate_id, export.manifest)
        return 0

    def _index_failed(self, export: _Export, files: list[Path], exc: PlateFormatError) -> None:
        """Dead-letter a broken index once (per version of the file)."""
        assert self.producer is not None
        sig = _signature(files)
        if sig in export.index_failures:
            return
        export.index_failures.add(sig)
        path = files[0] if files else None
        dead_letter(
            self.producer,
            self.store,
            stage="ingest",
            error_type=type(exc).__name__,
            error=str(exc),
            payload=_read_payload(path),
            payload_key=f"deadletter/ingest/index/{sha256_hex(sig.encode())[:16]}.bin",
            path=_relative(path, self.settings.watch_dir),
        )
        self.m_dead.labels("ingest").inc()

    # ------------------------------------------------------------------ plate completion

    def _maybe_complete(
        self, export: _Export, catalogue: PlateCatalogue, index: PlateIndex
    ) -> None:
        assert self.producer is not None and export.manifest is not None
        manifest = export.manifest
        report = check_complete(export.root, quiet_seconds=self.settings.ingest_quiet_s)
        failed = manifest["failed"]
        if not report.complete:
            quiet = (
                report.newest_mtime is None
                or time.time() - report.newest_mtime >= self.settings.ingest_quiet_s
            )
            declared_ok = report.declared_images == report.expected_images > 0
            if not (failed and quiet and declared_ok):
                return
        expected = _expected_fields(index)[1]
        acquired = [v["acquired_at"] for v in manifest["fields"].values() if "acquired_at" in v]
        event = ev.PlateComplete(
            header=ev.new_header("ingest"),
            plate=catalogue.plate_id,
            measurement_id=catalogue.measurement_id,
            export_format=catalogue.export_format,
            format_version=catalogue.format_version,
            plate_rows=catalogue.plate_rows,
            plate_columns=catalogue.plate_columns,
            fields_expected=expected,
            fields_published=len(manifest["fields"]),
            completed_at=ev.to_timestamp(datetime.now(UTC)),
        )
        for _ident, f in sorted(failed.items()):
            failure = ev.FieldFailure(path=f["path"], stage=f["stage"], reason=f["reason"])
            if f.get("field"):
                failure.field.CopyFrom(_fid_of(catalogue.plate_id, f["field"]))
            event.failed.append(failure)
        if acquired:
            event.first_acquired_at.CopyFrom(ev.to_timestamp(datetime.fromisoformat(min(acquired))))
        plate_map, event.plate_map_error = self._plate_map(export, catalogue)
        if plate_map is not None:
            event.plate_map.CopyFrom(plate_map)
        manifest["plate_map"] = plate_map.key if plate_map is not None else None
        manifest["plate_map_error"] = event.plate_map_error
        event.manifest.CopyFrom(self._save_manifest(catalogue.plate_id, manifest))
        publish(self.producer, ev.Topic.PLATES.value, event)
        manifest["plate_complete"] = True
        self._save_manifest(catalogue.plate_id, manifest)
        self.m_plates.inc()
        logger.info(
            "plate %s complete: %d/%d fields published, %d failed",
            catalogue.plate_id,
            event.fields_published,
            expected,
            len(failed),
        )

    def _plate_map(
        self, export: _Export, catalogue: PlateCatalogue
    ) -> tuple[ev.ObjectRef | None, str]:
        """The export's plate map, checked as ``run --plate-map`` checks it, in the store.

        Returns the stored map (``None`` when there is none or it was refused) and the reason
        it was refused (``""`` otherwise); a refused map is also a dead letter.
        """
        path = _find_plate_map(
            export.root, self.settings.watch_dir, self.settings.ingest_plate_map_name
        )
        if path is None:
            return None, ""
        nuclei = catalogue.nuclear_channel is not None
        try:
            data = path.read_bytes()
            load_plate_map(
                path,
                catalogue,
                self.settings.screening,
                available_readouts(nuclei=nuclei, cells=True),
            )
        except (OSError, ValueError) as exc:  # PlateMapError is a ValueError
            reason = " ".join(str(exc).split())
            logger.error("plate %s: plate map refused: %s", catalogue.plate_id, reason)
            assert self.producer is not None
            dead_letter(
                self.producer,
                self.store,
                stage="ingest",
                error_type=type(exc).__name__,
                error=reason,
                payload=_read_payload(path),
                payload_key=f"deadletter/ingest/plate-map/{sha256_hex(str(path).encode())[:16]}.csv",
                path=_relative(path, self.settings.watch_dir),
            )
            self.m_dead.labels("ingest").inc()
            return None, reason
        ref = self.store.put_bytes(
            ev.plate_map_object_key(catalogue.plate_id), data, content_type="text/csv"
        )
        logger.info("plate %s: plate map %s stored", catalogue.plate_id, path)
        return ref, ""


# --------------------------------------------------------------------------- helpers


def _find_plate_map(root: Path, watch_dir: Path, name: str) -> Path | None:
    """``root/name``, else ``root.parent/name`` when the parent is inside the watch folder."""
    candidates = [root / name]
    parent = root.parent
    if parent.resolve() != watch_dir.resolve() and parent.resolve().is_relative_to(
        watch_dir.resolve()
    ):
        candidates.append(parent / name)
    return next((p for p in candidates if p.is_file()), None)


def _newest_mtime(folder: Path) -> float:
    """Newest modification time of the files directly in ``folder`` (0 when empty)."""
    newest = 0.0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    newest = max(newest, entry.stat().st_mtime)
                except OSError:
                    continue
    except OSError:
        return 0.0
    return newest


def _signature(files: list[Path]) -> str:
    """Names, sizes and mtimes of files (a change in any of them changes the signature)."""
    parts = []
    for p in files:
        try:
            st = p.stat()
        except OSError:
            continue
        parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def _expected_fields(index: PlateIndex) -> tuple[dict[str, int], int]:
    """Fields (× planes × timepoints) the index declares per well, and for the plate."""
    keys = {im.key for im in index.images}
    per_well = CountOf(k.well for k in keys)
    return dict(per_well), len(keys)


def _fid_of(plate: str, name: str) -> ev.FieldId:
    from phagoflow.core.opera.catalogue import FieldKey

    return ev.field_id(plate, FieldKey.parse(name))


def _read_plane(path: Path, page: int) -> bytes:
    """One page of a (possibly multi-page) TIFF as single-plane uint16 TIFF bytes."""
    with tifffile.TiffFile(path) as tf:
        plane = np.asarray(tf.pages[page].asarray())
    if plane.dtype != np.uint16 or plane.ndim != 2:
        raise ValueError(f"{path}: page {page} is {plane.dtype} {plane.shape}, expected 2-D uint16")
    buf = io.BytesIO()
    tifffile.imwrite(buf, plane, metadata=None)
    return buf.getvalue()


def _failing_path(exc: Exception, record: FieldRecord) -> Path:
    """The channel file an error message names (the core's messages start with the path)."""
    text = str(exc)
    for src in record.sources.values():
        if text.startswith(str(src.path)):
            return src.path
    return next(iter(record.sources.values())).path


def _read_payload(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read(_MAX_PAYLOAD_BYTES)
    except OSError:
        return None


def _inside(path: Path, root: Path) -> Path | None:
    """``path`` resolved, when it lies inside ``root``; else None (never read outside)."""
    try:
        resolved = path.resolve()
        resolved.relative_to(root.resolve())
    except (OSError, ValueError):
        return None
    return resolved if resolved.is_file() else None


def _relative(path: Path | None, root: Path) -> str:
    if path is None:
        return ""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
