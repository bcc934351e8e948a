"""Storage helpers and review sources on S3, against moto (in-process and as a local server)."""

from __future__ import annotations

import collections
import gzip
import io
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from review_nlp.data.sources import open_reviews
from review_nlp.data.storage import (
    download_prefix, is_s3_uri, list_files, new_session, open_binary, split_s3_uri,
    upload_file, upload_folder)
from review_nlp.errors import DataError, UserError

BUCKET = "reviews-bucket"
GIFT_CARD = "amazon_reviews_us_Gift_Card_v1_00.head.tsv"


@pytest.fixture
def s3():
    with mock_aws():
        client = new_session().client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client


def put(client, key: str, body: bytes) -> str:
    client.put_object(Bucket=BUCKET, Key=key, Body=body)
    return f"s3://{BUCKET}/{key}"


def gzipped(path) -> bytes:
    buffer = io.BytesIO()
    with open(path, "rb") as plain, gzip.GzipFile(fileobj=buffer, mode="wb") as packed:
        shutil.copyfileobj(plain, packed)
    return buffer.getvalue()


def star_counts(source) -> dict[int, int]:
    counts = collections.Counter()
    for batch in source.iter_batches(batch_size=400):
        counts.update(batch.column("star_rating").to_pylist())
    return dict(sorted(counts.items()))


def test_split_s3_uri():
    assert split_s3_uri("s3://bucket/a/b.tsv") == ("bucket", "a/b.tsv")
    assert split_s3_uri("s3://bucket") == ("bucket", "")
    assert is_s3_uri("s3://bucket/x")
    assert not is_s3_uri("/data/s3/x")


@pytest.mark.parametrize("uri", ["s3:///key", "/local/path"])
def test_split_s3_uri_rejects(uri):
    with pytest.raises(UserError, match="invalid S3 URI"):
        split_s3_uri(uri)


def test_list_files_prefix_sorted_without_hidden(s3):
    for key in ["data/b.tsv", "data/a.tsv", "data/sub/c.tsv", "data/_SUCCESS", "data/.crc",
                "data/", "database/other.tsv"]:
        put(s3, key, b"x")
    assert list_files(f"s3://{BUCKET}/data") == [
        f"s3://{BUCKET}/data/a.tsv", f"s3://{BUCKET}/data/b.tsv", f"s3://{BUCKET}/data/sub/c.tsv"]
    assert len(list_files(f"s3://{BUCKET}/data/", include_hidden=True)) == 5


def test_list_files_single_object(s3):
    uri = put(s3, "data/a.tsv", b"x")
    assert list_files(uri) == [uri]


def test_list_files_missing_prefix(s3):
    with pytest.raises(DataError, match="no files found") as raised:
        list_files(f"s3://{BUCKET}/absent/")
    assert raised.value.path == f"s3://{BUCKET}/absent/"


def test_list_files_missing_bucket(s3):
    with pytest.raises(DataError, match="NoSuchBucket"):
        list_files("s3://no-such-bucket/data/")


def test_open_binary_streams_gzip(s3):
    uri = put(s3, "lines.txt.gz", gzip.compress(b"one\r\ntwo\rstill two\nthree"))
    with open_binary(uri, decompress=True) as stream:
        assert list(stream) == [b"one\r\n", b"two\rstill two\n", b"three"]


def test_open_binary_missing_object(s3):
    with pytest.raises(DataError, match="file not found"):
        with open_binary(f"s3://{BUCKET}/absent.tsv"):
            pass


def test_upload_and_download_folder(s3, tmp_path):
    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    (source / "weights.safetensors").write_bytes(b"w")
    (source / "sub" / "vocab.txt").write_text("a\nb\n")
    uploaded = upload_folder(source, f"s3://{BUCKET}/models/run-1/")
    assert uploaded == [f"s3://{BUCKET}/models/run-1/sub/vocab.txt",
                        f"s3://{BUCKET}/models/run-1/weights.safetensors"]
    paths = download_prefix(f"s3://{BUCKET}/models/run-1", tmp_path / "copy")
    assert sorted(p.relative_to(tmp_path / "copy").as_posix() for p in paths) == [
        "sub/vocab.txt", "weights.safetensors"]
    assert (tmp_path / "copy" / "sub" / "vocab.txt").read_text() == "a\nb\n"


def test_upload_file_needs_object_key(s3, tmp_path):
    (tmp_path / "a.txt").write_text("a")
    with pytest.raises(UserError, match="expected s3://bucket/key"):
        upload_file(tmp_path / "a.txt", f"s3://{BUCKET}/folder/")
    assert upload_file(tmp_path / "a.txt", f"s3://{BUCKET}/a.txt") == f"s3://{BUCKET}/a.txt"


def test_s3_tsv_gz_source(s3, reviews_dir):
    uri = put(s3, "tsv/gift_card.tsv.gz", gzipped(reviews_dir / GIFT_CARD))
    source = open_reviews(uri)
    assert star_counts(source) == {1: 54, 2: 14, 3: 33, 4: 85, 5: 1266}
    assert source.report.blank_lines == 2
    assert source.report.files == [uri]


def test_s3_json_gz_source(s3, reviews_dir):
    body = (reviews_dir / "mcauley2018_All_Beauty_5.json.gz").read_bytes()
    source = open_reviews(put(s3, "json/all_beauty.json.gz", body))
    assert sum(star_counts(source).values()) == 5264
    assert source.report.rows_read == 5269


def test_s3_csv_source(s3, reviews_dir):
    uri = put(s3, "csv/marc_en_train.csv", (reviews_dir / "marc_en_train.csv").read_bytes())
    source = open_reviews(uri, text_column="1", rating_column="2", id_column="0")
    assert sum(star_counts(source).values()) == 12458


def test_s3_parquet_prefix(s3, tmp_path):
    for category, ids in [("Books", ["R1", "R2"]), ("Toys", ["R3"])]:
        buffer = io.BytesIO()
        pq.write_table(pa.table({"review_id": ids, "review_body": ["good"] * len(ids),
                                 "star_rating": [5] * len(ids),
                                 "review_date": pa.array([16678] * len(ids), pa.int32()),
                                 "year": [2015] * len(ids)}), buffer)
        put(s3, f"parquet/product_category={category}/part-0.snappy.parquet", buffer.getvalue())
    source = open_reviews(f"s3://{BUCKET}/parquet/")
    table = pa.Table.from_batches(list(source.iter_batches()))
    assert table.column("review_id").to_pylist() == ["R1", "R2", "R3"]
    assert table.column("product_category").to_pylist() == ["Books", "Books", "Toys"]
    assert str(table.column("review_date")[0].as_py()) == "2015-08-31"


def test_s3_folder_of_tsv_in_order(s3, reviews_dir):
    text = (reviews_dir / "sample_us.tsv").read_bytes()
    put(s3, "many/part-2.tsv", text)
    put(s3, "many/part-1.tsv", text)
    source = open_reviews(f"s3://{BUCKET}/many")
    assert sum(star_counts(source).values()) == 98
    assert source.report.files == [f"s3://{BUCKET}/many/part-1.tsv",
                                   f"s3://{BUCKET}/many/part-2.tsv"]


@pytest.fixture
def moto_server(monkeypatch):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    yield
    server.stop()


def test_endpoint_url_from_environment(moto_server, reviews_dir):
    client = new_session().client("s3")
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="sample_us.tsv",
                      Body=(reviews_dir / "sample_us.tsv").read_bytes())
    source = open_reviews(f"s3://{BUCKET}/sample_us.tsv")
    assert star_counts(source) == {1: 5, 2: 2, 3: 5, 4: 4, 5: 33}
