"""Rephrase and clarifying follow-up detectors: edge cases, hard negatives, exclusivity, held-out F1,
the frozen held-out set, the semantic tiebreaker and its lexical fallback."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from stream_processors.signals.intent import (
    is_clarifying_followup,
    is_rephrase,
    lexicon,
    normalise,
    rephrase,
    rephrase_similarity,
    semantic,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "intent_pairs.jsonl"
# Written apart from intent_pairs.jsonl and committed before any tuning; never edited (docs/detectors.md).
FROZEN = DATA.with_name("intent_heldout.jsonl")
# Written like the frozen set, on other topics, and tuned on.
DEV = DATA.with_name("intent_dev.jsonl")
REPHRASE_TARGET = 0.95
FOLLOWUP_TARGET = 0.85

RESPONSE = (
    "Make the endpoint idempotent: let clients send an Idempotency-Key header, store the key with the result "
    "of the first request, and return the stored result when the same key arrives again. Keys expire after "
    "24 hours. Run `python -m venv .venv`, then `pip install -r requirements.txt`. PUT and DELETE are "
    "idempotent by definition; POST is not, and Timsort is faster on nearly sorted data."
)


def load_pairs(path: Path = DATA) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


PAIRS = load_pairs()
FROZEN_PAIRS = load_pairs(FROZEN)
DEV_PAIRS = load_pairs(DEV)


def f1(predicted: Sequence[bool], labels: Sequence[bool]) -> float:
    tp = sum(p and y for p, y in zip(predicted, labels, strict=True))
    fp = sum(p and not y for p, y in zip(predicted, labels, strict=True))
    fn = sum(y and not p for p, y in zip(predicted, labels, strict=True))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


# ------------------------------------------------------------------------------------------------------------
# Edge cases
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "nxt"), [("", ""), ("", "reverse a list"), ("reverse a list", ""), ("  ", "\n")]
)
def test_empty_prompts_are_neither_signal(previous: str, nxt: str) -> None:
    assert rephrase_similarity(previous, nxt) == 0.0
    assert not is_rephrase(previous, nxt)
    assert not is_clarifying_followup(previous, RESPONSE, nxt)


def test_empty_response_is_fine() -> None:
    assert is_clarifying_followup("explain git rebase", "", "why?")
    assert not is_clarifying_followup("explain git rebase", "", "write a haiku about autumn")


@pytest.mark.parametrize(
    "prompt",
    [
        "how do I reverse a list in python",
        "What's 15% of 80?",
        "hi",
        "¿Cómo invierto una lista en Python?",
        "リストを逆順にする方法は？",
    ],
)
def test_identical_prompts_are_rephrases(prompt: str) -> None:
    assert rephrase_similarity(prompt, prompt) == 1.0
    assert is_rephrase(prompt, prompt)


@pytest.mark.parametrize(
    "variant",
    [
        "HOW DO I REVERSE A LIST IN PYTHON",
        "  how do i reverse a list in python?!  ",
        "How do I reverse a list in Python?",
        "how   do I\treverse a list\nin python",
    ],
)
def test_case_whitespace_and_punctuation_do_not_matter(variant: str) -> None:
    assert rephrase_similarity("how do I reverse a list in python", variant) == 1.0


@pytest.mark.parametrize(
    ("previous", "nxt"),
    [
        ("how do I reverse a list in python", "python: reverse a list, how?"),
        ("how do I reverse a list in python", "What's the way to reverse a Python list?"),
        ("how to reverse a linked list", "how to revrse a linked lsit"),
        ("what is 15% of 80", "15 percent of 80?"),
        ("how do I fix this error in my django app", "how can I solve this django app error"),
        ("what is the time complexity of quicksort", "quick sort time complexity?"),
        ("I can't log in to my account", "cannot sign in to my account"),
    ],
)
def test_rephrases(previous: str, nxt: str) -> None:
    assert is_rephrase(previous, nxt)


@pytest.mark.parametrize(
    ("previous", "nxt"),
    [
        ("how do I reverse a list in python", "how do I sort a list in python"),
        ("how do I reverse a list in python", "how do I reverse a list in javascript"),
        ("sort an array in ascending order", "sort an array in descending order"),
        ("convert 72 fahrenheit to celsius", "convert 72 celsius to fahrenheit"),
        ("what is 15% of 80", "what is 25% of 80"),
        ("What's 2^10?", "what's 10^2?"),
        ("how to print without a newline in python", "how to print a newline in python"),
        ("what is the time complexity of quicksort", "what is the space complexity of quicksort"),
        ("how do I reverse a list in python", "write a haiku about autumn"),
    ],
)
def test_not_rephrases(previous: str, nxt: str) -> None:
    assert not is_rephrase(previous, nxt)


def test_similarity_is_a_symmetric_score_in_0_1() -> None:
    for pair in PAIRS[:200]:
        forward = rephrase_similarity(pair["previous_prompt"], pair["next_prompt"])
        backward = rephrase_similarity(pair["next_prompt"], pair["previous_prompt"])
        assert 0.0 <= forward <= 1.0
        assert forward == backward


def test_very_long_prompts() -> None:
    long_prompt = "Please review the following function and tell me why it leaks memory. " * 400
    assert len(long_prompt) > 25_000
    assert is_rephrase(long_prompt, long_prompt.upper())
    assert not is_rephrase(long_prompt, "how do I reverse a list in python")
    assert not is_clarifying_followup("explain git rebase", RESPONSE, long_prompt)  # a long new task
    assert 0.0 <= rephrase_similarity(long_prompt, long_prompt[: len(long_prompt) // 2]) <= 1.0


def test_unicode_and_other_languages_do_not_break() -> None:
    assert is_rephrase("¿Cómo invierto una lista en Python?", "¿cómo invierto una lista en python")
    assert not is_rephrase("¿Cómo invierto una lista en Python?", "¿Cómo ordeno un diccionario en Java?")
    assert not is_clarifying_followup(
        "how to say good morning in japanese", "おはようございます", "ありがとう!"
    )
    assert 0.0 <= rephrase_similarity("naïve café résumé 🚀", "naive cafe resume") <= 1.0
    assert is_clarifying_followup(
        "what should I eat in Lisbon?", "Try the pastéis de Belém, custard tarts from Belém.", "pastéis？"
    )


def test_numbers_are_read_as_numbers() -> None:
    assert is_rephrase("what is fifteen percent of 80", "15% of 80?")
    assert is_rephrase("convert 2 cups of flour to grams", "two cups flour in grams?")
    assert not is_rephrase(
        "give me 5 interview questions for a product manager",
        "give me 10 interview questions for a product manager",
    )
    assert is_rephrase("how long do I bake chicken at 400F", "baking time for chicken at 400 f")


# ------------------------------------------------------------------------------------------------------------
# Clarifying follow-ups
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nxt",
    [
        "what do you mean by 'idempotent'?",
        "can you explain the second step?",
        "why?",
        "why",
        "which one is faster?",
        "what does that flag do?",
        "could you give an example of that?",
        "why should the keys expire after 24 hours?",
        "thanks! but why is POST not idempotent?",
    ],
)
def test_clarifying_followups(nxt: str) -> None:
    assert is_clarifying_followup("how do I make an api endpoint idempotent?", RESPONSE, nxt)


@pytest.mark.parametrize(
    "nxt",
    [
        "write a haiku about autumn",
        "thanks, that worked",
        "perfect, thank you so much!",
        "how do I make my api endpoint idempotent",  # a rephrase
        "how do I install docker on ubuntu",
        "Write a Python script that reads every CSV file in a folder, merges them on the id column, drops "
        "the inactive rows and writes one Excel sheet per region, then emails me the result every Monday",
    ],
)
def test_not_clarifying_followups(nxt: str) -> None:
    assert not is_clarifying_followup("how do I make an api endpoint idempotent?", RESPONSE, nxt)


def test_a_rephrase_is_never_a_followup() -> None:
    previous = "what is a closure in javascript?"
    for nxt in (previous, "what is a closure in javascript?", "what's a JS closure?"):
        assert is_rephrase(previous, nxt)
        assert not is_clarifying_followup(previous, RESPONSE, nxt)
    for pair in PAIRS:
        if is_rephrase(pair["previous_prompt"], pair["next_prompt"]):
            assert not is_clarifying_followup(
                pair["previous_prompt"], pair["previous_response"], pair["next_prompt"]
            )


def test_detectors_are_pure() -> None:
    arguments = ("how do I make an api endpoint idempotent?", RESPONSE, "what does that flag do?")
    first = [is_clarifying_followup(*arguments) for _ in range(3)]
    normalise.normalise.cache_clear()
    assert [is_clarifying_followup(*arguments) for _ in range(3)] == first


# ------------------------------------------------------------------------------------------------------------
# Lexicons
# ------------------------------------------------------------------------------------------------------------


def test_each_synonym_belongs_to_one_group() -> None:
    # a stem listed twice is silently taken by the later group, and a stop word never reaches the lexicon
    owner: dict[str, str] = {}
    for line in lexicon.SYNONYM_GROUPS:
        for word in line.split():
            stem = normalise.stem(word)
            assert owner.setdefault(stem, line) == line, f"{word!r} is in {owner[stem]!r} and {line!r}"
            assert word not in lexicon.STOP_WORDS, word
            assert stem not in lexicon.NEGATIONS, word


# ------------------------------------------------------------------------------------------------------------
# The labelled set
# ------------------------------------------------------------------------------------------------------------


def test_labelled_set_is_big_varied_and_split() -> None:
    fields = {"task", "split", "previous_prompt", "previous_response", "next_prompt", "label"}
    assert all(set(pair) == fields for pair in PAIRS)
    assert all(isinstance(pair["label"], bool) for pair in PAIRS)
    rephrases = [pair for pair in PAIRS if pair["task"] == "rephrase"]
    followups = [pair for pair in PAIRS if pair["task"] == "followup"]
    assert len(rephrases) >= 300
    assert len(followups) >= 250
    assert 0.35 <= sum(pair["label"] for pair in rephrases) / len(rephrases) <= 0.5
    assert all(pair["previous_response"] for pair in followups)
    for part in (rephrases, followups):
        held_out = sum(pair["split"] == "holdout" for pair in part) / len(part)
        assert 0.3 <= held_out <= 0.45
    # a family of pairs (one previous prompt) never straddles the split
    splits: dict[tuple[str, str], set[str]] = {}
    for pair in PAIRS:
        splits.setdefault((pair["task"], pair["previous_prompt"]), set()).add(pair["split"])
    assert all(len(split) == 1 for split in splits.values())


def held_out_f1(task: str, detect: Callable[[dict[str, Any]], bool]) -> float:
    part = [pair for pair in PAIRS if pair["task"] == task and pair["split"] == "holdout"]
    return f1([detect(pair) for pair in part], [pair["label"] for pair in part])


def test_held_out_rephrase_f1() -> None:
    score = held_out_f1("rephrase", lambda pair: is_rephrase(pair["previous_prompt"], pair["next_prompt"]))
    # 0.932 lexical only; the semantic tiebreaker trades some precision on this set's hard negatives
    # (0.887) for recall on paraphrases with few shared words (docs/detectors.md).
    assert score >= 0.88


def test_held_out_followup_f1() -> None:
    score = held_out_f1(
        "followup",
        lambda pair: is_clarifying_followup(
            pair["previous_prompt"], pair["previous_response"], pair["next_prompt"]
        ),
    )
    assert score >= 0.80


# ------------------------------------------------------------------------------------------------------------
# The frozen held-out set (issue 16): data the detectors were never tuned on
# ------------------------------------------------------------------------------------------------------------


def _rephrase(pair: dict[str, Any]) -> bool:
    return is_rephrase(pair["previous_prompt"], pair["next_prompt"])


def _followup(pair: dict[str, Any]) -> bool:
    return is_clarifying_followup(pair["previous_prompt"], pair["previous_response"], pair["next_prompt"])


def task_f1(pairs: list[dict[str, Any]], task: str, detect: Callable[[dict[str, Any]], bool]) -> float:
    part = [pair for pair in pairs if pair["task"] == task]
    return f1([detect(pair) for pair in part], [pair["label"] for pair in part])


def test_frozen_and_dev_sets_are_apart_from_the_first_and_realistic() -> None:
    fields = {"task", "split", "previous_prompt", "previous_response", "next_prompt", "label"}
    first = {pair["previous_prompt"] for pair in PAIRS}
    for pairs, size in ((FROZEN_PAIRS, 300), (DEV_PAIRS, 100)):
        assert all(set(pair) == fields and isinstance(pair["label"], bool) for pair in pairs)
        assert all(pair["previous_response"] for pair in pairs)  # every pair carries a real answer
        for task in ("rephrase", "followup"):
            part = [pair for pair in pairs if pair["task"] == task]
            assert len(part) >= size
            assert 0.35 <= sum(pair["label"] for pair in part) / len(part) <= 0.6
        assert not first & {pair["previous_prompt"] for pair in pairs}
    assert not {p["previous_prompt"] for p in FROZEN_PAIRS} & {p["previous_prompt"] for p in DEV_PAIRS}


def test_frozen_followup_f1_meets_the_target() -> None:
    assert task_f1(FROZEN_PAIRS, "followup", _followup) >= FOLLOWUP_TARGET


def test_frozen_rephrase_f1_does_not_regress() -> None:
    # 0.494 before issue 16's changes, 0.572 after; the target (0.95) is not met: see the test below.
    assert task_f1(FROZEN_PAIRS, "rephrase", _rephrase) >= 0.55


@pytest.mark.xfail(
    strict=True, reason="issue 16's rephrase target is not met yet (F1 0.572): docs/detectors.md"
)
def test_frozen_rephrase_f1_meets_the_target() -> None:
    # strict: once the detector reaches the target this passes, is reported as XPASS(strict) and fails,
    # and the mark must go
    assert task_f1(FROZEN_PAIRS, "rephrase", _rephrase) >= REPHRASE_TARGET


# ------------------------------------------------------------------------------------------------------------
# The semantic tiebreaker and the lexical fallback
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def without_wordllama(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The embedding package cannot be imported (as when it is not installed); restored afterwards."""
    semantic.reset()
    monkeypatch.setitem(sys.modules, "wordllama", None)  # `import wordllama` now raises ImportError
    yield
    semantic.reset()


