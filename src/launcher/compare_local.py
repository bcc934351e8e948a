"""Local comparison: our model, trained as `train --mode local` trains it, against the
scikit-learn estimator a user would otherwise pick, on the same channels.

ntm: LatentDirichletAllocation; kmeans: KMeans(n_init=3) and MiniBatchKMeans with the same
batch size; rating: TF-IDF weighting of the same n-gram counts with LogisticRegression.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import LatentDirichletAllocation
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, mean_absolute_error

from ..data.channels import read_channel, read_vocab_txt
from ..models.artifact import load_artifact
from ..models.registry import model_class
from ..models.topic_metrics import (embedding_coherence, npmi_coherence, top_word_ids,
                                    topic_uniqueness)
from ..models.training import FeatureData
from . import plots
from .job_folders import LocalJobResult, read_channel_manifest, run_local_job

logger = logging.getLogger(__name__)

TOP_WORDS_TU = 20
TOP_WORDS_NPMI = 10


def compare_local(*, algorithm: str, channels_dir: Path, out_dir: Path,
                  hyperparameters: dict[str, str], job_name: str,
                  trained: LocalJobResult | None = None) -> dict[str, Any]:
    """Train ours and the scikit-learn peer(s); return {"rows": [...], "plots": {...}, ...}.

    `trained` reuses a local job that already trained our model on these channels.
    """
    manifest = read_channel_manifest(channels_dir)
    job = trained or run_local_job(algorithm=algorithm, channels_dir=channels_dir,
                                   out_dir=out_dir / "ours", hyperparameters=hyperparameters,
                                   job_name=job_name)
    model = model_class(algorithm).from_artifact(load_artifact(job.job_dir / "model"))
    train = read_channel(channels_dir / "train")
    test_dir = channels_dir / "test" if (channels_dir / "test").is_dir() else channels_dir / "validation"
    test = read_channel(test_dir)
    vocab_path = channels_dir / "auxiliary" / "vocab.txt"
    vocabulary = read_vocab_txt(vocab_path) if vocab_path.is_file() else None
    ours_seconds = _training_seconds(job.metrics)

    compare = {"ntm": _compare_ntm, "kmeans": _compare_kmeans, "rating": _compare_rating}[algorithm]
    report = compare(model, job.metrics, train, test, vocabulary, ours_seconds, out_dir)
    loss_plot = plots.plot_loss_curves(job.metrics.get("history", []), out_dir / "loss_curves.png",
                                       f"{algorithm}: per-epoch metrics")
    if loss_plot:
        report["plots"]["loss_curves"] = loss_plot.name
    report.update(algorithm=algorithm, channels=str(channels_dir), test_channel=test_dir.name,
                  feature_dim=manifest.get("feature_dim"), model_tar=str(job.model_tar),
                  hyperparameters=job.metrics.get("job", {}).get("hyperparameters", {}))
    return report


def _training_seconds(metrics: dict[str, Any]) -> float:
    timing = metrics.get("timing", {})
    for key in ("train_seconds", "training_seconds", "fit_seconds"):
        if key in timing:
            return float(timing[key])
    return float(timing.get("job_wall_seconds", float("nan")))


def _timed(fit) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fit()
    return result, time.perf_counter() - started


# --- neural topic model vs LDA ----------------------------------------------------------------

def _topic_scores(topic_word: np.ndarray, test: FeatureData, vocabulary: list[str] | None
                  ) -> dict[str, float]:
    top_tu = top_word_ids(topic_word, TOP_WORDS_TU)
    top_npmi = top_word_ids(topic_word, TOP_WORDS_NPMI)
    scores = {"tu": topic_uniqueness(top_tu)[0], "npmi": npmi_coherence(top_npmi, test.features)[0]}
    if vocabulary is not None:
        try:
            from ..models.glove import glove_vectors

            vectors, _found = glove_vectors(vocabulary)
            scores["wetc"] = embedding_coherence(top_tu, vectors)[0]
        except Exception as error:  # GloVe is optional for the comparison table
            logger.warning("WETC skipped: %s", error)
    return scores


def _compare_ntm(model, metrics, train, test, vocabulary, ours_seconds, out_dir) -> dict:
    num_topics = model.config.num_topics
    ours_topic_word = np.asarray(model.topic_word_matrix())
    ours = {"model": "review_nlp NTM", **_topic_scores(ours_topic_word, test, vocabulary),
            "test_total_loss": metrics.get("final", {}).get("test:total_loss"),
            "train_seconds": ours_seconds}

    lda = LatentDirichletAllocation(n_components=num_topics, learning_method="online",
                                    random_state=0, n_jobs=1)
    _, lda_seconds = _timed(lambda: lda.fit(train.features))
    lda_topic_word = lda.components_ / lda.components_.sum(axis=1, keepdims=True)
    peer = {"model": "scikit-learn LatentDirichletAllocation",
            **_topic_scores(lda_topic_word, test, vocabulary),
            "test_total_loss": None, "train_seconds": lda_seconds}

    plot_paths = {}
    if vocabulary is not None:
        top = top_word_ids(ours_topic_word, 8)
        words = [[vocabulary[i] for i in row] for row in top]
        weights = [[float(ours_topic_word[k, i]) for i in row] for k, row in enumerate(top)]
        plot_paths["topic_words"] = plots.plot_topic_words(
            words, weights, out_dir / "topic_words.png", "NTM topics: top words").name
    columns = ["model", "npmi", "tu", "wetc", "test_total_loss", "train_seconds"]
    return {"rows": [ours, peer], "columns": columns, "plots": plot_paths}


# --- k-means vs KMeans and MiniBatchKMeans ----------------------------------------------------

def _squared_distances_to_nearest(features, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    row_norms = np.asarray(features.multiply(features).sum(axis=1)).ravel()
    products = np.asarray(features @ centers.T)
    squared = row_norms[:, None] - 2 * products + (centers ** 2).sum(axis=1)[None, :]
    labels = squared.argmin(axis=1)
    return np.maximum(squared[np.arange(len(labels)), labels], 0.0), labels


def _cluster_row(name: str, centers: np.ndarray, train, test, seconds: float) -> tuple[dict, np.ndarray]:
    train_squared, _ = _squared_distances_to_nearest(train.features, centers)
    test_squared, labels = _squared_distances_to_nearest(test.features, centers)
    row = {"model": name, "test_msd": float(test_squared.mean()),
           "test_ssd": float(test_squared.sum()), "train_inertia": float(train_squared.sum()),
           "train_seconds": seconds}
    return row, np.bincount(labels, minlength=len(centers))


def _compare_kmeans(model, metrics, train, test, vocabulary, ours_seconds, out_dir) -> dict:
    k = model.config.k
    batch_size = min(model.config.mini_batch_size, train.n_samples)
    ours, ours_sizes = _cluster_row("review_nlp KMeans", np.asarray(model.cluster_centers_),
                                    train, test, ours_seconds)
    full = SklearnKMeans(n_clusters=k, n_init=3, random_state=0)
    _, full_seconds = _timed(lambda: full.fit(train.features))
    full_row, full_sizes = _cluster_row("scikit-learn KMeans(n_init=3)", full.cluster_centers_,
                                        train, test, full_seconds)
    mini = MiniBatchKMeans(n_clusters=k, batch_size=batch_size, random_state=0, n_init=3)
    _, mini_seconds = _timed(lambda: mini.fit(train.features))
    mini_row, mini_sizes = _cluster_row(f"scikit-learn MiniBatchKMeans(batch_size={batch_size})",
                                        mini.cluster_centers_, train, test, mini_seconds)
    sizes_plot = plots.plot_cluster_sizes(
        {"review_nlp": ours_sizes, "KMeans": full_sizes, "MiniBatchKMeans": mini_sizes},
        out_dir / "cluster_sizes.png", f"test records per cluster (k={k})")
    columns = ["model", "test_msd", "test_ssd", "train_inertia", "train_seconds"]
    return {"rows": [ours, full_row, mini_row], "columns": columns,
            "plots": {"cluster_sizes": sizes_plot.name}}


# --- rating classifier vs TF-IDF + logistic regression ----------------------------------------

def _rating_scores(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(true, predicted)),
            "macro_f1": float(f1_score(true, predicted, average="macro")),
            "mae": float(mean_absolute_error(true, predicted))}


def _compare_rating(model, metrics, train, test, vocabulary, ours_seconds, out_dir) -> dict:
    true = np.rint(test.labels).astype(int)
    predicted = np.array([row["predicted_stars"] for row in model.predict(test.features)])
    ours = {"model": "review_nlp RatingClassifier", **_rating_scores(true, predicted),
            "train_seconds": ours_seconds}

    tfidf = TfidfTransformer()
    classifier = LogisticRegression(max_iter=1000, C=4.0)

    def fit():
        classifier.fit(tfidf.fit_transform(train.features), np.rint(train.labels).astype(int))

    _, peer_seconds = _timed(fit)
    peer_predicted = classifier.predict(tfidf.transform(test.features))
    peer = {"model": "TF-IDF + scikit-learn LogisticRegression",
            **_rating_scores(true, peer_predicted), "train_seconds": peer_seconds}

    classes = sorted(set(true.tolist()) | set(predicted.tolist()))
    matrix = confusion_matrix(true, predicted, labels=classes)
    plot = plots.plot_confusion_matrix(matrix, [str(c) for c in classes],
                                       out_dir / "confusion_matrix.png",
                                       "rating classifier on the test channel")
    columns = ["model", "accuracy", "mae", "macro_f1", "train_seconds"]
    return {"rows": [ours, peer], "columns": columns, "plots": {"confusion_matrix": plot.name}}
