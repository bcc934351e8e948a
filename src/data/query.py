"""Trino SQL on the table `reviews`: queries built from a `Selection`, and their DuckDB form.

Athena speaks Trino SQL. Queries are written in it once and run on Athena as written (with
`reviews` renamed to the Athena table), and on DuckDB after sqlglot translates them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify

from review_nlp.data.records import REVIEW_COLUMNS, REVIEW_SCHEMA
from review_nlp.errors import UserError

TABLE = "reviews"
# Athena's names for the canonical column types, for sqlglot's type inference.
_SQL_TYPES = {pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.bool_(): "BOOLEAN",
              pa.date32(): "DATE"}
_TABLE_SCHEMA = {TABLE: {f.name: _SQL_TYPES[f.type] for f in REVIEW_SCHEMA}}


@dataclass
class Selection:
    """The filters that select reviews; a filter left empty selects everything.

    `sql` is a query of the caller's own in Trino SQL that reads from the table `reviews`.
    It replaces the filters, so it cannot be combined with them. Dates are `datetime.date`
    or "YYYY-MM-DD" strings, and both ends of a range are included.
    """

    categories: list[str] = field(default_factory=list)
    min_stars: int | None = None
    max_stars: int | None = None
    start_date: dt.date | str | None = None
    end_date: dt.date | str | None = None
    marketplaces: list[str] = field(default_factory=list)
    limit: int | None = None
    sql: str | None = None

    def __post_init__(self):
        self.categories = _string_list("categories", self.categories)
        self.marketplaces = _string_list("marketplaces", self.marketplaces)
        for name in ("min_stars", "max_stars"):
            _check_int(name, getattr(self, name), 1, 5)
        _check_int("limit", self.limit, 1, None)
        if self.min_stars and self.max_stars and self.min_stars > self.max_stars:
            raise UserError(f"min_stars={self.min_stars} must not exceed "
                            f"max_stars={self.max_stars}")
        self.start_date = _date("start_date", self.start_date)
        self.end_date = _date("end_date", self.end_date)
        if self.start_date and self.end_date and self.start_date > self.end_date:
            raise UserError(f"start_date={self.start_date} must not be after "
                            f"end_date={self.end_date}")
        if self.sql is not None and self.has_filters():
            raise UserError("sql cannot be combined with categories, min_stars, max_stars, "
                            "start_date, end_date, marketplaces or limit; put them in the query")

    def has_filters(self) -> bool:
        """Return whether any filter other than `sql` is set."""
        return bool(self.categories or self.marketplaces) or any(
            value is not None for value in (self.min_stars, self.max_stars, self.start_date,
                                            self.end_date, self.limit))


def _string_list(name: str, values: Any) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    values = list(values)
    if not all(isinstance(value, str) and value for value in values):
        raise UserError(f"{name}={values!r} must be a list of non-empty strings")
    return values


def _check_int(name: str, value: Any, low: int, high: int | None) -> None:
    if value is None:
        return
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        requirement = f"must be in [{low}, {high}]" if high else f"must be an integer >= {low}"
        raise UserError(f"{name}={value!r} {requirement}")


def _date(name: str, value: Any) -> dt.date | None:
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise UserError(f"{name}={value!r} must be a date written YYYY-MM-DD") from None


def quote_string(value: str) -> str:
    """Return a Trino string literal, doubling any single quote."""
    return "'" + value.replace("'", "''") + "'"


def build_query(selection: Selection, table: str = TABLE) -> str:
    """Return the Trino SQL text that selects `selection` from `table`.

    `table` may be qualified, as in "database.table". A selection with `sql` returns that
    query with the table `reviews` renamed to `table`.
    """
    if selection.sql is not None:
        return selection.sql if table == TABLE else rename_table(selection.sql, table)
    conditions = []
    if selection.categories:
        conditions.append(f"product_category IN ({_string_list_sql(selection.categories)})")
    if selection.marketplaces:
        conditions.append(f"marketplace IN ({_string_list_sql(selection.marketplaces)})")
    if selection.min_stars is not None:
        conditions.append(f"star_rating >= {selection.min_stars}")
    if selection.max_stars is not None:
        conditions.append(f"star_rating <= {selection.max_stars}")
    if selection.start_date is not None:
        conditions.append(f"review_date >= DATE '{selection.start_date.isoformat()}'")
    if selection.end_date is not None:
        conditions.append(f"review_date <= DATE '{selection.end_date.isoformat()}'")
    lines = [f"SELECT *\nFROM {_table_sql(table)}"]
    if conditions:
        lines.append("WHERE " + "\n  AND ".join(conditions))
    if selection.limit is not None:
        lines.append(f"LIMIT {selection.limit}")
    return "\n".join(lines)


def _string_list_sql(values: list[str]) -> str:
    return ", ".join(quote_string(value) for value in values)


def _table_sql(table: str) -> str:
    parts = table.split(".")
    if not all(parts):
        raise UserError(f"table={table!r} must be a table name or database.table")
    return ".".join(exp.to_identifier(part).sql(dialect="trino") for part in parts)


def parse_query(sql: str) -> exp.Query:
    """Parse one Trino SELECT statement; raise `UserError` for anything else."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="trino") if s is not None]
    except ParseError as error:
        raise UserError(f"invalid Trino SQL: {error}") from None
    if len(statements) != 1:
        raise UserError(f"expected one SQL statement, found {len(statements)}")
    if not isinstance(statements[0], exp.Query):
        raise UserError(f"expected a SELECT query, found {statements[0].key.upper()}")
    _check_reads_reviews_only(statements[0])
    return statements[0]


