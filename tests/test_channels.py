"""Channel folders: RecordIO and CSV shards, content types, detection, Pipe mode, manifest."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
import scipy.sparse as sp

from review_nlp.data.channels import (
    CSV,
    RECORDIO_PROTOBUF,
    ContentType,
    Manifest,
    channel_files,
    parse_content_type,
    read_channel,
    read_features,
    read_manifest,
    read_vocab_txt,
    write_channel,
    write_manifest,
    write_vocab_txt,
)
from review_nlp.data.recordio import write_matrix
from review_nlp.errors import DataError, UserError
from review_nlp.models.training import FeatureData


def _features(n_rows: int = 25, n_columns: int = 8) -> sp.csr_matrix:
    rng = np.random.default_rng(7)
    dense = rng.random((n_rows, n_columns)).astype(np.float32)
    dense[dense < 0.6] = 0
    dense[3] = 0
    dense[0, 0] = 1 / 3   # not exactly printable in few digits
    return sp.csr_matrix(dense)


LABELS = (np.arange(25) % 5 + 1).astype(np.float32)


@pytest.mark.parametrize("value, expected", [
    ("application/x-recordio-protobuf", ContentType(RECORDIO_PROTOBUF)),
    ("Application/X-RecordIO-Protobuf", ContentType(RECORDIO_PROTOBUF)),
    ("text/csv", ContentType(CSV)),
    ("text/csv;label_size=0", ContentType(CSV, 0)),
    ("text/csv; label_size=1", ContentType(CSV, 1)),
    ('text/csv; Label_Size="1"', ContentType(CSV, 1)),
])
def test_parse_content_type(value, expected):
    assert parse_content_type(value) == expected


@pytest.mark.parametrize("value, message", [
    ("application/json", "not supported"),
    ("text/csv;label_size=2", "must be 0 or 1"),
    ("text/csv;header=present", "unsupported parameter"),
    ("application/x-recordio-protobuf;label_size=0", "unsupported parameter"),
])
def test_parse_content_type_rejects(value, message):
    with pytest.raises(UserError, match=message):
        parse_content_type(value)


def test_content_type_str():
    assert str(parse_content_type("text/csv; label_size=0")) == "text/csv;label_size=0"
    assert str(parse_content_type("text/csv")) == "text/csv"


@pytest.mark.parametrize("with_labels", [False, True])
def test_recordio_channel_roundtrip(tmp_path, with_labels):
    features = _features()
    labels = LABELS if with_labels else None
    paths = write_channel(tmp_path / "train", features, labels, shard_rows=10)
    assert [path.name for path in paths] == ["part-00000.pbr", "part-00001.pbr",
                                             "part-00002.pbr"]
    data = read_channel(tmp_path / "train", RECORDIO_PROTOBUF)
    assert isinstance(data, FeatureData)
    assert (data.features != features).nnz == 0
    if with_labels:
        np.testing.assert_array_equal(data.labels, LABELS)
    else:
        assert data.labels is None


@pytest.mark.parametrize("content_type, with_labels", [
    ("text/csv;label_size=0", False),
    ("text/csv;label_size=1", True),
    ("text/csv", True),
])
def test_csv_channel_roundtrip(tmp_path, content_type, with_labels):
    features = _features()
    labels = LABELS if with_labels else None
    paths = write_channel(tmp_path / "train", features, labels, shard_rows=10,
                          content_type=content_type)
    assert paths[0].name == "part-00000.csv"
    first_line = paths[0].read_text().splitlines()[0]
    assert first_line.count(",") == 8 - 1 + with_labels
    read_type = "text/csv;label_size=1" if with_labels else content_type
    data = read_channel(tmp_path / "train", read_type)
    np.testing.assert_array_equal(data.features.toarray(), features.toarray())
    if with_labels:
        np.testing.assert_array_equal(data.labels, LABELS)


def test_csv_rows_are_plain_numbers(tmp_path):
    features = sp.csr_matrix(np.array([[0, 2, 0.5]], np.float32))
    write_channel(tmp_path / "train", features, np.array([4.0]), content_type=CSV)
    assert (tmp_path / "train" / "part-00000.csv").read_text() == "4,0,2,0.5\n"


def test_csv_label_conflicts_raise(tmp_path):
    with pytest.raises(ValueError, match="no label column"):
        write_channel(tmp_path / "a", _features(), LABELS, content_type="text/csv;label_size=0")
    with pytest.raises(ValueError, match="no labels were given"):
        write_channel(tmp_path / "b", _features(), None, content_type="text/csv;label_size=1")


@pytest.mark.parametrize("content_type", [RECORDIO_PROTOBUF, "text/csv;label_size=0"])
def test_content_type_detected(tmp_path, content_type):
    features = _features()
    write_channel(tmp_path / "train", features, shard_rows=10, content_type=content_type)
    data = read_channel(tmp_path / "train")
    np.testing.assert_array_equal(data.features.toarray(), features.toarray())


def test_dense_array_written_as_float32(tmp_path):
    dense = np.arange(12, dtype=np.float64).reshape(3, 4)
    write_channel(tmp_path / "train", dense)
    data = read_channel(tmp_path / "train")
    assert data.features.dtype == np.float32
    np.testing.assert_array_equal(data.features.toarray(), dense)


def test_rewrite_replaces_old_shards(tmp_path):
    write_channel(tmp_path / "train", _features(), shard_rows=5)
    paths = write_channel(tmp_path / "train", _features(), shard_rows=100)
    assert sorted(path.name for path in (tmp_path / "train").iterdir()) == ["part-00000.pbr"]
    assert len(paths) == 1


def test_empty_matrix_writes_one_empty_shard(tmp_path):
    paths = write_channel(tmp_path / "train", sp.csr_matrix((0, 6), dtype=np.float32))
    assert [path.stat().st_size for path in paths] == [0]
    data = read_channel(tmp_path / "train", feature_dim=6)
    assert data.features.shape == (0, 6)


def test_channel_files_skip_metadata(tmp_path):
    folder = tmp_path / "train"
    write_channel(folder, _features(), shard_rows=10)
    (folder / ".part-00000.pbr.crc").write_bytes(b"x")
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / "train.manifest").write_text("{}")
    (folder / "manifest.json").write_text("{}")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "data.pbr").write_bytes(b"junk")
    nested = folder / "2024" / "01"
    nested.mkdir(parents=True)
    with open(nested / "extra.pbr", "wb") as stream:
        write_matrix(stream, _features()[:2])
    names = [path.relative_to(folder).as_posix() for path in channel_files(folder)]
    assert names == ["2024/01/extra.pbr", "part-00000.pbr", "part-00001.pbr", "part-00002.pbr"]
    assert read_channel(folder).n_samples == 27


def test_missing_channel_raises(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_channel(tmp_path / "absent")


def test_feature_dim_mismatch_names_file(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    with open(folder / "a.pbr", "wb") as stream:
        write_matrix(stream, _features(n_columns=8))
    with open(folder / "b.pbr", "wb") as stream:
        write_matrix(stream, _features(n_columns=9))
    with pytest.raises(DataError) as error:
        read_channel(folder)
    assert error.value.path == str(folder / "b.pbr")
    assert "has 9 features but feature_dim is 8" in str(error.value)


def test_labels_in_some_files_raise(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    with open(folder / "a.pbr", "wb") as stream:
        write_matrix(stream, _features(), LABELS)
    with open(folder / "b.pbr", "wb") as stream:
        write_matrix(stream, _features())
    with pytest.raises(DataError, match="a.pbr has labels but b.pbr has none"):
        read_channel(folder)


@pytest.mark.parametrize("text, line, message", [
    ("1,2,3\n\n4,5,6\n7,x,9\n", 4, "'x' is not a number"),
    ("a,b,c\n1,2,3\n", 1, "without a header"),
    ("1,2,3\n4,5\n", 2, "has 2 columns but earlier rows have 3"),
    ("1,,3\n", 1, "'' is not a number"),
])
def test_csv_error_names_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "part-00000.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as error:
        read_features(path, CSV)
    assert (error.value.path, error.value.line) == (str(path), line)


def test_csv_windows_line_ends(tmp_path):
    path = tmp_path / "part-00000.csv"
    path.write_bytes(b"1,2,3\r\n4,5,6\r\n")
    features, labels = read_features(path, "text/csv;label_size=1")
    assert features.toarray().tolist() == [[2, 3], [5, 6]]
    assert labels.tolist() == [1, 4]


def test_binary_file_not_csv_raises(tmp_path):
    path = tmp_path / "part-00000.bin"
    path.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(DataError, match="neither RecordIO-protobuf nor UTF-8 CSV"):
        read_features(path)


def test_declared_recordio_on_csv_raises(tmp_path):
    path = tmp_path / "part-00000.pbr"
    path.write_text("1,2,3\n")
    with pytest.raises(DataError, match="not the RecordIO magic"):
        read_features(path, RECORDIO_PROTOBUF)


@pytest.mark.parametrize("content_type", [RECORDIO_PROTOBUF, "text/csv;label_size=1"])
def test_pipe_mode_fifo(tmp_path, content_type):
    # SageMaker's Pipe mode gives a FIFO such as /opt/ml/input/data/train_0.
    source = tmp_path / "source"
    write_channel(source, _features(), LABELS, content_type=content_type)
    payload = next(source.iterdir()).read_bytes()
    fifo = tmp_path / "train_0"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as pipe:
            for start in range(0, len(payload), 3):
                pipe.write(payload[start:start + 3])
                pipe.flush()

    writer = threading.Thread(target=feed)
    writer.start()
    detected = None if content_type == RECORDIO_PROTOBUF else content_type
    data = read_channel(fifo, detected)
    writer.join()
    np.testing.assert_array_equal(data.features.toarray(), _features().toarray())
    np.testing.assert_array_equal(data.labels, LABELS)


def test_vocab_txt_through_channels(tmp_path):
    path = tmp_path / "auxiliary" / "vocab.txt"
    write_vocab_txt(path, ["bad", "good"])
    assert read_vocab_txt(path, feature_dim=2) == ["bad", "good"]


def test_manifest_roundtrip(tmp_path):
    manifest = Manifest(
        algorithm="ntm", feature_dim=2000, records={"train": 5396, "validation": 675},
        featurizer={"kind": "counts"}, preprocessing={"seed": 0},
        skipped={"empty_after_preprocessing": 3254})
    path = write_manifest(tmp_path, manifest)
    assert path == tmp_path / "manifest.json"
    content = json.loads(path.read_text())
    assert content["records"] == {"train": 5396, "validation": 675}
    assert content["package_version"]
    assert content["created"].endswith("+00:00")
    assert read_manifest(tmp_path) == manifest


def test_manifest_keeps_unknown_keys(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"algorithm": "kmeans", "feature_dim": 10, "records": {},
                                "future_field": [1, 2]}))
    manifest = read_manifest(path)
    assert manifest.extra == {"future_field": [1, 2]}
    assert manifest.to_dict()["future_field"] == [1, 2]


@pytest.mark.parametrize("content, field", [
    ({"feature_dim": 10, "records": {}}, "algorithm"),
    ({"algorithm": "ntm", "feature_dim": "10", "records": {}}, "feature_dim"),
    ({"algorithm": "ntm", "feature_dim": 10, "records": []}, "records"),
])
def test_manifest_missing_or_mistyped_field(tmp_path, content, field):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError) as error:
        read_manifest(path)
    assert error.value.field == field
    assert error.value.path == str(path)


def test_manifest_invalid_json_names_line(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text('{\n  "algorithm": "ntm",\n  oops\n}')
    with pytest.raises(DataError) as error:
        read_manifest(path)
    assert error.value.line == 3
