"""Promotion gate: a candidate model is promoted only if it is not worse than the serving one.

Held-out labelled set, in order of preference:

1. **curated** masks (experts corrected them in ``phagoflow review``), stored as
   ``curated/<plate>/<well>/<field>.mask.tiff``: the score is the mean IoU (paper Table 1,
   :func:`phagoflow.core.evaluation.evaluate_masks`) against them;
2. otherwise the **CIP** masks of the same fields (``results/<plate>/cip/<version>/...``): the
   score is the CIP-agreement mean IoU. CIP masks are weak labels with known errors, and the
   paper's point is that a good CDL model *departs* from them ("trusting the teacher too
   much"), so this fallback is a sanity guard with a tolerance (default 0.02), not a proof that
   the candidate is better.

Raw images come from ``raw/<plate>/<well>/<field>/<role>.tiff`` (written by ingest).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import tifffile

from phagoflow.core.evaluation import EvaluationResult, evaluate_masks
from phagoflow.core.inference import load_predictor
from phagoflow.core.opera.catalogue import ROLE_ORDER
from phagoflow.registry.store import ModelRegistry
from phagoflow.services.objectstore import ObjectStore

__all__ = [
    "DEFAULT_TOLERANCE",
    "GateDecision",
    "HeldOutField",
    "decide",
    "evaluate_model_dir",
    "gate_versions",
    "load_heldout",
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
    """

    promote: bool
    source: Source
    metric: str
    candidate: float
    serving: float | None
    tolerance: float
    n_fields: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """One line for logs and the registry history."""
        serving = "none serving" if self.serving is None else f"serving {self.serving:.4f}"
        verdict = "promote" if self.promote else "reject"
        return (
            f"{verdict}: {self.metric} vs {self.source} masks on {self.n_fields} field(s): "
            f"candidate {self.candidate:.4f}, {serving}, tolerance {self.tolerance:g}"
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


def load_heldout(
    store: ObjectStore, plates: Iterable[str], *, max_fields: int | None = None
) -> list[HeldOutField]:
    """Held-out fields of ``plates``: curated references if any exist, else CIP ones.

    Parameters
    ----------
    store : ObjectStore
        The pipeline's bucket.
    plates : iterable of str
        Plate ids (the object keys' plate part).
    max_fields : int, optional
        Keep at most this many fields (sorted by name).

    Returns
    -------
    list of HeldOutField
        All with the same ``source``; empty when no field has a reference.
    """
    curated: list[HeldOutField] = []
    cip: list[HeldOutField] = []
    for plate in plates:
        cip_masks: dict[str, str] = {}
        for key in store.list_keys(f"results/{plate}/cip/"):
            if key.endswith(".mask.tiff"):
                # results/<plate>/cip/<version>/<well>/<field>.mask.tiff; newest listing wins
                well, fname = key.split("/")[-2:]
                cip_masks[f"{well}/{fname.removesuffix('.mask.tiff')}"] = key
        curated_masks = {
            "/".join(k.split("/")[-2:]).removesuffix(".mask.tiff"): k
            for k in store.list_keys(f"curated/{plate}/")
            if k.endswith(".mask.tiff")
        }
        for wf in sorted(set(cip_masks) | set(curated_masks)):
            raw = [f"raw/{plate}/{wf}/{role.value}.tiff" for role in ROLE_ORDER]
            if not all(store.exists(k) for k in raw):
                continue
            image = np.stack([_tiff(store.get_bytes(k)) for k in raw]).astype(np.float32)
            if wf in curated_masks:
                ref = _tiff(store.get_bytes(curated_masks[wf])).astype(np.uint8)
                curated.append(HeldOutField(f"{plate}/{wf}", image, ref, "curated"))
            else:
                ref = _tiff(store.get_bytes(cip_masks[wf])).astype(np.uint8)
                cip.append(HeldOutField(f"{plate}/{wf}", image, ref, "cip"))
    chosen = curated or cip
    return chosen[:max_fields] if max_fields is not None else chosen


def gate_versions(
    registry: ModelRegistry,
    candidate: int,
    fields: Sequence[HeldOutField],
    *,
    tolerance: float | None = None,
) -> GateDecision:
    """Score stored version ``candidate`` and the serving version on ``fields`` and decide."""
    if not fields:
        raise ValueError("the held-out set is empty: no field with a curated or CIP mask")
    sources = {f.source for f in fields}
    if len(sources) != 1:
        raise ValueError(f"held-out fields mix reference kinds {sorted(sources)}")
    serving = registry.serving()
    with tempfile.TemporaryDirectory(prefix="phagoflow-gate-") as tmp:
        cand = evaluate_model_dir(registry.fetch(candidate, Path(tmp) / "candidate"), fields)
        serv = None
        if serving is not None and serving != candidate:
            serv = evaluate_model_dir(registry.fetch(serving, Path(tmp) / "serving"), fields)
    return decide(cand, serv, source=sources.pop(), tolerance=tolerance)
