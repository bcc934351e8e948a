"""Ordinal losses, median and argmax decoding, and the scores of a confusion matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error

from review_nlp.models.ordinal import (
    argmax_class,
    confusion_matrix,
    decode,
    expected_absolute_error,
    expected_class,
    median_class,
    ordinal_loss,
    scores_from_confusion,
    squared_emd,
)

# One review whose true rating is 2 stars (class 1), predicted p = [0.1, 0.2, 0.4, 0.2, 0.1].
PROBABILITIES = torch.tensor([[0.1, 0.2, 0.4, 0.2, 0.1]], dtype=torch.float64)
TARGET = torch.tensor([1])
# Predicted CDF [0.1, 0.3, 0.7, 0.9, 1.0] against the target CDF [0, 1, 1, 1, 1]:
# 0.1^2 + 0.7^2 + 0.3^2 + 0.1^2 + 0^2 = 0.60.
SQUARED_EMD = 0.60
# 0.1 * |0 - 1| + 0.2 * 0 + 0.4 * 1 + 0.2 * 2 + 0.1 * 3 = 1.2.
ABSOLUTE_ERROR = 1.2
CROSS_ENTROPY = -math.log(0.2)


def test_squared_emd_hand_computed():
    assert squared_emd(PROBABILITIES, TARGET).item() == pytest.approx(SQUARED_EMD)


def test_expected_absolute_error_hand_computed():
    assert expected_absolute_error(PROBABILITIES, TARGET).item() == pytest.approx(ABSOLUTE_ERROR)


@pytest.mark.parametrize("kind, term", [("squared_emd", SQUARED_EMD),
                                        ("absolute_error", ABSOLUTE_ERROR)])
def test_ordinal_loss_adds_weighted_term(kind, term):
    logits = PROBABILITIES.log().float()
    loss = ordinal_loss(logits, TARGET, kind, weight=0.5)
    assert loss.item() == pytest.approx(CROSS_ENTROPY + 0.5 * term, rel=1e-5)


def test_ordinal_loss_weight_zero_is_cross_entropy():
    logits = PROBABILITIES.log().float()
    loss = ordinal_loss(logits, TARGET, "squared_emd", weight=0.0)
    assert loss.item() == pytest.approx(CROSS_ENTROPY, rel=1e-5)


def test_squared_emd_prefers_near_misses():
    # Both predictions put 0.9 on a wrong class, and the one next to the truth costs less.
    near = torch.tensor([[0.05, 0.9, 0.05 / 3, 0.05 / 3, 0.05 / 3]], dtype=torch.float64)
    far = torch.tensor([[0.05, 0.05 / 3, 0.05 / 3, 0.05 / 3, 0.9]], dtype=torch.float64)
    target = torch.tensor([0])
    assert squared_emd(near, target) < squared_emd(far, target)


def test_ordinal_loss_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind='hinge' must be one of"):
        ordinal_loss(PROBABILITIES.log().float(), TARGET, "hinge")


def test_ordinal_loss_gradient_flows():
    logits = torch.zeros((2, 5), requires_grad=True)
    ordinal_loss(logits, torch.tensor([0, 4]), "squared_emd", 1.0).backward()
    assert logits.grad is not None
    assert logits.grad.abs().sum() > 0


def test_median_and_argmax_differ_on_bimodal():
    probabilities = np.array([[0.4, 0.0, 0.0, 0.3, 0.3]])
    assert argmax_class(probabilities).tolist() == [0]  # 1 star
    assert median_class(probabilities).tolist() == [3]  # 4 stars


@pytest.mark.parametrize("probabilities, median", [
    ([1.0, 0.0, 0.0, 0.0, 0.0], 0),
    ([0.0, 0.0, 0.0, 0.0, 1.0], 4),
    ([0.2, 0.2, 0.2, 0.2, 0.2], 2),
    ([0.25, 0.25, 0.0, 0.0, 0.5], 1),  # CDF reaches exactly 0.5 at class 1: the lower median
    ([0.1, 0.1, 0.1, 0.1, 0.6], 4),
    ([2.0, 0.0, 1.0, 0.0, 1.0], 0),  # unnormalised rows are normalised first
])
def test_median_class_cases(probabilities, median):
    assert median_class(np.array([probabilities])).tolist() == [median]


def test_median_minimises_expected_absolute_error():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(5), size=200)
    classes = np.arange(5)
    # (200, 5) expected absolute error of predicting each class.
    expected_error = probabilities @ np.abs(classes[:, None] - classes[None, :])
    chosen = expected_error[np.arange(200), median_class(probabilities)]
    assert np.all(chosen <= expected_error.min(axis=1) + 1e-12)


def test_decode_dispatches_and_rejects_unknown():
    probabilities = np.array([[0.4, 0.0, 0.0, 0.3, 0.3]])
    assert decode(probabilities, "median").tolist() == [3]
    assert decode(probabilities, "argmax").tolist() == [0]
    with pytest.raises(ValueError, match="decoding='mode' must be one of"):
        decode(probabilities, "mode")


def test_expected_class():
    probabilities = np.array([[0.4, 0.0, 0.0, 0.3, 0.3], [0.0, 0.0, 1.0, 0.0, 0.0]])
    assert expected_class(probabilities) == pytest.approx([2.1, 2.0])


def test_confusion_scores_match_sklearn():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 5, size=300)
    predictions = np.clip(targets + rng.integers(-2, 3, size=300), 0, 4)
    scores = scores_from_confusion(confusion_matrix(targets, predictions, 5))
    assert scores["accuracy"] == pytest.approx(accuracy_score(targets, predictions))
    assert scores["mae"] == pytest.approx(mean_absolute_error(targets, predictions))
    assert scores["macro_f1"] == pytest.approx(f1_score(targets, predictions, average="macro"))


def test_confusion_macro_f1_skips_absent_classes():
    # Class 4 is neither true nor predicted, so scikit-learn averages over classes 0..3 only.
    targets = np.array([0, 1, 2, 3, 3])
    predictions = np.array([0, 1, 3, 3, 2])
    scores = scores_from_confusion(confusion_matrix(targets, predictions, 5))
    assert scores["macro_f1"] == pytest.approx(f1_score(targets, predictions, average="macro"))


def test_confusion_scores_of_nothing_are_nan():
    scores = scores_from_confusion(np.zeros((5, 5)))
    assert all(math.isnan(value) for value in scores.values())
