"""Per-pixel accuracy: confusion matrix and the figures derived from it.

Conventions (docs/DESIGN "Metric conventions"): counts of true positives, false positives and
false negatives per class over all evaluated pixels, then precision, recall, F1 and IoU; pixels whose
reference is nodata or an ignored class, and pixels without a prediction, are not evaluated. A
prediction of a value outside the evaluated classes (an ignored class, an unknown value) on an
evaluated pixel is an error: it counts against the reference class (false negative) and against
overall accuracy, under an "other" column that is not a class of its own.

Matrices are accumulated block by block (:class:`ConfusionAccumulator`), so rasters of any size are
assessed in bounded memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .errors import ConfigError


def confusion_matrix(reference: np.ndarray, predicted: np.ndarray, classes: Sequence[int],
                     valid: np.ndarray | None = None) -> np.ndarray:
    """``(k + 1) x (k + 1)`` counts: rows reference, columns prediction; index ``k`` is "other".

    Pixels whose reference is not one of ``classes`` are skipped; so are pixels where ``valid``
    is False.
    """
    if reference.shape != predicted.shape:
        raise ConfigError(f"reference {reference.shape} and prediction {predicted.shape} differ in shape")
    k = len(classes)
    lookup_values = np.asarray(sorted(classes), dtype=np.int64)
    order = np.argsort(np.asarray(classes, dtype=np.int64))
    ref = reference.astype(np.int64, copy=False).ravel()
    pred = predicted.astype(np.int64, copy=False).ravel()

    def index_of(values: np.ndarray) -> np.ndarray:
        if k == 0:
            return np.full(values.shape, k, dtype=np.int64)
        pos = np.clip(np.searchsorted(lookup_values, values), 0, k - 1)
        found = lookup_values[pos] == values
        return np.where(found, order[pos], k)

    ri, pi = index_of(ref), index_of(pred)
    keep = ri < k
    if valid is not None:
        keep &= valid.ravel()
    counts = np.bincount(ri[keep] * (k + 1) + pi[keep], minlength=(k + 1) ** 2)
    return counts.reshape(k + 1, k + 1).astype(np.int64)


class ConfusionAccumulator:
    """Sums confusion matrices over blocks; the class list is fixed up front."""

    def __init__(self, classes: Sequence[int]) -> None:
        self.classes = [int(c) for c in classes]
        self.matrix = np.zeros((len(self.classes) + 1,) * 2, dtype=np.int64)

    def update(self, reference: np.ndarray, predicted: np.ndarray, valid: np.ndarray | None = None) -> None:
        self.matrix += confusion_matrix(reference, predicted, self.classes, valid)


@dataclasses.dataclass
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    iou: float
    support: int
    predicted: int

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_number(v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class AccuracyMetrics:
    """Figures of a confusion matrix (rows reference, columns prediction, last row/column "other")."""

    classes: list[int]
    matrix: np.ndarray
    overall_accuracy: float
    kappa: float
    miou: float
    per_class: dict[int, ClassMetrics]

    @property
    def evaluated_pixels(self) -> int:
        return int(self.matrix.sum())

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall_accuracy": _json_number(self.overall_accuracy),
            "kappa": _json_number(self.kappa),
            "miou": _json_number(self.miou),
            "per_class": {str(v): m.to_dict() for v, m in self.per_class.items()},
            "evaluated_pixels": self.evaluated_pixels,
            "classes": self.classes,
            "confusion_matrix": self.matrix.tolist(),
            "confusion_matrix_axes": "rows: reference, columns: prediction, last row/column: other values",
        }


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _json_number(value: float | int) -> float | int | None:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def metrics_from_confusion(matrix: np.ndarray, classes: Sequence[int]) -> AccuracyMetrics:
    """Precision, recall, F1, IoU per class; overall accuracy, Cohen's kappa and mean IoU.

    Undefined ratios (a class never present nor predicted) are NaN (``null`` in JSON); mean IoU
    averages the classes whose IoU is defined.
    """
    m = np.asarray(matrix, dtype=np.float64)
    k = len(classes)
    if m.shape != (k + 1, k + 1):
        raise ConfigError(f"confusion matrix of shape {m.shape} does not fit {k} classes (+ other)")
    n = m.sum()
    per_class: dict[int, ClassMetrics] = {}
    for i, value in enumerate(classes):
        tp = m[i, i]
        fp = m[:, i].sum() - tp
        fn = m[i, :].sum() - tp
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        per_class[int(value)] = ClassMetrics(precision, recall, f1, _ratio(tp, tp + fp + fn),
                                             int(m[i, :].sum()), int(m[:, i].sum()))
    oa = _ratio(float(np.trace(m)), n)
    expected = _ratio(float((m.sum(axis=1) * m.sum(axis=0)).sum()), n * n)
    kappa = _ratio(oa - expected, 1.0 - expected) if not math.isnan(oa) else math.nan
    if not math.isnan(kappa) and math.isclose(expected, 1.0):
        kappa = math.nan
    ious = [c.iou for c in per_class.values() if not math.isnan(c.iou)]
    miou = float(np.mean(ious)) if ious else math.nan
    return AccuracyMetrics([int(c) for c in classes], np.asarray(matrix, dtype=np.int64), oa, kappa, miou, per_class)


def evaluate_arrays(reference: np.ndarray, predicted: np.ndarray, ignore_classes: Iterable[int] = (),
                    reference_nodata: float | None = None, predicted_nodata: float | None = None,
                    classes: Sequence[int] | None = None) -> AccuracyMetrics:
    """Whole-array convenience: classes default to the values present in either array, minus the
    ignored ones and the nodata values."""
    ignore = {int(v) for v in ignore_classes}
    valid = np.ones(reference.shape, dtype=bool)
    if reference_nodata is not None:
        valid &= reference != reference_nodata
    if predicted_nodata is not None:
        valid &= predicted != predicted_nodata
    if classes is None:
        present = set(np.unique(reference[valid]).tolist()) | set(np.unique(predicted[valid]).tolist())
        classes = sorted(int(v) for v in present if int(v) not in ignore)
    classes = [c for c in classes if c not in ignore]
    return metrics_from_confusion(confusion_matrix(reference, predicted, classes, valid), classes)
