"""Implicit user signals from the next prompt of a session: rephrases and clarifying follow-ups.

When a user gets an answer and soon sends another prompt, two things are worth knowing. Did they ask the
same thing again in other words (``is_rephrase``: the answer did not satisfy them)? Or did they ask a short
question about the answer (``is_clarifying_followup``: the answer was unclear)? Both are pure functions of
the texts, never both True for one pair, and English-only in their cues.

The package: ``lexicon`` (the word lists, data only), ``normalise`` (prompts reduced to weighted canonical
content words), ``rephrase`` and ``followup`` (the two detectors). How the thresholds were chosen and how
well the detectors do on labelled data: docs/detectors.md.
"""

from stream_processors.signals.intent.followup import (
    FOLLOWUP_MAX_WORDS,
    FOLLOWUP_THRESHOLD,
    FOLLOWUP_WEIGHTS,
    FollowupWeights,
    is_clarifying_followup,
)
from stream_processors.signals.intent.rephrase import REPHRASE_THRESHOLD, is_rephrase, rephrase_similarity

__all__ = [
    "FOLLOWUP_MAX_WORDS",
    "FOLLOWUP_THRESHOLD",
    "FOLLOWUP_WEIGHTS",
    "REPHRASE_THRESHOLD",
    "FollowupWeights",
    "is_clarifying_followup",
    "is_rephrase",
    "rephrase_similarity",
]
