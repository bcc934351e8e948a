"""The canonical review record, field parsing and the count of rows skipped by reason.

Every reader turns its layout into the amazon-reviews-pds columns, so one Trino query runs on
an Athena table and on DuckDB alike. Readers hand raw field values to `to_record`, which parses
and checks them. A row that fails a check raises `RowRejected`, and its reason is the key the
`SkipReport` counts it under.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

import pyarrow as pa

REVIEW_SCHEMA = pa.schema([
    pa.field("marketplace", pa.string()),
    pa.field("customer_id", pa.string()),
    pa.field("review_id", pa.string(), nullable=False),
    pa.field("product_id", pa.string()),
    pa.field("product_parent", pa.string()),
    pa.field("product_title", pa.string()),
    pa.field("product_category", pa.string()),
    pa.field("star_rating", pa.int32()),
    pa.field("helpful_votes", pa.int32()),
    pa.field("total_votes", pa.int32()),
    pa.field("vine", pa.bool_()),
    pa.field("verified_purchase", pa.bool_()),
    pa.field("review_headline", pa.string()),
    pa.field("review_body", pa.string(), nullable=False),
    pa.field("review_date", pa.date32()),
    pa.field("year", pa.int32()),
])
REVIEW_COLUMNS: tuple[str, ...] = tuple(REVIEW_SCHEMA.names)

# Skip reasons, the keys of `SkipReport.skipped`.
BAD_FIELD_COUNT = "bad_field_count"
INVALID_CSV = "invalid_csv"
INVALID_JSON = "invalid_json"
INVALID_ENCODING = "invalid_encoding"
MISSING_TEXT = "missing_text"
MISSING_RATING = "missing_rating"
INVALID_RATING = "invalid_rating"
RATING_OUT_OF_RANGE = "rating_out_of_range"
INVALID_BOOLEAN = "invalid_boolean"
INVALID_NUMBER = "invalid_number"
INVALID_DATE = "invalid_date"
DUPLICATE_TEXT = "duplicate_text"

_STRING_COLUMNS = ("marketplace", "customer_id", "review_id", "product_id", "product_parent",
                   "product_title", "product_category")
_TRUE = frozenset({"y", "yes", "true", "t", "1"})
_FALSE = frozenset({"n", "no", "false", "f", "0"})
_EPOCH = dt.date(1970, 1, 1)
_LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# A tag starts with a letter, "/" or "!", so "a < b" and "<3" stay as written.
_TAG = re.compile(r"<[A-Za-z/!][^<>]*>")


class RowRejected(Exception):
    """A row that fails a check; `reason` is the key it is counted under."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class RawRow(NamedTuple):
    """One row as a reader found it: raw values by canonical column, or why it was rejected.

    `line` is the 1-based line where the row starts (the row number within the file for
    Parquet). `blank` marks a blank line, which is neither a row nor a malformed one.
    """

    line: int
    fields: dict[str, Any] | None = None
    reason: str | None = None
    blank: bool = False


@dataclass
class SkipReport:
    """Rows read, kept and skipped by reason, with the first line numbers per reason and file.

    `rows_read == rows_kept + sum(skipped.values())` is true at every point. Blank lines are
    counted in `blank_lines`, not as rows.
    """

    rows_read: int = 0
    rows_kept: int = 0
    blank_lines: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first_lines: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    max_lines_per_reason: int = 5

    def add_kept(self) -> None:
        self.rows_read += 1
        self.rows_kept += 1

    def add_skipped(self, reason: str, path: str | None = None, line: int | None = None) -> None:
        """Count one row read and skipped, remembering where for the first few of each reason."""
        self.rows_read += 1
        self._count_skip(reason, path, line)

    def move_to_skipped(self, reason: str, path: str | None = None,
                        line: int | None = None) -> None:
        """Move one row already counted as kept to the skipped rows, e.g. a duplicate text."""
        self.rows_kept -= 1
        self._count_skip(reason, path, line)

    def _count_skip(self, reason: str, path: str | None, line: int | None) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if path is None or line is None:
            return
        lines = self.first_lines.setdefault(reason, {}).setdefault(path, [])
        if len(lines) < self.max_lines_per_reason:
            lines.append(line)

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-safe data, for a manifest or a log."""
        return {
            "files": list(self.files),
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_skipped": self.rows_skipped,
            "blank_lines": self.blank_lines,
            "skipped": dict(sorted(self.skipped.items())),
            "first_lines": {reason: {path: list(lines) for path, lines in by_file.items()}
                            for reason, by_file in sorted(self.first_lines.items())},
        }

    def summary(self) -> str:
        """Describe the report in one line per skip reason, for the log."""
        lines = [f"read {self.rows_read} rows from {len(self.files)} file(s): "
                 f"kept {self.rows_kept}, skipped {self.rows_skipped}, "
                 f"blank lines {self.blank_lines}"]
        for reason, count in sorted(self.skipped.items()):
            where = "; ".join(f"{path} lines {', '.join(map(str, lines))}"
                              for path, lines in self.first_lines.get(reason, {}).items())
            lines.append(f"  {reason}: {count}" + (f" (first at {where})" if where else ""))
        return "\n".join(lines)


def clean_text(value: Any) -> str | None:
    """Turn review HTML into plain text; return None for a missing or blank text.

    `<br />` becomes a newline, other tags are removed and entities such as `&#34;` are
    unescaped. Entities are unescaped last, so an escaped `&lt;b&gt;` stays visible text.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if "<" in text:
        text = _TAG.sub("", _LINE_BREAK.sub("\n", text))
    if "&" in text:
        text = html.unescape(text)
    text = text.strip()
    return text or None


