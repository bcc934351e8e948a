"""Web-scale k-means: hand-computed cases, scikit-learn parity, checkpoints and model files."""

from __future__ import annotations

import csv
import logging
import os
import re
import socket

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.datasets import make_blobs
from sklearn.feature_extraction.text import TfidfVectorizer

from review_nlp.errors import InvalidHyperparameter, TrainingStopped
from review_nlp.models import kmeans as kmeans_module
from review_nlp.models.artifact import load_artifact, save_artifact
from review_nlp.models.kmeans import KMeans, KMeansConfig, _HostRows, _TrainingState
from review_nlp.models.mxnet_ndarray import decode_ndarray_list
from review_nlp.models.training import FeatureData
from stop_signals import StopAfter

# Two clusters: A = (0,0), (0,2), (3,1) with mean (1,1) and squared distances 2, 2, 4;
# B = (20,0), (20,4) with mean (20,2) and squared distances 4, 4. Inertia 16.
HAND_POINTS = np.array([[0, 0], [0, 2], [3, 1], [20, 0], [20, 4]], dtype=np.float32)
HAND_CENTERS = np.array([[1, 1], [20, 2]], dtype=np.float32)
HAND_INERTIA = 16.0

FORMATS = {"dense": np.asarray, "sparse": sp.csr_matrix}


def sorted_rows(array: np.ndarray) -> np.ndarray:
    return array[np.lexsort(array.T[::-1])]


def fit_model(X, **overrides) -> KMeans:
    n_features = X.feature_dim if isinstance(X, FeatureData) else X.shape[1]
    settings = {"feature_dim": n_features, "k": 2}
    settings.update(overrides)
    model = KMeans(KMeansConfig(**settings), device="cpu")
    model.fit(X)
    return model


def sparse_blobs(n_per_cluster: int = 60, seed: int = 0) -> sp.csr_matrix:
    """Four clusters with disjoint active features, with about 7.5 % of the entries non-zero."""
    rng = np.random.default_rng(seed)
    blocks = []
    for cluster in range(4):
        block = np.zeros((n_per_cluster, 100), dtype=np.float32)
        active = rng.random((n_per_cluster, 25)) < 0.3
        block[:, cluster * 25:(cluster + 1) * 25] = active * rng.uniform(0.5, 1.5, active.shape)
        blocks.append(block)
    return sp.csr_matrix(np.vstack(blocks))


# --- hand-computed cases ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_two_clusters_by_hand(fmt):
    model = fit_model(FORMATS[fmt](HAND_POINTS))
    np.testing.assert_allclose(sorted_rows(model.cluster_centers_), HAND_CENTERS, atol=1e-6)
    assert model.inertia_ == pytest.approx(HAND_INERTIA, rel=1e-6)
    assert model.metrics_["train:msd"] == pytest.approx(HAND_INERTIA / 5, rel=1e-6)
    assert model.labels_[0] == model.labels_[1] == model.labels_[2] != model.labels_[3]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_two_clusters_without_reduction(fmt):
    # K = k: the mini-batch phase alone finds the means, because each center is the
    # running mean of its records
    X = FORMATS[fmt](HAND_POINTS)
    model = fit_model(X, extra_center_factor=1, init_method="kmeans++", mini_batch_size=2,
                      epochs=3)
    np.testing.assert_allclose(sorted_rows(model.cluster_centers_), HAND_CENTERS, atol=1e-5)
    assert model.inertia_ == pytest.approx(HAND_INERTIA, rel=1e-5)


def make_state(centers, counts) -> _TrainingState:
    return _TrainingState(centers=torch.tensor(centers, dtype=torch.float32),
                          counts=torch.tensor(counts, dtype=torch.float64))


def test_update_moves_center_by_count_ratio():
    model = KMeans(KMeansConfig(feature_dim=1, k=2), device="cpu")
    model._state = make_state([[0.0], [10.0]], [3.0, 1.0])
    rows = _HostRows(np.array([[1.0], [2.0], [9.0]], dtype=np.float32), "train")
    model._update(rows, np.arange(3), stop_requested=False)
    # center 0: p = 2 / (3 + 2) and mean 1.5, so 0.6 * 0 + 0.4 * 1.5
    # center 1: p = 1 / (1 + 1) and mean 9, so 0.5 * 10 + 0.5 * 9
    np.testing.assert_allclose(model._state.centers.numpy(), [[0.6], [9.5]], rtol=1e-6)
    np.testing.assert_allclose(model._state.counts.numpy(), [5.0, 2.0])


