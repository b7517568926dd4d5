"""``phagoflow evaluate``: score segmentation methods on a plate against true masks.

:func:`evaluate_plate` takes a plate export and a folder of true masks ``rRRcCCfFFpPP.tiff``
(uint8: 0 background, 1 phagophore, 2 autolysosome; a sub-folder named after the plate id is
searched first, so ``phagoflow simulate OUT`` gives ``OUT/truth``). Every field that has a
truth mask is scored, for every method, with the same fields for every method:

* methods ``cip`` (:class:`~phagoflow.core.segmenters.CipSegmenter`) and ``cdl``
  (:class:`~phagoflow.core.segmenters.UNetSegmenter` on a model folder, by default the packaged
  one) segment the field now;
* extra U-Net model folders (``unets``, ``--unet NAME=DIR``, e.g. ``mdl=models/mdl-1``) segment
  the field now too, each exactly like ``cdl`` but with its own model, under the caller's name;
* mask folders (:class:`MaskSource`, e.g. ``OUT/masks/cip`` of ``phagoflow run``) are scored
  as they are, as a method named by the caller (``NAME=DIR`` on the command line) or, by default,
  by the folder's last two path parts (``masks/cip``), so they never clash with ``cip``.

``held_out_by`` (``--held-out-by MODEL_DIR``) restricts the evaluation to the fields that model's
card lists in ``training.split.holdout`` (``phagoflow train --holdout F``): with the curated masks
as truth, every method is then scored on curated fields the model never trained or validated on
(the paper's Part B: CIP vs CDL vs MDL).

Pixel, boundary and box metrics are accumulated field by field in one
:class:`~phagoflow.core.evaluation.SegmentationScores` per method (no mask is kept). Object counts
come from :func:`phagoflow.core.counting.measure_objects` (8-connected components per class) on
each method's mask **and on the truth mask** — the same code on both sides, so the per-well count
error measures segmentation errors, not a difference in counting rules. Touching true objects of
one class merge into one component there, exactly as they would in a perfect prediction. When
the truth folder also has ``instances/rRRcCCfFFpPP.tiff`` (the simulator writes object ids),
counts of the true *instances* are reported as well (``count_errors_instances``): that is the
error against the real number of objects, merges included. Per-well totals are compared with
:func:`~phagoflow.core.evaluation.count_errors` (MAE and mean relative error per class).

Bad input:

* truth folder missing, or no truth mask matching any field of the plate: ``ValueError``;
* ``held_out_by`` whose card lists no held-out field, none on this plate, or none with a truth
  mask: ``ValueError`` naming the card;
* a truth or ``--masks`` mask of the wrong shape, dtype or values: ``ValueError`` naming the file
  — the whole evaluation stops, because scores over a silently reduced set of fields would
  mislead;
* a field without a mask in some mask folder, a field that cannot be read, or a segmenter that
  fails on a field: the field is skipped for **every** method (so all methods see the same
  fields), listed in :attr:`EvaluationReport.skipped` with the reason and logged; a mask folder
  matching no field at all is a ``ValueError``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from phagoflow.core.cip import CipParameters
from phagoflow.core.classes import OBJECT_CLASSES
from phagoflow.core.counting import FieldCounts, aggregate_wells, count_field, measure_objects
from phagoflow.core.evaluation import (
    CountErrors,
    EvaluationConfig,
    EvaluationResult,
    SegmentationScores,
    count_errors,
)
from phagoflow.core.model_dir import CARD_FILE, read_model_card, software_versions
from phagoflow.core.opera import PlateCatalogue, RoleOverrides, load_field, read_plate
from phagoflow.core.opera.catalogue import FieldKey, FieldRecord, PlateFormatError
from phagoflow.core.segmenters import METHODS, Segmenter, make_segmenter
from phagoflow.embedded.weak_labels import load_masks_dir, read_mask

__all__ = [
    "COUNT_CLASSES",
    "EvaluationReport",
    "MaskSource",
    "evaluate_plate",
    "format_count_errors",
    "parse_mask_source",
    "read_holdout",
]

logger = logging.getLogger(__name__)

#: Count columns, in the order of :class:`~phagoflow.core.evaluation.CountErrors` arrays.
COUNT_CLASSES: tuple[str, ...] = tuple(c.plural for c in OBJECT_CLASSES)
_TRUTH = "truth"
_TRUTH_INSTANCES = "truth-instances"
_REPORT_FORMAT = 1


@dataclass(frozen=True)
class MaskSource:
    """A folder of masks ``rRRcCCfFFpPP.tiff`` scored as method ``name``."""

    name: str
    path: Path


def parse_mask_source(value: str) -> MaskSource:
    """``NAME=DIR`` or ``DIR`` (named by its last two path parts, e.g. ``masks/cip``).

    ``NAME=DIR`` is recognised when the text before the first ``=`` contains no path separator.
    """
    name, sep, rest = value.partition("=")
    if sep and name and "/" not in name and "\\" not in name and rest:
        return MaskSource(name=name, path=Path(rest))
    path = Path(value)
    parts = path.resolve().parts
    return MaskSource(name="/".join(parts[-2:]) if len(parts) >= 2 else str(path), path=path)


@dataclass
class EvaluationReport:
    """Everything :func:`evaluate_plate` measured.

    Attributes
    ----------
    catalogue : PlateCatalogue
        The plate evaluated.
    truth_dir : Path
        Folder the truth masks were read from.
    results : dict of str to EvaluationResult
        Per method, in the order requested (segmenters first, then mask folders).
    scores : dict of str to SegmentationScores
        The accumulators behind ``results`` (mergeable across plates).
    provenance : dict of str to dict
        Per method: CIP parameters / model card summary / mask folder, and fingerprint.
    field_counts : list of FieldCounts
        Per field and method (``"truth"``, ``"truth-instances"`` and every method).
    count_errors : dict of str to CountErrors
        Per method, per-well counts against truth-mask counts.
    count_errors_instances : dict of str to CountErrors or None
        Per method, against true instance counts (``None`` without ``instances/``).
    fields : list of str
        Fields evaluated (``rRRcCCfFFpPP``).
    skipped : list of dict
        ``{"field", "reason"}`` per field left out.
    seconds : float
        Wall time.
    held_out_by : dict, optional
        With ``held_out_by``: the model folder, its card, name and version, the number of
        held-out fields it lists, those on this plate and those without a truth mask.
    """

    catalogue: PlateCatalogue
    truth_dir: Path
    config: EvaluationConfig
    results: dict[str, EvaluationResult]
    scores: dict[str, SegmentationScores]
    provenance: dict[str, dict[str, Any]]
    field_counts: list[FieldCounts]
    count_errors: dict[str, CountErrors]
    count_errors_instances: dict[str, CountErrors] | None
    fields: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    held_out_by: dict[str, Any] | None = None

    def well_counts(self) -> list[dict[str, Any]]:
        """Per well: fields, truth counts and every method's counts (totals over fields)."""
        by_well: dict[str, dict[str, Any]] = {}
        for w in aggregate_wells(self.field_counts):
            entry = by_well.setdefault(w.well, {"well": w.well, "fields": w.fields, "methods": {}})
            counts = {name: getattr(w, name) for name in COUNT_CLASSES}
            if w.method == _TRUTH:
                entry["truth"] = counts
            elif w.method == _TRUTH_INSTANCES:
                entry["truth_instances"] = counts
            else:
                entry["methods"][w.method] = counts
        return [by_well[k] for k in sorted(by_well)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable report (``nan`` -> ``None``)."""
        cat = self.catalogue
        methods: dict[str, Any] = {}
        for name, result in self.results.items():
            inst = self.count_errors_instances
            methods[name] = {
                "provenance": self.provenance[name],
                "metrics": result.to_dict(),
                "count_errors": self.count_errors[name].to_dict(COUNT_CLASSES),
                "count_errors_instances": (
                    inst[name].to_dict(COUNT_CLASSES) if inst is not None else None
                ),
                "scores": self.scores[name].to_dict(),
            }
        return {
            "format_version": _REPORT_FORMAT,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "export": {
                "path": str(cat.root),
                "index": str(cat.index_path),
                "plate_id": cat.plate_id,
                "measurement_id": cat.measurement_id,
                "format_version": cat.format_version,
                "index_sha256": cat.index_sha256,
                "pixel_size_um": cat.pixel_size_um,
                "size_yx": list(cat.size_yx),
            },
            "truth": {
                "path": str(self.truth_dir),
                "instances": self.count_errors_instances is not None,
                "counting": (
                    "8-connected components per class of the truth masks, counted with "
                    "phagoflow.core.counting.measure_objects like every method's masks"
                ),
            },
            "evaluation_config": self.config.model_dump(mode="json"),
            "fields_evaluated": len(self.fields),
            "fields": self.fields,
            "skipped": self.skipped,
            "held_out_by": self.held_out_by,
            "methods": methods,
            "wells": self.well_counts(),
            "software": software_versions(),
            "seconds": round(self.seconds, 3),
        }

    def write_json(self, path: Path) -> Path:
        """Write :meth:`to_dict` as indented JSON (parents created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path


def _truth_root(truth_dir: Path, plate_id: str) -> Path:
    if not truth_dir.is_dir():
        raise ValueError(f"truth folder {truth_dir} does not exist")
    return truth_dir / plate_id if (truth_dir / plate_id).is_dir() else truth_dir


def read_holdout(model_dir: Path) -> tuple[list[str], dict[str, Any]]:
    """The held-out fields listed in a model folder's card (``phagoflow train --holdout``).

    Parameters
    ----------
    model_dir : Path
        A model folder written by ``phagoflow train`` (only its ``card.json`` is read; the
        model files' checksums are not verified here).

    Returns
    -------
    names : list of str
        ``training.split.holdout``: ``PLATE/rRRcCCfFFpPP`` names.
    info : dict
        ``model_dir``, ``card``, ``name``, ``version`` and ``exports`` (plate id -> index
        sha256 of the exports it was trained on).

    Raises
    ------
    ValueError
        No readable card, or a card whose ``training.split.holdout`` is missing or empty
        (the message names the card).
    """
    card_path = Path(model_dir) / CARD_FILE
    card = read_model_card(Path(model_dir), verify=False)
    split = card.training.get("split")
    names = split.get("holdout") if isinstance(split, dict) else None
    if not names or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"{card_path} lists no held-out field (training.split.holdout); train the model "
            "with `phagoflow train ... --holdout F` to keep curated fields out of training"
        )
    data = card.training.get("data")
    exports = data.get("exports", []) if isinstance(data, dict) else []
    info = {
        "model_dir": str(Path(model_dir)),
        "card": str(card_path),
        "name": card.name,
        "version": card.version,
        "exports": {
            e["plate_id"]: e.get("index_sha256")
            for e in exports
            if isinstance(e, dict) and "plate_id" in e
        },
    }
    return list(names), info


def _restrict_to_holdout(
    records: list[FieldRecord], cat: PlateCatalogue, model_dir: Path, truth_root: Path
) -> tuple[list[FieldRecord], dict[str, Any]]:
    """Keep the records of the fields ``model_dir``'s card held out of training."""
    names, info = read_holdout(model_dir)
    card = info.pop("card")
    trained_sha = info.pop("exports").get(cat.plate_id)
    prefix = f"{cat.plate_id}/"
    on_plate = {n[len(prefix) :] for n in names if n.startswith(prefix)}
    plate_fields = {r.key.name for r in cat.fields}
    if not on_plate & plate_fields:
        plates = sorted({n.rpartition("/")[0] for n in names})
        raise ValueError(
            f"none of the {len(names)} held-out field(s) listed in {card} is on plate "
            f"{cat.plate_id} (they are on plate(s) {', '.join(plates)})"
        )
    kept = [r for r in records if r.key.name in on_plate]
    no_truth = sorted((on_plate & plate_fields) - {r.key.name for r in kept})
    if not kept:
        raise ValueError(
            f"none of the {len(on_plate)} field(s) of plate {cat.plate_id} held out in {card} "
            f"has a truth mask in {truth_root} (e.g. {no_truth[0]}.tiff)"
        )
    if no_truth:
        logger.warning(
            "%d held-out field(s) of %s have no truth mask in %s and are left out: %s",
            len(no_truth),
            card,
            truth_root,
            ", ".join(no_truth),
        )
    if trained_sha is not None and trained_sha != cat.index_sha256:
        logger.warning(
            "%s was trained on another export of plate %s (index sha256 %s…, this one %s…)",
            model_dir,
            cat.plate_id,
            str(trained_sha)[:12],
            cat.index_sha256[:12],
        )
    info.update(
        card=card,
        holdout_fields=len(names),
        on_plate=len(on_plate & plate_fields),
        without_truth=no_truth,
        same_export=trained_sha == cat.index_sha256 if trained_sha is not None else None,
    )
    return kept, info


def _mask_provenance(src: MaskSource, cat: PlateCatalogue, n: int) -> dict[str, Any]:
    """Folder, count, and — for ``OUT/masks/<method>`` of ``phagoflow run`` — its run.json."""
    prov: dict[str, Any] = {"method": "masks", "path": str(src.path), "masks": n}
    run_json = src.path.parent.parent / "run.json"
    if src.path.parent.name == "masks" and run_json.is_file():
        try:
            run = json.loads(run_json.read_text())
            prov["run_json"] = str(run_json)
            prov["run_method"] = run.get("methods", {}).get(src.path.name)
            sha = run.get("export", {}).get("index_sha256")
            prov["same_export"] = sha == cat.index_sha256
            if sha != cat.index_sha256:
                logger.warning(
                    "%s was made from another export (index sha256 %s…, this plate %s…)",
                    src.path,
                    str(sha)[:12],
                    cat.index_sha256[:12],
                )
        except (OSError, ValueError, AttributeError) as exc:
            logger.warning("cannot read %s: %s", run_json, exc)
    return prov


def _counts(
    mask: NDArray[Any],
    *,
    plate: str,
    key: FieldKey,
    method: str,
    pixel_size_um: float,
    labels: NDArray[Any] | None = None,
) -> FieldCounts:
    # Intensities are not needed: a broadcast zero image costs no memory.
    image = np.broadcast_to(np.zeros((1, 1, 1), np.float32), (2, *mask.shape))
    objects = measure_objects(image, mask, pixel_size_um, labels=labels)
    return count_field(objects, plate=plate, key=key, method=method)


def _well_table(counts: Sequence[FieldCounts], method: str) -> dict[str, list[int]]:
    return {
        w.well: [w.phagophores, w.autolysosomes]
        for w in aggregate_wells(c for c in counts if c.method == method)
    }


def evaluate_plate(
    export: Path,
    truth_dir: Path,
    *,
    methods: Sequence[str] = ("cip",),
    masks: Sequence[MaskSource] = (),
    unets: Sequence[MaskSource] = (),
    held_out_by: Path | None = None,
    model_dir: Path | None = None,
    cip_params: CipParameters | None = None,
    backend: str = "onnxruntime",
    batch_size: int = 8,
    threads: int | None = None,
    config: EvaluationConfig | None = None,
    progress: bool = True,
    channel_roles: RoleOverrides | None = None,
) -> EvaluationReport:
    """Score every method on every field of ``export`` that has a truth mask.

    Parameters
    ----------
    export : Path
        Plate export (anything :func:`phagoflow.core.opera.read_plate` accepts).
    truth_dir : Path
        Folder of true masks ``rRRcCCfFFpPP.tiff`` (or one sub-folder per plate id), optional
        ``instances/`` beside them.
    methods : sequence of {'cip', 'cdl'}
        Segmenters run now.
    masks : sequence of MaskSource
        Mask folders scored as they are.
    unets : sequence of MaskSource
        U-Net model folders (``path``) run now like ``cdl`` and reported under ``name``
        (e.g. ``MaskSource("mdl", Path("models/mdl-1"))``).
    held_out_by : Path, optional
        Model folder whose card's ``training.split.holdout`` (``PLATE/field`` names) restricts
        the evaluation to the fields it held out of training (matched on this plate's id).
    model_dir : Path, optional
        U-Net folder for ``cdl``; default: the packaged model.
    cip_params : CipParameters, optional
        CIP parameters for ``cip``.
    backend, batch_size, threads
        U-Net inference options (see :func:`phagoflow.core.inference.load_predictor`).
    config : EvaluationConfig, optional
        BF tolerance (pixels) and box IoU threshold; class names must stay the phagoflow ones.
    progress : bool
        Progress bar over fields.
    channel_roles : mapping, optional
        Channel-role override (``--channel-role``): channel name or id → ``"dsred"``,
        ``"phluorin"``, ``"both"`` or ``"none"`` (see :mod:`phagoflow.core.opera.roles`).

    Returns
    -------
    EvaluationReport

    Raises
    ------
    ValueError
        No method; unknown or duplicate method name; truth folder missing or matching no field;
        ``held_out_by`` listing no held-out field, none on this plate or none with a truth mask;
        a truth or mask file of the wrong shape/dtype/values (names the file); a mask folder
        missing or matching no field; no default model for ``cdl``; every field skipped.
    PlateFormatError
        The export cannot be read.
    ModelDirError
        The model folder is invalid.
    """
    t_start = time.perf_counter()
    cfg = config if config is not None else EvaluationConfig()
    names = _method_names(methods, unets, masks)
    truth = _PlateTruth.read(export, truth_dir, held_out_by, channel_roles)
    mask_maps = _mask_maps(masks, truth)
    segmenters = _segmenters(
        methods,
        unets,
        model_dir=model_dir,
        cip_params=cip_params,
        backend=backend,
        batch_size=batch_size,
        threads=threads,
    )
    provenance = _provenance(segmenters, unets, masks, truth.cat, mask_maps)
    tally = _Tally(truth, {n: SegmentationScores(config=cfg) for n in names})
    bar = tqdm(
        truth.records, desc=f"{truth.cat.plate_id} evaluate", unit="field", disable=not progress
    )
    for rec in bar:
        tally.add(rec, _predictions(truth, rec, segmenters, mask_maps))
    bar.close()
    if not tally.evaluated:
        reasons = "; ".join(f"{s['field']}: {s['reason']}" for s in tally.skipped[:3])
        raise ValueError(f"every field with a truth mask was skipped ({reasons})")
    if tally.skipped:
        logger.warning("%d field(s) skipped for every method (see 'skipped')", len(tally.skipped))

    errors, errors_inst = tally.count_errors()
    return EvaluationReport(
        catalogue=truth.cat,
        truth_dir=truth.root,
        config=cfg,
        results={n: tally.scores[n].result() for n in names},
        scores=tally.scores,
        provenance=provenance,
        field_counts=tally.counts,
        count_errors=errors,
        count_errors_instances=errors_inst,
        fields=tally.evaluated,
        skipped=tally.skipped,
        seconds=time.perf_counter() - t_start,
        held_out_by=truth.holdout,
    )


def _method_names(
    methods: Sequence[str], unets: Sequence[MaskSource], masks: Sequence[MaskSource]
) -> list[str]:
    """Every method's report name, in order; ``ValueError`` on none, unknown or duplicate."""
    names = [*methods, *(u.name for u in unets), *(m.name for m in masks)]
    if not names:
        raise ValueError("nothing to evaluate: give --methods, --unet and/or --masks")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; expected one of {', '.join(METHODS)}")
    dupes = sorted(
        {n for n in names if names.count(n) > 1} | ({_TRUTH, _TRUTH_INSTANCES} & set(names))
    )
    if dupes:
        raise ValueError(
            f"method name(s) {', '.join(dupes)} used twice or reserved; name mask folders and "
            "U-Nets with NAME=DIR"
        )
    return names


@dataclass
class _PlateTruth:
    """The plate, its fields with a truth mask (held-out ones only, if asked) and their masks."""

    cat: PlateCatalogue
    root: Path
    paths: dict[str, Path]
    records: list[FieldRecord]
    holdout: dict[str, Any] | None
    instance_paths: dict[str, Path]

    @classmethod
    def read(
        cls,
        export: Path,
        truth_dir: Path,
        held_out_by: Path | None,
        channel_roles: RoleOverrides | None,
    ) -> _PlateTruth:
        cat = read_plate(export, channel_roles=channel_roles)
        root = _truth_root(Path(truth_dir), cat.plate_id)
        truth_paths = load_masks_dir(root)
        records = [r for r in cat.fields if r.key.name in truth_paths]
        if not records:
            raise ValueError(
                f"no truth mask in {root} matches a field of plate {cat.plate_id} "
                f"({len(truth_paths)} mask(s) there; expected names like "
                f"{cat.fields[0].key.name if cat.fields else 'r02c02f01p01'}.tiff)"
            )
        holdout_info: dict[str, Any] | None = None
        if held_out_by is not None:
            records, holdout_info = _restrict_to_holdout(records, cat, Path(held_out_by), root)
        inst_dir = root / "instances"
        inst_paths = load_masks_dir(inst_dir) if inst_dir.is_dir() else {}
        return cls(cat, root, truth_paths, records, holdout_info, inst_paths)

    @property
    def has_instances(self) -> bool:
        """Every evaluated field has an instance mask."""
        return bool(self.instance_paths) and all(
            r.key.name in self.instance_paths for r in self.records
        )


def _mask_maps(masks: Sequence[MaskSource], truth: _PlateTruth) -> dict[str, dict[str, Path]]:
    """Field name → mask file of each mask folder; ``ValueError`` on a missing or unmatched one."""
    mask_maps: dict[str, dict[str, Path]] = {}
    for src in masks:
        if not src.path.is_dir():
            raise ValueError(f"mask folder {src.path} ({src.name}) does not exist")
        found = load_masks_dir(src.path)
        if not any(r.key.name in found for r in truth.records):
            raise ValueError(
                f"no mask in {src.path} ({src.name}) matches a field with a truth mask in "
                f"{truth.root}"
            )
        mask_maps[src.name] = found
    return mask_maps


def _segmenters(
    methods: Sequence[str],
    unets: Sequence[MaskSource],
    *,
    model_dir: Path | None,
    cip_params: CipParameters | None,
    backend: str,
    batch_size: int,
    threads: int | None,
) -> dict[str, Segmenter]:
    """The segmenters run now: ``methods``, then each U-Net folder under its name."""
    if "cdl" in methods and model_dir is None:
        from phagoflow.core.inference import default_model_dir

        if not (default_model_dir() / "card.json").is_file():
            raise ValueError("no default model; pass --model or run `make model`")

    def make(method: str, path: Path | None) -> Segmenter:
        return make_segmenter(
            method,
            cip_params=cip_params,
            model_dir=path,
            backend=backend,
            batch_size=batch_size,
            threads=threads,
        )

    segmenters = {m: make(m, model_dir) for m in methods}
    for u in unets:
        segmenters[u.name] = make("cdl", u.path)
    return segmenters


def _provenance(
    segmenters: dict[str, Segmenter],
    unets: Sequence[MaskSource],
    masks: Sequence[MaskSource],
    cat: PlateCatalogue,
    mask_maps: dict[str, dict[str, Path]],
) -> dict[str, dict[str, Any]]:
    """Where each method's masks come from: segmenter provenance and fingerprint, mask folders."""
    provenance: dict[str, dict[str, Any]] = {
        m: {**seg.provenance, "fingerprint": seg.fingerprint} for m, seg in segmenters.items()
    }
    for u in unets:
        provenance[u.name]["method"] = u.name
    for src in masks:
        provenance[src.name] = _mask_provenance(src, cat, len(mask_maps[src.name]))
    return provenance


def _predictions(
    truth: _PlateTruth,
    rec: FieldRecord,
    segmenters: dict[str, Segmenter],
    mask_maps: dict[str, dict[str, Path]],
) -> dict[str, NDArray[Any]] | str:
    """Every method's mask of one field, or why the field is skipped."""
    fname = rec.key.name
    missing = [n for n, found in mask_maps.items() if fname not in found]
    if missing:
        return f"no mask for {', '.join(missing)}"
    preds: dict[str, NDArray[Any]] = {}
    if segmenters:
        try:
            image = load_field(truth.cat, rec)
        except (PlateFormatError, OSError) as exc:
            logger.warning("skipping %s: %s", fname, exc)
            return f"{type(exc).__name__}: {exc}"
        for m, seg in segmenters.items():
            try:
                preds[m] = seg.segment(image, truth.cat.pixel_size_um)
            except Exception as exc:
                logger.warning("skipping %s: %s failed", fname, m, exc_info=True)
                return f"{m} failed: {type(exc).__name__}: {exc}"
    for n, found in mask_maps.items():
        preds[n] = read_mask(found[fname], truth.cat.size_yx)
    return preds


@dataclass
class _Tally:
    """Scores and object counts of the fields evaluated so far, and the fields skipped."""

    truth: _PlateTruth
    scores: dict[str, SegmentationScores]
    counts: list[FieldCounts] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    use_instances: bool = False

    def __post_init__(self) -> None:
        self.use_instances = self.truth.has_instances

    def add(self, rec: FieldRecord, preds: dict[str, NDArray[Any]] | str) -> None:
        """Score and count one field's predictions and its truth; or skip it, for the reason
        ``preds`` gives."""
        cat, fname = self.truth.cat, rec.key.name
        if isinstance(preds, str):
            self.skipped.append({"field": fname, "reason": preds})
            return
        shape, px = cat.size_yx, cat.pixel_size_um
        truth = read_mask(self.truth.paths[fname], shape)

        def count(mask: NDArray[Any], method: str, labels: NDArray[Any] | None = None) -> None:
            self.counts.append(
                _counts(
                    mask,
                    plate=cat.plate_id,
                    key=rec.key,
                    method=method,
                    pixel_size_um=px,
                    labels=labels,
                )
            )

        for n, scores in self.scores.items():
            scores.add(truth, preds[n])
            count(preds[n], n)
        count(truth, _TRUTH)
        if self.use_instances:
            try:
                count(
                    truth,
                    _TRUTH_INSTANCES,
                    _read_instances(self.truth.instance_paths[fname], shape),
                )
            except ValueError as exc:
                logger.warning("instance counts off: %s", exc)
                self.use_instances = False
                self.counts = [c for c in self.counts if c.method != _TRUTH_INSTANCES]
        self.evaluated.append(fname)

    def count_errors(self) -> tuple[dict[str, CountErrors], dict[str, CountErrors] | None]:
        """Per-well count errors of each method against the truth (and its instance masks)."""
        truth_table = _well_table(self.counts, _TRUTH)
        errors = {n: count_errors(truth_table, _well_table(self.counts, n)) for n in self.scores}
        if not self.use_instances:
            return errors, None
        inst_table = _well_table(self.counts, _TRUTH_INSTANCES)
        return errors, {
            n: count_errors(inst_table, _well_table(self.counts, n)) for n in self.scores
        }


def _read_instances(path: Path, shape: tuple[int, int]) -> NDArray[Any]:
    import tifffile

    try:
        inst = np.asarray(tifffile.imread(path))
    except Exception as exc:
        raise ValueError(f"{path}: not a readable TIFF ({exc})") from exc
    if inst.shape != shape or not np.issubdtype(inst.dtype, np.integer):
        raise ValueError(f"{path}: instance image {inst.shape} {inst.dtype}, expected {shape} int")
    return inst


def format_count_errors(report: EvaluationReport) -> str:
    """Text table of per-well count errors (MAE, mean relative error) per method and class."""
    lines = []
    for title, errs in (
        ("truth masks, same counting code", report.count_errors),
        ("true instances", report.count_errors_instances),
    ):
        if errs is None:
            continue
        n_wells = next(iter(errs.values())).n_wells
        lines.append(f"per-well count error vs {title} ({n_wells} wells)")
        w = max(8, *(len(n) + 2 for n in errs))
        header = f"{'method':<{w}}" + "".join(
            f"{'MAE ' + c:>19}{'MRE ' + c:>19}" for c in COUNT_CLASSES
        )
        lines += [header, "-" * len(header)]
        for name, e in errs.items():
            cells = "".join(
                f"{_fmt(float(e.mae[k])):>19}{_fmt(float(e.mre[k])):>19}"
                for k in range(len(COUNT_CLASSES))
            )
            lines.append(f"{name:<{w}}{cells}")
        lines.append("")
    return "\n".join(lines)


def _fmt(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.3f}"
