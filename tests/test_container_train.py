"""The training container on a fake /opt/ml tree: every algorithm, input mode, failure, stop and
resume, and two hosts training one model.

Channels are built from real MARC reviews with the featurizer each algorithm's `prepare` uses,
at a size that trains in seconds.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from review_nlp.container import failure
from review_nlp.container.metrics import metric_definitions
from review_nlp.container.train import main as train_main
from review_nlp.data.channels import write_channel
from review_nlp.data.features import Featurizer, FeaturizerConfig
from review_nlp.data.vocabulary import write_vocab_txt
from review_nlp.errors import InvalidHyperparameter
from review_nlp.models.artifact import load_artifact

from test_container_serve import read_marc_reviews

REPO = Path(__file__).resolve().parents[1]
RECORDIO = "application/x-recordio-protobuf"
FEATURIZER_KIND = {"ntm": "counts", "kmeans": "tfidf", "rating": "ngrams"}
HYPERPARAMETERS = {
    "ntm": {"num_topics": "4", "epochs": "3", "mini_batch_size": "64"},
    "kmeans": {"k": "3", "epochs": "2", "mini_batch_size": "100",
               "eval_metrics": '["msd","ssd"]', "force_dense": "True"},
    "rating": {"epochs": "2"},
}
SPLITS = {"train": slice(0, 240), "validation": slice(240, 300), "test": slice(300, 360)}


# --- job folders -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reviews(reviews_dir):
    return read_marc_reviews(reviews_dir, 400)


def prepare_channels(reviews, algorithm: str, out: Path, content_type: str = RECORDIO) -> int:
    """Write train/validation/test channels and auxiliary/ as `prepare` does; return feature_dim."""
    texts, stars = reviews
    featurizer = Featurizer(FeaturizerConfig(kind=FEATURIZER_KIND[algorithm],
                                             max_features=200, min_df=2))
    features = featurizer.fit_transform(texts)
    keep = ~Featurizer.empty_rows(features)
    features, stars = features[keep], stars[keep]
    for channel, rows in SPLITS.items():
        write_channel(out / channel, features[rows], stars[rows], shard_rows=100,
                      content_type=content_type)
    write_vocab_txt(out / "auxiliary" / "vocab.txt", featurizer.vocabulary)
    (out / "auxiliary" / "featurizer.json").write_text(json.dumps(featurizer.to_dict()))
    return features.shape[1]


@pytest.fixture(scope="module")
def channels(reviews, tmp_path_factory):
    """{algorithm: (folder, feature_dim)} of prepared RecordIO-protobuf channels."""
    prepared = {}
    for algorithm in FEATURIZER_KIND:
        folder = tmp_path_factory.mktemp(f"channels-{algorithm}")
        prepared[algorithm] = (folder, prepare_channels(reviews, algorithm, folder))
    return prepared


def make_job(base_dir: Path, channels_dir: Path, hyperparameters: dict[str, str], *,
             data_channels=("train", "validation", "test", "auxiliary"),
             content_type: str | None = RECORDIO, input_mode: str = "File",
             current_host: str = "algo-1", hosts=("algo-1",),
             distribution: str = "FullyReplicated") -> Path:
    """Lay out `base_dir` as SageMaker lays out /opt/ml for one host."""
    config = base_dir / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    input_config = {}
    for channel in data_channels:
        entry = {"TrainingInputMode": "File" if channel == "auxiliary" else input_mode,
                 "S3DistributionType": distribution, "RecordWrapperType": "None"}
        if content_type and channel != "auxiliary":
            entry["ContentType"] = content_type
        if channel == "auxiliary":
            entry["ContentType"] = "text/plain"
        input_config[channel] = entry
        if input_mode != "Pipe" or channel == "auxiliary":
            shutil.copytree(channels_dir / channel, base_dir / "input" / "data" / channel)
    (config / "inputdataconfig.json").write_text(json.dumps(input_config))
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": current_host, "hosts": list(hosts), "network_interface_name": "lo"}))
    for folder in ("model", "output", "checkpoints"):
        (base_dir / folder).mkdir()
    return base_dir


def job_hyperparameters(algorithm_name: str, feature_dim: int, **overrides: str
                        ) -> dict[str, str]:
    return {"algorithm": algorithm_name, "feature_dim": str(feature_dim),
            **HYPERPARAMETERS[algorithm_name], **overrides}


@pytest.fixture
def restore_logging():
    """`train` configures the root logger as an entry point does; put pytest's back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run_in_process(base_dir: Path, monkeypatch) -> int:
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base_dir))
    return train_main([])


def train_command() -> list[str]:
    return [sys.executable, "-m", "review_nlp.container", "train"]


