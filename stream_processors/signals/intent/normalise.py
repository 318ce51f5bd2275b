"""Prompts reduced to what they ask: canonical content words with weights, numbers, negations, directions.

Pure and deterministic. ``normalise`` is cached (``lru_cache``) because the stream processor sees every
prompt twice: as the next prompt of one interaction and as the previous prompt of the next.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from typing import NamedTuple

from stream_processors.signals.intent import lexicon

LOW_WEIGHT = 0.3
"""Weight of generic words (use, get, explain, error...) that carry little of what is asked."""

QUESTION_WORD_WEIGHT = 0.7
"""Weight of why/when/where/who: they change what is asked, but users also reword them away."""

NORMALISE_CACHE_SIZE = 8192
"""Prompts (and words) kept normalised; a stream needs only the few most recent."""

# Punctuation becomes space. Kept: ' (contractions), . (node.js, 1.5), + and # (c++, c#), % and _ (snake_case)
_ASCII_PUNCTUATION = '!"$&()*,/:;<=>?@[\\]^`{|}~-'
_PUNCTUATION = str.maketrans(
    dict.fromkeys(_ASCII_PUNCTUATION, " ")
    | dict.fromkeys("\u201c\u201d\u2014\u2013\u2026\u00bf\u00a1\u00ab\u00bb\uff1f\uff0c\u3002", " ")
    | {"\u2019": "'", "\u2018": "'"}
)
_ASCII_PUNCTUATION_BYTES = bytes.maketrans(_ASCII_PUNCTUATION.encode(), b" " * len(_ASCII_PUNCTUATION))
# "400F", "5km": a number glued to its unit.
_UNIT_RE = re.compile(r"(\d+(?:\.\d+)?)(km|kg|lbs?|g|ml|l|f|c|cm|mm|m|h|hrs?|mins?|s|gb|mb|k)")
# "US" in capitals is the country; lower-cased it would be the stop word "us".
_US_RE = re.compile(r"\bU\.?S\.?A?\b\.?")
# "1,000" is one number, not "1" and "000".
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}\b)")


def stem(word: str) -> str:
    """Strip common English inflections so 'sorting', 'sorted', 'sorts' and 'sort' meet; ASCII words only."""
    if len(word) <= 3 or not word.isascii() or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("ing") and len(word) > 5:
        word = word[:-3]
        if word[-1] == word[-2] and word[-1] not in "lsz":  # running -> run
            word = word[:-1]
    elif word.endswith("ed") and len(word) > 4 and not word.endswith("eed"):
        word = word[:-2]
        if word[-1] == word[-2] and word[-1] not in "lsz":  # stopped -> stop
            word = word[:-1]
    elif word.endswith("es") and len(word) > 4 and (word[-3] in "sxz" or word[-4:-2] in ("ch", "sh")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    elif word.endswith("ly") and len(word) > 6:
        word = word[:-2]
    if word.endswith("e") and len(word) > 3:  # reverse/reversing -> revers
        word = word[:-1]
    return word


def _build_synonyms() -> dict[str, str]:
    synonyms: dict[str, str] = {}
    for line in lexicon.SYNONYM_GROUPS:
        words = line.split()
        for word in words:
            synonyms[stem(word)] = stem(words[0])
    return synonyms


_SYNONYMS = _build_synonyms()


@lru_cache(maxsize=NORMALISE_CACHE_SIZE)
def canonical_stem(word: str) -> str:
    """The word's stem, mapped to its synonym group's canonical stem."""
    root = stem(word)
    return _SYNONYMS.get(root, root)


def _build_contrasts() -> dict[str, int]:
    contrasts: dict[str, int] = {}
    for group, line in enumerate(lexicon.CONTRAST_GROUPS):
        for word in line.split():
            contrasts.setdefault(canonical_stem(word), group)
    return contrasts


CONTRASTS = _build_contrasts()
NUMBER_GROUP = -1  # any two different numbers are alternatives
_LOW_WEIGHT = frozenset(canonical_stem(word) for word in lexicon.LOW_WEIGHT_WORDS)


_Phrases = list[tuple[tuple[str, ...], tuple[str, ...]]]


def _build_phrase_index() -> dict[str, dict[str, _Phrases]]:
    """Phrases of two or more words by first then second word, longest first: a look-up or two a word."""
    index: dict[str, dict[str, _Phrases]] = {}
    for phrase in sorted(lexicon.PHRASES, key=lambda p: -len(p.split())):
        words = tuple(phrase.split())
        if len(words) > 1:
            replacement = tuple(lexicon.PHRASES[phrase].split())
            index.setdefault(words[0], {}).setdefault(words[1], []).append((words, replacement))
    return index


_PHRASE_INDEX = _build_phrase_index()


def _weight(word: str) -> float:
    if word in _LOW_WEIGHT:
        return LOW_WEIGHT
    if word in lexicon.QUESTION_WORDS:
        return QUESTION_WORD_WEIGHT
    if len(word) == 1 and not word.isdigit():
        return 0.5  # a variable name or a unit letter
    return 1.0


class Prompt(NamedTuple):
    """A prompt reduced to what it asks."""

    words: tuple[str, ...]  # every token, lower case, contractions expanded, number words as digits
    stems: tuple[str, ...]  # the words after phrase mapping, content words canonical: for word edit distance
    content: Mapping[str, float]  # canonical content word -> weight
    numbers: tuple[str, ...]  # numbers in order of appearance: '2^10' is not '10^2'
    negations: int  # how many times the prompt negates: 'failed but charged' is not 'failed and not charged'
    directions: frozenset[tuple[str, str]]  # (source, target) around to/into: fahrenheit -> celsius
    total: float  # sum of the content weights
    groups: Mapping[str, int]  # content words that have known alternatives -> their contrast group
    squashed: str  # the words without spaces: a compound of the other prompt can only be a part of it


# Whole words replaced by others while tokenising: "dont" -> "do not", "two" -> "2", "sqrt" -> "square root".
_WORD_EXPANSIONS: dict[str, tuple[str, ...]] = (
    {word: tuple(text.split()) for word, text in lexicon.BARE_CONTRACTIONS.items()}
    | {word: (digits,) for word, digits in lexicon.NUMBER_WORDS.items()}
    | {phrase: tuple(text.split()) for phrase, text in lexicon.PHRASES.items() if " " not in phrase}
)


def _tokenise(text: str) -> list[str]:
    """Lower-case words with contractions expanded, number words as digits and units split from numbers."""
    if "US" in text or "U.S" in text:
        text = _US_RE.sub(" usa ", text)
    if "," in text:
        text = _THOUSANDS_RE.sub("", text)
    text = text.lower().replace("->", " to ")
    if text.isascii():  # most prompts: bytes.translate is several times faster than str.translate
        chunks = text.encode().translate(_ASCII_PUNCTUATION_BYTES).decode().split()
    else:
        chunks = unicodedata.normalize("NFKC", text).translate(_PUNCTUATION).split()
    words: list[str] = []
    append, extend, expansions = words.append, words.extend, _WORD_EXPANSIONS
    for chunk in chunks:
        if chunk.isalpha():  # the common case: a plain word
            expanded = expansions.get(chunk)
            if expanded is None:
                append(chunk)
            else:
                extend(expanded)
            continue
        chunk = chunk.strip("'.")
        if not chunk:
            continue
        if "'" in chunk:
            if chunk in lexicon.NEGATED_CONTRACTIONS:
                extend(lexicon.NEGATED_CONTRACTIONS[chunk])
                continue
            if chunk.endswith("n't"):
                extend((chunk[:-3], "not"))
                continue
            head, _, suffix = chunk.rpartition("'")
            if suffix in lexicon.CONTRACTIONS:
                append(head)
                extend(lexicon.CONTRACTIONS[suffix])
                continue
            chunk = chunk.replace("'", "")
        if chunk[0].isdigit() and not chunk.isdigit():
            if chunk.endswith("%"):
                extend((chunk[:-1], "%"))
                continue
            unit = _UNIT_RE.fullmatch(chunk)
            if unit:
                extend(unit.groups())
                continue
        elif not chunk[0].isalnum() and chunk != "%":
            continue  # a lone '+' or '#'
        extend(expansions.get(chunk, (chunk,)))
    return words


def _apply_phrases(words: list[str]) -> list[str]:
    """Replace multi-word phrasings by their canonical word, or drop them when they are only framing."""
    out: list[str] = []
    i, n = 0, len(words)
    index = _PHRASE_INDEX
    while i < n:
        word = words[i]
        by_second = index.get(word)
        if by_second is not None and i + 1 < n:
            for phrase, replacement in by_second.get(words[i + 1], ()):
                end = i + len(phrase)
                if end <= n and (end == i + 2 or tuple(words[i:end]) == phrase):
                    out.extend(replacement)
                    i = end
                    break
            else:
                out.append(word)
                i += 1
        else:
            out.append(word)
            i += 1
    return out


@lru_cache(maxsize=NORMALISE_CACHE_SIZE)
def lexeme(word: str) -> tuple[str, float, int | None]:
    """A content word's canonical form, its weight and its contrast group (None if it has no known rivals)."""
    form = canonical_stem(word)
    group = CONTRASTS.get(form)
    if group is None and form[0].isdigit():
        group = NUMBER_GROUP
    return form, _weight(form), group


