"""RecordIO-protobuf, the `application/x-recordio-protobuf` format of SageMaker's built-in
algorithms: a reader and a writer of its framing and of the `aialgs.data.Record` message.

Framing (the MXNet/dmlc RecordIO layout): each record is the uint32 magic 0xCED7230A, a
uint32 `lrecord`, the payload and zero padding to a multiple of 4 bytes, all little-endian.
The upper 3 bits of `lrecord` are dmlc's continuation flag (cflag) and the lower 29 the
payload length. Writers here emit cflag 0 (a whole record), as the SageMaker SDK does;
the reader also accepts dmlc's split records (cflag 1 = first part, 2 = middle, 3 = last),
which it joins with the magic bytes that dmlc's writer cut out between the parts.

Payload: one `aialgs.data.Record` protobuf per matrix row, with the row in
`features["values"]` (dense: values only; sparse: values, `keys` = column indices and
`shape` = [feature_dim]) and an optional label in `label["values"]`. The message classes
are built at import time from a descriptor equal to the SDK's `record.proto`, so no protoc
step is needed. They live in a private descriptor pool, so the SDK's own `record_pb2` can
be imported beside this module without a name clash.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from ..errors import DataError

MAGIC = 0xCED7230A
_HEADER = struct.Struct("<II")
_LENGTH_MASK = (1 << 29) - 1
MAX_PAYLOAD_BYTES = _LENGTH_MASK  # dmlc requires payloads shorter than 2**29 bytes
_MAGIC_BYTES = struct.pack("<I", MAGIC)


def _record_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """Return the descriptor of the SDK's record.proto (package aialgs.data, proto2)."""
    proto = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="record.proto", package="aialgs.data")
    file.options.java_package = "com.amazonaws.aialgorithms.proto"
    file.options.java_outer_classname = "RecordProtos"

    for name, value_type in (("Float32Tensor", proto.TYPE_FLOAT),
                             ("Float64Tensor", proto.TYPE_DOUBLE),
                             ("Int32Tensor", proto.TYPE_INT32)):
        message = file.message_type.add(name=name)
        for number, field_name, field_type in ((1, "values", value_type),
                                               (2, "keys", proto.TYPE_UINT64),
                                               (3, "shape", proto.TYPE_UINT64)):
            tensor_field = message.field.add(name=field_name, number=number,
                                             label=proto.LABEL_REPEATED, type=field_type)
            tensor_field.options.packed = True

    message = file.message_type.add(name="Bytes")
    message.field.add(name="value", number=1, label=proto.LABEL_REPEATED, type=proto.TYPE_BYTES)
    message.field.add(name="content_type", number=2, label=proto.LABEL_OPTIONAL,
                      type=proto.TYPE_STRING)

    message = file.message_type.add(name="Value")
    for name, number, type_name in (("float32_tensor", 2, "Float32Tensor"),
                                    ("float64_tensor", 3, "Float64Tensor"),
                                    ("int32_tensor", 7, "Int32Tensor"), ("bytes", 9, "Bytes")):
        message.field.add(name=name, number=number, label=proto.LABEL_OPTIONAL,
                          type=proto.TYPE_MESSAGE, type_name=f".aialgs.data.{type_name}",
                          oneof_index=0)
    message.oneof_decl.add(name="value")

    message = file.message_type.add(name="Record")
    for name, number in (("features", 1), ("label", 2)):
        entry = f"{name.capitalize()}Entry"
        message.field.add(name=name, number=number, label=proto.LABEL_REPEATED,
                          type=proto.TYPE_MESSAGE, type_name=f".aialgs.data.Record.{entry}")
    for name, number in (("uid", 3), ("metadata", 4), ("configuration", 5)):
        message.field.add(name=name, number=number, label=proto.LABEL_OPTIONAL,
                          type=proto.TYPE_STRING)
    for entry in ("FeaturesEntry", "LabelEntry"):
        nested = message.nested_type.add(name=entry)
        nested.field.add(name="key", number=1, label=proto.LABEL_OPTIONAL, type=proto.TYPE_STRING)
        nested.field.add(name="value", number=2, label=proto.LABEL_OPTIONAL,
                         type=proto.TYPE_MESSAGE, type_name=".aialgs.data.Value")
        nested.options.map_entry = True
    return file


