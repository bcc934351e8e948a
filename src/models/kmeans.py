"""Web-scale mini-batch k-means (D. Sculley, "Web-Scale K-Means Clustering", WWW 2010),
run the way SageMaker's built-in K-Means runs it, with scikit-learn's names for fitted state.

Training, with the built-in's hyperparameters:

1. Pick K = k * extra_center_factor initial centers from a random sample of `mini_batch_size`
   training records, either as random records or by k-means++ (`init_method`).
2. Stream shuffled mini-batches for `epochs` passes. Every record goes to its nearest center.
   Center j, which has absorbed n_old records and gets n_new records with mean m_j from this
   batch, moves to (1 - p_j) * center_j + p_j * m_j with p_j = n_new / (n_old + n_new). Each
   center is thus the running mean of its records (a learning rate of 1 / count). With
   `half_life_time_size` > 0 the counts decay, so a record's weight halves after that many
   further records.
3. When K > k, reduce the K centers, weighted by their counts, to k with Lloyd's algorithm run
   on the centers alone ("local Lloyd"). It runs `local_lloyd_num_trials` times from
   `local_lloyd_init_method` seeds and keeps the lowest weighted mean squared distance.
4. Not in the built-in: `final_lloyd_iter` full Lloyd iterations over the training data,
   streamed in blocks. The default 0 keeps the built-in's algorithm.

Several hosts: when torch.distributed is initialized, each host assigns the mini-batch of its
own shard, and the per-center sums and counts are all-reduced before every update, so that
all hosts keep identical centers. Rank 0 picks the initial centers, logs and checkpoints.

Sparse rows such as TF-IDF stay sparse: the data set is never densified whole. Distances use
||x||^2 - 2 x.c + ||c||^2, with x.c as a dense GEMM or a sparse-dense product, in blocks of
at most BLOCK_ELEMENTS scores, so no (n_samples, n_clusters, n_features) tensor is formed.

Precision: distances, centers and sums of rows are float32 on every device, and counts and
sums of squared distances are float64. bfloat16 autocast is not used: bfloat16 keeps 8
significant bits, so rounding the GEMM inputs moves x.c by up to about 0.4 % (2^-8) of
||x|| ||c||, which flips the nearest center of records whose two nearest centers are that
close. TF32 is left as the caller set it (PyTorch's default is off).

NOTE: CUDA runs the same code, but it has only been tested on CPU. Dense host rows are copied
to the GPU block by block in every pass, so a GPU fit is bound by host-to-device copies.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from ..errors import InvalidHyperparameter, TrainingStopped, UserError
from .artifact import Artifact
from .mxnet_ndarray import encode_ndarray_list
from .training import (
    Checkpointer,
    FeatureData,
    StopSignal,
    all_reduce_sum,
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

# Logs of the built-in container in AWS's sample notebooks show 100 centers for k=10 and 200
# for k=20 with extra_center_factor=auto, and 10 local Lloyd attempts with
# local_lloyd_num_trials=auto.
AUTO_EXTRA_CENTER_FACTOR = 10
AUTO_LOCAL_LLOYD_NUM_TRIALS = 10
INIT_METHODS = ("random", "kmeans++")
EVAL_METRICS = ("msd", "ssd")

# Largest number of float32 values in one block of distance scores (rows x centers), and in
# a sparse block densified for a GEMM (rows x features). 2**22 values are 16 MiB, small enough
# to stay in cache between the GEMM and the row minimum. With 1024 centers on one CPU thread
# (torch 2.13), GEMM plus minimum ran at 0.87 of the GEMM's own rate in 4096-row blocks,
# against 0.75 in 16384-row blocks.
BLOCK_ELEMENTS = 2**22
# Sparse blocks at least this dense are densified (within BLOCK_ELEMENTS), because a dense
# GEMM is then faster than the sparse product.
DENSE_BLOCK_DENSITY = 0.1
# Local Lloyd works on the Gram matrix of the K centers up to this K (128 MiB in float64).
GRAM_MAX_POINTS = 4096


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_positive_int(name: str, value: Any) -> None:
    if not _is_int(value) or value < 1:
        raise InvalidHyperparameter(name, value, "must be a positive integer")


def _check_positive_int_or_auto(name: str, value: Any) -> None:
    if value != "auto" and (not _is_int(value) or value < 1):
        raise InvalidHyperparameter(name, value, "must be a positive integer or 'auto'")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidHyperparameter(name, value, f"must be one of {', '.join(choices)}")


@dataclass
class KMeansConfig:
    """Hyperparameters of SageMaker's built-in K-Means, with its names, types and defaults.

    `extra_center_factor="auto"` resolves to 10, capped so that K = k * factor does not
    exceed the number of training records. `local_lloyd_num_trials="auto"` resolves to 10.
    `force_dense` is accepted because the SageMaker SDK always sends it, and is ignored:
    the result does not depend on it, and each block is kept sparse or densified by its
    density instead. `local_lloyd_tol` is a relative tolerance: Lloyd's iterations stop once
    the mean squared distance improves by less than tol times its previous value.
    `final_lloyd_iter` and `seed` are not built-in hyperparameters.
    """

    feature_dim: int
    k: int
    mini_batch_size: int = 5000
    epochs: int = 1
    init_method: str = "random"
    extra_center_factor: int | str = "auto"
    local_lloyd_max_iter: int = 300
    local_lloyd_tol: float = 1e-4
    local_lloyd_init_method: str = "kmeans++"
    local_lloyd_num_trials: int | str = "auto"
    half_life_time_size: int = 0
    eval_metrics: list[str] = field(default_factory=lambda: ["msd"])
    force_dense: bool = True
    # Full Lloyd iterations over the training data after the reduction to k centers. Each is
    # one pass in blocks, and they stop early under local_lloyd_tol. 0 is the built-in algorithm.
    final_lloyd_iter: int = 0
    seed: int = 0

    def __post_init__(self):
        for name in ("feature_dim", "k", "mini_batch_size", "epochs", "local_lloyd_max_iter"):
            _check_positive_int(name, getattr(self, name))
        _check_positive_int_or_auto("extra_center_factor", self.extra_center_factor)
        _check_positive_int_or_auto("local_lloyd_num_trials", self.local_lloyd_num_trials)
        _check_choice("init_method", self.init_method, INIT_METHODS)
        _check_choice("local_lloyd_init_method", self.local_lloyd_init_method, INIT_METHODS)
        tol = self.local_lloyd_tol
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 <= tol <= 1.0:
            raise InvalidHyperparameter("local_lloyd_tol", tol, "must be in [0, 1]")
        for name in ("half_life_time_size", "final_lloyd_iter", "seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise InvalidHyperparameter(name, value, "must be a non-negative integer")
        metrics = self.eval_metrics
        if (not isinstance(metrics, (list, tuple)) or not metrics
                or any(m not in EVAL_METRICS for m in metrics)
                or len(set(metrics)) != len(metrics)):
            raise InvalidHyperparameter(
                "eval_metrics", metrics, 'must be a non-empty list of distinct "msd" and "ssd"')
        if not isinstance(self.force_dense, bool):
            raise InvalidHyperparameter("force_dense", self.force_dense, "must be true or false")
        self.eval_metrics = list(metrics)

    def n_centers(self, n_samples: int) -> int:
        """Return K, the number of centers the mini-batch phase keeps for `n_samples` records."""
        factor = (AUTO_EXTRA_CENTER_FACTOR if self.extra_center_factor == "auto"
                  else self.extra_center_factor)
        return max(self.k, min(self.k * factor, n_samples))

    def num_trials(self) -> int:
        if self.local_lloyd_num_trials == "auto":
            return AUTO_LOCAL_LLOYD_NUM_TRIALS
        return self.local_lloyd_num_trials


# --- blocks of rows on the device -------------------------------------------------------------

@dataclass
class _Block:
    """Rows on the device with what the distance computations need.

    Dense rows are in `features`. Sparse rows keep their CSR arrays, plus the row of each
    stored value and a host copy to read chosen rows from.
    """

    sq_norms: torch.Tensor                  # (rows,) squared L2 norm of each row
    features: torch.Tensor | None = None    # (rows, n_features) dense rows
    offsets: torch.Tensor | None = None     # (rows,) start of each row in columns and values
    columns: torch.Tensor | None = None     # (nnz,) column of each stored value
    values: torch.Tensor | None = None      # (nnz,) stored values
    value_rows: torch.Tensor | None = None  # (nnz,) row of each stored value
    host: sp.csr_matrix | None = None       # the sparse rows on the host

    @property
    def n_rows(self) -> int:
        return len(self.sq_norms)

    @property
    def is_sparse(self) -> bool:
        return self.features is None


def _dense_block(features: torch.Tensor) -> _Block:
    return _Block(sq_norms=(features * features).sum(dim=1), features=features)


def _sparse_block(matrix: sp.csr_matrix, device: torch.device) -> _Block:
    n_rows = matrix.shape[0]
    value_rows = np.repeat(np.arange(n_rows), np.diff(matrix.indptr))
    sq_norms = np.bincount(value_rows, weights=np.square(matrix.data, dtype=np.float64),
                           minlength=n_rows)
    return _Block(
        sq_norms=torch.from_numpy(sq_norms.astype(np.float32)).to(device),
        offsets=torch.from_numpy(matrix.indptr[:-1].astype(np.int64)).to(device),
        columns=torch.from_numpy(matrix.indices.astype(np.int64)).to(device),
        values=torch.from_numpy(matrix.data).to(device),
        value_rows=torch.from_numpy(value_rows).to(device),
        host=matrix)


def _host_block(part: np.ndarray | sp.csr_matrix, device: torch.device) -> _Block:
    """Move host rows to the device, keeping a sparse part sparse unless it is dense enough."""
    if sp.issparse(part):
        size = part.shape[0] * part.shape[1]
        if part.nnz < DENSE_BLOCK_DENSITY * size or size > BLOCK_ELEMENTS:
            return _sparse_block(part, device)
        part = part.toarray()
    if not part.flags.writeable:
        # the tensor is only read, so sharing a read-only array's memory is safe
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return _dense_block(torch.from_numpy(part).to(device))
    return _dense_block(torch.from_numpy(part).to(device))


def _dense_rows(block: _Block, index: np.ndarray) -> torch.Tensor:
    """Return the rows `index` of `block` as a dense (len(index), n_features) float32 tensor."""
    if block.is_sparse:
        return torch.from_numpy(block.host[index].toarray()).to(block.sq_norms.device)
    return block.features[torch.as_tensor(index, device=block.features.device)]


def _scores(block: _Block, centers: torch.Tensor,
            center_sq_norms: torch.Tensor | None = None) -> torch.Tensor:
    """Return ||c||^2 - 2 x.c, which is the squared distance less ||x||^2, as (rows, n_centers).

    A pass over many blocks computes `center_sq_norms` (n_centers,) once and passes it in.
    """
    if center_sq_norms is None:
        center_sq_norms = (centers * centers).sum(dim=1)
    if block.is_sparse:
        # embedding_bag sums weight * table[column] over each row's stored values, which is
        # the sparse-dense product. On CPU it took 2.7 ms where torch.mm on a CSR tensor took
        # 9.3 ms (5000 TF-IDF rows, 200 centers, torch 2.13, one thread).
        products = torch.nn.functional.embedding_bag(
            block.columns, centers.T.contiguous(), block.offsets, mode="sum",
            per_sample_weights=block.values * -2.0)  # (rows, n_centers) -2 x.c
        return products.add_(center_sq_norms)
    return torch.addmm(center_sq_norms, block.features, centers.T, alpha=-2.0)


def _sq_distances(block: _Block, centers: torch.Tensor) -> torch.Tensor:
    """Return the (rows, n_centers) squared Euclidean distances."""
    return _scores(block, centers).add_(block.sq_norms[:, None]).clamp_(min=0.0)


def _nearest(block: _Block, centers: torch.Tensor, center_sq_norms: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the index of each row's nearest center (rows,) and its squared distance (rows,)."""
    min_scores, labels = _scores(block, centers, center_sq_norms).min(dim=1)
    return labels, (min_scores + block.sq_norms).clamp_(min=0.0)


