"""The serving container: the WSGI app in-process for every format, and the real gunicorn server.

Models are trained for one epoch on real reviews, with the featurizer each algorithm's channels
are prepared with, so raw text can be sent too.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wsgiref.util
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from review_nlp.container import codecs
from review_nlp.container.serve import InferenceApp, ServerSettings
from review_nlp.data import recordio
from review_nlp.data.features import Featurizer, FeaturizerConfig
from review_nlp.models import registry
from review_nlp.models.artifact import save_artifact
from review_nlp.models.training import FeatureData

REPO = Path(__file__).resolve().parents[1]
FEATURIZER_KIND = {"ntm": "counts", "kmeans": "tfidf", "rating": "ngrams"}
SMALL_CONFIG = {
    "ntm": {"num_topics": 4, "epochs": 1, "mini_batch_size": 64},
    "kmeans": {"k": 3, "epochs": 1, "mini_batch_size": 100},
    "rating": {"epochs": 1},
}
FIELDS = {
    "ntm": {"topic_weights"},
    "kmeans": {"closest_cluster", "distance_to_cluster"},
    "rating": {"probabilities", "predicted_stars", "expected_stars", "sentiment"},
}


def read_marc_reviews(reviews_dir: Path, limit: int) -> tuple[list[str], np.ndarray]:
    """The first `limit` MARC English reviews: texts and star ratings."""
    texts, stars = [], []
    with open(reviews_dir / "marc_en_train.csv", newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            texts.append(row[1])
            stars.append(float(row[2]))
            if len(texts) == limit:
                break
    return texts, np.asarray(stars, dtype=np.float32)


def train_small_model(algorithm: str, texts: list[str], stars: np.ndarray, model_dir: Path):
    featurizer = Featurizer(FeaturizerConfig(kind=FEATURIZER_KIND[algorithm],
                                             max_features=300, min_df=2))
    features = featurizer.fit_transform(texts)
    keep = ~Featurizer.empty_rows(features)
    data = FeatureData(features[keep], stars[keep])
    config = registry.config_class(algorithm)(feature_dim=features.shape[1],
                                              **SMALL_CONFIG[algorithm])
    model = registry.model_class(algorithm)(config)
    model.fit(data)
    save_artifact(model_dir, model.to_artifact(vocabulary=featurizer.vocabulary,
                                               featurizer=featurizer.to_dict()))
    return features.shape[1]


@pytest.fixture(scope="module")
def reviews(reviews_dir):
    return read_marc_reviews(reviews_dir, 300)


@pytest.fixture(scope="module", params=sorted(registry.ALGORITHMS))
def served(request, reviews, tmp_path_factory):
    """(algorithm, in-process app) for each algorithm."""
    algorithm = request.param
    base_dir = tmp_path_factory.mktemp(f"serve-{algorithm}")
    train_small_model(algorithm, *reviews, base_dir / "model")
    settings = ServerSettings(model_dir=base_dir / "model", max_payload_bytes=1 << 20)
    app = InferenceApp(settings)
    assert app.model is not None, app.load_error
    return algorithm, app


def call(app, method: str, path: str, body: bytes = b"", content_type: str | None = None,
         accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
    environ: dict = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update({"REQUEST_METHOD": method, "PATH_INFO": path,
                    "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)})
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    if accept is not None:
        environ["HTTP_ACCEPT"] = accept
    captured = {}

    def start_response(status, headers):
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict(headers)

    payload = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], payload


def feature_rows(app: InferenceApp, n: int = 2) -> np.ndarray:
    texts = ["Great product, works well and arrived quickly.",
             "Terrible quality, it broke after one day and the seller never answered."]
    return app.model.featurizer.transform(texts[:n]).toarray()


def request_bodies(app: InferenceApp) -> list[tuple[str, bytes, int]]:
    """(content type, body, row count) in every request format the built-ins take."""
    rows = feature_rows(app)
    sparse = sp.csr_matrix(rows)
    dim = rows.shape[1]
    recordio_dense, recordio_sparse = io.BytesIO(), io.BytesIO()
    recordio.write_matrix(recordio_dense, rows.astype(np.float32))
    recordio.write_matrix(recordio_sparse, sparse)
    sparse_instances = [{"data": {"features": {
        "keys": sparse[i].indices.tolist(), "values": sparse[i].data.tolist(), "shape": [dim]}}}
        for i in range(2)]
    csv_body = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
    return [
        ("text/csv", csv_body.encode(), 2),
        ("text/csv; charset=utf-8", (csv_body.split("\n")[0]).encode(), 1),
        ("text/csv;label_size=0", (csv_body.split("\n")[0] + "\n").encode(), 1),
        ("application/json", json.dumps({"features": rows[0].tolist()}).encode(), 1),
        ("application/json", json.dumps(
            {"instances": [{"features": row.tolist()} for row in rows]}).encode(), 2),
        ("application/json", json.dumps(
            {"instances": [{"data": {"features": {"values": row.tolist()}}}
                           for row in rows]}).encode(), 2),
        ("application/json", json.dumps({"instances": sparse_instances}).encode(), 2),
        ("application/jsonlines", "".join(json.dumps(item) + "\n"
                                          for item in sparse_instances).encode(), 2),
        ("application/x-recordio-protobuf", recordio_dense.getvalue(), 2),
        ("application/x-recordio-protobuf", recordio_sparse.getvalue(), 2),
        ("text/plain", b"Great product, works well.\nTerrible, it broke.\n", 2),
        ("application/json", json.dumps({"instances": ["Great product", "Broke"]}).encode(), 2),
    ]


def decode_predictions(body: bytes, media_type: str) -> list[dict]:
    if media_type == codecs.JSON:
        return json.loads(body)["predictions"]
    if media_type == codecs.JSONLINES:
        return [json.loads(line) for line in body.decode().splitlines()]
    if media_type == codecs.RECORDIO:
        records = [recordio.decode_record(p) for p in recordio.read_recordio(io.BytesIO(body))]
        for record in records:
            assert record.features == {}
        return [{name: value.values for name, value in record.label.items()}
                for record in records]
    raise AssertionError(media_type)


def test_ping_after_load(served):
    _, app = served
    assert call(app, "GET", "/ping")[0] == 200


def test_every_request_format(served):
    algorithm, app = served
    for content_type, body, n_rows in request_bodies(app):
        status, headers, payload = call(app, "POST", "/invocations", body, content_type)
        assert status == 200, (content_type, payload)
        assert headers["Content-Type"] == codecs.JSON
        predictions = json.loads(payload)["predictions"]
        assert len(predictions) == n_rows, content_type
        assert set(predictions[0]) == FIELDS[algorithm], content_type


@pytest.mark.parametrize("accept, media_type", [
    (None, codecs.JSON), ("*/*", codecs.JSON), ("application/json", codecs.JSON),
    ("application/jsonlines", codecs.JSONLINES),
    ("application/x-recordio-protobuf", codecs.RECORDIO),
])
def test_every_response_format(served, accept, media_type):
    algorithm, app = served
    body = b"Great product, works well.\nTerrible, it broke.\n"
    status, headers, payload = call(app, "POST", "/invocations", body, "text/plain", accept)
    assert status == 200, payload
    assert headers["Content-Type"] == media_type
    predictions = decode_predictions(payload, media_type)
    assert len(predictions) == 2
    assert set(predictions[0]) == FIELDS[algorithm]


def test_response_values_agree_across_formats(served):
    _, app = served
    body = b"Great product, works well."
    as_json = json.loads(call(app, "POST", "/invocations", body, "text/plain")[2])
    as_records = decode_predictions(
        call(app, "POST", "/invocations", body, "text/plain", codecs.RECORDIO)[2],
        codecs.RECORDIO)
    for name, value in as_json["predictions"][0].items():
        if isinstance(value, str):
            assert as_records[0][name] == [value.encode()]
        elif isinstance(value, dict):
            assert json.loads(as_records[0][name][0]) == value
        else:
            np.testing.assert_allclose(np.ravel(as_records[0][name]), np.ravel(value),
                                       rtol=1e-6)


def test_csv_response(served):
    algorithm, app = served
    status, headers, payload = call(app, "POST", "/invocations", b"Great.\nBad.\n",
                                    "text/plain", "text/csv")
    assert status == 200
    lines = payload.decode().splitlines()
    assert len(lines) == 2
    if algorithm == "kmeans":
        cluster, distance = (float(v) for v in lines[0].split(","))
        prediction = json.loads(call(app, "POST", "/invocations", b"Great.", "text/plain")[2])
        assert cluster == prediction["predictions"][0]["closest_cluster"]
        assert distance == pytest.approx(prediction["predictions"][0]["distance_to_cluster"])


def test_field_values(served):
    algorithm, app = served
    payload = call(app, "POST", "/invocations", b"Great.\nBad.\n", "text/plain")[2]
    for prediction in json.loads(payload)["predictions"]:
        if algorithm == "kmeans":
            assert prediction["closest_cluster"] in (0.0, 1.0, 2.0)
            assert prediction["distance_to_cluster"] >= 0
        elif algorithm == "ntm":
            assert len(prediction["topic_weights"]) == 4
            assert sum(prediction["topic_weights"]) == pytest.approx(1.0, abs=1e-5)
        else:
            assert len(prediction["probabilities"]) == 5
            assert sum(prediction["probabilities"]) == pytest.approx(1.0, abs=1e-5)
            assert prediction["predicted_stars"] in (1, 2, 3, 4, 5)
            assert 1.0 <= prediction["expected_stars"] <= 5.0
            assert prediction["sentiment"]["Sentiment"] in (
                "POSITIVE", "NEGATIVE", "NEUTRAL", "MIXED")


def test_wrong_feature_count_is_400_naming_both(served):
    _, app = served
    dim = app.model.feature_dim
    status, _, payload = call(app, "POST", "/invocations", b"1,2,3", "text/csv")
    assert status == 400
    message = json.loads(payload)["error"]
    assert "3 features" in message
    assert f"feature_dim={dim}" in message


@pytest.mark.parametrize("body, content_type, accept, status", [
    (b"1,2", "image/png", None, 415),
    (b"Great.", "text/plain", "text/html", 415),
    (b'{"instances": [', "application/json", None, 400),
    (b'{"instances": [{"nope": 1}]}', "application/json", None, 400),
    (b"", "text/csv", None, 400),
    (b"\x00\x01\x02\x03garbage", "application/x-recordio-protobuf", None, 400),
    (b"a,b,c", "text/csv", None, 400),
])
def test_bad_requests_get_4xx(served, body, content_type, accept, status):
    _, app = served
    answer, _, payload = call(app, "POST", "/invocations", body, content_type, accept)
    assert answer == status
    assert json.loads(payload)["error"]


def test_body_over_limit_is_413(served):
    _, app = served
    body = b"x" * ((1 << 20) + 1)
    status, _, payload = call(app, "POST", "/invocations", body, "text/plain")
    assert status == 413
    assert "SAGEMAKER_MAX_PAYLOAD_IN_MB=1" in json.loads(payload)["error"]


def test_routes_and_methods(served):
    _, app = served
    assert call(app, "GET", "/invocations")[0] == 405
    assert call(app, "POST", "/ping")[0] == 405
    assert call(app, "GET", "/nothing")[0] == 404


def test_execution_parameters(served):
    _, app = served
    status, _, payload = call(app, "GET", "/execution-parameters")
    assert status == 200
    assert json.loads(payload) == {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD",
                                   "MaxPayloadInMB": 1}


def test_ping_fails_without_model(tmp_path):
    app = InferenceApp(ServerSettings(model_dir=tmp_path / "model"))
    status, _, payload = call(app, "GET", "/ping")
    assert status == 503
    assert "model.json not found" in json.loads(payload)["error"]
    assert call(app, "POST", "/invocations", b"1", "text/csv")[0] == 503


def test_settings_from_environment(tmp_path):
    settings = ServerSettings.from_environ({
        "SAGEMAKER_BASE_DIR": str(tmp_path), "SAGEMAKER_BIND_TO_PORT": "9001",
        "MODEL_SERVER_WORKERS": "3", "MODEL_SERVER_TIMEOUT": "20",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2", "SAGEMAKER_BATCH": "true"})
    assert settings.model_dir == tmp_path / "model"
    assert (settings.port, settings.workers, settings.timeout_s) == (9001, 3, 20)
    assert settings.max_payload_bytes == 2 << 20
    assert settings.batch
    assert settings.max_concurrent_transforms == 3


# --- the real server ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http(url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {},
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def start_server(base_dir: Path, log_path: Path, **extra_env) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base_dir),
           "SAGEMAKER_BIND_TO_PORT": str(port), "REVIEW_NLP_BIND_HOST": "127.0.0.1",
           "MODEL_SERVER_WORKERS": "1", "OMP_NUM_THREADS": "1", **extra_env}
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "review_nlp.container", "serve"],
                               env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    log.close()
    return process, f"http://127.0.0.1:{port}"


def wait_for_ping(process: subprocess.Popen, url: str, want: int, timeout_s: float = 90.0
                  ) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited"
        try:
            if http(url + "/ping", timeout=2)[0] == want:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"/ping did not answer {want} within {timeout_s} s")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_gunicorn_server_answers(reviews, tmp_path):
    train_small_model("ntm", *reviews, tmp_path / "model")
    process, url = start_server(tmp_path, tmp_path / "serve.log",
                                SAGEMAKER_MAX_PAYLOAD_IN_MB="1")
    try:
        wait_for_ping(process, url, 200)
        status, body = http(url + "/invocations", b"Great product\nBroke after a day\n",
                            {"Content-Type": "text/plain"})
        assert status == 200
        assert len(json.loads(body)["predictions"]) == 2
        status, body = http(url + "/invocations", b"Great product",
                            {"Content-Type": "text/plain", "Accept": "application/jsonlines"})
        assert status == 200
        assert set(json.loads(body.decode().splitlines()[0])) == {"topic_weights"}
        status, body = http(url + "/invocations", b"x" * (2 << 20),
                            {"Content-Type": "text/plain"})
        assert status == 413
        status, body = http(url + "/invocations", b"1,2", {"Content-Type": "text/csv"})
        assert status == 400
        assert http(url + "/execution-parameters")[0] == 200
    finally:
        stop_server(process)
    assert process.returncode == 0


def test_gunicorn_ping_fails_for_broken_model(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text('{"format": "something-else"}')
    log_path = tmp_path / "serve.log"
    process, url = start_server(tmp_path, log_path)
    try:
        wait_for_ping(process, url, 503)
        status, body = http(url + "/ping")
        assert "expected 'review-nlp-model'" in json.loads(body)["error"]
    finally:
        stop_server(process)
    assert "Model not loaded" in log_path.read_text()
