"""Amazon Review Data JSON lines (McAuley et al.): the 2014/2018 and the 2023 field names.

2014 and 2018 (Ni, Li and McAuley, EMNLP 2019): `overall`, `reviewText`, `summary`, `asin`,
`reviewerID`, `unixReviewTime` in seconds, `verified`, `vote` (a string such as "1,234"), and
in 2014 `helpful` as [helpful votes, total votes].
2023 (the McAuley Lab's Amazon Reviews 2023 release): `rating`,
`title`, `text`, `asin`, `parent_asin`, `user_id`, `timestamp` in milliseconds,
`verified_purchase`, `helpful_vote`.
Neither has a review id, so the source makes one from the file name and line number.
Objects that already use the canonical column names are read as they are.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

from review_nlp.data.lines import iter_lines
from review_nlp.data.records import (
    INVALID_ENCODING, INVALID_JSON, INVALID_NUMBER, REVIEW_COLUMNS, RawRow, RowRejected,
    date_from_epoch)
from review_nlp.errors import DataError

_MILLISECONDS = 0.001


def read_jsonlines(uri: str | os.PathLike, *, client: Any = None) -> Iterator[RawRow]:
    """Yield one raw row per line of a JSON lines file (plain or gzipped).

    A line that is not a JSON object is rejected as `invalid_json`. Raises `DataError` for a
    file that contains one JSON array instead of one object per line.
    """
    path = str(uri)
    seen_content = False
    for line in iter_lines(path, client=client):
        if not line.text.strip():
            yield RawRow(line.number, blank=True)
            continue
        if not line.valid:
            yield RawRow(line.number, reason=INVALID_ENCODING)
            continue
        if not seen_content and line.text.lstrip().startswith("["):
            raise DataError("expected JSON lines (one object per line), found a JSON array",
                            path=path, line=line.number)
        seen_content = True
        yield _parse_line(line.number, line.text)


def _parse_line(number: int, text: str) -> RawRow:
    try:
        document = json.loads(text)
    except ValueError:
        return RawRow(number, reason=INVALID_JSON)
    if not isinstance(document, dict):
        return RawRow(number, reason=INVALID_JSON)
    try:
        return RawRow(number, review_fields(document))
    except RowRejected as rejected:
        return RawRow(number, reason=rejected.reason)


def review_fields(document: dict[str, Any]) -> dict[str, Any]:
    """Map one review object of any supported naming to raw canonical fields."""
    if "review_body" in document:
        return {name: document[name] for name in REVIEW_COLUMNS if name in document}
    if "reviewText" in document or "overall" in document or "reviewerID" in document:
        return _fields_2018(document)
    return _fields_2023(document)


def _fields_2018(document: dict[str, Any]) -> dict[str, Any]:
    fields = {
        "customer_id": document.get("reviewerID"),
        "product_id": document.get("asin"),
        "star_rating": document.get("overall"),
        "verified_purchase": document.get("verified"),
        "review_headline": document.get("summary"),
        "review_body": document.get("reviewText"),
        "review_date": date_from_epoch(document.get("unixReviewTime")),
        "helpful_votes": document.get("vote"),
    }
    helpful = document.get("helpful")
    if helpful is not None:
        if not isinstance(helpful, list) or len(helpful) != 2:
            raise RowRejected(INVALID_NUMBER, f"helpful={helpful!r}")
        fields["helpful_votes"], fields["total_votes"] = helpful
    return fields


def _fields_2023(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "customer_id": document.get("user_id"),
        "product_id": document.get("asin"),
        "product_parent": document.get("parent_asin"),
        "star_rating": document.get("rating"),
        "helpful_votes": document.get("helpful_vote"),
        "verified_purchase": document.get("verified_purchase"),
        "review_headline": document.get("title"),
        "review_body": document.get("text"),
        "review_date": date_from_epoch(document.get("timestamp"), unit_seconds=_MILLISECONDS),
    }
