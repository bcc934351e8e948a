"""The rating classifier's network: a fastText-style embedding bag over n-gram counts, with an
optional linear ("wide") term over the same counts.

fastText (Joulin et al., "Bag of Tricks for Efficient Text Classification", 2016) averages the
embeddings of a document's words and n-grams and feeds the average to a linear classifier.
Here each row's counts become EmbeddingBag weights count / row total, so the bag is the
count-weighted mean of the n-gram embeddings, followed by dropout, one hidden ReLU layer and
the class logits. The wide term is a per-feature, per-class weight over the counts, weighted
as sublinear TF-IDF or as the same count shares: a multinomial logistic regression added to
the logits (Cheng et al., "Wide & Deep Learning for Recommender Systems", 2016).
"""

from __future__ import annotations

import logging
import re
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

logger = logging.getLogger(__name__)

# The team featurizer joins the words of an n-gram with "_", and scikit-learn's vectorizers
# join them with " ".
_NGRAM_SEPARATOR = re.compile(r"[_ ]")


def bag_inputs(batch: sp.csr_matrix, device: torch.device, idf: np.ndarray | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Return EmbeddingBag inputs (indices, offsets, weights, wide_weights) for a CSR batch of
    counts.

    `weights` are each count divided by its row's total, so a "sum" bag is the weighted mean.
    `wide_weights` are None without `idf`. With it they are scikit-learn's sublinear TF-IDF,
    (1 + ln count) * idf with each row scaled to unit l2 norm. Nothing is densified: indices
    and weights have the batch's non-zero count as their length, and offsets one per row.
    """
    batch = sp.csr_matrix(batch)
    rows = np.repeat(np.arange(batch.shape[0]), np.diff(batch.indptr))  # (nnz,) row of each count
    indices = torch.from_numpy(batch.indices.astype(np.int64)).to(device)
    offsets = torch.from_numpy(batch.indptr[:-1].astype(np.int64)).to(device)
    weights = torch.from_numpy(_row_scaled(batch.data, rows, batch.shape[0], "l1")).to(device)
    if idf is None:
        return indices, offsets, weights, None
    tfidf = (1.0 + np.log(np.maximum(batch.data, 1e-12))) * idf[batch.indices]
    wide_weights = torch.from_numpy(_row_scaled(tfidf, rows, batch.shape[0], "l2")).to(device)
    return indices, offsets, weights, wide_weights


def _row_scaled(values: np.ndarray, rows: np.ndarray, n_rows: int, norm: str) -> np.ndarray:
    """Return `values` divided by their row's l1 or l2 norm, as float32; zero rows stay zero."""
    if norm == "l1":
        norms = np.bincount(rows, weights=np.abs(values), minlength=n_rows)
    else:
        norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=n_rows))
    norms[norms == 0] = 1.0
    return (values / norms[rows]).astype(np.float32)


def document_frequency(features: sp.csr_matrix) -> np.ndarray:
    """Return the (feature_dim,) number of rows of CSR `features` in which each column occurs."""
    features = sp.csr_matrix(features)
    present = features.data != 0
    return np.bincount(features.indices[present], minlength=features.shape[1]).astype(np.float64)


def smooth_idf(frequency: np.ndarray, n_documents: float) -> np.ndarray:
    """Return scikit-learn's smoothed idf, ln((1 + n) / (1 + df)) + 1."""
    return np.log((1.0 + n_documents) / (1.0 + frequency)) + 1.0


class NgramBagNetwork(nn.Module):
    """(batch, feature_dim) n-gram counts as bag inputs -> (batch, num_classes) logits."""

    def __init__(self, feature_dim: int, num_classes: int, embedding_dim: int, hidden_dim: int,
                 dropout: float, wide: bool):
        super().__init__()
        # sparse=False so that DDP can all-reduce the gradient like any dense parameter.
        self.embedding = nn.EmbeddingBag(feature_dim, embedding_dim, mode="sum", sparse=False)
        nn.init.normal_(self.embedding.weight, std=0.1)
        self.dropout = nn.Dropout(dropout)
        if hidden_dim > 0:
            self.head = nn.Sequential(
                nn.Linear(embedding_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(hidden_dim, num_classes))
        else:
            self.head = nn.Linear(embedding_dim, num_classes)
        self.wide = None
        if wide:
            self.wide = nn.EmbeddingBag(feature_dim, num_classes, mode="sum", sparse=False)
            nn.init.zeros_(self.wide.weight)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor,
                wide_weights: torch.Tensor | None = None) -> torch.Tensor:
        bag = self.embedding(indices, offsets, per_sample_weights=weights)  # (batch, embedding_dim)
        logits = self.head(self.dropout(bag))  # (batch, num_classes)
        if self.wide is not None:
            wide_weights = weights if wide_weights is None else wide_weights
            logits = logits + self.wide(indices, offsets, per_sample_weights=wide_weights)
        return logits


