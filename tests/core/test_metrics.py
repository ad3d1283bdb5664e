"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.metrics import ConfusionAccumulator, confusion_matrix, evaluate_arrays, metrics_from_confusion


def test_hand_computed_two_class_example() -> None:
    # reference: 6 of class 1, 4 of class 2. prediction: 5 of the class-1 pixels right, 1 wrong; 3 of class 2 right.
    ref = np.array([1, 1, 1, 1, 1, 1, 2, 2, 2, 2])
    pred = np.array([1, 1, 1, 1, 1, 2, 2, 2, 2, 1])
    m = evaluate_arrays(ref, pred)
    assert m.classes == [1, 2]
    assert m.matrix[:2, :2].tolist() == [[5, 1], [1, 3]]
    assert m.overall_accuracy == pytest.approx(0.8)
    # kappa: pe = (6*6 + 4*4) / 100 = 0.52; (0.8 - 0.52) / 0.48 = 0.58333
    assert m.kappa == pytest.approx(0.28 / 0.48)
    c1, c2 = m.per_class[1], m.per_class[2]
    assert (c1.precision, c1.recall) == (pytest.approx(5 / 6), pytest.approx(5 / 6))
    assert c1.iou == pytest.approx(5 / 7) and c1.f1 == pytest.approx(5 / 6)
    assert (c2.precision, c2.recall, c2.iou) == (pytest.approx(0.75), pytest.approx(0.75), pytest.approx(0.6))
    assert m.miou == pytest.approx((5 / 7 + 0.6) / 2)
    assert c1.support == 6 and c2.support == 4


def test_ignored_classes_and_nodata_are_not_evaluated() -> None:
    ref = np.array([[0, 1, 1], [2, 2, 9]])  # 0 ignored, 9 nodata
    pred = np.array([[2, 1, 2], [2, 255, 1]])  # 255 nodata
    m = evaluate_arrays(ref, pred, ignore_classes=[0], reference_nodata=9, predicted_nodata=255)
    assert m.classes == [1, 2]
    assert m.evaluated_pixels == 3  # (1,1) (1,2) (2,2)
    assert m.matrix[:2, :2].tolist() == [[1, 1], [0, 1]]
    assert m.overall_accuracy == pytest.approx(2 / 3)


def test_prediction_of_an_ignored_class_is_an_error_under_other() -> None:
    ref = np.array([1, 1, 2, 2])
    pred = np.array([1, 0, 2, 2])
    m = evaluate_arrays(ref, pred, ignore_classes=[0])
    assert m.classes == [1, 2] and m.matrix.tolist() == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert m.per_class[1].recall == pytest.approx(0.5) and m.per_class[1].precision == pytest.approx(1.0)
    assert m.overall_accuracy == pytest.approx(0.75)


def test_absent_class_is_undefined_and_left_out_of_miou() -> None:
    m = metrics_from_confusion(np.array([[3, 0, 0], [0, 0, 0], [0, 0, 0]]), [1, 2])
    assert math.isnan(m.per_class[2].iou) and m.miou == pytest.approx(1.0)
    assert m.to_dict()["per_class"]["2"]["iou"] is None
    assert math.isnan(m.kappa)  # one class only: chance agreement is 1


def test_accumulator_equals_whole_array_and_unsorted_classes() -> None:
    rng = np.random.default_rng(0)
    ref, pred = rng.integers(1, 5, (40, 30)), rng.integers(1, 5, (40, 30))
    acc = ConfusionAccumulator([4, 2, 3, 1])
    for rows in np.array_split(np.arange(40), 7):
        acc.update(ref[rows], pred[rows])
    whole = confusion_matrix(ref, pred, [4, 2, 3, 1])
    assert (acc.matrix == whole).all()
    assert whole[0, 0] == np.sum((ref == 4) & (pred == 4)) and whole[1, 3] == np.sum((ref == 2) & (pred == 1))
    sk = metrics_from_confusion(whole, [4, 2, 3, 1])
    assert sk.overall_accuracy == pytest.approx(np.mean(ref == pred))
