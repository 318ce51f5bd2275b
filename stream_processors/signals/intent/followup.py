"""Clarifying follow-up: is the next prompt a short question about the previous answer?

A sum of evidence (FOLLOWUP_WEIGHTS) compared with FOLLOWUP_THRESHOLD. Pure functions of the three texts.
"""

from __future__ import annotations

from typing import NamedTuple

from stream_processors.signals.intent import lexicon
from stream_processors.signals.intent.normalise import WORD_CLASSES, lexeme, normalise
from stream_processors.signals.intent.rephrase import REPHRASE_THRESHOLD, bounded_similarity, is_rephrase

FOLLOWUP_THRESHOLD = 2.5
"""Evidence score at or above which the next prompt is a clarifying follow-up."""

FOLLOWUP_MAX_WORDS = 30
"""A next prompt longer than this many words is a new task description, never a short clarifying question."""

FOLLOWUP_VERY_SHORT_WORDS = 2
"""A question of one or two words ('why?', 'meaning?') has no meaning without the previous answer."""

FOLLOWUP_SHORT_WORDS = 6
"""A question this short ('why 2%?', 'which one?') leans on the previous answer for its meaning."""

FOLLOWUP_LONG_WORDS = 16
"""A question longer than this usually states its own subject."""

NEAR_REPHRASE_SIMILARITY = 0.4
"""A next prompt this similar to the previous one, with nothing pointing back, is a near-rephrase."""


class FollowupWeights(NamedTuple):
    """Evidence weights of a clarifying follow-up, summed and compared with FOLLOWUP_THRESHOLD."""

    question_mark: float = 1.0  # '?' anywhere
    interrogative_start: float = 1.0  # what/why/is/does/so/wait... after any leading 'thanks'
    clarify_phrase: float = 2.0  # 'what do you mean', 'explain', 'example', 'which one', 'what if'...
    anaphora: float = 1.5  # it/that/this/the second/step... points back at the answer
    grounded: float = 1.5  # names a word the answer introduced (not the user's own prompt)
    novel_word: float = -0.5  # per content word found in neither the answer nor the prompt...
    novel_cap: float = -1.5  # ...capped, so that 'what if I paid with a gift card?' survives
    task_verb: float = -2.0  # opens like a new task: write/translate/give/plan...
    how_to: float = -1.0  # 'how do I <verb>' with nothing pointing back: a new how-to
    very_short: float = 1.5  # one or two words ('why?', 'meaning?'): meaningless without the answer
    short: float = 0.5
    long: float = -1.0
    near_rephrase: float = -1.5  # close to the previous prompt: asks it again rather than about the answer


FOLLOWUP_WEIGHTS = FollowupWeights()
"""The weights in use (hand-set on the tune split)."""

_ACKNOWLEDGEMENT_SCORE = -5.0
_REPHRASE_SCORE = -5.0


_CLARIFY_FIRST_WORDS = frozenset(phrase[0] for phrase in lexicon.CLARIFY_PHRASES)


def _asks_to_clarify(words: tuple[str, ...]) -> bool:
    """Whether the words contain a clarification cue ('what do you mean', 'example', 'which one')."""
    if not lexicon.CLARIFY_WORDS.isdisjoint(words):
        return True
    for i, word in enumerate(words):
        if word in _CLARIFY_FIRST_WORDS and (
            words[i : i + 2] in lexicon.CLARIFY_PHRASES or words[i : i + 3] in lexicon.CLARIFY_PHRASES
        ):
            return True
    return False


def _is_new_how_to(words: tuple[str, ...]) -> bool:
    """'how do I make gumbo': a how-to question that opens a new task."""
    if len(words) < 3 or (words[0], words[1]) not in lexicon.HOW_TO_STARTS:
        return False
    verb = words[2] if words[1] == "to" else words[3] if len(words) > 3 else ""
    return verb not in lexicon.HOW_TO_EXCEPTIONS


def _with_thousands_separators(number: str) -> str:
    """'1102.50' -> '1,102.50', the way an answer may print the number the user repeats."""
    whole, dot, fraction = number.partition(".")
    return f"{int(whole):,}{dot}{fraction}" if whole.isdigit() and len(whole) > 3 else number


def _strip_acknowledgement(words: tuple[str, ...]) -> tuple[str, ...]:
    """Drop a leading 'thanks!' or 'ok, great' so that 'thanks! but why 5?' is judged by its question."""
    i = 0
    while i < len(words) and (
        words[i] in lexicon.ACKNOWLEDGEMENTS or (i and words[i] in lexicon.ACKNOWLEDGEMENT_TAIL)
    ):
        i += 1
    return words[i:]


def _stem_in(word: str, text: str) -> bool:
    """Whether `text` contains the canonical `word`'s stem (4+ letters): 'idempot' in 'idempotent'."""
    return len(word) >= 4 and word[: max(4, len(word) - 2)] in text


