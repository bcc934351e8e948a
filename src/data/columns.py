"""The mapping from canonical columns to the fields of a TSV or CSV row.

A header column named like a canonical column (`review_body`, `star_rating`, ...) maps to it.
`text_column`, `rating_column` and `id_column` name the columns that contain the text, the
star rating and the review id, by header name or by 0-based position ("1" or 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from review_nlp.data.records import REVIEW_COLUMNS
from review_nlp.errors import DataError

# The 15 columns of an amazon-reviews-pds TSV, in file order.
PDS_TSV_COLUMNS: tuple[str, ...] = (
    "marketplace", "customer_id", "review_id", "product_id", "product_parent", "product_title",
    "product_category", "star_rating", "helpful_votes", "total_votes", "vine",
    "verified_purchase", "review_headline", "review_body", "review_date",
)

ColumnRef = str | int | None

# Header names other than the canonical ones that common review exports use, matched without
# regard to case when the caller names no column: Amazon Fine Food (`Text`, `Score`, `Id`),
# MARC (`review_body`, `stars`) and generic CSVs (`text`, `review`, `rating`, `id`).
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "review_body": ("text", "review", "reviewtext", "body", "review_text"),
    "star_rating": ("stars", "score", "rating", "overall", "star"),
    "review_id": ("id",),
}


@dataclass(frozen=True)
class ColumnOptions:
    """The caller's column choices for a TSV or CSV file.

    `header` None means: a CSV has a header unless every given column is a position, and a
    TSV always has one.
    """

    text_column: ColumnRef = None
    rating_column: ColumnRef = None
    id_column: ColumnRef = None
    header: bool | None = None
    require_rating: bool = True

    def overrides(self) -> tuple[tuple[str, str, ColumnRef], ...]:
        """Return (canonical column, option name, reference) for each given column option."""
        choices = (("review_body", "text_column", self.text_column),
                   ("star_rating", "rating_column", self.rating_column),
                   ("review_id", "id_column", self.id_column))
        return tuple(choice for choice in choices if choice[2] is not None)

    def only_positions(self) -> bool:
        """Return whether at least one column is given and every given column is a position."""
        refs = [ref for _, _, ref in self.overrides()]
        return bool(refs) and all(is_position(ref) for ref in refs)


def is_position(ref: ColumnRef) -> bool:
    """Return whether a column reference is a 0-based position (an int or a string of digits)."""
    if isinstance(ref, bool):
        return False
    return isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit())


def resolve_columns(names: Sequence[str] | None, width: int, options: ColumnOptions, *,
                    path: str) -> dict[str, int]:
    """Map canonical column names to field positions for a file with `width` fields per row.

    `names` is the header, or None for a headerless file. Raises `DataError` for an unknown
    column name (listing the available ones), a position out of range, and a file without
    a text column or, when a rating is required, without a rating column.
    """
    clean_names = [name.strip() for name in names] if names is not None else None
    mapping: dict[str, int] = {}
    for position, name in enumerate(clean_names or ()):
        if name in REVIEW_COLUMNS and name not in mapping:
            mapping[name] = position
    _add_aliases(mapping, clean_names)
    for canonical, option, ref in options.overrides():
        mapping[canonical] = _resolve_one(option, ref, clean_names, width, path)
    _require(mapping, "review_body", "text_column", clean_names, path)
    if options.require_rating:
        _require(mapping, "star_rating", "rating_column", clean_names, path)
    return mapping


def _add_aliases(mapping: dict[str, int], names: list[str] | None) -> None:
    if names is None:
        return
    lowered = [name.lower() for name in names]
    for canonical, aliases in HEADER_ALIASES.items():
        if canonical in mapping:
            continue
        for alias in aliases:
            if alias in lowered:
                mapping[canonical] = lowered.index(alias)
                break


def _resolve_one(option: str, ref: ColumnRef, names: list[str] | None, width: int,
                 path: str) -> int:
    if names is not None and str(ref).strip() in names:
        return names.index(str(ref).strip())
    if is_position(ref):
        position = int(ref)
        if position >= width:
            raise DataError(f"{option}={ref!r} is out of range: rows have {width} fields, "
                            f"so positions run from 0 to {width - 1}", path=path)
        return position
    raise DataError(f"{option}={ref!r} is not a column of the file; "
                    f"available columns: {_describe(names)}", path=path, field=str(ref))


def _require(mapping: dict[str, int], canonical: str, option: str,
             names: list[str] | None, path: str) -> None:
    if canonical in mapping:
        return
    flag = "--" + option.replace("_", "-")
    raise DataError(f"no {canonical} column: name it with {flag} ({option}, a column name or "
                    f"a 0-based position); available columns: {_describe(names)}", path=path)


def _describe(names: list[str] | None) -> str:
    if names is None:
        return "none named, because the file has no header; use 0-based positions"
    return ", ".join(repr(name) for name in names)


def select_fields(values: Sequence[str], mapping: dict[str, int]) -> dict[str, str]:
    """Return the raw value of each mapped canonical column from one row."""
    return {canonical: values[position] for canonical, position in mapping.items()}
