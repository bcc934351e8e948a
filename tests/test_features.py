"""Featurizer: counts, TF-IDF (parity with scikit-learn), n-grams, empty rows, serialization."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import scipy.sparse as sp

from review_nlp.data.features import Featurizer, FeaturizerConfig, word_ngrams
from review_nlp.data.text import TextConfig
from review_nlp.errors import InvalidHyperparameter, UserError

TEXTS = [
    "Great phone, great battery.",
    "The battery died. Bad phone!",
    "Great case<br />for the phone",
    "the and of",                      # stop words only: an empty row
    "Bad battery, bad case, not great",
]


def _read_reviews(reviews_dir, limit: int) -> list[str]:
    with open(reviews_dir / "marc_en_train.csv", encoding="utf-8", newline="") as handle:
        return [row[1] for _, row in zip(range(limit), csv.reader(handle))]


def test_counts_matrix_by_hand():
    featurizer = Featurizer(FeaturizerConfig(min_df=1, max_df=1.0))
    features = featurizer.fit_transform(TEXTS)
    assert featurizer.vocabulary == ["bad", "battery", "case", "die", "great", "phone"]
    assert sp.isspmatrix_csr(features)
    assert features.dtype == np.float32
    assert features.toarray().tolist() == [
        [0, 1, 0, 0, 2, 1],
        [1, 1, 0, 1, 0, 1],
        [0, 0, 1, 0, 1, 1],
        [0, 0, 0, 0, 0, 0],
        [2, 1, 1, 0, 1, 0],
    ]


def test_transform_uses_fitted_columns():
    featurizer = Featurizer(FeaturizerConfig(min_df=1, max_df=1.0))
    fitted = featurizer.fit_transform(TEXTS)
    assert (featurizer.transform(TEXTS) != fitted).nnz == 0
    new = featurizer.transform(["great new tablet, great"])
    assert new.shape == (1, 6)
    assert new.toarray().tolist() == [[0, 0, 0, 0, 2, 0]]


def test_empty_rows_mask_and_drop():
    featurizer = Featurizer(FeaturizerConfig(min_df=1, max_df=1.0))
    features = featurizer.fit_transform(TEXTS)
    labels = np.arange(len(TEXTS))
    empty = Featurizer.empty_rows(features)
    assert empty.tolist() == [False, False, False, True, False]
    kept_features, kept_labels = features[~empty], labels[~empty]
    assert kept_features.shape[0] == 4
    assert kept_labels.tolist() == [0, 1, 2, 4]
    assert Featurizer.empty_rows(features.toarray()).tolist() == empty.tolist()


def test_counts_match_sklearn_count_vectorizer(reviews_dir):
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    texts = _read_reviews(reviews_dir, 600)
    featurizer = Featurizer(FeaturizerConfig(min_df=2, max_df=0.95, max_features=None))
    ours = featurizer.fit_transform(texts)
    vectorizer = sklearn_text.CountVectorizer(
        tokenizer=featurizer.preprocessor, lowercase=False, token_pattern=None,
        min_df=2, max_df=0.95)
    theirs = vectorizer.fit_transform(texts)
    assert featurizer.vocabulary == vectorizer.get_feature_names_out().tolist()
    assert (ours != theirs.astype(np.float32)).nnz == 0


@pytest.mark.parametrize("settings", [
    {},
    {"sublinear_tf": True},
    {"smooth_idf": False, "norm": "l1"},
    {"norm": None},
])
def test_tfidf_matches_sklearn(reviews_dir, settings):
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    texts = _read_reviews(reviews_dir, 400)
    featurizer = Featurizer(FeaturizerConfig(kind="tfidf", max_features=500, **settings))
    ours = featurizer.fit_transform(texts)
    vectorizer = sklearn_text.TfidfVectorizer(
        vocabulary=featurizer.vocabulary, tokenizer=featurizer.preprocessor, lowercase=False,
        token_pattern=None, dtype=np.float64, **settings)
    theirs = vectorizer.fit_transform(texts)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(featurizer.idf_, vectorizer.idf_, rtol=1e-12)
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(featurizer.transform(texts[:50]).toarray(),
                               vectorizer.transform(texts[:50]).toarray(), rtol=1e-6, atol=1e-7)


def test_tfidf_rows_have_unit_norm():
    featurizer = Featurizer(FeaturizerConfig(kind="tfidf", min_df=1, max_df=1.0))
    features = featurizer.fit_transform(TEXTS)
    norms = np.sqrt(features.multiply(features).sum(axis=1)).A1
    np.testing.assert_allclose(norms, [1, 1, 1, 0, 1], rtol=1e-6)


def test_word_ngrams():
    tokens = ["not", "good", "at", "all"]
    assert word_ngrams(tokens, (1, 1)) == tokens
    assert word_ngrams(tokens, (1, 2)) == tokens + ["not_good", "good_at", "at_all"]
    assert word_ngrams(tokens, (2, 3)) == ["not_good", "good_at", "at_all", "not_good_at",
                                           "good_at_all"]
    assert word_ngrams(["one"], (2, 2)) == []


def test_ngrams_keep_negations():
    featurizer = Featurizer(FeaturizerConfig(kind="ngrams", min_df=1, max_df=1.0))
    featurizer.fit_transform(TEXTS)
    vocabulary = featurizer.vocabulary
    assert "not" in vocabulary
    assert "not_great" in vocabulary
    assert "the_battery" in vocabulary
    assert all(" " not in term for term in vocabulary)


def test_ngrams_max_features_limit():
    config = FeaturizerConfig(kind="ngrams", min_df=1, max_df=1.0, max_features=5)
    featurizer = Featurizer(config)
    assert featurizer.fit_transform(TEXTS).shape == (len(TEXTS), 5)


def test_kind_defaults():
    counts = FeaturizerConfig()
    ngrams = FeaturizerConfig(kind="ngrams")
    assert (counts.max_features, counts.ngram_range) == (2000, (1, 1))
    assert counts.text.remove_stop_words
    assert (ngrams.max_features, ngrams.ngram_range) == (100_000, (1, 2))
    assert not ngrams.text.remove_stop_words
    assert FeaturizerConfig(max_features=None).max_features is None


@pytest.mark.parametrize("settings, name", [
    ({"kind": "bow"}, "kind"),
    ({"ngram_range": (2, 1)}, "ngram_range"),
    ({"ngram_range": (0, 1)}, "ngram_range"),
    ({"norm": "max"}, "norm"),
    ({"min_df": 0}, "min_df"),
    ({"max_df": 2.0}, "max_df"),
    ({"max_features": 0}, "max_features"),
])
def test_config_rejects_invalid_setting(settings, name):
    with pytest.raises(InvalidHyperparameter) as error:
        FeaturizerConfig(**settings)
    assert error.value.name == name


def test_unfitted_featurizer_raises():
    with pytest.raises(RuntimeError, match="not fitted"):
        Featurizer().transform(["text"])


def test_fit_with_only_stop_words_raises():
    with pytest.raises(UserError, match="vocabulary is empty"):
        Featurizer(FeaturizerConfig(min_df=1)).fit_transform(["the and of", "it is"])


@pytest.mark.parametrize("kind", ["counts", "tfidf", "ngrams"])
def test_dict_roundtrip_through_json(kind):
    config = FeaturizerConfig(kind=kind, min_df=1, max_df=1.0,
                              text=TextConfig(keep_words=("not",)))
    featurizer = Featurizer(config)
    fitted = featurizer.fit_transform(TEXTS)
    description = json.loads(json.dumps(featurizer.to_dict()))
    assert description["config"]["text"]["keep_words"] == ["not"]
    assert ("idf" in description) == (kind == "tfidf")

    restored = Featurizer.from_dict(description, featurizer.vocabulary)
    assert restored.config == featurizer.config
    assert restored.vocabulary == featurizer.vocabulary
    np.testing.assert_array_equal(restored.transform(TEXTS).toarray(), fitted.toarray())


def test_from_dict_rejects_wrong_vocabulary():
    featurizer = Featurizer(FeaturizerConfig(min_df=1, max_df=1.0))
    featurizer.fit(TEXTS)
    with pytest.raises(UserError, match="vocabulary has 2 words but the featurizer was fitted"):
        Featurizer.from_dict(featurizer.to_dict(), ["bad", "good"])


def test_from_dict_rejects_other_format_version():
    featurizer = Featurizer(FeaturizerConfig(min_df=1, max_df=1.0))
    featurizer.fit(TEXTS)
    description = {**featurizer.to_dict(), "format_version": 99}
    with pytest.raises(UserError, match="format_version=99"):
        Featurizer.from_dict(description, featurizer.vocabulary)


def test_from_dict_rejects_short_idf():
    featurizer = Featurizer(FeaturizerConfig(kind="tfidf", min_df=1, max_df=1.0))
    featurizer.fit(TEXTS)
    description = {**featurizer.to_dict(), "idf": [1.0]}
    with pytest.raises(UserError, match="idf has 1 values"):
        Featurizer.from_dict(description, featurizer.vocabulary)


def test_require_vocabulary_size_names_min_df(reviews_dir):
    # The workshop's failure: a proportional min_df leaves a handful of words for
    # feature_dim=2000. Short reviews reach that already at 10%.
    texts = _read_reviews(reviews_dir, 2000)
    featurizer = Featurizer(FeaturizerConfig(min_df=0.1))
    featurizer.fit(texts)
    assert len(featurizer.vocabulary) < 20
    with pytest.raises(UserError) as error:
        featurizer.require_vocabulary_size(2000)
    message = str(error.value)
    assert message.startswith(f"vocabulary has {len(featurizer.vocabulary)} words but "
                              "feature_dim asks for 2000: min_df=0.1 keeps only words in at "
                              "least 10% of documents (200 of 2000)")
    assert message.endswith("lower min_df")


def test_require_vocabulary_size_after_from_dict():
    featurizer = Featurizer(FeaturizerConfig(min_df=1, max_df=1.0))
    featurizer.fit(TEXTS)
    restored = Featurizer.from_dict(featurizer.to_dict(), featurizer.vocabulary)
    restored.require_vocabulary_size(6)
    with pytest.raises(UserError, match="vocabulary has 6 words but feature_dim asks for 7"):
        restored.require_vocabulary_size(7)


def test_empty_rows_ignores_stored_zeros():
    features = sp.csr_matrix((np.array([0.0, 1.0], np.float32), np.array([0, 1]),
                              np.array([0, 1, 2])), shape=(2, 2))
    assert Featurizer.empty_rows(features).tolist() == [True, False]
    assert features.nnz == 2
