"""The amazon-reviews-pds TSV layout: tab-separated, one review per line, no quoting.

Athena reads these files with LazySimpleSerDe, which splits on tabs and gives double quotes
no meaning. Review texts contain unbalanced quotes, so a CSV parser here would merge rows;
splitting each line on tabs keeps every malformed line to itself.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

from review_nlp.data.columns import PDS_TSV_COLUMNS, ColumnOptions, resolve_columns, select_fields
from review_nlp.data.lines import iter_lines, strip_line_end
from review_nlp.data.records import BAD_FIELD_COUNT, INVALID_ENCODING, RawRow
from review_nlp.errors import DataError


def read_tsv(uri: str | os.PathLike, options: ColumnOptions, *,
             client: Any = None) -> Iterator[RawRow]:
    """Yield the rows of a TSV file (plain or gzipped) as raw canonical fields.

    The header names the columns unless `options.header` is False. A headerless file with
    15 fields per row is read in the amazon-reviews-pds column order. A line with a different
    number of fields from the header is rejected as `bad_field_count`.
    """
    path = str(uri)
    mapping: dict[str, int] | None = None
    width = 0
    for line in iter_lines(path, client=client):
        text = strip_line_end(line.text)
        if not text.strip(" "):
            yield RawRow(line.number, blank=True)
            continue
        if not line.valid:
            if mapping is None and options.header is not False:
                raise DataError("the header is not valid UTF-8", path=path, line=line.number)
            yield RawRow(line.number, reason=INVALID_ENCODING)
            continue
        values = text.split("\t")
        if mapping is None:
            width = len(values)
            mapping = _header_mapping(values, options, path)
            if options.header is not False:
                continue
        if len(values) != width:
            yield RawRow(line.number, reason=BAD_FIELD_COUNT)
            continue
        yield RawRow(line.number, select_fields(values, mapping))


def _header_mapping(first_row: list[str], options: ColumnOptions, path: str) -> dict[str, int]:
    if options.header is not False:
        return resolve_columns(first_row, len(first_row), options, path=path)
    names = PDS_TSV_COLUMNS if len(first_row) == len(PDS_TSV_COLUMNS) else None
    return resolve_columns(names, len(first_row), options, path=path)
