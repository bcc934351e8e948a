"""Trino SQL selection: query text, the Trino-to-DuckDB traps, DuckDB runs and Athena on moto."""

from __future__ import annotations

import datetime as dt
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws
from moto.athena.models import QueryResults, athena_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_api import state_manager

from review_nlp.data.query import rename_table, to_duckdb_sql
from review_nlp.data.selection import Selection, build_query, select_athena, select_duckdb
from review_nlp.data.sources import open_reviews
from review_nlp.data.storage import new_session
from review_nlp.errors import DataError, UserError

HEADER = ("marketplace\tcustomer_id\treview_id\tproduct_id\tproduct_parent\tproduct_title\t"
          "product_category\tstar_rating\thelpful_votes\ttotal_votes\tvine\tverified_purchase\t"
          "review_headline\treview_body\treview_date")
ROWS = [
    ("US", "R1", "B1", "Books", "5", "3", "A gift for my sister", "2015-08-31"),
    ("US", "R2", "B2", "Books", "2", "4", "Not what I expected", "2014-01-15"),
    ("UK", "R3", "B1", "Toys", "4", "1", "Kids love it", "2015-02-01"),
    ("US", "R4", "B3", "Men's", "1", "0", "Broke on day one", "2013-12-31"),
]


@pytest.fixture
def small_source(tmp_path):
    lines = [HEADER] + ["\t".join([market, "100", review_id, product, "200", "Title", category,
                                   stars, votes, votes, "N", "Y", "Headline", body, date])
                        for market, review_id, product, category, stars, votes, body, date
                        in ROWS]
    path = tmp_path / "small.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_duckdb(path, query) -> list[dict]:
    return [row for batch in select_duckdb(open_reviews(path), query) for row in batch.to_pylist()]


def test_build_query_all_filters():
    selection = Selection(categories=["Books", "Men's"], min_stars=2, max_stars=4,
                          start_date="2014-01-01", end_date=dt.date(2015, 12, 31),
                          marketplaces=["US"], limit=100)
    assert build_query(selection) == (
        "SELECT *\n"
        "FROM reviews\n"
        "WHERE product_category IN ('Books', 'Men''s')\n"
        "  AND marketplace IN ('US')\n"
        "  AND star_rating >= 2\n"
        "  AND star_rating <= 4\n"
        "  AND review_date >= DATE '2014-01-01'\n"
        "  AND review_date <= DATE '2015-12-31'\n"
        "LIMIT 100")


def test_build_query_no_filters_and_table():
    assert build_query(Selection(), table="reviews_db.amazon_reviews") == (
        "SELECT *\nFROM reviews_db.amazon_reviews")
    assert build_query(Selection(), table="my-db.t") == 'SELECT *\nFROM "my-db".t'


def test_build_query_own_sql():
    sql = "SELECT review_body FROM reviews WHERE star_rating = 5"
    assert build_query(Selection(sql=sql)) == sql
    assert build_query(Selection(sql=sql), table="db.t") == (
        "SELECT review_body FROM db.t WHERE star_rating = 5")


@pytest.mark.parametrize("settings, message", [
    ({"min_stars": 0}, "min_stars=0 must be in [1, 5]"),
    ({"max_stars": "5"}, "max_stars='5' must be in [1, 5]"),
    ({"min_stars": 4, "max_stars": 2}, "min_stars=4 must not exceed max_stars=2"),
    ({"start_date": "2015-31-01"}, "start_date='2015-31-01' must be a date written YYYY-MM-DD"),
    ({"start_date": "2016-01-01", "end_date": "2015-01-01"}, "must not be after"),
    ({"limit": 0}, "limit=0 must be an integer >= 1"),
    ({"categories": [""]}, "categories=[''] must be a list of non-empty strings"),
    ({"sql": "SELECT * FROM reviews", "limit": 5}, "sql cannot be combined"),
])
def test_selection_rejects(settings, message):
    with pytest.raises(UserError) as raised:
        Selection(**settings)
    assert message in str(raised.value)


def test_selection_single_category_string():
    assert Selection(categories="Books").categories == ["Books"]


def test_rename_table_keeps_aliases_and_ctes():
    assert rename_table("SELECT r.review_id FROM reviews r", "db.t") == (
        "SELECT r.review_id FROM db.t AS r")
    with_cte = "WITH reviews AS (SELECT 1 AS x) SELECT x FROM reviews"
    assert rename_table(with_cte, "db.t") == with_cte