def _lexical_decision(previous: str, nxt: str) -> bool:
    return rephrase_similarity(previous, nxt) >= rephrase.REPHRASE_THRESHOLD


def test_the_model_loads_offline_from_the_package() -> None:
    semantic.reset()
    assert semantic.available()
    same = "how do I unstage a file in git"
    assert semantic.similarity(same, same) == pytest.approx(1.0, abs=1e-5)
    first, second = "my laptop battery drains fast", "how to make my notebook battery last longer"
    assert semantic.similarity(first, second) == pytest.approx(semantic.similarity(second, first), abs=1e-6)
    before = semantic.embedding.cache_info().hits
    semantic.similarity(first, "something else entirely")
    assert semantic.embedding.cache_info().hits == before + 1  # the first prompt was embedded once


def test_the_semantic_signal_decides_only_in_the_unsure_band() -> None:
    for pair in DEV_PAIRS + PAIRS[:300]:
        previous, nxt = pair["previous_prompt"], pair["next_prompt"]
        score = rephrase_similarity(previous, nxt)
        if score >= rephrase.REPHRASE_THRESHOLD:
            assert is_rephrase(previous, nxt)
        elif score < rephrase.SEMANTIC_BAND_LOW:
            assert not is_rephrase(previous, nxt)
    # a paraphrase with few shared words that only the embeddings catch
    previous, nxt = "How do I record my screen on a Mac?", "record what's on my macbook screen"
    assert not _lexical_decision(previous, nxt)
    assert is_rephrase(previous, nxt)


def test_without_the_model_the_detectors_are_lexical(without_wordllama: None) -> None:
    assert not semantic.available()
    assert semantic.similarity("a", "b") is None
    assert semantic.embedding("a") is None
    for pair in DEV_PAIRS + PAIRS[:300]:
        assert is_rephrase(pair["previous_prompt"], pair["next_prompt"]) == _lexical_decision(
            pair["previous_prompt"], pair["next_prompt"]
        )
    assert not is_rephrase("How do I record my screen on a Mac?", "record what's on my macbook screen")
    assert is_clarifying_followup("explain git rebase", "", "why?")
