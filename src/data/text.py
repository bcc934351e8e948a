"""Text preprocessing for review bodies: HTML stripping, tokenizing, stop words, lemmas, stems.

The analysis of one token (contraction split, lemma, stop-word test, stem) depends on the
token alone, so `TextPreprocessor` computes it once per distinct whitespace-separated chunk
and caches it. A document then costs one `str.split` plus one dictionary lookup per chunk,
which makes it several times faster than running a spaCy pipeline per document
(bench/preprocess.py measures both).

Lemmas come from the English `lemma_lookup` table of the `spacy-lookups-data` package, the
table spaCy's lemmatizer uses in "lookup" mode, read from the installed package (nothing is
downloaded). Stop words are spaCy's English list by default or scikit-learn's, which the
AWS review workshop used with `CountVectorizer(stop_words="english")`.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
import json
import re
from dataclasses import asdict, dataclass, fields
from itertools import chain
from typing import Iterable, Iterator

from ..errors import InvalidHyperparameter, UserError

# Letters with internal apostrophes ("don't", "o'clock"). Digits and "_" end a token.
DEFAULT_TOKEN_PATTERN = r"[^\W\d_]+(?:'[^\W\d_]+)*"

STOP_WORD_LISTS = ("spacy", "sklearn")

_HTML_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")
# Right single quotation mark, left single quotation mark, modifier letter apostrophe.
_APOSTROPHES = ("\u2019", "\u2018", "\u02bc")

# English clitics split off the end of a token, as spaCy's English tokenizer does, and the
# word each one stands for. "'s" is dropped because it may mean "is", "has" or a possessive.
_CLITIC = re.compile(r"^(?P<head>.+?)(?P<clitic>n't|'s|'m|'re|'ve|'ll|'d)$", re.IGNORECASE)
_CLITIC_WORDS = {"n't": "not", "'re": "are", "'ve": "have", "'ll": "will", "'m": "am",
                 "'d": "would", "'s": None}
# Heads that are not words once "n't" is split off ("can't" -> "ca" + "n't").
_NEGATED_HEADS = {"ca": "can", "wo": "will", "sha": "shall", "ai": "is"}

# Distinct chunks cached per preprocessor before the cache starts over, so that a stream
# of misspellings cannot grow memory without limit.
_MAX_CACHED_CHUNKS = 1 << 20


@dataclass(frozen=True)
class TextConfig:
    """Settings that turn one review text into a list of terms.

    Steps, in order: strip HTML tags and decode entities, lowercase, find tokens with
    `token_pattern`, split English contractions ("didn't" -> "did" + "not"), lemmatize with
    spaCy's lookup table, drop stop words (tested on the token and on its lemma), stem with
    the Snowball English stemmer, and drop terms shorter than `min_token_length` characters.
    """

    lowercase: bool = True
    strip_html: bool = True
    remove_stop_words: bool = True
    stop_words: str = "spacy"
    extra_stop_words: tuple[str, ...] = ()
    keep_words: tuple[str, ...] = ()
    lemmatize: bool = True
    stem: bool = False
    split_contractions: bool = True
    min_token_length: int = 2
    token_pattern: str = DEFAULT_TOKEN_PATTERN

    def __post_init__(self):
        # JSON gives lists, but the frozen dataclass keeps tuples so that it stays hashable.
        object.__setattr__(self, "extra_stop_words", tuple(self.extra_stop_words))
        object.__setattr__(self, "keep_words", tuple(self.keep_words))
        if self.stop_words not in STOP_WORD_LISTS:
            raise InvalidHyperparameter("stop_words", self.stop_words,
                                        f"must be one of {', '.join(STOP_WORD_LISTS)}")
        if isinstance(self.min_token_length, bool) or not isinstance(self.min_token_length, int) \
                or self.min_token_length < 1:
            raise InvalidHyperparameter("min_token_length", self.min_token_length,
                                        "must be an integer >= 1")
        try:
            pattern = re.compile(self.token_pattern)
        except re.error as error:
            raise InvalidHyperparameter("token_pattern", self.token_pattern,
                                        f"must be a valid regular expression ({error})") from None
        if pattern.groups:
            raise InvalidHyperparameter("token_pattern", self.token_pattern,
                                        "must have no capturing groups; write (?:...) instead")

    def to_dict(self) -> dict:
        """Return the settings as a JSON-safe dict."""
        settings = asdict(self)
        settings["extra_stop_words"] = list(self.extra_stop_words)
        settings["keep_words"] = list(self.keep_words)
        return settings

    @classmethod
    def from_dict(cls, settings: dict) -> "TextConfig":
        """Build a config from `to_dict()` output. Unknown keys raise `UserError`."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise UserError(f"unknown text settings {unknown}; known settings are {sorted(known)}")
        return cls(**settings)


def strip_html(text: str) -> str:
    """Replace HTML tags such as `<br />` with spaces and decode entities such as `&amp;`.

    A "<" that does not open a tag ("a < b", "<3") is kept.
    """
    if "<" in text:
        text = _HTML_TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    return text


@functools.lru_cache(maxsize=1)
def lemma_lookup_table() -> dict[str, str]:
    """Return spaCy's English lemma lookup table (word form -> lemma), about 42,000 entries."""
    resource = importlib.resources.files("spacy_lookups_data") / "data" / "en_lemma_lookup.json.gz"
    return json.loads(gzip.decompress(resource.read_bytes()))


