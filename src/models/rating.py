"""Star-rating classifier: 1-5 stars from n-gram counts, trained with an ordinal-aware loss.

The network (`ngram_bag.NgramBagEnsemble`) is a fastText-style embedding bag over the counts,
optionally started from GloVe word vectors, with a linear term over the same counts. The loss
is cross-entropy plus an ordinal term (`ordinal.py`), and a prediction is decoded by the median
or the argmax of the class distribution. Each prediction also carries Amazon Comprehend's
sentiment shape (`sentiment.py`). The training loop is in `rating_loop.py`.

Labels are star ratings 1..num_classes. Internally class k is star k + 1.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch.nn.parallel import DistributedDataParallel

from ..errors import DataError, InvalidHyperparameter, UserError
from .artifact import Artifact
from .ngram_bag import (NgramBagEnsemble, bag_inputs, document_frequency, initialise_embedding,
                        pretrained_rows, smooth_idf)
from .ordinal import DECODINGS, ORDINAL_LOSSES, confusion_matrix, decode, expected_class
from .rating_loop import TrainingLoop, TrainingProgress, member_loss, scores_from_sums
from .sentiment import comprehend_sentiment
from .training import (Checkpointer, FeatureData, StopSignal, all_reduce_sum, autocast,
                       is_distributed, log_quality_metric, restore_rng_state, seed_everything,
                       select_device)

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd")
EARLY_STOPPING_METRICS = ("mae", "loss", "accuracy")
PRETRAINED_EMBEDDINGS = ("glove", "none")
WIDE_WEIGHTINGS = ("tfidf", "mean")
# GloVe 6B 50d entries have a standard deviation of about 0.65. Scaled by this factor they
# start at about 0.16, close to the 0.1 of the randomly started rows.
GLOVE_SCALE = 0.25
PREDICT_BATCH_ROWS = 4096


def _check_range(name: str, value, low, high, *, low_open: bool = False) -> None:
    low_ok = value > low if low_open else value >= low
    if not (low_ok and value <= high):
        bracket = "(" if low_open else "["
        raise InvalidHyperparameter(name, value, f"must be in {bracket}{low}, {high}]")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise InvalidHyperparameter(name, value, f"must be one of {', '.join(choices)}")


@dataclass
class RatingConfig:
    """Hyperparameters of the star-rating classifier.

    `hidden_dim=0` feeds the embedding bag straight into the class logits. `wide` adds a
    linear term over the counts, weighted as sublinear TF-IDF with l2-normalised rows
    (`wide_weighting="tfidf"`, idf from the training rows) or as the embedding bag's count
    shares (`"mean"`). `num_models` networks from different random starts are trained side
    by side and their class probabilities averaged. `ordinal_loss_weight=0` trains with plain
    cross-entropy. `decoding="auto"` keeps whichever of median and argmax has the lower
    validation MAE. Early stopping watches `early_stopping_metric` on the validation channel
    and stops after `num_patience_epochs` epochs without an improvement larger than
    `tolerance`. The best epoch's weights are kept.

    The defaults scored best on validation, averaged over five 80/10/10 splits of the
    12,458-review MARC English sample with the team's n-gram featurizer (`bench/rating.py`).
    """

    feature_dim: int
    num_classes: int = 5
    embedding_dim: int = 50
    hidden_dim: int = 64
    dropout: float = 0.5
    wide: bool = True
    wide_weighting: str = "tfidf"
    num_models: int = 1
    epochs: int = 20
    mini_batch_size: int = 64
    learning_rate: float = 0.003
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    ordinal_loss: str = "absolute_error"
    ordinal_loss_weight: float = 0.5
    decoding: str = "median"
    early_stopping_metric: str = "mae"
    num_patience_epochs: int = 3
    tolerance: float = 0.001
    pretrained_embeddings: str = "glove"
    seed: int = 0

    def __post_init__(self):
        _check_range("feature_dim", self.feature_dim, 1, 10_000_000)
        _check_range("num_classes", self.num_classes, 2, 10)
        _check_range("embedding_dim", self.embedding_dim, 1, 1000)
        _check_range("hidden_dim", self.hidden_dim, 0, 10_000)
        _check_range("dropout", self.dropout, 0.0, 0.99)
        _check_choice("wide_weighting", self.wide_weighting, WIDE_WEIGHTINGS)
        _check_range("num_models", self.num_models, 1, 100)
        _check_range("epochs", self.epochs, 1, 10_000)
        _check_range("mini_batch_size", self.mini_batch_size, 1, 1_000_000)
        _check_range("learning_rate", self.learning_rate, 0.0, 10.0, low_open=True)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        _check_choice("ordinal_loss", self.ordinal_loss, ORDINAL_LOSSES)
        _check_range("ordinal_loss_weight", self.ordinal_loss_weight, 0.0, 100.0)
        _check_choice("decoding", self.decoding, DECODINGS + ("auto",))
        _check_choice("early_stopping_metric", self.early_stopping_metric,
                      EARLY_STOPPING_METRICS)
        _check_range("num_patience_epochs", self.num_patience_epochs, 1, 10_000)
        _check_range("tolerance", self.tolerance, 0.0, 1e6)
        _check_choice("pretrained_embeddings", self.pretrained_embeddings,
                      PRETRAINED_EMBEDDINGS)
        _check_range("seed", self.seed, 0, 2**63 - 1)

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> "RatingConfig":
        """Build a config from `asdict` output, rejecting unknown keys by name."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise UserError(f"unknown rating hyperparameters {unknown}; known: {sorted(known)}")
        return cls(**settings)


