"""MXNet NDArray list files: exact bytes of a hand-built file, round trips and rejected input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from review_nlp.errors import DataError
from review_nlp.models.mxnet_ndarray import (
    decode_ndarray_list,
    encode_ndarray_list,
    load_ndarray_list,
    save_ndarray_list,
)

# mx.nd.save("f", [mx.nd.array([[1, 2, 3], [4, 5, 6]])]), written out field by field
EXPECTED_2X3 = bytes.fromhex(
    "1201000000000000"  # uint64 list magic 0x112
    "0000000000000000"  # uint64 reserved
    "0100000000000000"  # uint64 one array
    "c9fa93f9"          # uint32 NDArray v2 magic 0xF993FAC9
    "00000000"          # int32 storage type: dense
    "02000000"          # uint32 ndim
    "0200000000000000"  # int64 shape[0]
    "0300000000000000"  # int64 shape[1]
    "01000000"          # int32 dev_type: CPU
    "00000000"          # int32 dev_id
    "00000000"          # int32 type flag: float32
    "0000803f" "00000040" "00004040"  # 1.0 2.0 3.0
    "00008040" "0000a040" "0000c040"  # 4.0 5.0 6.0
    "0000000000000000"  # uint64 no names
)


def test_encode_2x3_float32_exact_bytes():
    array = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    assert encode_ndarray_list([array]) == EXPECTED_2X3


def test_decode_2x3_float32_exact_bytes():
    arrays, names = decode_ndarray_list(EXPECTED_2X3)
    assert names == []
    assert len(arrays) == 1
    assert arrays[0].dtype == np.float32
    np.testing.assert_array_equal(arrays[0], [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "uint8", "int32", "int8",
                                   "int64"])
def test_round_trip_each_dtype(dtype):
    array = (np.arange(24).reshape(2, 3, 4) % 100).astype(dtype)
    arrays, names = decode_ndarray_list(encode_ndarray_list([array]))
    assert names == []
    assert arrays[0].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(arrays[0], array)


def test_round_trip_with_names():
    first = np.ones((3,), dtype=np.float32)
    second = np.zeros((2, 2), dtype=np.int64)
    data = encode_ndarray_list([first, second], ["arg:weight", "aux:mean_ü"])
    arrays, names = decode_ndarray_list(data)
    assert names == ["arg:weight", "aux:mean_ü"]
    np.testing.assert_array_equal(arrays[0], first)
    np.testing.assert_array_equal(arrays[1], second)


def test_big_endian_input_written_little_endian():
    array = np.array([[1, 2, 3], [4, 5, 6]], dtype=">f4")
    assert encode_ndarray_list([array]) == EXPECTED_2X3


def test_non_contiguous_input_written_in_c_order():
    array = np.array([[1, 4], [2, 5], [3, 6]], dtype=np.float32).T
    assert encode_ndarray_list([array]) == EXPECTED_2X3


def test_save_and_load_file(tmp_path):
    centers = np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32)
    path = tmp_path / "model_algo-1"
    save_ndarray_list(path, [centers])
    arrays, names = load_ndarray_list(path)
    assert names == []
    np.testing.assert_array_equal(arrays[0], centers)


def test_decode_version_1_array():
    # version 1: no storage type field
    data = (struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<II", 0xF993FAC8, 1)
            + struct.pack("<q", 2) + struct.pack("<iii", 1, 0, 4)
            + struct.pack("<2i", 7, -1) + struct.pack("<Q", 0))
    arrays, _ = decode_ndarray_list(data)
    np.testing.assert_array_equal(arrays[0], np.array([7, -1], dtype=np.int32))


def test_decode_array_without_shape_is_none():
    data = struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<IiI", 0xF993FAC9, 0, 0) \
        + struct.pack("<Q", 0)
    arrays, _ = decode_ndarray_list(data)
    assert arrays == [None]


def test_rejects_wrong_list_magic():
    with pytest.raises(DataError, match="not an MXNet NDArray list file"):
        decode_ndarray_list(b"\x00" * 24 + EXPECTED_2X3[24:])


def test_rejects_truncated_file():
    with pytest.raises(DataError, match="truncated"):
        decode_ndarray_list(EXPECTED_2X3[:-12])


def test_rejects_trailing_bytes():
    with pytest.raises(DataError, match="unexpected bytes"):
        decode_ndarray_list(EXPECTED_2X3 + b"\x00")


def test_rejects_sparse_storage():
    data = bytearray(EXPECTED_2X3)
    data[28:32] = struct.pack("<i", 1)  # row_sparse
    with pytest.raises(DataError, match="storage type 1"):
        decode_ndarray_list(bytes(data))


def test_load_error_names_path(tmp_path):
    path = tmp_path / "model_algo-1"
    path.write_bytes(EXPECTED_2X3[:10])
    with pytest.raises(DataError, match="model_algo-1"):
        load_ndarray_list(path)


def test_encode_rejects_unsupported_dtype():
    with pytest.raises(ValueError, match="no MXNet type flag"):
        encode_ndarray_list([np.zeros(2, dtype=bool)])


def test_encode_rejects_name_count_mismatch():
    with pytest.raises(ValueError, match="got 1 names for 2 arrays"):
        encode_ndarray_list([np.zeros(2, np.float32), np.zeros(2, np.float32)], ["a"])
