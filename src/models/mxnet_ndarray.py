"""Read and write MXNet NDArray list files, the format of `mx.nd.save` and `mx.nd.load`.

SageMaker's built-in K-Means stores its model as such a file named `model_algo-1`. The file
contains one float32 array of shape (k, feature_dim), the cluster centers, and no names.
Writing that file lets the built-in container host a model trained here.

Layout, little-endian, as `NDArray::Save` in apache/mxnet 1.x `src/ndarray/ndarray.cc` writes it:

    uint64  0x112           list magic (kMXAPINDArrayListMagic)
    uint64  0               reserved
    uint64  array count
    per array (dense storage):
        uint32  0xF993FAC9  NDArray version 2 magic
        int32   0           storage type (0 is dense)
        uint32  ndim
        int64   dims[ndim]
        int32   dev_type    (1 is CPU)
        int32   dev_id
        int32   type flag   (see TYPE_FLAGS)
        raw element data, C order
    uint64  name count
    per name: uint64 byte length, then the UTF-8 bytes

The reader also accepts version 1 arrays (no storage type field) and version 3 arrays
(NumPy shape semantics, same layout for dense storage). It rejects sparse storage.
"""

from __future__ import annotations

import os
import struct
from typing import Sequence

import numpy as np

from ..errors import DataError
from ..files import atomic_write_bytes

LIST_MAGIC = 0x112
NDARRAY_V1_MAGIC = 0xF993FAC8
NDARRAY_V2_MAGIC = 0xF993FAC9
NDARRAY_V3_MAGIC = 0xF993FACA
DENSE_STORAGE = 0
CPU_DEVICE_TYPE = 1

# MXNet's mshadow type flags and the NumPy dtypes they stand for.
TYPE_FLAGS: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
}
FLAG_BY_DTYPE = {dtype: flag for flag, dtype in TYPE_FLAGS.items()}


def encode_ndarray_list(arrays: Sequence[np.ndarray], names: Sequence[str] | None = None) -> bytes:
    """Serialize `arrays` (and optional `names`, one per array) as `mx.nd.save` does.

    Arrays are written as dense CPU arrays in their own dtype, which must be one of TYPE_FLAGS.
    """
    names = list(names) if names is not None else []
    if names and len(names) != len(arrays):
        raise ValueError(f"expected one name per array or none, got {len(names)} names for "
                         f"{len(arrays)} arrays")
    parts = [struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays))]
    for array in arrays:
        parts.append(_encode_array(np.asarray(array)))
    parts.append(struct.pack("<Q", len(names)))
    for name in names:
        encoded = name.encode("utf-8")
        parts.append(struct.pack("<Q", len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def _encode_array(array: np.ndarray) -> bytes:
    flag = FLAG_BY_DTYPE.get(array.dtype.newbyteorder("<"))
    if flag is None:
        supported = ", ".join(str(d) for d in TYPE_FLAGS.values())
        raise ValueError(f"dtype {array.dtype} has no MXNet type flag, so convert the array to "
                         f"one of {supported}")
    if array.ndim == 0:
        # version 2 reads ndim 0 as an array without a shape, so a scalar would not round-trip
        raise ValueError("a 0-d array cannot be saved in NDArray version 2, so reshape it to "
                         "shape (1,)")
    header = struct.pack("<IiI", NDARRAY_V2_MAGIC, DENSE_STORAGE, array.ndim)
    shape = struct.pack(f"<{array.ndim}q", *array.shape)
    context_and_type = struct.pack("<iii", CPU_DEVICE_TYPE, 0, flag)
    data = np.ascontiguousarray(array, dtype=TYPE_FLAGS[flag]).tobytes()
    return header + shape + context_and_type + data


def decode_ndarray_list(data: bytes) -> tuple[list[np.ndarray | None], list[str]]:
    """Parse the bytes of an NDArray list file into (arrays, names).

    `names` is empty when the file was saved from a list, as the k-means model is. An array
    MXNet saved without a shape (a "none" NDArray) comes back as None.
    Raises DataError naming the byte offset when the bytes are not such a file.
    """
    reader = _Reader(data)
    magic, reserved, count = reader.unpack("<QQQ")
    if magic != LIST_MAGIC:
        raise DataError(f"not an MXNet NDArray list file: magic {magic:#x} at byte 0, "
                        f"expected {LIST_MAGIC:#x}")
    if reserved != 0:
        raise DataError(f"MXNet NDArray list file has reserved field {reserved} at byte 8, "
                        f"expected 0")
    arrays = [_decode_array(reader, index) for index in range(count)]
    (name_count,) = reader.unpack("<Q")
    names = []
    for _ in range(name_count):
        (length,) = reader.unpack("<Q")
        names.append(reader.take(length).decode("utf-8"))
    if names and len(names) != len(arrays):
        raise DataError(f"MXNet NDArray list file has {len(names)} names for "
                        f"{len(arrays)} arrays")
    if reader.offset != len(data):
        raise DataError(f"MXNet NDArray list file has {len(data) - reader.offset} unexpected "
                        f"bytes after the names, from byte {reader.offset}")
    return arrays, names


def _decode_array(reader: "_Reader", index: int) -> np.ndarray | None:
    start = reader.offset
    (magic,) = reader.unpack("<I")
    if magic not in (NDARRAY_V1_MAGIC, NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC):
        raise DataError(f"array {index} at byte {start} has magic {magic:#x}, but this reader "
                        f"supports only NDArray versions 1 to 3 ({NDARRAY_V1_MAGIC:#x} to "
                        f"{NDARRAY_V3_MAGIC:#x})")
    if magic != NDARRAY_V1_MAGIC:
        (storage,) = reader.unpack("<i")
        if storage != DENSE_STORAGE:
            raise DataError(f"array {index} at byte {start} has storage type {storage}, but "
                            f"only dense arrays (storage type 0) are supported")

    # version 3 marks "no shape" with ndim -1 and allows 0-d scalars; older versions use ndim 0
    (ndim,) = reader.unpack("<i")
    if ndim < 0 or (ndim == 0 and magic != NDARRAY_V3_MAGIC):
        return None
    shape = reader.unpack(f"<{ndim}q")
    reader.unpack("<ii")  # device type and id, skipped because arrays load onto the CPU
    (flag,) = reader.unpack("<i")
    dtype = TYPE_FLAGS.get(flag)
    if dtype is None:
        raise DataError(f"array {index} at byte {start} has unknown type flag {flag}")
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return np.frombuffer(reader.take(size), dtype=dtype).reshape(shape).copy()


class _Reader:
    """A cursor over bytes that raises DataError, naming the offset, when they run out."""

    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.offset = 0

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise DataError(f"MXNet NDArray list file is truncated: needed {size} bytes at "
                            f"byte {self.offset}, but it has {len(self.data)} bytes in total")
        chunk = self.data[self.offset:end].tobytes()
        self.offset = end
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))


def save_ndarray_list(path: str | os.PathLike, arrays: Sequence[np.ndarray],
                      names: Sequence[str] | None = None) -> None:
    """Write `arrays` to `path` atomically in the format `mx.nd.load(path)` reads."""
    atomic_write_bytes(path, encode_ndarray_list(arrays, names))


def load_ndarray_list(path: str | os.PathLike) -> tuple[list[np.ndarray | None], list[str]]:
    """Read an NDArray list file written by `mx.nd.save` or `save_ndarray_list`."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return decode_ndarray_list(data)
    except DataError as error:
        raise DataError(str(error), path=str(path)) from None
