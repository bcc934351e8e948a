"""Neural topic model: a variational autoencoder over bag-of-words, a drop-in for SageMaker's
built-in NTM.

It takes the built-in's hyperparameters with their names and ranges, logs its metric lines,
and returns per-document topic weights in its `topic_weights` field. Two latent spaces are
offered through `prior`:

- "gaussian": the built-in's model, NVDM (Miao, Yu, Blunsom, "Neural Variational Inference
  for Text Processing", ICML 2016). The latent vector z ~ N(0, I) feeds the decoder
  softmax(W z + b) directly.
- "dirichlet" (the default): ProdLDA (Srivastava, Sutton, "Autoencoding Variational Inference
  for Topic Models", ICLR 2017). A Dirichlet(alpha) prior on the topic proportions is
  approximated by a logistic normal, theta = softmax(h) with h ~ N(mu_1, Sigma_1), and the
  decoder is the product of experts softmax(b + W theta), batch-normalized early in training.
  On the review benchmark (bench/ntm.py) its topics are more coherent than NVDM's.

Shapes use `batch`, `vocab_size` (= feature_dim) and `num_topics`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DataError, InvalidHyperparameter, TrainingStopped, UserError
from . import topic_metrics
from .artifact import Artifact
from .coherence_term import CoherenceTerm
from .glove import GloveUnavailable, glove_vectors
from .training import (
    Checkpointer,
    FeatureData,
    StopSignal,
    all_reduce_sum,
    autocast,
    csr_to_tensor,
    current_host,
    is_distributed,
    is_main_process,
    log_progress,
    log_quality_metric,
    log_throughput,
    restore_rng_state,
    rng_state,
    seed_everything,
    select_device,
)

logger = logging.getLogger(__name__)

ALGORITHM = "ntm"
ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
OPTIMIZERS = ("sgd", "adam", "adagrad", "adadelta", "rmsprop")
PRIORS = ("dirichlet", "gaussian")
# The built-in logs the top 20 words of each topic and computes TU over them.
TOPIC_TOP_WORDS = 20
NPMI_TOP_WORDS = 10
# Rows per forward pass when scoring or predicting. Scoring has no backward pass, so it can
# take more rows than a training mini-batch.
SCORING_BATCH_SIZE = 4096


# --- hyperparameters --------------------------------------------------------------------------

@dataclass
class NTMConfig:
    """Hyperparameters with the built-in NTM's names, types and ranges, and its defaults except
    `optimizer`; then the fields beyond the built-in, from `prior` on."""

    feature_dim: int
    num_topics: int
    batch_norm: bool = False
    clip_gradient: float = math.inf
    encoder_layers: list[int] | str = "auto"
    encoder_layers_activation: str = "sigmoid"
    epochs: int = 50
    # The developer guide gives 0.001 and the container's default-input.json 0.01. 0.01 is the
    # value built-in jobs actually ran with, and it also suits Adam on this model.
    learning_rate: float = 0.01
    mini_batch_size: int = 256
    num_patience_epochs: int = 3
    # The built-in defaults to adadelta. On this model Adam gives more coherent topics at the
    # same uniqueness (bench/ntm.py on 10,000 reviews: NPMI -0.38 against -0.78, TU 0.88 for
    # both), so Adam is the default here. optimizer=adadelta restores the built-in's.
    optimizer: str = "adam"
    rescale_gradient: float = 1.0
    sub_sample: float = 1.0
    tolerance: float = 0.001
    weight_decay: float = 0.0
    # Beyond the built-in. `prior`: "dirichlet" (ProdLDA) or "gaussian" (NVDM).
    prior: str = "dirichlet"
    # Concentration of the symmetric Dirichlet prior; 1.0 as in ProdLDA.
    dirichlet_alpha: float = 1.0
    # Epochs over which the dirichlet decoder's batch normalization fades out; 0 turns it off.
    decoder_batch_norm_epochs: int = 20
    # L2 penalty on the topic-word weights only, added to weight_decay. It keeps words seen in
    # a handful of documents from topping a topic.
    projection_weight_decay: float = 0.01
    # Weight of the coherence term (coherence_term.py), which rewards topics whose top words
    # occur in the same training documents. 0 turns it off. 10 scored the highest NPMI in
    # bench/ntm.py, where 7 and 15 scored lower.
    coherence_weight: float = 10.0
    # Dropout on the encoder output and, for dirichlet, on the topic proportions.
    dropout: float = 0.2
    seed: int = 0

    def __post_init__(self):
        _check_range("feature_dim", self.feature_dim, 1, 1_000_000)
        _check_range("num_topics", self.num_topics, 2, 1000)
        _check_minimum("clip_gradient", self.clip_gradient, 1e-3)
        self._check_encoder_layers()
        _check_choice("encoder_layers_activation", self.encoder_layers_activation, ACTIVATIONS)
        _check_minimum("epochs", self.epochs, 1)
        _check_range("learning_rate", self.learning_rate, 1e-6, 1.0)
        _check_range("mini_batch_size", self.mini_batch_size, 1, 10_000)
        _check_minimum("num_patience_epochs", self.num_patience_epochs, 1)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_range("rescale_gradient", self.rescale_gradient, 1e-3, 1.0)
        # The built-in documents [0.0, 1.0]; a fraction of 0 would train on nothing.
        if not 0.0 < self.sub_sample <= 1.0:
            raise InvalidHyperparameter("sub_sample", self.sub_sample, "must be in (0.0, 1.0]")
        _check_range("tolerance", self.tolerance, 1e-6, 0.1)
        _check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        _check_choice("prior", self.prior, PRIORS)
        if not self.dirichlet_alpha > 0:
            raise InvalidHyperparameter("dirichlet_alpha", self.dirichlet_alpha, "must be > 0")
        _check_minimum("decoder_batch_norm_epochs", self.decoder_batch_norm_epochs, 0)
        _check_range("projection_weight_decay", self.projection_weight_decay, 0.0, 1.0)
        _check_range("coherence_weight", self.coherence_weight, 0.0, 1000.0)
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidHyperparameter("dropout", self.dropout, "must be in [0.0, 1.0)")
        _check_minimum("seed", self.seed, 0)

    def _check_encoder_layers(self) -> None:
        layers = self.encoder_layers
        if layers == "auto":
            return
        if (isinstance(layers, (list, tuple)) and layers
                and all(isinstance(size, int) and not isinstance(size, bool) and size > 0
                        for size in layers)):
            self.encoder_layers = [int(size) for size in layers]
            return
        raise InvalidHyperparameter("encoder_layers", layers,
                                    "must be 'auto' or a non-empty list of positive integers")

    def encoder_sizes(self) -> list[int]:
        """Hidden layer widths; `auto` is 3 x and 2 x num_topics, as in the built-in."""
        if self.encoder_layers == "auto":
            return [3 * self.num_topics, 2 * self.num_topics]
        return list(self.encoder_layers)


def _check_range(name: str, value, low, high) -> None:
    if not low <= value <= high:
        raise InvalidHyperparameter(name, value, f"must be in [{low}, {high}]")


def _check_minimum(name: str, value, low) -> None:
    if not value >= low:
        raise InvalidHyperparameter(name, value, f"must be >= {low}")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise InvalidHyperparameter(name, value, f"must be one of {', '.join(choices)}")


# --- early stopping ---------------------------------------------------------------------------

@dataclass
class PatienceStep:
    """One epoch's early-stopping decision, with the numbers the log line shows."""

    window: list[float]
    min_window_loss: float
    difference: float
    bad: bool
    bad_count: int
    stop: bool


