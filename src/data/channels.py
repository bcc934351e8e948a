"""SageMaker training channels: folders of RecordIO-protobuf or CSV shards, vocab.txt and
the manifest that `prepare` writes beside them.

A channel folder contains `part-00000.pbr`, `part-00001.pbr`, ... (or `.csv`), so that
`ShardedByS3Key` can hand different files to different hosts. CSV channels follow the
built-in algorithms' rules: no header and dense rows. With labels, the label is the first
column (`text/csv;label_size=1`). Without labels, the content type is
`text/csv;label_size=0`.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pyarrow_csv
import scipy.sparse as sp

from .. import __version__
from ..errors import DataError, UserError
from ..files import atomic_directory, atomic_write_text
from .recordio import MAGIC, read_matrix, write_matrix
from .vocabulary import read_vocab_txt, write_vocab_txt

if TYPE_CHECKING:
    from ..models.training import FeatureData

__all__ = [
    "CSV", "RECORDIO_PROTOBUF", "ContentType", "Manifest", "channel_files", "detect_content_type",
    "parse_content_type", "read_channel", "read_features", "read_manifest", "read_vocab_txt",
    "write_channel", "write_manifest", "write_vocab_txt",
]

RECORDIO_PROTOBUF = "application/x-recordio-protobuf"
CSV = "text/csv"
_EXTENSIONS = {RECORDIO_PROTOBUF: ".pbr", CSV: ".csv"}
_MAGIC_BYTES = MAGIC.to_bytes(4, "little")
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT_VERSION = 1
DEFAULT_SHARD_ROWS = 100_000
# Rows parsed per step when reading CSV, which bounds the dense buffer to this many rows.
_CSV_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class ContentType:
    """A parsed channel content type: the media type and, for CSV, the number of label
    columns before the features (`label_size`, None when the content type omits it)."""

    media_type: str
    label_size: int | None = None

    def __str__(self) -> str:
        if self.media_type == CSV and self.label_size is not None:
            return f"{CSV};label_size={self.label_size}"
        return self.media_type


def parse_content_type(value: str) -> ContentType:
    """Parse a channel content type such as "text/csv; label_size=0".

    Media types and parameter names are case-insensitive. `label_size` (CSV only) must be
    0 or 1. Raises `UserError` for any other media type or parameter.
    """
    media_type, *parameters = (part.strip() for part in value.split(";"))
    media_type = media_type.lower()
    if media_type not in _EXTENSIONS:
        raise UserError(f"content type {value!r} is not supported; use {RECORDIO_PROTOBUF} or "
                        f"{CSV}")
    label_size = None
    for parameter in filter(None, parameters):
        name, _, setting = (part.strip() for part in parameter.partition("="))
        setting = setting.strip("\"'")
        if name.lower() != "label_size" or media_type != CSV:
            raise UserError(f"content type {value!r} has unsupported parameter {name!r}; "
                            "only text/csv takes label_size")
        if setting not in ("0", "1"):
            raise UserError(f"content type {value!r} has label_size={setting}; it must be 0 or 1")
        label_size = int(setting)
    return ContentType(media_type, label_size)


# --- writing -------------------------------------------------------------------------------

def _write_csv(stream: BinaryIO, features: sp.csr_matrix, labels: np.ndarray | None) -> None:
    # Rows are mostly zeros: start each line from a list of "0" cells and format only the
    # non-zero values. Nine significant digits print every float32 exactly, and whole numbers
    # print without a decimal point ("3").
    zeros = ["0"] * features.shape[1]
    cells_of = [f"{value:.9g}" for value in features.data.tolist()]
    label_cells = [f"{value:.9g}," for value in labels.tolist()] if labels is not None else None
    indices, indptr = features.indices.tolist(), features.indptr
    lines = []
    for row in range(features.shape[0]):
        cells = zeros.copy()
        for position in range(indptr[row], indptr[row + 1]):
            cells[indices[position]] = cells_of[position]
        prefix = label_cells[row] if label_cells is not None else ""
        lines.append(f"{prefix}{','.join(cells)}\n")
        if len(lines) == _CSV_CHUNK_ROWS:
            stream.write("".join(lines).encode("utf-8"))
            lines = []
    stream.write("".join(lines).encode("utf-8"))


def write_channel(folder: str | os.PathLike, features: sp.spmatrix | np.ndarray,
                  labels: np.ndarray | None = None, *, shard_rows: int = DEFAULT_SHARD_ROWS,
                  content_type: str = RECORDIO_PROTOBUF) -> list[Path]:
    """Write a channel folder of shards with at most `shard_rows` rows each, and return their
    paths.

    Features and labels are written as float32, the type the built-in algorithms train on.
    Sparse features give sparse RecordIO records and dense arrays dense ones. For CSV, labels
    go in the first column and the content type must not declare `label_size=0`. The folder is
    replaced as a whole (`atomic_directory`), so readers never see part of a channel. With
    no rows it contains one empty shard, which is a valid file of either format.
    """
    parsed = parse_content_type(content_type)
    if isinstance(shard_rows, bool) or not isinstance(shard_rows, int) or shard_rows < 1:
        raise ValueError(f"shard_rows={shard_rows!r} must be an int >= 1")
    features = (sp.csr_matrix(features, dtype=np.float32) if sp.issparse(features)
                else np.asarray(features, dtype=np.float32))
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D, got shape {features.shape}")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float32)
        if labels.shape != (features.shape[0],):
            raise ValueError(f"labels must have shape ({features.shape[0]},), got {labels.shape}")
        if parsed.label_size == 0:
            raise ValueError(f"content type {content_type!r} declares no label column but "
                             "labels were given; use text/csv;label_size=1")
    elif parsed.label_size == 1:
        raise ValueError(f"content type {content_type!r} declares a label column but no "
                         "labels were given")

    n_rows = features.shape[0]
    n_shards = max(1, math.ceil(n_rows / shard_rows))
    extension = _EXTENSIONS[parsed.media_type]
    names = [f"part-{shard:05d}{extension}" for shard in range(n_shards)]
    with atomic_directory(folder) as tmp:
        for shard, name in enumerate(names):
            rows = slice(shard * shard_rows, min(n_rows, (shard + 1) * shard_rows))
            shard_labels = labels[rows] if labels is not None else None
            with open(tmp / name, "wb") as stream:
                if parsed.media_type == CSV:
                    _write_csv(stream, sp.csr_matrix(features[rows]), shard_labels)
                else:
                    write_matrix(stream, features[rows], shard_labels)
    return [Path(folder) / name for name in names]


# --- reading -------------------------------------------------------------------------------

class _PrefixedReader(io.RawIOBase):
    """A stream that returns `prefix` and then the rest of `stream`, so that the first bytes
    can be inspected on a pipe, which cannot seek back."""

    def __init__(self, prefix: bytes, stream: BinaryIO):
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._prefix:
            size = min(len(buffer), len(self._prefix))
            buffer[:size] = self._prefix[:size]
            self._prefix = self._prefix[size:]
            return size
        data = self._stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _read_prefix(stream: BinaryIO, size: int) -> bytes:
    # A pipe may return fewer bytes than requested, so read until `size` bytes or EOF.
    prefix = b""
    while len(prefix) < size:
        chunk = stream.read(size - len(prefix))
        if not chunk:
            break
        prefix += chunk
    return prefix


def _is_skipped(relative: Path) -> bool:
    name = relative.name
    return (any(part.startswith(".") for part in relative.parts) or name == MANIFEST_NAME
            or name.endswith((".manifest", ".crc")) or name == "_SUCCESS")


def channel_files(path: str | os.PathLike) -> list[Path]:
    """Return the data files of a channel in name order.

    `path` may be a folder, searched recursively as SageMaker copies S3 prefixes with their
    sub-folders, or one file or FIFO (Pipe mode). Skipped: hidden files and folders (".*"),
    manifest.json, "*.manifest" (manifest files), "*.crc" and "_SUCCESS" (Spark metadata).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"channel {path} not found")
    if not path.is_dir():
        return [path]
    files = []
    for candidate in sorted(path.rglob("*")):
        relative = candidate.relative_to(path)
        mode = candidate.stat().st_mode
        if (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)) and not _is_skipped(relative):
            files.append(candidate)
    return files


