"""Feature matrices from review texts: word counts (NTM), TF-IDF (k-means), n-grams (rating).

A `Featurizer` preprocesses texts with `TextPreprocessor`, selects a vocabulary on `fit` and
returns SciPy CSR float32 matrices whose columns follow `Featurizer.vocabulary`. Its
`to_dict()` together with the vocabulary (vocab.txt) rebuilds it for serving, so raw text
sent at inference gets the columns the model was trained on.

Documents that preprocessing leaves without a vocabulary word become all-zero rows. The
featurizer keeps them so that rows stay aligned with the caller's labels; the caller drops
and counts them with `Featurizer.empty_rows`:

    X = featurizer.fit_transform(texts)
    empty = Featurizer.empty_rows(X)
    X, labels = X[~empty], labels[~empty]
    skipped["empty_after_preprocessing"] = int(empty.sum())
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import InvalidHyperparameter, UserError
from .text import TextConfig, TextPreprocessor
from .vocabulary import (
    VocabularyStats,
    check_df,
    check_max_features,
    check_vocabulary_size,
    count_known_terms,
    count_terms,
    select_vocabulary,
    validate_words,
)

KINDS = ("counts", "tfidf", "ngrams")
NORMS = ("l2", "l1", None)
# Joins the words of an n-gram ("not_good"). Space would break vocab.txt's one word per
# line, and the default token pattern never produces "_" inside a word.
NGRAM_SEPARATOR = "_"
FORMAT_VERSION = 1

# Settings that differ by kind. The rating classifier keeps stop words because "not",
# "no" and "never" carry sentiment, and uses bigrams so that "not good" is one feature.
_KIND_DEFAULTS = {
    "counts": {"max_features": 2000, "ngram_range": (1, 1), "text": TextConfig()},
    "tfidf": {"max_features": 2000, "ngram_range": (1, 1), "text": TextConfig()},
    "ngrams": {"max_features": 100_000, "ngram_range": (1, 2),
               "text": TextConfig(remove_stop_words=False)},
}


@dataclass
class FeaturizerConfig:
    """Feature settings: the kind of features, vocabulary limits and text preprocessing.

    `kind` is "counts" (bag of words, for NTM), "tfidf" (TF-IDF with scikit-learn's
    `TfidfVectorizer` defaults: smooth idf, l2-normalised rows, for k-means) or "ngrams"
    (word n-gram counts with stop words kept, for the rating classifier). `max_features`
    "auto", `ngram_range` None and `text` None take the kind's defaults (2,000 words and
    unigrams for counts and tfidf, 100,000 features and uni+bigrams for ngrams).
    `max_features=None` means no limit. `min_df` and `max_df` are as in `CountVectorizer`.
    `smooth_idf`, `sublinear_tf` and `norm` apply to "tfidf" only.
    """

    kind: str = "counts"
    max_features: int | str | None = "auto"
    min_df: int | float = 2
    max_df: int | float = 0.95
    ngram_range: tuple[int, int] | None = None
    text: TextConfig | None = None
    smooth_idf: bool = True
    sublinear_tf: bool = False
    norm: str | None = "l2"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InvalidHyperparameter("kind", self.kind, f"must be one of {', '.join(KINDS)}")
        defaults = _KIND_DEFAULTS[self.kind]
        if self.max_features == "auto":
            self.max_features = defaults["max_features"]
        if self.ngram_range is None:
            self.ngram_range = defaults["ngram_range"]
        if self.text is None:
            self.text = defaults["text"]
        elif isinstance(self.text, dict):
            self.text = TextConfig.from_dict(self.text)
        self._check_ngram_range()
        self.ngram_range = tuple(self.ngram_range)
        check_max_features(self.max_features)
        check_df("min_df", self.min_df)
        check_df("max_df", self.max_df)
        if self.norm not in NORMS:
            raise InvalidHyperparameter("norm", self.norm, "must be 'l2', 'l1' or None")

    def _check_ngram_range(self) -> None:
        bounds = self.ngram_range
        valid = (isinstance(bounds, (list, tuple)) and len(bounds) == 2
                 and all(type(n) is int for n in bounds) and 1 <= bounds[0] <= bounds[1])
        if not valid:
            raise InvalidHyperparameter("ngram_range", bounds,
                                        "must be [min_n, max_n] with 1 <= min_n <= max_n")

    def to_dict(self) -> dict:
        """Return the resolved settings, text settings included, as a JSON-safe dict."""
        settings = {field.name: getattr(self, field.name) for field in fields(self)}
        settings["ngram_range"] = list(self.ngram_range)
        settings["text"] = self.text.to_dict()
        return settings

    @classmethod
    def from_dict(cls, settings: dict) -> "FeaturizerConfig":
        """Build a config from `to_dict()` output. Unknown keys raise `UserError`."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise UserError(f"unknown featurizer settings {unknown}; known settings are "
                            f"{sorted(known)}")
        return cls(**settings)


