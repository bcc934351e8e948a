"""launch.py end to end: every subcommand on real reviews, locally and against moto."""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

import boto3
import pytest
from launcher_moto import (  # noqa: F401
    BUCKET,
    ROLE_ARN,
    moto_endpoint,
    moto_server_url,
)

from review_nlp.launcher.cli import build_parser, main

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/review-nlp:latest"
QUICK = {"ntm": ["--hp", "epochs=2", "--hp", "num_topics=5"],
         "kmeans": ["--hp", "k=3", "--hp", "mini_batch_size=50"],
         "rating": ["--hp", "epochs=2"]}


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield name, subparser
                yield from _subparsers(subparser)


def test_every_option_help_states_default():
    missing = []
    for name, subparser in _subparsers(build_parser()):
        for action in subparser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            if "-h" in action.option_strings:
                continue
            text = (action.help or "").lower()
            if "default" not in text and "required" not in text:
                missing.append(f"{name} {action.option_strings[0]}")
    assert missing == []


@pytest.fixture(scope="module")
def channels(tmp_path_factory, reviews_dir) -> dict[str, Path]:
    """Small channels per algorithm from the official sample TSV."""
    root = tmp_path_factory.mktemp("channels")
    prepared = {}
    for algorithm in ("ntm", "kmeans", "rating"):
        out = root / algorithm
        assert main(["prepare", "--reviews", str(reviews_dir / "sample_us.tsv"), "--algorithm",
                     algorithm, "--out", str(out), "--min-df", "1"]) == 0
        prepared[algorithm] = out
    return prepared


@pytest.fixture(scope="module")
def trained(tmp_path_factory, channels) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    outputs = {}
    for algorithm, folder in channels.items():
        out = root / algorithm
        assert main(["train", "--algorithm", algorithm, "--channels", str(folder), "--out",
                     str(out), *QUICK[algorithm]]) == 0
        outputs[algorithm] = out
    return outputs


@pytest.mark.parametrize("algorithm", ["ntm", "kmeans", "rating"])
def test_train_local_leaves_model_and_metrics(trained, algorithm):
    out = trained[algorithm]
    with tarfile.open(out / "model.tar.gz") as archive:
        names = archive.getnames()
    assert "model.json" in names
    assert "weights.safetensors" in names
    assert (out / "output.tar.gz").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"]
    assert metrics["final"]
    assert metrics["timing"]["job_wall_seconds"] > 0


def test_train_rejects_other_algorithm_channels(channels, tmp_path, caplog):
    code = main(["train", "--algorithm", "kmeans", "--channels", str(channels["ntm"]),
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "prepared for algorithm 'ntm', not 'kmeans'" in caplog.text


def test_train_bad_hyperparameter_names_it(channels, tmp_path, caplog):
    code = main(["train", "--algorithm", "ntm", "--channels", str(channels["ntm"]),
                 "--out", str(tmp_path / "out"), "--hp", "num_topics=1"])
    assert code == 2
    assert "num_topics=1 must be in [2, 1000]" in caplog.text


def test_predict_batch_transform_writes_review_ids(trained, reviews_dir, tmp_path):
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", "--model", str(trained["rating"] / "model.tar.gz"), "--reviews",
                 str(reviews_dir / "sample_us.tsv"), "--out", str(out)]) == 0

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 49
    first = lines[0]
    assert first["review_id"]
    assert first["predicted_stars"] in (1, 2, 3, 4, 5)
    assert len(first["probabilities"]) == 5
    assert first["sentiment"]["Sentiment"] in ("POSITIVE", "NEGATIVE", "NEUTRAL", "MIXED")