RECORD_FILE_DESCRIPTOR = _record_file_descriptor()
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(RECORD_FILE_DESCRIPTOR)
RecordMessage = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("aialgs.data.Record"))

# numpy dtype -> the Value field that stores it. int64 maps to Int32Tensor as in the SDK,
# which writes `np.dtype(int)` (int64 on Linux) that way, so values must fit in int32.
_TENSOR_FIELDS = {
    np.dtype(np.float32): "float32_tensor",
    np.dtype(np.float64): "float64_tensor",
    np.dtype(np.int32): "int32_tensor",
    np.dtype(np.int64): "int32_tensor",
}
_FIELD_DTYPES = {"float32_tensor": np.float32, "float64_tensor": np.float64,
                 "int32_tensor": np.int32}


# --- framing -------------------------------------------------------------------------------

def frame(payload: bytes) -> bytes:
    """Return `payload` as one RecordIO record: magic, length, payload, zero padding."""
    length = len(payload)
    if length > MAX_PAYLOAD_BYTES:
        raise ValueError(f"RecordIO payload of {length} bytes exceeds the maximum of "
                         f"{MAX_PAYLOAD_BYTES} bytes")
    return _HEADER.pack(MAGIC, length) + payload + b"\x00" * (-length % 4)


def write_recordio(stream: BinaryIO, payload: bytes) -> None:
    """Write `payload` to a binary stream as one RecordIO record (cflag 0)."""
    stream.write(frame(payload))


def _stream_name(stream) -> str | None:
    name = getattr(stream, "name", None)
    return name if isinstance(name, str) else None


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    # Pipes and raw streams may return fewer bytes than requested, so read until EOF or `size`.
    data = stream.read(size)
    if data is None or len(data) == size or not data:
        return data or b""
    parts = [data]
    remaining = size - len(data)
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def read_recordio(stream: BinaryIO, *, path: str | None = None) -> Iterator[bytes]:
    """Yield the payload of each record of a RecordIO stream, reading sequentially.

    Works on files, pipes and FIFOs (SageMaker's Pipe mode) because it never seeks. An empty
    stream yields nothing. Raises `DataError` naming the record index (from 0) and byte
    offset when the magic is wrong or the stream ends inside a record.
    """
    path = path or _stream_name(stream)
    offset = 0
    index = 0
    parts: list[bytes] = []
    while True:
        header = _read_exact(stream, _HEADER.size)
        if not header and not parts:
            return
        if len(header) >= 4 and header[:4] != _MAGIC_BYTES:
            magic = int.from_bytes(header[:4], "little")
            raise DataError(f"record index {index} at byte {offset} starts with 0x{magic:08x}, "
                            f"not the RecordIO magic 0x{MAGIC:08x}; the data is not "
                            "RecordIO-protobuf or is corrupt", path=path)
        if len(header) < _HEADER.size:
            raise DataError(f"RecordIO stream ends inside the header of record index {index} "
                            f"at byte {offset} ({len(header)} of 8 bytes)", path=path)
        _, lrecord = _HEADER.unpack(header)
        cflag, length = lrecord >> 29, lrecord & _LENGTH_MASK
        padded = length + (-length % 4)
        body = _read_exact(stream, padded)
        if len(body) < padded:
            raise DataError(f"RecordIO stream ends inside record index {index} at byte "
                            f"{offset}: {len(body)} of {padded} payload and padding bytes",
                            path=path)
        offset += _HEADER.size + padded
        parts.append(body[:length])

        # cflag 1 and 2 mean that more parts follow. dmlc's writer removed the magic number
        # that stood between them.
        if cflag in (1, 2):
            parts.append(_MAGIC_BYTES)
            continue
        yield b"".join(parts)
        parts = []
        index += 1


# --- Record messages ---------------------------------------------------------------------

@dataclass
class Tensor:
    """One decoded Float32/Float64/Int32 tensor of a Record.

    `keys` (uint64) is empty for a dense tensor and contains the flat index of each value
    for a sparse one. `shape` is () when the record has none.
    """

    values: np.ndarray
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    shape: tuple[int, ...] = ()

    @property
    def is_sparse(self) -> bool:
        """Whether the tensor has keys, or only a shape and no values (an empty sparse row)."""
        return len(self.keys) > 0 or (len(self.values) == 0 and len(self.shape) > 0)

    def to_dense(self) -> np.ndarray:
        """Return the values as a dense array of `shape` (or 1-D when no shape was given)."""
        if not self.is_sparse:
            return self.values.reshape(self.shape) if self.shape else self.values
        dense = np.zeros(int(np.prod(self.shape)), dtype=self.values.dtype)
        dense[self.keys.astype(np.int64)] = self.values
        return dense.reshape(self.shape)


