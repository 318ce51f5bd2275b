"""The way back from the dead-letter topic: list dead letters, and replay them to their source topic.

A dead letter keeps its message's original key and bytes (``schemas.DeadLetter``), so re-driving it
is publishing those bytes again, to the topic they came from. Typical use: events refused as
``too_late`` after an outage longer than the late horizon — raise
``FEEDBACKLOOP_PIPELINE__LATE_HORIZON_S``, restart the worker, then
``feedbackloop deadletters replay --reason too_late``.

Nothing is published twice: every replayed dead letter is recorded, by its identity (source topic,
partition, offset, stage, error type), on a compacted ledger topic, and a replay skips what the
ledger holds. The record is written after the message is acknowledged, so a replay cut short can
at worst publish a message once more — which the pipeline folds, since events are recognised by
their ``event_id``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import orjson
from pydantic import ValidationError

from infra.kafka import ensure_topics, read_topic
from infra.output_producer import OutputProducer
from infra.settings import Settings
from schemas import DeadLetter, topics

#: Ledger of replayed dead letters: compacted, keyed by the dead letter's identity.
LEDGER_TOPIC = "feedbackloop.deadletter-replays"


def ledger_topic(settings: Settings) -> str:
    """The ledger topic's real name under the namespace."""
    return topics.topic_name(LEDGER_TOPIC, settings.kafka.topic_namespace)


def identity(letter: DeadLetter) -> str:
    """What makes two dead letters the same message given up on for the same cause."""
    return f"{letter.source_topic}|{letter.partition}|{letter.offset}|{letter.stage}|{letter.error_type}"


@dataclass(frozen=True)
class LetterFilter:
    """Which dead letters a command is about; every given condition must hold."""

    reasons: tuple[str, ...] = ()
    topic: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __call__(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` passes. ``reasons`` match the error type or a word of the reason text."""
        if self.reasons and not any(r == letter.error_type or r in letter.reason for r in self.reasons):
            return False
        # `--topic ai.feedback.v1` names a contract topic; under a namespace its real name has a prefix.
        topic = self.topic
        if topic is not None and not (
            letter.source_topic == topic or letter.source_topic.endswith(f".{topic}")
        ):
            return False
        if self.since is not None and letter.dead_lettered_at < self.since:
            return False
        return self.until is None or letter.dead_lettered_at < self.until


def read_letters(settings: Settings, timeout_s: float = 60.0) -> Iterator[tuple[DeadLetter | None, bytes]]:
    """Every record of the dead-letter topic, parsed (None when it is not a dead letter), with its bytes."""
    name = topics.topic_name(topics.DEADLETTER, settings.kafka.topic_namespace)
    for message in read_topic(settings.kafka, name, timeout_s, group_id="feedbackloop-deadletters"):
        value = message.value() or b""
        try:
            yield DeadLetter.model_validate_json(value), value
        except ValidationError:
            yield None, value


def replayed(settings: Settings, timeout_s: float = 60.0) -> set[str]:
    """Identities of the dead letters replayed so far (the ledger)."""
    return {
        (message.key() or b"").decode()
        for message in read_topic(
            settings.kafka, ledger_topic(settings), timeout_s, "feedbackloop-deadletters"
        )
        if message.value() is not None
    }


@dataclass
class ReplayResult:
    """What a replay did."""

    matched: int = 0
    published: int = 0
    already_replayed: int = 0
    without_value: int = 0
    #: Set by a dry run: how many a real run would publish.
    would_publish: int = 0


def replay(
    settings: Settings, letters: Iterable[DeadLetter], *, dry_run: bool = False, timeout_s: float = 60.0
) -> ReplayResult:
    """Publish each dead letter's original key and bytes to its source topic, once (see the module
    docstring); ``dry_run`` only counts."""
    result = ReplayResult()
    done = replayed(settings, timeout_s)
    todo: dict[str, DeadLetter] = {}
    for letter in letters:
        result.matched += 1
        key = identity(letter)
        if key in done or key in todo:
            result.already_replayed += 1
        elif letter.value_b64 is None:
            result.without_value += 1
        else:
            todo[key] = letter
    if dry_run or not todo:
        result.would_publish = len(todo)
        return result
    ledger = ledger_topic(settings)
    ensure_topics(settings.kafka, [ledger], partitions=1, config={"cleanup.policy": "compact"})
    producer = OutputProducer(settings.kafka)
    for letter in todo.values():
        original_key = base64.b64decode(letter.key_b64) if letter.key_b64 is not None else None
        producer.produce(letter.source_topic, original_key, letter.original_value())
    producer.flush_blocking()  # acknowledged before the ledger says so
    at = orjson.dumps({"replayed_at": datetime.now().astimezone().isoformat()})
    for key in todo:
        producer.produce(ledger, key.encode(), at)
    producer.flush_blocking()
    result.published = len(todo)
    return result


__all__ = [
    "LEDGER_TOPIC",
    "LetterFilter",
    "ReplayResult",
    "identity",
    "ledger_topic",
    "read_letters",
    "replay",
    "replayed",
]
