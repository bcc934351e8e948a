"""Benchmark review preprocessing against what users write today.

The baseline is scikit-learn's `CountVectorizer` with a tokenizer that runs a spaCy pipeline
per document: `spacy.blank("en")` with the lookup lemmatizer of spacy-lookups-data, keeping
the lemmas of alphabetic non-stop tokens. It is compared with `Featurizer(kind="counts")`
on the same documents with the same vocabulary settings (2,000 words, min_df=2,
max_df=0.95 by default). The output shows documents per second of each (setup such as
loading spaCy and the lemma table is timed apart), the speed-up, and how much the two
vocabularies overlap.

    .venv/bin/python bench/preprocess.py [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

DEFAULT_REVIEWS = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "reviews"
                   / "marc_en_train.csv")


def read_review_bodies(path: Path, limit: int | None) -> list[str]:
    """Return the review texts of a headerless `index, review_body, stars` CSV."""
    texts = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            if len(row) >= 2:
                texts.append(row[1])
            if limit is not None and len(texts) >= limit:
                break
    return texts


class Timer:
    """Wall-clock and CPU seconds of a block. CPU time is less disturbed by other processes."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def run_baseline(texts: list[str], args) -> tuple[Timer, Timer, list[str]]:
    """Fit CountVectorizer with a per-document spaCy tokenizer, and return timers and words."""
    with Timer() as setup:
        import spacy
        from sklearn.feature_extraction.text import CountVectorizer

        nlp = spacy.blank("en")
        nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
        nlp.initialize()

    def spacy_lemmas(text: str) -> list[str]:
        return [token.lemma_ for token in nlp(text) if token.is_alpha and not token.is_stop]

    vectorizer = CountVectorizer(tokenizer=spacy_lemmas, token_pattern=None,
                                 max_features=args.max_features, min_df=args.min_df,
                                 max_df=args.max_df)
    with Timer() as fit:
        vectorizer.fit_transform(texts)
    return setup, fit, vectorizer.get_feature_names_out().tolist()


def run_featurizer(texts: list[str], args) -> tuple[Timer, Timer, list[str]]:
    """Fit review_nlp's counts featurizer, and return timers and words."""
    with Timer() as setup:
        from review_nlp.data.features import Featurizer, FeaturizerConfig

        featurizer = Featurizer(FeaturizerConfig(kind="counts", max_features=args.max_features,
                                                 min_df=args.min_df, max_df=args.max_df))
    with Timer() as fit:
        featurizer.fit_transform(texts)
    return setup, fit, featurizer.vocabulary


def parse_df(value: str) -> int | float:
    """Parse min_df/max_df like scikit-learn: "2" is a document count, "0.95" a proportion."""
    return float(value) if "." in value else int(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reviews", type=Path, default=DEFAULT_REVIEWS,
                        help="headerless CSV of index, review_body, stars "
                             "(default: ../shared/data/reviews/marc_en_train.csv beside the repo)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N reviews (default: all)")
    parser.add_argument("--max-features", type=int, default=2000,
                        help="vocabulary size (default: 2000)")
    parser.add_argument("--min-df", type=parse_df, default=2,
                        help="minimum document frequency, count or proportion (default: 2)")
    parser.add_argument("--max-df", type=parse_df, default=0.95,
                        help="maximum document frequency, count or proportion (default: 0.95)")
    args = parser.parse_args(argv)

    texts = read_review_bodies(args.reviews, args.limit)
    print(f"{len(texts):,} reviews from {args.reviews.name}; max_features={args.max_features}, "
          f"min_df={args.min_df}, max_df={args.max_df}")

    # The baseline runs first, so spaCy's import is charged to it and not to the featurizer,
    # which imports spaCy's stop-word list.
    base_setup, base_fit, base_words = run_baseline(texts, args)
    our_setup, our_fit, our_words = run_featurizer(texts, args)

    print(f"{'':38s}{'setup s':>9s}{'fit s':>9s}{'fit CPU s':>11s}{'docs/s':>10s}")
    for name, setup, fit in (("CountVectorizer + spaCy per document", base_setup, base_fit),
                             ("review_nlp Featurizer(kind='counts')", our_setup, our_fit)):
        print(f"{name:38s}{setup.wall:9.2f}{fit.wall:9.2f}{fit.cpu:11.2f}"
              f"{len(texts) / fit.wall:10,.0f}")
    print(f"speed-up: {base_fit.wall / our_fit.wall:.1f}x wall, {base_fit.cpu / our_fit.cpu:.1f}x "
          "CPU (target: at least 5x)")

    ours, theirs = set(our_words), set(base_words)
    shared = len(ours & theirs)
    print(f"vocabulary: {len(ours)} and {len(theirs)} words, {shared} shared; "
          f"|A∩B|/|A∪B| = {shared / len(ours | theirs):.3f}, "
          f"|A∩B|/{args.max_features} = {shared / args.max_features:.3f}")


if __name__ == "__main__":
    main()
