"""What the review app reads and writes: the :class:`ReviewResults` protocol and a results folder.

:class:`ReviewResults` is everything :func:`phagoflow.review.app.create_app` needs of one plate's
results: identity and geometry, per-field and per-well counts, raw channels, masks per source and
saving curated masks with provenance. Two implementations:

- :class:`ResultsFolder` (this module): an embedded results folder (what ``phagoflow run --out
  RESULTS`` writes). It opens ``RESULTS/run.json``, re-reads the plate export it names with
  :func:`phagoflow.core.opera.read_plate` (so raw channels can be shown), and indexes
  ``wells.csv`` and ``objects.csv``;
- :class:`phagoflow.review.store.StoreResults`: one plate in the streaming stack's object store.

Both are the only places that turn a request's field name into a path or key:
:meth:`ReviewResults.field_key` accepts a name only if it is a catalogue field, and every path is
then rebuilt from the parsed :class:`~phagoflow.core.opera.catalogue.FieldKey`, never from the
request string. :func:`count_objects` and :func:`build_wells` turn ``objects.csv`` and
``wells.csv`` rows into :class:`FieldSummary` / :class:`WellInfo` for both.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import tifffile

from phagoflow.core.classes import OBJECT_CLASS_NAMES, OBJECT_CLASSES
from phagoflow.core.opera import PlateCatalogue, load_field, read_plate
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.opera.roles import recorded_channel_roles
from phagoflow.core.qc import relative_difference
from phagoflow.core.wells import parse_well, well_id
from phagoflow.review.masks import save_curated

__all__ = [
    "CURATED",
    "FieldSummary",
    "ResultsError",
    "ResultsFolder",
    "ResultsUnavailable",
    "ReviewResults",
    "WellInfo",
    "build_wells",
    "count_objects",
    "read_mask_tiff",
    "summarise_fields",
    "tally_objects",
]

logger = logging.getLogger(__name__)

#: Mask source name of expert-curated masks (``RESULTS/curated/``).
CURATED = "curated"

_CLASSES = tuple(OBJECT_CLASS_NAMES.values())  # ("phagophore", "autolysosome")


class ResultsError(ValueError):
    """The results cannot be used (no run.json, export not found, unknown plate, no masks, ...)."""


class ResultsUnavailable(ResultsError):
    """Where the results live does not answer now (object store down): retry later."""


@dataclass
class FieldSummary:
    """Per-field object counts by method and the disagreement of the first two methods.

    Attributes
    ----------
    name : str
        Field name ``rRRcCCfFFpPP``.
    well : str
        Well name ``rRRcCC``.
    counts : dict
        ``{method: {"phagophore": n, "autolysosome": n}}`` from ``objects.csv``.
    disagreement : float
        Mean over the two classes of the relative count difference (0‥2) of the first two
        methods (CIP vs CDL); ``nan`` when fewer than two methods ran.
    """

    name: str
    well: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    disagreement: float = math.nan


@dataclass
class WellInfo:
    """One well: counts per method (``wells.csv``) and CIP-vs-CDL disagreement per class."""

    well: str
    row: int
    col: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    disagreement: dict[str, float] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)

    @property
    def disagreement_total(self) -> float:
        """Mean of the per-class disagreements (``nan`` when not available)."""
        vals = [v for v in self.disagreement.values() if not math.isnan(v)]
        return float(np.mean(vals)) if vals else math.nan


@runtime_checkable
class ReviewResults(Protocol):
    """One plate's results as the review app sees them (a folder or the object store).

    Attributes
    ----------
    plate_id : str
        Plate id.
    size_yx : (int, int)
        Field size ``(H, W)`` in pixels.
    plate_rows, plate_columns : int
        Plate geometry (for the heat-map).
    pixel_size_um : float or None
        Pixel size in µm, ``None`` when unknown.
    methods : tuple of str
        Segmentation methods with masks, CIP first (the first two are compared).
    sources : tuple of str
        Mask sources a client may ask for: every method plus ``curated``.
    fields : dict of str to FieldSummary
        Every field of the plate, by name.
    wells : dict of str to WellInfo
        Every well of the plate, by name (fields sorted by disagreement, largest first).
    root : Path
        Local folder holding ``ratings/`` (blind-rating sessions and scores).
    problem : str or None
        Why the results are not usable right now (``/readyz`` answers 503), else ``None``.
    """

    @property
    def plate_id(self) -> str: ...
    @property
    def size_yx(self) -> tuple[int, int]: ...
    @property
    def plate_rows(self) -> int: ...
    @property
    def plate_columns(self) -> int: ...
    @property
    def pixel_size_um(self) -> float | None: ...
    @property
    def methods(self) -> tuple[str, ...]: ...
    @property
    def sources(self) -> tuple[str, ...]: ...
    @property
    def fields(self) -> dict[str, FieldSummary]: ...
    @property
    def wells(self) -> dict[str, WellInfo]: ...
    @property
    def root(self) -> Path: ...
    @property
    def problem(self) -> str | None: ...

    def field_key(self, name: str) -> FieldKey:
        """The key of field ``name``; ``KeyError`` unless it is exactly a field of the plate."""
        ...

    def well_name(self, name: str) -> str:
        """Validated well name; ``KeyError`` when the plate has no such well."""
        ...

    def image(self, key: FieldKey) -> npt.NDArray[np.float32]:
        """The raw field, ``(2, H, W)`` float32 ordered [DsRed, pHluorin]."""
        ...

    def has_mask(self, key: FieldKey, source: str) -> bool:
        """Whether ``source`` (one of :attr:`sources`) has a mask of ``key``."""
        ...

    def mask(self, key: FieldKey, source: str) -> npt.NDArray[np.uint8] | None:
        """The ``(H, W)`` uint8 mask of ``key`` from ``source``; ``None`` if absent or invalid."""
        ...

    def provenance(self, key: FieldKey) -> dict[str, Any] | None:
        """The curated mask's provenance, or ``None``."""
        ...

    def curated_names(self) -> list[str]:
        """Names of the fields that have a curated mask."""
        ...

    def curated_provenances(self) -> dict[str, dict[str, Any]]:
        """Provenance of every curated field, by field name."""
        ...

    def save_curated(
        self, key: FieldKey, mask: npt.NDArray[np.uint8], **provenance: Any
    ) -> dict[str, Any]:
        """Store a validated curated mask and its provenance; return the provenance.

        ``provenance`` holds the keyword arguments of :func:`phagoflow.review.masks.
        curated_provenance` except ``mask``, ``plate_id`` and ``field``.
        """
        ...

    def refresh(self) -> None:
        """Pick up results that arrived since the last call (no-op for a finished folder)."""
        ...


