"""The review app on one plate of the streaming stack's object store (MinIO; moto's server locally).

:class:`StoreResults` implements :class:`~phagoflow.review.results.ReviewResults` from what the
services wrote to the bucket (``docs/streaming.md``, object store layout), through the services'
own S3 client (:class:`~phagoflow.services.objectstore.ObjectStore`):

- the plate's fields: the published fields of the ingest manifest
  (:func:`phagoflow.events.manifest_object_key`); failed fields are not shown;
- raw channels: the channel TIFFs ingest uploaded (:func:`phagoflow.events.raw_object_key`,
  SHA-256 from the manifest checked), assembled by the cip service's
  :func:`phagoflow.services.cip.field_image` (``[DsRed, pHluorin]`` float32, intensity factor
  applied when the manifest records one);
- masks and per-field counts: ``results/<plate>/<method>/<version>/<well>/<field>.mask.tiff``
  and ``.objects.csv`` (:func:`phagoflow.events.mask_object_key`, ``objects_object_key``) of the
  version with the most fields per method;
- wells: ``reports/<plate>/wells.csv`` of metrics when the plate is complete, else the fields
  added up;
- curated masks and provenance: written to ``curated/<plate>/<field>.tiff`` and ``.json``
  (:func:`curated_mask_key`, :func:`curated_provenance_key`), the same bytes and document as
  ``RESULTS/curated/`` in folder mode;
- blind-rating sessions and scores: a local folder (``PHAGOFLOW_REVIEW_STATE_DIR/<plate>``).

Object keys are always rebuilt from a catalogue :class:`~phagoflow.core.opera.catalogue.FieldKey`
with the :mod:`phagoflow.events` key functions; request text never becomes a key.

``phagoflow serve review`` (:func:`serve_review_service`) runs the app as a service configured
by :class:`ReviewServiceSettings`; ``phagoflow review --s3 PLATE`` opens a plate by hand.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import numpy.typing as npt
import tifffile
from pydantic import Field

from phagoflow import events as ev
from phagoflow.core.opera.catalogue import ROLE_ORDER, FieldKey
from phagoflow.core.opera.harmony import infer_geometry
from phagoflow.review.masks import curated_provenance, encode_curated
from phagoflow.review.results import (
    CURATED,
    FieldSummary,
    ResultsError,
    ResultsUnavailable,
    WellInfo,
    build_wells,
    lookup_field,
    lookup_well,
    read_mask_tiff,
    summarise_fields,
    tally_objects,
)
from phagoflow.review.settings import ReviewSettings
from phagoflow.services.cip import field_image
from phagoflow.services.common import ServiceSettings
from phagoflow.services.kafkaio import PermanentError
from phagoflow.services.objectstore import (
    ObjectMissing,
    ObjectStore,
    ObjectStoreError,
    StoreUnavailable,
)

__all__ = [
    "ReviewServiceSettings",
    "StoreResults",
    "curated_mask_key",
    "curated_provenance_key",
    "list_plates",
    "open_store_results",
    "read_curated_provenances",
    "read_store_provenances",
    "serve_review_service",
]

logger = logging.getLogger(__name__)

_METHOD_ORDER = ("cip", "cdl", "mdl")
_MASK_SUFFIX = ".mask.tiff"


class ReviewServiceSettings(ServiceSettings):
    """Settings of ``phagoflow serve review`` (``PHAGOFLOW_*``; S3 ones in the base class).

    The token, personal tokens and upload limit are :class:`~phagoflow.review.settings.
    ReviewSettings` (``PHAGOFLOW_REVIEW_TOKEN`` ...), as for ``phagoflow review``.

    Attributes
    ----------
    review_plate : str or None
        Plate to review (``PHAGOFLOW_REVIEW_PLATE``); required (the error lists the plates in
        the bucket).
    review_port : int
        HTTP port of the app, ``/healthz`` and ``/readyz`` (``PHAGOFLOW_REVIEW_PORT``, 8404).
    review_state_dir : Path
        Local folder for blind-rating sessions and scores, one sub-folder per plate
        (``PHAGOFLOW_REVIEW_STATE_DIR``, default ``var/review``).
    review_refresh_s : float
        Opening the plate view re-reads the store (new masks, counts, curated masks, wells.csv)
        at most this often, in seconds (``PHAGOFLOW_REVIEW_REFRESH_S``).
    """

    review_plate: str | None = None
    review_port: int = Field(default=8404, ge=0, le=65535)
    review_state_dir: Path = Path("var/review")
    review_refresh_s: float = Field(default=10.0, ge=0.0)

    @property
    def http_port(self) -> int:
        return self.review_port


# --------------------------------------------------------------------------- keys


def _plate_part(plate: str) -> str:
    """The plate as it appears in object keys (percent-escaped, as every key function does)."""
    return ev.manifest_object_key(plate).split("/")[1]


def curated_mask_key(plate: str, key: FieldKey) -> str:
    """``curated/<plate>/<field name>.tiff``: a curated uint8 mask (zlib TIFF)."""
    return f"{CURATED}/{_plate_part(plate)}/{key.name}.tiff"


def curated_provenance_key(plate: str, key: FieldKey) -> str:
    """``curated/<plate>/<field name>.json``: the provenance of that curated mask."""
    return f"{CURATED}/{_plate_part(plate)}/{key.name}.json"


def list_plates(store: ObjectStore) -> list[str]:
    """Plate ids that have an ingest manifest in the store's bucket, sorted."""
    plates = []
    for k in store.list_keys("manifests/"):
        parts = k.split("/")
        if len(parts) == 3 and parts[2] == "ingest.json":
            plates.append(unquote(parts[1]))
    return sorted(plates)