def _check_reads_reviews_only(query: exp.Query) -> None:
    """Reject queries that read anything but the table `reviews` (or their own CTEs).

    A selection describes which reviews to use; DuckDB table functions such as `read_csv`
    would otherwise read arbitrary local files into the channels.
    """
    cte_names = {cte.alias_or_name for cte in query.find_all(exp.CTE)}
    for table in query.find_all(exp.Table):
        if isinstance(table.this, exp.Func) or not table.name:
            raise UserError(f"the query may read only the table {TABLE}, not "
                            f"{table.sql(dialect='trino')}")
        if table.name != TABLE and table.name not in cte_names:
            raise UserError(f"the query may read only the table {TABLE}, not {table.name}")


def rename_table(sql: str, table: str) -> str:
    """Return `sql` with every read of the table `reviews` renamed to `table` (Trino SQL).

    Common table expressions named `reviews` are left alone. The text is regenerated by
    sqlglot, so its layout may differ from the input.
    """
    query = parse_query(sql)
    cte_names = {cte.alias_or_name for cte in query.find_all(exp.CTE)}
    replacement = exp.to_table(_table_sql(table), dialect="trino")
    for node in list(query.find_all(exp.Table)):
        if node.name == TABLE and not node.args.get("db") and TABLE not in cte_names:
            renamed = replacement.copy()
            renamed.set("alias", node.args.get("alias"))
            node.replace(renamed)
    return query.sql(dialect="trino")


def to_duckdb_sql(sql: str) -> str:
    """Translate a Trino query on `reviews` into DuckDB SQL that returns the same result.

    sqlglot maps the functions (approx_distinct, date_parse, regexp_like, element_at, rand,
    TABLESAMPLE BERNOULLI). Integer division needs the column types: Trino computes
    `7 / 2` as 3, DuckDB as 3.5. So the query is qualified against the canonical schema,
    and each `/` whose operands are both integers becomes DuckDB's `//`, which also truncates
    toward zero. DuckDB sums integers as HUGEINT where Trino returns BIGINT, so integer sums
    are cast to BIGINT. Unnamed result columns are named `_col0`, `_col1`, ... as Athena
    names them. Not translated: `from_big_endian_64` and other functions DuckDB lacks, and
    divisions whose operand types sqlglot cannot infer, which stay float divisions.
    """
    query = parse_query(sql)
    unnamed = _unnamed_outputs(query)
    try:
        qualified = qualify(query, schema=_TABLE_SCHEMA, dialect="trino", expand_stars=False,
                            quote_identifiers=False, identify=False)
    except OptimizeError as error:
        raise UserError(f"invalid query on table {TABLE}: {error}; "
                        f"columns: {', '.join(REVIEW_COLUMNS)}") from None
    typed = annotate_types(qualified, schema=_TABLE_SCHEMA, dialect="trino")
    for division in list(typed.find_all(exp.Div)):
        if _is_integer(division.this) and _is_integer(division.expression):
            division.replace(exp.IntDiv(this=division.this, expression=division.expression))
    for total in list(typed.find_all(exp.Sum)):
        if _is_integer(total.this):
            total.replace(exp.cast(total.copy(), exp.DataType.Type.BIGINT))
    _name_outputs(typed, unnamed)
    return typed.sql(dialect="duckdb")


def _is_integer(node: exp.Expression) -> bool:
    return node.type is not None and node.type.is_type(*exp.DataType.INTEGER_TYPES)


def _first_select(query: exp.Expression) -> exp.Select | None:
    # The first SELECT of a UNION, INTERSECT or EXCEPT names the result columns.
    while isinstance(query, exp.SetOperation):
        query = query.this
    return query if isinstance(query, exp.Select) else None


def _unnamed_outputs(query: exp.Query) -> set[int]:
    select = _first_select(query)
    if select is None:
        return set()
    return {i for i, projection in enumerate(select.expressions)
            if not isinstance(projection, (exp.Alias, exp.Column, exp.Star))}


def _name_outputs(query: exp.Expression, unnamed: set[int]) -> None:
    select = _first_select(query)
    if select is None:
        return
    for i, projection in enumerate(select.expressions):
        if i in unnamed and isinstance(projection, exp.Alias):
            projection.set("alias", exp.to_identifier(f"_col{i}"))
