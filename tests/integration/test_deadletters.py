"""The dead-letter replay tool against the real broker: filters, once-only publishing, the CLI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from feedbackloop.cli import app
from feedbackloop.deadletters import LetterFilter, ledger_topic, read_letters, replay
from infra.kafka import delete_topics, read_topic
from infra.output_producer import OutputProducer
from infra.settings import KafkaSettings, Settings
from schemas import DeadLetter, topics


@pytest.fixture
def settings(kafka: KafkaSettings) -> Iterator[Settings]:
    current = Settings(kafka=kafka)
    yield current
    delete_topics(kafka, [ledger_topic(current)])


def _letter(settings: Settings, offset: int, error_type: str, value: bytes) -> DeadLetter:
    return DeadLetter.of(
        topic=topics.topic_name(topics.FEEDBACK, settings.kafka.topic_namespace),
        partition=0,
        offset=offset,
        key=b"session-1",
        value=value,
        reason=f"{error_type}: test",
        error_type=error_type,
        stage="processor",
    )


def _publish(settings: Settings, letters: list[DeadLetter]) -> None:
    producer = OutputProducer(settings.kafka)
    name = topics.topic_name(topics.DEADLETTER, settings.kafka.topic_namespace)
    for letter in letters:
        producer.produce(name, b"session-1", letter.model_dump_json().encode())
    producer.flush_blocking()


def _feedback_topic(settings: Settings) -> list[tuple[bytes | None, bytes | None]]:
    name = topics.topic_name(topics.FEEDBACK, settings.kafka.topic_namespace)
    return [(m.key(), m.value()) for m in read_topic(settings.kafka, name)]


def test_replay_publishes_the_original_bytes_to_the_source_topic_once(settings: Settings) -> None:
    too_late = _letter(settings, 7, "too_late", b'{"late": 1}')
    again = _letter(settings, 7, "too_late", b'{"late": 1}')  # the same message given up on twice
    other = _letter(settings, 8, "validation_error", b"not json")
    _publish(settings, [too_late, again, other])

    wanted = LetterFilter(reasons=("too_late",), topic=topics.FEEDBACK)
    letters = [letter for letter, _ in read_letters(settings) if letter is not None and wanted(letter)]
    assert len(letters) == 2
    first = replay(settings, letters)
    assert (first.matched, first.published, first.already_replayed) == (2, 1, 1)
    assert _feedback_topic(settings) == [(b"session-1", b'{"late": 1}')]

    second = replay(settings, letters)
    assert (second.published, second.already_replayed) == (0, 2)
    assert _feedback_topic(settings) == [(b"session-1", b'{"late": 1}')], "nothing is published twice"


def test_the_cli_lists_and_replays_by_reason(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    _publish(
        settings,
        [_letter(settings, 3, "too_late", b'{"x": 1}'), _letter(settings, 4, "orphan_feedback", b"{}")],
    )
    monkeypatch.setenv("FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    monkeypatch.setenv("FEEDBACKLOOP_KAFKA__TOPIC_NAMESPACE", settings.kafka.topic_namespace)
    runner = CliRunner()
    listed = runner.invoke(app, ["deadletters", "list", "--reason", "too_late", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert len([line for line in listed.output.splitlines() if line.startswith("{")]) == 1
    refused = runner.invoke(app, ["deadletters", "replay"])
    assert refused.exit_code == 1
    dry = runner.invoke(app, ["deadletters", "replay", "--reason", "too_late", "--dry-run"])
    assert "1 would be published" in dry.output
    assert _feedback_topic(settings) == []
    done = runner.invoke(app, ["deadletters", "replay", "--reason", "too_late"])
    assert done.exit_code == 0, done.output
    assert "1 published" in done.output
    assert _feedback_topic(settings) == [(b"session-1", b'{"x": 1}')]
    listed = runner.invoke(app, ["deadletters", "list", "--reason", "too_late", "--format", "json"])
    assert '"replayed": true' in listed.output
