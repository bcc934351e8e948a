"""Benchmark the neural topic model against scikit-learn's LatentDirichletAllocation.

Both models learn the same number of topics from the same training split of real Amazon
reviews. The table shows mean NPMI of each topic's top 10 words with document co-occurrence
counted in the test split (NPMI) and in the eight times larger training split (NPMI-tr), topic
uniqueness (TU) and WETC of the top 20 words, training time and the NTM's test perplexity.
Both NTM priors (dirichlet and gaussian) run, so the table shows which one gives the more
coherent topics.

    .venv/bin/python bench/ntm.py
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.decomposition import LatentDirichletAllocation
from sklearn.feature_extraction.text import CountVectorizer
from threadpoolctl import threadpool_limits

from review_nlp.models import topic_metrics
from review_nlp.models.glove import GloveUnavailable, glove_vectors
from review_nlp.models.ntm import (
    NPMI_TOP_WORDS,
    TOPIC_TOP_WORDS,
    NeuralTopicModel,
    NTMConfig,
)
from review_nlp.models.training import FeatureData

DEFAULT_DATA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "reviews"
                / "marc_en_train.csv")
# NTMConfig fields that command-line options override when given.
NTM_OPTIONS = ("epochs", "optimizer", "learning_rate", "mini_batch_size", "num_patience_epochs",
               "weight_decay", "projection_weight_decay", "decoder_batch_norm_epochs",
               "coherence_weight")


@dataclasses.dataclass
class Splits:
    train: sp.csr_matrix
    validation: sp.csr_matrix
    test: sp.csr_matrix
    vocabulary: list[str]


def read_review_bodies(path: Path) -> list[str]:
    """Review texts of a headerless `index, review_body, stars` CSV, duplicates removed."""
    seen: set[str] = set()
    texts = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            if len(row) < 2:
                continue
            text = row[1].strip()
            if text and text not in seen:
                seen.add(text)
                texts.append(text)
    return texts


def make_vectorizer(features: str, vocab_size: int):
    """The project's `Featurizer` (kind "counts": spaCy stop words and lemmas) or
    scikit-learn's CountVectorizer with English stop words; both keep words in at least 2
    and at most 95% of the training documents."""
    if features == "featurizer":
        from review_nlp.data.features import Featurizer, FeaturizerConfig

        featurizer = Featurizer(FeaturizerConfig(kind="counts", max_features=vocab_size,
                                                 min_df=2, max_df=0.95))
        return featurizer, lambda: featurizer.vocabulary
    vectorizer = CountVectorizer(max_features=vocab_size, min_df=2, max_df=0.95,
                                 stop_words="english", dtype=np.float32)
    return vectorizer, lambda: vectorizer.get_feature_names_out().tolist()


def build_splits(texts: list[str], features: str, vocab_size: int, seed: int) -> Splits:
    """Split 80/10/10, fit the vocabulary on the training texts and drop empty documents."""
    order = np.random.default_rng(seed).permutation(len(texts))
    n_train, n_validation = int(0.8 * len(texts)), int(0.1 * len(texts))
    parts = np.split(order, [n_train, n_train + n_validation])
    vectorizer, vocabulary = make_vectorizer(features, vocab_size)
    train = vectorizer.fit_transform([texts[i] for i in parts[0]])
    validation, test = (vectorizer.transform([texts[i] for i in part]) for part in parts[1:])

    def non_empty(matrix):
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        return matrix[np.asarray(matrix.sum(axis=1)).ravel() > 0]

    return Splits(non_empty(train), non_empty(validation), non_empty(test), vocabulary())


def topic_scores(topic_word: np.ndarray, splits: Splits, vectors: np.ndarray | None
                 ) -> dict[str, float]:
    """NPMI of the top 10 words with the test split (and, for comparison, the larger training
    split) as reference corpus; TU and WETC of the top 20 words."""
    npmi_ids = topic_metrics.top_word_ids(topic_word, NPMI_TOP_WORDS)
    npmi, _ = topic_metrics.npmi_coherence(npmi_ids, splits.test)
    npmi_train, _ = topic_metrics.npmi_coherence(npmi_ids, splits.train)
    top_ids = topic_metrics.top_word_ids(topic_word, TOPIC_TOP_WORDS)
    tu, _ = topic_metrics.topic_uniqueness(top_ids)
    wetc = (topic_metrics.embedding_coherence(top_ids, vectors)[0]
            if vectors is not None else float("nan"))
    return {"npmi": npmi, "npmi_train": npmi_train, "tu": tu, "wetc": wetc}


def run_ntm(prior: str, splits: Splits, args) -> tuple[dict, NeuralTopicModel]:
    overrides = {name: getattr(args, name) for name in NTM_OPTIONS
                 if getattr(args, name) is not None}
    config = NTMConfig(feature_dim=len(splits.vocabulary), num_topics=args.num_topics,
                       prior=prior, seed=args.seed, **overrides)
    model = NeuralTopicModel(config, device="cpu")
    started = time.perf_counter()
    model.fit(FeatureData(splits.train), FeatureData(splits.validation),
              vocabulary=splits.vocabulary)
    seconds = time.perf_counter() - started
    result = {"model": f"NTM prior={prior}", "seconds": seconds,
              "passes": len(model.history_),
              "test_perplexity": float(np.exp(model.score(FeatureData(splits.test))
                                              ["total_loss"]))}
    return result, model


def run_lda(splits: Splits, args) -> tuple[dict, LatentDirichletAllocation]:
    lda = LatentDirichletAllocation(
        n_components=args.num_topics, learning_method=args.lda_learning_method,
        max_iter=args.lda_max_iter, random_state=args.seed)
    started = time.perf_counter()
    with threadpool_limits(args.threads):
        lda.fit(splits.train)
    seconds = time.perf_counter() - started
    return {"model": f"LDA ({args.lda_learning_method})", "seconds": seconds,
            "passes": lda.n_iter_, "test_perplexity": float("nan")}, lda


def print_table(rows: list[dict], n_train: int) -> None:
    """Print one row per model. docs/s is training documents divided by fit seconds."""
    header = (f"{'model':<22} {'NPMI':>7} {'NPMI-tr':>7} {'TU':>6} {'WETC':>6} {'fit s':>6} "
              f"{'passes':>6} {'docs/s':>7} {'test ppl':>8}")
    print(header)
    print("-" * len(header))
    for row in rows:
        perplexity = row["test_perplexity"]
        perplexity_text = f"{perplexity:>8.1f}" if np.isfinite(perplexity) else f"{'-':>8}"
        print(f"{row['model']:<22} {row['npmi']:>7.4f} {row['npmi_train']:>7.4f} "
              f"{row['tu']:>6.3f} {row['wetc']:>6.3f} {row['seconds']:>6.1f} "
              f"{row['passes']:>6d} {n_train / row['seconds']:>7.0f} {perplexity_text}")


def print_comparison(ntm: dict, lda: dict) -> None:
    print(f"\n{ntm['model']} vs LDA: NPMI {ntm['npmi']:+.4f} vs {lda['npmi']:+.4f} "
          f"(difference {ntm['npmi'] - lda['npmi']:+.4f}), "
          f"TU ratio {ntm['tu'] / lda['tu']:.2f}, "
          f"training speed ratio {lda['seconds'] / ntm['seconds']:.2f}x")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="headerless CSV of index, review_body, stars "
                             "(default: ../shared/data/reviews/marc_en_train.csv)")
    parser.add_argument("--features", choices=["featurizer", "countvectorizer"],
                        default="featurizer",
                        help="bag-of-words builder: the project's Featurizer (kind counts) or "
                             "scikit-learn's CountVectorizer (default: featurizer)")
    parser.add_argument("--vocab-size", type=int, default=2000,
                        help="CountVectorizer max_features (default: 2000)")
    parser.add_argument("--num-topics", type=int, default=20, help="topics (default: 20)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the split and of both models (default: 0)")

    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch threads for the NTM and BLAS threads for LDA "
                             "(default: all CPU cores, os.cpu_count())")
    parser.add_argument("--priors", default="dirichlet,gaussian",
                        help="NTM priors to run, comma-separated (default: dirichlet,gaussian)")

    parser.add_argument("--epochs", type=int, default=None,
                        help="NTM epochs (default: the NTMConfig default)")
    parser.add_argument("--optimizer", default=None,
                        help="NTM optimizer (default: the NTMConfig default)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="NTM learning rate (default: the NTMConfig default)")
    parser.add_argument("--mini-batch-size", type=int, default=None,
                        help="NTM mini-batch size (default: the NTMConfig default)")
    parser.add_argument("--num-patience-epochs", type=int, default=None,
                        help="NTM early-stopping patience (default: the NTMConfig default)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="NTM L2 weight decay (default: the NTMConfig default)")
    parser.add_argument("--projection-weight-decay", type=float, default=None,
                        help="NTM L2 weight decay of the topic-word weights only "
                             "(default: the NTMConfig default)")
    parser.add_argument("--decoder-batch-norm-epochs", type=int, default=None,
                        help="epochs over which the NTM's decoder batch normalization fades "
                             "out (default: the NTMConfig default)")

    parser.add_argument("--coherence-weight", type=float, default=None,
                        help="weight of the NTM's coherence term, 0 for none (default: the "
                             "NTMConfig default)")

    parser.add_argument("--lda-max-iter", type=int, default=10,
                        help="LDA passes over the training data (default: 10, scikit-learn's "
                             "default)")
    parser.add_argument("--lda-learning-method", default="online", choices=["online", "batch"],
                        help="LDA variational Bayes update (default: online)")

    parser.add_argument("--verbose", action="store_true",
                        help="show the NTM's training log (default: warnings only)")
    parser.add_argument("--show-topics", action="store_true",
                        help="print the top 10 words of every topic (default: off)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s")
    torch.set_num_threads(args.threads)

    texts = read_review_bodies(args.data)
    splits = build_splits(texts, args.features, args.vocab_size, args.seed)
    words_per_doc = splits.train.sum() / splits.train.shape[0]
    print(f"{len(texts)} unique reviews -> train {splits.train.shape[0]}, validation "
          f"{splits.validation.shape[0]}, test {splits.test.shape[0]} non-empty documents. "
          f"Vocabulary of {len(splits.vocabulary)} words ({args.features}), "
          f"{words_per_doc:.1f} words per training document, {args.num_topics} topics, "
          f"{args.threads} threads.\n")
    try:
        vectors = glove_vectors(splits.vocabulary)[0]
    except GloveUnavailable as error:
        print(f"WETC not computed: {error}", file=sys.stderr)
        vectors = None

    rows, topics = [], {}
    for prior in args.priors.split(","):
        result, model = run_ntm(prior, splits, args)
        result.update(topic_scores(model.topic_word_matrix(), splits, vectors))
        rows.append(result)
        topics[result["model"]] = model.topic_word_matrix()
    lda_result, lda = run_lda(splits, args)
    lda_result.update(topic_scores(lda.components_, splits, vectors))
    topics[lda_result["model"]] = lda.components_

    print_table(rows + [lda_result], splits.train.shape[0])
    best = max(rows, key=lambda row: row["npmi"])
    print(f"\nMost coherent NTM prior by NPMI: {best['model']}")
    for row in rows:
        print_comparison(row, lda_result)
    if args.show_topics:
        for name, topic_word in topics.items():
            print(f"\n{name}:")
            for ids in topic_metrics.top_word_ids(topic_word, 10):
                print("  " + " ".join(splits.vocabulary[i] for i in ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
