"""`prepare`: reviews in, SageMaker channels out.

read (any layout, malformed rows skipped and counted) -> select (Trino SQL on DuckDB or
Athena) -> drop repeated texts -> split -> featurize for one algorithm (vocabulary fitted on
the training split only) -> write train/validation/test, auxiliary/vocab.txt,
auxiliary/featurizer.json and manifest.json into a folder or an S3 prefix.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from ..errors import UserError
from ..files import atomic_directory
from .channels import Manifest, write_channel, write_manifest
from .vocabulary import write_vocab_txt
from .features import Featurizer, FeaturizerConfig
from .records import SkipReport
from .selection import Selection, select_athena, select_duckdb
from .sources import open_reviews
from .storage import is_s3_uri, list_files, upload_folder

logger = logging.getLogger(__name__)

RECORDIO = "application/x-recordio-protobuf"


def channel_content_type(content_type: str, algorithm: str) -> str:
    """Return the ContentType of the data channels.

    RecordIO records carry the star rating as their label. Headerless CSV carries it as the
    first column only for `rating`: the built-in NTM and K-Means read CSV as
    `text/csv;label_size=0`, features only.
    """
    if content_type == "recordio":
        return RECORDIO
    return "text/csv;label_size=1" if algorithm == "rating" else "text/csv;label_size=0"
NOT_SELECTED = "not_selected"
EMPTY_AFTER_PREPROCESSING = "empty_after_preprocessing"
# For `rating`: the split as text lines for the built-in BlazingText, which compare uses.
BLAZINGTEXT_FOLDER = "blazingtext"

# Vocabulary settings per algorithm. ntm follows the SageMaker NTM workshop on Amazon reviews
# (CountVectorizer max_features=2000, min_df=2, max_df=0.95); kmeans its TF-IDF k-means
# (min_df=10, max_df=0.9); rating keeps stop words such as "not" and adds bigrams, because
# they carry the sentiment.
ALGORITHM_DEFAULTS: dict[str, dict[str, Any]] = {
    "ntm": {"kind": "counts", "max_features": 2000, "min_df": 2, "max_df": 0.95},
    "kmeans": {"kind": "tfidf", "max_features": 5000, "min_df": 10, "max_df": 0.9},
    "rating": {"kind": "ngrams", "max_features": 100000, "min_df": 2, "max_df": 1.0},
}


@dataclass
class PrepareOptions:
    reviews: str | None
    algorithm: str
    out: str
    format: str | None = None
    text_column: str | None = None
    rating_column: str | None = None
    id_column: str | None = None
    header: bool | None = None
    selection: Selection = field(default_factory=Selection)
    engine: str = "duckdb"
    athena: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    validation_ratio: float = 0.1
    test_ratio: float = 0.1
    seed: int = 0
    shard_rows: int = 10000
    content_type: str = "recordio"
    vocab_size: int | None = None
    min_df: float | None = None
    max_df: float | None = None
    lemmatize: bool | None = None
    stem: bool | None = None
    keep_duplicates: bool = False


@dataclass
class PreparedChannels:
    out: str
    manifest: dict[str, Any]


def _check_ratios(options: PrepareOptions) -> None:
    for name in ("validation_ratio", "test_ratio"):
        value = getattr(options, name)
        if not 0.0 <= value < 1.0:
            raise UserError(f"--{name.replace('_', '-')}={value} must be in [0, 1)")
    if options.validation_ratio + options.test_ratio >= 1.0:
        raise UserError(f"--validation-ratio {options.validation_ratio} plus --test-ratio "
                        f"{options.test_ratio} leave nothing for training; keep their sum below 1")
    if options.content_type not in ("recordio", "csv"):
        raise UserError(f"--content-type={options.content_type} must be recordio or csv")
    if options.shard_rows < 1:
        raise UserError(f"--shard-rows={options.shard_rows} must be at least 1")


CHANNEL_ENTRIES = frozenset({"train", "validation", "test", "auxiliary", BLAZINGTEXT_FOLDER,
                             "manifest.json"})


def _check_output(out: str, overwrite: bool) -> None:
    """Reject an output that already contains files, before any work.

    `overwrite` replaces earlier channels only: a folder holding anything `prepare` did not
    write is refused even then, so that --overwrite never deletes the user's other files.
    """
    if is_s3_uri(out):
        existing = list_files(out.rstrip("/") + "/")
        names = {uri[len(out.rstrip("/")) + 1:].split("/", 1)[0] for uri in existing}
    else:
        path = Path(out)
        if not path.name or path.resolve() == Path.cwd().resolve():
            raise UserError(f"--out {out!r} must name a folder of its own, e.g. channels/ntm")
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {out} is a file; give a folder")
        existing = [str(p) for p in path.iterdir()] if path.is_dir() else []
        names = {Path(p).name for p in existing}
    if not existing:
        return
    if not overwrite:
        raise UserError(f"--out {out} already contains {len(existing)} file(s) or folder(s); "
                        f"pass --overwrite to replace them or choose another folder")
    foreign = sorted(names - CHANNEL_ENTRIES)
    if foreign:
        raise UserError(f"--out {out} contains {', '.join(foreign[:5])}, which prepare did not "
                        f"write; --overwrite replaces channels only, so choose another folder")


def featurizer_config(options: PrepareOptions) -> FeaturizerConfig:
    settings = dict(ALGORITHM_DEFAULTS[options.algorithm])
    for name, value in (("max_features", options.vocab_size), ("min_df", options.min_df),
                        ("max_df", options.max_df)):
        if value is not None:
            settings[name] = value
    settings["min_df"] = _count_or_share(settings["min_df"], whole_means_count=True)
    settings["max_df"] = _count_or_share(settings["max_df"], whole_means_count=False)
    kind = settings.pop("kind")
    text = FeaturizerConfig(kind=kind).text
    if options.lemmatize is not None:
        text = dataclasses.replace(text, lemmatize=options.lemmatize)
    if options.stem:
        text = dataclasses.replace(text, stem=True)
    return FeaturizerConfig(kind=kind, text=text, **settings)


def _count_or_share(value: float, whole_means_count: bool) -> int | float:
    """Turn a command-line number into scikit-learn's convention: int count, float share.

    A whole number above 1 is a document count and a value below 1 a share of documents.
    Exactly 1 is ambiguous: `--min-df 1` means "in at least one document" (a count) and
    `--max-df 1` means "in at most all documents" (a share).
    """
    value = float(value)
    if value > 1.0 and value.is_integer():
        return int(value)
    if value == 1.0 and whole_means_count:
        return 1
    return value


def read_selected(options: PrepareOptions, report: SkipReport) -> Iterable[pa.RecordBatch]:
    """Stream the selected reviews as canonical batches."""
    if options.engine == "athena":
        yield from select_athena(options.selection, **options.athena)
        return
    if not options.reviews:
        raise UserError("--reviews is required unless --engine athena reads the table")
    source = open_reviews(options.reviews, format=options.format, text_column=options.text_column,
                          rating_column=options.rating_column, id_column=options.id_column,
                          header=options.header, drop_duplicate_texts=not options.keep_duplicates)
    yield from select_duckdb(source, options.selection)
    _merge_report(report, source.report)


def _merge_report(report: SkipReport, source_report: SkipReport) -> None:
    report.rows_read += source_report.rows_read
    report.rows_kept += source_report.rows_kept
    report.blank_lines += source_report.blank_lines
    report.files.extend(source_report.files)
    for reason, count in source_report.skipped.items():
        report.skipped[reason] = report.skipped.get(reason, 0) + count
    for reason, by_file in source_report.first_lines.items():
        report.first_lines.setdefault(reason, {}).update(by_file)


REQUIRED_COLUMNS = ("review_id", "review_body", "star_rating")


def _check_selected_columns(schema: pa.Schema) -> None:
    names = list(schema.names)
    for column in REQUIRED_COLUMNS:
        count = names.count(column)
        if count != 1:
            problem = "does not return" if count == 0 else f"returns {count} columns named"
            raise UserError(f"the selection {problem} {column}; a --sql query must return "
                            f"{', '.join(REQUIRED_COLUMNS)} once each (SELECT * does)")


def collect_reviews(batches: Iterable[pa.RecordBatch]) -> tuple[list[str], list[str], np.ndarray]:
    """Gather ids, texts and star ratings of the selected reviews."""
    ids: list[str] = []
    texts: list[str] = []
    ratings: list[float] = []
    for batch in batches:
        _check_selected_columns(batch.schema)
        ids.extend(batch.column("review_id").to_pylist())
        texts.extend(batch.column("review_body").to_pylist())
        ratings.extend(batch.column("star_rating").to_pylist())
    return ids, texts, np.asarray(ratings, dtype=np.float32)


def split_indices(n: int, validation_ratio: float, test_ratio: float, seed: int
                  ) -> dict[str, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_ratio))
    n_validation = int(round(n * validation_ratio))
    return {"test": np.sort(order[:n_test]),
            "validation": np.sort(order[n_test:n_test + n_validation]),
            "train": np.sort(order[n_test + n_validation:])}


def prepare_channels(options: PrepareOptions) -> PreparedChannels:
    """Run the whole `prepare` step; return where the channels went and their manifest."""
    _check_ratios(options)
    _check_output(options.out, options.overwrite)
    config = featurizer_config(options)

    # read and select
    report = SkipReport()
    ids, texts, ratings = collect_reviews(read_selected(options, report))
    if options.engine != "athena":
        not_selected = report.rows_kept - len(texts)
        if not_selected < 0:
            raise UserError(f"the selection returned {len(texts)} rows but only "
                            f"{report.rows_kept} reviews were read; a --sql query must not add "
                            f"rows (no joins that repeat reviews)")
        if not_selected:
            report.rows_kept -= not_selected
            report.skipped[NOT_SELECTED] = report.skipped.get(NOT_SELECTED, 0) + not_selected
    else:
        report.rows_read = report.rows_kept = len(texts)
    if not texts:
        raise UserError("no reviews left after reading and selection; "
                        f"{report.summary()}")
    logger.info("Selected %d reviews. %s", len(texts), report.summary())

    # split, then fit the vocabulary on the training split only
    splits = split_indices(len(texts), options.validation_ratio, options.test_ratio, options.seed)
    featurizer = Featurizer(config)
    train_texts = [texts[i] for i in splits["train"]]
    features = {"train": featurizer.fit_transform(train_texts)}
    _check_vocabulary(featurizer, options)
    for name in ("validation", "test"):
        features[name] = featurizer.transform([texts[i] for i in splits[name]])

    # drop documents that preprocessing left empty
    records = {}
    channels = {}
    kept_texts = {}
    for name, matrix in features.items():
        keep = np.asarray(matrix.getnnz(axis=1) > 0)
        empty = int((~keep).sum())
        if empty:
            report.rows_kept -= empty
            report.skipped[EMPTY_AFTER_PREPROCESSING] = \
                report.skipped.get(EMPTY_AFTER_PREPROCESSING, 0) + empty
        channels[name] = (matrix[keep], ratings[splits[name]][keep])
        kept_texts[name] = [texts[i] for i, kept in zip(splits[name], keep) if kept]
        records[name] = int(keep.sum())
    if records["train"] == 0:
        raise UserError("every training document is empty after preprocessing; "
                        "check --text-column and the stop-word and vocabulary settings")

    manifest = Manifest(
        algorithm=options.algorithm,
        feature_dim=len(featurizer.vocabulary),
        content_type=channel_content_type(options.content_type, options.algorithm),
        records=records,
        featurizer=featurizer.to_dict(),
        skipped=report.to_dict(),
        preprocessing={"featurizer": featurizer.config.to_dict(), "seed": options.seed,
                       "validation_ratio": options.validation_ratio,
                       "test_ratio": options.test_ratio,
                       "drop_duplicate_texts": not options.keep_duplicates},
        extra={"source": {"reviews": options.reviews, "engine": options.engine,
                          "selection": dataclasses.asdict(options.selection)}},
    )
    blazingtext = blazingtext_lines(featurizer, channels, kept_texts) \
        if options.algorithm == "rating" else {}
    _write_output(options, channels, featurizer, manifest, blazingtext)
    logger.info("Wrote channels to %s: %s records (train/validation/test), feature_dim %d",
                options.out, "/".join(str(records[c]) for c in ("train", "validation", "test")),
                manifest.feature_dim)
    return PreparedChannels(options.out, manifest.to_dict())


def _check_vocabulary(featurizer: Featurizer, options: PrepareOptions) -> None:
    """Reject a vocabulary smaller than an explicit --vocab-size; warn for the default one.

    The built-in NTM fails without saying why when `feature_dim` and the vocabulary differ,
    e.g. when `min_df=0.2` keeps 6 words of the 2,000 asked for.
    """
    size = len(featurizer.vocabulary)
    if options.vocab_size is not None:
        featurizer.require_vocabulary_size(options.vocab_size, name="--vocab-size")
        return
    if size < 2:
        raise UserError(
            f"the vocabulary has {size} word(s): min_df={featurizer.config.min_df} and "
            f"max_df={featurizer.config.max_df} removed almost every word; lower --min-df or "
            f"raise --max-df")
    default_size = ALGORITHM_DEFAULTS[options.algorithm]["max_features"]
    if size < default_size:
        logger.warning("the vocabulary has %d words, fewer than the default %d: min_df=%s keeps "
                       "only words in at least that many documents and max_df=%s drops the "
                       "most common; feature_dim will be %d", size, default_size,
                       featurizer.config.min_df, featurizer.config.max_df, size)


def blazingtext_lines(featurizer: Featurizer, channels: dict, texts: dict[str, list[str]]
                      ) -> dict[str, str]:
    """Write the split as BlazingText's supervised input: `__label__<stars> <tokens>` lines.

    SageMaker's built-in BlazingText reads text, not feature rows, so the comparison with it
    needs these files; the tokens are the featurizer's preprocessed words, without n-grams.
    """
    lines = {}
    for name, (_, labels) in channels.items():
        words = (" ".join(featurizer.preprocessor(text)) for text in texts[name])
        lines[name] = "".join(f"__label__{int(label)} {text}\n"
                              for label, text in zip(labels, words))
    return lines


def _write_output(options: PrepareOptions, channels: dict, featurizer: Featurizer,
                  manifest: Manifest, blazingtext: dict[str, str]) -> None:
    """Write every channel into a temporary folder and move it into place as a whole."""
    if is_s3_uri(options.out):
        staging = Path(tempfile.mkdtemp(prefix="review-nlp-channels-"))
        try:
            _write_channels(staging, options, channels, featurizer, manifest, blazingtext)
            upload_folder(staging, options.out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return
    with atomic_directory(options.out) as staging:
        _write_channels(staging, options, channels, featurizer, manifest, blazingtext)


def _write_channels(folder: Path, options: PrepareOptions, channels: dict,
                    featurizer: Featurizer, manifest: Manifest,
                    blazingtext: dict[str, str]) -> None:
    content_type = channel_content_type(options.content_type, options.algorithm)
    unsupervised_csv = content_type.endswith("label_size=0")
    for name, (matrix, labels) in channels.items():
        if name != "train" and matrix.shape[0] == 0:
            # SageMaker rejects a channel without records; an absent one is optional.
            continue
        write_channel(folder / name, matrix, None if unsupervised_csv else labels,
                      shard_rows=options.shard_rows, content_type=content_type)
    write_vocab_txt(folder / "auxiliary" / "vocab.txt", featurizer.vocabulary)
    (folder / "auxiliary" / "featurizer.json").write_text(
        json.dumps(featurizer.to_dict(), indent=2), encoding="utf-8")
    for name, text in blazingtext.items():
        if not text:
            continue
        target = folder / BLAZINGTEXT_FOLDER / name / f"{name}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    write_manifest(folder / "manifest.json", manifest)