def word_ngrams(tokens: list[str], ngram_range: tuple[int, int]) -> list[str]:
    """Return the n-grams of `tokens` for n in `ngram_range`, shortest first, joined by "_"."""
    low, high = ngram_range
    if high == 1:
        return tokens
    ngrams = list(tokens) if low == 1 else []
    for n in range(max(low, 2), high + 1):
        ngrams += map(NGRAM_SEPARATOR.join, zip(*(tokens[i:] for i in range(n))))
    return ngrams


def normalize_rows(matrix: sp.csr_matrix, norm: str | None) -> None:
    """Scale each row of `matrix` in place to unit l2 or l1 norm. All-zero rows stay zero."""
    if norm is None or matrix.nnz == 0:
        return
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    weights = matrix.data ** 2 if norm == "l2" else np.abs(matrix.data)
    norms = np.bincount(rows, weights=weights, minlength=matrix.shape[0])
    if norm == "l2":
        norms = np.sqrt(norms)
    norms[norms == 0.0] = 1.0
    matrix.data /= norms[rows]


def inverse_document_frequency(document_frequency: np.ndarray, n_documents: int,
                               smooth: bool = True) -> np.ndarray:
    """Return scikit-learn's idf: ln((1 + n) / (1 + df)) + 1, or ln(n / df) + 1 unsmoothed."""
    document_frequency = document_frequency.astype(np.float64)
    if smooth:
        return np.log((1.0 + n_documents) / (1.0 + document_frequency)) + 1.0
    return np.log(n_documents / document_frequency) + 1.0