def subprocess_env(base_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SAGEMAKER_BASE_DIR": str(base_dir), "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1", **extra}


def quality_lines(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if "#quality_metric:" in line or "#validation_score" in line]


# --- every algorithm --------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", sorted(FEATURIZER_KIND))
def test_train_in_process(algorithm, channels, tmp_path, monkeypatch, capfd, restore_logging):
    channels_dir, feature_dim = channels[algorithm]
    job = make_job(tmp_path / "ml", channels_dir, job_hyperparameters(algorithm, feature_dim))

    assert run_in_process(job, monkeypatch) == failure.EXIT_SUCCESS
    log = capfd.readouterr().err

    # the model, with what serving needs to take raw text
    artifact = load_artifact(job / "model")
    assert artifact.algorithm == algorithm
    assert artifact.config["feature_dim"] == feature_dim
    assert len(artifact.vocabulary) == feature_dim
    assert artifact.featurizer["kind"] == FEATURIZER_KIND[algorithm]
    assert (job / "model" / "model_algo-1").is_file() == (algorithm == "kmeans")

    # metrics.json, loss curves, topics
    metrics = json.loads((job / "output" / "data" / "metrics.json").read_text())
    assert metrics["algorithm"] == algorithm
    assert metrics["final"]
    assert metrics["timing"]["total_seconds"] > 0
    assert isinstance(metrics["history"], list)
    if metrics["history"]:
        png = (job / "output" / "data" / "loss_curves.png").read_bytes()
        assert png.startswith(b"\x89PNG")
    assert (job / "output" / "data" / "topics.txt").is_file() == (algorithm == "ntm")
    assert not (job / "output" / "failure").exists()
    assert "Final configuration: {" in log

    # every metric definition matches a line this job logged, and every logged metric line
    # has a definition
    lines = quality_lines(log)
    definitions = metric_definitions(algorithm)
    for definition in definitions:
        matches = [m for m in (re.search(definition["Regex"], line) for line in log.splitlines())
                   if m]
        assert matches, f"{definition['Name']} matched no logged line"
        float(matches[-1].group(1))
    for line in lines:
        assert any(re.search(d["Regex"], line) for d in definitions), line


def test_train_subprocess_detects_content_type(channels, tmp_path):
    channels_dir, feature_dim = channels["ntm"]
    job = make_job(tmp_path / "ml", channels_dir, job_hyperparameters("ntm", feature_dim),
                   data_channels=("train",), content_type=None)
    completed = subprocess.run(train_command(), env=subprocess_env(job), cwd=REPO,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (job / "model" / "model.json").is_file()
    assert "#quality_metric: host=algo-1, epoch=3, train total_loss <loss>=" in completed.stderr
    assert "Reporting training SUCCESS" in completed.stderr


@pytest.mark.parametrize("content_type", ["text/csv;label_size=1", "text/csv; label_size=1"])
def test_train_on_csv_channels(content_type, reviews, tmp_path, monkeypatch, restore_logging):
    folder = tmp_path / "channels"
    feature_dim = prepare_channels(reviews, "kmeans", folder, content_type="text/csv;label_size=1")
    job = make_job(tmp_path / "ml", folder, job_hyperparameters("kmeans", feature_dim),
                   data_channels=("train", "test"), content_type=content_type)
    assert run_in_process(job, monkeypatch) == failure.EXIT_SUCCESS
    assert load_artifact(job / "model").config["k"] == 3


@pytest.mark.parametrize("written_as", ["text/csv;label_size=0", RECORDIO])
def test_train_on_unlabeled_dense_data_without_content_type(written_as, reviews, tmp_path,
                                                            monkeypatch, restore_logging):
    texts, _ = reviews
    featurizer = Featurizer(FeaturizerConfig(kind="tfidf", max_features=50, min_df=2))
    features = featurizer.fit_transform(texts)
    dense = features[~Featurizer.empty_rows(features)].toarray()  # dense RecordIO records
    write_channel(tmp_path / "channels" / "train", dense, content_type=written_as)
    job = make_job(tmp_path / "ml", tmp_path / "channels",
                   {"feature_dim": str(dense.shape[1]), "k": "2"},  # no `algorithm`: k-means
                   data_channels=("train",), content_type=None)
    assert run_in_process(job, monkeypatch) == failure.EXIT_SUCCESS
    assert load_artifact(job / "model").algorithm == "kmeans"


# --- input modes -------------------------------------------------------------------------------

def feed_fifo(path: Path, files: list[Path]) -> threading.Thread:
    """Create the FIFO and write the channel's files into it from a thread, as SageMaker does."""
    os.mkfifo(path)

    def write() -> None:
        with open(path, "wb") as fifo:
            for item in files:
                fifo.write(item.read_bytes())

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_pipe_mode_reads_fifos(channels, tmp_path, monkeypatch, restore_logging):
    channels_dir, feature_dim = channels["ntm"]
    job = make_job(tmp_path / "ml", channels_dir, job_hyperparameters("ntm", feature_dim),
                   data_channels=("train", "validation", "auxiliary"), input_mode="Pipe")
    data_dir = job / "input" / "data"
    writers = [feed_fifo(data_dir / f"{channel}_0", sorted((channels_dir / channel).iterdir()))
               for channel in ("train", "validation")]

    assert run_in_process(job, monkeypatch) == failure.EXIT_SUCCESS
    for writer in writers:
        writer.join(timeout=10)
        assert not writer.is_alive()
    metrics = json.loads((job / "output" / "data" / "metrics.json").read_text())
    assert "validation:total_loss" in metrics["final"]


def test_fast_file_mode_writes_nothing_into_input(channels, tmp_path, monkeypatch,
                                                   restore_logging):
    channels_dir, feature_dim = channels["kmeans"]
    job = make_job(tmp_path / "ml", channels_dir, job_hyperparameters("kmeans", feature_dim),
                   input_mode="FastFile")
    data_dir = job / "input" / "data"
    before = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*"))
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        assert run_in_process(job, monkeypatch) == failure.EXIT_SUCCESS
    finally:
        for path in [data_dir, *data_dir.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*")) == before


# --- failures ----------------------------------------------------------------------------------

def failure_text(job: Path) -> str:
    return (job / "output" / "failure").read_text()


@pytest.mark.parametrize("overrides, first_words", [
    ({"num_topics": "1"}, "num_topics=1 must be in [2, 1000]"),
    ({"epochs": "many"}, "epochs='many' must be an integer"),
    ({"num_topicz": "5"}, "num_topicz='5' is not a hyperparameter of algorithm ntm"),
    ({"algorithm": "lda"}, "algorithm='lda' must be one of"),
])
def test_bad_hyperparameter_leaves_failure_file(overrides, first_words, channels, tmp_path,
                                                monkeypatch, restore_logging):
    channels_dir, feature_dim = channels["ntm"]
    job = make_job(tmp_path / "ml", channels_dir,
                   job_hyperparameters("ntm", feature_dim, **overrides))
    assert run_in_process(job, monkeypatch) == failure.EXIT_USER_ERROR
    assert failure_text(job).startswith(first_words)
    assert not (job / "model" / "model.json").exists()


def test_feature_dim_mismatch_names_both_numbers(channels, tmp_path, monkeypatch,
                                                 restore_logging):
    channels_dir, feature_dim = channels["kmeans"]
    job = make_job(tmp_path / "ml", channels_dir,
                   job_hyperparameters("kmeans", feature_dim + 5), data_channels=("train",))
    assert run_in_process(job, monkeypatch) == failure.EXIT_USER_ERROR
    text = failure_text(job)
    assert text.startswith(f"feature_dim={feature_dim + 5} does not match the train channel")
    assert f"{feature_dim} features" in text


@pytest.mark.parametrize("data_channels, message", [
    (("validation",), "the train channel is missing"),
])
def test_channel_errors(data_channels, message, channels, tmp_path, monkeypatch,
                        restore_logging):
    channels_dir, feature_dim = channels["ntm"]
    job = make_job(tmp_path / "ml", channels_dir, job_hyperparameters("ntm", feature_dim),
                   data_channels=data_channels)
    assert run_in_process(job, monkeypatch) == failure.EXIT_USER_ERROR
    assert failure_text(job).startswith(message)


def test_unknown_channel_is_rejected(channels, tmp_path, monkeypatch, restore_logging):
    channels_dir, feature_dim = channels["ntm"]
    shutil.copytree(channels_dir / "validation", tmp_path / "extra" / "evaluation")
    shutil.copytree(channels_dir / "train", tmp_path / "extra" / "train")
    job = make_job(tmp_path / "ml", tmp_path / "extra", job_hyperparameters("ntm", feature_dim),
                   data_channels=("train", "evaluation"))
    assert run_in_process(job, monkeypatch) == failure.EXIT_USER_ERROR
    assert failure_text(job).startswith("unknown input channel evaluation")


def test_invalid_json_config_is_a_user_error(tmp_path, monkeypatch, restore_logging):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text("{not json")
    assert run_in_process(tmp_path, monkeypatch) == failure.EXIT_USER_ERROR
    assert "hyperparameters.json is not valid JSON" in failure_text(tmp_path)


def test_internal_error_reports_traceback(tmp_path):
    try:
        raise RuntimeError("tensor shapes disagree")
    except RuntimeError as error:
        code = failure.write_failure(tmp_path / "failure", error)
    text = (tmp_path / "failure").read_text()
    assert code == failure.EXIT_INTERNAL_ERROR
    assert text.startswith("Training failed with an internal error (RuntimeError: tensor "
                           "shapes disagree)")
    assert "Traceback (most recent call last)" in text
    assert len(text.split("\n")[0]) < failure.FAILURE_REASON_LIMIT


def test_user_error_is_not_overwritten(tmp_path):
    first = failure.write_failure(tmp_path / "failure",
                                  InvalidHyperparameter("k", 0, "must be >= 1"))
    failure.write_failure(tmp_path / "failure", RuntimeError("later"))
    assert first == failure.EXIT_USER_ERROR
    assert (tmp_path / "failure").read_text() == "k=0 must be >= 1\n"


def test_out_of_memory_has_its_own_code(tmp_path):
    assert failure.write_failure(tmp_path / "failure", MemoryError()) == \
        failure.EXIT_OUT_OF_MEMORY
    assert (tmp_path / "failure").read_text().startswith("Training ran out of memory")


# --- stop and resume ---------------------------------------------------------------------------

def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def test_sigterm_checkpoints_and_restart_resumes(channels, tmp_path, monkeypatch, capfd,
                                                  restore_logging):
    channels_dir, feature_dim = channels["ntm"]
    hyperparameters = job_hyperparameters("ntm", feature_dim, epochs="12",
                                          num_patience_epochs="100", mini_batch_size="16")
    job = make_job(tmp_path / "ml", channels_dir, hyperparameters, data_channels=("train",))
    checkpoints = job / "checkpoints"
    log_path = tmp_path / "first.log"

    with open(log_path, "wb") as log:
        process = subprocess.Popen(train_command(), env=subprocess_env(job), cwd=REPO,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: any(checkpoints.glob("checkpoint-epoch*.pt")) or
                 process.poll() is not None, 120, "the first checkpoint")
        assert process.poll() is None, log_path.read_text()[-3000:]
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == failure.EXIT_STOPPED, log_path.read_text()[-3000:]
    assert time.monotonic() - stopped_at < 30
    assert not (job / "model" / "model.json").exists()
    assert not (job / "output" / "failure").exists()
    saved = sorted(checkpoints.glob("checkpoint-epoch*.pt"))
    assert saved
    epoch_saved = int(re.search(r"epoch(\d+)", saved[-1].name).group(1))
    assert epoch_saved < 12

    # the restarted job, here in-process, resumes from the checkpoint
    assert run_in_process(job, monkeypatch) == failure.EXIT_SUCCESS
    resumed_log = capfd.readouterr().err
    assert "Resuming from checkpoint" in resumed_log
    assert "Starting training for epoch 1\n" not in resumed_log
    metrics = json.loads((job / "output" / "data" / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == list(range(1, 13))


# --- two hosts ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_hosts_train_one_model(channels, tmp_path):
    algorithm = "ntm"
    channels_dir, feature_dim = channels[algorithm]
    hosts = ("algo-1", "algo-2")
    addresses = json.dumps({host: "127.0.0.1" for host in hosts})
    port = str(free_port())

    # one /opt/ml tree and one process per host
    processes, logs = [], []
    for host in hosts:
        job = make_job(tmp_path / host, channels_dir, job_hyperparameters(algorithm, feature_dim),
                       data_channels=("train", "validation"), current_host=host, hosts=hosts)
        env = subprocess_env(job, SM_HOST_ADDRESSES=addresses, MASTER_PORT=port,
                             REVIEW_NLP_RENDEZVOUS_TIMEOUT_S="120")
        log = open(tmp_path / f"{host}.log", "wb")
        processes.append(subprocess.Popen(train_command(), env=env, cwd=REPO, stdout=log,
                                          stderr=subprocess.STDOUT))
        logs.append(log)

    try:
        codes = [process.wait(timeout=300) for process in processes]
    finally:
        for process, log in zip(processes, logs):
            if process.poll() is None:
                process.kill()
            log.close()

    # both finished; rank 0 alone wrote the model
    texts = [(tmp_path / f"{host}.log").read_text() for host in hosts]
    assert codes == [0, 0], texts[0][-2000:] + texts[1][-2000:]
    assert "rank 0 of 2" in texts[0]
    assert "rank 1 of 2" in texts[1]
    assert (tmp_path / "algo-1" / "model" / "model.json").is_file()
    assert list((tmp_path / "algo-2" / "model").iterdir()) == []
    assert "No model is serialized on a non-master node" in texts[1]
    metrics = json.loads((tmp_path / "algo-1" / "output" / "data" / "metrics.json").read_text())
    assert metrics["hosts"] == 2
    assert np.isfinite(list(v for v in metrics["final"].values()
                            if isinstance(v, float))).all()