@pytest.mark.parametrize("sql, message", [
    ("SELECT FROM WHERE", "invalid Trino SQL"),
    ("SELECT 1; SELECT 2", "expected one SQL statement, found 2"),
    ("DROP TABLE reviews", "expected a SELECT query, found DROP"),
    ("SELECT nosuch FROM reviews", "Column 'nosuch' could not be resolved"),
])
def test_bad_sql_rejected(sql, message):
    with pytest.raises(UserError, match=message):
        to_duckdb_sql(sql)


def test_select_duckdb_checks_query_at_once(small_source):
    with pytest.raises(UserError, match="could not be resolved"):
        select_duckdb(open_reviews(small_source), "SELECT stars FROM reviews")


def test_unknown_column_lists_columns():
    with pytest.raises(UserError) as raised:
        to_duckdb_sql("SELECT stars FROM reviews")
    assert "columns: marketplace, customer_id" in str(raised.value)


def test_integer_division_truncates(small_source):
    rows = run_duckdb(small_source, "SELECT 7/2 AS a, -7/2 AS b, 7.0/2 AS c, "
                                    "star_rating/2 AS half, CAST(star_rating AS double)/2 AS d "
                                    "FROM reviews WHERE review_id = 'R1'")
    assert rows == [{"a": 3, "b": -3, "c": 3.5, "half": 2, "d": 2.5}]


def test_integer_division_of_aggregates(small_source):
    rows = run_duckdb(small_source, "SELECT sum(helpful_votes)/count(*) AS mean_votes, "
                                    "sum(helpful_votes) AS total FROM reviews")
    assert rows == [{"mean_votes": 2, "total": 8}]


def test_integer_division_in_subquery(small_source):
    rows = run_duckdb(small_source, "WITH t AS (SELECT star_rating AS s FROM reviews) "
                                    "SELECT s/2 AS h FROM t ORDER BY h")
    assert [row["h"] for row in rows] == [0, 1, 2, 2]


def test_sum_is_bigint(small_source):
    batches = list(select_duckdb(open_reviews(small_source),
                                 "SELECT sum(star_rating) AS s FROM reviews"))
    assert batches[0].schema.field("s").type == pa.int64()


def test_unnamed_columns_named_like_athena(small_source):
    rows = run_duckdb(small_source, "SELECT star_rating, count(*) FROM reviews "
                                    "GROUP BY star_rating ORDER BY star_rating")
    assert rows[0] == {"star_rating": 1, "_col1": 1}


def test_trino_functions_run_on_duckdb(small_source):
    rows = run_duckdb(small_source, """
        SELECT approx_distinct(product_id) AS products,
               max(date_parse('2015-08-31', '%Y-%m-%d')) AS parsed,
               count_if(regexp_like(review_body, '^(A|K)')) AS matches,
               max(element_at(ARRAY[10, 20, 30], 2)) AS second,
               max(element_at(split(review_body, ' '), 1)) AS first_word,
               max(rand()) < 1 AS random_below_one
        FROM reviews""")
    assert rows == [{"products": 3, "parsed": dt.datetime(2015, 8, 31), "matches": 2,
                     "second": 20, "first_word": "Not", "random_below_one": True}]


@pytest.mark.parametrize("percent, expected", [(100, 4), (0, 0)])
def test_tablesample_bernoulli(small_source, percent, expected):
    rows = run_duckdb(small_source,
                      f"SELECT review_id FROM reviews TABLESAMPLE BERNOULLI ({percent})")
    assert len(rows) == expected


def test_date_literal_and_year(small_source):
    rows = run_duckdb(small_source, "SELECT review_id FROM reviews WHERE review_date >= "
                                    "DATE '2015-01-01' AND year = 2015 ORDER BY review_id")
    assert [row["review_id"] for row in rows] == ["R1", "R3"]


def test_selection_on_duckdb(small_source):
    selection = Selection(categories=["Books", "Men's"], marketplaces=["US"], min_stars=2)
    rows = run_duckdb(small_source, selection)
    assert [row["review_id"] for row in rows] == ["R1", "R2"]


def test_self_join_explains_single_scan(small_source):
    with pytest.raises(UserError, match="more than once"):
        run_duckdb(small_source, "SELECT count(*) FROM reviews a JOIN reviews b "
                                 "ON a.product_id = b.product_id")


