"""Text preprocessing: HTML, case, contractions, stop words, lemmas, stems, token pattern."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from review_nlp.data.text import (
    TextConfig,
    TextPreprocessor,
    lemma_lookup_table,
    split_contraction,
    stop_word_list,
    strip_html,
)
from review_nlp.errors import InvalidHyperparameter, UserError

PLAIN = TextConfig(remove_stop_words=False, lemmatize=False)


def test_strip_html_removes_tags_and_entities():
    text = 'Great<br />product &amp; fast<br/>ship. <a href="x">link</a> &#34;ok&#34; &quot;'
    assert strip_html(text) == 'Great product & fast ship.  link  "ok" "'


def test_strip_html_keeps_less_than_sign():
    assert strip_html("a < b and <3") == "a < b and <3"


def test_html_and_case_removed_first():
    terms = TextPreprocessor(PLAIN)("LOVED it!<br /><br />Works&nbsp;GREAT")
    assert terms == ["loved", "it", "works", "great"]


def test_lowercase_off_keeps_case():
    config = TextConfig(lowercase=False, remove_stop_words=False, lemmatize=False)
    assert TextPreprocessor(config)("Great Phone") == ["Great", "Phone"]


def test_strip_html_off_keeps_tag_words():
    config = TextConfig(strip_html=False, remove_stop_words=False, lemmatize=False)
    assert TextPreprocessor(config)("good<br />fit") == ["good", "br", "fit"]


@pytest.mark.parametrize("token, pieces", [
    ("didn't", ["did", "not"]),
    ("can't", ["can", "not"]),
    ("won't", ["will", "not"]),
    ("wouldn't've", ["would", "not", "have"]),
    ("i'm", ["i", "am"]),
    ("it's", ["it"]),
    ("you'll", ["you", "will"]),
    ("o'clock", ["o'clock"]),
    ("DON'T", ["DO", "not"]),
])
def test_split_contraction(token, pieces):
    assert split_contraction(token) == pieces


def test_curly_apostrophe_is_a_contraction():
    assert TextPreprocessor(PLAIN)("didn\u2019t work") == ["did", "not", "work"]


def test_contractions_kept_whole_when_off():
    config = TextConfig(remove_stop_words=False, lemmatize=False, split_contractions=False)
    assert TextPreprocessor(config)("didn't work") == ["didn't", "work"]


def test_default_pattern_drops_digits_and_underscores():
    assert TextPreprocessor(PLAIN)("2nd item_3 costs 10 dollars") == [
        "nd", "item", "costs", "dollars"]


def test_min_token_length():
    config = TextConfig(remove_stop_words=False, lemmatize=False, min_token_length=4)
    assert TextPreprocessor(config)("a bad phone overall") == ["phone", "overall"]


def test_lemmas_come_from_spacy_lookup_table():
    table = lemma_lookup_table()
    assert table["cats"] == "cat"
    assert table["running"] == "run"
    config = TextConfig(remove_stop_words=False)
    assert TextPreprocessor(config)("cats running bought") == ["cat", "run", "buy"]


def test_stop_words_checked_on_lemma():
    # "were" is a stop word and so is its lemma "be". "better" is not, but its lemma "well" is.
    assert TextPreprocessor()("the cats were better") == ["cat"]


def test_stop_word_lists_differ():
    spacy_words = stop_word_list("spacy")
    sklearn_words = stop_word_list("sklearn")
    assert "the" in spacy_words
    assert "the" in sklearn_words
    assert "n't" in spacy_words
    assert "n't" not in sklearn_words
    assert len(spacy_words) == 326
    assert len(sklearn_words) == 318


def test_keep_and_extra_stop_words():
    config = TextConfig(lemmatize=False, keep_words=("not", "no"), extra_stop_words=("Phone",))
    assert TextPreprocessor(config)("this phone is not good, no") == ["not", "good", "no"]


def test_stop_words_kept_when_removal_off():
    assert TextPreprocessor(PLAIN)("it is not good") == ["it", "is", "not", "good"]


def test_stem_after_lemma():
    pytest.importorskip("snowballstemmer")
    config = TextConfig(remove_stop_words=False, lemmatize=False, stem=True)
    assert TextPreprocessor(config)("running generously studies") == ["run", "generous", "studi"]


def test_stem_without_package_raises_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "snowballstemmer", None)
    with pytest.raises(UserError, match="pip install snowballstemmer"):
        TextPreprocessor(TextConfig(stem=True))


def test_none_text_gives_no_terms():
    assert TextPreprocessor()(None) == []


def test_non_string_text_raises_type_error():
    with pytest.raises(TypeError, match="float"):
        TextPreprocessor()(float("nan"))


def test_cached_result_equals_first_result():
    preprocessor = TextPreprocessor()
    text = "Cats LOVE it. Cats love it! Didn't they?"
    first = preprocessor(text)
    assert preprocessor(text) == first
    assert first == ["cat", "love", "cat", "love"]


def test_tokenize_many_maps_each_text():
    texts = ["good phone", "", None, "bad battery"]
    assert list(TextPreprocessor(PLAIN).tokenize_many(texts)) == [
        ["good", "phone"], [], [], ["bad", "battery"]]


def test_token_with_whitespace_is_split():
    config = TextConfig(remove_stop_words=False, lemmatize=False, token_pattern=r"[a-z ]+")
    assert TextPreprocessor(config).analyze_token("good phone") == ("good", "phone")


@pytest.mark.parametrize("settings, name", [
    ({"stop_words": "german"}, "stop_words"),
    ({"min_token_length": 0}, "min_token_length"),
    ({"min_token_length": True}, "min_token_length"),
    ({"token_pattern": "[a-"}, "token_pattern"),
    ({"token_pattern": "([a-z]+)"}, "token_pattern"),
])
def test_config_rejects_invalid_setting(settings, name):
    with pytest.raises(InvalidHyperparameter) as error:
        TextConfig(**settings)
    assert error.value.name == name


def test_config_dict_roundtrip_through_json():
    config = TextConfig(stem=True, keep_words=("not",), extra_stop_words=("amazon",))
    restored = TextConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config


def test_config_from_dict_rejects_unknown_key():
    with pytest.raises(UserError, match="stopwords"):
        TextConfig.from_dict({"stopwords": True})


def _spacy_terms(nlp, text: str) -> list[str]:
    # What users write today: a blank English pipeline with the lookup lemmatizer,
    # keeping lemmas of alphabetic non-stop tokens.
    return [token.lemma_ for token in nlp(text.lower()) if token.is_alpha and not token.is_stop]


def test_terms_match_spacy_pipeline_on_reviews(reviews_dir):
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
    nlp.initialize()
    with open(reviews_dir / "marc_en_train.csv", encoding="utf-8", newline="") as handle:
        texts = [row[1] for _, row in zip(range(300), csv.reader(handle))]

    preprocessor = TextPreprocessor(TextConfig(min_token_length=1))
    ours = {term for text in texts for term in preprocessor(text)}
    theirs = {term for text in texts for term in _spacy_terms(nlp, text)}
    overlap = len(ours & theirs) / len(ours | theirs)
    assert overlap > 0.9
