"""CSV files of any layout, with or without a header, parsed by Python's csv module (RFC 4180)."""

from __future__ import annotations

import csv
import os
from typing import Any, Iterator

from review_nlp.data.columns import ColumnOptions, resolve_columns, select_fields
from review_nlp.data.lines import iter_lines
from review_nlp.data.records import BAD_FIELD_COUNT, INVALID_CSV, INVALID_ENCODING, RawRow
from review_nlp.errors import DataError

# csv's default limit is 131,072 characters per field, and 16 MiB leaves room for any long
# review. The limit stays finite because an unclosed quote makes one field swallow the rest
# of the file, and the limit bounds the memory that takes. Such a record is rejected as
# `invalid_csv`.
MAX_FIELD_CHARS = 16 * 1024 * 1024


def read_csv(uri: str | os.PathLike, options: ColumnOptions, *,
             client: Any = None) -> Iterator[RawRow]:
    """Yield the records of a CSV file (plain or gzipped) as raw canonical fields.

    Quoted fields may span lines, and each row is numbered by the line it starts on. A row
    whose field count differs from the header (or from the first row of a headerless file)
    is rejected as `bad_field_count`. A row the csv module cannot parse is rejected as
    `invalid_csv`. Rows containing bytes that are not UTF-8 are rejected as `invalid_encoding`.
    """
    path = str(uri)
    _raise_field_size_limit()
    has_header = options.header if options.header is not None else not options.only_positions()
    invalid_lines: set[int] = set()
    reader = csv.reader(_texts(path, client, invalid_lines))
    mapping: dict[str, int] | None = None
    width = 0
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error:
            invalid_lines.clear()
            yield RawRow(start, reason=INVALID_CSV)
            continue

        # a record that touches an undecodable line is dropped as a whole
        if invalid_lines:
            invalid_lines.clear()
            if mapping is None and has_header:
                raise DataError("the header is not valid UTF-8", path=path, line=start)
            yield RawRow(start, reason=INVALID_ENCODING)
            continue
        if not values or (len(values) == 1 and not values[0].strip()):
            yield RawRow(start, blank=True)
            continue

        # the first row sets the column mapping and the expected field count
        if mapping is None:
            width = len(values)
            mapping = resolve_columns(values if has_header else None, width, options, path=path)
            if has_header:
                continue
        if len(values) != width:
            yield RawRow(start, reason=BAD_FIELD_COUNT)
            continue
        yield RawRow(start, select_fields(values, mapping))


def _texts(path: str, client: Any, invalid_lines: set[int]) -> Iterator[str]:
    for line in iter_lines(path, client=client):
        if not line.valid:
            invalid_lines.add(line.number)
        yield line.text


def _raise_field_size_limit() -> None:
    # NOTE: csv.field_size_limit is process-wide; this only ever raises it.
    if csv.field_size_limit() < MAX_FIELD_CHARS:
        csv.field_size_limit(MAX_FIELD_CHARS)
