"""RecordIO-protobuf: published byte vectors, round trips, framing errors, SDK interoperability."""

from __future__ import annotations

import io
import os
import struct
import threading

import numpy as np
import pytest
import scipy.sparse as sp

from review_nlp.data.recordio import (
    MAGIC,
    RECORD_FILE_DESCRIPTOR,
    BytesValue,
    RecordMessage,
    Tensor,
    decode_record,
    encode_dense_row,
    encode_label_record,
    encode_record,
    encode_sparse_row,
    frame,
    read_matrix,
    read_recordio,
    write_matrix,
    write_recordio,
)
from review_nlp.errors import DataError

# Published vectors, made with the protobuf package from the SageMaker SDK's record.proto.
SPARSE_PROTO = "0a1d0a0676616c756573121312110a080000803f00004040120202071a010a"
SPARSE_RECORDIO = "0a23d7ce1f000000" + SPARSE_PROTO + "00"
DENSE_PROTO = ("0a1a0a0676616c7565731210120e0a0c0000c03f000080410000604112120a0676616c756573"
               "120812060a040000803f")
KMEANS_RESPONSE = ("121b0a0f636c6f736573745f636c7573746572120812060a040000a040121f0a136469737461"
                   "6e63655f746f5f636c7573746572120812060a0400001242")
NTM_RESPONSE = "121d0a0d746f7069635f77656967687473120c120a0a080000803e0000403f"


def test_sparse_row_vector():
    payload = encode_sparse_row(np.array([1.0, 3.0], np.float32), [2, 7], feature_dim=10)
    assert payload.hex() == SPARSE_PROTO
    assert frame(payload).hex() == SPARSE_RECORDIO


def test_dense_row_with_label_vector():
    payload = encode_dense_row(np.array([1.5, 16, 14], np.float32), label=np.float32(1.0))
    assert payload.hex() == DENSE_PROTO
    assert len(payload) == 48
    assert frame(payload).hex() == "0a23d7ce30000000" + DENSE_PROTO


def test_kmeans_response_vector():
    payload = encode_label_record({"closest_cluster": [5.0], "distance_to_cluster": [36.5]})
    # Map entries may come in any order, so compare parsed messages first. This writer
    # serializes deterministically (sorted keys), which matches the published bytes.
    assert RecordMessage.FromString(payload) == RecordMessage.FromString(
        bytes.fromhex(KMEANS_RESPONSE))
    assert payload.hex() == KMEANS_RESPONSE
    decoded = decode_record(payload)
    assert decoded.features == {}
    assert decoded.label["closest_cluster"].values.tolist() == [5.0]
    assert decoded.label["distance_to_cluster"].values.tolist() == [36.5]


def test_ntm_response_vector():
    payload = encode_label_record({"topic_weights": [0.25, 0.75]})
    assert payload.hex() == NTM_RESPONSE
    assert decode_record(payload).label["topic_weights"].values.dtype == np.float32


def test_descriptor_equals_sdk_record_proto():
    record_pb2 = pytest.importorskip("sagemaker_training.record_pb2")
    from google.protobuf import descriptor_pb2
    sdk = descriptor_pb2.FileDescriptorProto()
    record_pb2.DESCRIPTOR.CopyToProto(sdk)
    assert sdk == RECORD_FILE_DESCRIPTOR


def _matrix(kind: str, dtype, n_rows: int = 7, n_columns: int = 11) -> np.ndarray:
    rng = np.random.default_rng(3)
    dense = rng.integers(-3, 9, size=(n_rows, n_columns)).astype(dtype)
    dense[dense < 3] = 0
    dense[2] = 0    # an empty row
    if dtype != np.int32:
        dense *= 0.5
    return sp.csr_matrix(dense) if kind == "sparse" else dense


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("with_labels", [False, True])
def test_matrix_roundtrip(kind, dtype, with_labels):
    matrix = _matrix(kind, dtype)
    labels = np.arange(1, 8).astype(dtype) if with_labels else None
    stream = io.BytesIO()
    assert write_matrix(stream, matrix, labels) == 7
    stream.seek(0)
    features, read_labels = read_matrix(stream)
    expected = matrix.toarray() if sp.issparse(matrix) else matrix
    assert features.dtype == np.float32
    assert features.shape == (7, 11)
    np.testing.assert_array_equal(features.toarray(), expected.astype(np.float32))
    if with_labels:
        np.testing.assert_array_equal(read_labels, labels.astype(np.float32))
    else:
        assert read_labels is None


@pytest.mark.parametrize("dtype, field", [(np.float32, "float32_tensor"),
                                          (np.float64, "float64_tensor"),
                                          (np.int32, "int32_tensor"),
                                          (np.int64, "int32_tensor")])
def test_tensor_type_follows_dtype(dtype, field):
    record = RecordMessage.FromString(encode_dense_row(np.array([1, 2], dtype=dtype)))
    assert record.features["values"].WhichOneof("value") == field


