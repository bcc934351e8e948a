"""Reading every layout into canonical batches: the real review files, Parquet and bad input."""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from review_nlp.data.records import REVIEW_SCHEMA
from review_nlp.data.sources import detect_format, open_reviews
from review_nlp.errors import DataError, UserError

GIFT_CARD = "amazon_reviews_us_Gift_Card_v1_00.head.tsv"
GIFT_CARD_STARS = {1: 54, 2: 14, 3: 33, 4: 85, 5: 1266}
MARC_COLUMNS = {"text_column": "1", "rating_column": "2", "id_column": "0"}
EPOCH = dt.date(1970, 1, 1)


def read_table(source, batch_size=10000) -> pa.Table:
    return pa.Table.from_batches(list(source.iter_batches(batch_size)), schema=REVIEW_SCHEMA)


def star_counts(table: pa.Table) -> dict[int, int]:
    return dict(sorted(collections.Counter(table.column("star_rating").to_pylist()).items()))


def assert_counts_add_up(report) -> None:
    assert report.rows_read == report.rows_kept + sum(report.skipped.values())


@pytest.mark.parametrize("name, expected", [
    ("a.tsv", "tsv"), ("a.TSV.gz", "tsv"), ("a.csv", "csv"), ("a.csv.gz", "csv"),
    ("a.json", "json"), ("a.jsonl.gz", "json"), ("a.json.gz", "json"), ("a.ndjson", "json"),
    ("part-0.snappy.parquet", "parquet"), ("a.xml", None), ("part-00000", None),
])
def test_detect_format(name, expected):
    assert detect_format(name) == expected


def test_gift_card_tsv(reviews_dir):
    source = open_reviews(reviews_dir / GIFT_CARD)
    table = read_table(source, batch_size=500)
    assert table.num_rows == 1452
    assert star_counts(table) == GIFT_CARD_STARS
    assert source.report.rows_read == 1452
    assert source.report.skipped == {}
    assert source.report.blank_lines == 2
    assert set(table.column("product_category").to_pylist()) == {"Gift Card"}
    assert not any("<br" in text for text in table.column("review_body").to_pylist())


def test_gift_card_tsv_gz(reviews_dir, tmp_path):
    path = tmp_path / "gift_card.tsv.gz"
    with open(reviews_dir / GIFT_CARD, "rb") as plain, gzip.open(path, "wb") as packed:
        shutil.copyfileobj(plain, packed)
    table = read_table(open_reviews(path))
    assert table.num_rows == 1452
    assert star_counts(table) == GIFT_CARD_STARS


def test_sample_us_tsv(reviews_dir):
    source = open_reviews(reviews_dir / "sample_us.tsv")
    table = read_table(source)
    assert table.num_rows == 49
    assert star_counts(table) == {1: 5, 2: 2, 3: 5, 4: 4, 5: 33}
    assert table.column("year").to_pylist()[0] == table.column("review_date")[0].as_py().year


def test_mcauley_2018_json_gz(reviews_dir):
    source = open_reviews(reviews_dir / "mcauley2018_All_Beauty_5.json.gz")
    table = read_table(source)
    report = source.report
    assert report.rows_read == 5269
    assert report.skipped == {"missing_text": 5}
    assert table.num_rows == 5264
    assert_counts_add_up(report)
    assert len(set(table.column("review_id").to_pylist())) == table.num_rows
    assert table.column("review_id")[0].as_py() == "mcauley2018_All_Beauty_5:1"
    assert table.column("verified_purchase")[0].as_py() is True


def test_mcauley_2018_deduplicated(reviews_dir):
    path = reviews_dir / "mcauley2018_All_Beauty_5.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        texts = {json.loads(line).get("reviewText") for line in handle}
    distinct = len({text.strip() for text in texts if text and text.strip()})
    source = open_reviews(path, drop_duplicate_texts=True)
    table = read_table(source)
    assert table.num_rows == distinct
    assert source.report.skipped["duplicate_text"] == 5264 - distinct
    assert_counts_add_up(source.report)


def test_marc_headerless_csv(reviews_dir):
    source = open_reviews(reviews_dir / "marc_en_train.csv", **MARC_COLUMNS)
    table = read_table(source)
    assert table.num_rows == 12458
    assert source.report.rows_read == 12458
    assert table.column("review_id")[0].as_py() == "0"
    assert all(2400 < count < 2600 for count in star_counts(table).values())