_NO_DIRECTIONS: frozenset[tuple[str, str]] = frozenset()
_DIRECTION, _NEGATION, _STOP, _CONJUNCTION = range(4)
WORD_CLASSES: dict[str, int] = (
    dict.fromkeys(lexicon.STOP_WORDS, _STOP)
    | dict.fromkeys(lexicon.CONJUNCTIONS, _CONJUNCTION)
    | dict.fromkeys(lexicon.NEGATIONS, _NEGATION)
    | dict.fromkeys(lexicon.DIRECTION_WORDS, _DIRECTION)
)


@lru_cache(maxsize=NORMALISE_CACHE_SIZE)
def normalise(text: str) -> Prompt:
    """Reduce a prompt to canonical content words; cached, as a stream compares each prompt twice."""
    words = _tokenise(text)
    phrased = _apply_phrases(words)
    content: dict[str, float] = {}
    groups: dict[str, int] = {}
    stems: list[str] = []
    numbers: list[str] = []
    directions: set[tuple[str, str]] = set()
    before_arrow = ""  # the content word before a pending "to"/"into"
    previous = ""  # the last content word, or "->" right after "to"/"into"
    last = len(phrased) - 1
    classes, lexeme_of, keep = WORD_CLASSES, lexeme, stems.append
    for position, word in enumerate(phrased):
        kind = classes.get(word)
        if kind is not None:
            if kind == _DIRECTION:
                keep(word)
                before_arrow, previous = previous, "->"
                continue
            if kind == _NEGATION:
                word = "not"
            elif kind == _STOP or 0 < position < last:
                # inside a sentence "when"/"where"/"who" join clauses ("it fails when I call it"): no question
                keep(word)
                continue
        canonical, weight, group = lexeme_of(word)
        keep(canonical)
        if weight > content.get(canonical, 0.0):
            content[canonical] = weight
        if group is not None:
            groups[canonical] = group
            if group == NUMBER_GROUP:
                numbers.append(canonical)
        if previous == "->" and before_arrow and before_arrow != "->":
            directions.add((before_arrow, canonical))
        previous = canonical
    return Prompt(
        tuple(words),
        tuple(stems),
        content,
        tuple(numbers),
        stems.count("not"),
        frozenset(directions) if directions else _NO_DIRECTIONS,
        sum(content.values()),
        groups,
        "".join(words),
    )