class Featurizer:
    """Turn review texts into feature matrices with a fixed, fitted vocabulary.

    Fitted attributes: `vocabulary` (one word per column), `idf_` ((n_features,) float64,
    tfidf only) and `stats_` (`VocabularyStats` of the fit, None after `from_dict`).
    """

    def __init__(self, config: FeaturizerConfig | None = None):
        self.config = config or FeaturizerConfig()
        self.preprocessor = TextPreprocessor(self.config.text)
        self._vocabulary: list[str] | None = None
        self._index: dict[str, int] | None = None
        self.idf_: np.ndarray | None = None
        self.stats_: VocabularyStats | None = None

    @property
    def vocabulary(self) -> list[str]:
        """The fitted words, one per column, in column order."""
        if self._vocabulary is None:
            raise RuntimeError("Featurizer is not fitted; call fit_transform or from_dict first")
        return list(self._vocabulary)

    def _set_vocabulary(self, words: Sequence[str]) -> None:
        self._vocabulary = validate_words(words)
        self._index = {word: column for column, word in enumerate(self._vocabulary)}

    def terms(self, text: str | None) -> list[str]:
        """Return the terms (words or n-grams) that `text` contributes to the columns."""
        return word_ngrams(self.preprocessor(text), self.config.ngram_range)

    def _terms_function(self):
        # Unigram features skip the n-gram step, which saves a call per document.
        return self.preprocessor if self.config.ngram_range == (1, 1) else self.terms

    def fit(self, texts: Iterable[str | None]) -> "Featurizer":
        """Select the vocabulary (and idf for tfidf) from `texts`."""
        self.fit_transform(texts)
        return self

    def fit_transform(self, texts: Iterable[str | None]) -> sp.csr_matrix:
        """Fit on `texts` and return their (n_texts, n_features) float32 CSR features.

        Raises `UserError` when no term is left after the document-frequency filters.
        """
        counts = count_terms(map(self._terms_function(), texts))
        selection = select_vocabulary(counts, min_df=self.config.min_df,
                                      max_df=self.config.max_df,
                                      max_features=self.config.max_features)
        self._set_vocabulary(selection.words)
        self.stats_ = selection.stats

        # (n_texts, n_features) counts in vocabulary order.
        matrix = counts.matrix[:, selection.columns].tocsr()
        if self.config.kind == "tfidf":
            document_frequency = np.bincount(matrix.indices, minlength=matrix.shape[1])
            self.idf_ = inverse_document_frequency(document_frequency, matrix.shape[0],
                                                   self.config.smooth_idf)
        return self._weight(matrix)

    def transform(self, texts: Iterable[str | None]) -> sp.csr_matrix:
        """Return (n_texts, n_features) float32 CSR features of `texts` in the fitted columns."""
        if self._index is None:
            raise RuntimeError("Featurizer is not fitted; call fit_transform or from_dict first")
        return self._weight(count_known_terms(map(self._terms_function(), texts), self._index))

    def _weight(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        counts.sort_indices()
        if self.config.kind == "tfidf":
            if self.config.sublinear_tf:
                np.log(counts.data, out=counts.data)
                counts.data += 1.0
            counts.data *= self.idf_[counts.indices]
            normalize_rows(counts, self.config.norm)
        return counts.astype(np.float32)

    def require_vocabulary_size(self, feature_dim: int, name: str = "feature_dim") -> None:
        """Raise `UserError` unless the vocabulary has exactly `feature_dim` words.

        After a fit the message names the setting that limited the vocabulary. After
        `from_dict` only the two sizes are known.
        """
        if self.stats_ is None:
            if len(self.vocabulary) != feature_dim:
                raise UserError(f"vocabulary has {len(self.vocabulary)} words but {name} asks "
                                f"for {feature_dim}")
            return
        check_vocabulary_size(self.stats_, feature_dim, name)

    @staticmethod
    def empty_rows(features: sp.spmatrix | np.ndarray) -> np.ndarray:
        """Return a (n_rows,) bool mask of the rows without a non-zero feature."""
        if sp.issparse(features):
            # Explicitly stored zeros do not count as features.
            return (sp.csr_matrix(features) != 0).getnnz(axis=1) == 0
        return ~np.asarray(features).any(axis=1)

    def to_dict(self) -> dict:
        """Return a JSON-safe description that `from_dict` turns back into this featurizer.

        The dict contains the settings (text settings included), the vocabulary size, the
        idf values of a tfidf featurizer and the vocabulary statistics of the fit. The words
        themselves travel separately as vocab.txt.
        """
        description = {
            "format_version": FORMAT_VERSION,
            "kind": self.config.kind,
            "config": self.config.to_dict(),
            "ngram_separator": NGRAM_SEPARATOR,
            "vocabulary_size": len(self.vocabulary),
            "vocabulary_stats": self.stats_.to_dict() if self.stats_ is not None else None,
        }
        if self.idf_ is not None:
            description["idf"] = [float(value) for value in self.idf_]
        return description

    @classmethod
    def from_dict(cls, description: dict, vocabulary: Sequence[str]) -> "Featurizer":
        """Rebuild a fitted featurizer from `to_dict()` output and its vocabulary.

        Raises `UserError` when the description is of another format version, or when the
        vocabulary or the idf values do not match the recorded vocabulary size.
        """
        version = description.get("format_version")
        if version != FORMAT_VERSION:
            raise UserError(f"featurizer format_version={version!r} is not supported; "
                            f"this version of review_nlp reads {FORMAT_VERSION}")
        featurizer = cls(FeaturizerConfig.from_dict(description["config"]))
        size = description["vocabulary_size"]
        if len(vocabulary) != size:
            raise UserError(f"vocabulary has {len(vocabulary)} words but the featurizer was "
                            f"fitted with {size}; use the vocab.txt saved with it")
        featurizer._set_vocabulary(vocabulary)
        if featurizer.config.kind == "tfidf":
            idf = np.asarray(description.get("idf", []), dtype=np.float64)
            if idf.shape != (size,):
                raise UserError(f"featurizer idf has {idf.size} values but the vocabulary has "
                                f"{size} words")
            featurizer.idf_ = idf
        return featurizer
