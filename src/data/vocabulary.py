"""Vocabulary selection by document frequency and corpus frequency, and vocab.txt files.

`min_df` and `max_df` follow scikit-learn's `CountVectorizer`: an int is a number of
documents, a float in (0, 1] a proportion of them. `max_features` keeps the terms with the
highest corpus frequency (total count), ties broken by the term's code-point order so that
the same corpus always gives the same vocabulary. The selected words are sorted in
code-point order, as scikit-learn sorts `vocabulary_`, and that order is the column order.

vocab.txt is the file SageMaker's built-in NTM reads from its `auxiliary` channel: UTF-8, one
word per line, in column order, so its line count equals `feature_dim`. Words are therefore
never empty and never contain whitespace; `validate_words` enforces that.
"""

from __future__ import annotations

import math
import os
import re
from array import array
from collections import defaultdict
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import DataError, InvalidHyperparameter, UserError
from ..files import atomic_write_text

_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True)
class TermCounts:
    """Term counts of a corpus: `matrix[i, j]` is how often `terms[j]` occurs in document i."""

    terms: list[str]
    matrix: sp.csr_matrix  # (n_documents, n_terms) float64 counts

    @property
    def n_documents(self) -> int:
        return self.matrix.shape[0]

    def document_frequency(self) -> np.ndarray:
        """Return the number of documents each term occurs in, shape (n_terms,)."""
        return np.bincount(self.matrix.indices, minlength=len(self.terms))

    def corpus_frequency(self) -> np.ndarray:
        """Return each term's total count over all documents, shape (n_terms,)."""
        return np.bincount(self.matrix.indices, weights=self.matrix.data,
                           minlength=len(self.terms))


def _csr_from_ids(ids: array, indptr: array, n_columns: int) -> sp.csr_matrix:
    # One entry per token occurrence, which sum_duplicates merges into counts per row.
    indices = np.array(ids, dtype=np.int64)
    matrix = sp.csr_matrix(
        (np.ones(len(indices), dtype=np.float64), indices, np.array(indptr, dtype=np.int64)),
        shape=(len(indptr) - 1, n_columns))
    matrix.sum_duplicates()
    return matrix


def count_terms(documents: Iterable[Sequence[str]]) -> TermCounts:
    """Count every term of every document, with columns in order of first appearance."""
    index: defaultdict[str, int] = defaultdict()
    # A missing term gets the next free column, because `len(index)` is read before the insert.
    index.default_factory = index.__len__
    ids = array("q")
    indptr = array("q", [0])
    for terms in documents:
        ids.extend(map(index.__getitem__, terms))
        indptr.append(len(ids))
    return TermCounts(list(index), _csr_from_ids(ids, indptr, len(index)))


def count_known_terms(documents: Iterable[Sequence[str]], index: dict[str, int]) -> sp.csr_matrix:
    """Count the terms found in `index` (term -> column) and ignore the others."""
    ids = array("q")
    indptr = array("q", [0])
    lookup = index.get
    for terms in documents:
        ids.extend(column for column in map(lookup, terms) if column is not None)
        indptr.append(len(ids))
    return _csr_from_ids(ids, indptr, len(index))


def check_df(name: str, value: int | float) -> None:
    """Raise `InvalidHyperparameter` unless `value` is an int >= 1 or a float in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidHyperparameter(name, value, "must be an int >= 1 or a float in (0, 1]")
    if isinstance(value, Integral):
        if value < 1:
            raise InvalidHyperparameter(name, value, "must be an int >= 1 or a float in (0, 1]")
    elif not 0.0 < value <= 1.0:
        raise InvalidHyperparameter(name, value, "must be an int >= 1 or a float in (0, 1]")


def check_max_features(value: int | None) -> None:
    """Raise `InvalidHyperparameter` unless `value` is None (no limit) or an int >= 1."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise InvalidHyperparameter("max_features", value, "must be None or an int >= 1")


def document_count(df: int | float, n_documents: int) -> float:
    """Return `df` as a number of documents: ints as they are, floats times `n_documents`."""
    return float(df) if isinstance(df, Integral) else df * n_documents


