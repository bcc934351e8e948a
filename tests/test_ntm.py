"""Neural topic model: hand-computed loss, early stopping, checkpoints, inference, artifact."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist

from review_nlp.errors import DataError, InvalidHyperparameter, TrainingStopped, UserError
from review_nlp.models.artifact import load_artifact, save_artifact
from review_nlp.models.glove import glove_available
from review_nlp.models.ntm import (
    EarlyStopping,
    NeuralTopicModel,
    NTMConfig,
    batch_norm_weight,
    laplace_dirichlet_prior,
)
from review_nlp.models.training import FeatureData, StopSignal
from stop_signals import StopAfter

# Three planted topics of 8 words each; real words so that WETC has GloVe vectors.
VOCABULARY = [
    "dog", "cat", "horse", "cow", "sheep", "pig", "goat", "rabbit",
    "car", "truck", "bus", "train", "bicycle", "motorcycle", "van", "tractor",
    "apple", "banana", "orange", "grape", "lemon", "cherry", "peach", "pear",
]
FEATURE_DIM = len(VOCABULARY)
NUM_TOPICS = 3


def planted_documents(n_documents: int, seed: int) -> sp.csr_matrix:
    """Word counts drawn from documents that mix the three planted topics."""
    rng = np.random.default_rng(seed)
    topic_word = np.full((NUM_TOPICS, FEATURE_DIM), 0.01)
    for k in range(NUM_TOPICS):
        topic_word[k, 8 * k:8 * (k + 1)] = 1.0
    topic_word /= topic_word.sum(axis=1, keepdims=True)
    proportions = rng.dirichlet([0.2] * NUM_TOPICS, size=n_documents)
    lengths = rng.integers(5, 25, size=n_documents)
    counts = [rng.multinomial(n, p @ topic_word) for n, p in zip(lengths, proportions)]
    return sp.csr_matrix(np.array(counts, dtype=np.float32))


TRAIN = FeatureData(planted_documents(160, seed=1))
VALIDATION = FeatureData(planted_documents(40, seed=2))
TEST = FeatureData(planted_documents(40, seed=3))


def tiny_config(**overrides) -> NTMConfig:
    settings = dict(feature_dim=FEATURE_DIM, num_topics=NUM_TOPICS, encoder_layers=[8],
                    mini_batch_size=32, epochs=3, optimizer="adam", learning_rate=0.01,
                    num_patience_epochs=10)
    settings.update(overrides)
    return NTMConfig(**settings)


def assert_same_weights(first: NeuralTopicModel, second: NeuralTopicModel) -> None:
    first_state, second_state = first.network.state_dict(), second.network.state_dict()
    assert first_state.keys() == second_state.keys()
    for name in first_state:
        assert torch.equal(first_state[name], second_state[name]), name


# --- hyperparameters --------------------------------------------------------------------------

def test_config_defaults():
    config = NTMConfig(feature_dim=2000, num_topics=20)
    # the built-in's defaults, except optimizer (the built-in's is adadelta)
    assert config.optimizer == "adam"
    assert config.learning_rate == 0.01
    assert config.batch_norm is False
    assert config.clip_gradient == math.inf
    assert config.encoder_layers == "auto"
    assert config.encoder_sizes() == [60, 40]
    assert config.encoder_layers_activation == "sigmoid"
    assert config.epochs == 50
    assert config.mini_batch_size == 256
    assert config.num_patience_epochs == 3
    assert config.rescale_gradient == 1.0
    assert config.sub_sample == 1.0
    assert config.tolerance == 0.001
    assert config.weight_decay == 0.0
    assert config.prior == "dirichlet"


@pytest.mark.parametrize("overrides, message", [
    ({"num_topics": 1}, "num_topics=1 must be in [2, 1000]"),
    ({"num_topics": 1001}, "num_topics=1001 must be in [2, 1000]"),
    ({"feature_dim": 0}, "feature_dim=0 must be in [1, 1000000]"),
    ({"learning_rate": 2.0}, "learning_rate=2.0 must be in [1e-06, 1.0]"),
    ({"mini_batch_size": 10001}, "mini_batch_size=10001 must be in [1, 10000]"),
    ({"tolerance": 0.5}, "tolerance=0.5 must be in [1e-06, 0.1]"),
    ({"rescale_gradient": 0.0}, "rescale_gradient=0.0 must be in [0.001, 1.0]"),
    ({"weight_decay": 1.5}, "weight_decay=1.5 must be in [0.0, 1.0]"),
    ({"clip_gradient": 0.0}, "clip_gradient=0.0 must be >= 0.001"),
    ({"epochs": 0}, "epochs=0 must be >= 1"),
    ({"num_patience_epochs": 0}, "num_patience_epochs=0 must be >= 1"),
    ({"sub_sample": 0.0}, "sub_sample=0.0 must be in (0.0, 1.0]"),
    ({"optimizer": "lbfgs"}, "optimizer='lbfgs' must be one of sgd, adam, adagrad, adadelta"),
    ({"encoder_layers_activation": "gelu"}, "encoder_layers_activation='gelu' must be one of"),
    ({"encoder_layers": [10, 0]}, "encoder_layers=[10, 0] must be 'auto' or a non-empty list"),
    ({"encoder_layers": "10,5"}, "encoder_layers='10,5' must be 'auto' or a non-empty list"),
    ({"encoder_layers": []}, "encoder_layers=[] must be 'auto' or a non-empty list"),
    ({"prior": "beta"}, "prior='beta' must be one of dirichlet, gaussian"),
    ({"dirichlet_alpha": 0.0}, "dirichlet_alpha=0.0 must be > 0"),
    ({"dropout": 1.0}, "dropout=1.0 must be in [0.0, 1.0)"),
    ({"decoder_batch_norm_epochs": -1}, "decoder_batch_norm_epochs=-1 must be >= 0"),
    ({"projection_weight_decay": 2.0}, "projection_weight_decay=2.0 must be in [0.0, 1.0]"),
    ({"coherence_weight": -1.0}, "coherence_weight=-1.0 must be in [0.0, 1000.0]"),
    ({"seed": -1}, "seed=-1 must be >= 0"),
])
def test_config_rejects_out_of_range(overrides, message):
    settings = {"feature_dim": 2000, "num_topics": 20, **overrides}
    with pytest.raises(InvalidHyperparameter) as raised:
        NTMConfig(**settings)
    assert str(raised.value).startswith(message)


# --- the loss, computed by hand ---------------------------------------------------------------

def _sigmoid(values):
    return 1.0 / (1.0 + np.exp(-values))


def _softmax(values):
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


@pytest.mark.parametrize("prior", ["gaussian", "dirichlet"])
def test_loss_matches_hand_computation(prior):
    config = NTMConfig(feature_dim=4, num_topics=2, encoder_layers=[3], prior=prior, seed=5)
    model = NeuralTopicModel(config, device="cpu")
    rng = np.random.default_rng(7)
    weights = {name: rng.normal(scale=0.5, size=tuple(parameter.shape))
               for name, parameter in model.network.named_parameters()}
    with torch.no_grad():
        for name, parameter in model.network.named_parameters():
            parameter.copy_(torch.tensor(weights[name]))
    if prior == "dirichlet":
        model.network.batch_norm_weight.fill_(0.25)
    counts = np.array([2.0, 0.0, 1.0, 1.0])
    # The model draws its scoring noise from a generator seeded with `seed`.
    noise = torch.randn((1, 2), generator=torch.Generator().manual_seed(5)).numpy()[0]

    # encoder; in evaluation mode, untrained batch norm divides by sqrt(1 + 1e-5)
    hidden = _sigmoid(weights["encoder.0.weight"] @ counts + weights["encoder.0.bias"])
    mean = weights["mean.weight"] @ hidden + weights["mean.bias"]
    log_variance = weights["log_variance.weight"] @ hidden + weights["log_variance.bias"]
    batch_norm_scale = 1.0 / math.sqrt(1.0 + 1e-5)
    if prior == "dirichlet":
        mean = mean * batch_norm_scale + weights["mean_norm.bias"]
        log_variance = (log_variance * batch_norm_scale
                        + weights["log_variance_norm.bias"])
    latent = mean + np.exp(0.5 * log_variance) * noise

    # decoder and reconstruction
    if prior == "dirichlet":
        # batch-normalized topic logits mixed 1:3 with the unnormalized ones
        topic_logits = weights["projection_weight"] @ _softmax(latent)
        logits = (0.25 * topic_logits * batch_norm_scale
                  + 0.75 * (topic_logits + weights["background"]))
        prior_mean, prior_variance = np.zeros(2), np.full(2, 0.5)  # Laplace, alpha = 1, K = 2
    else:
        logits = weights["projection_weight"] @ latent + weights["background"]
        prior_mean, prior_variance = np.zeros(2), np.ones(2)
    log_probs = logits - np.log(np.exp(logits).sum())
    reconstruction = -(counts * log_probs).sum()
    kl = 0.5 * (np.exp(log_variance) / prior_variance
                + (mean - prior_mean) ** 2 / prior_variance
                - 1.0 + np.log(prior_variance) - log_variance).sum()

    scores = model.score(FeatureData(counts[None, :]))
    assert scores["recons"] == pytest.approx(reconstruction / 4, rel=1e-5)
    assert scores["kld"] == pytest.approx(kl / 4, rel=1e-5)
    assert scores["total_loss"] == pytest.approx((reconstruction + kl) / 4, rel=1e-5)


def test_laplace_dirichlet_prior_hand_values():
    # K = 2, alpha = (1, 4): mean = log alpha - mean(log alpha) = (-log 2, log 2);
    # variance = (1 / alpha) (1 - 2/2) + (1/4) (1 + 1/4) = 0.3125 for both topics.
    mean, variance = laplace_dirichlet_prior(np.array([1.0, 4.0]))
    assert mean == pytest.approx([-math.log(2), math.log(2)])
    assert variance == pytest.approx([0.3125, 0.3125])
    # K = 4, alpha = 1: variance = 1 * (1 - 2/4) + 4 / 16 = 0.75.
    _, variance = laplace_dirichlet_prior(np.ones(4))
    assert variance == pytest.approx([0.75] * 4)


def test_batch_norm_weight_fades_linearly():
    assert [batch_norm_weight(epoch, 4) for epoch in range(1, 7)] == [1.0, 0.75, 0.5, 0.25,
                                                                      0.0, 0.0]
    assert batch_norm_weight(1, 0) == 0.0


def test_background_starts_at_log_word_frequency(tmp_path):
    signal = StopSignal()
    signal.request()
    with pytest.raises(TrainingStopped):
        NeuralTopicModel(tiny_config()).fit(TRAIN, checkpoint_dir=tmp_path, stop_signal=signal)
    initial = torch.load(tmp_path / "checkpoint-epoch0000.pt", weights_only=True)["model"]
    counts = np.asarray(TRAIN.features.sum(axis=0)).ravel() + 1.0
    expected = np.log(counts / counts.sum())
    assert initial["background"].numpy() == pytest.approx(expected, rel=1e-6)
    assert float(initial["batch_norm_weight"]) == 1.0


# --- early stopping ---------------------------------------------------------------------------

def test_early_stopping_scripted_losses():
    stopping = EarlyStopping(patience=2, tolerance=0.1)
    steps = [stopping.update(epoch, loss)
             for epoch, loss in enumerate([10.0, 9.0, 8.95, 8.93, 8.92], start=1)]
    assert [step.bad for step in steps] == [False, False, True, True, True]
    assert [step.bad_count for step in steps] == [0, 0, 1, 2, 3]
    # bad count 3 exceeds patience 2 only at epoch 5
    assert [step.stop for step in steps] == [False, False, False, False, True]
    assert steps[3].window == [9.0, 8.95]
    assert steps[3].min_window_loss == 8.95
    assert steps[3].difference == pytest.approx(0.02)
    assert stopping.best_epoch == 5
    assert stopping.best_loss == 8.92


def test_early_stopping_good_epoch_resets_count():
    # Losses and tolerance are exact in binary, so the differences are exact too.
    stopping = EarlyStopping(patience=1, tolerance=0.25)
    steps = [stopping.update(epoch, loss)
             for epoch, loss in enumerate([8.0, 7.875, 7.5, 7.25, 7.125], start=1)]
    # 8.0 - 7.875 = 0.125 is not > 0.25 (bad); 7.875 - 7.5 = 0.375 is (good, reset);
    # 7.5 - 7.25 = 0.25 is not > 0.25 (bad); 0.125 (bad), and bad count 2 > patience 1.
    assert [step.bad for step in steps] == [False, True, False, True, True]
    assert [step.bad_count for step in steps] == [0, 1, 0, 1, 2]
    assert [step.stop for step in steps] == [False, False, False, False, True]


def test_early_stopping_window_is_previous_epochs_only():
    stopping = EarlyStopping(patience=2, tolerance=0.01)
    for epoch, loss in enumerate([5.0, 4.0, 6.0, 6.0], start=1):
        step = stopping.update(epoch, loss)
    # epoch 4 compares with min(4.0, 6.0); epoch 1's 5.0 has left the window
    assert step.window == [4.0, 6.0]
    assert step.bad_count == 2
    assert stopping.best_epoch == 2


def test_early_stopping_state_roundtrip():
    stopping = EarlyStopping(patience=3, tolerance=0.01)
    for epoch, loss in enumerate([3.0, 2.0, 2.5], start=1):
        stopping.update(epoch, loss)
    copy = EarlyStopping(patience=3, tolerance=0.01)
    copy.load_state_dict(stopping.state_dict())
    assert copy.update(4, 2.2) == stopping.update(4, 2.2)


def test_fit_stops_where_rule_says():
    model = NeuralTopicModel(tiny_config(epochs=40, num_patience_epochs=1, tolerance=0.05))
    history = model.fit(TRAIN, VALIDATION)
    assert len(history) < 40
    replay = EarlyStopping(patience=1, tolerance=0.05)
    stops = [replay.update(row["epoch"], row["validation:total_loss"]).stop for row in history]
    assert stops.index(True) == len(history) - 1


def test_fit_keeps_best_epoch_weights():
    model = NeuralTopicModel(tiny_config(epochs=6))
    history = model.fit(TRAIN, VALIDATION)
    best = min(row["validation:total_loss"] for row in history)
    assert model.metrics_["validation:total_loss"] == best
    assert model.score(VALIDATION)["total_loss"] == pytest.approx(best, abs=1e-9)
    assert history[model.best_epoch_ - 1]["validation:total_loss"] == best


def test_early_stopping_on_train_loss_without_validation():
    model = NeuralTopicModel(tiny_config(epochs=3))
    history = model.fit(TRAIN)
    assert "validation:total_loss" not in history[0]
    best = min(row["train:total_loss"] for row in history)
    assert model.metrics_["train:total_loss"] == best


# --- data checks ------------------------------------------------------------------------------

def test_feature_dim_mismatch_names_both_numbers():
    model = NeuralTopicModel(tiny_config(feature_dim=30))
    with pytest.raises(InvalidHyperparameter) as raised:
        model.fit(TRAIN)
    assert "feature_dim=30" in str(raised.value)
    assert "24 features" in str(raised.value)


def test_feature_dim_mismatch_in_validation():
    narrow = FeatureData(VALIDATION.features[:, :20])
    with pytest.raises(InvalidHyperparameter, match="validation channel.*20 features"):
        NeuralTopicModel(tiny_config()).fit(TRAIN, narrow)


def test_vocabulary_length_mismatch():
    with pytest.raises(InvalidHyperparameter, match="vocabulary, which has 23 words"):
        NeuralTopicModel(tiny_config()).fit(TRAIN, vocabulary=VOCABULARY[:-1])


def test_negative_counts_rejected():
    counts = TRAIN.features.copy()
    counts.data[0] = -1.0
    with pytest.raises(DataError, match="negative or non-finite"):
        NeuralTopicModel(tiny_config()).fit(FeatureData(counts))


def test_empty_documents_are_skipped():
    empty = sp.csr_matrix((5, FEATURE_DIM), dtype=np.float32)
    train = FeatureData(sp.vstack([empty, TRAIN.features, empty]).tocsr())
    validation = FeatureData(sp.vstack([VALIDATION.features, empty]).tocsr())
    history = NeuralTopicModel(tiny_config(epochs=2)).fit(train, validation)
    assert all(math.isfinite(row["train:total_loss"]) for row in history)
    assert all(math.isfinite(row["validation:total_loss"]) for row in history)


def test_all_empty_validation_rejected():
    empty = FeatureData(sp.csr_matrix((4, FEATURE_DIM), dtype=np.float32))
    with pytest.raises(DataError, match="validation channel has no non-empty documents"):
        NeuralTopicModel(tiny_config()).fit(TRAIN, empty)


# --- reproducibility and checkpoints ----------------------------------------------------------

def test_fixed_seed_repeats_on_cpu():
    first = NeuralTopicModel(tiny_config(sub_sample=0.7))
    second = NeuralTopicModel(tiny_config(sub_sample=0.7))
    assert first.fit(TRAIN, VALIDATION) == second.fit(TRAIN, VALIDATION)
    assert_same_weights(first, second)


def test_resume_equals_uninterrupted(tmp_path):
    full = NeuralTopicModel(tiny_config(epochs=4))
    full.fit(TRAIN, VALIDATION, checkpoint_dir=tmp_path / "full")

    NeuralTopicModel(tiny_config(epochs=2)).fit(TRAIN, VALIDATION,
                                                checkpoint_dir=tmp_path / "parts")
    resumed = NeuralTopicModel(tiny_config(epochs=4))
    history = resumed.fit(TRAIN, VALIDATION, checkpoint_dir=tmp_path / "parts")

    assert history == full.history_
    assert len(history) == 4
    assert_same_weights(resumed, full)
    last_full = torch.load(tmp_path / "full" / "checkpoint-epoch0004.pt", weights_only=True)
    last_resumed = torch.load(tmp_path / "parts" / "checkpoint-epoch0004.pt",
                              weights_only=True)
    for name, tensor in last_full["model"].items():
        assert torch.equal(tensor, last_resumed["model"][name]), name


def test_checkpoint_is_self_describing(tmp_path):
    NeuralTopicModel(tiny_config(epochs=1)).fit(TRAIN, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / "checkpoint-epoch0001.pt", weights_only=True)
    assert state["algorithm"] == "ntm"
    assert state["epoch"] == 1
    assert state["config"] == dataclasses.asdict(tiny_config(epochs=1))
    for key in ("model", "optimizer", "best_loss", "best_epoch", "best_model",
                "early_stopping", "history", "rng"):
        assert key in state


def test_resume_rejects_changed_hyperparameters(tmp_path):
    NeuralTopicModel(tiny_config(epochs=1)).fit(TRAIN, checkpoint_dir=tmp_path)
    with pytest.raises(UserError, match="num_topics=3, but this run has num_topics=4"):
        NeuralTopicModel(tiny_config(num_topics=4)).fit(TRAIN, checkpoint_dir=tmp_path)


def test_stop_before_first_epoch_saves_initial_state(tmp_path):
    signal = StopSignal()
    signal.request()
    with pytest.raises(TrainingStopped):
        NeuralTopicModel(tiny_config()).fit(TRAIN, checkpoint_dir=tmp_path, stop_signal=signal)
    assert (tmp_path / "checkpoint-epoch0000.pt").is_file()

    resumed = NeuralTopicModel(tiny_config())
    resumed.fit(TRAIN, checkpoint_dir=tmp_path)
    uninterrupted = NeuralTopicModel(tiny_config())
    assert resumed.history_ == uninterrupted.fit(TRAIN)
    assert_same_weights(resumed, uninterrupted)


def test_stop_mid_epoch_keeps_last_complete_epoch(tmp_path):
    batches_per_epoch = math.ceil(TRAIN.n_samples / 32)
    with pytest.raises(TrainingStopped, match="checkpoint of epoch 1"):
        NeuralTopicModel(tiny_config()).fit(
            TRAIN, VALIDATION, checkpoint_dir=tmp_path,
            stop_signal=StopAfter(batches_per_epoch + 2))
    assert (tmp_path / "checkpoint-epoch0001.pt").is_file()
    assert not (tmp_path / "checkpoint-epoch0002.pt").exists()

    resumed = NeuralTopicModel(tiny_config())
    resumed.fit(TRAIN, VALIDATION, checkpoint_dir=tmp_path)
    uninterrupted = NeuralTopicModel(tiny_config())
    assert resumed.history_ == uninterrupted.fit(TRAIN, VALIDATION)
    assert_same_weights(resumed, uninterrupted)


def test_stop_without_checkpoint_folder_raises():
    signal = StopSignal()
    signal.request()
    with pytest.raises(TrainingStopped):
        NeuralTopicModel(tiny_config()).fit(TRAIN, stop_signal=signal)


def test_distributed_single_process_matches_plain(tmp_path):
    plain = NeuralTopicModel(tiny_config(epochs=2))
    plain.fit(TRAIN, VALIDATION)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}",
                            rank=0, world_size=1)
    try:
        distributed = NeuralTopicModel(tiny_config(epochs=2))
        history = distributed.fit(TRAIN, VALIDATION, checkpoint_dir=tmp_path / "checkpoints")
    finally:
        dist.destroy_process_group()
    assert history == plain.history_
    assert (tmp_path / "checkpoints" / "checkpoint-epoch0002.pt").is_file()


# --- metrics and logs -------------------------------------------------------------------------

def test_fit_reports_final_metrics():
    model = NeuralTopicModel(tiny_config(epochs=2))
    model.fit(TRAIN, VALIDATION, TEST, vocabulary=VOCABULARY)
    metrics = model.metrics_
    assert metrics["test:perplexity"] == pytest.approx(math.exp(metrics["test:total_loss"]))
    assert -1.0 <= metrics["test:npmi"] <= 1.0
    assert 1.0 / NUM_TOPICS <= metrics["topics:tu"] <= 1.0
    if glove_available():
        assert -1.0 <= metrics["topics:wetc"] <= 1.0


def test_fit_logs_builtin_lines(caplog):
    caplog.set_level(logging.INFO)
    NeuralTopicModel(tiny_config(epochs=2)).fit(TRAIN, VALIDATION, TEST)
    text = caplog.text
    assert "epoch=1, train total_loss <loss>=" in text
    assert "#validation_score (2): " in text
    assert "patience losses:" in text
    assert "Best model based on early stopping at epoch" in text
    assert ", validation total_loss <loss>=" in text
    assert ", test total_loss <loss>=" in text
    assert "#progress_metric: host=" in text
    assert "#throughput_metric: host=" in text
    # no vocabulary: TU only, topics as word ids
    assert "Topics from epoch:final (num_topics:3) [, tu " in text


def test_topics_block_with_vocabulary(caplog):
    caplog.set_level(logging.INFO)
    NeuralTopicModel(tiny_config(epochs=1)).fit(TRAIN, vocabulary=VOCABULARY)
    lines = caplog.text.splitlines()
    header = next(i for i, line in enumerate(lines) if "Topics from epoch:final" in line)
    topic_lines = lines[header + 1:header + 1 + NUM_TOPICS]
    assert all(len(line.split("] ")[1].split()) == 20 for line in topic_lines)
    if glove_available():
        assert "[wetc " in lines[header]


def test_planted_topics_are_recovered():
    model = NeuralTopicModel(tiny_config(epochs=30, learning_rate=0.05, num_patience_epochs=100))
    model.fit(TRAIN, vocabulary=VOCABULARY)
    # each topic's 5 most probable words come from one planted block of 8 words
    blocks = {frozenset(VOCABULARY.index(word) // 8 for word in words)
              for words in model.top_words(5)}
    assert blocks == {frozenset({0}), frozenset({1}), frozenset({2})}


# --- inference and artifact -------------------------------------------------------------------

def test_predict_returns_probability_vectors():
    model = NeuralTopicModel(tiny_config(epochs=1))
    model.fit(TRAIN)
    predictions = model.predict(TEST.features)
    assert len(predictions) == TEST.n_samples
    weights = np.array([row["topic_weights"] for row in predictions])
    assert weights.shape == (TEST.n_samples, NUM_TOPICS)
    assert weights.sum(axis=1) == pytest.approx(np.ones(TEST.n_samples), abs=1e-5)
    assert (weights >= 0).all()
    assert model.predict(TEST.features) == predictions
    assert np.allclose(model.transform(TEST.features.toarray()), weights)


def test_predict_rejects_wrong_width():
    model = NeuralTopicModel(tiny_config())
    with pytest.raises(InvalidHyperparameter, match="feature_dim=24 does not match the input"):
        model.predict(np.ones((2, 10), dtype=np.float32))


def test_topic_word_matrix_rows_are_distributions():
    model = NeuralTopicModel(tiny_config())
    topic_word = model.topic_word_matrix()
    assert topic_word.shape == (NUM_TOPICS, FEATURE_DIM)
    assert topic_word.sum(axis=1) == pytest.approx(np.ones(NUM_TOPICS), abs=1e-5)
    assert len(model.top_words(4)[0]) == 4


def test_artifact_roundtrip(tmp_path):
    model = NeuralTopicModel(tiny_config(epochs=2))
    model.fit(TRAIN, VALIDATION, vocabulary=VOCABULARY)
    artifact = model.to_artifact(featurizer={"kind": "counts"})
    assert artifact.tensors["projection_weight"].shape == (FEATURE_DIM, NUM_TOPICS)

    save_artifact(tmp_path / "model", artifact)
    loaded = NeuralTopicModel.from_artifact(load_artifact(tmp_path / "model"))
    assert loaded.config == model.config
    assert loaded.vocabulary_ == VOCABULARY
    assert loaded.metrics_ == model.metrics_
    assert loaded.predict(TEST.features) == model.predict(TEST.features)
    assert loaded.top_words() == model.top_words()


def test_from_artifact_rejects_other_algorithm():
    artifact = NeuralTopicModel(tiny_config()).to_artifact()
    artifact.algorithm = "kmeans"
    with pytest.raises(UserError, match="'kmeans' model"):
        NeuralTopicModel.from_artifact(artifact)


def _train_distributed_rank(rank: int, folder: str) -> None:
    """One of two gloo processes; rank 1 gets 33 rows fewer, so it runs out of batches first."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=2)
    try:
        shard = TRAIN.shard(rank, 2)
        if rank == 1:
            shard = FeatureData(shard.features[:-33])
        model = NeuralTopicModel(tiny_config(epochs=3))
        history = model.fit(shard, VALIDATION, checkpoint_dir=f"{folder}/checkpoints")
        torch.save({"history": history, "weights": model.network.state_dict()},
                   f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_two_processes_agree(tmp_path):
    torch.multiprocessing.spawn(_train_distributed_rank, args=(str(tmp_path),), nprocs=2)
    first = torch.load(tmp_path / "rank0.pt", weights_only=True)
    second = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert first["history"] == second["history"]
    for name, tensor in first["weights"].items():
        assert torch.equal(tensor, second["weights"][name]), name
    checkpoints = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-epoch0002.pt", "checkpoint-epoch0003.pt"]
