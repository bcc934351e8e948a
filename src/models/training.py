"""Pieces every model's training loop shares: data batches, device, seeding, checkpoints,
SageMaker's metric lines and cooperative stopping.

Models know tensors and training loops only; files, /opt/ml and HTTP belong to the container.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from ..errors import UserError
from ..files import atomic_path

logger = logging.getLogger(__name__)
metric_logger = logging.getLogger("review_nlp.metrics")

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-epoch(\d+)\.pt$")


@dataclass
class FeatureData:
    """A feature matrix with optional labels, as one channel provides them.

    `features` is (n_samples, feature_dim) float32 CSR; `labels` is (n_samples,) or None.
    """

    features: sp.csr_matrix
    labels: np.ndarray | None = None

    def __post_init__(self):
        if not sp.issparse(self.features):
            self.features = sp.csr_matrix(np.asarray(self.features, dtype=np.float32))
        self.features = sp.csr_matrix(self.features, dtype=np.float32)
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.shape[0] != self.features.shape[0]:
                raise ValueError(
                    f"labels has {self.labels.shape[0]} rows but features has "
                    f"{self.features.shape[0]}")

    @property
    def n_samples(self) -> int:
        return self.features.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.features.shape[1]

    def batches(self, batch_size: int, rng: np.random.Generator | None = None
                ) -> Iterator[tuple[sp.csr_matrix, np.ndarray | None]]:
        """Yield (features, labels) mini-batches, shuffled when `rng` is given."""
        order = rng.permutation(self.n_samples) if rng is not None else np.arange(self.n_samples)
        for start in range(0, self.n_samples, batch_size):
            index = order[start:start + batch_size]
            labels = self.labels[index] if self.labels is not None else None
            yield self.features[index], labels

    def shard(self, rank: int, world_size: int) -> "FeatureData":
        """Return this host's share of the rows: every `world_size`-th row from `rank`."""
        index = np.arange(rank, self.n_samples, world_size)
        labels = self.labels[index] if self.labels is not None else None
        return FeatureData(self.features[index], labels)


def select_device(preferred: str | None = None) -> torch.device:
    """Return `preferred` if given, else the first CUDA device when one is present, else CPU."""
    if preferred:
        return torch.device(preferred)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision (bfloat16) on CUDA; full float32 on CPU so seeded runs repeat exactly."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return the NumPy generator the loop should draw from."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def csr_to_tensor(batch: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """Densify one mini-batch (never the whole data set) as a float32 tensor on `device`."""
    return torch.from_numpy(batch.toarray()).to(device=device, dtype=torch.float32)


# --- distributed training --------------------------------------------------------------------

def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` in place across hosts (a no-op on one host) and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


# --- cooperative stopping ---------------------------------------------------------------------

class StopSignal:
    """Set by a SIGTERM handler; training loops poll it between mini-batches.

    SageMaker sends SIGTERM on StopTrainingJob and spot interruption and kills the container
    120 s later, so loops check it often and save a checkpoint before raising TrainingStopped.
    """

    def __init__(self):
        self._event = threading.Event()

    def request(self) -> None:
        self._event.set()

    def requested(self) -> bool:
        return self._event.is_set()


# --- checkpoints ------------------------------------------------------------------------------

def rng_state(numpy_rng: np.random.Generator) -> dict[str, Any]:
    """Capture every random state a loop uses, in types `torch.load(weights_only=True)` accepts."""
    state = {
        "python": json.dumps(random.getstate()),
        "numpy": json.dumps(numpy_rng.bit_generator.state),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], numpy_rng: np.random.Generator) -> None:
    python_state = json.loads(state["python"])
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_rng.bit_generator.state = json.loads(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """One self-describing checkpoint file per epoch in `directory`, written atomically.

    A checkpoint is a dict holding at least `algorithm`, `epoch` (completed epochs), `config`,
    `model`, `optimizer`, `best_loss`, `history` and `rng`. Only the newest `keep` files are
    kept, because a rating model's embeddings can be tens of MB per epoch.
    """

    def __init__(self, directory: str | os.PathLike | None, keep: int = 2):
        self.directory = Path(directory) if directory else None
        self.keep = keep

    def save(self, state: dict[str, Any]) -> Path | None:
        if self.directory is None or not is_main_process():
            return None
        path = self.directory / f"checkpoint-epoch{int(state['epoch']):04d}.pt"
        buffer = io.BytesIO()
        torch.save(state, buffer)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getvalue())
        for old in self.existing()[:-self.keep]:
            old.unlink(missing_ok=True)
        logger.info("Saved checkpoint %s", path)
        return path

    def existing(self) -> list[Path]:
        if self.directory is None or not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if CHECKPOINT_PATTERN.match(p.name)]
        return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)))

    def latest(self, algorithm: str) -> dict[str, Any] | None:
        """Load the newest checkpoint, or None; a checkpoint of another algorithm is an error."""
        paths = self.existing()
        if not paths:
            return None
        state = torch.load(paths[-1], map_location="cpu", weights_only=True)
        if state.get("algorithm") != algorithm:
            raise UserError(
                f"checkpoint {paths[-1]} was written by algorithm {state.get('algorithm')!r}, "
                f"not {algorithm!r}; empty the checkpoint folder to start afresh")
        logger.info("Resuming from checkpoint %s (epoch %d)", paths[-1], state["epoch"])
        return state


# --- SageMaker built-in metric lines ----------------------------------------------------------

def current_host() -> str:
    return os.environ.get("SM_CURRENT_HOST", "algo-1")


def log_quality_metric(channel: str, name: str, value: float, epoch: int | None = None) -> None:
    """Log `#quality_metric: host=algo-1, epoch=1, train total_loss <loss>=7.02`.

    The built-in algorithms print this form and tuning objectives such as
    `validation:total_loss` and `test:msd` are parsed from it.
    """
    epoch_part = f", epoch={epoch}" if epoch is not None else ""
    metric_logger.info("#quality_metric: host=%s%s, %s %s <loss>=%s",
                       current_host(), epoch_part, channel, name, repr(float(value)))


def log_progress(completed_epochs: int, total_epochs: int) -> None:
    percent = 100.0 * completed_epochs / max(total_epochs, 1)
    metric_logger.info("#progress_metric: host=%s, completed %s %% of epochs",
                       current_host(), f"{percent:g}")


def log_throughput(records_per_second: float) -> None:
    metric_logger.info("#throughput_metric: host=%s, train throughput=%s records/second",
                       current_host(), f"{records_per_second:.2f}")
