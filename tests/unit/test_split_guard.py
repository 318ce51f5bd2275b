"""The split guard's decisions, fed the group descriptions a broker would give (the broker itself:
tests/integration/test_split_guard.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from infra.settings import ClickHouseSettings, KafkaSettings, PipelineSettings, Settings
from sinks.guard import Describe, GroupMember, SplitError, SplitWatch, check_alone, embedded

CHDB = Settings(
    kafka=KafkaSettings(topic_namespace="ns"),
    clickhouse=ClickHouseSettings(url="chdb:///var/lib/feedbackloop/chdb"),
    pipeline=PipelineSettings(session_timeout_s=6),
)
SERVER = CHDB.model_copy(update={"clickhouse": ClickHouseSettings(url="http://u:p@clickhouse:8123")})
THIS = GroupMember("m-1", "rdkafka", "10.0.0.1")
OTHER = GroupMember("m-2", "rdkafka", "10.0.0.2")


def scripted(*answers: list[GroupMember] | None) -> tuple[list[str], Describe]:
    """A describe function answering ``answers`` in turn (the last one from then on)."""
    asked: list[str] = []
    replies: Iterator[list[GroupMember] | None] = iter(answers)
    last: list[list[GroupMember] | None] = [None]

    def describe(_kafka: KafkaSettings, group: str) -> list[GroupMember] | None:
        asked.append(group)
        last[0] = next(replies, last[0])
        return last[0]

    return asked, describe


def test_only_a_sink_on_chdb_is_guarded() -> None:
    assert embedded(CHDB)
    assert not embedded(SERVER)
    asked, describe = scripted([OTHER])
    check_alone(SERVER, describe=describe)
    assert asked == []


def test_an_empty_group_or_an_unanswered_question_lets_the_sink_start() -> None:
    answers: tuple[list[GroupMember] | None, ...] = ([], None)
    for answer in answers:
        asked, describe = scripted(answer)
        check_alone(CHDB, describe=describe)
        assert asked == ["ns.feedbackloop-clickhouse-sink"]


def test_a_member_that_stays_is_another_sink_and_the_message_names_the_fix() -> None:
    _asked, describe = scripted([OTHER])
    with pytest.raises(SplitError) as refused:
        check_alone(CHDB, grace_s=0.05, poll_s=0.01, describe=describe)
    message = str(refused.value)
    assert "FEEDBACKLOOP_CLICKHOUSE__URL" in message
    assert "server" in message
    assert "chdb:///var/lib/feedbackloop/chdb" in message
    assert "1 other member(s)" in message
    assert "10.0.0.2" in message


def test_a_member_that_leaves_within_the_grace_is_a_ghost() -> None:
    asked, describe = scripted([OTHER], [OTHER], [])
    check_alone(CHDB, grace_s=5, poll_s=0.01, describe=describe)
    assert len(asked) == 3


def test_the_watch_refuses_after_two_crowded_looks_in_a_row() -> None:
    _asked, describe = scripted([THIS], [THIS, OTHER], [THIS], None, [THIS, OTHER], [THIS, OTHER])
    said: list[str] = []
    done = threading.Event()

    def refuse(message: str) -> None:
        said.append(message)
        done.set()

    watch = SplitWatch(CHDB, refuse, interval_s=0.01, grace_s=0, describe=describe).start()
    assert done.wait(5)
    watch.stop()
    assert len(said) == 1
    assert "1 other member(s)" in said[0]


def test_the_watch_lets_a_ghost_leave_within_the_grace() -> None:
    """A broker restart: the sink rejoins under a new member id while its old one lingers until its
    session expires. Before, two crowded looks made the sink refuse and stop the worker."""
    now = [0.0]
    looks: list[list[GroupMember]] = [[THIS, OTHER]] * 5 + [[THIS]] * 3 + [[THIS, OTHER]] * 12

    def describe(_kafka: KafkaSettings, _group: str) -> list[GroupMember] | None:
        now[0] += 2.0
        return looks.pop(0) if looks else [THIS, OTHER]

    said: list[str] = []
    done = threading.Event()

    def refuse(message: str) -> None:
        said.append(message)
        done.set()

    watch = SplitWatch(CHDB, refuse, interval_s=0.001, grace_s=11, describe=describe, clock=lambda: now[0])
    watch.start()
    assert done.wait(5)
    watch.stop()
    # Crowded for 8 s (5 looks), alone, then crowded for good: refused once it lasted 11 s, not before.
    assert len(said) == 1
    assert now[0] == 2.0 * (5 + 3 + 7)


def test_the_watch_does_nothing_for_a_sink_on_a_server() -> None:
    asked, describe = scripted([THIS, OTHER])
    watch = SplitWatch(SERVER, lambda _m: None, interval_s=0.01, describe=describe).start()
    watch.stop()
    assert asked == []