def parse_rating(value: Any) -> int | None:
    """Parse a star rating of 1 to 5; "4.0" and 4.0 are 4, an empty value is None.

    Raises `RowRejected` with `invalid_rating` for text, booleans and fractions, and with
    `rating_out_of_range` for whole numbers outside 1..5, such as 0.
    """
    number = _parse_number(value, INVALID_RATING)
    if number is None:
        return None
    if number < 1 or number > 5:
        raise RowRejected(RATING_OUT_OF_RANGE, repr(value))
    return number


def parse_count(value: Any) -> int | None:
    """Parse a vote count: a non-negative whole number, "1,234" allowed; empty is None."""
    if isinstance(value, str):
        value = value.replace(",", "")
    number = _parse_number(value, INVALID_NUMBER)
    if number is not None and number < 0:
        raise RowRejected(INVALID_NUMBER, repr(value))
    return number


def _parse_number(value: Any, reason: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise RowRejected(reason, repr(value))
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RowRejected(reason, repr(value)) from None
    if not math.isfinite(number) or not number.is_integer():
        raise RowRejected(reason, repr(value))
    return int(number)


def parse_bool(value: Any) -> bool | None:
    """Parse a flag written Y/N, yes/no, true/false, t/f or 1/0 (any case); empty is None."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RowRejected(INVALID_BOOLEAN, repr(value))


def parse_date(value: Any) -> dt.date | None:
    """Parse a review date: a date, a datetime, "YYYY-MM-DD" or an int count of days since 1970-01-01.

    Parquet exports of amazon-reviews-pds may store `review_date` as such a day count.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return _EPOCH + dt.timedelta(days=value)
        if isinstance(value, str):
            return dt.date.fromisoformat(value.strip()[:10])
    except (ValueError, OverflowError):
        pass
    raise RowRejected(INVALID_DATE, repr(value))


def date_from_epoch(value: Any, *, unit_seconds: float = 1.0) -> dt.date | None:
    """Convert a Unix time (seconds, or milliseconds with `unit_seconds=0.001`) to its UTC date."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value) * unit_seconds
        return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).date()
    except (TypeError, ValueError, OverflowError, OSError):
        raise RowRejected(INVALID_DATE, repr(value)) from None


def to_record(fields: Mapping[str, Any], *, require_rating: bool = True) -> dict[str, Any]:
    """Build a canonical record from raw values keyed by canonical column name.

    Missing columns become null. Raises `RowRejected` for a missing text, a missing rating
    when `require_rating` is set, and any value that does not parse. An invalid rating is
    rejected even when `require_rating` is off, because it is a broken row, not an unrated one.
    """
    body = clean_text(fields.get("review_body"))
    if body is None:
        raise RowRejected(MISSING_TEXT)
    rating = parse_rating(fields.get("star_rating"))
    if rating is None and require_rating:
        raise RowRejected(MISSING_RATING)
    review_date = parse_date(fields.get("review_date"))
    record = {name: _optional_string(fields.get(name)) for name in _STRING_COLUMNS}
    record.update(
        star_rating=rating,
        helpful_votes=parse_count(fields.get("helpful_votes")),
        total_votes=parse_count(fields.get("total_votes")),
        vine=parse_bool(fields.get("vine")),
        verified_purchase=parse_bool(fields.get("verified_purchase")),
        review_headline=clean_text(fields.get("review_headline")),
        review_body=body,
        review_date=review_date,
        year=_year(fields.get("year"), review_date),
    )
    return record


def _optional_string(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def _year(value: Any, review_date: dt.date | None) -> int | None:
    year = _parse_number(value, INVALID_NUMBER)
    if year is None and review_date is not None:
        return review_date.year
    return year


def synthetic_review_id(file_name: str, line: int) -> str:
    """Make a review id for layouts without one: the file name without extensions, ":", the line.

    The id is stable while the file is unchanged, and unique within a source because
    `file_name` is the path relative to the source's root. A hash of user, product and time
    would not be unique, because the 2018 5-core files repeat one review across product
    variants with the same user, product and time.
    """
    folder, _, base = file_name.rpartition("/")
    stem = base.split(".", 1)[0] or base
    return f"{folder}/{stem}:{line}" if folder else f"{stem}:{line}"


def batches_from_records(records: Iterable[Mapping[str, Any]],
                         batch_size: int) -> Iterator[pa.RecordBatch]:
    """Group canonical records into `REVIEW_SCHEMA` batches of at most `batch_size` rows."""
    iterator = iter(records)
    while chunk := list(itertools.islice(iterator, batch_size)):
        yield pa.RecordBatch.from_pylist(chunk, schema=REVIEW_SCHEMA)


def text_digest(text: str) -> bytes:
    """Return a 16-byte digest of a review text, so a set of texts already seen stays small."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def deduplicate_texts(batches: Iterable[pa.RecordBatch],
                      report: SkipReport | None = None) -> Iterator[pa.RecordBatch]:
    """Drop rows whose `review_body` equals that of an earlier row, keeping the first.

    The 2018 5-core files repeat one review across product variants, which would leak test
    rows into training after a split. Memory grows by 16 bytes per distinct text, not with the
    batch. Dropped rows move from kept to skipped under `duplicate_text` in `report`. Batches
    carry no line numbers, so use `open_reviews(..., drop_duplicate_texts=True)` where the
    report should name the lines.
    """
    seen: set[bytes] = set()
    for batch in batches:
        keep = []
        for text in batch.column("review_body").to_pylist():
            digest = text_digest(text or "")
            keep.append(digest not in seen)
            seen.add(digest)
        dropped = keep.count(False)
        if report is not None:
            for _ in range(dropped):
                report.move_to_skipped(DUPLICATE_TEXT)
        yield batch.filter(pa.array(keep, type=pa.bool_())) if dropped else batch
