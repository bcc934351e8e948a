"""Vocabulary selection (min_df, max_df, max_features), size checks and vocab.txt files."""

from __future__ import annotations

import numpy as np
import pytest

from review_nlp.data.vocabulary import (
    build_vocabulary,
    check_vocabulary_size,
    count_known_terms,
    count_terms,
    format_vocab_txt,
    parse_vocab_txt,
    read_vocab_txt,
    validate_words,
    write_vocab_txt,
)
from review_nlp.errors import DataError, InvalidHyperparameter, UserError

DOCUMENTS = [
    ["good", "phone", "good"],
    ["bad", "phone"],
    ["good", "battery"],
    ["phone", "case", "case", "case"],
    [],
]


def test_count_terms_matrix():
    counts = count_terms(DOCUMENTS)
    assert counts.terms == ["good", "phone", "bad", "battery", "case"]
    assert counts.matrix.toarray().tolist() == [
        [2, 1, 0, 0, 0],
        [0, 1, 1, 0, 0],
        [1, 0, 0, 1, 0],
        [0, 1, 0, 0, 3],
        [0, 0, 0, 0, 0],
    ]
    assert counts.document_frequency().tolist() == [2, 3, 1, 1, 1]
    assert counts.corpus_frequency().tolist() == [3, 3, 1, 1, 3]


def test_count_known_terms_ignores_unknown():
    matrix = count_known_terms([["good", "new", "good"], ["unseen"]], {"bad": 0, "good": 1})
    assert matrix.shape == (2, 2)
    assert matrix.toarray().tolist() == [[0, 2], [0, 0]]


def test_words_sorted_like_sklearn():
    selection = build_vocabulary(DOCUMENTS)
    assert selection.words == ["bad", "battery", "case", "good", "phone"]
    assert [count_terms(DOCUMENTS).terms[column] for column in selection.columns] == \
        selection.words


@pytest.mark.parametrize("min_df, max_df, words", [
    (2, 1.0, ["good", "phone"]),
    (0.4, 1.0, ["good", "phone"]),     # 0.4 * 5 = 2 documents
    (1, 2, ["bad", "battery", "case", "good"]),
    (1, 0.5, ["bad", "battery", "case", "good"]),   # at most 2.5 documents
    (1.0, 1.0, []),
])
def test_document_frequency_limits(min_df, max_df, words):
    if not words:
        with pytest.raises(UserError, match="vocabulary is empty"):
            build_vocabulary(DOCUMENTS, min_df=min_df, max_df=max_df)
        return
    assert build_vocabulary(DOCUMENTS, min_df=min_df, max_df=max_df).words == words


def test_document_frequency_limits_match_sklearn():
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    rng = np.random.default_rng(0)
    documents = [[f"w{value}" for value in rng.zipf(1.6, size=30) if value < 400]
                 for _ in range(200)]
    for min_df, max_df in ((1, 1.0), (3, 0.5), (0.02, 0.3), (5, 40)):
        vectorizer = sklearn_text.CountVectorizer(analyzer=lambda terms: terms,
                                                  min_df=min_df, max_df=max_df)
        vectorizer.fit(documents)
        ours = build_vocabulary(documents, min_df=min_df, max_df=max_df).words
        assert ours == sorted(vectorizer.vocabulary_)


def test_max_features_keeps_most_frequent():
    # Corpus frequency: good 3, phone 3, case 3, bad 1, battery 1.
    assert build_vocabulary(DOCUMENTS, max_features=3).words == ["case", "good", "phone"]


def test_max_features_breaks_ties_by_word():
    # "bad" and "battery" tie at 1, and the smaller word wins.
    assert build_vocabulary(DOCUMENTS, max_features=4).words == [
        "bad", "case", "good", "phone"]


def test_max_features_ignores_input_order():
    reordered = [list(reversed(document)) for document in reversed(DOCUMENTS)]
    assert build_vocabulary(reordered, max_features=4).words == \
        build_vocabulary(DOCUMENTS, max_features=4).words


def test_stats_count_each_filter():
    stats = build_vocabulary(DOCUMENTS, min_df=2, max_df=2, max_features=10).stats
    assert (stats.n_documents, stats.n_terms) == (5, 5)
    assert (stats.n_min_df_kept, stats.n_max_df_kept, stats.n_df_kept) == (2, 4, 1)
    assert stats.size == 1


