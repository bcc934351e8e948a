"""The built image `review-nlp:test` as SageMaker runs it: `train` with no network on a mounted
/opt/ml, and `serve` on the host's loopback.

.ci/docker-setup.sh starts the engine and builds the image. These tests skip, saying why, when
`docker info` fails or the image is missing. Containers run with `--network none` or
`--network host` only: no bridge network, no published ports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from review_nlp.models.artifact import load_artifact

from test_container_serve import free_port, http
from test_container_train import (
    FEATURIZER_KIND, job_hyperparameters, make_job, prepare_channels)

IMAGE = os.environ.get("REVIEW_NLP_TEST_IMAGE", "review-nlp:test")

pytestmark = pytest.mark.docker


def _docker(*args: str, timeout: float = 60, check: bool = False
            ) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=check)


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("docker") is None:
        pytest.skip("the docker client is not installed; run .ci/docker-setup.sh")
    try:
        info = _docker("info", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.skip("`docker info` timed out: no Docker engine answers; run .ci/docker-setup.sh")
    if info.returncode != 0:
        pytest.skip(f"`docker info` failed, so no Docker engine runs here "
                    f"({info.stderr.strip()[:200]}); run .ci/docker-setup.sh")
    if _docker("image", "inspect", IMAGE).returncode != 0:
        pytest.skip(f"image {IMAGE} not found after set-up: .ci/docker-setup.sh did not build "
                    f"it (see its output)")
    return IMAGE


@pytest.fixture(scope="module")
def reviews(reviews_dir):
    from test_container_serve import read_marc_reviews
    return read_marc_reviews(reviews_dir, 400)


def run_train(image: str, job: Path, name: str) -> subprocess.CompletedProcess:
    return _docker("run", "--rm", "--network", "none", "--name", name,
                   "-v", f"{job}:/opt/ml", image, "train", timeout=600)


@pytest.mark.parametrize("algorithm", sorted(FEATURIZER_KIND))
def test_image_trains(image, algorithm, reviews, tmp_path):
    feature_dim = prepare_channels(reviews, algorithm, tmp_path / "channels")
    job = make_job(tmp_path / "ml", tmp_path / "channels",
                   job_hyperparameters(algorithm, feature_dim))

    completed = run_train(image, job, f"review-nlp-test-train-{uuid.uuid4().hex[:8]}")

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert load_artifact(job / "model").algorithm == algorithm
    assert (job / "output" / "data" / "metrics.json").is_file()
    assert "#quality_metric: host=algo-1" in completed.stderr
    assert not (job / "output" / "failure").exists()


def test_image_reports_bad_hyperparameter(image, reviews, tmp_path):
    feature_dim = prepare_channels(reviews, "ntm", tmp_path / "channels")
    job = make_job(tmp_path / "ml", tmp_path / "channels",
                   job_hyperparameters("ntm", feature_dim, num_topics="1"))

    completed = run_train(image, job, f"review-nlp-test-fail-{uuid.uuid4().hex[:8]}")

    assert completed.returncode == 1
    assert (job / "output" / "failure").read_text().startswith(
        "num_topics=1 must be in [2, 1000]")


def test_image_serves(image, reviews, tmp_path):
    feature_dim = prepare_channels(reviews, "kmeans", tmp_path / "channels")
    job = make_job(tmp_path / "ml", tmp_path / "channels",
                   job_hyperparameters("kmeans", feature_dim), data_channels=("train",
                                                                               "auxiliary"))
    trained = run_train(image, job, f"review-nlp-test-train-{uuid.uuid4().hex[:8]}")
    assert trained.returncode == 0, trained.stderr[-3000:]

    port = free_port()
    name = f"review-nlp-test-serve-{uuid.uuid4().hex[:8]}"
    started = _docker("run", "-d", "--network", "host", "--name", name,
                      "-e", f"SAGEMAKER_BIND_TO_PORT={port}",
                      "-e", "REVIEW_NLP_BIND_HOST=127.0.0.1", "-e", "MODEL_SERVER_WORKERS=1",
                      "-v", f"{job}:/opt/ml", image, "serve")
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            try:
                status = http(url + "/ping", timeout=2)[0]
            except OSError:
                status = None
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200, _docker("logs", name).stderr[-3000:]

        status, body = http(url + "/invocations", b"Great gift card\nNever arrived\n",
                            {"Content-Type": "text/plain"})
        assert status == 200
        predictions = json.loads(body)["predictions"]
        assert len(predictions) == 2
        assert set(predictions[0]) == {"closest_cluster", "distance_to_cluster"}

        status, body = http(url + "/invocations", b"Great gift card",
                            {"Content-Type": "text/plain", "Accept": "text/csv"})
        assert status == 200
        assert len(body.decode().strip().split(",")) == 2

        assert http(url + "/invocations", b"1,2", {"Content-Type": "text/csv"})[0] == 400
    finally:
        _docker("stop", "-t", "30", name, timeout=60)
        _docker("rm", "-f", name)


def test_launcher_docker_mode(image, reviews_dir, tmp_path):
    """`launch.py train --mode docker` runs the image on a SageMaker-style job folder."""
    from review_nlp.launcher.cli import main

    channels = tmp_path / "channels"
    assert main(["prepare", "--reviews", str(reviews_dir / "sample_us.tsv"), "--algorithm",
                 "kmeans", "--out", str(channels), "--min-df", "1"]) == 0
    out = tmp_path / "out"
    assert main(["train", "--mode", "docker", "--image", image, "--algorithm", "kmeans",
                 "--channels", str(channels), "--out", str(out), "--hp", "k=3",
                 "--hp", "mini_batch_size=20"]) == 0

    assert (out / "model.tar.gz").is_file()
    assert (out / "output.tar.gz").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["job"]["mode"] == "docker"
    assert "train:msd" in metrics["final"]
