import numpy as np
import pytest

from worker.distill import metrics


def test_report_matches_a_hand_computed_confusion_matrix():
    labels = ["a", "b"]
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    gold = ["a", "b", "b", "b"]
    rep = metrics.classification_report(probs, gold, labels, multi_label=False)
    assert rep["confusion"]["matrix"] == [[1, 0], [2, 1]]
    assert rep["accuracy"] == pytest.approx(0.5)
    # a: P=1/3 R=1 F=0.5; b: P=1 R=1/3 F=0.5
    assert rep["macro_f1"] == pytest.approx(0.5)
    assert rep["per_class"]["b"]["support"] == 3


def test_roc_auc_of_a_perfect_and_a_reversed_ranking():
    pos = np.array([True, True, False, False])
    assert metrics.roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), pos) == pytest.approx(1.0)
    assert metrics.roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), pos) == pytest.approx(0.0)
    assert metrics.roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), pos) == pytest.approx(0.5)


def test_ece_is_zero_when_confidence_equals_accuracy():
    probs = np.array([[0.75, 0.25]] * 4)
    correct = np.array([1, 1, 1, 0], dtype=float)
    assert metrics.expected_calibration_error(probs, correct) == pytest.approx(0.0)
    assert metrics.expected_calibration_error(probs, np.ones(4)) == pytest.approx(0.25)


def test_agreement_counts_matching_decisions():
    a = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    b = np.array([[0.6, 0.4], [0.7, 0.3], [0.9, 0.1]])
    assert metrics.agreement(a, b, multi_label=False) == pytest.approx(2 / 3)


def test_multi_label_report():
    probs = np.array([[0.9, 0.8], [0.1, 0.7], [0.2, 0.1]])
    rep = metrics.classification_report(probs, [["x", "y"], ["y"], ["x"]], ["x", "y"], True)
    assert rep["accuracy"] == pytest.approx(2 / 3)
    assert rep["per_class"]["y"]["f1"] == pytest.approx(1.0)
    assert rep["per_class"]["x"]["recall"] == pytest.approx(0.5)
    # pooled over both labels: tp 3 (x1, y1, y2), fp 0, fn 1 (x3) -> P 1, R 3/4
    assert rep["micro_f1"] == pytest.approx(2 * 0.75 / 1.75)
