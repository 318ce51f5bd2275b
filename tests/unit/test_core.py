"""The transport-free processing core: what it publishes, what it persists, and what it restores."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from infra.settings import PipelineSettings
from producers.synthetic import WorkloadSpec, generate
from schemas import DeadLetter, FeedbackEvent, FeedbackType, InteractionEvent, partition_for
from stream_processors.core import (
    RECORDS,
    WINDOWS,
    ChangelogWrite,
    InputRecord,
    ProcessingCore,
    Step,
    Store,
    input_read_to_end,
)
from stream_processors.offline import OFFLINE_TOPICS, OfflinePipeline, RawMessage

NAMES = OFFLINE_TOPICS
PIPELINE = PipelineSettings()
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = int((T0 + timedelta(days=1)).timestamp() * 1000)  # a wall clock past every window


class Changelog:
    """A compacted changelog in memory: the last value per key, deletions remove the key."""

    def __init__(self) -> None:
        self.records: dict[Store, dict[str, bytes]] = {RECORDS: {}, WINDOWS: {}}
        self.released: dict[Store, list[str]] = {RECORDS: [], WINDOWS: []}

    def write(self, writes: Iterable[ChangelogWrite]) -> None:
        for store, _partition, key, value in writes:
            if value is None:
                self.records[store].pop(key.decode(), None)
            else:
                self.records[store][key.decode()] = value

    def recovered(self, store: Store) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.records[store].items() if k not in self.released[store]]

    def release(self, store: Store, keys: Iterable[str]) -> None:
        self.released[store].extend(keys)

    def hand_back(self, store: Store, records: Any) -> None:
        self.released[store] = [k for k in self.released[store] if k not in records]


def interaction(session: str = "s1", at: datetime = T0, **extra: Any) -> InteractionEvent:
    return InteractionEvent(
        event_id=uuid.uuid4(), interaction_id=uuid.uuid4(), user_id="u1", session_id=session,
        prompt="How do I reverse a list?", prompt_version="v1", model="m", response="Use slicing.",
        response_time_ms=120, created_at=at, **extra,
    )  # fmt: skip


def feedback(x: InteractionEvent, kind: FeedbackType, seconds: float, **extra: Any) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=uuid.uuid4(), interaction_id=x.interaction_id, user_id=x.user_id, session_id=x.session_id,
        created_at=x.created_at + timedelta(seconds=seconds), feedback_type=kind, **extra,
    )  # fmt: skip


def message(
    event: InteractionEvent | FeedbackEvent, offset: int, partition: int = 0, published_s: float = 0.0
) -> InputRecord:
    topic = NAMES.interactions if isinstance(event, InteractionEvent) else NAMES.feedback
    return InputRecord(
        topic, partition, offset, event.session_id.encode(), event.model_dump_json().encode(), published_s
    )


def never(_topic: str, _partition: int) -> bool:
    return False


def always(_topic: str, _partition: int) -> bool:
    return True


def published(step: Step, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(p.value) for p in step.messages() if p.topic == topic]


def test_read_to_end_from_high_watermark_handed_and_processed_offsets() -> None:
    assert input_read_to_end(None, 5, 5) is False  # no fetch response yet
    assert input_read_to_end(0, None, None) is True  # an empty partition
    assert input_read_to_end(10, None, None) is None  # nothing handed over yet: unknown
    assert input_read_to_end(10, 10, None) is True  # positioned at the end after a seek, nothing to read
    assert input_read_to_end(10, 7, None) is False
    assert input_read_to_end(10, 9, 9) is True  # the last message went through
    assert input_read_to_end(10, 9, 8) is False  # handed over, not yet processed
    assert input_read_to_end(10, 8, 8) is False  # more on the broker


def test_outputs_and_changelog_writes_come_apart_with_publish_times() -> None:
    core = ProcessingCore(PIPELINE, NAMES)
    x = interaction()
    up = feedback(x, FeedbackType.THUMBS_UP, 3)
    step = core.process_events(
        [message(x, 0, published_s=1000.5), message(up, 0, published_s=1002.25)], 0, never
    )

    assert list(step.messages()) == list(step.messages())  # serialized on the way out, the same each time
    joined = [p for p in step.messages() if p.topic == NAMES.joined]
    assert [(p.key, p.partition, p.timestamp_ms) for p in joined] == [(b"s1", None, 1_002_250)]
    assert orjson.loads(joined[0].value)["time_to_feedback_ms"] == 3000
    assert step.changelog == [
        ChangelogWrite(RECORDS, 0, str(x.interaction_id).encode(), step.changelog[0].value)
    ]
    assert step.changelog[0].value is not None
    assert orjson.loads(step.changelog[0].value)["p"] == 0
    assert core.processed_offset(NAMES.feedback, 0) == 0
    assert core.processed_offset(NAMES.feedback, 1) is None


def test_bad_input_is_dead_lettered_and_the_rest_of_the_batch_goes_on() -> None:
    core = ProcessingCore(PIPELINE, NAMES)
    x = interaction()
    garbage = InputRecord(NAMES.interactions, 0, 1, b"s1", b'{"schema_version": 1, "event_id": ', 0.0)
    wrong_key = InputRecord(
        NAMES.feedback,
        0,
        7,
        b"other",
        feedback(x, FeedbackType.COPY, 1, copied_chars=4).model_dump_json().encode(),
    )
    later = feedback(x, FeedbackType.THUMBS_DOWN, 2)
    step = core.process_events([message(x, 0), garbage, wrong_key, message(later, 8)], 0, never)

    letters = [
        DeadLetter.model_validate_json(p.value) for p in step.messages() if p.topic == NAMES.deadletter
    ]
    assert [(d.source_topic, d.offset, d.error_type) for d in letters] == [
        (NAMES.interactions, 1, "validation_error"),
        (NAMES.feedback, 7, "invalid_message"),
    ]
    assert letters[0].original_value() == garbage.value
    assert [j["event_id"] for j in published(step, NAMES.joined)] == [str(later.event_id)]
    assert core.invalid == 2


def test_state_restored_from_the_changelog_settles_like_the_original() -> None:
    x = interaction()
    events = [
        message(x, 0),
        message(feedback(x, FeedbackType.EDIT, 5, corrected_output="Use reversed()."), 0),
    ]
    # The original worker reads both and writes its state, but dies before anything settles.
    changelog = Changelog()
    first = ProcessingCore(PIPELINE, NAMES)
    changelog.write(first.process_events(events, 0, never).changelog)
    # Its successor gets no event: the partition is opened from the changelog and settled by the clock.
    second = ProcessingCore(PIPELINE, NAMES, changelog)
    second.open_partitions([0, 0], 0)
    assert changelog.released[RECORDS] == [str(x.interaction_id)]
    assert list(second.tick(LATER, never).messages()) == []  # not read to the end: time holds
    settled = second.tick(LATER, always)
    # The reference: the same events, never interrupted.
    reference = first.tick(LATER, always)
    assert published(settled, NAMES.outcomes) == published(reference, NAMES.outcomes)
    (outcome,) = published(settled, NAMES.outcomes)
    assert (outcome["interaction_id"], outcome["edited"], outcome["version"]) == (
        str(x.interaction_id),
        True,
        2,
    )
    assert [p.topic for p in settled.messages()].count(NAMES.contributions) == 1


def test_a_partition_takes_only_its_own_records_and_a_revoked_one_is_forgotten() -> None:
    changelog = Changelog()
    writer = ProcessingCore(PIPELINE, NAMES)
    mine, theirs = interaction("s1"), interaction("s2")
    changelog.write(
        writer.process_events(
            [message(mine, 0, partition=0), message(theirs, 0, partition=1)], 0, never
        ).changelog
    )

    core = ProcessingCore(PIPELINE, NAMES, changelog)
    core.process_events(
        [message(feedback(mine, FeedbackType.COPY, 1, copied_chars=3), 0, partition=0)], 0, never
    )
    assert set(core.partitions) == {0}
    assert list(core.partitions[0].records) == [str(mine.interaction_id)]
    assert changelog.released[RECORDS] == [str(mine.interaction_id)]

    core.forget([(NAMES.interactions, 0), (NAMES.feedback, 0)])
    assert core.partitions == {}
    assert core.processed_offset(NAMES.feedback, 0) is None


def test_contribution_windows_aggregate_and_a_corrupt_contribution_is_dead_lettered() -> None:
    core = ProcessingCore(PIPELINE, NAMES)
    x = interaction()
    core.process_events([message(x, 0)], 0, never)
    contributions = [p for p in core.tick(LATER, always).messages() if p.topic == NAMES.contributions]
    assert len(contributions) == 1
    window_key = contributions[0].key
    batch = [
        InputRecord(NAMES.contributions, 2, 0, window_key, b"not json"),
        InputRecord(NAMES.contributions, 2, 1, None, contributions[0].value),
        InputRecord(NAMES.contributions, 2, 2, window_key, b'{"version": 1}'),
        InputRecord(NAMES.contributions, 2, 3, window_key, contributions[0].value),
    ]
    step = core.process_contributions(batch)
    letters = [
        DeadLetter.model_validate_json(p.value) for p in step.messages() if p.topic == NAMES.deadletter
    ]
    assert [(d.offset, d.error_type) for d in letters] == [
        (0, "invalid_message"),
        (1, "invalid_message"),
        (2, "invalid_message"),
    ]
    (aggregate,) = published(step, NAMES.metrics)
    assert (aggregate["interactions"], aggregate["version"]) == (1, 1)
    assert {w.store for w in step.changelog} == {WINDOWS}
    assert {w.partition for w in step.changelog} == {2}


def test_offline_routes_every_key_with_the_kafka_partitioner() -> None:
    workload = generate(WorkloadSpec(interactions=300, users=40, seed=7, malformed=0))
    offline = OfflinePipeline(PIPELINE, partitions=5, batch=100)
    for m in workload.events:
        offline.feed(
            RawMessage(isinstance(m, InteractionEvent), m.session_id.encode(), m.model_dump_json().encode())
        )
    placed = {  # before the end, while the records are still held
        record.session_id: partition
        for partition, state in offline.core.partitions.items()
        for record in state.records.values()
    }
    assert placed
    assert all(partition_for(session.encode(), 5) == p for session, p in placed.items())
    offline.finish()
    assert len(offline.result.outcomes) == len(workload.interactions)


@pytest.mark.parametrize("batch", [1, 7, 5000])
def test_offline_results_do_not_depend_on_the_batch_size(batch: int) -> None:
    workload = generate(WorkloadSpec(interactions=200, users=30, seed=3, malformed=0))
    messages = [
        RawMessage(isinstance(m, InteractionEvent), m.session_id.encode(), m.model_dump_json().encode())
        for m in workload.events
    ]
    reference = OfflinePipeline(PIPELINE, batch=2000).run(messages)
    result = OfflinePipeline(PIPELINE, batch=batch).run(messages)
    strip = ("settled_at", "amended")  # when an outcome settles depends on where batches end

    def facts(outcomes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {i: {k: v for k, v in o.items() if k not in strip} for i, o in outcomes.items()}

    assert facts(result.outcomes) == facts(reference.outcomes)
    assert result.windows.keys() == reference.windows.keys()


def test_a_tick_can_advance_one_partition_at_a_time() -> None:
    core = ProcessingCore(PIPELINE, NAMES)
    first, second = interaction("s1"), interaction("s2")
    core.process_events([message(first, 0, partition=0), message(second, 0, partition=1)], 0, never)
    asked: list[tuple[str, int]] = []

    def answer(topic: str, partition: int) -> bool:
        asked.append((topic, partition))
        return True

    step = core.tick(LATER, answer, [1, 7])  # 7 is not open here: nothing to advance
    assert asked == [(NAMES.interactions, 1), (NAMES.feedback, 1)]
    assert [o["interaction_id"] for o in published(step, NAMES.outcomes)] == [str(second.interaction_id)]
    assert {w.partition for w in step.changelog} == {1}
    assert [o["interaction_id"] for o in published(core.tick(LATER, answer), NAMES.outcomes)] == [
        str(first.interaction_id)
    ]


class ResumingStore:
    """Faust's in-memory table store as a worker sees it: a recovery copies what the changelog got
    since this worker's last recovery on top of what the store holds (the core's own writes reach
    the store only that way); a partition that stays with the worker is not read again from the start."""

    def __init__(self) -> None:
        self.log: list[tuple[Store, str, bytes | None]] = []
        self.data: dict[Store, dict[str, bytes]] = {RECORDS: {}, WINDOWS: {}}
        self._read = 0

    def write(self, writes: Iterable[ChangelogWrite]) -> None:
        self.log.extend((store, key.decode(), value) for store, _p, key, value in writes)

    def recover(self) -> None:
        for store, key, value in self.log[self._read :]:
            if value is None:
                self.data[store].pop(key, None)
            else:
                self.data[store][key] = value
        self._read = len(self.log)

    def recovered(self, store: Store) -> list[tuple[str, bytes]]:
        return list(self.data[store].items())

    def release(self, store: Store, keys: Iterable[str]) -> None:
        for key in keys:
            self.data[store].pop(key, None)

    def hand_back(self, store: Store, records: Any) -> None:
        self.data[store].update(records)


def test_a_partition_reassigned_to_the_same_worker_keeps_the_records_it_did_not_touch() -> None:
    """Revoked and assigned back (another worker joined): Faust resumes the recovery where it stopped,
    on top of its store, so the records the core took from the store must be handed back."""
    store = ResumingStore()
    before = ProcessingCore(PIPELINE, NAMES)  # the previous owner: its records are in the changelog
    a = interaction("sa")
    store.write(before.process_events([message(a, 0)], 0, never).changelog)

    store.recover()
    core = ProcessingCore(PIPELINE, NAMES, store)
    b = interaction("sb", at=T0 + timedelta(seconds=5))
    store.write(core.process_events([message(b, 1)], 0, never).changelog)  # restores a, adds b
    assert len(core.partitions[0].records) == 2

    core.forget([(NAMES.interactions, 0), (NAMES.feedback, 0)])  # a rebalance...
    store.recover()  # ...that gives partition 0 back: only what was written since is read
    core.open_partitions([0], LATER)
    assert {r.interaction_id for r in core.partitions[0].records.values()} == {
        str(a.interaction_id),
        str(b.interaction_id),
    }
    settled = core.tick(LATER + 60_000, lambda _t, _p: True)
    outcomes = [v for topic, _, v, _, _ in settled.pending if topic == NAMES.outcomes]
    assert {o["interaction_id"] for o in outcomes if isinstance(o, dict)} == {
        str(a.interaction_id),
        str(b.interaction_id),
    }