@dataclass
class BytesValue:
    """A decoded `Bytes` value of a Record."""

    values: list[bytes]
    content_type: str | None = None


@dataclass
class DecodedRecord:
    """One `aialgs.data.Record`: named features and labels, plus its optional strings."""

    features: dict[str, Tensor | BytesValue]
    label: dict[str, Tensor | BytesValue]
    uid: str | None = None
    metadata: str | None = None
    configuration: str | None = None


def _tensor_field(dtype: np.dtype) -> str:
    try:
        return _TENSOR_FIELDS[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"unsupported dtype {np.dtype(dtype)} for a RecordIO-protobuf tensor; "
                         "use float32, float64 or int32") from None


def _check_int32_range(values: np.ndarray) -> None:
    if values.dtype == np.int64 and values.size and (
            values.min() < np.iinfo(np.int32).min or values.max() > np.iinfo(np.int32).max):
        raise ValueError("int64 values outside the int32 range cannot be written as Int32Tensor")


def _fill_tensor(value_message, values, keys=None, shape=None) -> None:
    values = np.asarray(values)
    if values.ndim == 0:
        values = values.reshape(1)
    name = _tensor_field(values.dtype)
    _check_int32_range(values)
    tensor = getattr(value_message, name)
    tensor.SetInParent()
    tensor.values.extend(values.ravel().tolist())
    if keys is not None and len(keys):
        tensor.keys.extend(np.asarray(keys, dtype=np.uint64).tolist())
    if shape is not None:
        tensor.shape.extend(int(dim) for dim in shape)


def encode_record(features: Mapping[str, np.ndarray | Tensor] | None = None,
                  label: Mapping[str, np.ndarray | Tensor] | None = None) -> bytes:
    """Serialize a Record from named tensors: arrays as dense tensors, `Tensor` as given."""
    record = RecordMessage()
    for target, tensors in ((record.features, features or {}), (record.label, label or {})):
        for name, tensor in tensors.items():
            if isinstance(tensor, Tensor):
                _fill_tensor(target[name], tensor.values, tensor.keys, tensor.shape or None)
            else:
                _fill_tensor(target[name], tensor)
    return record.SerializeToString(deterministic=True)


def encode_dense_row(values: np.ndarray | Sequence[float], label=None) -> bytes:
    """Serialize one dense row as a Record, with `label` (a scalar) when given.

    The tensor type follows the array dtype as in the SDK: float32, float64, or int32/int64
    as Int32Tensor. A Python float becomes float64, so pass np.float32 for Float32Tensor.
    """
    record = RecordMessage()
    _fill_tensor(record.features["values"], values)
    if label is not None:
        _fill_tensor(record.label["values"], label)
    return record.SerializeToString(deterministic=True)


def encode_sparse_row(values: np.ndarray | Sequence[float], keys: Sequence[int],
                      feature_dim: int, label=None) -> bytes:
    """Serialize one sparse row: `values` at column indices `keys`, shape [feature_dim]."""
    values = np.asarray(values)
    keys = np.asarray(keys, dtype=np.int64).ravel()
    if len(keys) != values.size:
        raise ValueError(f"sparse row has {values.size} values but {len(keys)} keys")
    if len(keys) and (keys.min() < 0 or keys.max() >= feature_dim):
        raise ValueError(f"sparse row keys must be in [0, {feature_dim}), got "
                         f"[{keys.min()}, {keys.max()}]")
    record = RecordMessage()
    _fill_tensor(record.features["values"], values, keys, [feature_dim])
    if label is not None:
        _fill_tensor(record.label["values"], label)
    return record.SerializeToString(deterministic=True)


def encode_label_record(outputs: Mapping[str, Sequence[float] | float]) -> bytes:
    """Serialize an inference response: float32 outputs in `label`, `features` empty.

    Built-in algorithms respond this way, e.g. {"closest_cluster": [5.0],
    "distance_to_cluster": [36.5]} for k-means or {"topic_weights": [...]} for NTM.
    """
    record = RecordMessage()
    for name, values in outputs.items():
        _fill_tensor(record.label[name], np.asarray(values, dtype=np.float32))
    return record.SerializeToString(deterministic=True)