class EarlyStopping:
    """The built-in NTM's patience rule, as its training logs show it.

    An epoch is bad unless min(losses of the previous `patience` epochs) - loss > tolerance
    (an absolute difference). A good epoch resets the bad count to 0, and training stops when
    the bad count exceeds `patience`. The first epoch has no previous losses and is good.
    The best epoch is the one with the lowest loss.
    """

    def __init__(self, patience: int, tolerance: float):
        self.patience = patience
        self.tolerance = tolerance
        self.window: list[float] = []
        self.bad_count = 0
        self.best_loss = math.inf
        self.best_epoch = 0

    def update(self, epoch: int, loss: float) -> PatienceStep:
        window = list(self.window)
        min_window_loss = min(window) if window else math.inf
        difference = min_window_loss - loss
        bad = not difference > self.tolerance
        self.bad_count = self.bad_count + 1 if bad else 0
        self.window = (window + [loss])[-self.patience:]
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_epoch = epoch
        return PatienceStep(window, min_window_loss, difference, bad, self.bad_count,
                            stop=self.bad_count > self.patience)

    def state_dict(self) -> dict[str, Any]:
        return {"window": list(self.window), "bad_count": self.bad_count,
                "best_loss": self.best_loss, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window = list(state["window"])
        self.bad_count = int(state["bad_count"])
        self.best_loss = float(state["best_loss"])
        self.best_epoch = int(state["best_epoch"])


# --- the variational autoencoder --------------------------------------------------------------

def laplace_dirichlet_prior(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compute the mean and diagonal variance of the logistic-normal (Laplace) approximation
    of Dir(alpha), in the softmax basis as ProdLDA uses it.

    With K topics, mu_k = log alpha_k - mean_i log alpha_i and
    sigma_k^2 = (1 / alpha_k) (1 - 2 / K) + (1 / K^2) sum_i 1 / alpha_i.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    num_topics = alpha.shape[0]
    mean = np.log(alpha) - np.log(alpha).mean()
    variance = (1.0 / alpha) * (1.0 - 2.0 / num_topics) + (1.0 / alpha).sum() / num_topics**2
    return mean, variance


def gaussian_kl(mean: torch.Tensor, log_variance: torch.Tensor, prior_mean: torch.Tensor,
                prior_variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_variance)) || N(prior_mean, prior_variance)) per row, diagonal."""
    variance = log_variance.exp()
    terms = (variance / prior_variance + (mean - prior_mean) ** 2 / prior_variance
             - 1.0 + prior_variance.log() - log_variance)
    return 0.5 * terms.sum(dim=1)


class ShiftedBatchNorm(nn.Module):
    """Batch normalization followed by a learned shift, without a learned scale.

    ProdLDA normalizes the posterior mean and log variance this way. The shift lets the
    log variance move away from 0, and the fixed scale keeps every topic in use.
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features, affine=False)
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.norm(values) + self.bias


