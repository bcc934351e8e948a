"""Numbered text lines from a local or S3 file, plain or gzipped, decoded as UTF-8 one by one."""

from __future__ import annotations

import os
from typing import Any, Iterator, NamedTuple

from review_nlp.data.storage import open_binary

_BYTE_ORDER_MARK = "\ufeff"


class TextLine(NamedTuple):
    """One line with its terminator; `valid` is False when it was not UTF-8.

    An invalid line is decoded with U+FFFD replacement characters so that a CSV parser can
    still find where the record ends.
    """

    number: int
    text: str
    valid: bool


def iter_lines(uri: str | os.PathLike, *, client: Any = None) -> Iterator[TextLine]:
    """Yield the lines of a file, split on b"\\n" only, with 1-based line numbers.

    A lone "\\r" inside a review stays part of its line. A UTF-8 byte order mark at the start
    is removed. Gzip input is recognised by its magic bytes and decompressed while streaming.
    """
    with open_binary(uri, decompress=True, client=client) as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                text, valid = raw.decode("utf-8"), True
            except UnicodeDecodeError:
                text, valid = raw.decode("utf-8", errors="replace"), False
            if number == 1 and text.startswith(_BYTE_ORDER_MARK):
                text = text[1:]
            yield TextLine(number, text, valid)


def strip_line_end(text: str) -> str:
    """Remove a trailing "\\n" or "\\r\\n"."""
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text