def read_curated_provenances(store: ObjectStore, plate: str) -> dict[str, dict[str, Any]]:
    """Provenance documents under ``curated/<plate>/``, by field name."""
    docs: dict[str, dict[str, Any]] = {}
    prefix = f"{CURATED}/{_plate_part(plate)}/"
    for k in store.list_keys(prefix):
        name = k[len(prefix) :]
        if name.endswith(".json") and "/" not in name:
            doc = store.get_json(k)
            if isinstance(doc, dict):
                docs[name[: -len(".json")]] = doc
    return docs


def _plate_geometry(manifest: dict[str, Any], keys: dict[str, FieldKey]) -> tuple[int, int]:
    """(rows, columns) of the plate: as the manifest records them, else inferred from ``keys``.

    Inferred as the smallest standard plate holding every field's well
    (:func:`~phagoflow.core.opera.harmony.infer_geometry`).
    """
    rows, cols = manifest.get("plate_rows"), manifest.get("plate_columns")
    if isinstance(rows, int) and isinstance(cols, int) and rows > 0 and cols > 0:
        return int(rows), int(cols)
    return infer_geometry(
        max((k.row for k in keys.values()), default=1),
        max((k.col for k in keys.values()), default=1),
    )


def _unavailable(store: ObjectStore, exc: Exception, endpoint: str | None) -> ResultsUnavailable:
    where = f"S3 at {endpoint}" if endpoint else "the object store"
    return ResultsUnavailable(f"{where} (bucket {store.bucket}) is not reachable: {exc}")


# --------------------------------------------------------------------------- the results


