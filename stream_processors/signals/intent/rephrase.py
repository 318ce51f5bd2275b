"""Rephrase: does the next prompt ask what the previous one asked, in other words?

``rephrase_similarity`` is the weighted Dice coefficient of the two prompts' canonical content words
(``normalise``), after leftover words are matched as typos, shortened words or closed compounds, lowered
by two penalties for the hard negatives that share almost every word: a substitution (each prompt keeps a
content word the other lacks) and an alternative (two words of one contrast group, other numbers, another
count of negations, a reversed direction, the same numbers in another order, or one word replaced in an
otherwise identical sentence). ``is_rephrase`` compares it with REPHRASE_THRESHOLD. Pure functions.
"""

from __future__ import annotations

import itertools

from rapidfuzz.distance import OSA, Levenshtein

from stream_processors.signals.intent import lexicon, semantic
from stream_processors.signals.intent.normalise import CONTRASTS, Prompt, lexeme, normalise

REPHRASE_THRESHOLD = 0.55
"""`rephrase_similarity` at or above this is a rephrase."""

SUBSTITUTION_PENALTY = 0.20
"""Share of the similarity taken away when each prompt keeps a content word the other lacks."""

CONTRAST_PENALTY = 0.55
"""Share taken away when the prompts differ by alternatives (python/javascript, 5/10, a swapped word)."""

MINIMAL_PAIR_MAX_EDITS = 2
"""Two prompts at most this many word edits apart, one a replacement, are the same sentence with a swap."""

MINIMAL_PAIR_LONG_WORDS = 6
"""From this many words on, one more edit is allowed ('Pride and Prejudice' -> 'Emma')."""

TYPO_MIN_SIMILARITY = 0.8
"""Normalised OSA similarity (two swapped letters are one edit) from which two words of 4+ letters are one."""

COMPOUND_MIN_LETTERS = 6
"""Shortest closed compound ('quicksort', 'datetime') looked for as two words on the other side."""

SHARED_PREFIX_LETTERS = 6
"""Two unmatched words sharing this many first letters share a root and match like a typo."""

SEMANTIC_BAND_LOW = 0.3
"""From this `rephrase_similarity` up to REPHRASE_THRESHOLD the lexical score is unsure: embeddings help."""

SEMANTIC_WEIGHT = 0.4
"""Weight of the embedding cosine similarity added to the lexical score in the unsure band."""

SEMANTIC_THRESHOLD = 0.68
"""In the unsure band, `rephrase_similarity` + SEMANTIC_WEIGHT x cosine at or above this is a rephrase:
the more the embeddings agree, the fewer shared words are needed (cosine 0.9: 0.32; 0.6: 0.44)."""


def _match_compounds(only_a: dict[str, float], only_b: dict[str, float], words_b: tuple[str, ...]) -> float:
    """Match a closed compound on one side ('quicksort') with its two words on the other ('quick sort')."""
    matched = 0.0
    for word in [word for word in only_a if len(word) >= COMPOUND_MIN_LETTERS]:
        for first, second in itertools.pairwise(words_b):
            joined = first + second
            # `word` is a stem: 'datetim' for 'datetime'
            if joined.startswith(word) and len(joined) - len(word) <= 3:
                parts = lexeme(first)[0], lexeme(second)[0]
                if parts[0] in only_b and parts[1] in only_b and parts[0] != parts[1]:
                    matched += only_a.pop(word)
                    del only_b[parts[0]], only_b[parts[1]]
                    break
    return matched


def _match_typos(only_a: dict[str, float], only_b: dict[str, float]) -> float:
    """Match leftover words that are a mistyped or shortened word ('revrse'/'reverse', 'config'/'configs')."""
    matched = 0.0
    for word in list(only_a):
        if len(word) < 4 or not only_b:
            continue
        best, best_similarity = "", 0.0
        for other in only_b:
            if len(other) < 4 or other[0] != word[0] or (word in CONTRASTS and other in CONTRASTS):
                continue  # typos keep the first letter; 'java' is not a typo of 'javascript'
            if word.startswith(other) or other.startswith(word):
                similarity = 0.9  # cut short: 'config' / 'configur'
            elif word[:SHARED_PREFIX_LETTERS] == other[:SHARED_PREFIX_LETTERS]:
                similarity = TYPO_MIN_SIMILARITY  # one root: 'scrollabl'/'scrollbar', 'apologiz'/'apology'
            elif len(word) == len(other) == 4:
                # in four letters one changed letter is another word ('cast'/'cost'); two swapped are a typo
                similarity = 0.9 if OSA.distance(word, other) == 1 and sorted(word) == sorted(other) else 0.0
            else:
                similarity = OSA.normalized_similarity(word, other)  # a swap of two letters is one edit
            if similarity > best_similarity:
                best, best_similarity = other, similarity
        if best_similarity >= TYPO_MIN_SIMILARITY:
            matched += best_similarity * min(only_a.pop(word), only_b.pop(best))
    return matched