def test_update_decays_counts_by_half_life():
    model = KMeans(KMeansConfig(feature_dim=1, k=1, half_life_time_size=2), device="cpu")
    model._state = make_state([[0.0]], [4.0])
    rows = _HostRows(np.array([[6.0], [6.0]], dtype=np.float32), "train")
    model._update(rows, np.arange(2), stop_requested=False)
    # 2 further records halve the old count: p = 2 / (2 + 2)
    np.testing.assert_allclose(model._state.centers.numpy(), [[3.0]], rtol=1e-6)
    np.testing.assert_allclose(model._state.counts.numpy(), [4.0])


# --- dense and sparse input ------------------------------------------------------------------

@pytest.mark.parametrize("init_method", ["random", "kmeans++"])
def test_dense_and_sparse_give_same_result(init_method):
    X = sparse_blobs()
    sparse_model = fit_model(X, k=4, init_method=init_method, mini_batch_size=50, epochs=2)
    dense_model = fit_model(X.toarray(), k=4, init_method=init_method, mini_batch_size=50,
                            epochs=2)
    np.testing.assert_allclose(sparse_model.cluster_centers_, dense_model.cluster_centers_,
                               atol=1e-5)
    assert sparse_model.inertia_ == pytest.approx(dense_model.inertia_, rel=1e-5)
    np.testing.assert_array_equal(sparse_model.labels_, dense_model.labels_)


def test_feature_data_input_matches_csr():
    X = sparse_blobs()
    from_csr = fit_model(X, k=4)
    from_feature_data = fit_model(FeatureData(X), k=4)
    np.testing.assert_array_equal(from_csr.cluster_centers_, from_feature_data.cluster_centers_)


def test_dense_csr_densified_in_blocks(monkeypatch):
    X, _ = make_blobs(n_samples=300, centers=4, n_features=8, random_state=4)
    X = X.astype(np.float32)
    from_array = fit_model(X, k=4, mini_batch_size=100)
    monkeypatch.setattr(kmeans_module, "BLOCK_ELEMENTS", 160)  # 4 rows of 40 centers
    from_csr = fit_model(sp.csr_matrix(X), k=4, mini_batch_size=100)
    np.testing.assert_allclose(from_array.cluster_centers_, from_csr.cluster_centers_, atol=1e-5)
    assert from_array.inertia_ == pytest.approx(from_csr.inertia_, rel=1e-5)


def test_gram_and_feature_local_lloyd_agree(monkeypatch):
    X, _ = make_blobs(n_samples=400, centers=5, n_features=6, random_state=3)
    gram_model = fit_model(X, k=5, mini_batch_size=100)
    monkeypatch.setattr(kmeans_module, "GRAM_MAX_POINTS", 0)
    feature_model = fit_model(X, k=5, mini_batch_size=100)
    # the runs tie, so rounding may pick another run with the same centers in another order
    np.testing.assert_allclose(sorted_rows(gram_model.cluster_centers_),
                               sorted_rows(feature_model.cluster_centers_), atol=1e-4)
    assert gram_model.inertia_ == pytest.approx(feature_model.inertia_, rel=1e-5)


def test_small_blocks_give_same_result(monkeypatch):
    X = sparse_blobs()
    whole = fit_model(X, k=4, mini_batch_size=100)
    monkeypatch.setattr(kmeans_module, "BLOCK_ELEMENTS", 800)  # 20 rows of 40 centers
    blocked = fit_model(X, k=4, mini_batch_size=100)
    np.testing.assert_allclose(whole.cluster_centers_, blocked.cluster_centers_, atol=1e-5)
    assert whole.inertia_ == pytest.approx(blocked.inertia_, rel=1e-6)


# --- parity with scikit-learn ----------------------------------------------------------------

@pytest.mark.parametrize("init_method", ["random", "kmeans++"])
def test_inertia_close_to_sklearn_on_blobs(init_method):
    X, _ = make_blobs(n_samples=3000, centers=8, n_features=10, cluster_std=2.0,
                      random_state=0)
    X = X.astype(np.float32)
    model = fit_model(X, k=8, init_method=init_method, mini_batch_size=500)
    reference = SklearnKMeans(n_clusters=8, n_init=3, random_state=0).fit(X)
    assert model.inertia_ <= reference.inertia_ * 1.02


