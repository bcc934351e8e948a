"""Athena DDL for the amazon-reviews-pds layouts, and running it against moto and Stubber."""

from __future__ import annotations

import pytest
import sqlglot
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from launcher_moto import (  # noqa: F401
    BUCKET,
    RequestRecorder,
    client_for,
    moto_endpoint,
    moto_server_url,
    post_json,
    shared_session,
)

from review_nlp.errors import UserError
from review_nlp.launcher import athena
from review_nlp.launcher.athena import AthenaQueryFailed
from review_nlp.launcher.aws import aws_client

EXPECTED_TSV_TABLE = """\
CREATE EXTERNAL TABLE IF NOT EXISTS reviews.amazon_reviews_tsv (
  marketplace string,
  customer_id string,
  review_id string,
  product_id string,
  product_parent string,
  product_title string,
  product_category string,
  star_rating int,
  helpful_votes int,
  total_votes int,
  vine string,
  verified_purchase string,
  review_headline string,
  review_body string,
  review_date date
)
ROW FORMAT DELIMITED FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'
LOCATION 's3://my-reviews/tsv/'
TBLPROPERTIES ('skip.header.line.count'='1')"""

EXPECTED_PARQUET_TABLE = """\
CREATE EXTERNAL TABLE IF NOT EXISTS reviews.amazon_reviews_parquet (
  marketplace string,
  customer_id string,
  review_id string,
  product_id string,
  product_parent string,
  product_title string,
  star_rating int,
  helpful_votes int,
  total_votes int,
  vine string,
  verified_purchase string,
  review_headline string,
  review_body string,
  review_date bigint,
  year int
)
PARTITIONED BY (product_category string)
ROW FORMAT SERDE 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe'
STORED AS INPUTFORMAT 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat'
OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat'
LOCATION 's3://my-reviews/parquet/'"""


# --- DDL -------------------------------------------------------------------------------------

def test_tsv_ddl():
    statements = athena.create_table_ddl("tsv", "reviews", "amazon_reviews_tsv",
                                         "s3://my-reviews/tsv")

    assert statements == ["CREATE DATABASE IF NOT EXISTS reviews", EXPECTED_TSV_TABLE]
    assert "ESCAPED BY '\\\\'" in statements[1]
    assert "FIELDS TERMINATED BY '\\t'" in statements[1]


def test_parquet_ddl_repairs_partitions():
    statements = athena.create_table_ddl("parquet", "reviews", "amazon_reviews_parquet",
                                         "s3://my-reviews/parquet/")

    assert statements == [
        "CREATE DATABASE IF NOT EXISTS reviews",
        EXPECTED_PARQUET_TABLE,
        "MSCK REPAIR TABLE reviews.amazon_reviews_parquet",
    ]


@pytest.mark.parametrize("layout", ["tsv", "parquet"])
def test_ddl_parses_as_athena_sql(layout):
    table = athena.create_table_ddl(layout, "reviews", "t", "s3://my-reviews/x/")[1]

    parsed = sqlglot.parse_one(table, read="athena")

    assert isinstance(parsed, sqlglot.exp.Create)
    column_names = [column.name for column in parsed.find_all(sqlglot.exp.ColumnDef)]
    expected = athena.TSV_COLUMNS if layout == "tsv" else athena.PARQUET_COLUMNS
    assert column_names[:len(expected)] == [name for name, _ in expected]


def test_tsv_columns_match_real_header(reviews_dir):
    header = (reviews_dir / "sample_us.tsv").open(encoding="utf-8").readline()

    assert header.rstrip("\n").split("\t") == [name for name, _ in athena.TSV_COLUMNS]


@pytest.mark.parametrize("arguments, message", [
    (("csv", "reviews", "t", "s3://b/x/"), "layout="),
    (("tsv", "reviews-db", "t", "s3://b/x/"), "database="),
    (("tsv", "reviews", "t;drop", "s3://b/x/"), "table="),
    (("tsv", "reviews", "t", "/local/x"), "s3://"),
    (("tsv", "reviews", "t", "s3://b/it's/"), "quote"),
])
def test_ddl_rejects(arguments, message):
    with pytest.raises(UserError, match=message):
        athena.create_table_ddl(*arguments)


# --- running statements against moto ---------------------------------------------------------

@pytest.fixture
def athena_client(client_for):
    return client_for("athena")


@pytest.fixture
def slow_queries(moto_endpoint):
    """Make each moto query stay QUEUED and RUNNING for two polls, as real ones do."""
    transition = {"model_name": "athena::execution",
                  "transition": {"progression": "manual", "times": 2}}
    post_json(moto_endpoint + "/moto-api/state-manager/set-transition", transition)
    yield
    post_json(moto_endpoint + "/moto-api/state-manager/unset-transition",
              {"model_name": "athena::execution"})


