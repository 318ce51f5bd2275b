"""Edit distances between a response and the user's corrected text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rapidfuzz.distance import Levenshtein

EditSize = Literal["small", "medium", "large"]


def char_distance(original: str, corrected: str) -> int:
    """Levenshtein distance in characters (insertions, deletions, substitutions all cost 1)."""
    return int(Levenshtein.distance(original, corrected))


def word_tokens(text: str) -> list[str]:
    """Word tokens of ``text``: the whitespace-separated words (punctuation stays on its word).

    A regex that splits punctuation off cost ~45 µs per KB of text against ~2 µs for this."""
    return text.split()


def word_distance(original: str, corrected: str) -> int:
    """Levenshtein distance counted in word tokens (see :func:`word_tokens`)."""
    return int(Levenshtein.distance(word_tokens(original), word_tokens(corrected)))


def normalized(distance: int, original: str, corrected: str) -> float:
    """``distance`` / max of the two lengths in characters; 0.0 when both texts are empty."""
    longest = max(len(original), len(corrected))
    return distance / longest if longest else 0.0


def edit_size(norm: float, small_max: float, large_min: float) -> EditSize:
    """Classify a normalized distance: small (a refinement) ... large (a misunderstanding)."""
    if norm <= small_max:
        return "small"
    if norm >= large_min:
        return "large"
    return "medium"


@dataclass(frozen=True, slots=True)
class EditMeasures:
    """All distances of one edit."""

    distance: int
    norm: float
    word_distance: int
    size: EditSize


def measure_edit(original: str, corrected: str, small_max: float, large_min: float) -> EditMeasures:
    """Every distance of one edit, computed once."""
    distance = char_distance(original, corrected)
    norm = normalized(distance, original, corrected)
    return EditMeasures(
        distance, norm, word_distance(original, corrected), edit_size(norm, small_max, large_min)
    )
