"""Reviews from any supported layout, local or on S3, as batches of canonical records.

`open_reviews` finds the files, picks the reader from the format and returns a
`ReviewSource`. Iterating it streams the files one after another, so memory is bounded by
the batch, not the input. Every row is kept or counted under a skip reason in the
source's `SkipReport`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa

from review_nlp.data.columns import ColumnOptions, ColumnRef
from review_nlp.data.csvfile import read_csv
from review_nlp.data.jsonlines import read_jsonlines
from review_nlp.data.parquet import read_parquet
from review_nlp.data.records import (
    DUPLICATE_TEXT, REVIEW_SCHEMA, RawRow, RowRejected, SkipReport, batches_from_records,
    synthetic_review_id, text_digest, to_record)
from review_nlp.data.storage import is_s3_uri, list_files, relative_name, s3_client
from review_nlp.data.tsv import read_tsv
from review_nlp.errors import UserError

logger = logging.getLogger(__name__)

FORMATS = ("tsv", "csv", "json", "parquet")
_FORMAT_ALIASES = {"jsonl": "json", "jsonlines": "json", "ndjson": "json"}
# Checked in order after removing a trailing ".gz". Parquet compresses inside the file, so
# ".parquet" is matched before that.
_SUFFIX_FORMATS = ((".tsv", "tsv"), (".csv", "csv"), (".json", "json"), (".jsonl", "json"),
                   (".ndjson", "json"))
_TABULAR_FORMATS = ("tsv", "csv")


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: its full path or URI, and its name relative to the source root."""

    uri: str
    name: str


def detect_format(name: str) -> str | None:
    """Return the format a file name's extension implies, or None for an unknown extension."""
    lower = name.lower()
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith(".gz"):
        lower = lower[:-3]
    for suffix, file_format in _SUFFIX_FORMATS:
        if lower.endswith(suffix):
            return file_format
    return None


def open_reviews(uri: str | os.PathLike, *, format: str | None = None,
                 text_column: ColumnRef = None, rating_column: ColumnRef = None,
                 id_column: ColumnRef = None, header: bool | None = None,
                 require_rating: bool = True, drop_duplicate_texts: bool = False,
                 client: Any = None) -> ReviewSource:
    """Open a file, folder or S3 prefix of reviews for reading as canonical records.

    `format` is one of "tsv", "csv", "json" (JSON lines) or "parquet". Without it, the format
    follows the extensions, and every file of a folder or prefix must agree. With it, every
    file in the folder is read in that format, because files from Athena UNLOAD have no
    extension.
    `text_column`, `rating_column` and `id_column` (a header name or a 0-based position such
    as "1") and `header` apply to TSV and CSV. With `require_rating=False` a row with an
    empty rating is kept with a null `star_rating`, for prediction input, while an invalid
    rating is still skipped. `drop_duplicate_texts` skips a row whose text equals an earlier
    one, counted as `duplicate_text`. Raises `DataError` or `UserError` naming the problem.
    """
    uri = str(uri)
    client = s3_client(client) if is_s3_uri(uri) else None
    paths = list_files(uri, client=client)
    files = [SourceFile(path, relative_name(uri, path)) for path in paths]
    file_format = _choose_format(uri, files, format)
    options = ColumnOptions(text_column, rating_column, id_column, header, require_rating)
    if file_format not in _TABULAR_FORMATS and (options.overrides() or header is not None):
        raise UserError(f"text_column, rating_column, id_column and header apply to TSV and "
                        f"CSV files only, but {uri} is {file_format}")
    source = ReviewSource(uri, file_format, files, options, drop_duplicate_texts, client)
    source.check_first_file()
    return source


def _choose_format(uri: str, files: list[SourceFile], requested: str | None) -> str:
    if requested is not None:
        file_format = _FORMAT_ALIASES.get(requested.lower(), requested.lower())
        if file_format not in FORMATS:
            raise UserError(f"format={requested!r} must be one of {', '.join(FORMATS)}")
        return file_format
    detected = {file.name: detect_format(file.name) for file in files}
    unknown = sorted(name for name, file_format in detected.items() if file_format is None)
    if unknown:
        raise UserError(f"unknown file format of {', '.join(unknown[:5])} in {uri}: expected "
                        f".tsv, .csv, .json, .jsonl (each optionally .gz) or .parquet, "
                        f"or name the format (--format; format= one of {', '.join(FORMATS)})")
    formats = sorted(set(detected.values()))
    if len(formats) > 1:
        raise UserError(f"{uri} mixes file formats ({', '.join(formats)}); "
                        f"read one format per source or pass format=")
    return formats[0]