class StoreResults:
    """One plate of the object store, as :class:`~phagoflow.review.results.ReviewResults`.

    Parameters
    ----------
    store : ObjectStore
        The bucket the services write to.
    plate : str
        Plate id.
    state_dir : path
        Local folder for blind-rating sessions and scores (``<state_dir>/<plate>/ratings``).
    refresh_s : float
        Minimum seconds between two re-reads of the store by :meth:`refresh`.
    workers : int
        Parallel S3 reads when loading the per-field object tables.
    endpoint : str, optional
        ``host:port`` of the store, for error messages.

    Raises
    ------
    ResultsUnavailable
        The store does not answer.
    ResultsError
        No such bucket or plate (the message lists the plates in the bucket), or the plate has
        no masks yet.
    """

    def __init__(
        self,
        store: ObjectStore,
        plate: str,
        *,
        state_dir: Path | str = Path("var/review"),
        refresh_s: float = 10.0,
        workers: int = 8,
        endpoint: str | None = None,
    ) -> None:
        self.store = store
        self.endpoint = endpoint
        try:
            self._part = _plate_part(plate)
        except ValueError as exc:
            raise ResultsError(str(exc)) from exc
        self.plate_id = plate
        self.refresh_s = refresh_s
        self.workers = workers
        self.root = Path(state_dir) / self._part
        self.problem: str | None = None
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._loaded_at = -math.inf
        self._object_counts: dict[tuple[str, str, str], dict[str, dict[str, int]]] = {}
        self._provenance: dict[str, dict[str, Any]] = {}
        try:
            self._load(self._manifest())
        except StoreUnavailable as exc:
            raise _unavailable(store, exc, endpoint) from exc
        except ObjectStoreError as exc:  # missing or corrupt object
            raise ResultsError(f"plate {plate}: {exc}") from exc
        if not self.methods:
            raise ResultsError(
                f"plate {plate} has no masks yet (nothing under results/{self._part}/ in bucket "
                f"{store.bucket}); wait until the cip or inference service processed its fields"
            )
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ loading

    def _manifest(self) -> dict[str, Any]:
        doc = self.store.get_json(ev.manifest_object_key(self.plate_id))
        if isinstance(doc, dict) and doc.get("fields"):
            return doc
        try:
            plates = list_plates(self.store)
        except ObjectMissing as exc:
            raise ResultsError(
                f"bucket {self.store.bucket} does not exist on this S3 server ({exc})"
            ) from exc
        if isinstance(doc, dict):
            raise ResultsError(f"plate {self.plate_id}: ingest has not published any field yet")
        listed = ", ".join(plates) if plates else "none"
        raise ResultsError(
            f"plate {self.plate_id!r} is not in bucket {self.store.bucket} (no "
            f"{ev.manifest_object_key(self.plate_id)}); plates in the bucket: {listed}"
        )

    def _load(self, manifest: dict[str, Any]) -> None:
        """Read everything once; attributes are replaced together at the end."""
        keys = self._manifest_keys(manifest)
        methods, versions, with_mask = self._masks_found(keys)
        counts = self._counts(keys, versions, with_mask)
        present = {name: {m for m in methods if name in with_mask[m]} for name in keys}
        fields = summarise_fields(keys, methods, counts, present=present)
        wells_csv = self._wells_rows()
        wells = build_wells(keys, fields, methods, wells_csv)
        curated = self._curated(keys)
        size_yx = self._size_yx(manifest, keys)
        rows, cols = _plate_geometry(manifest, keys)
        pixel = manifest.get("pixel_size_um")
        with self._lock:
            self._manifest_doc = manifest
            self._keys = keys
            self.methods: tuple[str, ...] = methods
            self.versions: dict[str, str] = versions
            self._with_mask = with_mask
            self.fields: dict[str, FieldSummary] = fields
            self.wells: dict[str, WellInfo] = wells
            self.size_yx: tuple[int, int] = size_yx
            self.plate_rows: int = rows
            self.plate_columns: int = cols
            self.pixel_size_um: float | None = (
                float(pixel) if isinstance(pixel, int | float) and pixel > 0 else None
            )
            # a save made while this read ran is in the cache but maybe not in ``curated``
            self._provenance = {**self._provenance, **curated}
            self._loaded_at = time.monotonic()

    def _manifest_keys(self, manifest: dict[str, Any]) -> dict[str, FieldKey]:
        """Field name → key of the manifest's fields, sorted by name (unknown names skipped).

        Raises
        ------
        ResultsError
            The manifest lists no field name the catalogue can parse.
        """
        keys: dict[str, FieldKey] = {}
        for name in manifest["fields"]:
            try:
                keys[name] = FieldKey.parse(name)
            except ValueError:
                logger.warning("manifest of %s lists an unknown field name %r", self.plate_id, name)
        if not keys:
            raise ResultsError(f"plate {self.plate_id}: the manifest lists no usable field")
        return dict(sorted(keys.items()))

    def _masks_found(
        self, keys: dict[str, FieldKey]
    ) -> tuple[tuple[str, ...], dict[str, str], dict[str, set[str]]]:
        """The masks under ``results/<plate>/``: which methods, which version of each, which fields.

        Parameters
        ----------
        keys : dict of str to FieldKey
            The plate's fields; a mask of another name, or at a key the pipeline would not
            write, is ignored.

        Returns
        -------
        methods : tuple of str
            Methods with a mask, ``cip``, ``cdl``, ``mdl`` first, then the others by name.
        versions : dict of str to str
            Method → its version with the most fields (ties: the larger version string).
        with_mask : dict of str to set of str
            Method → the fields with a mask of that version.
        """
        prefix = f"results/{self._part}/"
        found: dict[str, dict[str, set[str]]] = {}
        for k in self.store.list_keys(prefix):
            parts = k[len(prefix) :].split("/")
            if len(parts) != 4 or not parts[3].endswith(_MASK_SUFFIX):
                continue
            method, version, _well, file = parts
            name = file[: -len(_MASK_SUFFIX)]
            if name in keys and k == self._mask_key(keys[name], method, version):
                found.setdefault(method, {}).setdefault(version, set()).add(name)
        methods = tuple(m for m in _METHOD_ORDER if m in found) + tuple(
            sorted(set(found) - set(_METHOD_ORDER))
        )
        versions = {m: max(found[m], key=lambda v: (len(found[m][v]), v)) for m in methods}
        return methods, versions, {m: found[m][versions[m]] for m in methods}

    def _mask_key(self, key: FieldKey, method: str, version: str) -> str | None:
        try:
            return ev.mask_object_key(self.plate_id, key, method, version)
        except ValueError:  # not a method name the pipeline knows
            return None

    def _counts(
        self,
        keys: dict[str, FieldKey],
        versions: dict[str, str],
        with_mask: dict[str, set[str]],
    ) -> dict[str, dict[str, dict[str, int]]]:
        """Per-field counts from the objects tables (each read once, then cached)."""
        todo = [
            (m, versions[m], name)
            for m in versions
            for name in sorted(with_mask[m])
            if (m, versions[m], name) not in self._object_counts
        ]

        def _read(item: tuple[str, str, str]) -> dict[str, dict[str, int]]:
            method, version, name = item
            key = ev.objects_object_key(self.plate_id, keys[name], method, version)
            try:
                text = self.store.get_bytes(key).decode("utf-8", "replace")
            except ObjectMissing:
                logger.warning("%s: mask without objects table %s", name, key)
                return {}
            return tally_objects(csv.DictReader(io.StringIO(text))).get(name, {})

        if todo:
            with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
                for item, result in zip(todo, pool.map(_read, todo), strict=True):
                    self._object_counts[item] = result
        counts: dict[str, dict[str, dict[str, int]]] = {}
        for m, version in versions.items():
            for name in with_mask[m]:
                per_method = self._object_counts.get((m, version, name), {})
                counts.setdefault(name, {})[m] = per_method.get(m, {})
        return counts

    def _wells_rows(self) -> list[dict[str, str]]:
        try:
            data = self.store.get_bytes(ev.report_object_key(self.plate_id, "wells.csv"))
        except ObjectMissing:
            return []
        return list(csv.DictReader(io.StringIO(data.decode("utf-8", "replace"))))

    def _curated(self, keys: dict[str, FieldKey]) -> dict[str, dict[str, Any]]:
        prefix = f"{CURATED}/{self._part}/"
        listed = set(self.store.list_keys(prefix))
        out: dict[str, dict[str, Any]] = {}
        for name, key in keys.items():
            if curated_mask_key(self.plate_id, key) not in listed:
                continue
            doc = self._provenance.get(name)
            if doc is None and curated_provenance_key(self.plate_id, key) in listed:
                got = self.store.get_json(curated_provenance_key(self.plate_id, key))
                doc = got if isinstance(got, dict) else None
            out[name] = doc or {}
        return out

    def _size_yx(self, manifest: dict[str, Any], keys: dict[str, FieldKey]) -> tuple[int, int]:
        size = manifest.get("size_yx")
        if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size):
            return int(size[0]), int(size[1])
        if getattr(self, "size_yx", None):
            return self.size_yx
        first = next(iter(keys.values()))
        data = self.store.get_bytes(ev.raw_object_key(self.plate_id, first, ROLE_ORDER[0]))
        try:
            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                shape = tif.pages[0].shape
        except Exception as exc:
            raise ResultsError(f"cannot read the raw channel of {first.name}: {exc}") from exc
        return int(shape[0]), int(shape[1])

    def refresh(self) -> None:
        """Re-read the store when the last read is older than ``refresh_s`` (new results).

        A store that does not answer keeps the previous state and sets :attr:`problem`.
        """
        if time.monotonic() - self._loaded_at < self.refresh_s:
            return
        if not self._refreshing.acquire(blocking=False):
            return  # another request is re-reading the store
        try:
            manifest = self.store.get_json(ev.manifest_object_key(self.plate_id))
            self._load(manifest if isinstance(manifest, dict) else self._manifest_doc)
        except (ObjectStoreError, ResultsError) as exc:
            self.problem = str(
                _unavailable(self.store, exc, self.endpoint)
                if isinstance(exc, StoreUnavailable)
                else exc
            )
            logger.warning("refresh of plate %s failed: %s", self.plate_id, exc)
            return
        finally:
            self._refreshing.release()
        self.problem = None

    # ------------------------------------------------------------------ protocol

    @property
    def sources(self) -> tuple[str, ...]:
        """Mask sources a client may ask for: every method plus ``curated``."""
        return (*self.methods, CURATED)

    def field_key(self, name: str) -> FieldKey:
        """The key of field ``name`` (``KeyError`` unless a published field of the plate)."""
        return lookup_field(self._keys, name, self.plate_id)

    def well_name(self, name: str) -> str:
        """Validated well name; ``KeyError`` when the plate has no such well."""
        return lookup_well(self.wells, name, self.plate_id)

    def image(self, key: FieldKey) -> npt.NDArray[np.float32]:
        """The raw field ``(2, H, W)`` float32 [DsRed, pHluorin], as the cip service reads it."""
        entry = self._manifest_doc["fields"].get(key.name, {})
        h, w = self.size_yx
        event = ev.FieldAcquired(
            field=ev.field_id(self.plate_id, key),
            size_x=w,
            size_y=h,
            # field_image checks it is positive; the pixels do not depend on it
            pixel_size_um=self.pixel_size_um or 1.0,
        )
        for role in ROLE_ORDER:
            channel = entry.get("channels", {}).get(role.value, {})
            image = event.channels[role.value]
            image.object.CopyFrom(
                ev.ObjectRef(
                    bucket=self.store.bucket,
                    key=ev.raw_object_key(self.plate_id, key, role),
                    sha256=str(channel.get("sha256", "")),
                )
            )
            factor = channel.get("intensity_factor")
            if isinstance(factor, int | float) and factor != 1.0:
                image.intensity_factor = float(factor)
        try:
            return field_image(event, self.store)[1]
        except StoreUnavailable as exc:
            raise _unavailable(self.store, exc, self.endpoint) from exc
        except (PermanentError, ObjectStoreError) as exc:  # missing, corrupt, unreadable
            raise ResultsError(f"raw channels of {key.name} cannot be read: {exc}") from exc

    def _object_key(self, key: FieldKey, source: str) -> str | None:
        if source == CURATED:
            return curated_mask_key(self.plate_id, key) if key.name in self._provenance else None
        if source in self.methods and key.name in self._with_mask[source]:
            return self._mask_key(key, source, self.versions[source])
        return None

    def has_mask(self, key: FieldKey, source: str) -> bool:
        """Whether ``source`` has a mask of ``key`` (as of the last read of the store)."""
        return self._object_key(key, source) is not None

    def mask(self, key: FieldKey, source: str) -> npt.NDArray[np.uint8] | None:
        """The ``(H, W)`` uint8 mask of ``key`` from ``source``; ``None`` if absent or invalid."""
        if source not in self.sources:
            raise KeyError(f"no mask source {source[:40]!r}; choose from {list(self.sources)}")
        object_key = self._object_key(key, source)
        if object_key is None:
            return None
        try:
            data = self.store.get_bytes(object_key)
        except ObjectMissing:
            return None
        except ObjectStoreError as exc:
            raise _unavailable(self.store, exc, self.endpoint) from exc
        return read_mask_tiff(data, self.size_yx, object_key)

    def provenance(self, key: FieldKey) -> dict[str, Any] | None:
        """The curated mask's provenance, or ``None``."""
        return self._provenance.get(key.name) or None

    def curated_names(self) -> list[str]:
        """Fields with a curated mask (as of the last read of the store, plus this app's saves)."""
        return sorted(self._provenance)

    def curated_provenances(self) -> dict[str, dict[str, Any]]:
        """Provenance of every curated field, by field name."""
        return dict(self._provenance)

    def save_curated(
        self, key: FieldKey, mask: npt.NDArray[np.uint8], **provenance: Any
    ) -> dict[str, Any]:
        """Put the curated mask and its provenance under ``curated/<plate>/``; return the latter.

        The mask is written first, then the provenance (as in folder mode).

        Raises
        ------
        ResultsUnavailable
            The store did not take the objects.
        """
        doc = curated_provenance(mask, plate_id=self.plate_id, field=key.name, **provenance)
        try:
            self.store.put_bytes(
                curated_mask_key(self.plate_id, key),
                encode_curated(mask),
                content_type="image/tiff",
            )
            self.store.put_bytes(
                curated_provenance_key(self.plate_id, key),
                (json.dumps(doc, indent=2) + "\n").encode(),
                content_type="application/json",
            )
        except ObjectStoreError as exc:
            raise _unavailable(self.store, exc, self.endpoint) from exc
        with self._lock:
            self._provenance = {**self._provenance, key.name: doc}
        return doc


