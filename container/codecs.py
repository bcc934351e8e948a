"""Request and response formats of /invocations, as the built-in NTM and K-Means accept them.

Requests (Content-Type):
    text/csv                          one dense row per line, no header (`label_size=0`)
    application/json                  {"instances": [...]}, one instance, or a list of rows
    application/jsonlines             one instance per line
    application/x-recordio-protobuf   one Record per row, dense or sparse `features["values"]`
    text/plain                        raw review text, one review per line

An instance is a dense row `[0.0, 1.0, ...]`, `{"features": [...]}`,
`{"data": {"features": {"values": [...]}}}`, a sparse row
`{"data": {"features": {"keys": [...], "values": [...], "shape": [feature_dim]}}}`, or a
review text string (application/json and application/jsonlines only).

Responses (Accept): application/json `{"predictions": [...]}` (also for `*/*` and no Accept),
application/jsonlines, application/x-recordio-protobuf (one Record per row with the outputs
in `label`, `features` empty) and text/csv (one row of values per prediction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import scipy.sparse as sp

from ..errors import UserError

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
RECORDIO = "application/x-recordio-protobuf"
TEXT = "text/plain"

JSONLINES_ALIASES = {JSONLINES, "application/x-jsonlines", "application/jsonl"}
REQUEST_TYPES = (CSV, JSON, JSONLINES, RECORDIO, TEXT)
RESPONSE_TYPES = (JSON, JSONLINES, RECORDIO, CSV)

# CSV columns of a prediction, in the built-ins' order where they define one.
CSV_FIELD_ORDER = ("closest_cluster", "distance_to_cluster", "predicted_stars",
                   "expected_stars", "sentiment", "probabilities", "topic_weights")


class RequestError(Exception):
    """A request the client must change; `status` is the HTTP status of the response."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class UnsupportedMediaType(RequestError):
    status = 415


@dataclass
class DecodedRequest:
    """Either a feature matrix or review texts, with the row count the response must match."""

    features: sp.csr_matrix | None = None
    texts: list[str] | None = None

    @property
    def n_rows(self) -> int:
        return self.features.shape[0] if self.features is not None else len(self.texts or [])


def parse_media_type(header: str | None) -> tuple[str, dict[str, str]]:
    """Split `text/csv; charset=utf-8; label_size=0` into ("text/csv", {...})."""
    if not header:
        return "", {}
    parts = header.split(";")
    media_type = parts[0].strip().lower()
    params = {}
    for part in parts[1:]:
        name, _, value = part.partition("=")
        if name.strip():
            params[name.strip().lower()] = value.strip().strip('"')
    return media_type, params


# --- requests ---------------------------------------------------------------------------------

def decode_request(body: bytes, content_type: str | None, feature_dim: int) -> DecodedRequest:
    """Parse a request body into rows of `feature_dim` features, or into review texts."""
    media_type, params = parse_media_type(content_type)
    if not body.strip():
        raise RequestError("the request body is empty; send at least one record")
    if media_type == CSV:
        return DecodedRequest(features=_decode_csv(_text(body, params), params, feature_dim))
    if media_type == JSON:
        return _decode_json(_text(body, params), feature_dim)
    if media_type in JSONLINES_ALIASES:
        return _decode_instances(_json_lines(_text(body, params)), feature_dim)
    if media_type == RECORDIO:
        return DecodedRequest(features=_decode_recordio(body, feature_dim))
    if media_type == TEXT:
        texts = [line.strip() for line in _text(body, params).splitlines() if line.strip()]
        return DecodedRequest(texts=texts)
    raise UnsupportedMediaType(
        f"Content-Type {content_type!r} is not supported; use one of {', '.join(REQUEST_TYPES)}")


def _text(body: bytes, params: dict[str, str]) -> str:
    encoding = params.get("charset") or "utf-8"
    try:
        return body.decode(encoding)
    except LookupError:
        raise RequestError(f"charset {encoding!r} is not a known text encoding") from None
    except UnicodeDecodeError as error:
        raise RequestError(f"the body is not valid {encoding}: {error}") from None


def _decode_csv(text: str, params: dict[str, str], feature_dim: int) -> sp.csr_matrix:
    try:
        label_size = int(params.get("label_size") or 0)
    except ValueError:
        raise RequestError(f"label_size={params['label_size']!r} must be an integer") from None
    lines = [line for line in text.splitlines() if line.strip()]
    rows = [line.split(",") for line in lines]
    for number, row in enumerate(rows, start=1):
        _check_width(len(row) - label_size, feature_dim, number)
    try:
        dense = np.array([row[label_size:] for row in rows], dtype=np.float32)
    except ValueError as error:
        raise RequestError(f"CSV values must be numbers: {error}") from None
    _check_finite(dense, "the CSV body")
    return sp.csr_matrix(dense)