class ReviewSource:
    """Reviews of one format from one file, folder or S3 prefix, read as canonical batches.

    `report` describes the latest pass and is complete once iteration ends. Each pass
    reads the files again from the start.
    """

    schema = REVIEW_SCHEMA

    def __init__(self, uri: str, file_format: str, files: list[SourceFile],
                 options: ColumnOptions, drop_duplicate_texts: bool = False, client: Any = None):
        self.uri = uri
        self.format = file_format
        self.files = files
        self.options = options
        self.drop_duplicate_texts = drop_duplicate_texts
        self.report = SkipReport(files=[file.uri for file in files])
        self._client = client

    def __repr__(self) -> str:
        return f"ReviewSource({self.uri!r}, format={self.format!r}, files={len(self.files)})"

    def check_first_file(self) -> None:
        """Read the header (or first line) of the first file, so bad options fail early.

        Parquet files are checked when read, because checking one means downloading it.
        """
        if self.format != "parquet":
            rows = self._read(self.files[0], batch_size=1)
            next(rows, None)
            rows.close()

    def iter_records(self, batch_size: int = 10000) -> Iterator[dict[str, Any]]:
        """Yield every kept review as a dict of canonical columns, file after file."""
        report = self.report = SkipReport(files=[file.uri for file in self.files])
        seen_texts: set[bytes] | None = set() if self.drop_duplicate_texts else None
        for source_file in self.files:
            for row in self._read(source_file, batch_size):
                record = self._accept(row, source_file, report, seen_texts)
                if record is not None:
                    yield record
        level = logging.WARNING if report.skipped else logging.INFO
        logger.log(level, "read reviews from %s\n%s", self.uri, report.summary())

    def iter_batches(self, batch_size: int = 10000) -> Iterator[pa.RecordBatch]:
        """Yield the kept reviews as `REVIEW_SCHEMA` record batches of at most `batch_size` rows."""
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size} must be at least 1")
        return batches_from_records(self.iter_records(batch_size), batch_size)

    def to_arrow_reader(self, batch_size: int = 10000) -> pa.RecordBatchReader:
        """Return a RecordBatchReader over one pass, for consumers such as DuckDB that stream."""
        return pa.RecordBatchReader.from_batches(REVIEW_SCHEMA, self.iter_batches(batch_size))

    def count(self) -> int:
        """Count the reviews kept, by reading every file once."""
        return sum(batch.num_rows for batch in self.iter_batches())

    def _read(self, source_file: SourceFile, batch_size: int) -> Iterator[RawRow]:
        if self.format == "tsv":
            return read_tsv(source_file.uri, self.options, client=self._client)
        if self.format == "csv":
            return read_csv(source_file.uri, self.options, client=self._client)
        if self.format == "json":
            return read_jsonlines(source_file.uri, client=self._client)
        return read_parquet(source_file.uri, name=source_file.name, batch_size=batch_size,
                            client=self._client)

    def _accept(self, row: RawRow, source_file: SourceFile, report: SkipReport,
                seen_texts: set[bytes] | None) -> dict[str, Any] | None:
        if row.blank:
            report.blank_lines += 1
            return None
        if row.fields is None:
            report.add_skipped(row.reason or "unknown", source_file.uri, row.line)
            return None
        fields = row.fields
        if not fields.get("review_id"):
            fields["review_id"] = synthetic_review_id(source_file.name, row.line)
        try:
            record = to_record(fields, require_rating=self.options.require_rating)
        except RowRejected as rejected:
            report.add_skipped(rejected.reason, source_file.uri, row.line)
            return None
        if seen_texts is not None:
            digest = text_digest(record["review_body"])
            if digest in seen_texts:
                report.add_skipped(DUPLICATE_TEXT, source_file.uri, row.line)
                return None
            seen_texts.add(digest)
        report.add_kept()
        return record