def lookup_field(keys: dict[str, FieldKey], name: str, plate_id: str) -> FieldKey:
    """The key of field ``name`` among ``keys``; ``KeyError`` (quoting 40 characters) otherwise.

    The one check between request text and a field: only an exact field name of the plate
    passes, so ``/``, ``..`` or a NUL byte never reach a path.
    """
    key = keys.get(name)
    if key is None:
        raise KeyError(f"no field {name[:40]!r} on plate {plate_id}")
    return key


def lookup_well(wells: dict[str, WellInfo], name: str, plate_id: str) -> str:
    """The key (``rRRcCC``) of well ``name`` of the plate, named ``rRRcCC`` or ``A01``
    (:func:`phagoflow.core.wells.parse_well`); ``KeyError`` when the plate has no such well."""
    if name in wells:
        return name
    try:
        key = well_id(*parse_well(name)) if len(name) <= 12 else ""
    except ValueError:
        key = ""
    if key not in wells:
        raise KeyError(f"no well {name[:40]!r} on plate {plate_id}")
    return key


class ResultsFolder:
    """An embedded results folder with its plate catalogue.

    Parameters
    ----------
    root : path
        Folder written by ``phagoflow run --out``.
    export : path, optional
        The plate export, when it moved since the run (default: ``run.json`` ``export.root``).

    Raises
    ------
    ResultsError
        No readable ``run.json``, or the export cannot be read.
    """

    def __init__(self, root: Path | str, *, export: Path | str | None = None) -> None:
        self.root = Path(root).resolve()
        try:
            self.run = json.loads((self.root / "run.json").read_text())
        except (OSError, ValueError) as exc:
            raise ResultsError(
                f"{self.root} is not a phagoflow results folder (run.json: {exc})"
            ) from exc
        export_path = Path(export) if export is not None else Path(self.run["export"]["root"])
        roles = recorded_channel_roles(self.run["export"].get("channels", []))
        try:
            self.catalogue: PlateCatalogue = read_plate(export_path, channel_roles=roles or None)
        except (OSError, ValueError) as exc:
            raise ResultsError(
                f"cannot read the plate export {export_path} named in {self.root / 'run.json'} "
                f"({exc}); pass the export's new location"
            ) from exc
        self.methods: tuple[str, ...] = tuple(self.run.get("methods", {})) or tuple(
            sorted(p.name for p in (self.root / "masks").iterdir() if p.is_dir())
        )
        self._keys: dict[str, FieldKey] = {rec.key.name: rec.key for rec in self.catalogue.fields}
        self.fields: dict[str, FieldSummary] = count_objects(
            self._keys, self.methods, _csv_rows(self.root / "objects.csv")
        )
        self.wells: dict[str, WellInfo] = build_wells(
            self._keys, self.fields, self.methods, _csv_rows(self.root / "wells.csv")
        )
        #: Nothing can go away under a finished folder: always ready.
        self.problem: str | None = None

    # ------------------------------------------------------------------ identity and paths
    @property
    def plate_id(self) -> str:
        """Plate id of the export."""
        return self.catalogue.plate_id

    @property
    def size_yx(self) -> tuple[int, int]:
        """Field size ``(H, W)`` in pixels."""
        return self.catalogue.size_yx

    @property
    def plate_rows(self) -> int:
        """Rows of the plate."""
        return self.catalogue.plate_rows

    @property
    def plate_columns(self) -> int:
        """Columns of the plate."""
        return self.catalogue.plate_columns

    @property
    def pixel_size_um(self) -> float | None:
        """Pixel size in µm (``None`` when the export does not say)."""
        value = self.catalogue.pixel_size_um
        return value if math.isfinite(value) else None

    @property
    def sources(self) -> tuple[str, ...]:
        """Mask sources a client may ask for: every method plus ``curated``."""
        return (*self.methods, CURATED)

    def field_key(self, name: str) -> FieldKey:
        """The catalogue key of field ``name``.

        Raises
        ------
        KeyError
            ``name`` is not a field of this plate (this includes anything with ``/``, ``..``,
            a NUL byte, or any other text that is not exactly a catalogue field name).
        """
        return lookup_field(self._keys, name, self.plate_id)

    def well_name(self, name: str) -> str:
        """Validated well name; ``KeyError`` when the plate has no such well."""
        return lookup_well(self.wells, name, self.plate_id)

    def mask_path(self, key: FieldKey, source: str) -> Path:
        """Path of the mask of ``key`` from ``source`` (a method or ``curated``).

        ``source`` must be one of :attr:`sources` (``KeyError`` otherwise); the file name is
        built from the key, never from request text.
        """
        if source not in self.sources:
            raise KeyError(f"no mask source {source[:40]!r}; choose from {list(self.sources)}")
        if source == CURATED:
            return self.root / CURATED / f"{key.name}.tiff"
        return self.root / "masks" / source / f"{key.name}.tiff"

    def provenance_path(self, key: FieldKey) -> Path:
        """JSON sidecar of the curated mask of ``key``."""
        return self.root / CURATED / f"{key.name}.json"

    # ------------------------------------------------------------------ pixels
    def image(self, key: FieldKey) -> npt.NDArray[np.float32]:
        """The raw field, ``(2, H, W)`` float32 ordered [DsRed, pHluorin]."""
        return load_field(self.catalogue, key)

    def has_mask(self, key: FieldKey, source: str) -> bool:
        """Whether ``source`` has a mask file of ``key``."""
        return self.mask_path(key, source).is_file()

    def mask(self, key: FieldKey, source: str) -> npt.NDArray[np.uint8] | None:
        """The ``(H, W)`` uint8 mask of ``key`` from ``source``; ``None`` if absent or invalid."""
        path = self.mask_path(key, source)
        if not path.is_file():
            return None
        return read_mask_tiff(path, self.size_yx, str(path))

    def provenance(self, key: FieldKey) -> dict[str, Any] | None:
        """The curated mask's provenance sidecar, or ``None``."""
        try:
            doc = json.loads(self.provenance_path(key).read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def curated_names(self) -> list[str]:
        """Names of the catalogue fields that have a curated mask."""
        folder = self.root / CURATED
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.tiff") if p.stem in self._keys)

    def curated_provenances(self) -> dict[str, dict[str, Any]]:
        """Provenance sidecar of every curated field (``{}`` for a mask without one)."""
        return {name: self.provenance(self._keys[name]) or {} for name in self.curated_names()}

    def save_curated(
        self, key: FieldKey, mask: npt.NDArray[np.uint8], **provenance: Any
    ) -> dict[str, Any]:
        """Write ``RESULTS/curated/<field>.tiff`` and ``.json`` atomically; return the sidecar."""
        return save_curated(
            mask,
            self.mask_path(key, CURATED),
            self.provenance_path(key),
            plate_id=self.plate_id,
            field=key.name,
            **provenance,
        )

    def refresh(self) -> None:
        """Nothing to do: a results folder is read once."""


def read_mask_tiff(
    source: Path | bytes, shape: tuple[int, int], where: str
) -> npt.NDArray[np.uint8] | None:
    """A stored ``(H, W)`` uint8 mask TIFF (path or bytes); ``None`` (logged) if unusable."""
    try:
        mask = tifffile.imread(source if isinstance(source, Path) else io.BytesIO(source))
    except Exception as exc:  # a damaged file should not take the app down
        logger.warning("cannot read mask %s: %s", where, exc)
        return None
    if mask.shape != shape or mask.dtype != np.uint8:
        logger.warning("mask %s has shape %s dtype %s", where, mask.shape, mask.dtype)
        return None
    return np.asarray(mask)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def tally_objects(rows: Iterable[Mapping[str, str]]) -> dict[str, dict[str, dict[str, int]]]:
    """Objects per field, method and class from ``objects.csv`` rows (one row per object).

    Returns ``{field: {method: {"phagophore": n, "autolysosome": n}}}``; rows of other classes
    are ignored.
    """
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for row in rows:
        cls = row.get("class", "")
        if cls not in _CLASSES:
            continue
        by_method = counts.setdefault(row.get("field", ""), {})
        by_method.setdefault(row.get("method", ""), dict.fromkeys(_CLASSES, 0))[cls] += 1
    return counts


def summarise_fields(
    keys: Mapping[str, FieldKey],
    methods: tuple[str, ...],
    counts: Mapping[str, Mapping[str, Mapping[str, int]]],
    *,
    present: Mapping[str, set[str]] | None = None,
) -> dict[str, FieldSummary]:
    """One :class:`FieldSummary` per field with its counts and the first two methods' disagreement.

    Parameters
    ----------
    keys : mapping of str to FieldKey
        The plate's fields by name; counts of other fields are ignored.
    methods : tuple of str
        Methods of the plate (the first two are compared).
    counts : mapping
        ``{field: {method: {class: n}}}`` (:func:`tally_objects`).
    present : mapping of str to set of str, optional
        Methods that have a result per field. A field gets zero counts for each of these
        methods that ``counts`` does not name (a result without objects) and no counts for the
        others (no result yet; disagreement ``nan`` when one of the first two is missing).
        Default: every field has a result of every method.
    """
    fields = {}
    for name, key in keys.items():
        has = set(methods) if present is None else present.get(name, set())
        found = counts.get(name, {})
        summary = FieldSummary(name, key.well)
        for m in methods:
            if m in has:
                summary.counts[m] = {c: int(found.get(m, {}).get(c, 0)) for c in _CLASSES}
        summary.disagreement = _disagreement(summary.counts, methods)
        fields[name] = summary
    return fields


def count_objects(
    keys: Mapping[str, FieldKey],
    methods: tuple[str, ...],
    rows: Iterable[Mapping[str, str]],
) -> dict[str, FieldSummary]:
    """Per-field summaries from ``objects.csv`` rows (``field``, ``method``, ``class``).

    Every field gets a count for every method (0 when no row names it); see
    :func:`summarise_fields`.
    """
    return summarise_fields(keys, methods, tally_objects(rows))


def build_wells(
    keys: Mapping[str, FieldKey],
    fields: Mapping[str, FieldSummary],
    methods: tuple[str, ...],
    rows: Iterable[Mapping[str, str]],
) -> dict[str, WellInfo]:
    """Wells of the plate: counts and disagreement from ``wells.csv`` rows, else from the fields.

    A well without ``wells.csv`` rows adds up its fields' counts; a well without the
    ``cip_cdl_disagreement_*`` columns gets the relative difference of the first two methods'
    counts. Fields are sorted by disagreement, largest first.
    """
    wells: dict[str, WellInfo] = {}
    for name, key in keys.items():
        info = wells.setdefault(key.well, WellInfo(key.well, key.row, key.col))
        info.fields.append(name)
    for row in rows:
        found = wells.get(row.get("well", ""))
        if found is None:
            continue
        found.counts[row.get("method", "")] = {
            k.label: _int(row.get(k.plural)) for k in OBJECT_CLASSES
        }
        for k in OBJECT_CLASSES:
            col = f"cip_cdl_disagreement_{k.plural}"
            if row.get(col):
                found.disagreement[k.label] = _float(row[col])
    for info in wells.values():
        if not info.counts:  # no wells.csv: add up the fields
            for name in info.fields:
                for m, c in fields[name].counts.items():
                    acc = info.counts.setdefault(m, dict.fromkeys(_CLASSES, 0))
                    for cls in _CLASSES:
                        acc[cls] += c[cls]
        if not info.disagreement and len(methods) >= 2:
            a, b = (info.counts.get(m, {}) for m in methods[:2])
            info.disagreement = {
                cls: relative_difference(a.get(cls, 0), b.get(cls, 0)) for cls in _CLASSES
            }
        info.fields.sort(key=lambda n: _sort_key(fields[n].disagreement), reverse=True)
    return dict(sorted(wells.items()))


def _disagreement(counts: dict[str, dict[str, int]], methods: tuple[str, ...]) -> float:
    if len(methods) < 2 or any(m not in counts for m in methods[:2]):
        return math.nan
    a, b = counts[methods[0]], counts[methods[1]]
    return float(np.mean([relative_difference(a[c], b[c]) for c in _CLASSES]))


def _sort_key(value: float) -> float:
    return -1.0 if math.isnan(value) else value


def _int(text: str | None) -> int:
    try:
        return int(float(text or 0))
    except ValueError:
        return 0


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan
