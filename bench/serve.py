#!/usr/bin/env python3
"""Benchmark the serving container: requests/s and latency of /invocations on raw review text.

Trains a model on real MARC reviews, starts the real gunicorn server (`python -m
review_nlp.container serve`) on 127.0.0.1 as a subprocess, then sends text/plain requests from
concurrent client threads: single reviews, then batches of reviews. Every loop is bounded by a
request count and a time limit, and traffic goes to loopback only.

    .venv/bin/python bench/serve.py                       # rating model, defaults below
    .venv/bin/python bench/serve.py --algorithm ntm --clients 8 --duration-s 20

Numbers depend on the machine and on what else runs on it; the output states the settings.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REVIEWS = REPO.parent / "shared" / "data" / "reviews" / "marc_en_train.csv"
FEATURIZER_KIND = {"ntm": "counts", "kmeans": "tfidf", "rating": "ngrams"}
MODEL_SETTINGS = {
    "ntm": {"num_topics": 20, "epochs": 5},
    "kmeans": {"k": 10, "epochs": 1},
    "rating": {"epochs": 3},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithm", choices=sorted(FEATURIZER_KIND), default="rating",
                        help="model to train and serve (default: rating)")
    parser.add_argument("--reviews", type=Path, default=DEFAULT_REVIEWS,
                        help="MARC CSV (index, review_body, stars) to train on and send "
                             f"(default: {DEFAULT_REVIEWS})")
    parser.add_argument("--train-reviews", type=int, default=3000,
                        help="reviews to train on (default: 3000)")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn workers, MODEL_SERVER_WORKERS (default: 2)")
    parser.add_argument("--clients", type=int, default=4,
                        help="concurrent client threads (default: 4)")
    parser.add_argument("--batch-size", type=int, default=100,
                        help="reviews per request in the batch scenario (default: 100)")
    parser.add_argument("--duration-s", type=float, default=10.0,
                        help="seconds each scenario runs (default: 10)")
    parser.add_argument("--max-requests", type=int, default=20000,
                        help="requests per scenario at most (default: 20000)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    return parser.parse_args(argv)


def read_reviews(path: Path) -> tuple[list[str], np.ndarray]:
    texts, stars = [], []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            texts.append(row[1])
            stars.append(float(row[2]))
    return texts, np.asarray(stars, dtype=np.float32)


def train_model(algorithm: str, texts: list[str], stars: np.ndarray, model_dir: Path) -> float:
    """Train on `texts` and save the artifact with its featurizer; return seconds taken."""
    from review_nlp.data.features import Featurizer, FeaturizerConfig
    from review_nlp.models import registry
    from review_nlp.models.artifact import save_artifact
    from review_nlp.models.training import FeatureData

    started = time.monotonic()
    featurizer = Featurizer(FeaturizerConfig(kind=FEATURIZER_KIND[algorithm]))
    features = featurizer.fit_transform(texts)
    keep = ~Featurizer.empty_rows(features)
    config = registry.config_class(algorithm)(feature_dim=features.shape[1],
                                              **MODEL_SETTINGS[algorithm])
    model = registry.model_class(algorithm)(config)
    model.fit(FeatureData(features[keep], stars[keep]), vocabulary=featurizer.vocabulary)
    save_artifact(model_dir, model.to_artifact(vocabulary=featurizer.vocabulary,
                                               featurizer=featurizer.to_dict()))
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(port: int, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/invocations", body=body,
                           headers={"Content-Type": "text/plain", "Accept": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def ping(port: int) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/ping")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def start_server(base_dir: Path, port: int, workers: int) -> subprocess.Popen:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base_dir), "SAGEMAKER_BIND_TO_PORT": str(port),
           "REVIEW_NLP_BIND_HOST": "127.0.0.1", "MODEL_SERVER_WORKERS": str(workers)}
    process = subprocess.Popen([sys.executable, "-m", "review_nlp.container", "serve"],
                               env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while ping(port) != 200:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("server did not respond to /ping within 180 s")
        time.sleep(0.2)
    return process


def run_scenario(port: int, bodies: list[bytes], clients: int, duration_s: float,
                 max_requests: int) -> dict[str, float]:
    """Send `bodies` round-robin from `clients` threads; return throughput and latencies."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    lock = threading.Lock()
    deadline = time.monotonic() + duration_s

    def client(seed: int) -> None:
        nonlocal errors, issued
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            with lock:
                if issued >= max_requests:
                    return
                issued += 1
            body = bodies[rng.randrange(len(bodies))]
            started = time.perf_counter()
            status, _ = post(port, body)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                errors += status != 200

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    millis = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "errors": errors, "seconds": wall,
            "requests_per_s": len(latencies) / wall,
            "p50_ms": float(np.percentile(millis, 50)), "p99_ms": float(np.percentile(millis, 99))}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    texts, stars = read_reviews(args.reviews)
    order = np.random.default_rng(0).permutation(len(texts))
    train_index, send_index = order[:args.train_reviews], order[args.train_reviews:]
    send_texts = [texts[i].replace("\n", " ").replace("\r", " ") for i in send_index]

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as base:
        base_dir = Path(base)
        train_seconds = train_model(args.algorithm, [texts[i] for i in train_index],
                                    stars[train_index], base_dir / "model")
        port = free_port()
        server = start_server(base_dir, port, args.workers)
        try:
            singles = [text.encode() for text in send_texts[:2000]]
            batches = ["\n".join(send_texts[start:start + args.batch_size]).encode()
                       for start in range(0, len(send_texts) - args.batch_size, args.batch_size)]
            for body in singles[:20] + batches[:4]:  # warm-up of every worker
                post(port, body)
            single = run_scenario(port, singles, args.clients, args.duration_s,
                                  args.max_requests)
            batch = run_scenario(port, batches, args.clients, args.duration_s,
                                 args.max_requests)
        finally:
            server.terminate()
            server.wait(timeout=30)

    batch["reviews_per_s"] = batch["requests_per_s"] * args.batch_size
    single["reviews_per_s"] = single["requests_per_s"]
    print(f"serve benchmark: {args.algorithm} model trained on {len(train_index)} MARC reviews "
          f"in {train_seconds:.1f} s; gunicorn {args.workers} workers, {args.clients} client "
          f"threads, {os.cpu_count()} CPUs, {args.duration_s:g} s per scenario")
    print(f"{'scenario':<22}{'requests':>9}{'errors':>7}{'req/s':>9}{'reviews/s':>11}"
          f"{'p50 ms':>9}{'p99 ms':>9}")
    for name, result in ((f"single review", single), (f"batch of {args.batch_size}", batch)):
        print(f"{name:<22}{result['requests']:>9}{result['errors']:>7}"
              f"{result['requests_per_s']:>9.1f}{result['reviews_per_s']:>11.0f}"
              f"{result['p50_ms']:>9.1f}{result['p99_ms']:>9.1f}")
    if args.json:
        print(json.dumps({"single": single, "batch": batch}, indent=2))
    failed = single["errors"] + batch["errors"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