def _check_width(width: int, feature_dim: int, row_number: int) -> None:
    if width != feature_dim:
        raise RequestError(
            f"row {row_number} has {width} features but the model expects "
            f"feature_dim={feature_dim}")


def _check_finite(values: np.ndarray, where: str) -> None:
    # json.loads turns null into None and np.asarray turns None into NaN; NaN and inf
    # features would give NaN predictions, which JSON cannot carry.
    if not np.isfinite(values).all():
        raise RequestError(f"{where}: features must be finite numbers (no null, NaN or inf)")


def _json_lines(text: str) -> list[Any]:
    instances = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            instances.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise RequestError(f"line {number} is not valid JSON: {error}") from None
        except RecursionError:
            raise RequestError(f"line {number} nests JSON too deeply") from None
    return instances


def _decode_json(text: str, feature_dim: int) -> DecodedRequest:
    try:
        document = json.loads(text)
    except RecursionError:
        raise RequestError("the body nests JSON arrays or objects too deeply") from None
    except json.JSONDecodeError as error:
        # Batch transform with SplitType=Line and BatchStrategy=MultiRecord sends several
        # JSON documents, one per line, under application/json.
        if error.msg == "Extra data":
            return _decode_instances(_json_lines(text), feature_dim)
        raise RequestError(f"the body is not valid JSON: {error}") from None
    if isinstance(document, dict) and "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise RequestError('"instances" must be a list')
        return _decode_instances(instances, feature_dim)
    if isinstance(document, list) and document and all(
            isinstance(item, (list, dict, str)) for item in document):
        return _decode_instances(document, feature_dim)
    return _decode_instances([document], feature_dim)


def _decode_instances(instances: list[Any], feature_dim: int) -> DecodedRequest:
    if not instances:
        raise RequestError("the request contains no instances; send at least one record")
    texts = [item for item in instances if isinstance(item, str)]
    if texts:
        if len(texts) != len(instances):
            raise RequestError("instances mix review texts and feature vectors; send one kind")
        return DecodedRequest(texts=texts)

    indptr = [0]
    indices: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for number, instance in enumerate(instances, start=1):
        row_indices, row_values = _instance_row(instance, feature_dim, number)
        indices.append(row_indices)
        values.append(row_values)
        indptr.append(indptr[-1] + len(row_indices))
    matrix = sp.csr_matrix(
        (np.concatenate(values), np.concatenate(indices), np.asarray(indptr)),
        shape=(len(instances), feature_dim), dtype=np.float32)
    return DecodedRequest(features=matrix)


def _instance_row(instance: Any, feature_dim: int, number: int) -> tuple[np.ndarray, np.ndarray]:
    """(column indices, values) of one JSON instance."""
    features = instance
    if isinstance(features, dict):
        if "data" in features:
            features = features["data"]
        if isinstance(features, dict) and "features" in features:
            features = features["features"]
        else:
            raise RequestError(
                f'instance {number} has no "features"; send {{"features": [...]}} or '
                f'{{"data": {{"features": {{"values": [...]}}}}}}')
    if isinstance(features, dict) and "keys" in features:
        return _sparse_row(features, feature_dim, number)
    if isinstance(features, dict):
        if "values" not in features:
            raise RequestError(f'instance {number}: "features" has no "values"')
        features = features["values"]
    if not isinstance(features, list):
        raise RequestError(f"instance {number}: features must be a list of numbers")
    _check_width(len(features), feature_dim, number)
    try:
        dense = np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise RequestError(f"instance {number}: features must be numbers: {error}") from None
    if dense.ndim != 1:
        raise RequestError(f"instance {number}: features must be a flat list of numbers")
    _check_finite(dense, f"instance {number}")
    nonzero = np.flatnonzero(dense)
    return nonzero.astype(np.int64), dense[nonzero]