def test_finefood_csv_with_bom(reviews_dir):
    source = open_reviews(reviews_dir / "finefood_head1000.csv", text_column="Text",
                          rating_column="Score", id_column="Id")
    table = read_table(source)
    assert table.num_rows == 1000
    assert star_counts(table) == {1: 98, 2: 47, 3: 75, 4: 138, 5: 642}
    assert table.column("review_id")[0].as_py() == "1"
    assert_counts_add_up(source.report)


def test_batches_bounded_and_lazy(reviews_dir):
    source = open_reviews(reviews_dir / "marc_en_train.csv", **MARC_COLUMNS)
    batches = source.iter_batches(batch_size=100)
    first = next(batches)
    assert first.num_rows == 100
    assert first.schema == REVIEW_SCHEMA
    assert source.report.rows_read == 100
    assert max(batch.num_rows for batch in batches) == 100


def write_pds_parquet(reviews_dir, root, *, day_count=True):
    """Write Gift_Card rows and sample_us rows as two hive partitions of pds-style Parquet."""
    for name, category in [(GIFT_CARD, "Gift_Card"), ("sample_us.tsv", "Sample")]:
        table = read_table(open_reviews(reviews_dir / name)).drop_columns(["product_category"])
        if day_count:
            days = [(day - EPOCH).days for day in table.column("review_date").to_pylist()]
            table = table.set_column(table.schema.get_field_index("review_date"), "review_date",
                                     pa.array(days, type=pa.int64()))
        folder = root / f"product_category={category}"
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "part-0.parquet")
    (root / "_SUCCESS").write_bytes(b"")


def test_parquet_hive_day_counts(reviews_dir, tmp_path):
    write_pds_parquet(reviews_dir, tmp_path / "parquet")
    source = open_reviews(tmp_path / "parquet")
    table = read_table(source, batch_size=300)
    assert source.format == "parquet"
    assert table.num_rows == 1452 + 49
    categories = collections.Counter(table.column("product_category").to_pylist())
    assert categories == {"Gift_Card": 1452, "Sample": 49}
    assert table.column("review_date")[0].as_py() == dt.date(2015, 8, 31)
    assert table.column("year")[0].as_py() == 2015
    assert source.report.files[0].endswith("product_category=Gift_Card/part-0.parquet")


def test_parquet_date_column(reviews_dir, tmp_path):
    write_pds_parquet(reviews_dir, tmp_path / "parquet", day_count=False)
    table = read_table(open_reviews(tmp_path / "parquet" / "product_category=Sample"
                                    / "part-0.parquet"))
    assert table.num_rows == 49
    assert table.column("review_date").type == pa.date32()
    assert star_counts(table) == {1: 5, 2: 2, 3: 5, 4: 4, 5: 33}


def test_parquet_quirks_counted(tmp_path):
    table = pa.table({"review_id": ["R1", "R2", "R3"], "review_body": ["ok", "", "fine"],
                      "star_rating": [5, 3, 9]})
    pq.write_table(table, tmp_path / "reviews.parquet")
    source = open_reviews(tmp_path / "reviews.parquet")
    assert read_table(source).column("review_id").to_pylist() == ["R1"]
    assert source.report.skipped == {"missing_text": 1, "rating_out_of_range": 1}
    assert source.report.first_lines["rating_out_of_range"] == {
        str(tmp_path / "reviews.parquet"): [3]}


def test_folder_read_in_sorted_order(tmp_path):
    for name, review_id in [("b.csv", "B"), ("a.csv", "A"), ("c/d.csv", "D")]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(f"id,text,stars\n{review_id},good,5\n")
    source = open_reviews(tmp_path, text_column="text", rating_column="stars", id_column="id")
    assert read_table(source).column("review_id").to_pylist() == ["A", "B", "D"]


def test_format_override(tmp_path):
    path = tmp_path / "part-00000"
    path.write_text('{"rating": 5, "text": "great", "asin": "B1"}\n')
    assert read_table(open_reviews(path, format="jsonl")).num_rows == 1


def test_missing_file_names_path(tmp_path):
    with pytest.raises(DataError, match="not found") as raised:
        open_reviews(tmp_path / "nope.tsv")
    assert raised.value.path == str(tmp_path / "nope.tsv")


def test_unknown_column_lists_available(reviews_dir):
    with pytest.raises(DataError) as raised:
        open_reviews(reviews_dir / "finefood_head1000.csv", text_column="Body",
                     rating_column="Score")
    message = str(raised.value)
    assert "text_column='Body'" in message
    assert "'Text'" in message
    assert "'Score'" in message