def detect_content_type(first_bytes: bytes) -> str | None:
    """Return RecordIO-protobuf when the data starts with its magic, CSV otherwise, and
    None for empty data."""
    if not first_bytes:
        return None
    return RECORDIO_PROTOBUF if first_bytes[:4] == _MAGIC_BYTES else CSV


def _parse_csv_line(line: str, number: int, width: int | None, path: str) -> list[float]:
    cells = line.rstrip("\r\n").split(",")
    if width is not None and len(cells) != width:
        raise DataError(f"CSV row has {len(cells)} columns but earlier rows have {width}",
                        path=path, line=number)
    try:
        return [float(cell) for cell in cells]
    except ValueError:
        bad = next(cell for cell in cells if not _is_number(cell))
        raise DataError(f"CSV value {bad.strip()!r} is not a number; CSV channels hold numbers "
                        "only, without a header", path=path, line=number) from None


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_csv_block(lines: list[str], numbers: list[int], width: int | None, path: str
                     ) -> np.ndarray:
    """Parse lines of numbers with pyarrow's CSV reader, which is several times faster than
    `np.loadtxt`. When it fails, parse line by line to name the line that is wrong."""
    width = width or lines[0].count(",") + 1
    try:
        table = pyarrow_csv.read_csv(
            io.BytesIO("".join(lines).encode("utf-8")),
            read_options=pyarrow_csv.ReadOptions(autogenerate_column_names=True,
                                                 block_size=1 << 30, use_threads=False),
            parse_options=pyarrow_csv.ParseOptions(quote_char=False),
            convert_options=pyarrow_csv.ConvertOptions(
                column_types={f"f{column}": pa.float32() for column in range(width)},
                null_values=[], strings_can_be_null=False))
    except pa.ArrowInvalid:
        for line, number in zip(lines, numbers):
            _parse_csv_line(line, number, width, path)
        raise DataError("CSV block could not be parsed", path=path, line=numbers[0]) from None
    batch = table.combine_chunks().to_batches()[0]
    return np.asarray(batch.to_tensor(row_major=True))