def read_review_texts(path, limit: int) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [row[1] for _, row in zip(range(limit), csv.reader(handle))]


def test_inertia_close_to_sklearn_on_review_tfidf(reviews_dir):
    texts = read_review_texts(reviews_dir / "marc_en_train.csv", 800)
    X = TfidfVectorizer(min_df=3, stop_words="english", dtype=np.float32).fit_transform(texts)
    model = fit_model(X, k=8, mini_batch_size=200, epochs=2)
    reference = SklearnKMeans(n_clusters=8, n_init=3, random_state=0).fit(X)
    assert model.inertia_ <= reference.inertia_ * 1.02


# --- hyperparameters and input checks --------------------------------------------------------

@pytest.mark.parametrize("name, value, message", [
    ("k", 0, "k=0 must be a positive integer"),
    ("k", True, "k=True must be a positive integer"),
    ("k", "3", "k='3' must be a positive integer"),
    ("feature_dim", -1, "feature_dim=-1 must be a positive integer"),
    ("mini_batch_size", 0, "mini_batch_size=0 must be a positive integer"),
    ("epochs", 0, "epochs=0 must be a positive integer"),
    ("init_method", "k-means++", "init_method='k-means++' must be one of random, kmeans++"),
    ("local_lloyd_init_method", "forgy", "must be one of random, kmeans++"),
    ("extra_center_factor", 0, "extra_center_factor=0 must be a positive integer or 'auto'"),
    ("extra_center_factor", "Auto", "must be a positive integer or 'auto'"),
    ("local_lloyd_num_trials", 0, "must be a positive integer or 'auto'"),
    ("local_lloyd_max_iter", 0, "local_lloyd_max_iter=0 must be a positive integer"),
    ("local_lloyd_tol", 1.5, "local_lloyd_tol=1.5 must be in [0, 1]"),
    ("local_lloyd_tol", -0.1, "must be in [0, 1]"),
    ("half_life_time_size", -1, "half_life_time_size=-1 must be a non-negative integer"),
    ("final_lloyd_iter", -1, "must be a non-negative integer"),
    ("eval_metrics", ["mse"], 'must be a non-empty list of distinct "msd" and "ssd"'),
    ("eval_metrics", [], "must be a non-empty list"),
    ("eval_metrics", ["msd", "msd"], "must be a non-empty list of distinct"),
    ("force_dense", "true", "force_dense='true' must be true or false"),
])
def test_invalid_hyperparameter(name, value, message):
    settings = {"feature_dim": 4, "k": 2, name: value}
    with pytest.raises(InvalidHyperparameter, match=re.escape(message)) as error:
        KMeansConfig(**settings)
    assert error.value.name == name


def test_defaults_match_builtin():
    config = KMeansConfig(feature_dim=4, k=2)
    assert config.mini_batch_size == 5000
    assert config.epochs == 1
    assert config.init_method == "random"
    assert config.extra_center_factor == "auto"
    assert config.local_lloyd_max_iter == 300
    assert config.local_lloyd_tol == 1e-4
    assert config.local_lloyd_init_method == "kmeans++"
    assert config.local_lloyd_num_trials == "auto"
    assert config.half_life_time_size == 0
    assert config.eval_metrics == ["msd"]


def test_auto_center_factor_capped_by_records():
    config = KMeansConfig(feature_dim=4, k=20)
    assert config.n_centers(100_000) == 200
    assert config.n_centers(50) == 50
    assert config.n_centers(20) == 20


def test_feature_dim_mismatch_names_both_numbers():
    model = KMeans(KMeansConfig(feature_dim=3, k=2), device="cpu")
    with pytest.raises(InvalidHyperparameter, match=r"feature_dim=3 does not match the 2 "
                                                    r"features of the train data"):
        model.fit(HAND_POINTS)


def test_k_larger_than_records_rejected():
    model = KMeans(KMeansConfig(feature_dim=2, k=6), device="cpu")
    with pytest.raises(InvalidHyperparameter, match=r"k=6 must not exceed the number of "
                                                    r"training records \(5\)"):
        model.fit(HAND_POINTS)


def test_batch_larger_than_records_warns(caplog):
    caplog.set_level(logging.WARNING)
    fit_model(HAND_POINTS, mini_batch_size=100)
    assert "mini_batch_size=100 > 5 training records; using 5" in caplog.text