def test_csv_position_out_of_range(reviews_dir):
    with pytest.raises(DataError, match="out of range") as raised:
        open_reviews(reviews_dir / "marc_en_train.csv", text_column="5", rating_column="2")
    assert "positions run from 0 to 2" in str(raised.value)


def test_csv_without_rating_column(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_text("review_body\nnice\n")
    with pytest.raises(DataError, match="rating_column"):
        open_reviews(path)
    table = read_table(open_reviews(path, require_rating=False))
    assert table.column("star_rating").to_pylist() == [None]


def test_unknown_format_rejected(tmp_path):
    (tmp_path / "reviews.xml").write_text("<reviews/>")
    with pytest.raises(UserError, match="unknown file format of reviews.xml"):
        open_reviews(tmp_path / "reviews.xml")


def test_mixed_folder_rejected(tmp_path):
    (tmp_path / "a.csv").write_text("text,star_rating\nx,5\n")
    (tmp_path / "b.tsv").write_text("x\n")
    with pytest.raises(UserError, match="mixes file formats"):
        open_reviews(tmp_path)


def test_bad_format_name_rejected(tmp_path):
    (tmp_path / "a.csv").write_text("text,star_rating\nx,5\n")
    with pytest.raises(UserError, match="format='xlsx' must be one of"):
        open_reviews(tmp_path / "a.csv", format="xlsx")


def test_column_options_rejected_for_json(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"rating": 5, "text": "x"}\n')
    with pytest.raises(UserError, match="TSV and CSV files only"):
        open_reviews(tmp_path / "a.jsonl", text_column="text")


def test_json_array_rejected(tmp_path):
    (tmp_path / "a.json").write_text('[{"rating": 5, "text": "x"}]\n')
    with pytest.raises(DataError, match="JSON array"):
        open_reviews(tmp_path / "a.json")


def test_parquet_without_text_rejected(tmp_path):
    pq.write_table(pa.table({"stars": [5]}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match="no review_body column; available columns: stars"):
        read_table(open_reviews(tmp_path / "a.parquet"))


def test_mcauley_2023_fields(tmp_path):
    review = {"rating": 4.0, "title": "Nice", "text": "Works &amp; fits", "asin": "B01",
              "parent_asin": "B00", "user_id": "U1", "timestamp": 1588687728923,
              "verified_purchase": True, "helpful_vote": 2, "images": []}
    path = tmp_path / "All_Beauty.jsonl"
    path.write_text(json.dumps(review) + "\n")
    record = read_table(open_reviews(path)).to_pylist()[0]
    assert record["star_rating"] == 4
    assert record["review_headline"] == "Nice"
    assert record["review_body"] == "Works & fits"
    assert record["product_id"] == "B01"
    assert record["product_parent"] == "B00"
    assert record["customer_id"] == "U1"
    assert record["review_date"] == dt.date(2020, 5, 5)
    assert record["verified_purchase"] is True
    assert record["helpful_votes"] == 2
    assert record["review_id"] == "All_Beauty:1"


def test_mcauley_2014_helpful_pair(tmp_path):
    review = {"overall": 2.0, "reviewText": "Meh", "summary": "Meh", "asin": "B1",
              "reviewerID": "U1", "unixReviewTime": 1252800000, "helpful": [2, 3]}
    path = tmp_path / "reviews_Books_5.json"
    path.write_text(json.dumps(review) + "\n")
    record = read_table(open_reviews(path)).to_pylist()[0]
    assert record["helpful_votes"] == 2
    assert record["total_votes"] == 3
    assert record["review_date"] == dt.date(2009, 9, 13)


def test_mcauley_2018_vote_with_comma(tmp_path):
    review = {"overall": 5.0, "reviewText": "Great", "asin": "B1", "vote": "1,234"}
    path = tmp_path / "reviews.json"
    path.write_text(json.dumps(review) + "\n")
    assert read_table(open_reviews(path)).column("helpful_votes").to_pylist() == [1234]


def test_headerless_tsv_in_pds_order(reviews_dir, tmp_path):
    lines = (reviews_dir / "sample_us.tsv").read_text(encoding="utf-8").splitlines()[1:]
    path = tmp_path / "no_header.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = read_table(open_reviews(path, header=False))
    assert table.num_rows == 49
    assert star_counts(table) == {1: 5, 2: 2, 3: 5, 4: 4, 5: 33}


def test_csv_positions_with_header(reviews_dir):
    source = open_reviews(reviews_dir / "finefood_head1000.csv", text_column="9",
                          rating_column="6", id_column="0", header=True)
    table = read_table(source)
    assert table.num_rows == 1000
    assert table.column("review_id")[0].as_py() == "1"
