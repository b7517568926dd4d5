"""Evaluation of semantic masks against reference masks (Garcia Santa Cruz et al. 2022, Table 1).

Masks are ``(H, W)`` integer arrays of class labels: 0 background, 1 phagophore, 2 autolysosome
(any number of classes ``C >= 2`` is accepted through :class:`EvaluationConfig.class_names`).
All distances are in **pixels**.

The suite follows MATLAB's ``evaluateSemanticSegmentation`` / ``semanticSegmentationMetrics`` and
``bfscore``, which the paper used, and adds the paper's bounding-box detection surrogate:

* a ``C x C`` **confusion matrix** (rows = truth, columns = prediction) summed over fields, so a
  plate is evaluated by adding per-field matrices (:class:`SegmentationScores` is that
  accumulator: ``add`` a field, ``merge`` two accumulators, ``to_dict``/``from_dict``);
* **per-class one-vs-rest pixel metrics** from that matrix, with ``TP = M[c, c]``,
  ``FN = sum(M[c, :]) - TP``, ``FP = sum(M[:, c]) - TP``, ``TN = N - TP - FN - FP``
  (``N`` = all pixels of all fields):

  - ``accuracy    = (TP + TN) / N``  (one-vs-rest; **not** MATLAB's class accuracy, see below)
  - ``precision   = TP / (TP + FP)``
  - ``recall      = TP / (TP + FN)``  (sensitivity; this *is* MATLAB's ``ClassMetrics.Accuracy``)
  - ``specificity = TN / (TN + FP)``
  - ``iou         = TP / (TP + FP + FN)``  (Jaccard)

  A ratio whose denominator is 0 (e.g. precision of a class never predicted) is ``nan``.
* the **boundary F1 (BF) score** per class and field, as MATLAB ``bfscore`` (see
  :func:`bf_score`), averaged over fields;
* **aggregations** of each metric ``m`` over classes, in :attr:`EvaluationResult.aggregate`:

  - ``global``: pooled over all pixels. ``accuracy = trace(M) / N`` (MATLAB ``GlobalAccuracy``);
    the other pixel metrics are micro-averages of the one-vs-rest counts summed over classes —
    ``precision = recall = sum(TP) / N = trace(M) / N``,
    ``specificity = sum(TN) / (sum(TN) + sum(FP))``, ``iou = sum(TP) / (sum(TP + FP + FN))``;
    the BF metrics pool boundary pixels over classes and fields
    (``bf_precision = sum(matched predicted boundary px) / sum(predicted boundary px)``, likewise
    ``bf_recall``; ``bf`` is their harmonic mean).
  - ``mean``: pixel metrics — unweighted mean of the per-class values, skipping ``nan`` classes
    (so ``mean`` of ``recall`` is MATLAB ``MeanAccuracy`` and of ``iou`` MATLAB ``MeanIoU``).
    BF metrics — MATLAB ``MeanBFScore``: per field, the mean over classes (skipping ``nan``
    classes) — that is ``ImageMetrics.MeanBFScore`` — then the mean over fields (skipping ``nan``
    fields). This can differ from the class mean of per-class BF when classes are absent from
    some fields.
  - ``weighted``: ``sum_c w_c m_c / sum_c w_c`` with ``w_c`` = number of *truth* pixels of class
    ``c``, over classes whose ``m_c`` is defined (``weighted`` of ``iou`` is MATLAB
    ``WeightedIoU``; ``weighted`` of ``recall`` equals ``trace(M) / N``).

  :attr:`EvaluationResult.matlab` repeats the five MATLAB ``DataSetMetrics`` under their MATLAB
  names (``GlobalAccuracy``, ``MeanAccuracy``, ``MeanIoU``, ``WeightedIoU``, ``MeanBFScore``).
* the **bounding-box detection surrogate** per foreground class (:func:`match_boxes`): objects
  are 8-connected components, one box each, matched one-to-one at box IoU >= 0.1.

References
----------
.. [1] Garcia Santa Cruz, B., et al. "Generalising from conventional pipelines using deep
   learning in high-throughput screening workflows." Sci Rep 12, 11465 (2022).
   :doi:`10.1038/s41598-022-15623-7`
.. [2] Csurka, G., Larlus, D., Perronnin, F. "What is a good evaluation measure for semantic
   segmentation?" BMVC 2013, 32.1-32.11 (the BF score behind MATLAB ``bfscore``).
"""

from __future__ import annotations

from phagoflow.core.evaluation.accumulate import SegmentationScores, evaluate_masks
from phagoflow.core.evaluation.boundary import _count_matched as _count_matched  # for tests
from phagoflow.core.evaluation.boundary import bf_score
from phagoflow.core.evaluation.conditions import (
    CONDITION_COLUMNS,
    ConditionScores,
    condition_scores,
)
from phagoflow.core.evaluation.config import (
    AGGREGATIONS,
    BOUNDARY_METRICS,
    CLASS_NAMES,
    DEFAULT_BF_TOLERANCE_FRACTION,
    DEFAULT_EXTRA_BF_TOLERANCES_PX,
    PIXEL_METRICS,
    EvaluationConfig,
    bf_metric_name,
    default_bf_tolerance,
)
from phagoflow.core.evaluation.counts import CountErrors, count_errors
from phagoflow.core.evaluation.matching import BOX_LOW_IOU_MAX, BoxMatch, BoxStats, match_boxes
from phagoflow.core.evaluation.pixel import confusion_matrix
from phagoflow.core.evaluation.result import EvaluationResult
from phagoflow.core.evaluation.tables import format_condition_table, format_table

__all__ = [
    "AGGREGATIONS",
    "BOUNDARY_METRICS",
    "BOX_LOW_IOU_MAX",
    "CLASS_NAMES",
    "CONDITION_COLUMNS",
    "DEFAULT_BF_TOLERANCE_FRACTION",
    "DEFAULT_EXTRA_BF_TOLERANCES_PX",
    "PIXEL_METRICS",
    "BoxMatch",
    "BoxStats",
    "ConditionScores",
    "CountErrors",
    "EvaluationConfig",
    "EvaluationResult",
    "SegmentationScores",
    "bf_metric_name",
    "bf_score",
    "condition_scores",
    "confusion_matrix",
    "count_errors",
    "default_bf_tolerance",
    "evaluate_masks",
    "format_condition_table",
    "format_table",
    "match_boxes",
]