def _decode_value(value) -> Tensor | BytesValue:
    kind = value.WhichOneof("value")
    if kind == "bytes":
        return BytesValue(list(value.bytes.value),
                          value.bytes.content_type if value.bytes.HasField("content_type")
                          else None)
    if kind is None:
        return Tensor(np.zeros(0, np.float32))
    tensor = getattr(value, kind)
    return Tensor(np.array(tensor.values, dtype=_FIELD_DTYPES[kind]),
                  np.array(tensor.keys, dtype=np.uint64),
                  tuple(int(dim) for dim in tensor.shape))


def decode_record(payload: bytes) -> DecodedRecord:
    """Parse one Record payload, or raise `DataError` when it is not a valid Record."""
    record = RecordMessage()
    try:
        record.ParseFromString(payload)
    except DecodeError as error:
        raise DataError(f"invalid aialgs.data.Record protobuf: {error}") from None
    return DecodedRecord(
        features={name: _decode_value(value) for name, value in record.features.items()},
        label={name: _decode_value(value) for name, value in record.label.items()},
        uid=record.uid if record.HasField("uid") else None,
        metadata=record.metadata if record.HasField("metadata") else None,
        configuration=record.configuration if record.HasField("configuration") else None)


# --- matrices ------------------------------------------------------------------------------

def _check_labels(labels, n_rows: int) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise ValueError(f"labels must have shape ({n_rows},), got {labels.shape}")
    _tensor_field(labels.dtype)
    _check_int32_range(labels)
    return labels


def write_matrix(stream: BinaryIO, matrix: np.ndarray | sp.spmatrix, labels=None) -> int:
    """Write one Record per row of `matrix` and return the number of records written.

    A SciPy sparse matrix gives sparse records (keys and shape, one record even for an
    empty row), a 2-D array dense records. `labels` is a (n_rows,) array or None. The tensor
    types follow the dtypes as in `encode_dense_row`.
    """
    if len(matrix.shape) != 2:
        raise ValueError(f"matrix must be 2-D, got shape {matrix.shape}")
    n_rows, feature_dim = matrix.shape
    labels = _check_labels(labels, n_rows)
    sparse = sp.issparse(matrix)
    if sparse:
        matrix = sp.csr_matrix(matrix)
        matrix.sort_indices()
        data, indptr = matrix.data, matrix.indptr
        keys = matrix.indices.tolist()
    else:
        data = np.asarray(matrix)
    values_field = _tensor_field(data.dtype)
    _check_int32_range(data)
    values = data.tolist()
    label_field = _tensor_field(labels.dtype) if labels is not None else None
    label_values = labels.tolist() if labels is not None else None

    # One message is reused for every row, as in the SDK's writers, and Clear() resets it.
    record = RecordMessage()
    for row in range(n_rows):
        record.Clear()
        tensor = getattr(record.features["values"], values_field)
        tensor.SetInParent()
        if sparse:
            start, end = indptr[row], indptr[row + 1]
            tensor.values.extend(values[start:end])
            tensor.keys.extend(keys[start:end])
            tensor.shape.append(feature_dim)
        else:
            tensor.values.extend(values[row])
        if label_values is not None:
            getattr(record.label["values"], label_field).values.append(label_values[row])
        write_recordio(stream, record.SerializeToString(deterministic=True))
    return n_rows


