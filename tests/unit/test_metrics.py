"""Unit tests of svutils.metrics against hand-computed tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from svutils.metrics import (
    METRICS,
    collapse_stats,
    confusion_matrix,
    majority_rate,
    per_example_outputs,
    score,
    score_confusion,
)

# Binary table: TP = 2 (rows 0, 3), TN = 1 (row 1), FP = 1 (row 2), FN = 1 (row 4).
BINARY_PRED = np.array([1, 0, 1, 1, 0])
BINARY_LABELS = np.array([1, 0, 0, 1, 1])


def test_per_example_outputs_hand_logits():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 3.0, 2.0]])
    labels = np.array([0, 2, 2])
    outputs = per_example_outputs(logits, labels)
    expected_loss = [
        -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.0) + 1.0)),
        math.log(3.0),
        -math.log(math.exp(2.0) / (math.exp(1.0) + math.exp(3.0) + math.exp(2.0))),
    ]
    assert outputs["pred"].tolist() == [0, 0, 1]
    assert outputs["pred"].dtype == np.int64
    assert outputs["correct"].tolist() == [True, False, False]
    assert outputs["correct"].dtype == np.bool_
    assert outputs["loss"].dtype == np.float64
    np.testing.assert_allclose(outputs["loss"], expected_loss, rtol=1e-12)


def test_per_example_outputs_large_logits_stable():
    outputs = per_example_outputs(np.array([[1000.0, 0.0], [0.0, 1000.0]], dtype=np.float32), np.array([1, 1]))
    assert outputs["loss"][0] == pytest.approx(1000.0, rel=1e-12)
    assert outputs["loss"][1] == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(outputs["loss"]).all()


def test_per_example_outputs_accepts_tensors():
    outputs = per_example_outputs(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
    assert outputs["pred"].tolist() == [1, 0]
    assert outputs["correct"].tolist() == [True, False]


def test_per_example_outputs_rejects_nan():
    with pytest.raises(ValueError, match="NaN or infinite"):
        per_example_outputs(np.array([[0.0, np.nan]]), np.array([0]))


def test_per_example_outputs_rejects_bad_labels():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match="class id 3"):
        per_example_outputs(logits, np.array([0, 3]))
    with pytest.raises(TypeError, match="integer class ids"):
        per_example_outputs(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="labels has 3"):
        per_example_outputs(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="2-D"):
        per_example_outputs(np.zeros(3), np.array([0, 1, 2]))


def test_confusion_matrix_rows_are_labels():
    confusion = confusion_matrix(BINARY_PRED, BINARY_LABELS)
    assert confusion.tolist() == [[1, 1], [1, 2]]


def test_score_accuracy_hand_table():
    assert score("accuracy", BINARY_PRED, BINARY_LABELS) == pytest.approx(3 / 5)


def test_score_f1_hand_table():
    # 2·TP / (2·TP + FP + FN) = 4 / 6.
    assert score("f1", BINARY_PRED, BINARY_LABELS) == pytest.approx(4 / 6)


def test_score_mcc_binary_hand_table():
    # (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 − 1) / √(3·3·2·2).
    assert score("mcc", BINARY_PRED, BINARY_LABELS) == pytest.approx(1 / 6)


def test_score_mcc_three_classes_hand_table():
    labels = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    # Correct c = 4, total s = 6, true counts t = (2, 2, 2), predicted counts p = (2, 3, 1):
    # (c·s − t·p) / √((s² − p·p)(s² − t·t)) = 12 / √(22 · 24).
    assert score("mcc", pred, labels) == pytest.approx(12 / math.sqrt(22 * 24))


def test_score_perfect_and_inverted():
    labels = np.array([0, 1, 1, 0])
    assert score("mcc", labels, labels) == pytest.approx(1.0)
    assert score("mcc", 1 - labels, labels) == pytest.approx(-1.0)
    assert score("f1", labels, labels) == pytest.approx(1.0)
    assert score("f1", 1 - labels, labels) == pytest.approx(0.0)


def test_score_undefined_cases_are_zero():
    zeros = np.zeros(4, dtype=np.int64)
    ones = np.ones(4, dtype=np.int64)
    mixed = np.array([0, 1, 0, 1])
    assert score("f1", zeros, zeros) == 0.0
    assert score("f1", zeros, mixed) == 0.0
    assert score("mcc", ones, mixed) == 0.0
    assert score("mcc", mixed, ones) == 0.0
    assert score("mcc", zeros, zeros) == 0.0


def test_score_rejects_unknown_metric():
    with pytest.raises(ValueError, match="accuracy, f1, mcc"):
        score("auc", BINARY_PRED, BINARY_LABELS)


def test_score_f1_rejects_three_classes():
    with pytest.raises(ValueError, match="multi-class"):
        score("f1", np.array([0, 2]), np.array([0, 1]))


def test_score_rejects_empty_and_mismatch():
    with pytest.raises(ValueError, match="zero examples"):
        score("accuracy", np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="same order"):
        score("accuracy", np.array([0, 1]), np.array([0]))


def test_score_confusion_matches_score_on_stack():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(5, 40))
    pred = rng.integers(0, 2, size=(5, 40))
    stack = np.stack([confusion_matrix(p, y, 2) for p, y in zip(pred, labels)])
    for metric in METRICS:
        expected = [score(metric, p, y) for p, y in zip(pred, labels)]
        np.testing.assert_allclose(score_confusion(metric, stack), expected, rtol=1e-12)


def test_collapse_stats_single_class():
    stats = collapse_stats(np.ones(10, dtype=np.int64), 2)
    assert stats["collapsed"] is True
    assert stats["majority_class"] == 1
    assert stats["majority_share"] == 1.0
    assert stats["pred_entropy"] == 0.0
    assert stats["pred_entropy_bits"] == 0.0
    assert stats["class_shares"] == [0.0, 1.0]


def test_collapse_stats_uniform_three_classes():
    stats = collapse_stats(np.array([0, 1, 2, 2, 1, 0]), 3)
    assert stats["collapsed"] is False
    assert stats["majority_class"] == 0
    assert stats["majority_share"] == pytest.approx(1 / 3)
    assert stats["pred_entropy"] == pytest.approx(1.0)
    assert stats["pred_entropy_bits"] == pytest.approx(math.log2(3))


def test_collapse_stats_skewed_hand_entropy():
    stats = collapse_stats(np.array([0, 0, 0, 1]), 2, threshold=0.75)
    expected_bits = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert stats["majority_share"] == 0.75
    assert stats["pred_entropy_bits"] == pytest.approx(expected_bits)
    assert stats["pred_entropy"] == pytest.approx(expected_bits)
    assert stats["collapsed"] is True


def test_collapse_stats_rejects_bad_input():
    with pytest.raises(ValueError, match="threshold"):
        collapse_stats(np.array([0, 1]), 2, threshold=0.0)
    with pytest.raises(ValueError, match="num_labels is 2"):
        collapse_stats(np.array([0, 2]), 2)
    with pytest.raises(ValueError, match="at least 2"):
        collapse_stats(np.array([0, 0]), 1)
    with pytest.raises(ValueError, match="zero predictions"):
        collapse_stats(np.array([], dtype=np.int64), 2)


def test_majority_rate_hand_labels():
    assert majority_rate(np.array([0, 1, 1, 1]), 2) == 0.75
    assert majority_rate(np.array([2, 2, 0]), 3) == pytest.approx(2 / 3)


def test_majority_rate_rejects_out_of_range():
    with pytest.raises(ValueError, match="num_labels is 2"):
        majority_rate(np.array([0, 2]), 2)