def _sparse_row(features: dict[str, Any], feature_dim: int, number: int
                ) -> tuple[np.ndarray, np.ndarray]:
    shape = features.get("shape")
    if shape is not None:
        if (not isinstance(shape, list) or len(shape) != 1 or not isinstance(shape[0], int)
                or isinstance(shape[0], bool)):
            raise RequestError(f'instance {number}: "shape" must be [feature_dim], an integer')
        _check_width(shape[0], feature_dim, number)
    try:
        keys = np.asarray(features.get("keys") or [], dtype=np.int64)
        row_values = np.asarray(features.get("values") or [], dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise RequestError(f"instance {number}: keys and values must be numbers: {error}") \
            from None
    if keys.ndim != 1 or row_values.ndim != 1 or len(keys) != len(row_values):
        raise RequestError(
            f"instance {number}: keys and values must be flat lists of the same length "
            f"(got {keys.size} keys and {row_values.size} values)")
    _check_finite(row_values, f"instance {number}")
    outside = keys[(keys < 0) | (keys >= feature_dim)]
    if outside.size:
        raise RequestError(
            f"instance {number}: key {int(outside[0])} is outside [0, {feature_dim}) "
            f"for feature_dim={feature_dim}")
    return keys, row_values


def _decode_recordio(body: bytes, feature_dim: int) -> sp.csr_matrix:
    from ..data import recordio

    try:
        features, _labels = recordio.read_matrix(body)
    except UserError as error:
        raise RequestError(f"the body is not valid RecordIO-protobuf: {error}") from None
    if features.shape[0] == 0:
        raise RequestError("the RecordIO-protobuf body contains no records")
    _check_width(features.shape[1], feature_dim, 1)
    _check_finite(features.data, "the RecordIO-protobuf body")
    return features


# --- responses --------------------------------------------------------------------------------

def choose_response_type(accept: str | None) -> str:
    """Return the response media type for an Accept header: JSON for `*/*` or none."""
    if not accept or not accept.strip():
        return JSON
    candidates = []
    for position, item in enumerate(accept.split(",")):
        media_type, params = parse_media_type(item)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 1.0
        if quality > 0:
            candidates.append((-quality, position, media_type))
    for _, _, media_type in sorted(candidates):
        if media_type in ("*/*", "application/*", "") or media_type == JSON:
            return JSON
        if media_type in JSONLINES_ALIASES:
            return JSONLINES
        if media_type in (RECORDIO, CSV):
            return media_type
    raise UnsupportedMediaType(
        f"Accept {accept!r} is not supported; use one of {', '.join(RESPONSE_TYPES)}")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_response(predictions: list[dict[str, Any]], media_type: str) -> bytes:
    if media_type == JSON:
        return json.dumps({"predictions": predictions}, default=_json_default).encode()
    if media_type == JSONLINES:
        return "".join(json.dumps(row, default=_json_default) + "\n"
                       for row in predictions).encode()
    if media_type == RECORDIO:
        return _encode_recordio(predictions)
    if media_type == CSV:
        return "".join(_csv_line(row) for row in predictions).encode()
    raise UnsupportedMediaType(f"cannot encode a response as {media_type!r}")


def _csv_fields(row: dict[str, Any]) -> Iterable[str]:
    ordered = [name for name in CSV_FIELD_ORDER if name in row]
    ordered += [name for name in row if name not in CSV_FIELD_ORDER]
    return ordered


def _csv_cells(value: Any) -> list[str]:
    """Expand a value into CSV cells: lists and nested dicts (the rating model's
    Comprehend-shaped `sentiment`) in order, numbers as floats."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [cell for item in value.values() for cell in _csv_cells(item)]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [cell for item in value for cell in _csv_cells(item)]
    return [repr(float(value))]


def _csv_line(row: dict[str, Any]) -> str:
    return ",".join(cell for name in _csv_fields(row) for cell in _csv_cells(row[name])) + "\n"


def _is_numeric(value: Any) -> bool:
    if isinstance(value, (list, tuple, np.ndarray)):
        return all(_is_numeric(item) for item in value)
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _encode_recordio(predictions: list[dict[str, Any]]) -> bytes:
    """Encode one framed Record per prediction with the outputs in `label`.

    Numbers become float32 tensors and a string a Bytes value (text/plain). Anything else,
    such as the rating model's Comprehend-shaped `sentiment` dict, becomes a Bytes value
    containing its JSON (application/json).
    """
    from ..data import recordio

    frames = []
    for row in predictions:
        numbers = {name: value for name, value in row.items() if _is_numeric(value)}
        record = recordio.RecordMessage.FromString(recordio.encode_label_record(numbers))
        for name, value in row.items():
            if name in numbers:
                continue
            holder = record.label[name].bytes
            if isinstance(value, str):
                holder.value.append(value.encode("utf-8"))
                holder.content_type = "text/plain"
            else:
                holder.value.append(json.dumps(value, default=_json_default).encode("utf-8"))
                holder.content_type = JSON
        frames.append(recordio.frame(record.SerializeToString()))
    return b"".join(frames)