def star_targets(data: FeatureData, channel: str, num_classes: int) -> np.ndarray:
    """Return the (n_samples,) int64 class indices (stars - 1) of `data`'s labels.

    Raises `DataError` when labels are missing or not whole numbers in 1..num_classes.
    """
    if data.labels is None:
        raise DataError(f"the {channel} channel has no labels; the rating classifier needs "
                        f"star ratings 1..{num_classes} as labels", field="label")
    labels = np.asarray(data.labels, dtype=np.float64).reshape(-1)
    invalid = ~np.isfinite(labels) | (labels != np.round(labels)) | (labels < 1) \
        | (labels > num_classes)
    if invalid.any():
        first = int(np.flatnonzero(invalid)[0])
        raise DataError(
            f"the {channel} channel has {int(invalid.sum())} labels that are not star ratings "
            f"1..{num_classes}, the first {labels[first]!r} in row {first}; labels must be whole "
            f"stars 1..{num_classes}", field="label")
    return labels.astype(np.int64) - 1


def _new_network(config: RatingConfig) -> NgramBagEnsemble:
    return NgramBagEnsemble(config.num_models, feature_dim=config.feature_dim,
                            num_classes=config.num_classes, embedding_dim=config.embedding_dim,
                            hidden_dim=config.hidden_dim, dropout=config.dropout,
                            wide=config.wide)