def test_predict_before_fit_rejected():
    model = KMeans(KMeansConfig(feature_dim=2, k=2), device="cpu")
    with pytest.raises(RuntimeError, match="not fitted"):
        model.predict(HAND_POINTS)


# --- determinism and checkpoints -------------------------------------------------------------

def test_same_seed_same_result():
    X = sparse_blobs()
    first = fit_model(X, k=4, mini_batch_size=40, epochs=2, init_method="kmeans++")
    second = fit_model(X, k=4, mini_batch_size=40, epochs=2, init_method="kmeans++")
    np.testing.assert_array_equal(first.cluster_centers_, second.cluster_centers_)
    assert first.inertia_ == second.inertia_
    assert first.history_ == second.history_


def test_other_seed_other_start():
    X, _ = make_blobs(n_samples=300, centers=6, n_features=4, random_state=1)
    first = fit_model(X, k=6, mini_batch_size=50, extra_center_factor=1, seed=0)
    second = fit_model(X, k=6, mini_batch_size=50, extra_center_factor=1, seed=1)
    assert not np.array_equal(first.cluster_centers_, second.cluster_centers_)


def resumable_config(epochs: int) -> KMeansConfig:
    return KMeansConfig(feature_dim=100, k=4, mini_batch_size=40, epochs=epochs, seed=7)


def test_resume_equals_uninterrupted(tmp_path):
    X = sparse_blobs()
    uninterrupted = KMeans(resumable_config(4), device="cpu")
    uninterrupted.fit(X)

    KMeans(resumable_config(2), device="cpu").fit(X, checkpoint_dir=tmp_path)
    resumed = KMeans(resumable_config(4), device="cpu")
    history = resumed.fit(X, checkpoint_dir=tmp_path)

    np.testing.assert_array_equal(resumed.cluster_centers_, uninterrupted.cluster_centers_)
    assert history == uninterrupted.history_
    assert [entry["epoch"] for entry in history] == [1, 2, 3, 4]
    assert resumed.n_steps_ == uninterrupted.n_steps_ == 4 * 6


@pytest.mark.parametrize("polls", [3, 5])  # mid-epoch, and the last mini-batch of epoch 1
def test_stop_then_resume_equals_uninterrupted(tmp_path, polls):
    X = sparse_blobs()
    uninterrupted = KMeans(resumable_config(2), device="cpu")
    uninterrupted.fit(X)

    with pytest.raises(TrainingStopped):
        KMeans(resumable_config(2), device="cpu").fit(
            X, checkpoint_dir=tmp_path, stop_signal=StopAfter(polls))
    assert list(tmp_path.glob("checkpoint-epoch*.pt"))
    resumed = KMeans(resumable_config(2), device="cpu")
    resumed.fit(X, checkpoint_dir=tmp_path)

    np.testing.assert_array_equal(resumed.cluster_centers_, uninterrupted.cluster_centers_)
    assert resumed.history_ == uninterrupted.history_


# --- inference and metrics -------------------------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_predict_distances_match_numpy(fmt):
    X = sparse_blobs()
    model = fit_model(X, k=4)
    queries = X[::7]
    rows = queries.toarray()
    predictions = model.predict(FORMATS[fmt](rows))

    sq_distances = ((rows[:, None, :] - model.cluster_centers_[None]) ** 2).sum(axis=2)
    expected_labels = sq_distances.argmin(axis=1)
    expected_distances = np.sqrt(sq_distances.min(axis=1))
    assert [p["closest_cluster"] for p in predictions] == expected_labels.astype(float).tolist()
    assert all(isinstance(p["closest_cluster"], float) for p in predictions)
    np.testing.assert_allclose([p["distance_to_cluster"] for p in predictions],
                               expected_distances, rtol=1e-5, atol=1e-5)


def test_assign_returns_labels_and_distances():
    model = fit_model(HAND_POINTS)
    labels, distances = model.assign(np.array([[0, 0], [21, 2]], dtype=np.float32))
    center_of_a = int(np.argmin(model.cluster_centers_[:, 0]))
    assert labels.tolist() == [center_of_a, 1 - center_of_a]
    np.testing.assert_allclose(distances, [np.sqrt(2), 1.0], rtol=1e-6)


