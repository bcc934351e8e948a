"""Each kind of real-data quirk, on a small file written by the test."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

from review_nlp.data.records import SkipReport
from review_nlp.data.sources import open_reviews

HEADER = ("marketplace\tcustomer_id\treview_id\tproduct_id\tproduct_parent\tproduct_title\t"
          "product_category\tstar_rating\thelpful_votes\ttotal_votes\tvine\tverified_purchase\t"
          "review_headline\treview_body\treview_date")


def tsv_row(review_id: str, stars: str = "5", body: str = "Fine card.", *, vine: str = "N",
            verified: str = "Y", date: str = "2015-08-31", votes: str = "0") -> str:
    return "\t".join(["US", "100", review_id, "B00TEST", "200", "Gift card", "Gift Card", stars,
                      votes, votes, vine, verified, "Headline", body, date])


def write_tsv(path, rows, *, header=HEADER, ending="\n", bom=False):
    text = ending.join([header, *rows]) + ending
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def read_all(path, **options):
    source = open_reviews(path, **options)
    records = [record for batch in source.iter_batches(batch_size=2) for record in batch.to_pylist()]
    return records, source.report


def assert_counts_add_up(report: SkipReport) -> None:
    assert report.rows_read == report.rows_kept + sum(report.skipped.values())


def test_tsv_unbalanced_quotes_stay_in_row(tmp_path):
    rows = [tsv_row("R1", body='He said "great and'), tsv_row("R2", body="plain"),
            tsv_row("R3", body='"quoted start'), tsv_row("R4", body='ends with a quote"')]
    records, report = read_all(write_tsv(tmp_path / "quotes.tsv", rows))
    assert [r["review_id"] for r in records] == ["R1", "R2", "R3", "R4"]
    assert records[0]["review_body"] == 'He said "great and'
    assert records[2]["review_body"] == '"quoted start'
    assert report.skipped == {}


def test_tsv_wrong_field_count_skipped(tmp_path):
    rows = [tsv_row("R1"), "US\t100\tR2\tshort row", tsv_row("R3") + "\textra", tsv_row("R4")]
    path = write_tsv(tmp_path / "fields.tsv", rows)
    records, report = read_all(path)
    assert [r["review_id"] for r in records] == ["R1", "R4"]
    assert report.skipped == {"bad_field_count": 2}
    assert report.first_lines["bad_field_count"] == {str(path): [3, 4]}
    assert_counts_add_up(report)


def test_tsv_newline_in_body_not_merged(tmp_path):
    broken = tsv_row("R2", body="first half\nsecond half")
    records, report = read_all(write_tsv(tmp_path / "newline.tsv", [tsv_row("R1"), broken,
                                                                     tsv_row("R3")]))
    assert [r["review_id"] for r in records] == ["R1", "R3"]
    assert report.skipped == {"bad_field_count": 2}


@pytest.mark.parametrize("stars, reason", [
    ("", "missing_rating"), ("five", "invalid_rating"), ("4.5", "invalid_rating"),
    ("0", "rating_out_of_range"), ("6", "rating_out_of_range"), ("-1", "rating_out_of_range"),
])
def test_bad_star_rating_skipped(tmp_path, stars, reason):
    path = write_tsv(tmp_path / "stars.tsv", [tsv_row("R1"), tsv_row("R2", stars=stars)])
    records, report = read_all(path)
    assert [r["review_id"] for r in records] == ["R1"]
    assert report.skipped == {reason: 1}
    assert report.first_lines[reason] == {str(path): [3]}


def test_float_star_rating_accepted(tmp_path):
    records, report = read_all(write_tsv(tmp_path / "float.tsv", [tsv_row("R1", stars="4.0")]))
    assert records[0]["star_rating"] == 4
    assert report.skipped == {}


def test_unrated_rows_kept_without_requirement(tmp_path):
    rows = [tsv_row("R1", stars=""), tsv_row("R2", stars="7"), tsv_row("R3", stars="x"),
            tsv_row("R4", stars="3")]
    records, report = read_all(write_tsv(tmp_path / "unrated.tsv", rows), require_rating=False)
    assert [(r["review_id"], r["star_rating"]) for r in records] == [("R1", None), ("R4", 3)]
    assert report.skipped == {"rating_out_of_range": 1, "invalid_rating": 1}


def test_empty_review_text_skipped(tmp_path):
    rows = [tsv_row("R1", body=""), tsv_row("R2", body="   "), tsv_row("R3", body="<br />"),
            tsv_row("R4")]
    records, report = read_all(write_tsv(tmp_path / "empty.tsv", rows))
    assert [r["review_id"] for r in records] == ["R4"]
    assert report.skipped == {"missing_text": 3}


def test_missing_text_field_in_json_skipped(tmp_path):
    path = tmp_path / "reviews.jsonl"
    path.write_text(json.dumps({"overall": 5.0, "asin": "B1", "unixReviewTime": 0}) + "\n"
                    + json.dumps({"overall": 4.0, "reviewText": "ok", "asin": "B1"}) + "\n")
    records, report = read_all(path)
    assert [r["review_body"] for r in records] == ["ok"]
    assert report.skipped == {"missing_text": 1}
    assert report.first_lines["missing_text"] == {str(path): [1]}


def test_html_in_text_becomes_plain(tmp_path):
    body = ("Great&#34;card&#34;<br /><br />Would buy again &amp; again.<BR>"
            "<b>Bold</b> &lt;b&gt; stays, a < b stays, <3")
    records, _ = read_all(write_tsv(tmp_path / "html.tsv", [tsv_row("R1", body=body)]))
    assert records[0]["review_body"] == ('Great"card"\n\nWould buy again & again.\n'
                                         "Bold <b> stays, a < b stays, <3")


def test_byte_order_mark_on_header(tmp_path):
    records, report = read_all(write_tsv(tmp_path / "bom.tsv", [tsv_row("R1")], bom=True))
    assert records[0]["marketplace"] == "US"
    assert report.rows_kept == 1


def test_byte_order_mark_on_csv_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfId,Score,Text\n1,5,Good\n")
    records, _ = read_all(path, text_column="Text", rating_column="Score", id_column="Id")
    assert records[0]["review_id"] == "1"


def test_trailing_blank_lines_not_malformed(tmp_path):
    path = write_tsv(tmp_path / "blank.tsv", [tsv_row("R1"), tsv_row("R2"), "", ""])
    records, report = read_all(path)
    assert len(records) == 2
    assert report.skipped == {}
    assert report.blank_lines == 2
    assert report.rows_read == 2


def test_crlf_line_endings(tmp_path):
    path = write_tsv(tmp_path / "crlf.tsv", [tsv_row("R1"), tsv_row("R2")], ending="\r\n")
    records, report = read_all(path)
    assert [r["review_date"].isoformat() for r in records] == ["2015-08-31", "2015-08-31"]
    assert report.skipped == {}


@pytest.mark.parametrize("written, expected", [
    ("Y", True), ("N", False), ("y", True), ("true", True), ("False", False), ("1", True),
    ("0", False), ("", None),
])
def test_boolean_spellings(tmp_path, written, expected):
    records, _ = read_all(write_tsv(tmp_path / "flags.tsv",
                                    [tsv_row("R1", vine=written, verified=written)]))
    assert records[0]["vine"] is expected
    assert records[0]["verified_purchase"] is expected


def test_invalid_boolean_skipped(tmp_path):
    records, report = read_all(write_tsv(tmp_path / "flag.tsv",
                                         [tsv_row("R1", vine="maybe"), tsv_row("R2")]))
    assert [r["review_id"] for r in records] == ["R2"]
    assert report.skipped == {"invalid_boolean": 1}


def test_invalid_date_and_votes_skipped(tmp_path):
    rows = [tsv_row("R1", date="2015-13-45"), tsv_row("R2", votes="many"), tsv_row("R3")]
    records, report = read_all(write_tsv(tmp_path / "values.tsv", rows))
    assert [r["review_id"] for r in records] == ["R3"]
    assert report.skipped == {"invalid_date": 1, "invalid_number": 1}


def test_duplicate_texts_dropped_after_first(tmp_path):
    lines = [json.dumps({"overall": 5.0, "reviewText": text, "asin": asin, "reviewerID": "U1",
                         "unixReviewTime": 1441324800})
             for text, asin in [("Great product", "B1"), ("Great product", "B2"),
                                ("Other", "B1"), ("Great product", "B3")]]
    path = tmp_path / "five_core.json"
    path.write_text("\n".join(lines) + "\n")
    records, report = read_all(path, drop_duplicate_texts=True)
    assert [(r["review_body"], r["product_id"]) for r in records] == [
        ("Great product", "B1"), ("Other", "B1")]
    assert report.skipped == {"duplicate_text": 2}
    assert report.first_lines["duplicate_text"] == {str(path): [2, 4]}
    assert_counts_add_up(report)


def test_duplicates_kept_by_default(tmp_path):
    rows = [tsv_row("R1", body="same"), tsv_row("R2", body="same")]
    records, _ = read_all(write_tsv(tmp_path / "dupes.tsv", rows))
    assert len(records) == 2


def test_invalid_utf8_line_skipped(tmp_path):
    path = tmp_path / "encoding.tsv"
    path.write_bytes((HEADER + "\n" + tsv_row("R1") + "\n").encode()
                     + tsv_row("R2", body="caf\xe9").encode("latin-1") + b"\n"
                     + (tsv_row("R3") + "\n").encode())
    records, report = read_all(path)
    assert [r["review_id"] for r in records] == ["R1", "R3"]
    assert report.skipped == {"invalid_encoding": 1}


def test_invalid_json_lines_skipped(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write('{"rating": 5, "text": "fine", "asin": "B1", "timestamp": 1588687728923}\n')
        handle.write('{"rating": 4, "text": "cut off\n')
        handle.write("[1, 2]\n\n")
    records, report = read_all(path)
    assert [r["review_body"] for r in records] == ["fine"]
    assert report.skipped == {"invalid_json": 2}
    assert report.first_lines["invalid_json"] == {str(path): [2, 3]}
    assert report.blank_lines == 1


def test_csv_quoted_newline_stays_one_record(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_text('id,text,stars\n1,"two\nlines, one review",5\n2,"say ""hi""",4\n3,x,9\n')
    records, report = read_all(path, text_column="text", rating_column="stars", id_column="id")
    assert [r["review_body"] for r in records] == ["two\nlines, one review", 'say "hi"']
    assert report.first_lines["rating_out_of_range"] == {str(path): [5]}


