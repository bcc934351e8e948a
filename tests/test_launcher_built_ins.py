"""Built-in counterparts: image URIs per region and translated hyperparameters."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from review_nlp.errors import UserError
from review_nlp.launcher import built_ins
from review_nlp.launcher.training_jobs import build_training_job_request


@pytest.mark.parametrize("algorithm, region, expected", [
    ("ntm", "us-east-1", "382416733822.dkr.ecr.us-east-1.amazonaws.com/ntm:1"),
    ("ntm", "us-west-2", "174872318107.dkr.ecr.us-west-2.amazonaws.com/ntm:1"),
    ("kmeans", "eu-west-1", "438346466558.dkr.ecr.eu-west-1.amazonaws.com/kmeans:1"),
    ("kmeans", "ap-northeast-2", "835164637446.dkr.ecr.ap-northeast-2.amazonaws.com/kmeans:1"),
    ("rating", "us-east-1", "811284229777.dkr.ecr.us-east-1.amazonaws.com/blazingtext:1"),
    ("blazingtext", "eu-west-1", "685385470294.dkr.ecr.eu-west-1.amazonaws.com/blazingtext:1"),
    ("ntm", "cn-north-1", "390948362332.dkr.ecr.cn-north-1.amazonaws.com.cn/ntm:1"),
])
def test_image_uri(algorithm, region, expected):
    assert built_ins.built_in_image_uri(algorithm, region) == expected


def _sdk_registries(name):
    """The registry table the installed SageMaker SDK ships, or None when it is absent."""
    spec = importlib.util.find_spec("sagemaker")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "core" / "image_uri_config" / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())["versions"]["1"]["registries"]
    return None


@pytest.mark.parametrize("repository, table", [
    ("ntm", built_ins.NTM_KMEANS_ACCOUNTS),
    ("kmeans", built_ins.NTM_KMEANS_ACCOUNTS),
    ("blazingtext", built_ins.BLAZINGTEXT_ACCOUNTS),
])
def test_accounts_match_installed_sdk(repository, table):
    registries = _sdk_registries(repository)
    if registries is None:
        pytest.skip("the SageMaker SDK's image_uri_config is not installed")

    assert table == {region: account for region, account in registries.items()
                     if not region.startswith("us-iso")}


def test_image_uri_unknown_region_or_algorithm():
    with pytest.raises(UserError, match="pass its image URI"):
        built_ins.built_in_image_uri("ntm", "mars-north-1")
    with pytest.raises(UserError, match="algorithm="):
        built_ins.built_in_image_uri("lda", "us-east-1")


def test_ntm_hyperparameters_drop_ours():
    translated = built_ins.built_in_hyperparameters("ntm", {
        "algorithm": "ntm", "feature_dim": 2000, "num_topics": 20, "mini_batch_size": 128,
        "epochs": 100, "num_patience_epochs": 5, "tolerance": 0.001, "batch_norm": False,
        "encoder_layers": [100, 50], "seed": 7, "prior": "gaussian", "sub_sample": None,
    })

    assert translated == {
        "feature_dim": "2000", "num_topics": "20", "mini_batch_size": "128", "epochs": "100",
        "num_patience_epochs": "5", "tolerance": "0.001", "batch_norm": "False",
        "encoder_layers": "[100, 50]",
    }


def test_kmeans_hyperparameters_map_names():
    translated = built_ins.built_in_hyperparameters("kmeans", {
        "feature_dim": 4358, "n_clusters": 20, "mini_batch_size": 128, "tol": 0.0001,
        "extra_center_factor": "auto", "eval_metrics": ["msd", "ssd"], "random_state": 0,
    })

    assert translated == {
        "feature_dim": "4358", "k": "20", "mini_batch_size": "128", "local_lloyd_tol": "0.0001",
        "extra_center_factor": "auto", "eval_metrics": '["msd", "ssd"]', "force_dense": "True",
    }


def test_rating_hyperparameters_for_blazingtext():
    translated = built_ins.built_in_hyperparameters("rating", {
        "epochs": 10, "learning_rate": 0.05, "num_patience_epochs": 4, "word_ngrams": 2,
        "feature_dim": 5000, "num_classes": 5,
    })

    assert translated == {"epochs": "10", "learning_rate": "0.05", "patience": "4",
                          "word_ngrams": "2", "mode": "supervised"}


@pytest.mark.parametrize("algorithm, hyperparameters", [
    ("ntm", {"feature_dim": 2000}),
    ("kmeans", {"k": 10}),
])
def test_missing_required_hyperparameter(algorithm, hyperparameters):
    with pytest.raises(UserError, match="requires hyperparameters"):
        built_ins.built_in_hyperparameters(algorithm, hyperparameters)


def test_built_in_request_keeps_strings():
    hyperparameters = built_ins.built_in_hyperparameters("kmeans", {"feature_dim": 10, "k": 3})

    request = build_training_job_request(
        job_name="kmeans-builtin-1", image_uri=built_ins.built_in_image_uri("kmeans", "us-east-1"),
        role_arn="arn:aws:iam::123456789012:role/x", channels={"train": "s3://b/train/"},
        output_path="s3://b/out/", instance_type="ml.c5.xlarge", hyperparameters=hyperparameters)

    assert request["HyperParameters"] == {"feature_dim": "10", "k": "3", "force_dense": "True"}