def test_metrics_and_log_lines_with_test_channel(caplog):
    caplog.set_level(logging.INFO)
    X = sparse_blobs()
    model = KMeans(KMeansConfig(feature_dim=100, k=4, mini_batch_size=50,
                                        eval_metrics=["msd", "ssd"]), device="cpu")
    history = model.fit(FeatureData(X), test=FeatureData(X[:30]))

    assert set(model.metrics_) == {"train:msd", "test:msd", "test:ssd"}
    assert model.metrics_["test:msd"] == pytest.approx(model.metrics_["test:ssd"] / 30)
    assert history == [{"epoch": 1, "train:msd": pytest.approx(history[0]["train:msd"])}]
    assert "shrinking 40 centers into 4" in caplog.text
    assert "local kmeans attempt #0. Current mean square distance" in caplog.text
    assert "local kmeans attempt #9. Current mean square distance" in caplog.text
    assert "#quality_metric: host=algo-1, train msd <loss>=" in caplog.text
    assert "#quality_metric: host=algo-1, test msd <loss>=" in caplog.text
    assert "#quality_metric: host=algo-1, test ssd <loss>=" in caplog.text


def test_sklearn_attribute_names():
    model = fit_model(HAND_POINTS, seed=5, epochs=2)
    assert model.n_clusters == 2
    assert model.random_state == 5
    assert model.n_features_in_ == 2
    assert model.cluster_centers_.shape == (2, 2)
    assert model.cluster_centers_.dtype == np.float32
    assert model.labels_.shape == (5,)
    assert model.n_iter_ == 2


def test_final_lloyd_iterations_do_not_raise_inertia():
    X, _ = make_blobs(n_samples=600, centers=6, n_features=5, cluster_std=3.0, random_state=2)
    plain = fit_model(X, k=6, mini_batch_size=100)
    refined = fit_model(X, k=6, mini_batch_size=100, final_lloyd_iter=5)
    assert refined.inertia_ <= plain.inertia_ * (1 + 1e-6)


# --- model files -----------------------------------------------------------------------------

def test_mxnet_model_file_holds_centers():
    model = fit_model(HAND_POINTS)
    arrays, names = decode_ndarray_list(model.to_mxnet_model_file())
    assert names == []
    assert len(arrays) == 1
    assert arrays[0].dtype == np.float32
    np.testing.assert_array_equal(arrays[0], model.cluster_centers_)


def test_artifact_round_trip(tmp_path):
    model = fit_model(HAND_POINTS)
    save_artifact(tmp_path, model.to_artifact(vocabulary=["x", "y"]),
                  extra_files={"model_algo-1": model.to_mxnet_model_file()})
    loaded = KMeans.from_artifact(load_artifact(tmp_path), device="cpu")

    np.testing.assert_array_equal(loaded.cluster_centers_, model.cluster_centers_)
    assert loaded.config == model.config
    assert loaded.metrics_ == pytest.approx(model.metrics_)
    assert loaded.predict(HAND_POINTS) == model.predict(HAND_POINTS)
    assert (tmp_path / "model_algo-1").read_bytes() == model.to_mxnet_model_file()


# --- distributed -----------------------------------------------------------------------------

def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _fit_on_shard(rank: int, world_size: int, port: int, results) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        shard = FeatureData(sparse_blobs()).shard(rank, world_size)
        model = KMeans(KMeansConfig(feature_dim=100, k=4, mini_batch_size=30, epochs=2),
                               device="cpu")
        model.fit(shard)
        results.put((rank, model.cluster_centers_, model.inertia_, model.n_steps_))
    finally:
        dist.destroy_process_group()


def test_two_hosts_keep_identical_centers():
    # fork, not spawn, so that the workers need not import torch again
    context = mp.get_context("fork")
    results = context.Queue()
    port = _free_loopback_port()
    workers = [context.Process(target=_fit_on_shard, args=(rank, 2, port, results))
               for rank in range(2)]
    for worker in workers:
        worker.start()
    outputs = {}
    for _ in workers:
        rank, centers, inertia, n_steps = results.get(timeout=120)
        outputs[rank] = (centers, inertia, n_steps)
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0

    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    assert outputs[0][1] == outputs[1][1]
    assert outputs[0][2] == outputs[1][2] == 2 * 4  # 120 records per host, 30 per mini-batch
    single_host = fit_model(sparse_blobs(), k=4, mini_batch_size=60, epochs=2)
    assert outputs[0][1] <= single_host.inertia_ * 1.05
