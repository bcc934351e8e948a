"""Benchmark the star-rating classifier against TF-IDF + logistic regression, in one run.

Both models see the same split of the MARC English sample, drawn with `--seed`: 80 % train,
10 % validation for early stopping and 10 % held-out test. Both are scored on the test part by
accuracy, macro-F1, mean absolute error in stars and training time. The baseline is
scikit-learn's `TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)` with
`LogisticRegression`, decoded by argmax as `predict` does and, for comparison, by the median.
The classifier takes n-gram counts from the team featurizer (`--featurizer review_nlp`) or
from scikit-learn's `CountVectorizer` (`--featurizer sklearn`).

    .venv/bin/python bench/rating.py
    .venv/bin/python bench/rating.py --set num_models=3 --set decoding=argmax
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from review_nlp.models.ordinal import (confusion_matrix, decode, median_class,
                                       scores_from_confusion)
from review_nlp.models.rating import RatingClassifier, RatingConfig
from review_nlp.models.training import FeatureData

DEFAULT_DATA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "reviews"
                / "marc_en_train.csv")
# Tokens of letters, digits and inner apostrophes, lowercased: "don't" stays one token.
TOKEN_PATTERN = r"(?u)\b\w[\w']*\b"
TARGET_ACCURACY = 0.55
TARGET_MAE = 0.60


def read_reviews(path: Path) -> tuple[list[str], np.ndarray]:
    """Return the texts and star ratings of a headerless `index, review_body, stars` CSV."""
    texts, stars = [], []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            if len(row) >= 3:
                texts.append(row[1])
                stars.append(int(row[2]))
    return texts, np.array(stars, dtype=np.int64)


def split_indices(n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return 80 / 10 / 10 % train, validation and test row indices, shuffled with `seed`."""
    order = np.random.default_rng(seed).permutation(n_samples)
    train_end, validation_end = int(0.8 * n_samples), int(0.9 * n_samples)
    return order[:train_end], order[train_end:validation_end], order[validation_end:]


def ngram_counts(featurizer: str, train_texts, other_texts: list[list[str]]):
    """Fit n-gram counts on the training texts; return the matrices and the vocabulary."""
    if featurizer == "review_nlp":
        from review_nlp.data.features import Featurizer, FeaturizerConfig

        model = Featurizer(FeaturizerConfig(kind="ngrams"))
        matrices = [model.fit_transform(train_texts)]
        matrices += [model.transform(texts) for texts in other_texts]
        return matrices, model.vocabulary
    vectorizer = CountVectorizer(ngram_range=(1, 2), min_df=2, max_features=100_000,
                                 token_pattern=TOKEN_PATTERN, dtype=np.float32)
    matrices = [vectorizer.fit_transform(train_texts)]
    matrices += [vectorizer.transform(texts) for texts in other_texts]
    return matrices, vectorizer.get_feature_names_out().tolist()


def parse_settings(pairs: list[str]) -> dict:
    """Turn `key=value` strings into hyperparameters; values are read as JSON when they parse."""
    settings = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise SystemExit(f"--set {pair!r}: expected key=value")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def scores(targets: np.ndarray, predicted_stars: np.ndarray) -> dict[str, float]:
    return scores_from_confusion(confusion_matrix(targets - 1, predicted_stars - 1, 5))


def run_classifier(args, texts, stars, split) -> tuple[dict, dict]:
    train, validation, test = split
    started = time.perf_counter()
    (train_x, validation_x, test_x), vocabulary = ngram_counts(
        args.featurizer, [texts[i] for i in train],
        [[texts[i] for i in validation], [texts[i] for i in test]])
    featurize_s = time.perf_counter() - started

    config = RatingConfig(feature_dim=len(vocabulary), **parse_settings(args.set))
    model = RatingClassifier(config, device=args.device)
    started = time.perf_counter()
    model.fit(FeatureData(train_x, stars[train]), FeatureData(validation_x, stars[validation]),
              vocabulary=vocabulary)
    train_s = time.perf_counter() - started

    probabilities = model.predict_proba(test_x)
    row = scores(stars[test], decode(probabilities, model.decoding_) + 1)
    row.update(train_s=train_s, featurize_s=featurize_s)
    details = {"config": {**vars(config), "decoding": model.decoding_},
               "epochs_run": len(model.history_), "feature_dim": len(vocabulary),
               "validation": {name: value for name, value in model.metrics_.items()}}
    return row, details