def _may_be_compound(only_a: dict[str, float], only_b: dict[str, float], b: Prompt) -> bool:
    """Whether a leftover word of one side may be two words of the other written together."""
    return len(only_b) >= 2 and any(
        len(word) >= COMPOUND_MIN_LETTERS and word in b.squashed for word in only_a
    )


def _typo_reachable(only_a: dict[str, float], only_b: dict[str, float]) -> float:
    """An upper bound on the weight typo matching can add: typos are 4+ letters and keep their first one."""
    letters_a = {word[0] for word in only_a if len(word) >= 4}
    letters_b = {word[0] for word in only_b if len(word) >= 4}
    common = letters_a & letters_b
    if not common:
        return 0.0
    return min(
        sum(weight for word, weight in only_a.items() if len(word) >= 4 and word[0] in common),
        sum(weight for word, weight in only_b.items() if len(word) >= 4 and word[0] in common),
    )


def _is_minimal_pair(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """The same sentence with one word replaced ('reverse' -> 'sort'): people who reword change more."""
    shorter = min(len(a), len(b))
    if shorter < 3:
        return False
    max_edits = MINIMAL_PAIR_MAX_EDITS + (shorter >= MINIMAL_PAIR_LONG_WORDS)
    if Levenshtein.distance(a, b, score_cutoff=max_edits + 1) > max_edits:
        return False
    # Adjacent edits form one changed span: 'remote work' -> 'productivity' is a replace and a delete.
    spans: list[list[int]] = []
    for op in Levenshtein.opcodes(a, b):
        if op.tag == "equal":
            continue
        if spans and spans[-1][1] == op.src_start and spans[-1][3] == op.dest_start:
            spans[-1][1], spans[-1][3] = op.src_end, op.dest_end
        else:
            spans.append([op.src_start, op.src_end, op.dest_start, op.dest_end])
    swaps = 0
    for src_start, src_end, dest_start, dest_end in spans:
        replaced = {word for word in a[src_start:src_end] if word not in lexicon.STOP_WORDS}
        replacing = {word for word in b[dest_start:dest_end] if word not in lexicon.STOP_WORDS}
        if not replaced and not replacing:
            continue  # only stop words changed
        if not replaced or not replacing or min(len(replaced), len(replacing)) > 1:
            return False  # a word only added or dropped, or a whole phrase reworded: not a swap
        swaps += 1
    return swaps == 1


def _asks_for_alternative(a: Prompt, b: Prompt, only_a: dict[str, float], only_b: dict[str, float]) -> bool:
    """Whether the prompts differ by an alternative: python/javascript, 5/10, a swap, a reversed direction."""
    if a.groups and b.groups and only_a and only_b:
        groups_a = {a.groups[word] for word in only_a if word in a.groups}
        if groups_a and not groups_a.isdisjoint(b.groups[word] for word in only_b if word in b.groups):
            return True
    if a.negations != b.negations:
        return True  # "print without a newline" is the opposite of "print a newline"
    if sum(only_a.values()) + sum(only_b.values()) >= 1.0 and _is_minimal_pair(a.stems, b.stems):
        return True
    if (
        len(a.numbers) > 1
        and a.numbers != b.numbers
        and sorted(a.numbers) == sorted(b.numbers)
        and 2 * len(a.numbers) >= min(len(a.content), len(b.content))
    ):
        return True  # mostly numbers, an expression, where order is meaning: 2^10 vs 10^2
    return any((target, source) in b.directions for source, target in a.directions if source != target)


def bounded_similarity(previous_prompt: str, next_prompt: str, floor: float) -> float:
    """`rephrase_similarity`, or, as soon as the score cannot reach `floor`, an upper bound below `floor`."""
    return _score(previous_prompt, next_prompt, floor)[0]


def _score(previous_prompt: str, next_prompt: str, floor: float) -> tuple[float, bool]:
    """`bounded_similarity`, and whether the prompts differ by an alternative (python/javascript, 5/10)."""
    # Greedy typo matching depends on which side leads: a fixed order makes the score exactly symmetric.
    if next_prompt < previous_prompt:
        previous_prompt, next_prompt = next_prompt, previous_prompt
    a = normalise(previous_prompt)
    b = normalise(next_prompt)
    if not a.content or not b.content:
        return (1.0 if a.words and a.words == b.words else 0.0), False
    content_a, content_b = a.content, b.content
    matched = 0.0
    only_a: dict[str, float] = {}
    for word, weight in content_a.items():
        if word in content_b:
            matched += weight  # a word's weight depends on the word only: the same on both sides
        else:
            only_a[word] = weight
    only_b = {word: weight for word, weight in content_b.items() if word not in content_a}
    total = a.total + b.total
    if only_a and only_b:
        compound_a = _may_be_compound(only_a, only_b, b)
        compound_b = _may_be_compound(only_b, only_a, a)
        if floor > 0.0 and not (compound_a or compound_b):
            bound = 2.0 * (matched + _typo_reachable(only_a, only_b)) / total
            if bound < floor:
                # even if every leftover that could still match did, the floor is out of reach
                return bound, False
        if compound_a:
            matched += _match_compounds(only_a, only_b, b.words)
        if compound_b:
            matched += _match_compounds(only_b, only_a, a.words)
        if only_a and only_b:
            matched += _match_typos(only_a, only_b)
    elif 2.0 * matched / total < floor:
        return 2.0 * matched / total, False
    score = 2.0 * matched / total
    if only_a and only_b:
        substituted = min(sum(only_a.values()), sum(only_b.values()))
        score *= 1.0 - SUBSTITUTION_PENALTY * min(1.0, substituted)
    alternative = _asks_for_alternative(a, b, only_a, only_b)
    if alternative:
        score *= 1.0 - CONTRAST_PENALTY
    return max(0.0, min(1.0, score)), alternative


def rephrase_similarity(previous_prompt: str, next_prompt: str) -> float:
    """How much `next_prompt` asks the same thing as `previous_prompt`: 0.0 (unrelated) to 1.0 (the same).

    Both prompts are reduced to canonical content words: lower case, contractions expanded, question framing
    ('how do I', "what's the best way to") and stop words dropped, words stemmed and mapped through a small
    synonym lexicon ('fix'/'solve', 'dict'/'dictionary'), typos and split compounds matched. The score is the
    weighted Dice coefficient of those words (generic words such as 'use' or 'explain' weigh 0.3), lowered by
    SUBSTITUTION_PENALTY when each prompt keeps a word the other lacks ('sort' for 'reverse'), and by
    CONTRAST_PENALTY when they differ by alternatives: known rivals (python/javascript, ascending/descending),
    other numbers, a swapped direction (fahrenheit to celsius / celsius to fahrenheit) or one word replaced in
    an otherwise identical sentence. Symmetric. 0.0 when either prompt has no content word, unless both are
    the same words.
    """
    return bounded_similarity(previous_prompt, next_prompt, 0.0)


def is_rephrase(previous_prompt: str, next_prompt: str) -> bool:
    """True when `next_prompt` asks what `previous_prompt` asked again, verbatim or in other words.

    A different request on the same topic ('sort' after 'reverse a list'), the same request for another
    language or number, a follow-up and a new task are not rephrases. Empty prompts never are.

    Decided by `rephrase_similarity` (>= REPHRASE_THRESHOLD), except where it is unsure: from
    SEMANTIC_BAND_LOW up to the threshold, for prompts that do not differ by an alternative, the
    embedding similarity is added (lexical + SEMANTIC_WEIGHT x `semantic.similarity` >=
    SEMANTIC_THRESHOLD), which catches paraphrases with fewer shared words. Without the embedding model
    the lexical score alone decides.
    """
    score, alternative = _score(previous_prompt, next_prompt, SEMANTIC_BAND_LOW)
    if score >= REPHRASE_THRESHOLD:
        return True
    if score < SEMANTIC_BAND_LOW or alternative:
        return False
    meaning = semantic.similarity(previous_prompt, next_prompt)
    return meaning is not None and score + SEMANTIC_WEIGHT * meaning >= SEMANTIC_THRESHOLD