def test_run_statements_against_moto(athena_client, slow_queries):
    recorder = RequestRecorder(athena_client)
    statements = athena.create_table_ddl("parquet", "reviews", "amazon_reviews_parquet",
                                         "s3://my-reviews/parquet/")

    ids = athena.run_statements(statements, "reviews", "primary", f"s3://{BUCKET}/athena/",
                                poll_seconds=0, client=athena_client)

    assert len(ids) == 3
    sent = recorder.json_bodies("StartQueryExecution")
    assert [body["QueryString"] for body in sent] == statements
    assert all(body["WorkGroup"] == "primary" for body in sent)
    assert all(body["ResultConfiguration"] == {"OutputLocation": f"s3://{BUCKET}/athena/"}
               for body in sent)
    assert "QueryExecutionContext" not in sent[0]
    assert sent[1]["QueryExecutionContext"] == {"Database": "reviews"}
    assert sent[2]["QueryExecutionContext"] == {"Database": "reviews"}
    # each query was polled until it left QUEUED and RUNNING
    assert recorder.operations().count("GetQueryExecution") >= 3 * 3
    for execution_id, statement in zip(ids, statements):
        stored = athena_client.get_query_execution(QueryExecutionId=execution_id)
        assert stored["QueryExecution"]["Query"] == statement
        assert stored["QueryExecution"]["Status"]["State"] == "SUCCEEDED"
    databases = athena_client.list_databases(CatalogName="AwsDataCatalog")["DatabaseList"]
    assert "reviews" in [database["Name"] for database in databases]


def test_run_statements_without_output_location(athena_client):
    recorder = RequestRecorder(athena_client)

    athena.run_statements(["MSCK REPAIR TABLE reviews.t"], "reviews", poll_seconds=0,
                          client=athena_client)

    [body] = recorder.json_bodies("StartQueryExecution")
    assert "ResultConfiguration" not in body
    assert body["WorkGroup"] == "primary"


def test_run_statements_default_client(moto_endpoint):
    ids = athena.run_statements(["CREATE DATABASE IF NOT EXISTS reviews"], "reviews",
                                poll_seconds=0)

    assert len(ids) == 1


def test_unknown_workgroup_raises(athena_client):
    with pytest.raises(ClientError, match="WorkGroup does not exist"):
        athena.run_statements(["SHOW TABLES"], "reviews", "no-such-workgroup", poll_seconds=0,
                              client=athena_client)


# --- failures, through Stubber ---------------------------------------------------------------

@pytest.fixture
def stubbed(shared_session):
    client = aws_client("athena", session=shared_session)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _expect_start(stubber, execution_id, statement):
    stubber.add_response("start_query_execution", {"QueryExecutionId": execution_id}, {
        "QueryString": statement, "WorkGroup": "primary",
        "QueryExecutionContext": {"Database": "reviews"},
        "ResultConfiguration": {"OutputLocation": f"s3://{BUCKET}/athena/"},
    })


def _expect_state(stubber, execution_id, state, reason=None):
    status = {"State": state}
    if reason:
        status["StateChangeReason"] = reason
    stubber.add_response("get_query_execution",
                         {"QueryExecution": {"QueryExecutionId": execution_id, "Status": status}},
                         {"QueryExecutionId": execution_id})


def _run(client, statements, **kwargs):
    return athena.run_statements(statements, "reviews", "primary", f"s3://{BUCKET}/athena/",
                                 poll_seconds=0, client=client, **kwargs)


def test_failed_statement_raises_reason_and_stops(stubbed):
    client, stubber = stubbed
    _expect_start(stubber, "q-1", "MSCK REPAIR TABLE reviews.t")
    _expect_state(stubber, "q-1", "RUNNING")
    _expect_state(stubber, "q-1", "FAILED", "FAILED: SemanticException table not found")

    with pytest.raises(AthenaQueryFailed) as raised:
        _run(client, ["MSCK REPAIR TABLE reviews.t", "SHOW TABLES"])

    assert raised.value.reason == "FAILED: SemanticException table not found"
    assert raised.value.query_execution_id == "q-1"
    assert "SemanticException table not found" in str(raised.value)
    assert "MSCK REPAIR TABLE reviews.t" in str(raised.value)


def test_cancelled_statement_raises(stubbed):
    client, stubber = stubbed
    _expect_start(stubber, "q-1", "SHOW TABLES")
    _expect_state(stubber, "q-1", "CANCELLED", "Query cancelled by user")

    with pytest.raises(AthenaQueryFailed, match="CANCELLED: Query cancelled by user"):
        _run(client, ["SHOW TABLES"])


def test_throttled_poll_is_retried(stubbed, caplog):
    client, stubber = stubbed
    _expect_start(stubber, "q-1", "SHOW TABLES")
    stubber.add_client_error("get_query_execution", service_error_code="ThrottlingException",
                             service_message="Rate exceeded")
    _expect_state(stubber, "q-1", "SUCCEEDED")

    assert _run(client, ["SHOW TABLES"]) == ["q-1"]
    assert "throttled" in caplog.text


def test_query_timeout(stubbed):
    client, stubber = stubbed
    _expect_start(stubber, "q-1", "SHOW TABLES")
    _expect_state(stubber, "q-1", "RUNNING")

    with pytest.raises(TimeoutError, match="q-1 still running"):
        _run(client, ["SHOW TABLES"], timeout_seconds=-1)


def test_empty_statement_rejected():
    with pytest.raises(UserError, match="empty statement"):
        athena.run_statements(["SHOW TABLES", "  "], "reviews", client=object())