def _spelled_in(spellings: list[str], text: str) -> bool:
    """Whether `text` contains one of the user's spellings of a word as a whole word ('2%', '1,102.50')."""
    for spelling in spellings:
        if len(spelling) >= 3 or not spelling.isalpha():
            if spelling[0].isdigit():
                spelling = _with_thousands_separators(spelling)
            start = text.find(spelling)
            while start >= 0:
                end = start + len(spelling)
                before = text[start - 1] if start else " "
                after = text[end] if end < len(text) else " "
                if not (before.isalnum() or before == ".") and not after.isalnum():
                    return True
                start = text.find(spelling, start + 1)
    return False


def _followup_evidence(previous_prompt: str, previous_response: str, next_prompt: str) -> tuple[float, bool]:
    """Evidence that `next_prompt` asks about `previous_response`, before comparing it with the previous
    prompt (or, once it cannot reach FOLLOWUP_THRESHOLD, some value below it); and whether it points back at
    the answer ('that', 'the second step')."""
    nxt = normalise(next_prompt)
    words = nxt.words
    if not words or len(words) > FOLLOWUP_MAX_WORDS:
        return _ACKNOWLEDGEMENT_SCORE, False
    rest = _strip_acknowledgement(words)
    if not rest:
        return _ACKNOWLEDGEMENT_SCORE, False
    question = "?" in next_prompt or "\uff1f" in next_prompt
    clarify = _asks_to_clarify(rest)
    if len(rest) < len(words) and not (question or clarify):
        return _ACKNOWLEDGEMENT_SCORE, False  # "thanks, that worked": no question after the thanks

    weights = FOLLOWUP_WEIGHTS
    score = weights.question_mark if question else 0.0
    if rest[0] in lexicon.INTERROGATIVES:
        score += weights.interrogative_start
    elif rest[0] in lexicon.TASK_VERBS and not clarify:
        score += weights.task_verb
    if clarify:
        score += weights.clarify_phrase
    anaphora = not lexicon.ANAPHORA.isdisjoint(rest)
    if anaphora:
        score += weights.anaphora
    elif _is_new_how_to(rest):
        score += weights.how_to  # "how do I make gumbo" is a new how-to even when the answer named gumbo
    if len(rest) <= FOLLOWUP_VERY_SHORT_WORDS:
        score += weights.very_short
    elif len(rest) <= FOLLOWUP_SHORT_WORDS:
        score += weights.short
    elif len(rest) > FOLLOWUP_LONG_WORDS:
        score += weights.long

    if score + weights.grounded < FOLLOWUP_THRESHOLD:
        return score, anaphora  # out of reach whatever the words: spare the search through the answer

    # A clarifying question is about words the answer introduced; words from neither side are a new subject.
    # Words of the user's own prompt prove nothing: a new question on the same topic repeats them too.
    asked = normalise(previous_prompt).content
    subject = [
        word for word, weight in nxt.content.items() if weight == 1.0 and word != "not" and word not in asked
    ]
    if subject:
        # Lower-cased only: NFKC over a long answer would cost more than the rest of the call.
        response = previous_response.lower()
        unfound = [word for word in subject if not _stem_in(word, response)]
        if unfound:
            spellings: dict[str, list[str]] = {}
            for spelling in rest:
                if spelling not in WORD_CLASSES:
                    spellings.setdefault(lexeme(spelling)[0], []).append(spelling)
            unfound = [word for word in unfound if not _spelled_in(spellings.get(word, []), response)]
        if len(unfound) < len(subject):
            score += weights.grounded
        score += max(weights.novel_word * len(unfound), weights.novel_cap)
    return score, anaphora


def _followup_score(previous_prompt: str, previous_response: str, next_prompt: str) -> float:
    """Evidence that `next_prompt` asks about `previous_response`; compared with FOLLOWUP_THRESHOLD."""
    score, anaphora = _followup_evidence(previous_prompt, previous_response, next_prompt)
    if score >= FOLLOWUP_THRESHOLD:
        similarity = bounded_similarity(previous_prompt, next_prompt, NEAR_REPHRASE_SIMILARITY)
        if similarity >= REPHRASE_THRESHOLD or is_rephrase(previous_prompt, next_prompt):
            return _REPHRASE_SCORE  # a rephrase is never also a follow-up
        if not anaphora and similarity >= NEAR_REPHRASE_SIMILARITY:
            score += FOLLOWUP_WEIGHTS.near_rephrase
    return score


def is_clarifying_followup(previous_prompt: str, previous_response: str, next_prompt: str) -> bool:
    """True when `next_prompt` is a short question about `previous_response` rather than a new request.

    'what do you mean by idempotent?', 'why?', 'which one is faster?', 'can you explain the second step?'
    are; a new standalone request, a long task description (over FOLLOWUP_MAX_WORDS words), a bare
    acknowledgement ('thanks, that worked') and a rephrase of `previous_prompt` are not. Never True when
    `is_rephrase(previous_prompt, next_prompt)` is. English cues only: other languages read as not follow-ups.
    """
    # The comparison with the previous prompt can only lower the evidence: it is made only when needed.
    return _followup_score(previous_prompt, previous_response, next_prompt) >= FOLLOWUP_THRESHOLD
