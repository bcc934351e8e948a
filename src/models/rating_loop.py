"""The rating classifier's training loop: epochs of mini-batches, validation, early stopping,
checkpoints that resume mid-epoch, and cooperative stopping.

A checkpoint stores the model, optimizer and random states, the epoch's shuffled row order and
the number of its mini-batches already done. So a run that is stopped between two mini-batches
and resumed ends with the weights of an uninterrupted run, exactly so on CPU.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from ..errors import TrainingStopped
from .ngram_bag import bag_inputs
from .ordinal import DECODINGS, ordinal_loss, scores_from_confusion
from .training import (Checkpointer, FeatureData, StopSignal, all_reduce_sum, autocast,
                       is_distributed, log_progress, log_quality_metric, log_throughput,
                       rng_state)

if TYPE_CHECKING:
    from .rating import RatingClassifier

logger = logging.getLogger(__name__)

VALIDATION_SCORES = ("loss", "accuracy", "mae", "macro_f1")


def scores_from_sums(sums: dict[str, np.ndarray], decoding: str) -> dict[str, float]:
    """Return loss, accuracy, MAE and macro-F1 of `decoding` from evaluation sums."""
    loss_sum, rows = sums["loss"]
    return {"loss": float(loss_sum / rows) if rows else float("nan"),
            **scores_from_confusion(sums[decoding])}


def member_loss(logits: torch.Tensor, targets: torch.Tensor, config) -> torch.Tensor:
    """Return the ordinal loss averaged over the rows of every ensemble member.

    `logits` is (num_models, batch, num_classes), `targets` (batch,) class indices and `config`
    the `RatingConfig` naming the ordinal term and its weight.
    """
    num_models, _, num_classes = logits.shape
    return ordinal_loss(logits.reshape(-1, num_classes), targets.repeat(num_models),
                        config.ordinal_loss, config.ordinal_loss_weight)


def choose_decoding(sums: dict[str, np.ndarray], configured: str) -> str:
    """Return `configured`, or for "auto" the decoding with the lower MAE (then the higher
    accuracy)."""
    if configured != "auto":
        return configured
    scores = {decoding: scores_from_confusion(sums[decoding]) for decoding in DECODINGS}
    return min(DECODINGS, key=lambda d: (scores[d]["mae"], -scores[d]["accuracy"]))


@dataclass
class TrainingProgress:
    """The state of a run between two mini-batches, all of which goes into each checkpoint."""

    epoch: int = 0  # completed epochs
    batches_done: int = 0  # mini-batches done in epoch `epoch + 1`
    order: np.ndarray | None = None  # (n_train,) row order of the epoch in progress
    loss_sum: float = 0.0  # training loss summed over the rows of the epoch in progress
    rows_seen: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float = math.inf
    best_epoch: int = 0
    best_model: dict[str, torch.Tensor] | None = None
    best_decoding: str | None = None
    bad_epochs: int = 0  # epochs since the last improvement
    finished: bool = False  # early stopping has ended the run

    def to_state(self) -> dict[str, Any]:
        state = asdict(self)
        state["best_model"] = self.best_model
        state["order"] = torch.from_numpy(self.order) if self.order is not None else None
        state["best_loss"] = self.best_value
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TrainingProgress":
        progress = cls()
        for name in asdict(progress):
            if name in state:
                setattr(progress, name, state[name])
        if progress.order is not None:
            progress.order = progress.order.numpy()
        return progress


class TrainingLoop:
    """Runs the epochs of one `RatingClassifier.fit` call."""

    def __init__(self, classifier: "RatingClassifier", model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, checkpointer: Checkpointer,
                 stop_signal: StopSignal | None, rng: np.random.Generator,
                 progress: TrainingProgress):
        self.classifier = classifier
        self.config = classifier.config
        self.device = classifier.device
        self.model = model
        self.optimizer = optimizer
        self.checkpointer = checkpointer
        self.stop_signal = stop_signal
        self.rng = rng
        self.progress = progress

    def train_epoch(self, epoch: int, train: FeatureData, targets: np.ndarray,
                    batch_size: int) -> None:
        """Run the remaining mini-batches of `epoch`. Raises TrainingStopped when a stop is
        requested."""
        progress = self.progress
        if progress.order is None:
            progress.order = self.rng.permutation(train.n_samples)
        n_batches = self._shared_batch_count(len(progress.order), batch_size)
        # Summed on the device, because reading the loss every batch is a CPU-GPU sync point.
        # The sum is float64 and continues the saved one, so a resumed epoch adds in the same order.
        loss_sum = torch.tensor(progress.loss_sum, dtype=torch.float64, device=self.device)
        started, rows_at_start = time.perf_counter(), progress.rows_seen
        self.model.train()
        for batch in range(progress.batches_done, n_batches):
            if self._stop_requested():
                self._stop(loss_sum, epoch)
            index = progress.order[batch * batch_size:(batch + 1) * batch_size]
            batch_targets = torch.from_numpy(targets[index]).to(self.device)  # (batch,)

            # forward
            inputs = bag_inputs(train.features[index], self.device, self.classifier.wide_idf_)
            with autocast(self.device):
                logits = self.model(*inputs)  # (num_models, batch, num_classes)

            # loss
            loss = member_loss(logits, batch_targets, self.config)

            # backward and optimizer step
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

            loss_sum += loss.detach() * len(index)
            progress.rows_seen += len(index)
            progress.batches_done = batch + 1
        progress.loss_sum = float(loss_sum)
        elapsed = max(time.perf_counter() - started, 1e-9)
        log_throughput((progress.rows_seen - rows_at_start) / elapsed)

    def end_epoch(self, epoch: int, validation: FeatureData | None,
                  targets: np.ndarray | None) -> None:
        """Score the epoch, update early stopping, save a checkpoint."""
        progress = self.progress
        totals = all_reduce_sum(torch.tensor([progress.loss_sum, progress.rows_seen],
                                             dtype=torch.float64, device=self.device))
        record: dict[str, Any] = {"epoch": epoch,
                                  "train:loss": float(totals[0] / max(float(totals[1]), 1.0))}
        log_quality_metric("train", "loss", record["train:loss"], epoch)

        # validation scores
        decoding = None
        if validation is not None:
            sums = self.classifier._evaluation_sums(validation, targets)
            decoding = choose_decoding(sums, self.config.decoding)
            scores = scores_from_sums(sums, decoding)
            for name in VALIDATION_SCORES:
                record[f"validation:{name}"] = scores[name]
                log_quality_metric("validation", name, scores[name], epoch)
        progress.history.append(record)

        # early stopping, keeping the best epoch's weights
        progress.epoch, progress.batches_done, progress.order = epoch, 0, None
        progress.loss_sum, progress.rows_seen = 0.0, 0
        if validation is not None:
            self._update_best(record, decoding)
        else:
            progress.best_epoch = epoch

        # checkpoint
        self.checkpointer.save(self._state())
        log_progress(epoch, self.config.epochs)

    def _update_best(self, record: dict[str, Any], decoding: str) -> None:
        progress = self.progress
        metric = self.config.early_stopping_metric
        value = record[f"validation:{metric}"]
        value = -value if metric == "accuracy" else value
        if value < progress.best_value - self.config.tolerance:
            progress.best_value, progress.best_epoch = value, record["epoch"]
            progress.best_decoding = decoding
            progress.best_model = {
                name: tensor.detach().to("cpu", copy=True)
                for name, tensor in self.classifier.network_.state_dict().items()}
            progress.bad_epochs = 0
            return
        progress.bad_epochs += 1
        if progress.bad_epochs >= self.config.num_patience_epochs:
            logger.info("Early stopping after epoch %d: validation %s has not improved by more "
                        "than tolerance=%g for %d epochs; keeping epoch %d",
                        record["epoch"], metric, self.config.tolerance, progress.bad_epochs,
                        progress.best_epoch)
            progress.finished = True

    def _state(self) -> dict[str, Any]:
        return {
            "algorithm": self.classifier.algorithm,
            "config": asdict(self.config),
            "model": self.classifier.network_.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(self.rng),
            **self.progress.to_state(),
        }

    def _stop(self, loss_sum: torch.Tensor, epoch: int) -> None:
        self.progress.loss_sum = float(loss_sum)
        path = self.checkpointer.save(self._state())
        where = f"; resume from {path}" if path is not None else ""
        raise TrainingStopped(f"training stopped in epoch {epoch} after "
                              f"{self.progress.batches_done} mini-batches{where}")

    def _stop_requested(self) -> bool:
        requested = self.stop_signal is not None and self.stop_signal.requested()
        if not is_distributed():
            return requested
        # Every host must stop at the same mini-batch, or the others wait in DDP's all-reduce.
        flag = all_reduce_sum(torch.tensor([float(requested)], device=self.device))
        return bool(flag.item() > 0)

    def _shared_batch_count(self, n_rows: int, batch_size: int) -> int:
        """Return the number of mini-batches every host runs this epoch.

        Hosts' shards differ by at most a row, so their batch counts can differ by one. All
        hosts run the smallest count, because DDP's gradient all-reduce needs every host in
        each step.
        """
        count = math.ceil(n_rows / batch_size)
        if is_distributed():
            shared = torch.tensor([count], device=self.device)
            dist.all_reduce(shared, op=dist.ReduceOp.MIN)
            count = int(shared.item())
        return count