def _add_rows_by_label(sums: torch.Tensor, block: _Block, labels: torch.Tensor,
                       counts: torch.Tensor) -> None:
    """Add each row of `block` into row labels[i] of the (n_centers, n_features) `sums`.

    `counts` is bincount(labels), the number of rows per center.
    """
    if block.is_sparse:
        n_features = sums.shape[1]
        flat_index = labels[block.value_rows] * n_features + block.columns
        sums.view(-1).index_add_(0, flat_index, block.values)
        return

    # one bag of rows per center, summed by embedding_bag: on CPU it took 0.5 ms where
    # index_add_ took 1.5 ms (5000 x 256 rows, 1024 centers, torch 2.13, one thread)
    order = torch.argsort(labels, stable=True)
    offsets = torch.cumsum(counts, dim=0) - counts
    sums += torch.nn.functional.embedding_bag(order, block.features, offsets, mode="sum")


# --- host data -------------------------------------------------------------------------------

class _HostRows:
    """Rows of one channel on the host, as a float32 CSR matrix or a dense float32 array."""

    def __init__(self, data: FeatureData | np.ndarray | sp.spmatrix, channel: str):
        if isinstance(data, FeatureData):
            matrix = data.features
        elif sp.issparse(data):
            matrix = sp.csr_matrix(data, dtype=np.float32)
        else:
            matrix = np.ascontiguousarray(data, dtype=np.float32)
            if matrix.ndim != 2:
                raise UserError(f"{channel} data must be 2-D (n_samples, n_features), "
                                f"got shape {matrix.shape}")
        if sp.issparse(matrix) and not matrix.has_canonical_format:
            # duplicates would make the squared row norms wrong, so sum them in a copy
            matrix = matrix.copy()
            matrix.sum_duplicates()
        self.matrix = matrix
        self.channel = channel

    @property
    def n_samples(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_features(self) -> int:
        return self.matrix.shape[1]

    def blocks(self, index: np.ndarray | None, n_centers: int,
               device: torch.device) -> Iterator[_Block]:
        """Yield the rows `index` (all rows, in order, when None) as device blocks."""
        step = BLOCK_ELEMENTS // n_centers
        matrix = self.matrix
        if sp.issparse(matrix) and matrix.nnz >= DENSE_BLOCK_DENSITY * np.prod(matrix.shape):
            # blocks of a dense-enough CSR matrix get densified, so bound their size too
            step = min(step, BLOCK_ELEMENTS // self.n_features)
        step = max(step, 1)
        total = self.n_samples if index is None else len(index)
        for start in range(0, total, step):
            if index is None:
                part = self.matrix[start:start + step]
            else:
                part = self.matrix[index[start:start + step]]
            yield _host_block(part, device)


@dataclass
class _PassStatistics:
    """Sums over some rows of their nearest center's statistics."""

    sums: torch.Tensor | None   # (n_centers, n_features) float32 sum of the rows per center
    counts: torch.Tensor        # (n_centers,) float64 number of rows per center
    ssd: torch.Tensor           # () float64 sum of squared distances to the nearest center
    labels: list[torch.Tensor]  # per block (rows,) nearest center, when requested


def _accumulate(rows: _HostRows, index: np.ndarray | None, centers: torch.Tensor, *,
                with_sums: bool = True, with_labels: bool = False) -> _PassStatistics:
    """Assign the rows `index` (all rows when None) to `centers` and sum their statistics."""
    n_centers, n_features = centers.shape
    device = centers.device
    stats = _PassStatistics(
        sums=torch.zeros(n_centers, n_features, device=device) if with_sums else None,
        counts=torch.zeros(n_centers, dtype=torch.float64, device=device),
        ssd=torch.zeros((), dtype=torch.float64, device=device),
        labels=[])
    center_sq_norms = (centers * centers).sum(dim=1)
    for block in rows.blocks(index, n_centers, device):
        labels, sq_distances = _nearest(block, centers, center_sq_norms)
        block_counts = torch.bincount(labels, minlength=n_centers)
        stats.counts += block_counts
        stats.ssd += sq_distances.sum(dtype=torch.float64)
        if with_sums:
            _add_rows_by_label(stats.sums, block, labels, block_counts)
        if with_labels:
            stats.labels.append(labels)
    return stats


def _all_reduce_sums(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Sum each tensor across hosts in one collective. On one host, return them unchanged."""
    if not is_distributed():
        return list(tensors)
    packed = torch.cat([t.reshape(-1).double() for t in tensors])
    all_reduce_sum(packed)
    parts = packed.split([t.numel() for t in tensors])
    return [part.view(t.shape).to(t.dtype) for part, t in zip(parts, tensors)]


# --- seeding and local Lloyd -----------------------------------------------------------------

# A distance oracle maps row indices (n_runs, n) to the squared distances (n_runs, n_rows, n)
# from every row to those rows, so that seeding works on features and on a Gram matrix alike.
DistanceOracle = Callable[[torch.Tensor], torch.Tensor]


def _block_distance_oracle(block: _Block) -> DistanceOracle:
    def distances_to(index: torch.Tensor) -> torch.Tensor:
        n_runs, n = index.shape
        rows = _dense_rows(block, index.reshape(-1).cpu().numpy())
        distances = _sq_distances(block, rows).double()  # (n_rows, n_runs * n)
        return distances.T.reshape(n_runs, n, -1).transpose(1, 2)
    return distances_to


def _gram_distance_oracle(gram: torch.Tensor) -> DistanceOracle:
    sq_norms = gram.diagonal()

    def distances_to(index: torch.Tensor) -> torch.Tensor:
        # ||p_i||^2 + ||p_j||^2 - 2 p_i.p_j as (n_rows, n_runs, n), then runs first
        distances = sq_norms[:, None, None] + sq_norms[index][None] - 2.0 * gram[:, index]
        return distances.clamp_(min=0.0).permute(1, 0, 2)
    return distances_to


def _kmeans_plusplus(distances_to: DistanceOracle, weights: torch.Tensor, n_centers: int,
                     n_runs: int, rng: np.random.Generator) -> np.ndarray:
    """Choose `n_centers` row indices for each of `n_runs` runs by greedy weighted k-means++.

    Arthur and Vassilvitskii (2007) D^2 sampling, with 2 + ln(n_centers) candidates per step
    of which the one lowering the weighted potential most is kept, as scikit-learn does. The
    runs are independent but share each step's tensor operations. Rows of zero weight are
    chosen only when every weighted row already coincides with a center: the step then takes
    the last row, which may duplicate a center and leave an empty cluster.
    Returns (n_runs, n_centers) indices.
    """
    n_rows = len(weights)
    n_local_trials = 2 + int(math.log(n_centers))
    uniforms = torch.from_numpy(rng.random((n_runs, n_centers, n_local_trials)))
    uniforms = uniforms.to(weights.device)

    # the first center of each run with probability proportional to weight
    cumulative_weight = torch.cumsum(weights, dim=0)
    first = torch.searchsorted(cumulative_weight, uniforms[:, 0, :1] * cumulative_weight[-1],
                               right=True).clamp_(max=n_rows - 1)  # (n_runs, 1)
    chosen = [first[:, 0]]
    closest = distances_to(first)[:, :, 0]  # (n_runs, n_rows)
    for step in range(1, n_centers):
        # D^2 sampling of candidates: with right=True no target lands on a row of zero potential
        potential = torch.cumsum(weights * closest, dim=1)  # (n_runs, n_rows)
        targets = uniforms[:, step] * potential[:, -1:]
        candidates = torch.searchsorted(potential, targets, right=True).clamp_(max=n_rows - 1)

        # keep the candidate that lowers the weighted potential most
        improved = torch.minimum(distances_to(candidates), closest[:, :, None])
        best = torch.argmin((weights[:, None] * improved).sum(dim=1), dim=1)  # (n_runs,)
        chosen.append(candidates.gather(1, best[:, None])[:, 0])
        closest = improved.gather(2, best[:, None, None].expand(n_runs, n_rows, 1))[:, :, 0]
    return torch.stack(chosen, dim=1).cpu().numpy()


def _random_seeds(weights: torch.Tensor, n_centers: int, n_runs: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Choose `n_centers` distinct rows per run, with probability proportional to weight.

    Rows of zero weight are taken, uniformly, only when too few rows have weight.
    """
    host_weights = weights.cpu().numpy()
    weighted = np.flatnonzero(host_weights > 0)
    unweighted = np.flatnonzero(host_weights <= 0)
    runs = []
    for _ in range(n_runs):
        if len(weighted) >= n_centers:
            p = host_weights[weighted] / host_weights[weighted].sum()
            runs.append(rng.choice(weighted, size=n_centers, replace=False, p=p))
        else:
            extra = rng.choice(unweighted, size=n_centers - len(weighted), replace=False)
            runs.append(np.concatenate([weighted, extra]))
    return np.stack(runs)


def _choose_seeds(distances_to: DistanceOracle, weights: torch.Tensor, n_centers: int,
                  n_runs: int, method: str, rng: np.random.Generator) -> np.ndarray:
    """Return (n_runs, n_centers) row indices chosen by `method` ("random" or "kmeans++")."""
    if method == "kmeans++":
        return _kmeans_plusplus(distances_to, weights, n_centers, n_runs, rng)
    return _random_seeds(weights, n_centers, n_runs, rng)


def _weighted_lloyd(points: torch.Tensor, weights: torch.Tensor, centers: torch.Tensor,
                    max_iter: int, tol: float) -> tuple[torch.Tensor, float]:
    """Run Lloyd's algorithm on weighted dense `points` from `centers`.

    Returns the final centers and their weighted mean squared distance. An empty cluster
    keeps its previous center.
    """
    block = _dense_block(points)
    weighted_points = points.double() * weights[:, None]  # (n_points, n_features)
    total_weight = weights.sum()
    labels, sq_distances = _nearest(block, centers)
    msd = float((weights * sq_distances.double()).sum() / total_weight)
    for _ in range(max_iter):
        sums = torch.zeros(centers.shape, dtype=torch.float64, device=points.device)
        sums.index_add_(0, labels, weighted_points)
        center_weights = torch.zeros(len(centers), dtype=torch.float64, device=points.device)
        center_weights.index_add_(0, labels, weights)
        means = sums / center_weights.clamp(min=torch.finfo(torch.float64).tiny)[:, None]
        centers = torch.where(center_weights[:, None] > 0, means, centers.double()).float()

        labels, sq_distances = _nearest(block, centers)
        new_msd = float((weights * sq_distances.double()).sum() / total_weight)
        converged = msd - new_msd <= tol * msd
        msd = new_msd
        if converged:
            break
    return centers, msd


def _gram_lloyd(gram: torch.Tensor, weights: torch.Tensor, seeds: torch.Tensor, max_iter: int,
                tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Run weighted Lloyd's algorithm from (n_runs, k) seed rows, all runs at once.

    Works on the (n_points, n_points) Gram matrix alone, so one iteration costs
    n_points^2 * k per run whatever the number of features. Each center is kept as its
    members' weight shares: (n_runs, k, n_points) `members`, whose product with the points
    gives the centers. Same rule as `_weighted_lloyd`: an empty cluster keeps its center,
    and a run stops when its msd improves by less than `tol` relative.
    Returns `members` and the (n_runs,) weighted mean squared distances.
    """
    n_runs, k = seeds.shape
    n_points = len(weights)
    sq_norms = gram.diagonal()
    total_weight = weights.sum()

    def assign(members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cross = torch.matmul(gram, members.transpose(1, 2))       # (n_runs, n_points, k) p.c
        center_sq = (members * cross.transpose(1, 2)).sum(dim=2)  # (n_runs, k) ||c||^2
        min_scores, labels = (center_sq[:, None, :] - 2.0 * cross).min(dim=2)
        sq_distances = (min_scores + sq_norms).clamp_(min=0.0)    # (n_runs, n_points)
        return labels, (sq_distances * weights).sum(dim=1) / total_weight

    members = torch.zeros(n_runs, k, n_points, dtype=torch.float64, device=gram.device)
    members.scatter_(2, seeds[:, :, None], 1.0)
    labels, msd = assign(members)
    active = torch.ones(n_runs, dtype=torch.bool, device=gram.device)
    for _ in range(max_iter):
        # each center becomes the weighted mean of its points
        shares = torch.zeros_like(members)
        shares.scatter_(1, labels[:, None, :], weights.expand(n_runs, 1, n_points))
        totals = shares.sum(dim=2, keepdim=True)  # (n_runs, k, 1) cluster weights
        means = shares / totals.clamp(min=torch.finfo(torch.float64).tiny)
        updated = torch.where(totals > 0, means, members)
        members = torch.where(active[:, None, None], updated, members)

        # a run that has converged keeps its centers and msd
        new_labels, new_msd = assign(members)
        converged = msd - new_msd <= tol * msd
        labels = torch.where(active[:, None], new_labels, labels)
        msd = torch.where(active, new_msd, msd)
        active &= ~converged
        if not bool(active.any()):  # a CPU-GPU sync point, once per iteration
            break
    return members, msd


def _local_lloyd(points: torch.Tensor, weights: torch.Tensor, k: int, config: KMeansConfig,
                 rng: np.random.Generator) -> tuple[torch.Tensor, list[float]]:
    """Reduce weighted (n_points, n_features) `points` to k centers, best of several runs.

    Returns the best run's (k, n_features) centers and every run's weighted mean squared
    distance. Up to GRAM_MAX_POINTS points, the runs share tensor operations on the Gram
    matrix. Beyond that the runs go one by one on the features.
    """
    n_runs = config.num_trials()
    use_gram = len(points) <= GRAM_MAX_POINTS
    if use_gram:
        points64 = points.double()
        gram = points64 @ points64.T  # (n_points, n_points)
        distances_to = _gram_distance_oracle(gram)
        runs_per_chunk = max(1, BLOCK_ELEMENTS // (k * len(points)))
    else:
        distances_to = _block_distance_oracle(_dense_block(points))
        runs_per_chunk = 1
    seeds = _choose_seeds(distances_to, weights, k, n_runs, config.local_lloyd_init_method, rng)
    seeds = torch.as_tensor(seeds, device=points.device)

    best_centers, msds = None, []
    for start in range(0, n_runs, runs_per_chunk):
        part = seeds[start:start + runs_per_chunk]
        if use_gram:
            members, part_msd = _gram_lloyd(gram, weights, part, config.local_lloyd_max_iter,
                                            config.local_lloyd_tol)
            part_msd = part_msd.tolist()
            best = int(np.argmin(part_msd))
            centers = (members[best] @ points64).float()
        else:
            centers, msd = _weighted_lloyd(points, weights, points[part[0]],
                                           config.local_lloyd_max_iter, config.local_lloyd_tol)
            part_msd, best = [msd], 0
        if not msds or part_msd[best] < min(msds):
            best_centers = centers
        msds.extend(part_msd)
    return best_centers, msds


# --- distributed helpers -----------------------------------------------------------------------

def _broadcast(tensor: torch.Tensor) -> torch.Tensor:
    """Overwrite `tensor` in place with rank 0's copy (a no-op on one host)."""
    if is_distributed():
        dist.broadcast(tensor, src=0)
    return tensor


def _max_over_hosts(value: int, device: torch.device) -> int:
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def _info(message: str, *args: Any) -> None:
    """Log on rank 0 only, so that a job with N hosts does not print every line N times."""
    if is_main_process():
        logger.info(message, *args)


# --- the estimator ---------------------------------------------------------------------------

@dataclass
class _TrainingState:
    """Everything the mini-batch phase needs to resume: saved in each checkpoint."""

    centers: torch.Tensor       # (n_centers, n_features) float32
    counts: torch.Tensor        # (n_centers,) float64 records absorbed per center, decayed
    epoch: int = 0              # completed epochs
    batch: int = 0              # completed mini-batches of the current epoch
    n_steps: int = 0            # completed mini-batches in all
    epoch_ssd: float = 0.0      # squared distances summed so far in the current epoch
    epoch_records: int = 0      # records seen so far in the current epoch
    history: list[dict[str, Any]] = field(default_factory=list)


class KMeans:
    """Mini-batch k-means with SageMaker K-Means' hyperparameters and scikit-learn's attributes.

    Fitted attributes:
        cluster_centers_  (n_clusters, n_features) float32 ndarray
        inertia_          sum of squared distances of all training records to their nearest center
        labels_           (n_samples,) nearest center of each training record on this host
        n_iter_           epochs run
        n_steps_          mini-batches processed
        history_          one dict per epoch, whose "train:msd" is the mean squared distance to
                          the K centers, measured on each mini-batch before its update
        metrics_          final metrics named "<channel>:<name>", e.g. "train:msd", "test:ssd"
    """

    algorithm = "kmeans"

    def __init__(self, config: KMeansConfig, device: str | torch.device | None = None):
        self.config = config
        self.device = select_device(str(device) if device is not None else None)
        self.cluster_centers_: np.ndarray | None = None
        self.inertia_: float | None = None
        self.labels_: np.ndarray | None = None
        self.n_iter_ = 0
        self.n_steps_ = 0
        self.history_: list[dict[str, Any]] = []
        self.metrics_: dict[str, float] = {}
        self.vocabulary: list[str] | None = None
        self._centers: torch.Tensor | None = None
        self._state: _TrainingState | None = None

    @property
    def n_clusters(self) -> int:
        return self.config.k

    @property
    def random_state(self) -> int:
        return self.config.seed

    @property
    def n_features_in_(self) -> int:
        return self.config.feature_dim

    # --- fit ---

    def fit(self, train: FeatureData | np.ndarray | sp.spmatrix,
            validation: FeatureData | None = None, test: FeatureData | None = None, *,
            vocabulary: list[str] | None = None, checkpoint_dir=None,
            stop_signal: StopSignal | None = None) -> list[dict[str, Any]]:
        """Cluster `train` and return the per-epoch history.

        Resumes from the newest checkpoint in `checkpoint_dir` when there is one, and saves a
        checkpoint after every epoch. When `stop_signal` is requested, saves a checkpoint after
        the current mini-batch and raises TrainingStopped. The `validation` and `test`
        channels are scored with `eval_metrics` after training.
        """
        rows = _HostRows(train, "train")
        self._check_feature_dim(rows)
        self.vocabulary = vocabulary
        self.metrics_ = {}
        numpy_rng = seed_everything(self.config.seed)
        n_centers, batch_size = self._plan(rows)
        checkpointer = Checkpointer(checkpoint_dir)

        # mini-batch phase with K centers
        self._start(rows, n_centers, batch_size, checkpointer, numpy_rng)
        self._train_epochs(rows, batch_size, checkpointer, stop_signal, numpy_rng)

        # reduction to k centers, optional full Lloyd iterations, final scores
        centers = self._reduce(numpy_rng)
        centers = self._final_lloyd(rows, centers)
        self._set_centers(centers)
        self._score_train(rows)
        for channel, data in (("validation", validation), ("test", test)):
            if data is not None:
                self._evaluate(data, channel)
        self.n_iter_ = self._state.epoch
        self.n_steps_ = self._state.n_steps
        self.history_ = self._state.history
        return self.history_

    def _check_feature_dim(self, rows: _HostRows) -> None:
        if rows.n_features != self.config.feature_dim:
            raise InvalidHyperparameter(
                "feature_dim", self.config.feature_dim,
                f"does not match the {rows.n_features} features of the {rows.channel} data")

    def _plan(self, rows: _HostRows) -> tuple[int, int]:
        """Return K and this host's mini-batch size, checking k against the record count."""
        config = self.config
        counts = torch.tensor([rows.n_samples, rows.n_samples if is_main_process() else 0],
                              dtype=torch.int64, device=self.device)
        n_total, n_first_host = (int(v) for v in all_reduce_sum(counts).tolist())
        if config.k > n_total:
            raise InvalidHyperparameter(
                "k", config.k, f"must not exceed the number of training records ({n_total})")
        if config.k > n_first_host:
            raise UserError(f"k={config.k} exceeds the {n_first_host} training records of the "
                            f"first host, which picks the initial centers, so shard the data "
                            f"more evenly")
        n_centers = config.n_centers(n_first_host)
        batch_size = config.mini_batch_size
        if batch_size > rows.n_samples and rows.n_samples > 0:
            logger.warning("mini_batch_size=%d > %d training records; using %d",
                           batch_size, rows.n_samples, rows.n_samples)
            batch_size = rows.n_samples
        factor = config.extra_center_factor
        if factor != "auto" and n_centers < config.k * factor:
            logger.warning("k * extra_center_factor=%d > %d training records; using %d centers",
                           config.k * factor, n_first_host, n_centers)
        return n_centers, batch_size

    def _start(self, rows: _HostRows, n_centers: int, batch_size: int,
               checkpointer: Checkpointer, numpy_rng: np.random.Generator) -> None:
        """Resume from rank 0's newest checkpoint, or pick the initial centers."""
        state = checkpointer.latest(self.algorithm) if is_main_process() else None
        resumed = torch.tensor([state is not None], dtype=torch.int64, device=self.device)
        resumed = bool(_broadcast(resumed).item())
        empty = _TrainingState(
            centers=torch.zeros(n_centers, self.config.feature_dim, device=self.device),
            counts=torch.zeros(n_centers, dtype=torch.float64, device=self.device))
        if state is not None:
            self._state = self._restore(state, n_centers, numpy_rng)
        elif resumed or not is_main_process():
            self._state = empty
        else:
            empty.centers = self._initial_centers(rows, n_centers, batch_size, numpy_rng)
            self._state = empty

        # every host continues from rank 0's centers, counts and position
        _broadcast(self._state.centers)
        _broadcast(self._state.counts)
        position = torch.tensor([self._state.epoch, self._state.batch, self._state.n_steps],
                                dtype=torch.int64, device=self.device)
        self._state.epoch, self._state.batch, self._state.n_steps = _broadcast(position).tolist()

    def _initial_centers(self, rows: _HostRows, n_centers: int, batch_size: int,
                         numpy_rng: np.random.Generator) -> torch.Tensor:
        """Pick K centers among a random sample of one mini-batch (or K records, if more)."""
        sample_size = min(rows.n_samples, max(batch_size, n_centers))
        sample = np.sort(numpy_rng.choice(rows.n_samples, size=sample_size, replace=False))
        _info("Initializing %d centers (k=%d) by %s from %d records",
              n_centers, self.config.k, self.config.init_method, sample_size)
        block = _host_block(rows.matrix[sample], self.device)
        weights = torch.ones(sample_size, dtype=torch.float64, device=self.device)
        chosen = _choose_seeds(_block_distance_oracle(block), weights, n_centers, 1,
                               self.config.init_method, numpy_rng)
        return _dense_rows(block, chosen[0]).contiguous()

    def _restore(self, state: dict[str, Any], n_centers: int,
                 numpy_rng: np.random.Generator) -> _TrainingState:
        centers = state["model"]["centers"]
        expected = (n_centers, self.config.feature_dim)
        if tuple(centers.shape) != expected:
            raise UserError(
                f"the checkpoint contains {tuple(centers.shape)} centers but this job needs "
                f"{expected} (k * extra_center_factor, feature_dim); empty the checkpoint "
                f"folder to start afresh")
        restore_rng_state(state["rng"], numpy_rng)
        return _TrainingState(
            centers=centers.to(self.device, torch.float32),
            counts=state["optimizer"]["counts"].to(self.device, torch.float64),
            epoch=int(state["epoch"]), batch=int(state["batch"]), n_steps=int(state["n_steps"]),
            epoch_ssd=float(state["epoch_ssd"]), epoch_records=int(state["epoch_records"]),
            history=list(state["history"]))

    def _save_checkpoint(self, checkpointer: Checkpointer, rng: dict[str, Any]) -> str:
        """Save the training state and return a phrase for messages that names where it went."""
        state = self._state
        path = checkpointer.save({
            "algorithm": self.algorithm,
            "epoch": state.epoch,
            "batch": state.batch,
            "n_steps": state.n_steps,
            "config": asdict(self.config),
            "model": {"centers": state.centers.cpu()},
            # the counts set each center's learning rate (1 / count): the optimizer state
            "optimizer": {"counts": state.counts.cpu()},
            "epoch_ssd": state.epoch_ssd,
            "epoch_records": state.epoch_records,
            "history": state.history,
            "rng": rng,
        })
        if path is not None:
            return f"saved checkpoint {path}"
        return "no checkpoint saved on this host" if checkpointer.directory else \
            "no checkpoint saved because no checkpoint_dir was given"

    def _train_epochs(self, rows: _HostRows, batch_size: int, checkpointer: Checkpointer,
                      stop_signal: StopSignal | None, numpy_rng: np.random.Generator) -> None:
        state = self._state
        n_batches = _max_over_hosts(math.ceil(rows.n_samples / batch_size), self.device)
        while state.epoch < self.config.epochs:
            # the RNG state before the shuffle lets a checkpoint taken mid-epoch replay it
            epoch_rng = rng_state(numpy_rng)
            order = numpy_rng.permutation(rows.n_samples)
            started = time.perf_counter()
            records_before = state.epoch_records
            stopped = False
            while state.batch < n_batches and not stopped:
                index = order[state.batch * batch_size:(state.batch + 1) * batch_size]
                requested = stop_signal is not None and stop_signal.requested()
                stopped = self._update(rows, index, requested)
                state.batch += 1
                state.n_steps += 1
            if state.batch < n_batches:
                saved = self._save_checkpoint(checkpointer, epoch_rng)
                raise TrainingStopped(f"stopped in epoch {state.epoch + 1} after mini-batch "
                                      f"{state.batch} of {n_batches}; {saved}")
            self._finish_epoch(time.perf_counter() - started, state.epoch_records - records_before)
            saved = self._save_checkpoint(checkpointer, rng_state(numpy_rng))
            if stopped:
                raise TrainingStopped(f"stopped after epoch {state.epoch}; {saved}")

    def _update(self, rows: _HostRows, index: np.ndarray, stop_requested: bool) -> bool:
        """Apply one mini-batch update and return whether any host requested a stop."""
        state = self._state
        stats = _accumulate(rows, index, state.centers)

        # one collective for the sums, counts, squared distances, records and stop requests
        extras = torch.stack([stats.ssd, stats.ssd.new_tensor(float(len(index))),
                              stats.ssd.new_tensor(float(stop_requested))])
        sums, batch_counts, extras = _all_reduce_sums(stats.sums, stats.counts, extras)
        ssd, n_records, stops = extras.tolist()

        # center_j <- (1 - p_j) center_j + p_j mean_j with p_j = n_new / (n_old + n_new),
        # computed as (1 - p_j) center_j + sum_j / (n_old + n_new)
        if self.config.half_life_time_size > 0:
            state.counts *= 0.5 ** (n_records / self.config.half_life_time_size)
        state.counts += batch_counts
        inverse = torch.where(state.counts > 0, 1.0 / state.counts, 0.0)
        keep = (1.0 - batch_counts * inverse).float()
        state.centers.mul_(keep[:, None]).addcmul_(sums, inverse.float()[:, None])

        state.epoch_ssd += ssd
        state.epoch_records += int(n_records)
        return stops > 0

    def _finish_epoch(self, seconds: float, records: int) -> None:
        state = self._state
        msd = state.epoch_ssd / max(state.epoch_records, 1)
        state.epoch += 1
        state.history.append({"epoch": state.epoch, "train:msd": msd})
        _info("Epoch %d: streaming msd %.6g over %d records", state.epoch, msd, state.epoch_records)
        if is_main_process():
            log_progress(state.epoch, self.config.epochs)
            log_throughput(records / max(seconds, 1e-9))
        state.batch = 0
        state.epoch_ssd = 0.0
        state.epoch_records = 0

    def _reduce(self, numpy_rng: np.random.Generator) -> torch.Tensor:
        """Shrink the K weighted centers to k by local Lloyd, keeping the best of the runs."""
        state = self._state
        n_centers, k = len(state.centers), self.config.k
        if n_centers == k:
            return state.centers
        _info("shrinking %d centers into %d", n_centers, k)
        centers, msds = _local_lloyd(state.centers, state.counts, k, self.config, numpy_rng)
        for attempt, msd in enumerate(msds):
            _info("local kmeans attempt #%d. Current mean square distance %f", attempt, msd)
        _info("finished shrinking process. Mean Square Distance = %f", min(msds))
        # every host has the same inputs, but GPU sums may differ in the last bit
        return _broadcast(centers.contiguous())

    def _final_lloyd(self, rows: _HostRows, centers: torch.Tensor) -> torch.Tensor:
        """Run `final_lloyd_iter` Lloyd iterations over all training rows (not in the built-in).

        Each iteration is one pass that measures the inertia of the current centers and moves
        every non-empty center to the mean of its rows. Stops early when the inertia improved
        by less than `local_lloyd_tol` relative, keeping the centers just measured.
        """
        tol = self.config.local_lloyd_tol
        previous = math.inf
        for iteration in range(self.config.final_lloyd_iter):
            stats = _accumulate(rows, None, centers)
            sums, counts, ssd = _all_reduce_sums(stats.sums, stats.counts, stats.ssd)
            inertia = float(ssd)
            _info("full Lloyd iteration %d: inertia %.6g", iteration + 1, inertia)
            if math.isfinite(previous) and previous - inertia <= tol * previous:
                break
            means = sums / counts.clamp(min=1.0).float()[:, None]
            centers = torch.where(counts[:, None] > 0, means, centers)
            previous = inertia
        return centers

    def _set_centers(self, centers: torch.Tensor) -> None:
        self._centers = centers.to(self.device, torch.float32).contiguous()
        self.cluster_centers_ = self._centers.cpu().numpy()

    def _score_train(self, rows: _HostRows) -> None:
        stats = _accumulate(rows, None, self._centers, with_sums=False, with_labels=True)
        totals = _all_reduce_sums(torch.stack([stats.ssd, stats.counts.sum()]))[0].tolist()
        self.inertia_ = totals[0]
        self.labels_ = (torch.cat(stats.labels).cpu().numpy() if stats.labels
                        else np.zeros(0, dtype=np.int64))
        self.metrics_["train:msd"] = totals[0] / max(totals[1], 1.0)
        if is_main_process():
            log_quality_metric("train", "msd", self.metrics_["train:msd"])

    def _evaluate(self, data: FeatureData, channel: str) -> None:
        """Score one channel with this host's rows alone.

        SageMaker recommends FullyReplicated for the test channel, so every host has all of it.
        """
        rows = _HostRows(data, channel)
        self._check_feature_dim(rows)
        stats = _accumulate(rows, None, self._centers, with_sums=False)
        values = {"ssd": float(stats.ssd), "msd": float(stats.ssd) / max(rows.n_samples, 1)}
        for name in self.config.eval_metrics:
            self.metrics_[f"{channel}:{name}"] = values[name]
            if is_main_process():
                log_quality_metric(channel, name, values[name])

    # --- inference ---

    def _require_fitted(self) -> torch.Tensor:
        if self._centers is None:
            raise RuntimeError("this KMeans is not fitted; call fit() or from_artifact()")
        return self._centers

    def assign(self, X: FeatureData | np.ndarray | sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
        """Return each row's nearest center (int64) and Euclidean distance to it (float32).

        Rows are processed in blocks, so sparse input is never densified whole.
        """
        centers = self._require_fitted()
        rows = _HostRows(X, "input")
        self._check_feature_dim(rows)
        labels, distances = [], []
        center_sq_norms = (centers * centers).sum(dim=1)
        for block in rows.blocks(None, len(centers), self.device):
            block_labels, sq_distances = _nearest(block, centers, center_sq_norms)
            labels.append(block_labels.cpu())
            distances.append(sq_distances.sqrt_().cpu())
        if not labels:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return torch.cat(labels).numpy(), torch.cat(distances).numpy()

    def predict(self, X: FeatureData | np.ndarray | sp.spmatrix) -> list[dict[str, float]]:
        """Return the built-in's response fields for each row.

        `closest_cluster` is the nearest center's index as a float, as the built-in returns it,
        and `distance_to_cluster` is the Euclidean (not squared) distance to that center.
        """
        labels, distances = self.assign(X)
        return [{"closest_cluster": float(label), "distance_to_cluster": float(distance)}
                for label, distance in zip(labels, distances)]

    # --- model files ---

    def to_artifact(self, *, vocabulary: list[str] | None = None,
                    featurizer: dict[str, Any] | None = None) -> Artifact:
        centers = self._require_fitted()
        return Artifact(
            algorithm=self.algorithm,
            config=asdict(self.config),
            tensors={"cluster_centers": centers.cpu()},
            vocabulary=vocabulary if vocabulary is not None else self.vocabulary,
            featurizer=featurizer,
            metrics=dict(self.metrics_))

    @classmethod
    def from_artifact(cls, artifact: Artifact,
                      device: str | torch.device | None = None) -> "KMeans":
        if artifact.algorithm != cls.algorithm:
            raise UserError(f"the model artifact is for algorithm {artifact.algorithm!r}, "
                            f"not {cls.algorithm!r}")
        model = cls(KMeansConfig(**artifact.config), device=device)
        model._set_centers(artifact.tensors["cluster_centers"])
        model.metrics_ = dict(artifact.metrics)
        model.vocabulary = artifact.vocabulary
        return model

    def to_mxnet_model_file(self) -> bytes:
        """Return the bytes of the built-in container's model file `model_algo-1`.

        The file is an MXNet NDArray list with one (k, feature_dim) float32 array of the
        cluster centers and no names.
        """
        self._require_fitted()
        return encode_ndarray_list([self.cluster_centers_])
