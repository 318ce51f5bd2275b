"""Word-level diff operations of one edit, and the normalized fragments that edit patterns group by.

An edit turns the response into the user's corrected text. :func:`edit_operations` splits both
into whitespace-separated words, aligns them on their longest common subsequence (the alignment
diff tools show people) and returns each changed stretch as one operation: a *replacement*, an
*insertion* or a *deletion*, with

* its **position** in the response: ``opening`` (it starts the text, or lies in its first fifth),
  ``closing`` (it ends the text, or lies in its last fifth), else ``middle``;
* its **unit**: ``paragraph`` when it covers whole paragraphs (blank-line separated),
  ``sentence`` when it covers whole sentences, else ``words``;
* the fragments, raw and **normalized**: lower case, single spaces, surrounding punctuation
  dropped, numbers as ``<num>``, names (capitalized words that do not start a sentence) and
  placeholders (``[Name]``, ``{name}``, ``<NAME>``) as ``<name>``. So "Hi Anna," "hi  Ben" and
  "Hi [Name]" are one fragment, ``hi <name>``. Placeholders are only used where they keep the
  change visible: a correction of one name or number into another keeps the words themselves.

Everything here is a pure function of the two texts: replays derive the same operations.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal, overload

from rapidfuzz.distance import Indel

OpKind = Literal["replace", "insert", "delete"]
Position = Literal["opening", "middle", "closing"]
Unit = Literal["words", "sentence", "paragraph"]

#: Longest fragment kept (characters); longer ones are cut and end with an ellipsis.
MAX_FRAGMENT_CHARS = 300
#: Most operations kept per edit (a total rewrite can have hundreds; the first ones tell enough).
MAX_OPERATIONS = 100
#: Share of the response at each end that counts as its opening / closing.
EDGE_SHARE = 0.2

_SPLIT = re.compile(r"(\S+)")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")
_SENTENCE_END = re.compile(r"[.!?:…]['\")\]]*$")
_PLACEHOLDER = re.compile(r"^(\[[^\]]+\]|\{\{?[^}]+\}?\}|<[^>]+>)(\W*)$")
_NUMBER = re.compile(r"^([$€£¥]?[+-]?\d[\d.,:/]*(?:%|st|nd|rd|th|k|m|x)?)(\W*)$", re.IGNORECASE)
_NAME = re.compile(r"^([A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)*)(\W*)$")
_EDGE_PUNCT = " \t.,;:!?…-–—\"'()[]"


@dataclass(frozen=True, slots=True)
class Token:
    """One word of a text, with where it sits."""

    text: str
    start: int
    end: int
    paragraph: int
    starts_sentence: bool
    ends_sentence: bool


def tokenize(text: str) -> list[Token]:
    """The whitespace-separated words of ``text`` with their character spans, paragraph index and
    whether each one starts or ends a sentence (a paragraph start and a word after ``.!?:`` start one)."""
    tokens = Tokens(text)
    return [tokens[i] for i in range(len(tokens))]


class Tokens:
    """The words of a text, with a :class:`Token` built only for the words asked for.

    An edit touches a few words of a long response, so building every token up front cost ~1 µs a
    word (over 90 % of an edit's diff); splitting once in C and deriving a token on demand does not.
    """

    __slots__ = ("_built", "_ends", "_last_of_paragraph", "_paragraph_of", "_starts", "words")

    def __init__(self, text: str) -> None:
        parts = _SPLIT.split(text)  # [separator, word, separator, word, ..., separator]
        self.words: list[str] = parts[1::2]
        offsets = list(accumulate(map(len, parts), initial=0))
        self._starts = offsets[1::2]
        self._ends = offsets[2::2]
        # Paragraph of each word: how many blank-line separators come before it.
        words_after_breaks = {bisect_right(self._starts, m.start()) for m in _PARAGRAPH_BREAK.finditer(text)}
        breaks = sorted(words_after_breaks - {0, len(self.words)})
        self._paragraph_of = breaks
        self._last_of_paragraph = {b - 1 for b in breaks}
        self._built: dict[int, Token] = {}

    def __len__(self) -> int:
        return len(self.words)

    def _paragraph(self, index: int) -> int:
        return bisect_right(self._paragraph_of, index)

    def starts_sentence(self, index: int) -> bool:
        """Whether word ``index`` starts a sentence: the text's or a paragraph's first word, or after .!?:"""
        return index == 0 or index - 1 in self._last_of_paragraph or self._ends_sentence(index - 1)

    def _ends_sentence(self, index: int) -> bool:
        return (
            index == len(self.words) - 1
            or index in self._last_of_paragraph
            or bool(_SENTENCE_END.search(self.words[index]))
        )

    @overload
    def __getitem__(self, index: int) -> Token: ...
    @overload
    def __getitem__(self, index: slice) -> list[Token]: ...
    def __getitem__(self, index: int | slice) -> Token | list[Token]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.words)))]
        if index < 0:
            index += len(self.words)
        token = self._built.get(index)
        if token is None:
            if not 0 <= index < len(self.words):
                raise IndexError(index)
            token = Token(
                self.words[index],
                self._starts[index],
                self._ends[index],
                self._paragraph(index),
                self.starts_sentence(index),
                self._ends_sentence(index),
            )
            self._built[index] = token
        return token


@dataclass(frozen=True, slots=True)
class EditOp:
    """One changed stretch of the response. ``start`` is the index of its first word in the response
    (for an insertion: the word it was inserted before)."""

    kind: OpKind
    position: Position
    unit: Unit
    start: int
    original_words: int
    corrected_words: int
    original: str
    corrected: str
    original_norm: str
    corrected_norm: str

    def to_json(self) -> dict[str, Any]:
        """The operation as the ``EditOperation`` contract model's fields."""
        return {
            "kind": self.kind,
            "position": self.position,
            "unit": self.unit,
            "start": self.start,
            "original_words": self.original_words,
            "corrected_words": self.corrected_words,
            "original": self.original,
            "corrected": self.corrected,
            "original_norm": self.original_norm,
            "corrected_norm": self.corrected_norm,
        }


@dataclass(frozen=True, slots=True)
class EditDiff:
    """Every operation of one edit (at most :data:`MAX_OPERATIONS`), and the word counts."""

    operations: tuple[EditOp, ...]
    response_words: int
    corrected_words: int
    truncated: bool


def edit_operations(original: str, corrected: str) -> EditDiff:
    """The word-level operations that turn ``original`` into ``corrected``, in text order."""
    a, b = Tokens(original), Tokens(corrected)
    hunks = _hunks(a.words, b.words)
    ops = tuple(_operation(original, corrected, a, b, *hunk) for hunk in hunks[:MAX_OPERATIONS])
    return EditDiff(ops, len(a), len(b), len(hunks) > MAX_OPERATIONS)


def _hunks(a: list[str], b: list[str]) -> list[tuple[int, int, int, int]]:
    """Maximal changed stretches ``(a1, a2, b1, b2)`` of an LCS alignment.

    Adjacent insertions and deletions of the alignment are one hunk: a replacement."""
    hunks: list[tuple[int, int, int, int]] = []
    current: list[int] | None = None
    for op in Indel.opcodes(a, b):
        if op.tag == "equal":
            if current is not None:
                hunks.append((current[0], current[1], current[2], current[3]))
                current = None
            continue
        if current is None:
            current = [op.src_start, op.src_end, op.dest_start, op.dest_end]
        else:
            current[1], current[3] = op.src_end, op.dest_end
    if current is not None:
        hunks.append((current[0], current[1], current[2], current[3]))
    return hunks


def _operation(
    original: str, corrected: str, a: Tokens, b: Tokens, a1: int, a2: int, b1: int, b2: int
) -> EditOp:
    kind: OpKind = "replace" if a1 < a2 and b1 < b2 else ("delete" if a1 < a2 else "insert")
    if kind == "delete":
        shift = _best_slide(a, a1, a2)
        a1, a2, b1, b2 = a1 + shift, a2 + shift, b1 + shift, b2 + shift
    elif kind == "insert":
        shift = _best_slide(b, b1, b2)
        a1, a2, b1, b2 = a1 + shift, a2 + shift, b1 + shift, b2 + shift
    position = position_of(a1, a2, len(a))
    unit = unit_of(a, a1, a2) if kind != "insert" else unit_of(b, b1, b2)
    original_norm, corrected_norm = _normalize_pair(
        _Span(a.words, a.starts_sentence, a1, a2), _Span(b.words, b.starts_sentence, b1, b2)
    )
    return EditOp(
        kind=kind,
        position=position,
        unit=unit,
        start=a1,
        original_words=a2 - a1,
        corrected_words=b2 - b1,
        original=_fragment(original, a, a1, a2),
        corrected=_fragment(corrected, b, b1, b2),
        original_norm=original_norm,
        corrected_norm=corrected_norm,
    )


_UNIT_RANK = {"paragraph": 2, "sentence": 1, "words": 0}


def _best_slide(tokens: Tokens, start: int, end: int) -> int:
    """How far to slide a pure deletion or insertion of ``tokens[start:end]``.

    When the words before it equal its last words (or the words after it its first ones), the same
    change can be drawn at several places: "The x. The y." minus "The x. " is also "x. The" removed.
    Diff tools slide such hunks for readability; we slide to the place that covers whole paragraphs
    or sentences, if any does, so equal edits get equal positions and units."""
    low = 0
    words = tokens.words
    while start + low > 0 and words[start + low - 1] == words[end + low - 1]:
        low -= 1
    high = 0
    while end + high < len(words) and words[start + high] == words[end + high]:
        high += 1
    if low == high:
        return 0
    candidates = range(low, high + 1)
    return max(candidates, key=lambda k: (_UNIT_RANK[unit_of(tokens, start + k, end + k)], -abs(k)))


def position_of(start: int, end: int, length: int) -> Position:
    """Where the word span ``[start, end)`` of a text of ``length`` words sits (an empty span is an
    insertion point). Touching exactly one end of the text decides; otherwise its midpoint does."""
    if length == 0:
        return "middle"
    touches_start, touches_end = start == 0, end >= length
    if touches_start and not touches_end:
        return "opening"
    if touches_end and not touches_start:
        return "closing"
    middle = (start + end) / 2 / length
    if middle < EDGE_SHARE:
        return "opening"
    if middle > 1 - EDGE_SHARE:
        return "closing"
    return "middle"


def unit_of(tokens: Tokens | list[Token], start: int, end: int) -> Unit:
    """``paragraph`` if ``tokens[start:end]`` are whole paragraphs, ``sentence`` if whole sentences."""
    if start >= end:
        return "words"
    first, last = tokens[start], tokens[end - 1]
    paragraph_start = start == 0 or tokens[start - 1].paragraph != first.paragraph
    paragraph_end = end == len(tokens) or tokens[end].paragraph != last.paragraph
    if paragraph_start and paragraph_end:
        return "paragraph"
    if first.starts_sentence and last.ends_sentence:
        return "sentence"
    return "words"


def _fragment(text: str, tokens: Tokens, start: int, end: int) -> str:
    if start >= end:
        return ""
    return _cut(text[tokens[start].start : tokens[end - 1].end])


def _cut(text: str) -> str:
    return text if len(text) <= MAX_FRAGMENT_CHARS else text[: MAX_FRAGMENT_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class _Span:
    """Words ``[start, end)`` of a text, and how to tell whether one starts a sentence."""

    words: list[str]
    starts_sentence: Callable[[int], bool]
    start: int
    end: int


#: A word's normalized forms: (away from a sentence start, at one), each with its length before lower
#: casing (what the fragment's cut counts). Words repeat across edits; matching three patterns per
#: word each time was most of an edit's cost.
_WordForms = tuple[str, int, str, int]
_FORMS: dict[str, _WordForms] = {}
_FORMS_MAX = 200_000


def _word_forms(word: str) -> _WordForms:
    forms = _FORMS.get(word)
    if forms is None:
        if match := _PLACEHOLDER.match(word):
            inside = at_start = "<name>" + match.group(2)
        elif match := _NUMBER.match(word):
            inside = at_start = "<num>" + match.group(2)
        elif match := _NAME.match(word):
            inside, at_start = "<name>" + match.group(2), word  # a capital that starts a sentence is no name
        else:
            inside = at_start = word
        forms = (inside.lower(), len(inside), at_start.lower(), len(at_start))
        if len(_FORMS) >= _FORMS_MAX:
            _FORMS.clear()
        _FORMS[word] = forms
    return forms


def _normalize(span: _Span, placeholders: bool) -> str:
    words = []
    length = 0
    limit = MAX_FRAGMENT_CHARS + 64
    for index in range(span.start, span.end):
        word = span.words[index]
        if placeholders:
            inside, inside_len, at_start, at_start_len = _word_forms(word)
            if inside is not at_start and inside != at_start and span.starts_sentence(index):
                words.append(at_start)
                length += at_start_len + 1
            else:
                words.append(inside)
                length += inside_len + 1
        else:
            words.append(word.lower())
            length += len(word) + 1
        if length > limit:
            break  # the fragment is cut at MAX_FRAGMENT_CHARS anyway
    return _cut(" ".join(words).strip(_EDGE_PUNCT))


def _normalize_pair(original: _Span, corrected: _Span) -> tuple[str, str]:
    a, b = _normalize(original, True), _normalize(corrected, True)
    if a == b:
        plain_a, plain_b = _normalize(original, False), _normalize(corrected, False)
        if plain_a != plain_b:
            return plain_a, plain_b
    return a, b


def _span(tokens: Sequence[Token]) -> _Span:
    return _Span([t.text for t in tokens], lambda i: tokens[i].starts_sentence, 0, len(tokens))


def normalize(tokens: Sequence[Token], placeholders: bool = True) -> str:
    """The normalized form of a fragment (see the module doc); ``placeholders=False`` keeps names
    and numbers as words (lower-cased)."""
    return _normalize(_span(tokens), placeholders)


def normalize_pair(original: Sequence[Token], corrected: Sequence[Token]) -> tuple[str, str]:
    """Normalized original and corrected fragment of one operation. When placeholders would make
    the two equal although the words differ (one name or number corrected into another), the
    words are kept, so the correction stays visible."""
    return _normalize_pair(_span(original), _span(corrected))


def is_trivial(op: EditOp) -> bool:
    """Whether the operation only changed case, spacing or edge punctuation (its normalized sides agree)."""
    return op.original_norm == op.corrected_norm