class RatingClassifier:
    """Predicts 1..num_classes stars from n-gram counts.

    Fitted attributes: `network_` (the torch module), `decoding_` ("median" or "argmax"),
    `history_` (per-epoch metrics), `metrics_` (final metrics, keys "<channel>:<name>"),
    `vocabulary_` (the vocabulary given to `fit`, or None).
    """

    algorithm = "rating"

    def __init__(self, config: RatingConfig, device: str | torch.device | None = None):
        self.config = config
        self.device = select_device(str(device) if device is not None else None)
        self.network_: NgramBagEnsemble | None = None
        self.decoding_ = config.decoding if config.decoding != "auto" else "median"
        self.history_: list[dict[str, Any]] = []
        self.metrics_: dict[str, float] = {}
        self.vocabulary_: list[str] | None = None
        # A numpy copy of network_.idf for bag_inputs. None when the wide term uses count shares.
        self.wide_idf_: np.ndarray | None = None

    # --- building ---------------------------------------------------------------------------

    def _build_network(self, vocabulary: list[str] | None) -> NgramBagEnsemble:
        config = self.config
        network = _new_network(config)
        if config.pretrained_embeddings == "glove":
            if vocabulary is None:
                logger.warning("pretrained_embeddings='glove' needs the vocabulary, which fit "
                               "was not given; the n-gram embeddings start random")
            else:
                from .glove import glove_vectors

                vectors, found = pretrained_rows(vocabulary, glove_vectors)
                initialise_embedding(network, vectors, found, GLOVE_SCALE)
        return network.to(self.device)

    def _make_optimizer(self, network: torch.nn.Module) -> torch.optim.Optimizer:
        config = self.config
        # The fused Adam kernels update the dense embedding gradients in one pass. On CPU
        # (torch 2.13, one thread) that is about 13 times faster than the default loop, and
        # without it the optimizer step takes most of the training time.
        fused = self.device.type in ("cpu", "cuda")
        if config.optimizer == "adam":
            return torch.optim.Adam(network.parameters(), lr=config.learning_rate,
                                    weight_decay=config.weight_decay, fused=fused)
        if config.optimizer == "adamw":
            return torch.optim.AdamW(network.parameters(), lr=config.learning_rate,
                                     weight_decay=config.weight_decay, fused=fused)
        return torch.optim.SGD(network.parameters(), lr=config.learning_rate, momentum=0.9,
                               weight_decay=config.weight_decay)

    def _check_features(self, data: FeatureData, channel: str) -> np.ndarray:
        if data.feature_dim != self.config.feature_dim:
            raise InvalidHyperparameter(
                "feature_dim", self.config.feature_dim,
                f"must equal the {data.feature_dim} feature columns of the {channel} channel")
        return star_targets(data, channel, self.config.num_classes)

    def _check_vocabulary(self, vocabulary: list[str] | None) -> list[str] | None:
        if vocabulary is not None and len(vocabulary) != self.config.feature_dim:
            raise UserError(f"the vocabulary has {len(vocabulary)} entries but "
                            f"feature_dim={self.config.feature_dim}; pass the vocabulary that "
                            f"produced the feature columns")
        return list(vocabulary) if vocabulary is not None else None

    def _batch_size(self, n_samples: int) -> int:
        if self.config.mini_batch_size > n_samples:
            logger.warning("mini_batch_size=%d > %d training records; using %d",
                           self.config.mini_batch_size, n_samples, n_samples)
            return max(n_samples, 1)
        return self.config.mini_batch_size

    # --- training ---------------------------------------------------------------------------

    def fit(self, train: FeatureData, validation: FeatureData | None = None,
            test: FeatureData | None = None, *, vocabulary: list[str] | None = None,
            checkpoint_dir=None, stop_signal: StopSignal | None = None) -> list[dict]:
        """Train on `train`, stop early on `validation`, score `test`; return the history.

        Resumes from the newest checkpoint in `checkpoint_dir` when there is one, and saves
        one per epoch there. When `stop_signal` is requested between two mini-batches, saves
        a checkpoint of that point and raises `TrainingStopped`.
        """
        config = self.config
        train_targets = self._check_features(train, "train")
        validation_targets = (self._check_features(validation, "validation")
                              if validation is not None else None)
        test_targets = self._check_features(test, "test") if test is not None else None
        self.vocabulary_ = self._check_vocabulary(vocabulary)
        batch_size = self._batch_size(train.n_samples)
        logger.info("Rating classifier config: %s", asdict(config))

        # Setup: seeded start, then the newest checkpoint's state on top of it.
        rng = seed_everything(config.seed)
        network = self._build_network(self.vocabulary_)
        optimizer = self._make_optimizer(network)
        checkpointer = Checkpointer(checkpoint_dir)
        progress = TrainingProgress()
        saved = checkpointer.latest(self.algorithm)
        if saved is not None:
            self._check_checkpoint_config(saved["config"])
            network.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            progress = TrainingProgress.from_state(saved)
            restore_rng_state(saved["rng"], rng)
        self.network_ = network
        self._set_wide_idf(train)
        # DDP broadcasts rank 0's parameters here, after any checkpoint was loaded. The only
        # buffer, idf, is all-reduced above and so already equal on every host.
        model = (DistributedDataParallel(network, broadcast_buffers=False) if is_distributed()
                 else network)

        loop = TrainingLoop(self, model, optimizer, checkpointer, stop_signal, rng, progress)
        for epoch in range(progress.epoch + 1, config.epochs + 1):
            if progress.finished:
                break
            loop.train_epoch(epoch, train, train_targets, batch_size)
            loop.end_epoch(epoch, validation, validation_targets)

        self._finish(progress, test, test_targets)
        return self.history_

    def _set_wide_idf(self, train: FeatureData | None) -> None:
        """Compute the wide term's idf from `train` (summed over hosts), or take the network's."""
        config = self.config
        if not (config.wide and config.wide_weighting == "tfidf"):
            self.wide_idf_ = None
            return
        if train is not None:
            counts = np.append(document_frequency(train.features), train.n_samples)
            counts = all_reduce_sum(torch.from_numpy(counts).to(self.device)).cpu().numpy()
            idf = smooth_idf(counts[:-1], counts[-1])
            self.network_.idf.copy_(torch.from_numpy(idf))
        self.wide_idf_ = self.network_.idf.cpu().numpy().astype(np.float64)

    def _check_checkpoint_config(self, saved: dict[str, Any]) -> None:
        current = asdict(self.config)
        shape_fields = ("feature_dim", "num_classes", "embedding_dim", "hidden_dim", "wide",
                        "wide_weighting", "num_models")
        changed = [name for name in shape_fields if saved.get(name) != current[name]]
        if changed:
            before = ", ".join(f"{name}={saved.get(name)!r}" for name in changed)
            after = ", ".join(f"{name}={current[name]!r}" for name in changed)
            raise UserError(f"the checkpoint was written with {before}, which this run sets to "
                            f"{after}; use the same values or empty the checkpoint folder to "
                            f"start afresh")
        others = sorted(name for name in current
                        if name not in shape_fields and saved.get(name) != current[name])
        if others:
            logger.warning("Resuming a checkpoint written with other values of %s; this run's "
                           "values apply from here on", ", ".join(others))

    def _finish(self, progress: TrainingProgress, test: FeatureData | None,
                test_targets: np.ndarray | None) -> None:
        if progress.best_model is not None:
            self.network_.load_state_dict(progress.best_model)
        if progress.best_decoding is not None:
            self.decoding_ = progress.best_decoding
        elif self.config.decoding == "auto":
            logger.warning("decoding='auto' chooses by validation MAE, but fit was given no "
                           "validation channel; using median decoding")
        self.history_ = list(progress.history)
        self.metrics_ = {}
        best = next((record for record in self.history_
                     if record["epoch"] == progress.best_epoch), None)
        if best is not None:
            self.metrics_.update({name: value for name, value in best.items() if name != "epoch"})
        if test is not None:
            scores = self.evaluate(test, _targets=test_targets)
            for name, value in scores.items():
                self.metrics_[f"test:{name}"] = value
                log_quality_metric("test", name, value)

    # --- inference --------------------------------------------------------------------------

    def _require_fitted(self) -> NgramBagEnsemble:
        if self.network_ is None:
            raise RuntimeError("RatingClassifier is not fitted; call fit or from_artifact first")
        return self.network_

    def _probabilities(self, features: sp.csr_matrix, targets: np.ndarray | None = None
                       ) -> tuple[np.ndarray, float]:
        """Return (n, K) class probabilities and, given targets, the summed loss over rows."""
        network = self._require_fitted()
        was_training = network.training
        network.eval()
        chunks, loss_sum = [], 0.0
        with torch.no_grad():
            for start in range(0, features.shape[0], PREDICT_BATCH_ROWS):
                rows = slice(start, start + PREDICT_BATCH_ROWS)
                with autocast(self.device):
                    # (num_models, batch, num_classes)
                    logits = network(*bag_inputs(features[rows], self.device, self.wide_idf_))
                chunks.append(network.probabilities(logits).cpu().numpy())
                if targets is not None:
                    batch_targets = torch.from_numpy(targets[rows]).to(self.device)
                    loss = member_loss(logits, batch_targets, self.config)
                    loss_sum += float(loss) * len(batch_targets)
        network.train(was_training)
        empty = np.zeros((0, self.config.num_classes), dtype=np.float32)
        return (np.concatenate(chunks) if chunks else empty), loss_sum

    def _as_features(self, X) -> sp.csr_matrix:
        features = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) \
            else sp.csr_matrix(np.atleast_2d(np.asarray(X, dtype=np.float32)))
        if features.shape[1] != self.config.feature_dim:
            raise UserError(f"the input has {features.shape[1]} feature columns but the model "
                            f"was trained with feature_dim={self.config.feature_dim}")
        return features

    def predict_proba(self, X) -> np.ndarray:
        """Return (n_samples, num_classes) star probabilities, star 1 first."""
        probabilities, _ = self._probabilities(self._as_features(X))
        return probabilities

    def predict(self, X) -> list[dict]:
        """Return one dict per row: `probabilities` (star 1 first), `predicted_stars` (by
        `decoding_`), `expected_stars` and a Comprehend-shaped `sentiment`."""
        probabilities = self.predict_proba(X)
        stars = decode(probabilities, self.decoding_) + 1
        expected = expected_class(probabilities) + 1
        sentiments = comprehend_sentiment(probabilities) if len(probabilities) else []
        return [{"probabilities": [float(p) for p in row], "predicted_stars": int(star),
                 "expected_stars": float(mean), "sentiment": sentiment}
                for row, star, mean, sentiment in zip(probabilities, stars, expected, sentiments)]

    def evaluate(self, data: FeatureData, decoding: str | None = None, *,
                 _targets: np.ndarray | None = None) -> dict[str, float]:
        """Return loss, accuracy, MAE (in stars) and macro-F1 on labelled `data`, summed over
        hosts when distributed. `decoding` defaults to the fitted `decoding_`."""
        targets = _targets if _targets is not None else self._check_features(data, "evaluation")
        sums = self._evaluation_sums(data, targets)
        return scores_from_sums(sums, decoding or self.decoding_)

    def _evaluation_sums(self, data: FeatureData, targets: np.ndarray) -> dict[str, np.ndarray]:
        """Return the loss sum, row count and one confusion matrix per decoding, all-reduced."""
        probabilities, loss_sum = self._probabilities(data.features, targets)
        num_classes = self.config.num_classes
        sums = {"loss": np.array([loss_sum, len(targets)], dtype=np.float64)}
        for decoding in DECODINGS:
            predictions = decode(probabilities, decoding) if len(targets) else targets
            sums[decoding] = confusion_matrix(targets, predictions, num_classes).astype(np.float64)
        if is_distributed():
            for name, values in sums.items():
                reduced = all_reduce_sum(torch.from_numpy(values).to(self.device))
                sums[name] = reduced.cpu().numpy()
        return sums

    # --- artifact ---------------------------------------------------------------------------

    def to_artifact(self, *, vocabulary: list[str] | None = None,
                    featurizer: dict | None = None) -> Artifact:
        """Return the fitted model as an `Artifact`; its config records the decoding in use."""
        network = self._require_fitted()
        config = asdict(self.config)
        config["decoding"] = self.decoding_
        vocabulary = vocabulary if vocabulary is not None else self.vocabulary_
        return Artifact(algorithm=self.algorithm, config=config,
                        tensors=dict(network.state_dict()), vocabulary=vocabulary,
                        featurizer=featurizer, metrics=dict(self.metrics_))

    @classmethod
    def from_artifact(cls, artifact: Artifact, device=None) -> "RatingClassifier":
        """Rebuild a fitted classifier from an artifact written by `to_artifact`."""
        if artifact.algorithm != cls.algorithm:
            raise UserError(f"the artifact contains algorithm {artifact.algorithm!r}, "
                            f"not {cls.algorithm!r}; load it with that algorithm's model class")
        config = RatingConfig.from_dict(artifact.config)
        model = cls(config, device=device)
        network = _new_network(config)
        network.load_state_dict(artifact.tensors)
        model.network_ = network.to(model.device).eval()
        model._set_wide_idf(None)
        model.vocabulary_ = artifact.vocabulary
        model.metrics_ = dict(artifact.metrics)
        return model

