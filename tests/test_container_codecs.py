"""Request and response formats of /invocations, without a server."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import scipy.sparse as sp

from review_nlp.container import codecs
from review_nlp.data import recordio

DIM = 4


def dense(decoded: codecs.DecodedRequest) -> np.ndarray:
    return decoded.features.toarray()


@pytest.mark.parametrize("body, content_type", [
    (b"1,0,2,0", "text/csv"),
    (b"1,0,2,0\n", "text/csv"),
    (b"1,0,2,0\r\n", "text/csv; charset=utf-8"),
    (b"1,0,2,0", "text/csv;label_size=0"),
    (b"9,1,0,2,0", "text/csv; label_size=1"),
    (b'{"features": [1, 0, 2, 0]}', "application/json"),
    (b'{"instances": [{"features": [1, 0, 2, 0]}]}', "application/json"),
    (b'{"instances": [{"data": {"features": {"values": [1, 0, 2, 0]}}}]}', "application/json"),
    (b'{"instances": [{"data": {"features": {"keys": [0, 2], "values": [1, 2], "shape": [4]}}}]}',
     "application/json"),
    (b'{"instances": [[1, 0, 2, 0]]}', "application/json"),
    (b"[[1, 0, 2, 0]]", "application/json; charset=utf-8"),
    (b'{"features": [1, 0, 2, 0]}\n', "application/jsonlines"),
    (b'{"data": {"features": {"keys": [0, 2], "values": [1, 2], "shape": [4]}}}',
     "application/jsonlines"),
])
def test_one_row_in_every_format(body, content_type):
    decoded = codecs.decode_request(body, content_type, DIM)
    np.testing.assert_array_equal(dense(decoded), [[1, 0, 2, 0]])


def test_csv_several_rows():
    decoded = codecs.decode_request(b"1,0,0,0\n0,1,0,0\n\n0,0,0,1\n", "text/csv", DIM)
    np.testing.assert_array_equal(dense(decoded), np.eye(DIM)[[0, 1, 3]])


def test_jsonlines_several_rows():
    body = b'{"features": [1, 0, 0, 0]}\n[0, 1, 0, 0]\n'
    decoded = codecs.decode_request(body, "application/jsonlines", DIM)
    np.testing.assert_array_equal(dense(decoded), np.eye(DIM)[[0, 1]])


def test_json_lines_under_application_json_for_batch_transform():
    body = b'{"features": [1, 0, 0, 0]}\n{"features": [0, 1, 0, 0]}\n'
    decoded = codecs.decode_request(body, "application/json", DIM)
    assert decoded.n_rows == 2


@pytest.mark.parametrize("body, content_type", [
    (b"great product\nterrible\n", "text/plain"),
    (b"great product\nterrible", "text/plain; charset=utf-8"),
    (b'{"instances": ["great product", "terrible"]}', "application/json"),
    (b'"great product"\n"terrible"\n', "application/jsonlines"),
])
def test_review_text_in(body, content_type):
    decoded = codecs.decode_request(body, content_type, DIM)
    assert decoded.texts == ["great product", "terrible"]
    assert decoded.features is None


@pytest.mark.parametrize("body, content_type, message", [
    (b"1,0,2", "text/csv", "row 1 has 3 features but the model expects feature_dim=4"),
    (b"1,0,2,0\n1,2", "text/csv", "row 2 has 2 features"),
    (b"1,0,x,0", "text/csv", "CSV values must be numbers"),
    (b'{"features": [1, 2]}', "application/json", "has 2 features but the model expects "
                                                  "feature_dim=4"),
    (b'{"instances": [{"data": {"features": {"keys": [7], "values": [1], "shape": [4]}}}]}',
     "application/json", "key 7 is outside"),
    (b'{"instances": [{"data": {"features": {"keys": [1], "values": [1], "shape": [9]}}}]}',
     "application/json", "has 9 features"),
    (b'{"instances": [{"data": {"features": {"keys": [1, 2], "values": [1]}}}]}',
     "application/json", "same length"),
    (b'{"instances": [{"data": {"features": {"keys": [1], "values": [1], "shape": ["x"]}}}]}',
     "application/json", '"shape" must be [feature_dim]'),
    (b'{"instances": [{"features": [[1, 0], [2, 0]]}]}', "application/json", "has 2 features"),
    (b'{"features": [1, null, 2, 0]}', "application/json", "must be finite numbers"),
    (b"1,nan,2,0", "text/csv", "must be finite numbers"),
    (b'{"instances": [{"data": {"features": {"keys": [1], "values": [Infinity]}}}]}',
     "application/json", "must be finite numbers"),
    (b'{"features": "1,0,2,0"}', "application/json", "must be a list of numbers"),
    (b"5", "application/json", "must be a list of numbers"),
    (b'{"instances": [{"text": "x"}]}', "application/json", 'has no "features"'),
    (b'{"instances": ["good", [1, 0, 0, 0]]}', "application/json", "mix review texts"),
    (b'{"instances": []}', "application/json", "no instances"),
    (b'{"features": [1, 0, 2', "application/json", "not valid JSON"),
    (b"not json\n", "application/jsonlines", "line 1 is not valid JSON"),
    (b"", "text/csv", "empty"),
    (b"\xff\xfe", "text/csv", "not valid utf-8"),
])
def test_bad_requests_are_400_with_reason(body, content_type, message):
    with pytest.raises(codecs.RequestError) as raised:
        codecs.decode_request(body, content_type, DIM)
    assert raised.value.status == 400
    assert message in str(raised.value)


@pytest.mark.parametrize("content_type", ["image/png", "application/xml", None, ""])
def test_unsupported_content_type_is_415(content_type):
    with pytest.raises(codecs.UnsupportedMediaType) as raised:
        codecs.decode_request(b"1,0,2,0", content_type, DIM)
    assert raised.value.status == 415


@pytest.mark.parametrize("accept, expected", [
    (None, codecs.JSON), ("", codecs.JSON), ("*/*", codecs.JSON),
    ("application/json", codecs.JSON), ("application/json; charset=utf-8", codecs.JSON),
    ("application/jsonlines", codecs.JSONLINES), ("application/x-jsonlines", codecs.JSONLINES),
    ("application/x-recordio-protobuf", codecs.RECORDIO), ("text/csv", codecs.CSV),
    ("text/html, text/csv;q=0.5", codecs.CSV),
    ("application/jsonlines;q=0.2, application/json", codecs.JSON),
])
def test_choose_response_type(accept, expected):
    assert codecs.choose_response_type(accept) == expected


def test_unsupported_accept_is_415():
    with pytest.raises(codecs.UnsupportedMediaType, match="Accept 'text/html'"):
        codecs.choose_response_type("text/html")


KMEANS_ROWS = [{"closest_cluster": 1.0, "distance_to_cluster": 3.0},
               {"closest_cluster": 0.0, "distance_to_cluster": 23.5}]


def test_json_response_has_predictions():
    body = codecs.encode_response(KMEANS_ROWS, codecs.JSON)
    assert json.loads(body) == {"predictions": KMEANS_ROWS}


def test_jsonlines_response_one_object_per_line():
    lines = codecs.encode_response(KMEANS_ROWS, codecs.JSONLINES).decode().splitlines()
    assert [json.loads(line) for line in lines] == KMEANS_ROWS


def test_kmeans_csv_response_in_built_in_order():
    rows = [{"distance_to_cluster": 3.0, "closest_cluster": 1.0}]
    assert codecs.encode_response(rows, codecs.CSV) == b"1.0,3.0\n"


def test_csv_response_expands_lists():
    rows = [{"topic_weights": [0.25, 0.75]}]
    assert codecs.encode_response(rows, codecs.CSV) == b"0.25,0.75\n"


def test_json_response_accepts_numpy_values():
    rows = [{"topic_weights": np.array([0.5, 0.5], dtype=np.float32),
             "closest_cluster": np.float32(2.0)}]
    decoded = json.loads(codecs.encode_response(rows, codecs.JSON))
    assert decoded["predictions"][0] == {"topic_weights": [0.5, 0.5], "closest_cluster": 2.0}


def test_parse_media_type_params():
    assert codecs.parse_media_type('Text/CSV; charset="utf-8"; label_size=0') == (
        "text/csv", {"charset": "utf-8", "label_size": "0"})


def test_decoded_request_row_count():
    assert codecs.DecodedRequest(texts=["a", "b"]).n_rows == 2


@pytest.mark.parametrize("make", [np.asarray, sp.csr_matrix])
def test_recordio_request_dense_and_sparse(make):
    matrix = np.array([[1, 0, 2, 0], [0, 0, 0, 3]], dtype=np.float32)
    stream = io.BytesIO()
    recordio.write_matrix(stream, make(matrix))
    decoded = codecs.decode_request(stream.getvalue(), codecs.RECORDIO, DIM)
    np.testing.assert_array_equal(dense(decoded), matrix)


def test_recordio_request_published_sparse_vector():
    # Sparse row of the format reference: vocab 10, word 2 count 1.0, word 7 count 3.0.
    body = bytes.fromhex("0a23d7ce1f000000"
                         "0a1d0a0676616c756573121312110a080000803f00004040120202071a010a00")
    decoded = codecs.decode_request(body, codecs.RECORDIO, 10)
    np.testing.assert_array_equal(dense(decoded)[0, [2, 7]], [1.0, 3.0])


def test_recordio_request_wrong_width_is_400():
    stream = io.BytesIO()
    recordio.write_matrix(stream, np.ones((1, 3), dtype=np.float32))
    with pytest.raises(codecs.RequestError, match="has 3 features but the model expects"):
        codecs.decode_request(stream.getvalue(), codecs.RECORDIO, DIM)


def test_recordio_request_garbage_is_400():
    with pytest.raises(codecs.RequestError, match="not valid RecordIO-protobuf"):
        codecs.decode_request(b"not recordio at all", codecs.RECORDIO, DIM)


def decode_response_records(body: bytes) -> list:
    return [recordio.decode_record(payload)
            for payload in recordio.read_recordio(io.BytesIO(body))]


def test_recordio_response_one_record_per_row():
    records = decode_response_records(codecs.encode_response(KMEANS_ROWS, codecs.RECORDIO))
    assert len(records) == 2
    assert records[1].features == {}
    assert records[1].label["closest_cluster"].values.tolist() == [0.0]
    assert records[1].label["distance_to_cluster"].values.tolist() == [23.5]


def test_recordio_response_matches_published_kmeans_record():
    body = codecs.encode_response([{"closest_cluster": 5.0, "distance_to_cluster": 36.5}],
                                  codecs.RECORDIO)
    (record,) = decode_response_records(body)
    published = recordio.decode_record(bytes.fromhex(
        "121b0a0f636c6f736573745f636c7573746572120812060a040000a040121f0a1364697374616e63655f"
        "746f5f636c7573746572120812060a0400001242"))
    assert sorted(record.label) == sorted(published.label)
    for name, tensor in published.label.items():
        assert record.label[name].values.tolist() == tensor.values.tolist()


RATING_ROW = {"probabilities": [0.1, 0.1, 0.1, 0.2, 0.5], "predicted_stars": 5,
              "expected_stars": 3.9,
              "sentiment": {"Sentiment": "POSITIVE",
                            "SentimentScore": {"Positive": 0.7, "Negative": 0.2}}}


def test_recordio_response_carries_strings_and_dicts_as_bytes():
    rows = [{"predicted_stars": 5.0, "label": "positive"}, RATING_ROW]
    first, second = decode_response_records(codecs.encode_response(rows, codecs.RECORDIO))
    assert first.label["predicted_stars"].values.tolist() == [5.0]
    assert first.label["label"].values == [b"positive"]
    assert first.label["label"].content_type == "text/plain"
    assert second.label["probabilities"].values.tolist() == pytest.approx(
        RATING_ROW["probabilities"])
    assert json.loads(second.label["sentiment"].values[0]) == RATING_ROW["sentiment"]
    assert second.label["sentiment"].content_type == "application/json"


def test_rating_csv_response_expands_sentiment():
    line = codecs.encode_response([RATING_ROW], codecs.CSV).decode().strip()
    assert line == "5.0,3.9,POSITIVE,0.7,0.2,0.1,0.1,0.1,0.2,0.5"


@pytest.mark.parametrize("content_type", ["application/json", "application/jsonlines"])
def test_deeply_nested_json_is_400(content_type):
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(codecs.RequestError, match="too deeply") as raised:
        codecs.decode_request(body, content_type, feature_dim=3)
    assert raised.value.status == 400
