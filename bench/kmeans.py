"""Benchmark web-scale k-means against scikit-learn, in one run with the ratios printed.

(a) TF-IDF rows of real reviews, k=20: inertia against `sklearn.cluster.KMeans(n_init=3)`
    (target: within 2 %) and fit time against `MiniBatchKMeans` with the same batch size
    (target: no slower). The built-in's settings run first, then the settings given here.
(b) Dense random float32 rows (1,000,000 x 256 by default), k=1024: the assignment pass's
    GFLOP/s (2 * n * k * d flops) against torch.mm alone on the same blocks, timed in the
    same run (target: at least half).

    .venv/bin/python bench/kmeans.py
    .venv/bin/python bench/kmeans.py --dense-rows 200000
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.cluster import MiniBatchKMeans
from sklearn.feature_extraction.text import TfidfVectorizer
from threadpoolctl import threadpool_limits

from review_nlp.models import kmeans as kmeans_module
from review_nlp.models.kmeans import KMeans, KMeansConfig

DEFAULT_DATA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "reviews"
                / "marc_en_train.csv")


def read_review_bodies(path: Path) -> list[str]:
    """Review texts of a headerless `index, review_body, stars` CSV."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [row[1] for row in csv.reader(handle) if len(row) >= 2]


def tfidf_rows(texts: list[str], featurizer: str) -> sp.csr_matrix:
    if featurizer == "review_nlp":
        from review_nlp.data.features import Featurizer, FeaturizerConfig
        config = FeaturizerConfig(kind="tfidf", min_df=10, max_df=0.9)
        return Featurizer(config).fit_transform(texts)
    vectorizer = TfidfVectorizer(max_df=0.9, min_df=10, stop_words="english", dtype=np.float32)
    return vectorizer.fit_transform(texts)


def inertia_of(X: sp.csr_matrix, centers: np.ndarray) -> float:
    """Sum of squared distances of the rows of X to their nearest center, in float64."""
    row_sq = np.asarray(X.multiply(X).sum(axis=1)).ravel()
    centers = centers.astype(np.float64)
    scores = (centers ** 2).sum(axis=1)[None, :] - 2.0 * (X @ centers.T)
    return float(np.maximum(scores.min(axis=1) + row_sq, 0.0).sum())


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def run_tfidf(args) -> None:
    texts = read_review_bodies(args.data)
    X, seconds = timed(lambda: tfidf_rows(texts, args.featurizer))
    X = sp.csr_matrix(X, dtype=np.float32)
    print(f"\n(a) TF-IDF ({args.featurizer}) of {args.data.name}: {X.shape[0]} reviews x "
          f"{X.shape[1]} terms, {X.nnz / X.shape[0]:.1f} non-zeros per row, "
          f"built in {seconds:.1f} s; k={args.k}, mini-batch size {args.mini_batch_size}; "
          f"fit times are medians of {args.repeats} runs")

    # one untimed fit of each on a slice, so that no timing pays first-call set-up costs
    warm = X[:2000]
    SklearnKMeans(args.k, n_init=1, random_state=args.seed).fit(warm)
    MiniBatchKMeans(args.k, batch_size=warm.shape[0], random_state=args.seed).fit(warm)
    KMeans(KMeansConfig(feature_dim=X.shape[1], k=args.k,
                        mini_batch_size=warm.shape[0])).fit(warm)

    builtin_config = KMeansConfig(feature_dim=X.shape[1], k=args.k,
                                  mini_batch_size=args.mini_batch_size, seed=args.seed)
    tuned_config = KMeansConfig(
        feature_dim=X.shape[1], k=args.k, mini_batch_size=args.mini_batch_size,
        epochs=args.epochs, init_method=args.init_method,
        extra_center_factor=args.extra_center_factor, final_lloyd_iter=args.final_lloyd_iter,
        seed=args.seed)
    candidates = {
        "sklearn KMeans(n_init=3)":
            lambda: SklearnKMeans(args.k, n_init=3, random_state=args.seed),
        f"sklearn MiniBatchKMeans(batch_size={args.mini_batch_size})":
            lambda: MiniBatchKMeans(args.k, batch_size=args.mini_batch_size,
                                    random_state=args.seed),
        "review_nlp KMeans, built-in settings": lambda: KMeans(builtin_config),
        (f"review_nlp KMeans, epochs={args.epochs} init={args.init_method} "
         f"extra_center_factor={args.extra_center_factor} "
         f"final_lloyd_iter={args.final_lloyd_iter}"): lambda: KMeans(tuned_config),
    }

    # the runs alternate between the models, so that a change in machine load hits all alike
    times: dict[str, list[float]] = {name: [] for name in candidates}
    models = {}
    for _ in range(args.repeats):
        for name, make_model in candidates.items():
            models[name] = make_model()
            times[name].append(timed(lambda: models[name].fit(X))[1])

    names = list(candidates)
    reference = inertia_of(X, models[names[0]].cluster_centers_)
    minibatch_seconds = float(np.median(times[names[1]]))
    print(f"{'model':<86} {'inertia':>10} {'/KMeans':>8} {'fit s':>7} {'/MiniBatch':>10}")
    for name in names:
        # MiniBatchKMeans' own inertia_ covers its last mini-batch only
        inertia = inertia_of(X, models[name].cluster_centers_)
        seconds = float(np.median(times[name]))
        print(f"{name:<86} {inertia:>10.1f} {inertia / reference:>8.4f} "
              f"{seconds:>7.2f} {seconds / minibatch_seconds:>10.2f}")
    tuned_seconds = float(np.median(times[names[-1]]))
    tuned_inertia = inertia_of(X, models[names[-1]].cluster_centers_)
    print(f"targets: inertia/KMeans <= 1.02, time/MiniBatch <= 1.00; last row: "
          f"{tuned_inertia / reference:.4f} and {tuned_seconds / minibatch_seconds:.2f}")