@dataclass(frozen=True)
class VocabularyStats:
    """Statistics of a vocabulary selection, kept to explain a vocabulary smaller than
    requested."""

    n_documents: int
    n_terms: int           # distinct terms after preprocessing
    n_min_df_kept: int     # terms in at least min_df documents
    n_max_df_kept: int     # terms in at most max_df documents
    n_df_kept: int         # terms passing both
    size: int              # final vocabulary size, after max_features
    min_df: int | float
    max_df: int | float
    max_features: int | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VocabularySelection:
    """The selected words and, for each, its column in the `TermCounts` it came from."""

    words: list[str]
    columns: np.ndarray  # (size,) int64 columns of the counted matrix, in word order
    stats: VocabularyStats


def _describe_min_df(stats: VocabularyStats) -> str:
    if isinstance(stats.min_df, Integral):
        return f"min_df={stats.min_df} keeps only words in at least {stats.min_df} documents"
    count = math.ceil(document_count(stats.min_df, stats.n_documents))
    return (f"min_df={stats.min_df} keeps only words in at least {stats.min_df * 100:g}% of "
            f"documents ({count} of {stats.n_documents})")


def _describe_max_df(stats: VocabularyStats) -> str:
    if isinstance(stats.max_df, Integral):
        return f"max_df={stats.max_df} drops words in more than {stats.max_df} documents"
    count = math.floor(document_count(stats.max_df, stats.n_documents))
    return (f"max_df={stats.max_df} drops words in more than {stats.max_df * 100:g}% of "
            f"documents ({count} of {stats.n_documents})")


def explain_size(stats: VocabularyStats, requested: int) -> str:
    """Return which setting made the vocabulary smaller than `requested`, and what to change."""
    if stats.n_terms < requested:
        return (f"the {stats.n_documents} documents contain only {stats.n_terms} distinct terms "
                "after preprocessing; add documents or keep more words (stop words, "
                "min_token_length)")
    if stats.n_min_df_kept < requested:
        return f"{_describe_min_df(stats)}; lower min_df"
    if stats.n_max_df_kept < requested:
        return f"{_describe_max_df(stats)}; raise max_df"
    if stats.n_df_kept < requested:
        return (f"{_describe_min_df(stats)} and {_describe_max_df(stats)}, leaving "
                f"{stats.n_df_kept} words; lower min_df or raise max_df")
    return f"max_features={stats.max_features} limits it; raise max_features"


def check_vocabulary_size(stats: VocabularyStats, requested: int,
                          name: str = "feature_dim/max_features") -> None:
    """Raise `UserError` unless the vocabulary has exactly `requested` words.

    Models whose `feature_dim` must equal the vocabulary size call this after fitting, so a
    too-small vocabulary fails with the setting to change instead of a shape mismatch later.
    """
    if stats.size == requested:
        return
    if stats.size > requested:
        raise UserError(f"vocabulary has {stats.size} words but {name} asks for {requested}: "
                        f"set max_features={requested}")
    raise UserError(f"vocabulary has {stats.size} words but {name} asks for {requested}: "
                    f"{explain_size(stats, requested)}")


def select_vocabulary(counts: TermCounts, *, min_df: int | float = 1, max_df: int | float = 1.0,
                      max_features: int | None = None) -> VocabularySelection:
    """Select the vocabulary from term counts by document frequency and `max_features`.

    Raises `UserError` when `max_df` keeps fewer documents than `min_df` requires, or when
    no term remains. The message names the setting to change.
    """
    check_df("min_df", min_df)
    check_df("max_df", max_df)
    check_max_features(max_features)
    n_documents = counts.n_documents
    min_count = document_count(min_df, n_documents)
    max_count = document_count(max_df, n_documents)
    if max_count < min_count:
        raise UserError(
            f"max_df={max_df} keeps words in at most {max_count:g} documents but min_df={min_df} "
            f"requires at least {min_count:g}; raise max_df or lower min_df")

    # Document-frequency filter, compared as floats like scikit-learn.
    document_frequency = counts.document_frequency()
    above_min = document_frequency >= min_count
    below_max = document_frequency <= max_count
    kept_columns = np.flatnonzero(above_min & below_max)

    # Keep the max_features most frequent terms. Ties go to the smaller term.
    if max_features is not None and len(kept_columns) > max_features:
        terms = np.array(counts.terms, dtype=object)[kept_columns]
        order = np.lexsort((terms.astype(str), -counts.corpus_frequency()[kept_columns]))
        kept_columns = kept_columns[order[:max_features]]

    words = [counts.terms[column] for column in kept_columns]
    order = sorted(range(len(words)), key=words.__getitem__)
    stats = VocabularyStats(
        n_documents=n_documents, n_terms=len(counts.terms),
        n_min_df_kept=int(above_min.sum()), n_max_df_kept=int(below_max.sum()),
        n_df_kept=int((above_min & below_max).sum()), size=len(words),
        min_df=min_df, max_df=max_df, max_features=max_features)
    if not words:
        raise UserError(f"vocabulary is empty: {explain_size(stats, 1)}")
    return VocabularySelection([words[i] for i in order], kept_columns[order].astype(np.int64),
                               stats)


