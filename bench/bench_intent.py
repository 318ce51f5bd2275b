"""Quality and speed of the implicit-signal detectors on ``tests/data/intent_pairs.jsonl``.

Run from the repository root: ``.venv/bin/python bench/bench_intent.py [--repeats 7]``.

Quality: precision, recall and F1 of ``is_rephrase`` and ``is_clarifying_followup`` on the tune split (the
lexicons and thresholds were fitted on it) and on the held-out split, next to the plain character
similarity baseline (rapidfuzz ``ratio`` with its best threshold, chosen on the tune split).

Speed: mean microseconds per call over the dataset. "stream" is the stream processor's situation: the
previous prompt is already normalised (it was the next prompt of the previous event) and the next prompt
is new; "warm" has both cached. Time is the thread's CPU time (a pause while another process runs is not
detector time), over chunks of 20 calls, each chunk timed ``--repeats`` times and its fastest run kept.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, utils

from stream_processors.signals import intent
from stream_processors.signals.intent import normalise

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "intent_pairs.jsonl"
BUDGET_US = 30.0
CHUNK = 20
# The machine reference (see main) on the development machine with nothing else running.
IDLE_REFERENCE_US = 0.8

Pair = dict[str, Any]


def load() -> list[Pair]:
    with DATA.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def scores(predicted: Sequence[bool], labels: Sequence[bool]) -> tuple[float, float, float]:
    """Precision, recall and F1 of the positive class."""
    tp = sum(p and y for p, y in zip(predicted, labels, strict=True))
    fp = sum(p and not y for p, y in zip(predicted, labels, strict=True))
    fn = sum(y and not p for p, y in zip(predicted, labels, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def rephrase(pair: Pair) -> bool:
    return intent.is_rephrase(pair["previous_prompt"], pair["next_prompt"])


def followup(pair: Pair) -> bool:
    return intent.is_clarifying_followup(
        pair["previous_prompt"], pair["previous_response"], pair["next_prompt"]
    )


def char_ratio(pair: Pair) -> float:
    return fuzz.ratio(pair["previous_prompt"], pair["next_prompt"], processor=utils.default_process) / 100.0


def baseline_threshold(tune: list[Pair]) -> float:
    """The rapidfuzz ratio threshold with the best F1 on the tune split."""
    ratios = [char_ratio(pair) for pair in tune]
    labels = [pair["label"] for pair in tune]
    return max((t / 100 for t in range(30, 100)), key=lambda t: scores([r >= t for r in ratios], labels)[2])


def quality(
    name: str, detect: Callable[[Pair], bool], pairs: list[Pair], target: float | None = None
) -> None:
    print(name + (f"  (target: held-out F1 >= {target:.2f})" if target else ""))
    for split in ("tune", "holdout"):
        part = [pair for pair in pairs if pair["split"] == split]
        positives = sum(pair["label"] for pair in part)
        precision, recall, f1 = scores([detect(pair) for pair in part], [pair["label"] for pair in part])
        print(
            f"  {split:<8} n={len(part):>4} positives={positives:>4}  "
            f"P={precision:.3f}  R={recall:.3f}  F1={f1:.3f}"
        )


def per_call_us(detect: Callable[[Pair], bool], pairs: list[Pair], repeats: int, stream: bool) -> float:
    """Mean µs per call: each chunk of calls is timed `repeats` times and its fastest run kept, so that a
    pause caused by another process on the machine does not count as detector time."""
    total = 0.0
    for start in range(0, len(pairs), CHUNK):
        chunk = pairs[start : start + CHUNK]
        best = float("inf")
        for _ in range(repeats):
            if stream:
                # As in the stream processor: the previous prompt was normalised when it was the next
                # prompt of the previous event; the next prompt is new.
                normalise.normalise.cache_clear()
                for pair in chunk:
                    normalise.normalise(pair["previous_prompt"])
            started = time.thread_time()
            for pair in chunk:
                detect(pair)
            best = min(best, time.thread_time() - started)
        total += best
    return total / len(pairs) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per chunk of calls; the fastest is kept")
    args = parser.parse_args()

    pairs = load()
    rephrases = [pair for pair in pairs if pair["task"] == "rephrase"]
    followups = [pair for pair in pairs if pair["task"] == "followup"]
    print(f"{DATA.relative_to(Path.cwd()) if DATA.is_relative_to(Path.cwd()) else DATA}: {len(pairs)} pairs")
    print()

    quality("is_rephrase", rephrase, rephrases, 0.90)
    threshold = baseline_threshold([pair for pair in rephrases if pair["split"] == "tune"])
    quality(
        f"  baseline: rapidfuzz ratio >= {threshold:.2f}", lambda p: char_ratio(p) >= threshold, rephrases
    )
    print()
    quality("is_clarifying_followup", followup, followups, 0.80)
    both = sum(rephrase(pair) and followup(pair) for pair in pairs)
    print(f"  pairs flagged as both rephrase and follow-up: {both}")
    print()

    # A fixed piece of pure Python timed the same way says how busy the machine is: other processes slow the
    # detectors down even in CPU time (shared caches and cores).
    reference = per_call_us(lambda pair: sum(range(100)) > 0, followups, args.repeats, stream=False)
    print(
        f"budget {BUDGET_US:.0f} µs/call; machine reference: sum(range(100)) takes {reference:.2f} µs now "
        f"(~{IDLE_REFERENCE_US} µs when the machine is otherwise idle)"
    )
    for name, detect, part in (
        ("is_rephrase", rephrase, rephrases),
        ("is_clarifying_followup", followup, followups),
    ):
        stream = per_call_us(detect, part, args.repeats, stream=True)
        warm = per_call_us(detect, part, args.repeats, stream=False)
        print(f"{name:<24} {stream:5.1f} µs/call stream, {warm:5.1f} µs/call warm (n={len(part)})")


if __name__ == "__main__":
    main()