# Bound on the log variance, so that exp() stays finite when evaluation-mode batch norm
# statistics of a saturated encoder blow up a small difference.
MAX_ABS_LOG_VARIANCE = 10.0


def batch_norm_weight(epoch: int, fade_epochs: int) -> float:
    """Return the weight of the normalized word logits in `epoch` (1-based).

    It is 1 in the first epoch and falls linearly to 0 in epoch `fade_epochs` + 1. It is
    always 0 when `fade_epochs` is 0.
    """
    if fade_epochs == 0:
        return 0.0
    return max(0.0, 1.0 - (epoch - 1) / fade_epochs)


class TopicVAE(nn.Module):
    """Encoder q(h | x), reparameterized sample, decoder p(x | h).

    Word logits are `background` + W z (gaussian) or `background` + W theta (dirichlet).
    `background` starts at the log word frequencies of the training data, so column k of W
    is topic k's deviation from the corpus as a whole. `projection_weight` is W,
    (vocab_size, num_topics), named and shaped like the built-in's `arg:projection_weight`.

    The dirichlet decoder also batch-normalizes W theta, as ProdLDA does, and mixes that in
    with weight `batch_norm_weight`, faded from 1 to 0 over `decoder_batch_norm_epochs`
    epochs, as the Scholar topic model does (Card, Tan, Smith, "Neural Models for
    Documents with Metadata", ACL 2018). Early on, the normalization keeps every topic in
    use. Once it is gone, W is an unnormalized log-probability deviation again, so words
    seen in only a few documents no longer top the topics.
    """

    def __init__(self, config: NTMConfig):
        super().__init__()
        self.prior = config.prior
        self.fade_epochs = config.decoder_batch_norm_epochs
        vocab_size, num_topics = config.feature_dim, config.num_topics

        layers: list[nn.Module] = []
        width = vocab_size
        for size in config.encoder_sizes():
            layers.append(nn.Linear(width, size))
            if config.batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(ACTIVATIONS[config.encoder_layers_activation]())
            width = size
        self.encoder = nn.Sequential(*layers)
        self.encoder_dropout = nn.Dropout(config.dropout)
        self.mean = nn.Linear(width, num_topics)
        self.log_variance = nn.Linear(width, num_topics)

        self.projection_weight = nn.Parameter(torch.empty(vocab_size, num_topics))
        nn.init.xavier_uniform_(self.projection_weight)
        self.background = nn.Parameter(torch.zeros(vocab_size))
        if self.prior == "dirichlet":
            self.mean_norm = ShiftedBatchNorm(num_topics)
            self.log_variance_norm = ShiftedBatchNorm(num_topics)
            self.theta_dropout = nn.Dropout(config.dropout)
            self.logits_norm = nn.BatchNorm1d(vocab_size, affine=False)
            self.register_buffer("batch_norm_weight", torch.tensor(1.0))
            # A host copy of the weight, so that decode() can skip the normalization once
            # it has faded out without reading the buffer back from the device.
            self.batch_norm_active = True
            self.register_load_state_dict_post_hook(_copy_batch_norm_weight_to_host)
            prior_mean, prior_variance = laplace_dirichlet_prior(
                np.full(num_topics, config.dirichlet_alpha))
        else:
            prior_mean, prior_variance = np.zeros(num_topics), np.ones(num_topics)
        self.register_buffer("prior_mean", torch.tensor(prior_mean, dtype=torch.float32))
        self.register_buffer("prior_variance", torch.tensor(prior_variance, dtype=torch.float32))

    def encode(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log variance, each (batch, num_topics), from word counts."""
        hidden = self.encoder_dropout(self.encoder(counts))     # (batch, last encoder width)
        mean, log_variance = self.mean(hidden), self.log_variance(hidden)
        if self.prior == "dirichlet":
            mean, log_variance = self.mean_norm(mean), self.log_variance_norm(log_variance)
        return mean, log_variance.clamp(-MAX_ABS_LOG_VARIANCE, MAX_ABS_LOG_VARIANCE)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Word logits (batch, vocab_size) from a latent sample (batch, num_topics)."""
        if self.prior == "gaussian":
            return F.linear(latent, self.projection_weight, self.background)
        theta = self.theta_dropout(F.softmax(latent, dim=1))       # (batch, num_topics)
        topic_logits = F.linear(theta, self.projection_weight)      # (batch, vocab_size)
        logits = topic_logits + self.background
        if not self.batch_norm_active:
            return logits
        weight = self.batch_norm_weight
        return weight * self.logits_norm(topic_logits) + (1.0 - weight) * logits

    def forward(self, counts: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction loss and KL divergence in nats, each (batch,), for word counts
        (batch, vocab_size); `generator` draws the noise (the global RNG when None)."""
        mean, log_variance = self.encode(counts)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device,
                            dtype=mean.dtype)
        latent = mean + (0.5 * log_variance).exp() * noise       # (batch, num_topics)
        log_probs = F.log_softmax(self.decode(latent).float(), dim=1)  # (batch, vocab_size)
        reconstruction = -(counts * log_probs).sum(dim=1)
        kl = gaussian_kl(mean.float(), log_variance.float(), self.prior_mean,
                         self.prior_variance)
        return reconstruction, kl

    def topic_weights(self, counts: torch.Tensor) -> torch.Tensor:
        """Topic proportions (batch, num_topics): the softmax of the posterior mean."""
        mean, _ = self.encode(counts)
        return F.softmax(mean.float(), dim=1)

    @torch.no_grad()
    def set_background(self, word_counts: torch.Tensor) -> None:
        """Start `background` at the log frequency of each word, add-one smoothed."""
        smoothed = word_counts.double() + 1.0
        self.background.copy_((smoothed / smoothed.sum()).log())

    @torch.no_grad()
    def set_epoch(self, epoch: int) -> None:
        if self.prior == "dirichlet":
            weight = batch_norm_weight(epoch, self.fade_epochs)
            self.batch_norm_weight.fill_(weight)
            self.batch_norm_active = weight > 0.0


def _copy_batch_norm_weight_to_host(module: TopicVAE, incompatible_keys) -> None:
    module.batch_norm_active = bool(module.batch_norm_weight > 0.0)


def build_optimizer(config: NTMConfig, network: TopicVAE) -> torch.optim.Optimizer:
    """Build the optimizer named by `config.optimizer`, with MXNet 1.x's constants.

    The built-in NTM runs on MXNet 1.x, whose AdaDelta (rho 0.9, epsilon 1e-5) applies no
    learning rate, so adadelta steps with lr 1.0 and ignores `learning_rate`. MXNet's RMSProp
    decays its average by 0.9, and its AdaGrad adds epsilon 1e-7. `projection_weight` gets
    `projection_weight_decay` on top of `weight_decay`.
    """
    others = [p for name, p in network.named_parameters() if name != "projection_weight"]
    groups = [{"params": others, "weight_decay": config.weight_decay},
              {"params": [network.projection_weight],
               "weight_decay": config.weight_decay + config.projection_weight_decay}]
    rate = config.learning_rate
    if config.optimizer == "adadelta":
        return torch.optim.Adadelta(groups, lr=1.0, rho=0.9, eps=1e-5)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=rate)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(groups, lr=rate, eps=1e-7)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=rate, alpha=0.9, eps=1e-8)
    return torch.optim.SGD(groups, lr=rate)


# --- data checks ------------------------------------------------------------------------------

def _check_channel(data: FeatureData | None, channel: str, feature_dim: int
                   ) -> FeatureData | None:
    """Check one channel's width and counts, and drop its empty documents.

    An empty document has no words to reconstruct, so its loss per word is undefined.
    """
    if data is None:
        return None
    if data.feature_dim != feature_dim:
        raise InvalidHyperparameter(
            "feature_dim", feature_dim,
            f"does not match the {channel} channel, whose records have {data.feature_dim} "
            f"features. Set feature_dim to the vocabulary size")
    values = data.features.data
    if values.size and (not np.isfinite(values).all() or values.min() < 0):
        raise DataError(f"the {channel} channel contains negative or non-finite values, "
                        f"but the topic model needs word counts")
    word_counts = np.asarray(data.features.sum(axis=1)).ravel()
    keep = word_counts > 0
    if not keep.all():
        logger.info("Skipping %d empty documents out of %d in the %s channel",
                    int((~keep).sum()), data.n_samples, channel)
        labels = data.labels[keep] if data.labels is not None else None
        data = FeatureData(data.features[keep], labels)
    return data


def _batch_bounds(n_rows: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each mini-batch; a last batch of one row joins the one before it,
    because batch normalization cannot train on a single row."""
    bounds = [(start, min(start + batch_size, n_rows)) for start in range(0, n_rows, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n_rows)]
    return bounds


def _prefixed(channel: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{channel}:{name}": value for name, value in values.items()}


# --- the estimator ----------------------------------------------------------------------------

class NeuralTopicModel:
    """Neural topic model with the built-in NTM's hyperparameters, logs and output fields.

    Fitted attributes: `history_` (per-epoch metric dicts), `metrics_` (final metrics keyed
    `<channel>:<name>`), `best_epoch_` and `vocabulary_`.
    """

    algorithm = ALGORITHM

    def __init__(self, config: NTMConfig, device: str | torch.device | None = None):
        self.config = config
        self.device = select_device(str(device) if device is not None else None)
        # Seeded here so that the initial weights depend on `seed` only, without
        # changing the caller's global random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.network = TopicVAE(config)
        self.network.to(self.device)
        self.vocabulary_: list[str] | None = None
        self.history_: list[dict[str, float]] = []
        self.metrics_: dict[str, float] = {}
        self.best_epoch_: int | None = None

    # --- training -----------------------------------------------------------------------------

    def fit(self, train: FeatureData, validation: FeatureData | None = None,
            test: FeatureData | None = None, *, vocabulary: list[str] | None = None,
            checkpoint_dir=None, stop_signal: StopSignal | None = None) -> list[dict]:
        """Train, keep the best epoch's weights, then score the test channel.

        Early stopping watches the validation loss when `validation` is given, else the
        training loss. With `checkpoint_dir`, a checkpoint is written after every epoch and
        training resumes from the newest one found there. When `stop_signal` is set, the
        checkpoint of the last complete epoch is kept and `TrainingStopped` is raised.
        Losses are nats per word, averaged over documents. The built-in's logged losses
        (about 6 to 7 on a 2,000-word vocabulary, equal to its log_perplexity) show this scale.
        Returns the per-epoch history, e.g. `[{"epoch": 1, "train:total_loss": 7.1, ...}]`.
        """
        train = _check_channel(train, "train", self.config.feature_dim)
        validation = _check_channel(validation, "validation", self.config.feature_dim)
        test = _check_channel(test, "test", self.config.feature_dim)
        if train.n_samples < 2:
            raise DataError(f"the train channel has {train.n_samples} non-empty documents, "
                            f"but the topic model needs at least 2")
        for channel, data in (("validation", validation), ("test", test)):
            if data is not None and data.n_samples == 0:
                raise DataError(f"the {channel} channel has no non-empty documents")
        if vocabulary is not None and len(vocabulary) != self.config.feature_dim:
            raise InvalidHyperparameter(
                "feature_dim", self.config.feature_dim,
                f"does not match the vocabulary, which has {len(vocabulary)} words")
        self.vocabulary_ = list(vocabulary) if vocabulary is not None else None

        loop = _TrainingLoop(self, train, validation, checkpoint_dir, stop_signal)
        loop.run()
        self.history_ = loop.history
        self.best_epoch_ = loop.early_stopping.best_epoch
        self._report_final_metrics(loop, validation, test)
        return list(self.history_)

    def _report_final_metrics(self, loop: "_TrainingLoop", validation: FeatureData | None,
                              test: FeatureData | None) -> None:
        best = loop.early_stopping
        best_row = next(row for row in self.history_ if row["epoch"] == best.best_epoch)
        self.metrics_ = {"train:total_loss": best_row["train:total_loss"]}
        main = is_main_process()
        if main:
            logger.info("Best model based on early stopping at epoch %d. Best loss: %s",
                        best.best_epoch, best.best_loss)
        if validation is not None:
            self.metrics_["validation:total_loss"] = best.best_loss
            if main:
                log_quality_metric("validation", "total_loss", best.best_loss, best.best_epoch)
        self.metrics_.update(self._topic_metrics(log=main))
        if test is not None:
            self.metrics_.update(self._test_metrics(test, log=main))

    def _topic_metrics(self, log: bool) -> dict[str, float]:
        """TU, and WETC when the vocabulary is known; logs the topics block."""
        top_ids = topic_metrics.top_word_ids(self.topic_word_matrix(), TOPIC_TOP_WORDS)
        tu, tu_per_topic = topic_metrics.topic_uniqueness(top_ids)
        metrics = {"topics:tu": tu}
        wetc, wetc_per_topic = None, None
        if self.vocabulary_ is not None:
            try:
                vectors, found = glove_vectors(self.vocabulary_)
            except GloveUnavailable as error:
                logger.warning("WETC not computed: %s", error)
            else:
                if log and not found.all():
                    logger.warning("%d out of %d in vocabulary do not have embeddings! "
                                   "Default vector used for unknown embedding!",
                                   int((~found).sum()), len(found))
                wetc, wetc_per_topic = topic_metrics.embedding_coherence(top_ids, vectors)
                metrics["topics:wetc"] = wetc
        if log:
            self._log_topics(top_ids, tu, tu_per_topic, wetc, wetc_per_topic)
            for name, value in metrics.items():
                log_quality_metric("topics", name.split(":")[1], value)
        return metrics

    def _log_topics(self, top_ids, tu, tu_per_topic, wetc, wetc_per_topic) -> None:
        wetc_text = f"wetc {wetc:.2f}" if wetc is not None else ""
        logger.info("Topics from epoch:final (num_topics:%d) [%s, tu %.2f]:",
                    self.config.num_topics, wetc_text, tu)
        for k, ids in enumerate(top_ids):
            words = ([self.vocabulary_[i] for i in ids] if self.vocabulary_ is not None
                     else [str(i) for i in ids])
            topic_wetc = f"{wetc_per_topic[k]:.2f}" if wetc_per_topic is not None else ""
            logger.info("[%s, %.2f] %s", topic_wetc, tu_per_topic[k], " ".join(words))

    def _test_metrics(self, test: FeatureData, log: bool) -> dict[str, float]:
        """Loss and perplexity of the final model on the test channel, and NPMI of its
        top words with document co-occurrence counted in the test channel."""
        scores = self.score(test)
        top_ids = topic_metrics.top_word_ids(self.topic_word_matrix(), NPMI_TOP_WORDS)
        npmi, _ = topic_metrics.npmi_coherence(top_ids, test.features)
        metrics = {"test:total_loss": scores["total_loss"],
                   "test:perplexity": math.exp(scores["total_loss"]),
                   "test:npmi": npmi}
        if log:
            logger.info("#test_score (%s) : ('log_perplexity', %r)", current_host(),
                        scores["total_loss"])
            for name, value in metrics.items():
                log_quality_metric("test", name.split(":")[1], value)
        return metrics

    # --- scoring and inference ----------------------------------------------------------------

    @torch.no_grad()
    def score(self, data: FeatureData) -> dict[str, float]:
        """Loss of the current weights on `data`, in nats per word averaged over documents:
        `total_loss` = `recons` + `kld`. The result is deterministic, because the noise comes
        from a generator seeded with `seed`, and summed over hosts when training is
        distributed."""
        self.network.eval()
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.config.seed)
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        for start, stop in _batch_bounds(data.n_samples, SCORING_BATCH_SIZE):
            counts = csr_to_tensor(data.features[start:stop], self.device)  # (batch, vocab)
            with autocast(self.device):
                reconstruction, kl = self.network(counts, generator=generator)
            sums += _nats_per_word_sums(counts, reconstruction, kl)
        total, reconstruction, kl, documents = all_reduce_sum(sums).tolist()
        documents = max(documents, 1.0)
        return {"total_loss": total / documents, "recons": reconstruction / documents,
                "kld": kl / documents}

    def transform(self, X: sp.spmatrix | np.ndarray) -> np.ndarray:
        """Topic proportions (n_documents, num_topics): softmax of the posterior mean."""
        features = self._as_features(X)
        self.network.eval()
        parts = []
        with torch.no_grad():
            for start in range(0, features.shape[0], SCORING_BATCH_SIZE):
                counts = csr_to_tensor(features[start:start + SCORING_BATCH_SIZE], self.device)
                with autocast(self.device):
                    weights = self.network.topic_weights(counts)   # (batch, num_topics)
                parts.append(weights.float().cpu().numpy())
        if not parts:
            return np.zeros((0, self.config.num_topics), dtype=np.float32)
        return np.concatenate(parts)

    def predict(self, X: sp.spmatrix | np.ndarray) -> list[dict[str, list[float]]]:
        """Return one `{"topic_weights": [...]}` per row, the built-in's response field.
        Each vector sums to 1."""
        return [{"topic_weights": row.tolist()} for row in self.transform(X)]

    def _as_features(self, X) -> sp.csr_matrix:
        features = FeatureData(X).features
        if features.shape[1] != self.config.feature_dim:
            raise InvalidHyperparameter(
                "feature_dim", self.config.feature_dim,
                f"does not match the input, whose records have {features.shape[1]} features")
        return features

    def topic_word_matrix(self) -> np.ndarray:
        """Word distribution of each topic, (num_topics, vocab_size): softmax over the
        vocabulary of each column of `projection_weight`, as the built-in's examples read it.

        Because `background` carries the corpus word frequencies, these distributions rank
        the words that a topic makes more likely than usual. softmax(background + W[:, k])
        is the word distribution of a document that is all topic k.
        """
        weight = self.network.projection_weight.detach().float().cpu()   # (vocab, topics)
        return F.softmax(weight.T, dim=1).numpy()

    def top_words(self, n: int = TOPIC_TOP_WORDS) -> list[list[str]] | list[list[int]]:
        """Return the `n` most probable words of each topic, or word ids when no vocabulary
        is known."""
        top_ids = topic_metrics.top_word_ids(self.topic_word_matrix(), n)
        if self.vocabulary_ is None:
            return top_ids.tolist()
        return [[self.vocabulary_[i] for i in ids] for ids in top_ids]

    # --- artifact -----------------------------------------------------------------------------

    def to_artifact(self, *, vocabulary: list[str] | None = None,
                    featurizer: dict | None = None) -> Artifact:
        """Package the model as an `Artifact`. The decoder weight is the tensor
        `projection_weight`, (feature_dim, num_topics), like the built-in's
        `arg:projection_weight`."""
        vocabulary = list(vocabulary) if vocabulary is not None else self.vocabulary_
        if vocabulary is not None and len(vocabulary) != self.config.feature_dim:
            raise InvalidHyperparameter(
                "feature_dim", self.config.feature_dim,
                f"does not match the vocabulary, which has {len(vocabulary)} words")
        tensors = {name: tensor.detach().cpu().clone()
                   for name, tensor in self.network.state_dict().items()}
        return Artifact(algorithm=ALGORITHM, config=dataclasses.asdict(self.config),
                        tensors=tensors, vocabulary=vocabulary, featurizer=featurizer,
                        metrics=dict(self.metrics_))

    @classmethod
    def from_artifact(cls, artifact: Artifact, device: str | torch.device | None = None
                      ) -> "NeuralTopicModel":
        if artifact.algorithm != ALGORITHM:
            raise UserError(f"the model artifact is a {artifact.algorithm!r} model, "
                            f"not {ALGORITHM!r}")
        try:
            config = NTMConfig(**artifact.config)
        except TypeError as error:
            raise UserError(f"the model artifact's config does not fit this release ({error}). "
                            f"Retrain the model or install the release that wrote it") from error
        model = cls(config, device=device)
        model.network.load_state_dict(artifact.tensors)
        model.vocabulary_ = artifact.vocabulary
        model.metrics_ = dict(artifact.metrics)
        return model


def _nats_per_word_sums(counts: torch.Tensor, reconstruction: torch.Tensor,
                        kl: torch.Tensor) -> torch.Tensor:
    """Sums over the batch of total, reconstruction and KL nats per word, and the row count."""
    words = counts.sum(dim=1).double()
    reconstruction, kl = reconstruction.detach().double(), kl.detach().double()
    return torch.stack([((reconstruction + kl) / words).sum(), (reconstruction / words).sum(),
                        (kl / words).sum(), words.new_tensor(float(len(words)))])


# --- the training loop ------------------------------------------------------------------------

class _TrainingLoop:
    """Optimizer, early stopping, checkpoints and the epoch loop of one `fit` call."""

    def __init__(self, model: NeuralTopicModel, train: FeatureData,
                 validation: FeatureData | None, checkpoint_dir, stop_signal: StopSignal | None):
        self.model = model
        self.config = model.config
        self.network = model.network
        self.train_data = train
        self.validation = validation
        self.stop_signal = stop_signal
        self.main = is_main_process()
        self.batch_size = self._batch_size(train.n_samples)

        self.rng = seed_everything(self.config.seed)
        self.optimizer = build_optimizer(self.config, self.network)
        self.early_stopping = EarlyStopping(self.config.num_patience_epochs,
                                            self.config.tolerance)
        self.checkpointer = Checkpointer(checkpoint_dir)
        self.history: list[dict[str, float]] = []
        self.completed_epochs = 0
        self.stopped_early = False
        self.initial_state: dict[str, Any] | None = None
        if not self._resume():
            self.network.set_background(self._word_counts())
            self.best_weights = copy.deepcopy(self.network.state_dict())
            # The state before the first epoch, saved only if a stop arrives in epoch 1.
            self.initial_state = copy.deepcopy(self._state())
        self.coherence = (CoherenceTerm.from_documents(train.features, model.device)
                          if self.config.coherence_weight > 0 else None)
        self.trainable = self._wrap_distributed()

    def _word_counts(self) -> torch.Tensor:
        """(vocab_size,) count of each word in the training data, summed over hosts."""
        counts = np.asarray(self.train_data.features.sum(axis=0), dtype=np.float64).ravel()
        return all_reduce_sum(torch.from_numpy(counts).to(self.model.device))

    def _batch_size(self, n_samples: int) -> int:
        # NOTE: every process takes mini_batch_size rows. The built-in divides it by the
        # number of GPUs of a host, which this does not do.
        if self.config.mini_batch_size <= n_samples:
            return self.config.mini_batch_size
        logger.warning("mini_batch_size=%d > %d training records; using %d",
                       self.config.mini_batch_size, n_samples, n_samples)
        return n_samples

    def _wrap_distributed(self) -> nn.Module:
        """DistributedDataParallel (gradients averaged over hosts) when torch.distributed is
        initialized; it also copies rank 0's weights to every host."""
        if not is_distributed():
            return self.network
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.model.device.index] if self.model.device.type == "cuda" else None
        return DistributedDataParallel(self.network, device_ids=device_ids)

    # --- checkpoints --------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "algorithm": ALGORITHM,
            "epoch": self.completed_epochs,
            "config": dataclasses.asdict(self.config),
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_loss": self.early_stopping.best_loss,
            "best_epoch": self.early_stopping.best_epoch,
            "best_model": self.best_weights,
            "early_stopping": self.early_stopping.state_dict(),
            "stopped_early": self.stopped_early,
            "history": self.history,
            "rng": rng_state(self.rng),
        }

    def _resume(self) -> bool:
        """Load the newest checkpoint, if any, and return whether one was found."""
        state = self.checkpointer.latest(ALGORITHM) if self.main else None
        if is_distributed():
            import torch.distributed as dist

            # Every host continues from rank 0's checkpoint, because only rank 0 writes them.
            shared = [state]
            dist.broadcast_object_list(shared, src=0)
            state = shared[0]
        if state is None:
            return False
        self._check_resumable(state["config"])
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.best_weights = state["best_model"]
        self.stopped_early = bool(state["stopped_early"])
        self.history = list(state["history"])
        self.completed_epochs = int(state["epoch"])
        restore_rng_state(state["rng"], self.rng)
        return True

    def _check_resumable(self, saved: dict[str, Any]) -> None:
        """Allow only `epochs` to change between the checkpointed run and this one."""
        current = dataclasses.asdict(self.config)
        for name, value in current.items():
            if name != "epochs" and saved.get(name) != value:
                raise UserError(
                    f"the checkpoint in {self.checkpointer.directory} was written with "
                    f"{name}={saved.get(name)!r}, but this run has {name}={value!r}. Resume "
                    f"with the same hyperparameters or empty the checkpoint folder")

    def _stop(self, epoch: int) -> None:
        """Keep the checkpoint of the last complete epoch and raise TrainingStopped."""
        if self.checkpointer.directory is None:
            logger.warning("Stop requested in epoch %d. No checkpoint folder is set, so a new "
                           "run starts from the beginning", epoch)
            raise TrainingStopped(f"training stopped on request in epoch {epoch}")
        if self.completed_epochs == 0:
            self.checkpointer.save(self.initial_state)
        message = (f"training stopped on request in epoch {epoch}. A new run resumes from the "
                   f"checkpoint of epoch {self.completed_epochs} in "
                   f"{self.checkpointer.directory}")
        logger.warning("%s", message)
        raise TrainingStopped(message)

    # --- epochs -------------------------------------------------------------------------------

    def run(self) -> None:
        if self.stopped_early and self.main:
            logger.info("The checkpoint of epoch %d ended training by early stopping",
                        self.completed_epochs)
        while not self.stopped_early and self.completed_epochs < self.config.epochs:
            self._run_epoch(self.completed_epochs + 1)
        self.network.load_state_dict(self.best_weights)

    def _run_epoch(self, epoch: int) -> None:
        # train
        started = time.perf_counter()
        if self.main:
            logger.info("# Starting training for epoch %d", epoch)
        self.network.set_epoch(epoch)
        train_scores, n_records, n_batches = self._train_epoch(epoch)
        train_seconds = time.perf_counter() - started
        self._log_train(epoch, train_scores, n_records, n_batches)
        row = {"epoch": epoch, **_prefixed("train", train_scores)}
        loss = train_scores["total_loss"]

        # validate
        validation_started = time.perf_counter()
        if self.validation is not None:
            validation_scores = self.model.score(self.validation)
            row.update(_prefixed("validation", validation_scores))
            loss = validation_scores["total_loss"]
            if self.main:
                logger.info("#validation_score (%d): %r", epoch, loss)
        validation_seconds = time.perf_counter() - validation_started
        if not math.isfinite(loss):
            raise UserError(
                f"training diverged: the total loss is {loss} in epoch {epoch}. Lower "
                f"learning_rate ({self.config.learning_rate}) or set clip_gradient")

        # early stopping
        step = self.early_stopping.update(epoch, loss)
        if self.early_stopping.best_epoch == epoch:
            self.best_weights = copy.deepcopy(self.network.state_dict())
        self._log_patience(step)
        self.stopped_early = step.stop
        self.history.append(row)
        self.completed_epochs = epoch

        # checkpoint
        self.checkpointer.save(self._state())
        if self.main:
            epoch_seconds = time.perf_counter() - started
            logger.info("Timing: train: %.2fs, val: %.2fs, epoch: %.2fs",
                        train_seconds, validation_seconds, epoch_seconds)
            log_progress(epoch, self.config.epochs)
            log_throughput(n_records / max(train_seconds, 1e-9))

    def _train_epoch(self, epoch: int) -> tuple[dict[str, float], int, int]:
        """Train one pass over a `sub_sample` fraction of the shuffled training documents."""
        self.trainable.train()
        n_samples = self.train_data.n_samples
        n_used = n_samples
        if self.config.sub_sample < 1.0:
            n_used = max(2, round(self.config.sub_sample * n_samples))
        order = self.rng.permutation(n_samples)[:n_used]
        bounds = _batch_bounds(n_used, self.batch_size)
        sums = torch.zeros(4, dtype=torch.float64, device=self.model.device)

        join = self.trainable.join() if is_distributed() else contextlib.nullcontext()
        with join:
            for start, stop in bounds:
                if self.stop_signal is not None and self.stop_signal.requested():
                    self._stop(epoch)
                counts = csr_to_tensor(self.train_data.features[order[start:stop]],
                                       self.model.device)               # (batch, vocab_size)

                # forward: the negative ELBO of each document, in nats
                # NOTE: the CUDA path (bfloat16 autocast) has not been run on a GPU yet.
                with autocast(self.model.device):
                    reconstruction, kl = self.trainable(counts)
                loss = (reconstruction + kl).mean()
                if self.coherence is not None:
                    coherence = self.coherence(self.network.projection_weight)
                    loss = loss - self.config.coherence_weight * coherence

                # backward, then rescale and clip the gradients in MXNet's order
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._adjust_gradients()
                self.optimizer.step()

                # metrics, summed on the device to avoid a host sync per batch
                sums += _nats_per_word_sums(counts, reconstruction, kl)

        total, reconstruction, kl, documents = all_reduce_sum(sums).tolist()
        scores = {"total_loss": total / documents, "recons": reconstruction / documents,
                  "kld": kl / documents}
        return scores, n_used, len(bounds)

    def _adjust_gradients(self) -> None:
        """grad = clip(rescale_gradient * grad, clip_gradient), element-wise like MXNet."""
        parameters = [p for p in self.network.parameters() if p.grad is not None]
        if self.config.rescale_gradient != 1.0:
            for parameter in parameters:
                parameter.grad.mul_(self.config.rescale_gradient)
        if math.isfinite(self.config.clip_gradient):
            nn.utils.clip_grad_value_(parameters, self.config.clip_gradient)

    # --- log lines ----------------------------------------------------------------------------

    def _log_train(self, epoch: int, scores: dict[str, float], n_records: int,
                   n_batches: int) -> None:
        if not self.main:
            return
        logger.info("# Finished training epoch %d on %d examples from %d batches, each of "
                    "size %d.", epoch, n_records, n_batches, self.batch_size)
        logger.info("Metrics for Training:")
        for name in ("total", "kld", "recons"):
            key = "total_loss" if name == "total" else name
            logger.info("Loss (name: value) %s: %r", name, scores[key])
        log_quality_metric("train", "total_loss", scores["total_loss"], epoch)

    def _log_patience(self, step: PatienceStep) -> None:
        if not self.main:
            return
        logger.info("patience losses:%s min patience loss:%s current loss:%s absolute loss "
                    "difference:%s", step.window, step.min_window_loss,
                    self.early_stopping.window[-1], step.difference)
        if step.bad:
            logger.info("Bad epoch: loss has not improved (enough). Bad count:%d",
                        step.bad_count)
        if step.stop:
            logger.info("Bad epochs exceeded patience. Stopping training early!")
