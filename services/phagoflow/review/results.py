"""Read-only view of an embedded results folder (what ``phagoflow run --out RESULTS`` writes).

:class:`ResultsFolder` opens ``RESULTS/run.json``, re-reads the plate export it names with
:func:`phagoflow.core.opera.read_plate` (so raw channels can be shown), and indexes ``wells.csv``
and ``objects.csv``. It is the only place that turns a request's field name into a path:
:meth:`ResultsFolder.field_key` accepts a name only if it is a catalogue field, and every path is
then rebuilt from the parsed :class:`~phagoflow.core.opera.catalogue.FieldKey`, never from the
request string.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tifffile

from phagoflow.core.counting import CLASS_NAMES
from phagoflow.core.opera import PlateCatalogue, load_field, read_plate
from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.core.qc import relative_difference

__all__ = [
    "CURATED",
    "FieldSummary",
    "ResultsError",
    "ResultsFolder",
    "WellInfo",
]

logger = logging.getLogger(__name__)

#: Mask source name of expert-curated masks (``RESULTS/curated/``).
CURATED = "curated"

_CLASSES = tuple(CLASS_NAMES.values())  # ("phagophore", "autolysosome")


class ResultsError(ValueError):
    """The results folder cannot be used (no run.json, export not found, ...)."""


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
        try:
            self.catalogue: PlateCatalogue = read_plate(export_path)
        except (OSError, ValueError) as exc:
            raise ResultsError(
                f"cannot read the plate export {export_path} named in {self.root / 'run.json'} "
                f"({exc}); pass the export's new location"
            ) from exc
        self.methods: tuple[str, ...] = tuple(self.run.get("methods", {})) or tuple(
            sorted(p.name for p in (self.root / "masks").iterdir() if p.is_dir())
        )
        self._keys: dict[str, FieldKey] = {rec.key.name: rec.key for rec in self.catalogue.fields}
        self.fields: dict[str, FieldSummary] = {
            name: FieldSummary(name, key.well) for name, key in self._keys.items()
        }
        self._read_objects()
        self.wells: dict[str, WellInfo] = self._read_wells()

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
        key = self._keys.get(name)
        if key is None:
            raise KeyError(f"no field {name[:40]!r} on plate {self.plate_id}")
        return key

    def well_name(self, name: str) -> str:
        """Validated well name; ``KeyError`` when the plate has no such well."""
        if name not in self.wells:
            raise KeyError(f"no well {name[:40]!r} on plate {self.plate_id}")
        return name

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

    def mask(self, key: FieldKey, source: str) -> npt.NDArray[np.uint8] | None:
        """The ``(H, W)`` uint8 mask of ``key`` from ``source``; ``None`` if absent or invalid."""
        path = self.mask_path(key, source)
        if not path.is_file():
            return None
        try:
            mask = tifffile.imread(path)
        except Exception as exc:  # a damaged file should not take the app down
            logger.warning("cannot read mask %s: %s", path, exc)
            return None
        if mask.shape != self.size_yx or mask.dtype != np.uint8:
            logger.warning("mask %s has shape %s dtype %s", path, mask.shape, mask.dtype)
            return None
        return np.asarray(mask)

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

    # ------------------------------------------------------------------ tables
    def _read_objects(self) -> None:
        path = self.root / "objects.csv"
        if not path.is_file():
            return
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                summary = self.fields.get(row.get("field", ""))
                method = row.get("method", "")
                cls = row.get("class", "")
                if summary is None or cls not in _CLASSES:
                    continue
                counts = summary.counts.setdefault(method, dict.fromkeys(_CLASSES, 0))
                counts[cls] += 1
        for summary in self.fields.values():
            for m in self.methods:
                summary.counts.setdefault(m, dict.fromkeys(_CLASSES, 0))
            summary.disagreement = _disagreement(summary.counts, self.methods)

    def _read_wells(self) -> dict[str, WellInfo]:
        wells: dict[str, WellInfo] = {}
        for name, key in self._keys.items():
            info = wells.setdefault(key.well, WellInfo(key.well, key.row, key.col))
            info.fields.append(name)
        path = self.root / "wells.csv"
        rows: Iterable[dict[str, str]] = []
        if path.is_file():
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
        for row in rows:
            found = wells.get(row.get("well", ""))
            if found is None:
                continue
            found.counts[row.get("method", "")] = {
                "phagophore": _int(row.get("phagophores")),
                "autolysosome": _int(row.get("autolysosomes")),
            }
            for cls, col in (
                ("phagophore", "cip_cdl_disagreement_phagophores"),
                ("autolysosome", "cip_cdl_disagreement_autolysosomes"),
            ):
                if row.get(col):
                    found.disagreement[cls] = _float(row[col])
        for info in wells.values():
            if not info.counts:  # no wells.csv: add up the fields
                for name in info.fields:
                    for m, c in self.fields[name].counts.items():
                        acc = info.counts.setdefault(m, dict.fromkeys(_CLASSES, 0))
                        for cls in _CLASSES:
                            acc[cls] += c[cls]
            if not info.disagreement and len(self.methods) >= 2:
                a, b = (info.counts.get(m, {}) for m in self.methods[:2])
                info.disagreement = {
                    cls: relative_difference(a.get(cls, 0), b.get(cls, 0)) for cls in _CLASSES
                }
            info.fields.sort(key=lambda n: _sort_key(self.fields[n].disagreement), reverse=True)
        return dict(sorted(wells.items()))


def _disagreement(counts: dict[str, dict[str, int]], methods: tuple[str, ...]) -> float:
    if len(methods) < 2:
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