def test_source_error_passes_through(tmp_path):
    pq.write_table(pa.table({"stars": [5]}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match="no review_body column"):
        run_duckdb(tmp_path / "a.parquet", "SELECT * FROM reviews")


def test_gift_card_selection(reviews_dir):
    source = open_reviews(reviews_dir / "amazon_reviews_us_Gift_Card_v1_00.head.tsv")
    batches = list(select_duckdb(source, Selection(categories=["Gift Card"], min_stars=4),
                                 batch_size=200))
    assert sum(batch.num_rows for batch in batches) == 85 + 1266
    assert max(batch.num_rows for batch in batches) <= 200
    assert batches[0].schema.names == source.schema.names
    assert batches[0].schema.field("review_date").type == pa.date32()
    assert source.report.rows_read == 1452


def test_star_histogram_query(reviews_dir):
    rows = run_duckdb(reviews_dir / "amazon_reviews_us_Gift_Card_v1_00.head.tsv",
                      "SELECT star_rating, count(*) AS n FROM reviews GROUP BY star_rating "
                      "ORDER BY star_rating")
    assert [row["n"] for row in rows] == [54, 14, 33, 85, 1266]


# Athena on moto: moto runs no SQL, so results are queued beforehand and the UNLOAD output
# is written to S3 by the test.

def athena_column(name: str, athena_type: str) -> dict:
    return {"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": name,
            "Label": name, "Type": athena_type, "Precision": 0, "Scale": 0,
            "Nullable": "UNKNOWN", "CaseSensitive": False}


def athena_row(*values) -> dict:
    return {"Data": [{} if value is None else {"VarCharValue": value} for value in values]}


@pytest.fixture
def athena():
    # Queries succeed at once, so pyathena's one-second status polling never waits.
    state_manager.set_transition(model_name="athena::execution",
                                 transition={"progression": "immediate"})
    try:
        with mock_aws():
            new_session().client("s3").create_bucket(Bucket="query-results")
            yield athena_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    finally:
        state_manager.unset_transition(model_name="athena::execution")


def queries_received(backend) -> list[str]:
    return [execution.query for execution in backend.executions.values()]


def test_athena_selection(athena):
    columns = [athena_column("review_id", "varchar"), athena_column("star_rating", "integer"),
               athena_column("review_date", "date"), athena_column("votes", "bigint")]
    athena.query_results_queue.append(QueryResults(
        rows=[athena_row("review_id", "star_rating", "review_date", "votes"),
              athena_row("R1", "5", "2015-08-31", "3"), athena_row("R2", "4", None, None)],
        column_info=columns))
    batches = list(select_athena(Selection(categories=["Books"], min_stars=4),
                                 database="reviews_db", table="amazon_reviews_parquet",
                                 s3_staging_dir="s3://query-results/athena/"))
    assert queries_received(athena) == [
        "SELECT *\nFROM reviews_db.amazon_reviews_parquet\n"
        "WHERE product_category IN ('Books')\n  AND star_rating >= 4"]
    table = pa.Table.from_batches(batches)
    assert table.schema.types == [pa.string(), pa.int32(), pa.date32(), pa.int64()]
    assert table.to_pylist() == [
        {"review_id": "R1", "star_rating": 5, "review_date": dt.date(2015, 8, 31), "votes": 3},
        {"review_id": "R2", "star_rating": 4, "review_date": None, "votes": None}]


def test_athena_own_sql(athena):
    sql = "SELECT count(*) FROM reviews WHERE review_body LIKE '%gift%'"
    athena.query_results_queue.append(QueryResults(
        rows=[athena_row("_col0"), athena_row("2")], column_info=[athena_column("_col0", "bigint")]))
    batches = list(select_athena(sql, database="db", table="t", workgroup="primary",
                                 s3_staging_dir="s3://query-results/athena/", region="us-east-1"))
    assert queries_received(athena) == [
        "SELECT COUNT(*) FROM db.t WHERE review_body LIKE '%gift%'"]
    assert batches[0].to_pylist() == [{"_col0": 2}]


def test_athena_unload_reads_parquet(athena):
    s3 = new_session().client("s3")
    for part, ids in [("part-0", ["R1", "R2"]), ("part-1", ["R3"])]:
        buffer = io.BytesIO()
        pq.write_table(pa.table({"review_id": ids, "star_rating": [5] * len(ids)}), buffer)
        s3.put_object(Bucket="query-results", Key=f"unload/run-1/{part}",
                      Body=buffer.getvalue())
    batches = list(select_athena(Selection(min_stars=5), database="db", table="t",
                                 s3_staging_dir="s3://query-results/athena/",
                                 unload_to="s3://query-results/unload/run-1"))
    assert queries_received(athena) == [
        "UNLOAD (SELECT *\nFROM db.t\nWHERE star_rating >= 5) "
        "TO 's3://query-results/unload/run-1/' WITH (format = 'PARQUET')"]
    assert pa.Table.from_batches(batches).column("review_id").to_pylist() == ["R1", "R2", "R3"]


def test_athena_unload_needs_s3_prefix():
    with pytest.raises(UserError, match="unload_to='/tmp/out' must be an S3 prefix"):
        select_athena("SELECT * FROM reviews", database="db", table="t", unload_to="/tmp/out")