def test_unsupported_dtype_raises():
    with pytest.raises(ValueError, match="unsupported dtype float16"):
        encode_dense_row(np.array([1.0], np.float16))


def test_int64_outside_int32_raises():
    with pytest.raises(ValueError, match="int32 range"):
        encode_dense_row(np.array([2**40], np.int64))


def test_empty_sparse_rows_keep_width():
    matrix = sp.csr_matrix((3, 5), dtype=np.float32)
    stream = io.BytesIO()
    write_matrix(stream, matrix)
    decoded = [decode_record(payload) for payload in read_recordio(io.BytesIO(stream.getvalue()))]
    assert [record.features["values"].shape for record in decoded] == [(5,)] * 3
    assert all(record.features["values"].is_sparse for record in decoded)
    features, _ = read_matrix(stream.getvalue())
    assert features.shape == (3, 5)
    assert features.nnz == 0


def test_sparse_record_decodes_to_dense():
    payload = encode_sparse_row(np.array([1.0, 3.0], np.float32), [2, 7], feature_dim=10)
    tensor = decode_record(payload).features["values"]
    assert tensor.keys.tolist() == [2, 7]
    assert tensor.shape == (10,)
    assert tensor.to_dense().tolist() == [0, 0, 1, 0, 0, 0, 0, 3, 0, 0]


def test_sparse_tensor_and_bytes_decode():
    payload = encode_record(
        features={"values": Tensor(np.array([2.0], np.float64), np.array([1], np.uint64), (3,))},
        label={"values": np.array([4], np.int32)})
    record = RecordMessage.FromString(payload)
    record.uid = "row-1"
    record.features["raw"].bytes.value.append(b"\x00\x01")
    record.features["raw"].bytes.content_type = "application/octet-stream"
    decoded = decode_record(record.SerializeToString())
    assert decoded.uid == "row-1"
    assert decoded.metadata is None
    assert decoded.features["values"].values.dtype == np.float64
    assert decoded.features["raw"] == BytesValue([b"\x00\x01"], "application/octet-stream")
    assert decoded.label["values"].values.tolist() == [4]


def test_invalid_payload_raises_data_error():
    with pytest.raises(DataError, match="invalid aialgs.data.Record"):
        decode_record(b"\xff\xff\xff")


def test_empty_stream_has_no_records():
    assert list(read_recordio(io.BytesIO(b""))) == []
    features, labels = read_matrix(b"", feature_dim=4)
    assert features.shape == (0, 4)
    assert labels is None


def test_padding_to_four_bytes():
    for size in range(9):
        record = frame(b"x" * size)
        assert len(record) % 4 == 0
        assert record[8 + size:] == b"\x00" * (len(record) - 8 - size)
    stream = io.BytesIO(b"".join(frame(b"x" * size) for size in range(9)))
    assert list(read_recordio(stream)) == [b"x" * size for size in range(9)]


def test_cflag_bits_are_masked_from_length():
    # A whole record marked as the last part of a split record (cflag 3).
    payload = bytes.fromhex(SPARSE_PROTO)
    data = struct.pack("<II", MAGIC, (3 << 29) | len(payload)) + payload + b"\x00"
    assert list(read_recordio(io.BytesIO(data))) == [payload]


def test_split_record_parts_joined():
    # dmlc's writer cuts a payload at each aligned magic number and marks the parts
    # with cflag 1 (first), 2 (middle) and 3 (last).
    magic = struct.pack("<I", MAGIC)
    payload = b"abcd" + magic + b"efgh" + magic + b"ij"
    data = b"".join([
        struct.pack("<II", MAGIC, (1 << 29) | 4), b"abcd",
        struct.pack("<II", MAGIC, (2 << 29) | 4), b"efgh",
        struct.pack("<II", MAGIC, (3 << 29) | 2), b"ij\x00\x00",
        frame(b"next"),
    ])
    assert list(read_recordio(io.BytesIO(data))) == [payload, b"next"]


def test_bad_magic_names_record_and_offset():
    data = frame(b"first") + b"\x00" * 12
    with pytest.raises(DataError, match="record index 1 at byte 16 starts with 0x00000000"):
        list(read_recordio(io.BytesIO(data)))


@pytest.mark.parametrize("cut, message", [
    (3, "inside the header of record index 1"),
    (12, "inside record index 1"),
])
def test_truncated_stream_raises(cut, message):
    data = frame(b"first") + frame(b"second-record")[:cut]
    with pytest.raises(DataError, match=message):
        list(read_recordio(io.BytesIO(data)))


def test_reads_from_pipe_without_seeking():
    matrix = _matrix("sparse", np.float32, n_rows=300)
    data = io.BytesIO()
    write_matrix(data, matrix)
    read_end, write_end = os.pipe()

    def feed():
        # Small writes so that reads return short and must be continued.
        with os.fdopen(write_end, "wb", buffering=0) as pipe:
            view = data.getvalue()
            for start in range(0, len(view), 7):
                pipe.write(view[start:start + 7])

    writer = threading.Thread(target=feed)
    writer.start()
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        features, _ = read_matrix(pipe)
    writer.join()
    assert (features != matrix).nnz == 0


