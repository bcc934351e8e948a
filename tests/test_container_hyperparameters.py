"""Hyperparameter strings in every form the SageMaker SDKs write, parsed into config dataclasses."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import pytest

from review_nlp.container.hyperparameters import (
    build_config, choose_algorithm, parse_value, split_list, unquote)
from review_nlp.errors import InvalidHyperparameter, UserError
from review_nlp.models.kmeans import KMeansConfig
from review_nlp.models.ntm import NTMConfig


@dataclass
class ExampleConfig:
    feature_dim: int
    rate: float = 0.1
    flag: bool = False
    name: str = "adam"
    trials: int | str = "auto"
    layers: list[int] | str = "auto"
    metrics: list[str] = field(default_factory=lambda: ["msd"])

    def __post_init__(self):
        if self.feature_dim < 1:
            raise InvalidHyperparameter("feature_dim", self.feature_dim, "must be >= 1")


@pytest.mark.parametrize("text, expected", [
    ("20", 20), ('"20"', 20), ("20.0", 20), ("1e3", 1000), (" 7 ", 7),
])
def test_int_forms(text, expected):
    assert parse_value("n", text, int) == expected


@pytest.mark.parametrize("text", ["abc", "2.5", "Inf", "[1]"])
def test_int_rejects_non_integers(text):
    with pytest.raises(InvalidHyperparameter, match="n=.* must be an integer"):
        parse_value("n", text, int)


@pytest.mark.parametrize("text, expected", [
    ("True", True), ("true", True), ("TRUE", True), ('"true"', True), ("1", True),
    ("False", False), ("false", False), ("0", False),
])
def test_bool_forms(text, expected):
    assert parse_value("flag", text, bool) is expected


def test_bool_rejects_other_words():
    with pytest.raises(InvalidHyperparameter, match="must be true or false"):
        parse_value("flag", "maybe", bool)


@pytest.mark.parametrize("text, expected", [
    ("Inf", math.inf), ("inf", math.inf), ("Infinity", math.inf), ("-Inf", -math.inf),
    ("0.001", 0.001), ("1e-3", 0.001), ('"0.5"', 0.5), ("3", 3.0),
])
def test_float_forms(text, expected):
    assert parse_value("rate", text, float) == expected


@pytest.mark.parametrize("text", ["NaN", "fast"])
def test_float_rejects_nan_and_words(text):
    with pytest.raises(InvalidHyperparameter, match="rate="):
        parse_value("rate", text, float)


@pytest.mark.parametrize("text, expected", [
    ('"adam"', "adam"), ("adam", "adam"), ('"\\"adam\\""', '"adam"'),
])
def test_json_quoted_strings_are_unquoted(text, expected):
    assert unquote(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("auto", "auto"), ("AUTO", "auto"), ('"auto"', "auto"), ("10", 10), ('"10"', 10),
])
def test_int_or_auto(text, expected):
    assert parse_value("trials", text, int | str) == expected


def test_int_or_auto_names_both_choices():
    with pytest.raises(InvalidHyperparameter, match="must be an integer or 'auto'"):
        parse_value("trials", "many", int | str)


@pytest.mark.parametrize("text, expected", [
    ("100,50", [100, 50]), ("100, 50", [100, 50]), ("[100, 50]", [100, 50]),
    ("[100,50]", [100, 50]), ('"[100, 50]"', [100, 50]), ("100", [100]), ("auto", "auto"),
])
def test_int_list_or_auto(text, expected):
    assert parse_value("layers", text, list[int] | str) == expected


def test_int_list_rejects_words():
    with pytest.raises(InvalidHyperparameter, match="must be a list of integers"):
        parse_value("layers", "100,many", list[int] | str)


@pytest.mark.parametrize("text, expected", [
    ('["msd","ssd"]', ["msd", "ssd"]), ('["msd", "ssd"]', ["msd", "ssd"]),
    ("['msd', 'ssd']", ["msd", "ssd"]), ("msd,ssd", ["msd", "ssd"]), ("msd", ["msd"]),
    ('"[\\"msd\\"]"', ["msd"]), ("[]", []),
])
def test_string_list_forms(text, expected):
    assert parse_value("metrics", text, list[str]) == expected


def test_split_list_rejects_unclosed_bracket():
    with pytest.raises(InvalidHyperparameter, match="must be a list"):
        split_list("layers", "[100, 50")


def test_build_config_from_sdk_strings(caplog):
    raw = {"feature_dim": "30", "rate": "Inf", "flag": "True", "name": '"sgd"',
           "trials": "auto", "layers": "[100, 50]", "metrics": '["msd","ssd"]',
           "_tuning_objective_metric": "validation:total_loss", "_kvstore": "auto",
           "sagemaker_program": "train.py", "algorithm": "ntm"}
    with caplog.at_level(logging.INFO):
        config = build_config(ExampleConfig, raw, "example")
    assert config == ExampleConfig(feature_dim=30, rate=math.inf, flag=True, name="sgd",
                                   trials="auto", layers=[100, 50], metrics=["msd", "ssd"])
    ignored = [r.getMessage() for r in caplog.records if "Ignoring SageMaker" in r.getMessage()]
    assert len(ignored) == 3


def test_unknown_name_is_rejected_by_name():
    with pytest.raises(InvalidHyperparameter) as raised:
        build_config(ExampleConfig, {"feature_dim": "3", "num_topicz": "5"}, "example")
    assert raised.value.name == "num_topicz"
    assert "is not a hyperparameter of algorithm example" in str(raised.value)
    assert "feature_dim" in str(raised.value)


def test_missing_required_name_is_reported():
    with pytest.raises(InvalidHyperparameter, match="feature_dim=None is required"):
        build_config(ExampleConfig, {"rate": "0.5"}, "example")


def test_post_init_range_check_reaches_caller():
    with pytest.raises(InvalidHyperparameter, match="feature_dim=0 must be >= 1"):
        build_config(ExampleConfig, {"feature_dim": "0"}, "example")


def test_ntm_config_from_built_in_strings():
    raw = {"feature_dim": "2000", "num_topics": "20", "batch_norm": "False",
           "clip_gradient": "Inf", "encoder_layers": "auto", "epochs": "50",
           "encoder_layers_activation": "sigmoid", "optimizer": '"adadelta"',
           "learning_rate": "0.01", "mini_batch_size": "256", "num_patience_epochs": "3"}
    config = build_config(NTMConfig, raw, "ntm")
    assert config.num_topics == 20
    assert config.clip_gradient == math.inf
    assert config.encoder_layers == "auto"
    assert config.batch_norm is False


def test_ntm_encoder_layers_comma_and_json_agree():
    base = {"feature_dim": "100", "num_topics": "5"}
    comma = build_config(NTMConfig, {**base, "encoder_layers": "100,50"}, "ntm")
    listed = build_config(NTMConfig, {**base, "encoder_layers": "[100, 50]"}, "ntm")
    assert comma.encoder_layers == listed.encoder_layers == [100, 50]


def test_ntm_out_of_range_names_parameter():
    with pytest.raises(InvalidHyperparameter) as raised:
        build_config(NTMConfig, {"feature_dim": "100", "num_topics": "1"}, "ntm")
    assert raised.value.name == "num_topics"


def test_kmeans_sdk_hyperparameters():
    # What sagemaker.KMeans(k=10, eval_metrics=["msd", "ssd"]).fit(record_set) sends.
    raw = {"feature_dim": "784", "k": "10", "force_dense": "True", "mini_batch_size": "500",
           "eval_metrics": '["msd", "ssd"]', "extra_center_factor": "auto",
           "local_lloyd_num_trials": "3"}
    config = build_config(KMeansConfig, raw, "kmeans")
    assert config.k == 10
    assert config.eval_metrics == ["msd", "ssd"]
    assert config.local_lloyd_num_trials == 3
    assert config.extra_center_factor == "auto"


@pytest.mark.parametrize("raw, expected", [
    ({"algorithm": "ntm"}, "ntm"), ({"algorithm": '"kmeans"'}, "kmeans"),
    ({"algorithm": "Rating"}, "rating"),
    ({"feature_dim": "10", "num_topics": "5"}, "ntm"),
    ({"feature_dim": "10", "k": "5", "force_dense": "True"}, "kmeans"),
    ({"feature_dim": "10", "embedding_dim": "20"}, "rating"),
])
def test_choose_algorithm(raw, expected):
    assert choose_algorithm(raw) == expected


def test_choose_algorithm_rejects_unknown_name():
    with pytest.raises(InvalidHyperparameter, match="algorithm='lda' must be one of"):
        choose_algorithm({"algorithm": "lda"})


@pytest.mark.parametrize("raw", [
    {"feature_dim": "10", "num_topics": "5", "k": "3"},
    {"feature_dim": "10", "topics": "5"},
])
def test_choose_algorithm_needs_a_hint(raw):
    with pytest.raises(UserError, match="algorithm=None is required"):
        choose_algorithm(raw)