# --------------------------------------------------------------------------- entry points


def _open_store(settings: ReviewServiceSettings) -> ObjectStore:
    try:
        return ObjectStore.from_settings(settings)
    except ValueError as exc:  # the client refuses the endpoint (e.g. with a scheme or path)
        raise ResultsError(f"PHAGOFLOW_S3_ENDPOINT {settings.s3_endpoint!r}: {exc}") from exc


def open_store_results(settings: ReviewServiceSettings, plate: str | None = None) -> StoreResults:
    """Open ``plate`` (default ``settings.review_plate``) in the bucket of ``settings``.

    Raises
    ------
    ResultsError
        No plate given (the message lists the plates), unknown plate, no masks yet, or the
        store is unreachable (:class:`ResultsUnavailable`).
    """
    store = _open_store(settings)
    chosen = plate or settings.review_plate
    if not chosen:
        try:
            plates = ", ".join(list_plates(store)) or "none"
        except ObjectMissing as exc:
            raise ResultsError(f"bucket {store.bucket} does not exist ({exc})") from exc
        except ObjectStoreError as exc:
            raise _unavailable(store, exc, settings.s3_endpoint) from exc
        raise ResultsError(
            f"no plate chosen: set PHAGOFLOW_REVIEW_PLATE; plates in bucket {store.bucket}: "
            f"{plates}"
        )
    return StoreResults(
        store,
        chosen,
        state_dir=settings.review_state_dir,
        refresh_s=settings.review_refresh_s,
        endpoint=settings.s3_endpoint,
    )