def test_max_df_below_min_df_raises():
    with pytest.raises(UserError, match="raise max_df or lower min_df"):
        build_vocabulary(DOCUMENTS, min_df=3, max_df=2)


@pytest.mark.parametrize("name, value", [
    ("min_df", 0), ("min_df", 1.5), ("min_df", 0.0), ("min_df", True), ("min_df", "2"),
    ("max_df", -1), ("max_df", 1.01),
    ("max_features", 0), ("max_features", 2.5),
])
def test_invalid_limits_raise(name, value):
    with pytest.raises(InvalidHyperparameter) as error:
        build_vocabulary(DOCUMENTS, **{name: value})
    assert error.value.name == name


def _corpus_with_six_common_words():
    # Six words in every document and 2,500 words in one document each.
    common = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    return [common + [f"rare{i}_{j}" for j in range(25)] for i in range(100)]


def test_size_check_names_min_df():
    stats = build_vocabulary(_corpus_with_six_common_words(), min_df=0.2,
                             max_features=2000).stats
    with pytest.raises(UserError) as error:
        check_vocabulary_size(stats, 2000)
    message = str(error.value)
    assert message.startswith(
        "vocabulary has 6 words but feature_dim/max_features asks for 2000: min_df=0.2 keeps "
        "only words in at least 20% of documents (20 of 100)")
    assert message.endswith("lower min_df")


def test_size_check_names_max_df():
    documents = [["common", f"word{i}"] for i in range(50)]
    stats = build_vocabulary(documents, min_df=1, max_df=0.5).stats
    with pytest.raises(UserError, match=r"max_df=0.5 drops words in more than 50% .*raise max_df"):
        check_vocabulary_size(stats, 51, name="feature_dim")


def test_size_check_names_small_corpus():
    stats = build_vocabulary(DOCUMENTS).stats
    with pytest.raises(UserError, match="contain only 5 distinct terms"):
        check_vocabulary_size(stats, 2000)


def test_size_check_names_max_features():
    stats = build_vocabulary(DOCUMENTS, max_features=2).stats
    with pytest.raises(UserError, match="max_features=2 limits it"):
        check_vocabulary_size(stats, 3)
    with pytest.raises(UserError, match="set max_features=1"):
        check_vocabulary_size(stats, 1)
    check_vocabulary_size(stats, 2)


@pytest.mark.parametrize("word", ["", "two words", "tab\tword", "line\nbreak", "sep\u2028arator",
                                  "form\x0cfeed", "nbsp\xa0word"])
def test_validate_words_rejects_whitespace(word):
    with pytest.raises(UserError):
        validate_words(["ok", word])


def test_validate_words_rejects_duplicate():
    with pytest.raises(UserError, match="'good' appears twice, at 0 and 2"):
        validate_words(["good", "bad", "good"])


def test_vocab_txt_one_word_per_line(tmp_path):
    words = ["café", "don't", "not_good", "日本"]
    path = tmp_path / "vocab.txt"
    write_vocab_txt(path, words)
    raw = path.read_bytes()
    assert raw.decode("utf-8") == "café\ndon't\nnot_good\n日本\n"
    assert len(raw.decode("utf-8").splitlines()) == len(words)
    assert read_vocab_txt(path, feature_dim=4) == words


def test_vocab_txt_accepts_bom_and_crlf():
    assert parse_vocab_txt("\ufeffgood\r\nbad\r\n") == ["good", "bad"]


def test_vocab_txt_without_final_newline():
    assert parse_vocab_txt("good\nbad") == ["good", "bad"]


def test_vocab_txt_size_mismatch_raises(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text(format_vocab_txt(["good", "bad"]), encoding="utf-8")
    with pytest.raises(DataError, match="has 2 words but feature_dim is 3"):
        read_vocab_txt(path, feature_dim=3)


@pytest.mark.parametrize("text, line", [
    ("good\n\nbad\n", 2),
    ("good\nvery bad\n", 2),
    ("good\nbad\ngood\n", 3),
])
def test_vocab_txt_bad_line_named(text, line):
    with pytest.raises(DataError) as error:
        parse_vocab_txt(text, path="vocab.txt")
    assert error.value.line == line
    assert "vocab.txt" in str(error.value)


def test_vocab_txt_not_utf8_raises(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_vocab_txt(path)