def test_csv_wrong_field_count_skipped(tmp_path):
    path = tmp_path / "fields.csv"
    path.write_text("0,good one,5\n1,too,many,fields,4\n2,short\n3,fine,3\n")
    records, report = read_all(path, text_column="1", rating_column="2", id_column="0")
    assert [r["review_id"] for r in records] == ["0", "3"]
    assert report.skipped == {"bad_field_count": 2}
    assert report.first_lines["bad_field_count"] == {str(path): [2, 3]}


def test_csv_runaway_quote_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr("review_nlp.data.csvfile.MAX_FIELD_CHARS", 64)
    limit_before = csv.field_size_limit(64)
    path = tmp_path / "runaway.csv"
    path.write_text("0,fine,5\n1,\"never closed,5\n" + "2,filler text here,4\n" * 10)
    try:
        records, report = read_all(path, text_column="1", rating_column="2", id_column="0")
    finally:
        csv.field_size_limit(limit_before)
    assert records[0]["review_id"] == "0"
    assert report.skipped["invalid_csv"] >= 1
    assert report.first_lines["invalid_csv"][str(path)][0] == 2
    assert_counts_add_up(report)


def test_csv_long_review_accepted(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("0,\"" + "word " * 60000 + "\",5\n")
    records, report = read_all(path, text_column="1", rating_column="2", id_column="0")
    assert len(records[0]["review_body"]) == len("word " * 60000) - 1
    assert report.skipped == {}
