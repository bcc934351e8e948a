"""Running a selection on DuckDB (embedded, the default) or on Athena, as record batches.

A query is Trino SQL that reads from the table `reviews`, whose columns are the canonical
record's (see `review_nlp.data.query`). DuckDB reads a `ReviewSource` registered as
`reviews`. Athena reads `database.table`, and with `unload_to` writes the result as Parquet
under an S3 prefix, which is then read back.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterator

import duckdb
import pyarrow as pa
import pyathena
from pyathena.error import OperationalError

from review_nlp.data.parquet import iter_parquet_batches
from review_nlp.data.query import (
    TABLE, Selection, build_query, quote_string, rename_table, to_duckdb_sql)
from review_nlp.data.records import REVIEW_SCHEMA
from review_nlp.data.sources import ReviewSource, open_reviews
from review_nlp.data.storage import is_s3_uri, list_files, s3_client
from review_nlp.errors import UserError

__all__ = ["Selection", "build_query", "select_athena", "select_duckdb", "to_duckdb_sql"]

logger = logging.getLogger(__name__)

# Arrow types for the Athena result types that map one to one; others arrive as strings.
_ATHENA_TYPES = {
    "boolean": pa.bool_(), "tinyint": pa.int8(), "smallint": pa.int16(),
    "integer": pa.int32(), "int": pa.int32(), "bigint": pa.int64(), "real": pa.float32(),
    "float": pa.float32(), "double": pa.float64(), "date": pa.date32(),
    "timestamp": pa.timestamp("ms"), "varbinary": pa.binary(), "char": pa.string(),
    "varchar": pa.string(), "string": pa.string(),
}


def select_duckdb(source: ReviewSource | str | os.PathLike, selection: Selection | str,
                  batch_size: int = 10000) -> Iterator[pa.RecordBatch]:
    """Run a selection or a Trino query on a review source in an embedded DuckDB.

    The source's canonical batches are registered as the view `reviews` through a
    RecordBatchReader, so DuckDB streams them and memory stays bounded by the batch. A path
    is opened with `open_reviews` defaults. The query is checked at once, raising
    `UserError`, and runs when the returned iterator is first read. DuckDB may stop reading
    the source early (for a LIMIT), and then `source.report` covers only the rows it read.
    """
    if not isinstance(source, ReviewSource):
        source = open_reviews(source)
    sql = selection if isinstance(selection, str) else build_query(selection)
    return _run_duckdb(source, to_duckdb_sql(sql), batch_size)


def _run_duckdb(source: ReviewSource, sql: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    logger.info("running on DuckDB: %s", sql)
    failures: list[BaseException] = []
    connection = duckdb.connect()
    try:
        connection.register(TABLE, pa.RecordBatchReader.from_batches(
            REVIEW_SCHEMA, _recording_failures(source.iter_batches(batch_size), failures)))
        yield from _stream(connection, sql, batch_size, failures)
    finally:
        connection.close()


def _stream(connection: Any, sql: str, batch_size: int,
            failures: list[BaseException]) -> Iterator[pa.RecordBatch]:
    try:
        relation = connection.sql(sql)
        # NOTE: duckdb 2.0, which the tests run, names it to_arrow_reader; the fallback for
        # older releases that pyproject still allows is not exercised by the tests.
        reader = (relation.to_arrow_reader(batch_size) if hasattr(relation, "to_arrow_reader")
                  else relation.fetch_arrow_reader(batch_size))
        yield from reader
    except duckdb.Error as error:
        # DuckDB wraps an exception raised while reading the source in its own error type;
        # re-raise the original, such as a DataError naming the file.
        if failures:
            raise failures[0] from None
        if "already been consumed" in str(error):
            raise UserError("the query reads the table reviews more than once, but the source "
                            "streams once; use a single scan (window functions instead of a "
                            "self-join)") from error
        raise UserError(f"query failed on DuckDB: {error}") from error


def _recording_failures(batches: Iterator[pa.RecordBatch],
                        failures: list[BaseException]) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    except Exception as error:
        failures.append(error)
        raise


def select_athena(selection: Selection | str, *, database: str, table: str,
                  workgroup: str | None = None, s3_staging_dir: str | None = None,
                  region: str | None = None, unload_to: str | None = None,
                  batch_size: int = 10000, client: Any = None) -> Iterator[pa.RecordBatch]:
    """Run a selection or a Trino query on the Athena table `database.table` via pyathena.

    The query's table `reviews` is renamed to `database.table`. Without `unload_to`, result
    pages are fetched `batch_size` rows at a time. With `unload_to` (an empty S3 prefix, as
    UNLOAD requires), the query runs as `UNLOAD (...) TO '<prefix>' WITH (format = 'PARQUET')`
    and the Parquet files written there are read back. For canonical records with the usual
    row checks, read that prefix with `open_reviews(unload_to, format="parquet")` instead.
    `workgroup`, `s3_staging_dir` and `region` default to the workgroup's and boto3's settings.
    The query text is checked at once, raising `UserError`, and runs on Athena when the
    returned iterator is first read.
    """
    qualified = f"{database}.{table}"
    sql = (rename_table(selection, qualified) if isinstance(selection, str)
           else build_query(selection, table=qualified))
    if unload_to is not None:
        sql = unload_statement(sql, unload_to)
    connect_options = {"s3_staging_dir": s3_staging_dir, "work_group": workgroup,
                       "region_name": region, "schema_name": database}
    return _run_athena(sql, connect_options, unload_to, batch_size, client)


def _run_athena(sql: str, connect_options: dict[str, Any], unload_to: str | None,
                batch_size: int, client: Any) -> Iterator[pa.RecordBatch]:
    connection = pyathena.connect(**connect_options)
    try:
        cursor = connection.cursor()
        _execute(cursor, sql)
        if unload_to is not None:
            yield from _read_unload(unload_to, batch_size, client)
        else:
            yield from _fetch_batches(cursor, batch_size)
    finally:
        connection.close()


def unload_statement(sql: str, prefix: str) -> str:
    """Wrap a query in Athena's UNLOAD to Parquet files under the S3 `prefix`."""
    if not is_s3_uri(prefix):
        raise UserError(f"unload_to={prefix!r} must be an S3 prefix such as s3://bucket/folder/")
    prefix = prefix.rstrip("/") + "/"
    return f"UNLOAD ({sql}) TO {quote_string(prefix)} WITH (format = 'PARQUET')"


