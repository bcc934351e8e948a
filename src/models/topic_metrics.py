"""Topic quality metrics: topic uniqueness (TU), word-embedding topic coherence (WETC), NPMI
and perplexity.

Every function takes topics as a (num_topics, top_n) array of word ids, the output of
`top_word_ids`, so the same code scores the neural topic model and scikit-learn's LDA.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import scipy.sparse as sp


def top_word_ids(topic_word: np.ndarray, n: int) -> np.ndarray:
    """Return the ids of the `n` highest-weighted words of each topic, highest first.

    `topic_word` is (num_topics, vocab_size); ties go to the lower word id.
    The result is (num_topics, min(n, vocab_size)).
    """
    topic_word = np.asarray(topic_word)
    order = np.argsort(-topic_word, axis=1, kind="stable")
    return order[:, :min(n, topic_word.shape[1])]


def topic_uniqueness(top_words: np.ndarray) -> tuple[float, np.ndarray]:
    """Return TU averaged over topics and TU of each topic.

    TU(k) = (1/n) * sum_i 1 / cnt(i, k), where cnt(i, k) is the number of topics whose top-n
    list contains the i-th top word of topic k, as SageMaker's built-in NTM defines it. TU lies
    in [1/num_topics, 1], and 1 means that no word is shared between topics.
    """
    top_words = np.asarray(top_words)
    topic_count = Counter()
    for words in top_words:
        topic_count.update(set(words.tolist()))
    per_topic = np.array([np.mean([1.0 / topic_count[w] for w in words.tolist()])
                          for words in top_words])
    return float(per_topic.mean()), per_topic


def _mean_upper_triangle(matrix: np.ndarray) -> float:
    """Mean of the entries above the diagonal: the average over distinct pairs i < j."""
    rows, cols = np.triu_indices(matrix.shape[0], k=1)
    return float(matrix[rows, cols].mean()) if len(rows) else float("nan")


def embedding_coherence(top_words: np.ndarray, embeddings: np.ndarray
                        ) -> tuple[float, np.ndarray]:
    """Return WETC averaged over topics and WETC of each topic.

    WETC(k) is the average cosine similarity over all pairs of topic k's top words
    (pairwise WETC of Ding, Nallapati, Xiang, "Coherence-Aware Neural Topic Modeling",
    EMNLP 2018). `embeddings` is (vocab_size, dim); a zero row (a word without a vector)
    has cosine similarity 0 with every word.
    """
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = np.divide(embeddings, norms, out=np.zeros_like(embeddings, dtype=np.float64),
                     where=norms > 0)
    per_topic = np.array([_mean_upper_triangle(unit[words] @ unit[words].T)
                          for words in np.asarray(top_words)])
    return float(per_topic.mean()), per_topic


def npmi_coherence(top_words: np.ndarray, documents: sp.spmatrix | np.ndarray
                   ) -> tuple[float, np.ndarray]:
    """Return mean NPMI over topics and the NPMI of each topic on a reference corpus.

    Probabilities are document frequencies in `documents` (n_documents, vocab_size) word
    counts: p(w) = D(w) / N and p(w_i, w_j) = D(w_i, w_j) / N. For each pair of top words
    NPMI = log(p(w_i, w_j) / (p(w_i) p(w_j))) / -log p(w_i, w_j), in [-1, 1].
    A pair that never occurs together scores -1, and a pair present in every document
    scores 1. A topic's NPMI is the average over its pairs i < j.
    """
    top_words = np.asarray(top_words)
    words = np.unique(top_words)
    column_of = {word: column for column, word in enumerate(words.tolist())}

    co_counts = document_co_counts(documents, words)
    npmi = npmi_matrix(co_counts, documents.shape[0])

    per_topic = np.empty(len(top_words))
    for k, topic in enumerate(top_words):
        columns = [column_of[word] for word in topic.tolist()]
        per_topic[k] = _mean_upper_triangle(npmi[np.ix_(columns, columns)])
    return float(per_topic.mean()), per_topic


def document_co_counts(documents: sp.spmatrix | np.ndarray, words: np.ndarray) -> np.ndarray:
    """Count the documents that contain each pair of `words`: (n_words, n_words), with each
    word's document frequency on the diagonal."""
    present = (sp.csc_matrix(documents)[:, words] > 0).astype(np.float64)
    return (present.T @ present).toarray()


def npmi_matrix(co_counts: np.ndarray, n_documents: int) -> np.ndarray:
    """NPMI of every pair from a co-occurrence count matrix whose diagonal contains D(w)."""
    doc_freq = np.diag(co_counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_joint = np.log(co_counts / n_documents)
        pmi = log_joint - np.log(doc_freq[:, None] / n_documents) \
            - np.log(doc_freq[None, :] / n_documents)
        npmi = pmi / -log_joint
    npmi[co_counts == 0] = -1.0
    npmi[co_counts == n_documents] = 1.0
    return npmi


def nats_per_word(document_nats: np.ndarray, word_counts: np.ndarray) -> np.ndarray:
    """Divide each document's loss in nats by its word count (documents must be non-empty)."""
    return np.asarray(document_nats, dtype=np.float64) / np.asarray(word_counts, np.float64)


def perplexity(document_nats: np.ndarray, word_counts: np.ndarray) -> float:
    """Return exp of the average over documents of nats per word.

    This is the perplexity of Miao, Yu, Blunsom, "Neural Variational Inference for Text
    Processing", ICML 2016: exp(-(1/D) sum_d log p(d) / N_d), with the loss (the negative
    evidence lower bound) standing in for -log p(d). Its log equals the built-in NTM's
    `total` loss, which the built-in also reports as `log_perplexity`.
    """
    return float(np.exp(nats_per_word(document_nats, word_counts).mean()))