class NgramBagEnsemble(nn.Module):
    """`num_models` independently initialised `NgramBagNetwork`s trained side by side.

    forward returns (num_models, batch, num_classes) logits. The ensemble's prediction is the
    mean of the members' class probabilities (`probabilities`).
    """

    def __init__(self, num_models: int, **network_settings):
        super().__init__()
        self.members = nn.ModuleList(NgramBagNetwork(**network_settings)
                                     for _ in range(num_models))
        # (feature_dim,) idf of the wide term's TF-IDF weights, saved with the weights.
        self.register_buffer("idf", torch.ones(network_settings["feature_dim"]))

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor,
                wide_weights: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack([member(indices, offsets, weights, wide_weights)
                            for member in self.members])

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        """Return (batch, num_classes) mean member probabilities of forward's output."""
        return logits.float().softmax(dim=-1).mean(dim=0)


def pretrained_rows(vocabulary: Sequence[str], lookup) -> tuple[np.ndarray, np.ndarray]:
    """Return (len(vocabulary), d) vectors for unigrams and n-grams, and the mask of rows found.

    `lookup(words) -> (vectors, found)` gives word vectors (e.g. `glove.glove_vectors`). A word
    takes its own vector. An n-gram ("not_good" or "not good") takes the mean of the vectors of
    its words that have one, so "not good" starts between "not" and "good" and training moves
    it from there.
    """
    vocabulary = [str(word) for word in vocabulary]
    vectors, found = lookup(vocabulary)
    vectors = np.array(vectors, dtype=np.float32)
    found = np.array(found, dtype=bool)
    missing_ngrams = [row for row, word in enumerate(vocabulary)
                      if not found[row] and _NGRAM_SEPARATOR.search(word)]
    parts = [[part for part in _NGRAM_SEPARATOR.split(vocabulary[row]) if part]
             for row in missing_ngrams]
    words = sorted({part for row_parts in parts for part in row_parts})
    if not words:
        return vectors, found
    word_vectors, word_found = lookup(words)
    position = {word: i for i, word in enumerate(words)}

    # (n-grams, words) 0/1 matrix of the words with a vector in each n-gram, so that one sparse
    # product sums their vectors.
    ngram_index, word_index = [], []
    for i, row_parts in enumerate(parts):
        for part in row_parts:
            if word_found[position[part]]:
                ngram_index.append(i)
                word_index.append(position[part])
    membership = sp.csr_matrix((np.ones(len(word_index)), (ngram_index, word_index)),
                               shape=(len(parts), len(words)))
    hits = np.asarray(membership.sum(axis=1)).ravel()  # (n-grams,) words found per n-gram
    sums = membership @ np.asarray(word_vectors, dtype=np.float64)  # (n-grams, d)
    rows = np.array(missing_ngrams)[hits > 0]
    vectors[rows] = sums[hits > 0] / hits[hits > 0, None]
    found[rows] = True
    return vectors, found


def initialise_embedding(network: NgramBagEnsemble, vectors: np.ndarray, found: np.ndarray,
                         scale: float) -> None:
    """Copy `scale` times the pretrained `vectors` into each member's embedding rows marked in
    `found`.

    Vectors shorter than the embedding fill its first columns, and the other columns keep their
    random start. Of longer vectors only the first columns are used.
    """
    rows = torch.from_numpy(np.flatnonzero(found))
    for member in network.members:
        weight = member.embedding.weight
        columns = min(weight.shape[1], vectors.shape[1])
        values = torch.from_numpy(vectors[found, :columns] * scale)
        with torch.no_grad():
            weight[rows, :columns] = values.to(weight.device, weight.dtype)
    logger.info("Initialised %d of %d n-gram embeddings from pretrained word vectors",
                int(found.sum()), len(found))