def build_vocabulary(documents: Iterable[Sequence[str]], *, min_df: int | float = 1,
                     max_df: int | float = 1.0, max_features: int | None = None
                     ) -> VocabularySelection:
    """Count the terms of tokenized documents and select the vocabulary from them."""
    return select_vocabulary(count_terms(documents), min_df=min_df, max_df=max_df,
                             max_features=max_features)


def validate_words(words: Sequence[str]) -> list[str]:
    """Return `words` as a list, or raise `UserError` on an empty word, whitespace or a duplicate.

    Whitespace is every character `str.isspace` accepts (the set `\\s` matches in a str
    pattern), so no word can split a line of vocab.txt: `splitlines` breaks on a subset.
    """
    positions: dict[str, int] = {}
    for position, word in enumerate(words):
        if not isinstance(word, str) or not word:
            raise UserError(f"vocabulary word {position} is {word!r}; words must be non-empty str")
        if _WHITESPACE.search(word):
            raise UserError(f"vocabulary word {position} is {word!r}, which contains whitespace; "
                            "vocab.txt holds one word per line")
        if word in positions:
            raise UserError(f"vocabulary word {word!r} appears twice, at {positions[word]} "
                            f"and {position}")
        positions[word] = position
    return list(words)


def format_vocab_txt(words: Sequence[str]) -> str:
    """Return the text of a vocab.txt file: one word per line, newline-terminated."""
    words = validate_words(words)
    return "".join(f"{word}\n" for word in words)


def parse_vocab_txt(text: str, *, path: str | None = None,
                    feature_dim: int | None = None) -> list[str]:
    """Parse vocab.txt text, accepting a UTF-8 byte-order mark and Windows line ends.

    Raises `DataError` naming the line of a blank, whitespace-containing or repeated word,
    and when `feature_dim` is given and differs from the number of words.
    """
    lines = text.removeprefix("\ufeff").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    words: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        word = line.removesuffix("\r")
        if not word or _WHITESPACE.search(word):
            raise DataError(f"vocab.txt line {number} is {word!r}; each line must hold one word "
                            "without whitespace", path=path, line=number)
        if word in first_line:
            raise DataError(f"vocab.txt repeats {word!r} (first on line {first_line[word]})",
                            path=path, line=number)
        first_line[word] = number
        words.append(word)
    if feature_dim is not None and len(words) != feature_dim:
        raise DataError(f"vocab.txt has {len(words)} words but feature_dim is {feature_dim}; "
                        "write the vocabulary the features were made with", path=path)
    return words


def write_vocab_txt(path: str | os.PathLike, words: Sequence[str]) -> None:
    """Write vocab.txt atomically (UTF-8, one word per line)."""
    atomic_write_text(path, format_vocab_txt(words))


def read_vocab_txt(path: str | os.PathLike, feature_dim: int | None = None) -> list[str]:
    """Read vocab.txt, or raise `DataError` when it is not UTF-8 or not one word per line."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"vocab.txt is not UTF-8 (byte {error.start}); save it as UTF-8",
                        path=str(path)) from None
    return parse_vocab_txt(text, path=str(path), feature_dim=feature_dim)