@functools.lru_cache(maxsize=None)
def stop_word_list(name: str) -> frozenset[str]:
    """Return the English stop words of spaCy (`"spacy"`) or scikit-learn (`"sklearn"`)."""
    if name == "spacy":
        # Importing spaCy costs seconds (it imports thinc and torch), so only when needed.
        from spacy.lang.en.stop_words import STOP_WORDS
        return frozenset(STOP_WORDS)
    if name == "sklearn":
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
        return frozenset(ENGLISH_STOP_WORDS)
    raise InvalidHyperparameter("stop_words", name, f"must be one of {', '.join(STOP_WORD_LISTS)}")


def snowball_stemmer():
    """Return the Snowball English stemmer, or raise `UserError` when the package is missing."""
    try:
        import snowballstemmer
    except ImportError:
        raise UserError("stem=True needs the snowballstemmer package: "
                        "pip install snowballstemmer") from None
    return snowballstemmer.stemmer("english")


def split_contraction(token: str) -> list[str]:
    """Split English clitics off a token: "wouldn't've" -> ["would", "not", "have"].

    "'s" is dropped. Tokens without a known clitic ending come back unchanged.
    """
    tail: list[str] = []
    match = _CLITIC.match(token)
    while match:
        word = _CLITIC_WORDS[match["clitic"].lower()]
        head = match["head"]
        if word == "not":
            head = _NEGATED_HEADS.get(head.lower(), head)
        if word is not None:
            tail.append(word)
        token = head
        match = _CLITIC.match(token)
    return [token, *reversed(tail)]


class TextPreprocessor:
    """Turn review texts into lists of terms according to a `TextConfig`.

    Calling the preprocessor on one text returns its terms, and `tokenize_many` maps many.
    `token_pattern` is applied to each whitespace-separated chunk of the cleaned text, so a
    token never spans whitespace. Each distinct chunk ("great!", "(great)") is analyzed once
    and its terms are cached, which makes a document cost one `str.split` and one
    dictionary lookup per chunk.
    """

    def __init__(self, config: TextConfig | None = None):
        self.config = config or TextConfig()
        self._pattern = re.compile(self.config.token_pattern)
        self._lemmas = lemma_lookup_table() if self.config.lemmatize else None
        self._stemmer = snowball_stemmer() if self.config.stem else None
        self._stop_words = self._build_stop_words()
        self._chunk_terms: dict[str, tuple[str, ...]] = {}
        self._token_terms: dict[str, tuple[str, ...]] = {}

    def _build_stop_words(self) -> frozenset[str]:
        if not self.config.remove_stop_words:
            return frozenset()
        words = stop_word_list(self.config.stop_words) | {
            word.lower() for word in self.config.extra_stop_words}
        return frozenset(words - {word.lower() for word in self.config.keep_words})

    def clean(self, text: str | None) -> str:
        """Return the text with HTML removed, lowercased and with curly apostrophes made plain."""
        if text is None:
            return ""
        if not isinstance(text, str):
            raise TypeError(f"review text must be str, got {type(text).__name__}")
        if self.config.strip_html:
            text = strip_html(text)
        if self.config.lowercase:
            text = text.lower()
        for apostrophe in _APOSTROPHES:
            if apostrophe in text:
                text = text.replace(apostrophe, "'")
        return text

    def analyze_token(self, token: str) -> tuple[str, ...]:
        """Return the terms one token yields: none (stop word, too short), one, or several."""
        pieces: list[str] = []
        for part in token.split():
            if self.config.split_contractions and "'" in part:
                pieces.extend(split_contraction(part))
            else:
                pieces.append(part)
        terms = (self._analyze_piece(piece) for piece in pieces)
        return tuple(term for term in terms if term is not None)

    def _analyze_piece(self, piece: str) -> str | None:
        term = self._lemmas.get(piece, piece) if self._lemmas is not None else piece
        if piece.lower() in self._stop_words or term.lower() in self._stop_words:
            return None
        if self._stemmer is not None:
            term = self._stemmer.stemWord(term)
        if len(term) < self.config.min_token_length:
            return None
        return term

    def _analyze_chunk(self, chunk: str) -> tuple[str, ...]:
        terms: list[str] = []
        for token in self._pattern.findall(chunk):
            analysis = self._token_terms.get(token)
            if analysis is None:
                analysis = self._token_terms[token] = self.analyze_token(token)
            terms += analysis
        return tuple(terms)

    def __call__(self, text: str | None) -> list[str]:
        """Return the terms of one text, in order."""
        chunks = self.clean(text).split()
        try:
            return list(chain.from_iterable(map(self._chunk_terms.__getitem__, chunks)))
        except KeyError:
            self._analyze_new_chunks(chunks)
            return list(chain.from_iterable(map(self._chunk_terms.__getitem__, chunks)))

    def _analyze_new_chunks(self, chunks: list[str]) -> None:
        if len(self._chunk_terms) > _MAX_CACHED_CHUNKS:
            self._chunk_terms.clear()
            self._token_terms.clear()
        for chunk in set(chunks).difference(self._chunk_terms):
            self._chunk_terms[chunk] = self._analyze_chunk(chunk)

    def tokenize_many(self, texts: Iterable[str | None]) -> Iterator[list[str]]:
        """Yield the terms of each text."""
        for text in texts:
            yield self(text)
