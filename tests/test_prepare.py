"""`prepare` on the real review files: channels whose counts add up, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from review_nlp.data.channels import read_channel
from review_nlp.data.prepare import PrepareOptions, prepare_channels
from review_nlp.data.selection import Selection
from review_nlp.data.vocabulary import read_vocab_txt
from review_nlp.errors import UserError

CHANNELS = ("train", "validation", "test")


def _prepare(reviews: Path, algorithm: str, out: Path, **options) -> dict:
    return prepare_channels(PrepareOptions(reviews=str(reviews), algorithm=algorithm,
                                           out=str(out), **options)).manifest


def _check_counts_add_up(manifest: dict, out: Path) -> None:
    skipped = manifest["skipped"]
    written = sum(manifest["records"].values())
    assert written == skipped["rows_read"] - skipped["rows_skipped"]
    for channel in CHANNELS:
        data = read_channel(out / channel)
        assert data.n_samples == manifest["records"][channel]
        assert data.feature_dim == manifest["feature_dim"]
        if data.labels is not None:
            assert set(np.unique(data.labels)) <= {1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.mark.parametrize("algorithm", ["ntm", "kmeans", "rating"])
def test_prepare_gift_card_tsv(reviews_dir, tmp_path, algorithm):
    out = tmp_path / "channels"
    manifest = _prepare(reviews_dir / "amazon_reviews_us_Gift_Card_v1_00.head.tsv", algorithm, out)

    assert manifest["algorithm"] == algorithm
    assert manifest["skipped"]["rows_read"] == 1452
    _check_counts_add_up(manifest, out)
    vocabulary = read_vocab_txt(out / "auxiliary" / "vocab.txt")
    assert len(vocabulary) == manifest["feature_dim"]
    assert json.loads((out / "manifest.json").read_text())["feature_dim"] == len(vocabulary)
    assert (out / "auxiliary" / "featurizer.json").is_file()


def test_prepare_mcauley_json_drops_repeated_texts(reviews_dir, tmp_path):
    out = tmp_path / "channels"
    manifest = _prepare(reviews_dir / "mcauley2018_All_Beauty_5.json.gz", "ntm", out)

    skipped = manifest["skipped"]
    assert skipped["rows_read"] == 5269
    assert skipped["skipped"]["duplicate_text"] >= 5269 - 1379 - 1
    _check_counts_add_up(manifest, out)


def test_prepare_marc_headerless_csv(reviews_dir, tmp_path):
    out = tmp_path / "channels"
    manifest = _prepare(reviews_dir / "marc_en_train.csv", "rating", out, text_column="1",
                        rating_column="2", id_column="0", header=False)

    assert manifest["skipped"]["rows_read"] == 12458
    _check_counts_add_up(manifest, out)


def test_prepare_split_keeps_test_texts_out_of_training(reviews_dir, tmp_path):
    out = tmp_path / "channels"
    manifest = _prepare(reviews_dir / "mcauley2018_AMAZON_FASHION_5.json", "ntm", out)

    train = read_channel(out / "train").features
    test = read_channel(out / "test").features
    train_rows = {tuple(row.indices) + tuple(row.data) for row in train}
    shared = [row for row in test if tuple(row.indices) + tuple(row.data) in train_rows]
    # identical texts were dropped before the split, so only distinct texts that happen to
    # share a bag of words can coincide
    assert len(shared) <= 0.05 * manifest["records"]["test"]


def test_prepare_selection_counts_unselected_rows(reviews_dir, tmp_path):
    out = tmp_path / "channels"
    manifest = _prepare(reviews_dir / "amazon_reviews_us_Gift_Card_v1_00.head.tsv", "kmeans", out,
                        selection=Selection(min_stars=1, max_stars=3))

    # 4- and 5-star reviews that survive de-duplication are read, then not selected
    assert manifest["skipped"]["skipped"]["not_selected"] > 1000
    _check_counts_add_up(manifest, out)
    labels = np.concatenate([read_channel(out / c).labels for c in CHANNELS])
    assert labels.max() <= 3


def test_prepare_rejects_existing_channels(reviews_dir, tmp_path):
    out = tmp_path / "channels"
    reviews = reviews_dir / "sample_us.tsv"
    _prepare(reviews, "ntm", out, min_df=1)
    before = sorted(p.name for p in out.iterdir())

    with pytest.raises(UserError, match="--overwrite"):
        _prepare(reviews, "ntm", out, min_df=1)
    assert sorted(p.name for p in out.iterdir()) == before

    manifest = _prepare(reviews, "kmeans", out, min_df=1, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["algorithm"] == "kmeans"
    assert manifest["algorithm"] == "kmeans"


def test_prepare_vocabulary_smaller_than_requested(reviews_dir, tmp_path):
    # the built-in NTM failed without a reason when min_df=0.2 left 6 words for 2,000
    with pytest.raises(UserError, match="min_df=0.2"):
        _prepare(reviews_dir / "amazon_reviews_us_Gift_Card_v1_00.head.tsv", "ntm",
                 tmp_path / "channels", vocab_size=200, min_df=0.2)
    assert not (tmp_path / "channels").exists()


def test_prepare_missing_file_names_it(tmp_path):
    with pytest.raises(UserError, match="no_such_file.tsv"):
        _prepare(tmp_path / "no_such_file.tsv", "ntm", tmp_path / "channels")


def test_prepare_unknown_column_names_it(reviews_dir, tmp_path):
    with pytest.raises(UserError, match="stars_given"):
        _prepare(reviews_dir / "marc_en_train.csv", "rating", tmp_path / "channels",
                 text_column="1", rating_column="stars_given", header=False)


def test_prepare_csv_content_type(reviews_dir, tmp_path):
    out = tmp_path / "channels"
    manifest = _prepare(reviews_dir / "sample_us.tsv", "kmeans", out, min_df=1, content_type="csv")

    assert manifest["content_type"].startswith("text/csv")
    assert any(p.suffix == ".csv" for p in (out / "train").iterdir())
    _check_counts_add_up(manifest, out)


def test_prepare_overwrite_keeps_foreign_files(reviews_dir, tmp_path):
    out = tmp_path / "channels"
    out.mkdir()
    (out / "precious.txt").write_text("mine")

    with pytest.raises(UserError, match="precious.txt"):
        _prepare(reviews_dir / "sample_us.tsv", "ntm", out, min_df=1, overwrite=True)
    assert (out / "precious.txt").read_text() == "mine"


def test_prepare_sql_must_return_review_columns(reviews_dir, tmp_path):
    with pytest.raises(UserError, match="review_id"):
        _prepare(reviews_dir / "sample_us.tsv", "ntm", tmp_path / "channels", min_df=1,
                 selection=Selection(sql="SELECT review_body, star_rating FROM reviews"))


def test_prepare_sql_reads_only_reviews(reviews_dir, tmp_path):
    sql = ("SELECT 'x' AS review_id, 5 AS star_rating, column0 AS review_body "
           "FROM read_csv('/etc/hostname', header=false)")
    with pytest.raises(UserError, match="only the table reviews"):
        _prepare(reviews_dir / "sample_us.tsv", "ntm", tmp_path / "channels",
                 selection=Selection(sql=sql))


def test_prepare_skips_empty_channels(reviews_dir, tmp_path):
    out = tmp_path / "channels"
    manifest = _prepare(reviews_dir / "sample_us.tsv", "rating", out, validation_ratio=0.0,
                        test_ratio=0.0)

    assert manifest["records"]["validation"] == 0
    assert not (out / "validation").exists()
    assert not (out / "test").exists()
    assert (out / "train").is_dir()


def test_prepare_csv_header_aliases(reviews_dir, tmp_path):
    # Amazon Fine Food export: Id, ..., Score, ..., Text with a UTF-8 BOM
    out = tmp_path / "channels"
    manifest = _prepare(reviews_dir / "finefood_head1000.csv", "ntm", out)

    assert manifest["skipped"]["rows_read"] == 1000
    _check_counts_add_up(manifest, out)


def test_prepare_on_athena_results(reviews_dir, tmp_path):
    """`prepare --engine athena`: the selection runs on Athena (moto) and becomes channels."""
    from moto import mock_aws
    from moto.athena.models import QueryResults, athena_backends
    from moto.core import DEFAULT_ACCOUNT_ID

    from review_nlp.data.sources import open_reviews
    from review_nlp.launcher.cli import main

    reviews = [row for batch in open_reviews(reviews_dir / "sample_us.tsv").iter_batches()
               for row in batch.to_pylist()]
    columns = [{"Name": name, "Label": name, "Type": kind, "CatalogName": "hive",
                "SchemaName": "", "TableName": "", "Precision": 0, "Scale": 0,
                "Nullable": "UNKNOWN", "CaseSensitive": kind == "varchar"}
               for name, kind in (("review_id", "varchar"), ("review_body", "varchar"),
                                  ("star_rating", "integer"))]
    rows = [{"Data": [{"VarCharValue": "review_id"}, {"VarCharValue": "review_body"},
                      {"VarCharValue": "star_rating"}]}]
    rows += [{"Data": [{"VarCharValue": r["review_id"]}, {"VarCharValue": r["review_body"]},
                       {"VarCharValue": str(r["star_rating"])}]} for r in reviews]
    out = tmp_path / "channels"
    with mock_aws():
        backend = athena_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
        backend.query_results_queue.append(QueryResults(rows=rows, column_info=columns))
        code = main(["prepare", "--engine", "athena", "--athena-database", "reviews_db",
                     "--athena-table", "amazon_reviews", "--athena-staging",
                     "s3://query-results/athena/", "--min-stars", "1", "--algorithm", "ntm",
                     "--out", str(out), "--min-df", "1"])
        queries = [execution.query for execution in backend.executions.values()]

    assert code == 0
    assert queries == ["SELECT *\nFROM reviews_db.amazon_reviews\nWHERE star_rating >= 1"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"]["rows_read"] == len(reviews)
    assert sum(manifest["records"].values()) == len(reviews) - manifest["skipped"]["rows_skipped"]