class _MatrixBuilder:
    """Collects the rows of `read_matrix` in flat lists and checks each one.

    Reads the protobuf fields directly instead of through `decode_record`: a numpy array per
    row costs more than parsing the row.
    """

    def __init__(self, feature_dim: int | None, path: str | None):
        self.feature_dim = feature_dim
        self.path = path
        self.values: list[float] = []
        self.columns: list[int] = []
        self.row_lengths: list[int] = []
        self.labels: list[float] = []
        self.unlabeled: list[int] = []

    def add(self, index: int, payload: bytes) -> None:
        record = RecordMessage()
        try:
            record.ParseFromString(payload)
        except DecodeError as error:
            raise self._error(index, f"is not a valid aialgs.data.Record ({error})") from None
        tensor = self._features(record, index)
        n_values = len(tensor.values)
        if len(tensor.keys) or (not n_values and len(tensor.shape)):
            self._add_sparse(tensor, index)
        else:
            self._check_width(index, n_values, tensor.shape)
            self.columns.extend(range(n_values))
        self.values.extend(tensor.values)
        self.row_lengths.append(n_values)
        self._add_label(record, index)

    def _error(self, index: int, message: str) -> DataError:
        return DataError(f"record index {index} {message}", path=self.path)

    def _features(self, record, index: int):
        if "values" not in record.features:
            found = sorted(record.features) or "none"
            raise self._error(index, f"has no features['values'] (features: {found})")
        value = record.features["values"]
        kind = value.WhichOneof("value")
        if kind not in _FIELD_DTYPES:
            raise self._error(index, f"has features['values'] of type {kind}, not a tensor")
        return getattr(value, kind)

    def _check_width(self, index: int, width: int, shape) -> None:
        if len(shape) and math.prod(shape) != width:
            raise self._error(index, f"has {width} dense values but shape {list(shape)}")
        if self.feature_dim is None:
            self.feature_dim = width
        elif width != self.feature_dim:
            raise self._error(index, f"has {width} features but feature_dim is "
                              f"{self.feature_dim}")

    def _add_sparse(self, tensor, index: int) -> None:
        if not len(tensor.shape) and self.feature_dim is None:
            raise self._error(index, "is sparse but has no shape; pass feature_dim")
        width = math.prod(tensor.shape) if len(tensor.shape) else self.feature_dim
        self._check_width(index, width, ())
        if len(tensor.keys) != len(tensor.values):
            raise self._error(index, f"has {len(tensor.values)} values but "
                              f"{len(tensor.keys)} keys")
        # Keys are range-checked for all rows at once in build().
        self.columns.extend(tensor.keys)

    def _add_label(self, record, index: int) -> None:
        if "values" not in record.label:
            self.unlabeled.append(index)
            return
        value = record.label["values"]
        kind = value.WhichOneof("value")
        tensor = getattr(value, kind) if kind in _FIELD_DTYPES else None
        if tensor is None or len(tensor.keys) or len(tensor.values) != 1:
            raise self._error(index, "has a label['values'] that is not one number")
        self.labels.append(tensor.values[0])

    def build(self) -> tuple[sp.csr_matrix, np.ndarray | None]:
        n_rows = len(self.row_lengths)
        if self.labels and self.unlabeled:
            raise self._error(self.unlabeled[0], "has no label['values'] but other records "
                              "have one; either every record has a label or none")
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(self.row_lengths, out=indptr[1:])
        columns = np.array(self.columns, dtype=np.uint64)
        feature_dim = self.feature_dim or 0
        out_of_range = np.flatnonzero(columns >= feature_dim)
        if len(out_of_range):
            row = int(np.searchsorted(indptr, out_of_range[0], side="right")) - 1
            raise self._error(row, f"has key {int(columns[out_of_range[0]])} but feature_dim "
                              f"is {feature_dim}; keys must be < feature_dim")
        matrix = sp.csr_matrix(
            (np.array(self.values, dtype=np.float32), columns.astype(np.int64), indptr),
            shape=(n_rows, feature_dim))
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        labels = np.array(self.labels, dtype=np.float32) if self.labels else None
        return matrix, labels


def read_matrix(stream: BinaryIO | bytes, feature_dim: int | None = None, *,
                path: str | None = None) -> tuple[sp.csr_matrix, np.ndarray | None]:
    """Read RecordIO-protobuf rows into a (n_records, feature_dim) float32 CSR matrix.

    Returns the matrix and the (n_records,) float32 labels from `label["values"]`, or None
    when no record has a label. `feature_dim` defaults to the width of the first record.
    Raises `DataError` naming the record index (from 0) when a row's width differs from
    `feature_dim`, a key is out of range, or only some records have labels.
    """
    if isinstance(stream, (bytes, bytearray, memoryview)):
        stream = io.BytesIO(bytes(stream))
    path = path or _stream_name(stream)
    builder = _MatrixBuilder(feature_dim, path)
    for index, payload in enumerate(read_recordio(stream, path=path)):
        builder.add(index, payload)
    return builder.build()