def _read_csv_rows(text: io.TextIOBase, path: str) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (rows, first line number) blocks of a headerless numeric CSV stream."""
    width = None
    lines: list[str] = []
    numbers: list[int] = []
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        lines.append(line)
        numbers.append(number)
        if len(lines) == _CSV_CHUNK_ROWS:
            rows = _parse_csv_block(lines, numbers, width, path)
            width = rows.shape[1]
            yield rows, numbers[0]
            lines, numbers = [], []
    if lines:
        yield _parse_csv_block(lines, numbers, width, path), numbers[0]


def _read_csv(stream: BinaryIO, label_size: int, feature_dim: int | None, path: str
              ) -> tuple[sp.csr_matrix, np.ndarray | None]:
    text = io.TextIOWrapper(stream, encoding="utf-8", newline=None)
    matrices, labels = [], []
    try:
        for rows, first_line in _read_csv_rows(text, path):
            width = rows.shape[1] - label_size
            if feature_dim is None:
                feature_dim = width
            elif width != feature_dim:
                raise DataError(f"CSV row has {width} features but feature_dim is {feature_dim}",
                                path=path, line=first_line)
            labels.append(rows[:, :label_size])
            matrices.append(sp.csr_matrix(rows[:, label_size:]))
    except UnicodeDecodeError as error:
        raise DataError(f"file is neither RecordIO-protobuf nor UTF-8 CSV ({error.reason} at "
                        f"byte {error.start} of a block)", path=path) from None
    if not matrices:
        return sp.csr_matrix((0, feature_dim or 0), dtype=np.float32), None
    features = sp.vstack(matrices, format="csr", dtype=np.float32)
    return features, (np.concatenate(labels)[:, 0] if label_size else None)


def read_features(path: str | os.PathLike, content_type: str | None = None,
                  feature_dim: int | None = None) -> tuple[sp.csr_matrix, np.ndarray | None]:
    """Read one channel file or FIFO into float32 CSR features and labels (or None).

    Without `content_type` the format is detected from the first bytes (RecordIO magic or
    CSV text), and detected CSV has no label column. The stream is read sequentially, so Pipe
    mode FIFOs work. Raises `DataError` naming the file and the record or line.
    """
    parsed = parse_content_type(content_type) if content_type else None
    with open(path, "rb", buffering=0) as raw:
        prefix = _read_prefix(raw, len(_MAGIC_BYTES))
        stream = io.BufferedReader(_PrefixedReader(prefix, raw), buffer_size=1 << 16)
        media_type = parsed.media_type if parsed else detect_content_type(prefix)
        if media_type is None:
            return sp.csr_matrix((0, feature_dim or 0), dtype=np.float32), None
        if media_type == RECORDIO_PROTOBUF:
            return read_matrix(stream, feature_dim, path=str(path))
        label_size = parsed.label_size if parsed and parsed.label_size is not None else 0
        return _read_csv(stream, label_size, feature_dim, str(path))


def read_channel(folder: str | os.PathLike, content_type: str | None = None,
                 feature_dim: int | None = None) -> "FeatureData":
    """Read every data file of a channel (see `channel_files`) into one `FeatureData`.

    `content_type` None detects the format per file. `feature_dim` defaults to the width of
    the first non-empty file, and every file must match it. Raises `DataError` naming the file
    when widths differ or when some files have labels and others not.
    """
    from ..models.training import FeatureData  # imports torch, so only when reading

    matrices, labels, labeled_files, unlabeled_files = [], [], [], []
    for path in channel_files(folder):
        features, file_labels = read_features(path, content_type, feature_dim)
        if features.shape[0] == 0:
            continue
        if feature_dim is None:
            feature_dim = features.shape[1]
        (labeled_files if file_labels is not None else unlabeled_files).append(path)
        if labeled_files and unlabeled_files:
            raise DataError(f"{labeled_files[0].name} has labels but {unlabeled_files[0].name} "
                            "has none; a channel's files must all have labels or none",
                            path=str(path))
        matrices.append(features)
        labels.append(file_labels)
    if not matrices:
        return FeatureData(sp.csr_matrix((0, feature_dim or 0), dtype=np.float32), None)
    features = sp.vstack(matrices, format="csr", dtype=np.float32)
    return FeatureData(features, np.concatenate(labels) if labeled_files else None)


# --- manifest ------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Manifest:
    """Description of a prepared data set: algorithm, feature_dim, records per channel, the
    featurizer and preprocessing settings, rows skipped by reason, creation time and package
    version."""

    algorithm: str
    feature_dim: int
    records: dict[str, int]
    content_type: str = RECORDIO_PROTOBUF
    featurizer: dict | None = None
    preprocessing: dict = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    created: str = field(default_factory=_now)
    package_version: str = __version__
    format_version: int = MANIFEST_FORMAT_VERSION
    extra: dict = field(default_factory=dict)  # keys written by newer versions, kept as read

    def to_dict(self) -> dict:
        """Return the manifest as a JSON-safe dict, with the `extra` keys merged in."""
        content = asdict(self)
        extra = content.pop("extra")
        return {**extra, **content}

    @classmethod
    def from_dict(cls, content: dict, path: str | None = None) -> "Manifest":
        """Build a manifest from `to_dict()` output.

        Raises `DataError` naming a missing or mistyped required field. Unknown keys, from
        newer versions, are kept in `extra`.
        """
        known = {item.name for item in fields(cls)} - {"extra"}
        for name, kind in (("algorithm", str), ("feature_dim", int), ("records", dict)):
            if name not in content:
                raise DataError(f"manifest is missing {name!r}", path=path, field=name)
            if not isinstance(content[name], kind) or isinstance(content[name], bool):
                raise DataError(f"manifest {name!r} must be {kind.__name__}, got "
                                f"{content[name]!r}", path=path, field=name)
        values = {name: content[name] for name in known if name in content}
        extra = {name: value for name, value in content.items() if name not in known}
        return cls(**values, extra=extra)


def _manifest_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / MANIFEST_NAME if path.is_dir() else path


def write_manifest(path: str | os.PathLike, manifest: Manifest) -> Path:
    """Write manifest.json atomically to `path`, which is the file or its folder."""
    target = _manifest_path(path)
    atomic_write_text(target, json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    return target


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read manifest.json from `path`, which is the file or its folder.

    Raises `UserError` when the file is not found and `DataError` when it is not valid JSON
    or lacks a required field.
    """
    target = _manifest_path(path)
    try:
        content = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"manifest {target} not found; run prepare to write it") from None
    except json.JSONDecodeError as error:
        raise DataError(f"manifest is not valid JSON: {error.msg}", path=str(target),
                        line=error.lineno) from None
    if not isinstance(content, dict):
        raise DataError("manifest must be a JSON object", path=str(target))
    return Manifest.from_dict(content, path=str(target))