def _execute(cursor: Any, sql: str) -> None:
    logger.info("running on Athena: %s", sql)
    try:
        cursor.execute(sql)
    except OperationalError as error:
        raise UserError(f"Athena query failed: {error}") from error


def _fetch_batches(cursor: Any, batch_size: int) -> Iterator[pa.RecordBatch]:
    schema = _athena_schema(cursor.description or ())
    while rows := cursor.fetchmany(batch_size):
        columns = [[_arrow_value(row[i], f.type) for row in rows] for i, f in enumerate(schema)]
        yield pa.RecordBatch.from_arrays(
            [pa.array(values, type=f.type) for values, f in zip(columns, schema)], schema=schema)


def _athena_schema(description: Any) -> pa.Schema:
    fields = []
    for name, type_code, _, _, precision, scale, _ in description:
        type_name = str(type_code).lower()
        if type_name == "decimal" and precision:
            fields.append(pa.field(name, pa.decimal128(int(precision), int(scale or 0))))
        else:
            fields.append(pa.field(name, _ATHENA_TYPES.get(type_name, pa.string())))
    return pa.schema(fields)


def _arrow_value(value: Any, arrow_type: pa.DataType) -> Any:
    # Arrays, maps, rows and JSON arrive parsed; they are passed on as JSON text.
    if value is None or not pa.types.is_string(arrow_type) or isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _read_unload(prefix: str, batch_size: int, client: Any) -> Iterator[pa.RecordBatch]:
    client = s3_client(client)
    for uri in list_files(prefix, client=client):
        yield from iter_parquet_batches(uri, batch_size=batch_size, client=client)