def _write_rows(*payloads: bytes) -> bytes:
    stream = io.BytesIO()
    for payload in payloads:
        write_recordio(stream, payload)
    return stream.getvalue()


def _sparse_record(keys: list[int], shape: list[int]) -> bytes:
    # Written field by field because encode_sparse_row rejects keys outside the shape.
    record = RecordMessage()
    tensor = record.features["values"].float32_tensor
    tensor.values.extend([1.0] * len(keys))
    tensor.keys.extend(keys)
    tensor.shape.extend(shape)
    return record.SerializeToString()


def test_key_beyond_feature_dim_names_record():
    data = _write_rows(_sparse_record([1], [4]), _sparse_record([4], [4]))
    with pytest.raises(DataError, match="record index 1 has key 4 but feature_dim is 4"):
        read_matrix(data)


def test_shapeless_sparse_record_width():
    data = _write_rows(_sparse_record([1], []), _sparse_record([3], []))
    features, _ = read_matrix(data, feature_dim=4)
    assert features.toarray().tolist() == [[0, 1, 0, 0], [0, 0, 0, 1]]
    with pytest.raises(DataError, match="record index 1 has key 3 but feature_dim is 3"):
        read_matrix(data, feature_dim=3)
    with pytest.raises(DataError, match="record index 0 is sparse but has no shape"):
        read_matrix(data)


def test_sparse_width_mismatch_names_record():
    data = _write_rows(encode_sparse_row(np.array([1.0], np.float32), [1], 4),
                       encode_sparse_row(np.array([1.0], np.float32), [3], 5))
    with pytest.raises(DataError, match="record index 1 has 5 features but feature_dim is 4"):
        read_matrix(data)


def test_dense_width_mismatch_names_record():
    data = _write_rows(encode_dense_row(np.ones(4, np.float32)),
                       encode_dense_row(np.ones(5, np.float32)))
    with pytest.raises(DataError, match="record index 1 has 5 features but feature_dim is 4"):
        read_matrix(data)
    with pytest.raises(DataError, match="record index 0 has 4 features but feature_dim is 5"):
        read_matrix(data, feature_dim=5)


def test_some_records_without_label_raise():
    data = _write_rows(encode_dense_row(np.ones(2, np.float32), np.float32(1)),
                       encode_dense_row(np.ones(2, np.float32)))
    with pytest.raises(DataError, match="record index 1 has no label"):
        read_matrix(data)


def test_record_without_features_raises():
    data = _write_rows(encode_label_record({"score": [1.0]}))
    with pytest.raises(DataError, match=r"record index 0 has no features\['values'\]"):
        read_matrix(data)


def test_error_names_file(tmp_path):
    path = tmp_path / "part-00000.pbr"
    path.write_bytes(frame(b"\xff\xff"))
    with open(path, "rb") as stream, pytest.raises(DataError) as error:
        read_matrix(stream)
    assert error.value.path == str(path)
    assert "record index 0" in str(error.value)


def test_sdk_writer_output_reads_back():
    recordio = pytest.importorskip("sagemaker_training.recordio")
    dense = _matrix("dense", np.float32)
    sparse = sp.csr_matrix(dense)
    labels = np.arange(7, dtype=np.float32)

    stream = io.BytesIO()
    recordio._write_numpy_to_dense_tensor(stream, dense, labels)
    features, read_labels = read_matrix(stream.getvalue())
    np.testing.assert_array_equal(features.toarray(), dense)
    np.testing.assert_array_equal(read_labels, labels)

    stream = io.BytesIO()
    recordio._write_spmatrix_to_sparse_tensor(stream, sparse, labels)
    ours = io.BytesIO()
    write_matrix(ours, sparse, labels)
    assert ours.getvalue() == stream.getvalue()
    features, read_labels = read_matrix(stream.getvalue())
    assert (features != sparse).nnz == 0


def test_sdk_reader_reads_our_output():
    recordio = pytest.importorskip("sagemaker_training.recordio")
    from sagemaker_training.record_pb2 import Record
    matrix = sp.csr_matrix(_matrix("dense", np.float32))
    labels = np.arange(7, dtype=np.float32)
    stream = io.BytesIO()
    write_matrix(stream, matrix, labels)
    stream.seek(0)

    rows = np.zeros(matrix.shape, np.float32)
    read_labels = []
    for index, payload in enumerate(recordio._read_recordio(stream)):
        record = Record.FromString(payload)
        tensor = record.features["values"].float32_tensor
        assert list(tensor.shape) == [matrix.shape[1]]
        rows[index, list(tensor.keys)] = list(tensor.values)
        read_labels.append(record.label["values"].float32_tensor.values[0])
    np.testing.assert_array_equal(rows, matrix.toarray())
    assert read_labels == labels.tolist()
