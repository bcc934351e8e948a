"""The NTM's coherence term: a reward for topics whose likely words occur together.

Training subtracts `coherence_weight` times this term from the loss. For each topic k with
word distribution p_k = softmax(W[:, k]), the term is sum_ij p_k(i) p_k(j) NPMI(i, j), averaged
over topics, where NPMI(i, j) is counted over the training documents, as the benchmark's
coherence score counts it over held-out ones. A topic gains by putting its mass on words that
appear in the same reviews and loses by mixing words that never do.

On 12-word reviews the ELBO alone lets words seen in a handful of documents top a topic,
because no part of it rewards a topic whose words co-occur. In bench/ntm.py on MARC English
reviews, weight 15 raised the test-split NPMI by about 0.1 over weight 0 and lowered topic
uniqueness by 0.03 to 0.06. It never enters the reported losses.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch

from . import topic_metrics
from .training import all_reduce_sum

logger = logging.getLogger(__name__)

# The term covers at most this many words, the most frequent ones by document frequency, so
# that its (words x words) matrix stays at 100 MB in float32 for large vocabularies.
MAX_COHERENCE_WORDS = 5000


class CoherenceTerm:
    """NPMI of word pairs over the training documents, and the topics' expected NPMI under it."""

    def __init__(self, word_ids: torch.Tensor, npmi: torch.Tensor):
        self.word_ids = word_ids        # (n_words,) vocabulary ids the term covers
        self.npmi = npmi                # (n_words, n_words), zero diagonal

    @classmethod
    def from_documents(cls, features: sp.spmatrix, device: torch.device) -> "CoherenceTerm":
        """Build the term from the document co-occurrences in `features` (documents,
        vocab_size) of the MAX_COHERENCE_WORDS most frequent words, summed over hosts when
        torch.distributed runs."""
        features = sp.csr_matrix(features)
        doc_freq = np.asarray((features > 0).sum(axis=0), dtype=np.float64).ravel()
        totals = all_reduce_sum(torch.from_numpy(
            np.append(doc_freq, features.shape[0])).to(device)).cpu().numpy()
        doc_freq, n_documents = totals[:-1], totals[-1]
        n_words = min(len(doc_freq), MAX_COHERENCE_WORDS)
        word_ids = np.sort(np.argsort(-doc_freq, kind="stable")[:n_words])
        if n_words < len(doc_freq):
            logger.info("Coherence term over the %d most frequent of %d words", n_words,
                        len(doc_freq))

        local = torch.from_numpy(topic_metrics.document_co_counts(features, word_ids))
        co_counts = all_reduce_sum(local.to(device)).cpu().numpy()     # (n_words, n_words)
        npmi = topic_metrics.npmi_matrix(co_counts, int(n_documents))
        np.fill_diagonal(npmi, 0.0)
        return cls(torch.from_numpy(word_ids).to(device),
                   torch.from_numpy(npmi.astype(np.float32)).to(device))

    def __call__(self, projection_weight: torch.Tensor) -> torch.Tensor:
        """Mean over topics of sum_ij p_k(i) p_k(j) NPMI(i, j), from W (vocab_size, topics)."""
        logits = projection_weight.T.to(self.npmi.dtype)           # (topics, vocab_size)
        topic_word = torch.softmax(logits, dim=1)
        covered = topic_word[:, self.word_ids]
        expected = _QuadraticForm.apply(covered, self.npmi)         # (topics,)
        # A pair with a word outside the covered ones counts as never seen together (-1):
        # the pairs i != j of all words minus those of the covered words.
        all_pairs = 1.0 - topic_word.square().sum(dim=1)
        covered_pairs = covered.sum(dim=1).square() - covered.square().sum(dim=1)
        return (expected - (all_pairs - covered_pairs)).mean()


class _QuadraticForm(torch.autograd.Function):
    """Rows x_k -> x_k^T A x_k for a symmetric A, with one matrix product in all: the
    gradient 2 A x_k reuses the forward's product (autograd would compute a second one)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, symmetric: torch.Tensor) -> torch.Tensor:
        product = rows @ symmetric                                  # (n_rows, n)
        ctx.save_for_backward(product)
        return (product * rows).sum(dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (product,) = ctx.saved_tensors
        return 2.0 * product * grad[:, None], None