def gemm_peak_rate(rows: int, n_features: int, n_clusters: int, repeats: int = 5) -> float:
    """Best GFLOP/s of torch.mm on one (rows, n_features) x (n_features, n_clusters) product."""
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(rows, n_features, generator=generator)
    right = torch.randn(n_clusters, n_features, generator=generator)
    torch.mm(left, right.T)
    best = min(timed(lambda: torch.mm(left, right.T))[1] for _ in range(repeats))
    return 2.0 * rows * n_features * n_clusters / best / 1e9


def run_dense(args) -> None:
    n, d, k = args.dense_rows, args.dense_dim, args.dense_k
    print(f"\n(b) dense float32 {n} x {d}, k={k}, mini-batch size {args.mini_batch_size}, "
          f"extra_center_factor=1")
    X = np.random.default_rng(args.seed).standard_normal((n, d), dtype=np.float32)
    block_rows = min(n, max(1, kmeans_module.BLOCK_ELEMENTS // k))  # as KMeans.assign uses
    pass_gflop = 2.0 * n * k * d / 1e9

    config = KMeansConfig(feature_dim=d, k=k, mini_batch_size=args.mini_batch_size,
                          extra_center_factor=1, seed=args.seed)
    model = KMeans(config)
    _, fit_seconds = timed(lambda: model.fit(X))

    # the assignment pass block by block, each block timed right after torch.mm on it alone,
    # so that a change in machine load hits both alike
    right = torch.from_numpy(model.cluster_centers_).T
    out = torch.empty(block_rows, k)
    gemm_seconds = assign_seconds = 0.0
    for start in range(0, n, block_rows):
        block = X[start:start + block_rows]
        gemm_seconds += timed(lambda: torch.mm(torch.from_numpy(block), right,
                                               out=out[:len(block)]))[1]
        assign_seconds += timed(lambda: model.assign(block))[1]
    peak = gemm_peak_rate(block_rows, d, k)

    gemm_rate = pass_gflop / gemm_seconds
    assign_rate = pass_gflop / assign_seconds
    # fit = one epoch of mini-batch assignments and updates, then one scoring pass
    fit_rate = 2 * pass_gflop / fit_seconds
    print(f"torch.mm ({block_rows} x {d}) x ({d} x {k}), best of 5: {peak:.1f} GFLOP/s")
    print(f"torch.mm alone over the same blocks: {pass_gflop:.1f} GFLOP in {gemm_seconds:.2f} s "
          f"= {gemm_rate:.1f} GFLOP/s")
    print(f"assignment pass (KMeans.assign per block): {assign_seconds:.2f} s = "
          f"{assign_rate:.1f} GFLOP/s = {assign_rate / gemm_rate:.2f} of torch.mm over the same "
          f"blocks, {assign_rate / peak:.2f} of the best torch.mm (target >= 0.50)")
    print(f"fit (one epoch + scoring pass, {2 * pass_gflop:.1f} GFLOP): {fit_seconds:.2f} s = "
          f"{fit_rate:.1f} GFLOP/s = {fit_rate / gemm_rate:.2f} of torch.mm over the same blocks")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # (a) the TF-IDF run
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="headerless CSV of index, review_body, stars")
    parser.add_argument("--featurizer", choices=["sklearn", "review_nlp"], default="sklearn",
                        help="TF-IDF by sklearn's TfidfVectorizer(max_df=0.9, min_df=10, "
                             "stop_words='english') or by review_nlp's Featurizer(kind='tfidf')")
    parser.add_argument("--k", type=int, default=20, help="clusters for the TF-IDF run")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the tuned run")
    parser.add_argument("--init-method", choices=["random", "kmeans++"], default="random",
                        help="init_method of the tuned run")
    parser.add_argument("--extra-center-factor", default="auto",
                        type=lambda v: v if v == "auto" else int(v),
                        help="extra_center_factor of the tuned run")
    parser.add_argument("--final-lloyd-iter", type=int, default=3,
                        help="full Lloyd iterations after the reduction, tuned run")
    parser.add_argument("--repeats", type=int, default=3,
                        help="fits of each model in the TF-IDF run; times are medians")
    parser.add_argument("--skip-tfidf", action="store_true", help="run only the dense part")

    # (b) the dense run
    parser.add_argument("--dense-rows", type=int, default=1_000_000,
                        help="rows of the dense run; 0 skips it")
    parser.add_argument("--dense-dim", type=int, default=256, help="features of the dense run")
    parser.add_argument("--dense-k", type=int, default=1024, help="clusters of the dense run")

    # both runs
    parser.add_argument("--mini-batch-size", type=int, default=5000,
                        help="mini-batch size of our fits and of MiniBatchKMeans")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for torch and for scikit-learn")
    parser.add_argument("--seed", type=int, default=0, help="seed of every model")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__} on {device}, {args.threads} threads of {os.cpu_count()} "
          f"CPUs ({platform.processor() or platform.machine()}), load average "
          f"{os.getloadavg()[0]:.1f}")
    with threadpool_limits(args.threads):
        if not args.skip_tfidf:
            run_tfidf(args)
        if args.dense_rows > 0:
            run_dense(args)


if __name__ == "__main__":
    main()
