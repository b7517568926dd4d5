"""Per-condition scores of the stress suite: object F1, mean IoU, count errors, CPU time."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi

from phagoflow.core.evaluation._common import _EIGHT_CONNECTED, _json_float
from phagoflow.core.evaluation.accumulate import SegmentationScores
from phagoflow.core.evaluation.config import CLASS_NAMES, EvaluationConfig, bf_metric_name
from phagoflow.core.evaluation.counts import CountErrors, count_errors

#: Columns of :func:`format_condition_table`: attribute of :class:`ConditionScores` -> header.
CONDITION_COLUMNS: Final[dict[str, str]] = {
    "f1_merged": "object F1 (classes merged)",
    "f1_phagophore": "object F1 phagophore",
    "f1_autolysosome": "object F1 autolysosome",
    "miou": "mean IoU (3 classes)",
    "iou_merged": "IoU (classes merged)",
    "bf": "BF (0.75 % diagonal)",
    "bf_1px": "BF 1 px",
    "bf_2px": "BF 2 px",
    "count_mre_phagophore": "per-well count error phagophore",
    "count_mre_autolysosome": "per-well count error autolysosome",
    "cpu_s_per_field": "CPU s / field",
}


@dataclass(frozen=True)
class ConditionScores:
    """One method's scores on one stress condition (one cell of the per-condition table).

    Attributes
    ----------
    n_fields, n_true_objects : int
        Fields scored and true objects (8-connected components, classes merged).
    f1_merged : float
        Box-surrogate object F1 with both classes merged into one foreground.
    f1_phagophore, f1_autolysosome : float
        Per-class object F1 (a misclassified object counts as a miss and a false positive).
    miou : float
        3-class mean IoU (the paper's "Mean"); meaningful only for a method that classifies.
    iou_merged : float
        Foreground IoU with the classes merged.
    bf, bf_1px, bf_2px : float
        Mean BF score at the paper's tolerance and at 1 and 2 px (3 classes, MATLAB mean).
    count_mre_phagophore, count_mre_autolysosome : float
        Mean over wells of ``|pred - true| / true`` of the per-well counts (``nan`` without
        counts).
    cpu_s_per_field : float
        CPU seconds per field as measured by the caller (``nan`` when not given).
    """

    n_fields: int
    n_true_objects: int
    f1_merged: float
    f1_phagophore: float
    f1_autolysosome: float
    miou: float
    iou_merged: float
    bf: float
    bf_1px: float
    bf_2px: float
    count_mre_phagophore: float = math.nan
    count_mre_autolysosome: float = math.nan
    cpu_s_per_field: float = math.nan

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-serialisable dict (``nan`` -> ``None``)."""
        out: dict[str, float | int | None] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = value if isinstance(value, int) else _json_float(float(value))
        return out


def _class_counts(mask: NDArray[Any]) -> tuple[int, int]:
    """Phagophores and autolysosomes of a mask: 8-connected components per class."""
    return (
        int(ndi.label(mask == 1, structure=_EIGHT_CONNECTED)[1]),
        int(ndi.label(mask == 2, structure=_EIGHT_CONNECTED)[1]),
    )


def _well_count_errors(
    wells: Sequence[str],
    true_counts: Sequence[tuple[int, int]],
    pred_counts: Sequence[tuple[int, int]],
) -> CountErrors:
    """:func:`count_errors` of per-field counts summed per well."""
    t_w: dict[str, list[float]] = {}
    p_w: dict[str, list[float]] = {}
    for w, tc, pc in zip(wells, true_counts, pred_counts, strict=True):
        t_w[w] = [a + b for a, b in zip(t_w.get(w, [0.0, 0.0]), tc, strict=True)]
        p_w[w] = [a + b for a, b in zip(p_w.get(w, [0.0, 0.0]), pc, strict=True)]
    return count_errors(t_w, p_w)


def condition_scores(
    pairs: Iterable[tuple[ArrayLike, ArrayLike]],
    *,
    wells: Sequence[str] | None = None,
    true_counts: Sequence[tuple[int, int]] | None = None,
    cpu_seconds: float | None = None,
) -> ConditionScores:
    """Score one method on one condition's fields (3-class masks against truth).

    Parameters
    ----------
    pairs : iterable of ((H, W) ndarray, (H, W) ndarray)
        ``(truth, prediction)`` label masks (0, 1, 2) per field.
    wells : sequence of str, optional
        Well of each field; with ``true_counts`` the per-well count errors are computed.
    true_counts : sequence of (int, int), optional
        True (phagophores, autolysosomes) of each field (instance counts). Predicted counts are
        the 8-connected components per class of each predicted mask.
    cpu_seconds : float, optional
        Total CPU seconds the method spent on these fields.

    Returns
    -------
    ConditionScores

    Raises
    ------
    ValueError
        If ``wells`` and ``true_counts`` are not both given or both omitted, or their lengths
        differ from the number of fields.
    """
    if (wells is None) != (true_counts is None):
        raise ValueError("give both wells and true_counts, or neither")
    three = SegmentationScores()
    merged = SegmentationScores(config=EvaluationConfig(class_names=("background", "object")))
    pred_counts: list[tuple[int, int]] = []
    for truth, pred in pairs:
        t, p = np.asarray(truth), np.asarray(pred)
        three.add(t, p)
        merged.add(t > 0, p > 0)
        pred_counts.append(_class_counts(p))
    r3, rm = three.result(), merged.result()
    n = r3.n_images
    mre = np.full(2, np.nan)
    if wells is not None and true_counts is not None:
        if len(wells) != n or len(true_counts) != n:
            raise ValueError(
                f"{n} fields but {len(wells)} wells and {len(true_counts)} true counts"
            )
        mre = _well_count_errors(wells, true_counts, pred_counts).mre
    box = rm.boxes["object"]
    return ConditionScores(
        n_fields=n,
        n_true_objects=box.n_true,
        f1_merged=box.f1,
        f1_phagophore=r3.boxes[CLASS_NAMES[1]].f1,
        f1_autolysosome=r3.boxes[CLASS_NAMES[2]].f1,
        miou=r3.aggregate["iou"]["mean"],
        iou_merged=float(rm.per_class["iou"][1]),
        bf=r3.aggregate["bf"]["mean"],
        bf_1px=r3.aggregate[bf_metric_name(1.0)]["mean"],
        bf_2px=r3.aggregate[bf_metric_name(2.0)]["mean"],
        count_mre_phagophore=float(mre[0]),
        count_mre_autolysosome=float(mre[1]),
        cpu_s_per_field=math.nan if cpu_seconds is None or n == 0 else cpu_seconds / n,
    )
