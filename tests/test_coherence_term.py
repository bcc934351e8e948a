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


# Words 0 and 1 meet in 2 training documents: NPMI 1, but a held-out set an eighth the size
# misses them together with probability exp(-2/8).
TOGETHER = 1.0 - 2.0 * math.exp(-2.0 * coherence_term.HELD_OUT_FRACTION)


def test_held_out_npmi_of_training_pairs_by_hand():
    term = CoherenceTerm.from_documents(DOCUMENTS, CPU)
    # Words 0 and 2 never meet: -1 whatever the held-out set.
    expected = np.array([[0.0, TOGETHER, -1.0],
                         [TOGETHER, 0.0, -1.0],
                         [-1.0, -1.0, 0.0]])
    np.testing.assert_allclose(term.scores.numpy(), expected, atol=1e-6)
    assert term.word_ids.tolist() == [0, 1, 2]


def test_expected_score_by_hand():
    term = CoherenceTerm.from_documents(DOCUMENTS, CPU)
    # Topic 0 puts probabilities (1/2, 1/4, 1/4) on the words, topic 1 is uniform.
    weight = torch.tensor([[math.log(2.0), 0.0],
                           [0.0, 0.0],
                           [0.0, 0.0]])                        # (vocab_size, topics)
    # Word totals over topics: 5/6, 7/12, 7/12. Own probability p_k(w)^2 / total(w):
    own = [(3 / 10, 3 / 28, 3 / 28), (2 / 15, 4 / 21, 4 / 21)]

    def expected(shares):
        both_own = 2 * (shares[0] * shares[1] * TOGETHER - shares[0] * shares[2]
                        - shares[1] * shares[2])
        return both_own - (1 - sum(shares) ** 2)

    assert term(weight).item() == pytest.approx((expected(own[0]) + expected(own[1])) / 2)


def test_shared_words_score_less_than_owned_ones():
    # Words 0 and 1 always come together, and so do words 2 and 3.
    documents = sp.csr_matrix(np.array([[1, 1, 0, 0]] * 8 + [[0, 0, 1, 1]] * 8,
                                       dtype=np.float32))
    term = CoherenceTerm.from_documents(documents, CPU)

    def on_words(*ids):
        return torch.tensor([4.0 if w in ids else 0.0 for w in range(4)])

    distinct = torch.stack([on_words(0, 1), on_words(2, 3)], dim=1)
    duplicate = torch.stack([on_words(0, 1), on_words(0, 1)], dim=1)
    assert term(distinct).item() > term(duplicate).item() + 0.1


def test_only_top_words_get_gradients():
    rng = np.random.default_rng(0)
    documents = sp.csr_matrix(rng.integers(0, 2, size=(40, 30)).astype(np.float32))
    term = CoherenceTerm.from_documents(documents, CPU)
    weight = torch.randn(30, 3, requires_grad=True)
    gradient = torch.autograd.grad(term(weight), weight)[0]
    for k in range(3):
        top = set(weight[:, k].topk(coherence_term.TOP_WORDS).indices.tolist())
        moved = set(torch.nonzero(gradient[:, k]).flatten().tolist())
        assert moved <= top
        assert len(moved) > coherence_term.TOP_WORDS // 2


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
