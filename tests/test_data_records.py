"""The canonical record: schema, field parsers, the skip report and text deduplication."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from review_nlp.data.records import (
    REVIEW_COLUMNS, REVIEW_SCHEMA, RowRejected, SkipReport, batches_from_records, clean_text,
    date_from_epoch, deduplicate_texts, parse_bool, parse_count, parse_date, parse_rating,
    synthetic_review_id, to_record)

PDS_COLUMNS = ["marketplace", "customer_id", "review_id", "product_id", "product_parent",
               "product_title", "product_category", "star_rating", "helpful_votes",
               "total_votes", "vine", "verified_purchase", "review_headline", "review_body",
               "review_date", "year"]


def test_schema_matches_pds_columns():
    assert list(REVIEW_COLUMNS) == PDS_COLUMNS
    assert REVIEW_SCHEMA.field("star_rating").type == pa.int32()
    assert REVIEW_SCHEMA.field("review_date").type == pa.date32()
    assert REVIEW_SCHEMA.field("vine").type == pa.bool_()


@pytest.mark.parametrize("value, expected", [
    ("5", 5), (" 3 ", 3), ("4.0", 4), (4.0, 4), (1, 1), ("", None), (None, None),
])
def test_parse_rating_accepts(value, expected):
    assert parse_rating(value) == expected


@pytest.mark.parametrize("value, reason", [
    ("abc", "invalid_rating"), ("4.5", "invalid_rating"), (True, "invalid_rating"),
    ("nan", "invalid_rating"), ("0", "rating_out_of_range"), (6, "rating_out_of_range"),
])
def test_parse_rating_rejects(value, reason):
    with pytest.raises(RowRejected) as raised:
        parse_rating(value)
    assert raised.value.reason == reason


@pytest.mark.parametrize("value, expected", [("1,234", 1234), ("0", 0), (7, 7), ("", None)])
def test_parse_count(value, expected):
    assert parse_count(value) == expected


def test_parse_count_rejects_negative():
    with pytest.raises(RowRejected) as raised:
        parse_count("-2")
    assert raised.value.reason == "invalid_number"


@pytest.mark.parametrize("value, expected", [
    ("Y", True), ("n", False), ("TRUE", True), ("false", False), ("1", True), (0, False),
    (True, True), ("", None), (None, None), ("yes", True),
])
def test_parse_bool(value, expected):
    assert parse_bool(value) is expected


def test_parse_bool_rejects_other_text():
    with pytest.raises(RowRejected) as raised:
        parse_bool("2")
    assert raised.value.reason == "invalid_boolean"


@pytest.mark.parametrize("value, expected", [
    ("2015-08-31", dt.date(2015, 8, 31)), (16678, dt.date(2015, 8, 31)),
    (dt.date(2015, 8, 31), dt.date(2015, 8, 31)),
    (dt.datetime(2015, 8, 31, 12, 30), dt.date(2015, 8, 31)), ("", None),
])
def test_parse_date(value, expected):
    assert parse_date(value) == expected


def test_parse_date_rejects_text():
    with pytest.raises(RowRejected) as raised:
        parse_date("31/08/2015")
    assert raised.value.reason == "invalid_date"


def test_date_from_epoch_units():
    assert date_from_epoch(1441324800) == dt.date(2015, 9, 4)
    assert date_from_epoch(1588687728923, unit_seconds=0.001) == dt.date(2020, 5, 5)
    assert date_from_epoch(None) is None


def test_clean_text_html():
    assert clean_text("a<br />b<br/>c<br>d") == "a\nb\nc\nd"
    assert clean_text("&#34;quoted&#34; &amp; <i>styled</i>") == '"quoted" & styled'
    assert clean_text("  <br />  ") is None
    assert clean_text(None) is None


def test_to_record_fills_year_and_nulls():
    record = to_record({"review_id": "R1", "review_body": "Good", "star_rating": "5",
                        "review_date": "2015-08-31"})
    assert record["year"] == 2015
    assert record["marketplace"] is None
    assert record["star_rating"] == 5
    assert set(record) == set(REVIEW_COLUMNS)


def test_to_record_keeps_given_year():
    record = to_record({"review_id": "R1", "review_body": "Good", "star_rating": 5,
                        "review_date": 16678, "year": 2015})
    assert record["review_date"] == dt.date(2015, 8, 31)
    assert record["year"] == 2015


def test_to_record_missing_rating():
    fields = {"review_id": "R1", "review_body": "Good", "star_rating": ""}
    with pytest.raises(RowRejected) as raised:
        to_record(fields)
    assert raised.value.reason == "missing_rating"
    assert to_record(fields, require_rating=False)["star_rating"] is None


def test_synthetic_review_id():
    assert synthetic_review_id("mcauley2018_All_Beauty_5.json.gz", 17) == \
        "mcauley2018_All_Beauty_5:17"
    assert synthetic_review_id("2023/part-1.jsonl", 3) == "2023/part-1:3"


def test_skip_report_counts_and_lines():
    report = SkipReport(files=["a.tsv"])
    report.add_kept()
    for line in range(2, 10):
        report.add_skipped("bad_field_count", "a.tsv", line)
    report.move_to_skipped("duplicate_text")
    assert report.rows_read == 9
    assert report.rows_kept == 0
    assert report.skipped == {"bad_field_count": 8, "duplicate_text": 1}
    assert report.first_lines["bad_field_count"]["a.tsv"] == [2, 3, 4, 5, 6]
    assert report.rows_read == report.rows_kept + sum(report.skipped.values())


def test_skip_report_serializes():
    report = SkipReport(files=["a.tsv"])
    report.add_skipped("missing_text", "a.tsv", 4)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["skipped"] == {"missing_text": 1}
    assert data["first_lines"] == {"missing_text": {"a.tsv": [4]}}
    assert "missing_text: 1 (first at a.tsv lines 4)" in report.summary()


def test_batches_from_records_sizes():
    records = [to_record({"review_id": f"R{i}", "review_body": "x", "star_rating": 3})
               for i in range(5)]
    batches = list(batches_from_records(records, batch_size=2))
    assert [batch.num_rows for batch in batches] == [2, 2, 1]
    assert all(batch.schema == REVIEW_SCHEMA for batch in batches)


def test_deduplicate_texts_across_batches():
    texts = ["a", "b", "a", "c", "b", "a"]
    records = [to_record({"review_id": str(i), "review_body": t, "star_rating": 5})
               for i, t in enumerate(texts)]
    report = SkipReport(rows_read=6, rows_kept=6)
    kept = list(deduplicate_texts(batches_from_records(records, 2), report))
    assert [r["review_id"] for b in kept for r in b.to_pylist()] == ["0", "1", "3"]
    assert report.skipped == {"duplicate_text": 3}
    assert report.rows_kept == 3
    assert report.rows_read == report.rows_kept + sum(report.skipped.values())