def run_baseline(args, texts, stars, split) -> tuple[dict, dict]:
    train, _, test = split
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                                 token_pattern=TOKEN_PATTERN, dtype=np.float32)
    train_x = vectorizer.fit_transform([texts[i] for i in train])
    test_x = vectorizer.transform([texts[i] for i in test])
    featurize_s = time.perf_counter() - started

    started = time.perf_counter()
    model = LogisticRegression(C=args.baseline_c, max_iter=3000)
    model.fit(train_x, stars[train])
    train_s = time.perf_counter() - started

    probabilities = model.predict_proba(test_x)  # columns follow model.classes_ (1..5)
    argmax_row = scores(stars[test], model.predict(test_x))
    median_row = scores(stars[test], model.classes_[median_class(probabilities)])
    for row in (argmax_row, median_row):
        row.update(train_s=train_s, featurize_s=featurize_s)
    return argmax_row, median_row


def print_report(rows: dict[str, dict], reference: str) -> None:
    header = f"{'model':<34} {'accuracy':>9} {'macro_f1':>9} {'MAE':>7} {'train_s':>8} " \
             f"{'featurize_s':>12}"
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        print(f"{name:<34} {row['accuracy']:>9.4f} {row['macro_f1']:>9.4f} {row['mae']:>7.4f} "
              f"{row['train_s']:>8.1f} {row['featurize_s']:>12.1f}")
    ours, theirs = rows["rating classifier"], rows[reference]
    print()
    print(f"rating classifier vs {reference}:")
    print(f"  accuracy  {ours['accuracy'] - theirs['accuracy']:+.4f}")
    print(f"  macro_f1  {ours['macro_f1'] - theirs['macro_f1']:+.4f}")
    print(f"  MAE       {ours['mae'] - theirs['mae']:+.4f} "
          f"(ratio {ours['mae'] / theirs['mae']:.3f})")
    print(f"  train_s   ratio {ours['train_s'] / max(theirs['train_s'], 1e-9):.2f}")
    met = ours["accuracy"] >= TARGET_ACCURACY and ours["mae"] <= TARGET_MAE
    print(f"target accuracy >= {TARGET_ACCURACY} and MAE <= {TARGET_MAE}: "
          f"{'met' if met else 'not met'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="headerless CSV of index, review_body, stars (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the 80/10/10 split (default: %(default)s); the model's "
                             "own seed is set with --set seed=N")
    parser.add_argument("--featurizer", choices=("review_nlp", "sklearn"), default="review_nlp",
                        help="n-gram counts for the classifier (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a RatingConfig hyperparameter, repeatable, e.g. --set epochs=10 "
                             "(default: the RatingConfig defaults)")
    parser.add_argument("--baseline-c", type=float, default=1.0,
                        help="inverse regularisation C of the logistic regression "
                             "(default: %(default)s)")
    parser.add_argument("--device", default=None,
                        help="torch device of the classifier (default: CUDA when present, "
                             "else CPU)")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for torch and BLAS (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the results to this JSON file (default: none)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    texts, stars = read_reviews(args.data)
    split = split_indices(len(texts), args.seed)
    print(f"{args.data.name}: {len(texts)} reviews; train {len(split[0])}, validation "
          f"{len(split[1])}, test {len(split[2])} (split seed {args.seed}); "
          f"featurizer {args.featurizer}; torch {torch.__version__} on {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, {os.cpu_count()} cores")

    with threadpool_limits(limits=args.threads):
        ours, details = run_classifier(args, texts, stars, split)
        argmax_row, median_row = run_baseline(args, texts, stars, split)
    rows = {"rating classifier": ours,
            "tfidf(1-2)+logreg, argmax": argmax_row,
            "tfidf(1-2)+logreg, median": median_row}
    print(f"classifier: {details['epochs_run']} epochs, feature_dim {details['feature_dim']}, "
          f"config {json.dumps(details['config'], sort_keys=True)}")
    print()
    print_report(rows, "tfidf(1-2)+logreg, argmax")
    results = {"rows": rows, "classifier": details, "seed": args.seed,
               "featurizer": args.featurizer}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
