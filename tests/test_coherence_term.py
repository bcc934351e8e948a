"""The NTM's coherence term on examples small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from review_nlp.models import coherence_term
from review_nlp.models.coherence_term import CoherenceTerm
from review_nlp.models.ntm import NeuralTopicModel, NTMConfig
from review_nlp.models.training import FeatureData

CPU = torch.device("cpu")

# Four documents over three words: words 0 and 1 always together (documents 0 and 1),
# word 2 alone (documents 2 and 3).
DOCUMENTS = sp.csr_matrix(np.array([[1, 2, 0],
                                    [3, 1, 0],
                                    [0, 0, 1],
                                    [0, 0, 4]], dtype=np.float32))


def test_npmi_of_training_pairs_by_hand():
    term = CoherenceTerm.from_documents(DOCUMENTS, CPU)
    # p(0) = p(1) = p(0, 1) = 1/2: NPMI = log(2) / log(2) = 1. Words 0 and 2 never meet: -1.
    expected = np.array([[0.0, 1.0, -1.0],
                         [1.0, 0.0, -1.0],
                         [-1.0, -1.0, 0.0]])
    np.testing.assert_allclose(term.npmi.numpy(), expected, atol=1e-6)
    assert term.word_ids.tolist() == [0, 1, 2]


def test_expected_npmi_by_hand():
    term = CoherenceTerm.from_documents(DOCUMENTS, CPU)
    # Topic 0 puts probabilities (1/2, 1/4, 1/4) on the words, topic 1 is uniform.
    weight = torch.tensor([[math.log(2.0), 0.0],
                           [0.0, 0.0],
                           [0.0, 0.0]])                        # (vocab_size, topics)
    # sum over i != j of p(i) p(j) NPMI(i, j) = 2 (p0 p1 - p0 p2 - p1 p2)
    topic_0 = 2 * (1 / 8 - 1 / 8 - 1 / 16)
    topic_1 = 2 * (1 / 9 - 1 / 9 - 1 / 9)
    assert term(weight).item() == pytest.approx((topic_0 + topic_1) / 2)


def test_gradient_matches_plain_autograd():
    term = CoherenceTerm.from_documents(DOCUMENTS, CPU)
    npmi = term.npmi.double()
    term = CoherenceTerm(term.word_ids, npmi)
    weight = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    fast = torch.autograd.grad(term(weight), weight)[0]

    topic_word = torch.softmax(weight.T, dim=1)
    plain = ((topic_word @ npmi) * topic_word).sum(dim=1).mean()
    reference = torch.autograd.grad(plain, weight)[0]
    torch.testing.assert_close(fast, reference)


def test_words_beyond_cap_never_together(monkeypatch):
    monkeypatch.setattr(coherence_term, "MAX_COHERENCE_WORDS", 2)
    capped = CoherenceTerm.from_documents(DOCUMENTS, CPU)
    # Each word is in 2 documents. Ties keep vocabulary order, so words 0 and 1 stay.
    assert capped.word_ids.tolist() == [0, 1]
    monkeypatch.setattr(coherence_term, "MAX_COHERENCE_WORDS", 3)
    full = CoherenceTerm.from_documents(DOCUMENTS, CPU)
    # Word 2 meets no other word in these documents, so both give the same value.
    weight = torch.randn(3, 2)
    assert capped(weight).item() == pytest.approx(full(weight).item(), abs=1e-6)


def test_training_raises_the_term():
    rng = np.random.default_rng(0)
    # Words 0-3 come together, 4-7 come together, and 8-11 are scattered one per document.
    rows = []
    for _ in range(200):
        counts = np.zeros(12, dtype=np.float32)
        block = rng.integers(2)
        counts[4 * block:4 * block + 4] = rng.integers(1, 3, size=4)
        counts[8 + rng.integers(4)] += 3
        rows.append(counts)
    features = sp.csr_matrix(np.array(rows))
    term = CoherenceTerm.from_documents(features, CPU)

    values = {}
    for weight in (0.0, 50.0):
        config = NTMConfig(feature_dim=12, num_topics=2, encoder_layers=[8], epochs=20,
                           mini_batch_size=50, num_patience_epochs=100,
                           coherence_weight=weight)
        model = NeuralTopicModel(config, device="cpu")
        model.fit(FeatureData(features))
        values[weight] = term(model.network.projection_weight.detach()).item()
    assert values[50.0] > values[0.0] + 0.01
