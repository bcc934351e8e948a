"""Parquet files, alone or in a hive-partitioned folder such as `product_category=Books/`.

amazon-reviews-pds Parquet is partitioned by `product_category`, has an extra `year` column,
and may store `review_date` as a DATE or as an int count of days since 1970-01-01.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any, Iterator
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from review_nlp.data.records import REVIEW_COLUMNS, RawRow
from review_nlp.data.storage import local_copy
from review_nlp.errors import DataError

# Hive writes this folder name for a null partition value.
_HIVE_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


def hive_partitions(name: str) -> dict[str, str | None]:
    """Return the `key=value` folder names in a relative file name as a dict (values unquoted)."""
    partitions: dict[str, str | None] = {}
    for part in PurePosixPath(name).parent.parts:
        key, sep, value = part.partition("=")
        if sep and key:
            partitions[unquote(key)] = None if value == _HIVE_NULL_PARTITION else unquote(value)
    return partitions


def iter_parquet_batches(uri: str | os.PathLike, *, batch_size: int,
                         columns: list[str] | None = None,
                         client: Any = None) -> Iterator[pa.RecordBatch]:
    """Yield the record batches of one local or S3 Parquet file as stored, `columns` only.

    An S3 object is first downloaded to a temporary file, because Parquet readers seek.
    """
    with local_copy(uri, client=client) as path:
        parquet_file = _open(path, str(uri))
        yield from parquet_file.iter_batches(batch_size=batch_size, columns=columns)


def read_parquet(uri: str | os.PathLike, *, name: str, batch_size: int,
                 client: Any = None) -> Iterator[RawRow]:
    """Yield the rows of one Parquet file as raw canonical fields, numbered from 1.

    `name` is the file's path relative to the source root; its `key=value` folders fill
    canonical columns missing from the file (`product_category` in amazon-reviews-pds).
    Columns that are not canonical are not read.
    """
    partitions = {key: value for key, value in hive_partitions(name).items()
                  if key in REVIEW_COLUMNS}
    with local_copy(uri, client=client) as path:
        parquet_file = _open(path, str(uri))
        available = parquet_file.schema_arrow.names
        if "review_body" not in available:
            raise DataError(f"no review_body column; available columns: {', '.join(available)}",
                            path=str(uri))
        columns = [column for column in REVIEW_COLUMNS if column in available]
        missing_partitions = {k: v for k, v in partitions.items() if k not in available}
        row_number = 0
        for batch in parquet_file.iter_batches(batch_size=batch_size, columns=columns):
            for fields in batch.to_pylist():
                row_number += 1
                fields.update(missing_partitions)
                yield RawRow(row_number, fields)


def _open(path: os.PathLike, uri: str) -> pq.ParquetFile:
    try:
        # Athena UNLOAD writes INT96 timestamps; nanoseconds would overflow before 1677.
        return pq.ParquetFile(path, coerce_int96_timestamp_unit="us")
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"not a readable Parquet file: {error}", path=uri) from error