def test_local_endpoint_deploy_predict_delete(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REVIEW_NLP_STATE_DIR", str(tmp_path / "state"))
    port = _free_port()
    name = "cli-test-ntm"
    assert main(["deploy", "--model", str(trained["ntm"] / "model.tar.gz"), "--endpoint-name",
                 name, "--port", str(port), "--workers", "1"]) == 0
    try:
        capsys.readouterr()
        assert main(["predict", "--endpoint-name", name, "--text",
                     "Great gift card, easy to use"]) == 0
        answer = json.loads(capsys.readouterr().out)
        weights = answer["predictions"][0]["topic_weights"]
        assert abs(sum(weights) - 1.0) < 1e-4
    finally:
        assert main(["delete-endpoint", "--endpoint-name", name]) == 0
    assert not (tmp_path / "state" / f"{name}.json").exists()


@pytest.mark.parametrize("algorithm,plot", [("ntm", "topic_words.png"),
                                            ("kmeans", "cluster_sizes.png"),
                                            ("rating", "confusion_matrix.png")])
def test_compare_local_writes_report(channels, tmp_path, algorithm, plot):
    out = tmp_path / "report"
    assert main(["compare", "--algorithm", algorithm, "--channels", str(channels[algorithm]),
                 "--out", str(out), *QUICK[algorithm]]) == 0
    report = json.loads((out / "comparison.json").read_text())
    assert len(report["rows"]) >= 2
    assert (out / "comparison.md").read_text().startswith("# Comparison")
    assert (out / plot).is_file()


def test_athena_create_table_prints_ddl(capsys):
    assert main(["athena", "create-table", "--layout", "tsv", "--location",
                 "s3://my-bucket/reviews/tsv/"]) == 0
    printed = capsys.readouterr().out
    assert "CREATE EXTERNAL TABLE" in printed
    assert "s3://my-bucket/reviews/tsv/" in printed


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_train_sagemaker_mode_request(channels, moto_endpoint):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    job = "cli-sagemaker-ntm"
    assert main(["train", "--mode", "sagemaker", "--algorithm", "ntm", "--channels",
                 str(channels["ntm"]), "--out", f"s3://{BUCKET}/jobs", "--s3-prefix",
                 f"s3://{BUCKET}/uploads", "--job-name", job, "--image-uri", IMAGE, "--role",
                 ROLE_ARN, "--instance-type", "ml.c5.xlarge", "--instance-count", "2", "--spot",
                 "--checkpoint-s3-uri", f"s3://{BUCKET}/checkpoints/{job}/", "--max-run", "3600",
                 "--max-wait", "7200", "--hp", "num_topics=7"]) == 0

    described = boto3.client("sagemaker", region_name="us-east-1").describe_training_job(
        TrainingJobName=job)
    assert described["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    hyperparameters = described["HyperParameters"]
    assert hyperparameters["algorithm"] == "ntm"
    assert hyperparameters["num_topics"] == "7"
    assert all(isinstance(v, str) for v in hyperparameters.values())
    inputs = {c["ChannelName"]: c for c in described["InputDataConfig"]}
    assert inputs["train"]["ContentType"] == "application/x-recordio-protobuf"
    assert inputs["train"]["DataSource"]["S3DataSource"]["S3DataDistributionType"] == \
        "ShardedByS3Key"
    assert inputs["validation"]["DataSource"]["S3DataSource"]["S3DataDistributionType"] == \
        "FullyReplicated"
    assert inputs["auxiliary"]["ContentType"] == "text/plain"
    assert inputs["train"]["DataSource"]["S3DataSource"]["S3Uri"].startswith(
        f"s3://{BUCKET}/uploads/{job}/")
    assert described["ResourceConfig"]["InstanceCount"] == 2
    assert described["EnableManagedSpotTraining"] is True
    assert described["StoppingCondition"]["MaxWaitTimeInSeconds"] == 7200
    assert described["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/checkpoints/{job}/"
    metrics = s3.get_object(Bucket=BUCKET, Key=f"jobs/{job}/output/metrics.json")
    assert json.loads(metrics["Body"].read())["job"]["job_name"] == job


def test_deploy_sagemaker_mode_creates_endpoint(moto_endpoint):
    assert main(["deploy", "--mode", "sagemaker", "--model",
                 f"s3://{BUCKET}/jobs/model.tar.gz", "--endpoint-name", "cli-endpoint",
                 "--image-uri", IMAGE, "--role", ROLE_ARN]) == 0
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    assert sagemaker.describe_model(ModelName="cli-endpoint")["PrimaryContainer"]["Image"] == IMAGE
    config = sagemaker.describe_endpoint_config(EndpointConfigName="cli-endpoint")
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.m5.large"
    assert sagemaker.describe_endpoint(EndpointName="cli-endpoint")["EndpointStatus"] == \
        "InService"


@pytest.mark.parametrize("name", ["../../escape", "has space", "-leading", "a" * 64])
def test_names_must_be_sagemaker_names(name, tmp_path):
    with pytest.raises(SystemExit):
        main(["deploy", "--model", str(tmp_path / "m.tar.gz"), "--endpoint-name", name])


def test_predict_missing_body_file_is_clean_error(tmp_path, caplog):
    code = main(["predict", "--endpoint-name", "nowhere", "--body", str(tmp_path / "none.csv"),
                 "--content-type", "text/csv"])
    assert code == 2
    assert "none.csv not found" in caplog.text


def test_compare_sagemaker_mode_trains_both(channels, moto_endpoint, tmp_path):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    out = tmp_path / "report"
    assert main(["compare", "--mode", "sagemaker", "--algorithm", "kmeans", "--channels",
                 str(channels["kmeans"]), "--out", str(out), "--s3-prefix",
                 f"s3://{BUCKET}/compare", "--image-uri", IMAGE, "--role", ROLE_ARN,
                 "--hp", "k=3"]) == 0

    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    jobs = {job["TrainingJobName"]: sagemaker.describe_training_job(
        TrainingJobName=job["TrainingJobName"])
        for job in sagemaker.list_training_jobs()["TrainingJobSummaries"]}
    images = {description["AlgorithmSpecification"]["TrainingImage"]
              for description in jobs.values()}
    assert images == {IMAGE, "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"}
    built_in = next(d for d in jobs.values() if d["AlgorithmSpecification"]["TrainingImage"]
                    != IMAGE)
    assert "algorithm" not in built_in["HyperParameters"]
    assert built_in["HyperParameters"]["k"] == "3"
    assert built_in["HyperParameters"]["force_dense"] == "True"
    report = json.loads((out / "comparison.json").read_text())
    assert [row["model"] for row in report["rows"]] == ["built-in kmeans", "review_nlp kmeans"]
