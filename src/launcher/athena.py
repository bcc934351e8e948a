"""Athena tables over amazon-reviews-pds files in the user's bucket: DDL, printed or run.

Two layouts of the public dataset are covered. TSV: one `.tsv` or `.tsv.gz` file per category
with a header row, tab-separated and backslash-escaped, without quoting. Parquet: one folder
per category, `product_category=<Category>/`, which `MSCK REPAIR TABLE` registers as
partitions. Queries over these tables belong to `review_nlp.data.selection`; this module only
creates the tables.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Sequence

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from ..errors import UserError
from .aws import aws_client, is_throttling_error
from .s3_uploads import parse_s3_uri

logger = logging.getLogger(__name__)

LAYOUTS = ("tsv", "parquet")
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_]{1,255}$")

# The 15 TSV columns in file order; the Parquet files carry the same minus product_category
# (a partition there) plus `year`.
TSV_COLUMNS = (
    ("marketplace", "string"),
    ("customer_id", "string"),
    ("review_id", "string"),
    ("product_id", "string"),
    ("product_parent", "string"),
    ("product_title", "string"),
    ("product_category", "string"),
    ("star_rating", "int"),
    ("helpful_votes", "int"),
    ("total_votes", "int"),
    ("vine", "string"),
    ("verified_purchase", "string"),
    ("review_headline", "string"),
    ("review_body", "string"),
    ("review_date", "date"),
)

# Column types as the 2018 SageMaker + Athena reviews workshop declared them for the
# amazon-reviews-pds Parquet files (review_date as bigint there).
PARQUET_COLUMNS = (
    ("marketplace", "string"),
    ("customer_id", "string"),
    ("review_id", "string"),
    ("product_id", "string"),
    ("product_parent", "string"),
    ("product_title", "string"),
    ("star_rating", "int"),
    ("helpful_votes", "int"),
    ("total_votes", "int"),
    ("vine", "string"),
    ("verified_purchase", "string"),
    ("review_headline", "string"),
    ("review_body", "string"),
    ("review_date", "bigint"),
    ("year", "int"),
)


class AthenaQueryFailed(RuntimeError):
    """An Athena statement ended FAILED or CANCELLED; the message carries StateChangeReason."""

    def __init__(self, query_execution_id: str, state: str, reason: str, statement: str):
        self.query_execution_id = query_execution_id
        self.state = state
        self.reason = reason
        self.statement = statement
        first_line = statement.strip().splitlines()[0] if statement.strip() else ""
        super().__init__(
            f"Athena query {query_execution_id} {state}: {reason} (statement: {first_line})")


def create_table_ddl(layout: str, database: str, table: str, location: str) -> list[str]:
    """Return the statements that create `database.table` over the files at `location`.

    The list is `CREATE DATABASE IF NOT EXISTS`, `CREATE EXTERNAL TABLE IF NOT EXISTS` and,
    for the Parquet layout, `MSCK REPAIR TABLE` to register the `product_category=...`
    partitions. `location` is an S3 folder; a missing trailing "/" is added.
    """
    if layout not in LAYOUTS:
        raise UserError(f"layout={layout!r} must be one of {list(LAYOUTS)}")
    for name, value in (("database", database), ("table", table)):
        if not _IDENTIFIER.match(value):
            raise UserError(f"{name}={value!r} must be letters, digits and underscores")
    parse_s3_uri(location)
    if "'" in location:
        raise UserError(f"location={location!r} must not contain a quote")
    location = location if location.endswith("/") else location + "/"

    statements = [f"CREATE DATABASE IF NOT EXISTS {database}"]
    if layout == "tsv":
        statements.append(_tsv_table(database, table, location))
    else:
        statements.append(_parquet_table(database, table, location))
        statements.append(f"MSCK REPAIR TABLE {database}.{table}")
    return statements


def run_statements(statements: Sequence[str], database: str, workgroup: str = "primary",
                   output_location: str | None = None, *, poll_seconds: float = 1.0,
                   timeout_seconds: float = 600.0,
                   client: BaseClient | None = None) -> list[str]:
    """Run `statements` one after another through Athena and wait for each to finish.

    `database` is the query context, except for `CREATE DATABASE` statements, whose database
    may not exist yet. `output_location` is the S3 folder for results; it may be None when
    the workgroup sets one. Returns the query execution ids. Raises `AthenaQueryFailed` with
    Athena's StateChangeReason on the first statement that fails, and `TimeoutError` when one
    runs longer than `timeout_seconds`.
    """
    client = client or aws_client("athena")
    if output_location is not None:
        parse_s3_uri(output_location)
    if not all(statement.strip() for statement in statements):
        raise UserError("statements contains an empty statement")
    execution_ids = []
    for statement in statements:
        request: dict[str, Any] = {"QueryString": statement, "WorkGroup": workgroup}
        if not re.match(r"\s*CREATE\s+(DATABASE|SCHEMA)\b", statement, re.IGNORECASE):
            request["QueryExecutionContext"] = {"Database": database}
        if output_location is not None:
            request["ResultConfiguration"] = {"OutputLocation": output_location}

        execution_id = client.start_query_execution(**request)["QueryExecutionId"]
        logger.info("Athena query %s started: %s", execution_id, statement.strip().splitlines()[0])
        _wait_for_query(client, execution_id, statement, poll_seconds, timeout_seconds)
        execution_ids.append(execution_id)
    return execution_ids


def _tsv_table(database: str, table: str, location: str) -> str:
    # no quoting: review bodies contain unbalanced double quotes, and the files never quote
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {database}.{table} (\n"
        f"{_column_list(TSV_COLUMNS)}\n"
        ")\n"
        "ROW FORMAT DELIMITED FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' "
        "LINES TERMINATED BY '\\n'\n"
        f"LOCATION '{location}'\n"
        "TBLPROPERTIES ('skip.header.line.count'='1')"
    )


def _parquet_table(database: str, table: str, location: str) -> str:
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {database}.{table} (\n"
        f"{_column_list(PARQUET_COLUMNS)}\n"
        ")\n"
        "PARTITIONED BY (product_category string)\n"
        "ROW FORMAT SERDE 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe'\n"
        "STORED AS INPUTFORMAT 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat'\n"
        "OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat'\n"
        f"LOCATION '{location}'"
    )


def _column_list(columns: Sequence[tuple[str, str]]) -> str:
    return ",\n".join(f"  {name} {kind}" for name, kind in columns)


def _wait_for_query(client: BaseClient, execution_id: str, statement: str, poll_seconds: float,
                    timeout_seconds: float) -> None:
    started = time.monotonic()
    while True:
        status = _query_status(client, execution_id)
        if status is not None and status["State"] in TERMINAL_STATES:
            if status["State"] != "SUCCEEDED":
                raise AthenaQueryFailed(execution_id, status["State"],
                                        status.get("StateChangeReason", "(no reason given)"),
                                        statement)
            return
        if time.monotonic() - started > timeout_seconds:
            raise TimeoutError(
                f"Athena query {execution_id} still running after {timeout_seconds:.0f} s")
        time.sleep(poll_seconds)


def _query_status(client: BaseClient, execution_id: str) -> dict[str, Any] | None:
    """GetQueryExecution's Status, or None when the call was throttled past botocore's retries."""
    try:
        response = client.get_query_execution(QueryExecutionId=execution_id)
    except ClientError as error:
        if not is_throttling_error(error):
            raise
        logger.warning("GetQueryExecution %s throttled; polling again later", execution_id)
        return None
    return response["QueryExecution"]["Status"]
