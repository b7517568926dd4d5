"""Promotion gate: a candidate model is promoted only if it is not worse than the serving one.

Held-out labelled set, in order of preference:

1. **curated** masks (experts corrected them in ``phagoflow review``), stored as
   ``curated/<plate>/<well>/<field>.mask.tiff``: the score is the mean IoU (paper Table 1,
   :func:`phagoflow.core.evaluation.evaluate_masks`) against them;
2. only when the plates have no curated mask at all, the **CIP** masks of the same fields
   (``results/<plate>/cip/<version>/...``): the score is the CIP-agreement mean IoU. CIP masks
   are weak labels with known errors, and the paper's point is that a good CDL model *departs*
   from them ("trusting the teacher too much"), so this fallback is a sanity guard with a
   tolerance (default 0.02), not a proof that the candidate is better.

**Never on training data.** Fields the candidate (or the serving version, so that neither is
scored on what it learnt) trained or validated on — its card's ``training.split.train`` and
``training.split.val``, ``PLATE/rRRcCCfFFpPP`` — are left out; fields a card lists as
``training.split.holdout`` stay in. When curated fields exist but none is left, the gate
refuses (it does not fall back to CIP).

**Which CIP version.** A plate may hold CIP masks of several CIP versions (parameters or
phagoflow changed). The reference is the version the CIP service now writes (its fingerprint
from ``PHAGOFLOW_CIP__*``, :func:`current_cip_version`) when the plate has it, else the only one
present, else an explicit ``cip_version``; anything else is refused with the versions found.

**Against what actually serves.** The serving version is the one Triton reports ready when
its HTTP address is given (``--triton-http``), else ``registry.json``'s; the report names it,
where it came from, and the CIP version used.

Raw images come from ``raw/<plate>/<well>/<field>/<role>.tiff`` (written by ingest).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import tifffile

from phagoflow.core.evaluation import EvaluationResult, evaluate_masks
from phagoflow.core.inference import load_predictor
from phagoflow.core.model_dir import ModelCard
from phagoflow.core.opera.catalogue import ROLE_ORDER
from phagoflow.registry.store import ModelRegistry
from phagoflow.services.objectstore import ObjectStore

__all__ = [
    "DEFAULT_TOLERANCE",
    "GateDecision",
    "HeldOutField",
    "HeldOutSet",
    "current_cip_version",
    "decide",
    "evaluate_model_dir",
    "gate_versions",
    "load_heldout",
    "trained_on",
]

Source = Literal["curated", "cip"]
#: Allowed drop of the score per reference kind: none against curated masks, a little against CIP.
DEFAULT_TOLERANCE: dict[str, float] = {"curated": 0.0, "cip": 0.02}
_METRIC = "MeanIoU"


@dataclass(frozen=True)
class HeldOutField:
    """One labelled field of the held-out set.

    Attributes
    ----------
    name : str
        ``<plate>/<well>/<field>``.
    image : (2, H, W) ndarray of float32
        Raw field ``[DsRed, pHluorin]`` in camera counts.
    reference : (H, W) ndarray of uint8
        Reference mask (0 background, 1 phagophore, 2 autolysosome).
    source : {'curated', 'cip'}
        Where the reference comes from.
    """

    name: str
    image: npt.NDArray[np.float32]
    reference: npt.NDArray[np.uint8]
    source: Source


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the gate.

    Attributes
    ----------
    promote : bool
        Whether the candidate may serve.
    source : {'curated', 'cip'}
        Reference kind used.
    metric : str
        Score compared (MATLAB ``MeanIoU``).
    candidate, serving : float or None
        Scores; ``serving`` is ``None`` when nothing serves yet.
    tolerance : float
        Allowed drop.
    n_fields : int
        Fields evaluated.
    details : dict
        Full evaluation summaries (``EvaluationResult.to_dict``) per model.
    candidate_version, serving_version : int or None
        Registry versions compared (``serving_version`` None when nothing serves).
    serving_from : str
        Where the serving version came from: ``"triton"`` (what Triton reports ready) or
        ``"registry"`` (``registry.json``).
    cip_version : str or None
        CIP version whose masks were the reference (``source == "cip"``).
    n_excluded : int
        Fields with a reference left out because a compared model trained or validated on them.
    """

    promote: bool
    source: Source
    metric: str
    candidate: float
    serving: float | None
    tolerance: float
    n_fields: int
    details: dict[str, Any] = field(default_factory=dict)
    candidate_version: int | None = None
    serving_version: int | None = None
    serving_from: str = "registry"
    cip_version: str | None = None
    n_excluded: int = 0

    @property
    def reason(self) -> str:
        """One line for logs and the registry history: verdict, both versions, the reference."""
        cand = f"candidate v{self.candidate_version} {self.candidate:.4f}"
        if self.serving_version is None:
            serving = "none serving"
        else:
            score = "n/a" if self.serving is None else f"{self.serving:.4f}"
            serving = f"serving v{self.serving_version} (per {self.serving_from}) {score}"
        ref = f"{self.source} masks" + (f" of CIP {self.cip_version}" if self.cip_version else "")
        verdict = "promote" if self.promote else "reject"
        return (
            f"{verdict}: {self.metric} vs {ref} on {self.n_fields} field(s) never trained or "
            f"validated on ({self.n_excluded} excluded): {cand}, {serving}, "
            f"tolerance {self.tolerance:g}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (without the full details)."""
        return {
            "promote": self.promote,
            "source": self.source,
            "metric": self.metric,
            "candidate": self.candidate,
            "serving": self.serving,
            "tolerance": self.tolerance,
            "n_fields": self.n_fields,
            "candidate_version": self.candidate_version,
            "serving_version": self.serving_version,
            "serving_from": self.serving_from,
            "cip_version": self.cip_version,
            "n_excluded": self.n_excluded,
        }


def decide(
    candidate: EvaluationResult,
    serving: EvaluationResult | None,
    *,
    source: Source,
    tolerance: float | None = None,
) -> GateDecision:
    """Promote when ``candidate`` scores at least ``serving - tolerance`` (mean IoU).

    Parameters
    ----------
    candidate, serving : EvaluationResult
        Both models scored on the same fields and references; ``serving`` ``None`` when no
        version serves (the candidate is then promoted if its score is a number).
    source : {'curated', 'cip'}
        Reference kind.
    tolerance : float, optional
        Allowed drop; default :data:`DEFAULT_TOLERANCE` of ``source``.
    """
    tol = DEFAULT_TOLERANCE[source] if tolerance is None else float(tolerance)
    if tol < 0:
        raise ValueError(f"tolerance must be >= 0, got {tol}")
    if serving is not None and serving.n_images != candidate.n_images:
        raise ValueError(
            f"models scored on different field counts: {candidate.n_images} vs {serving.n_images}"
        )
    cand = float(candidate.matlab[_METRIC])
    serv = None if serving is None else float(serving.matlab[_METRIC])
    ok = bool(np.isfinite(cand)) and (serv is None or not np.isfinite(serv) or cand >= serv - tol)
    details = {"candidate": candidate.to_dict()}
    if serving is not None:
        details["serving"] = serving.to_dict()
    return GateDecision(
        promote=ok,
        source=source,
        metric=_METRIC,
        candidate=cand,
        serving=serv,
        tolerance=tol,
        n_fields=candidate.n_images,
        details=details,
    )


def evaluate_model_dir(
    model_dir: Path, fields: Sequence[HeldOutField], *, batch_size: int = 8
) -> EvaluationResult:
    """Score a model folder on held-out fields (ONNX Runtime on CPU, the core's tiling)."""
    if not fields:
        raise ValueError("the held-out set is empty")
    predictor = load_predictor(model_dir, backend="onnxruntime", batch_size=batch_size)
    return evaluate_masks((f.reference, predictor.predict(f.image)) for f in fields)


def _tiff(data: bytes) -> npt.NDArray[Any]:
    return np.asarray(tifffile.imread(io.BytesIO(data)))


@dataclass(frozen=True)
class HeldOutSet:
    """The gate's labelled fields and how they were chosen.

    Attributes
    ----------
    fields : list of HeldOutField
        Fields to score on, all of one ``source``.
    source : {'curated', 'cip'} or None
        Reference kind; None when no plate has any reference mask.
    cip_version : str or None
        CIP version of the reference masks (``source == "cip"``).
    excluded : list of str
        ``PLATE/rRRcCCfFFpPP`` left out: a compared model trained or validated on them.
    """

    fields: list[HeldOutField]
    source: Source | None
    cip_version: str | None = None
    excluded: list[str] = field(default_factory=list)

    def empty_reason(self, plates: Sequence[str]) -> str:
        """Why :attr:`fields` is empty, for the refusal message."""
        if self.source is None:
            return f"no held-out field with a curated or CIP mask in plates {list(plates)}"
        return (
            f"every {self.source} field of plates {list(plates)} ({len(self.excluded)}) was used "
            "to train or validate a compared model; curate fields it never saw"
        )


def _card_name(plate: str, well_field: str) -> str:
    """``<plate>`` + ``<well>/<field>`` → ``PLATE/rRRcCCfFFpPP``, the names of a card's split."""
    return f"{plate}/{well_field.rsplit('/', 1)[-1]}"


def trained_on(card: ModelCard) -> set[str]:
    """Fields ``PLATE/rRRcCCfFFpPP`` a model trained or validated on (its card's split)."""
    split = card.training.get("split") or {}
    return {str(n) for part in ("train", "val") for n in split.get(part) or ()}


def current_cip_version() -> str:
    """The CIP version the CIP service writes now (parameters from ``PHAGOFLOW_CIP__*``)."""
    from phagoflow.core.segmenters import make_segmenter
    from phagoflow.services.cip import CipSettings

    return make_segmenter("cip", cip_params=CipSettings().cip).fingerprint[:16]


def _cip_masks(
    store: ObjectStore, plate: str, wanted: str | None, current: str
) -> tuple[str | None, dict[str, str]]:
    """The chosen CIP version of ``plate`` and its mask keys by ``<well>/<field>``."""
    by_version: dict[str, dict[str, str]] = {}
    for key in store.list_keys(f"results/{plate}/cip/"):
        parts = key.split("/")  # results/<plate>/cip/<version>/<well>/<field>.mask.tiff
        if len(parts) == 6 and key.endswith(".mask.tiff"):
            wf = f"{parts[4]}/{parts[5].removesuffix('.mask.tiff')}"
            by_version.setdefault(parts[3], {})[wf] = key
    if not by_version:
        return None, {}
    if wanted is not None:
        if wanted not in by_version:
            raise ValueError(
                f"plate {plate} has no CIP masks of version {wanted}: {sorted(by_version)}"
            )
        return wanted, by_version[wanted]
    if current in by_version:
        return current, by_version[current]
    if len(by_version) == 1:
        (only,) = by_version
        return only, by_version[only]
    raise ValueError(
        f"plate {plate} has CIP masks of versions {sorted(by_version)}, none of them the current "
        f"CIP ({current}); name the reference with --cip-version"
    )


def load_heldout(
    store: ObjectStore,
    plates: Iterable[str],
    *,
    exclude: Iterable[str] = (),
    cip_version: str | None = None,
    max_fields: int | None = None,
) -> HeldOutSet:
    """Held-out fields of ``plates``: curated references if any exist, else CIP ones.

    Parameters
    ----------
    store : ObjectStore
        The pipeline's bucket.
    plates : iterable of str
        Plate ids (the object keys' plate part).
    exclude : iterable of str
        ``PLATE/rRRcCCfFFpPP`` never to score on (:func:`trained_on` of the compared models).
    cip_version : str, optional
        CIP version of the reference masks; default: see the module notes.
    max_fields : int, optional
        Keep at most this many fields (sorted by name).

    Raises
    ------
    ValueError
        A plate has several CIP versions and none can be chosen (see the module notes).
    """
    plates = list(plates)
    skip = set(exclude)
    current = current_cip_version() if cip_version is None else cip_version
    curated: list[tuple[str, str, str]] = []  # (plate, <well>/<field>, reference key)
    cip: list[tuple[str, str, str]] = []
    versions: set[str] = set()
    for plate in plates:
        version, cip_masks = _cip_masks(store, plate, cip_version, current)
        if version is not None:
            versions.add(version)
        for k in store.list_keys(f"curated/{plate}/"):
            if k.endswith(".mask.tiff"):
                curated.append((plate, "/".join(k.split("/")[-2:]).removesuffix(".mask.tiff"), k))
        cip += [(plate, wf, key) for wf, key in sorted(cip_masks.items())]
    source: Source | None = "curated" if curated else "cip" if cip else None
    chosen = sorted(curated or cip)
    excluded = [
        f"{p}/{wf.split('/')[1]}" for p, wf, _ in chosen if f"{p}/{wf.split('/')[1]}" in skip
    ]
    fields: list[HeldOutField] = []
    for plate, wf, ref_key in chosen:
        if f"{plate}/{wf.split('/')[1]}" in skip:
            continue
        raw = [f"raw/{plate}/{wf}/{role.value}.tiff" for role in ROLE_ORDER]
        if not all(store.exists(k) for k in raw):
            continue
        image = np.stack([_tiff(store.get_bytes(k)) for k in raw]).astype(np.float32)
        ref = _tiff(store.get_bytes(ref_key)).astype(np.uint8)
        fields.append(HeldOutField(f"{plate}/{wf}", image, ref, source or "cip"))
        if max_fields is not None and len(fields) >= max_fields:
            break
    cip_used = ",".join(sorted(versions)) if source == "cip" else None
    return HeldOutSet(fields, source, cip_used, excluded)


def gate_versions(
    registry: ModelRegistry,
    candidate: int,
    held: HeldOutSet,
    *,
    serving: int | None,
    serving_from: str = "registry",
    tolerance: float | None = None,
) -> GateDecision:
    """Score stored version ``candidate`` and ``serving`` on ``held`` and decide.

    Raises
    ------
    ValueError
        ``held`` has no field.
    """
    fields = held.fields
    if not fields or held.source is None:
        raise ValueError("the held-out set is empty: no field with a curated or CIP mask")
    with tempfile.TemporaryDirectory(prefix="phagoflow-gate-") as tmp:
        cand = evaluate_model_dir(registry.fetch(candidate, Path(tmp) / "candidate"), fields)
        serv = None
        if serving is not None and serving != candidate:
            serv = evaluate_model_dir(registry.fetch(serving, Path(tmp) / "serving"), fields)
    decision = decide(cand, serv, source=held.source, tolerance=tolerance)
    return replace(
        decision,
        candidate_version=candidate,
        serving_version=serving,
        serving_from=serving_from,
        cip_version=held.cip_version,
        n_excluded=len(held.excluded),
    )