def read_store_provenances(
    settings: ReviewServiceSettings, plate: str
) -> dict[str, dict[str, Any]]:
    """Curated provenance documents of ``plate`` in the bucket of ``settings``, by field.

    Raises
    ------
    ResultsError
        Unknown plate or bucket; :class:`ResultsUnavailable` when the store does not answer.
    """
    try:
        manifest_key = ev.manifest_object_key(plate)
    except ValueError as exc:  # a plate id no key can hold
        raise ResultsError(str(exc)) from exc
    store = _open_store(settings)
    try:
        if store.exists(manifest_key):
            return read_curated_provenances(store, plate)
        plates = ", ".join(list_plates(store)) or "none"
    except StoreUnavailable as exc:
        raise _unavailable(store, exc, settings.s3_endpoint) from exc
    except ObjectStoreError as exc:
        raise ResultsError(f"bucket {store.bucket}: {exc}") from exc
    raise ResultsError(
        f"plate {plate!r} is not in bucket {store.bucket}; plates in the bucket: {plates}"
    )


def serve_review_service(
    settings: ReviewServiceSettings | None = None, review: ReviewSettings | None = None
) -> int:  # pragma: no cover - exercised by hand (uvicorn until SIGTERM)
    """``phagoflow serve review``: open the plate, serve the app until SIGTERM; exit status."""
    from phagoflow.review.app import run_app
    from phagoflow.services.common import configure_logging

    settings = settings or ReviewServiceSettings()
    configure_logging("review", level=settings.log_level, json_lines=settings.log_json)
    results = open_store_results(settings)
    run_app(
        results,
        host=settings.http_host,
        port=settings.review_port,
        settings=review,
        log_level=settings.log_level.lower(),
    )
    return 0
