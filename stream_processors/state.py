"""The processing state of one input partition, and the pure logic that drives it.

One :class:`Record` per interaction id holds the interaction (once it arrived), every feedback
event on it and the later interactions that regenerated it. ``PartitionState`` applies events,
joins feedback to interactions in either order, settles interactions when the watermark passes
their observation window, amends them when late events change them, and expires them after the
retention horizon. It does no I/O: it returns what to emit and which records changed, and the
Faust wiring (``stream_processors.app``) sends the emissions, waits for them to be acknowledged,
and only then writes the changed records to the changelog. That order — outputs, then state,
then consumer offsets — is what keeps results exact when a worker dies at any moment: a replay
re-derives the same outputs with the same versions, and duplicates of inputs are recognised by
their ``event_id`` in the state.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import orjson

from infra.settings import PipelineSettings
from schemas import format_ms
from schemas.signals import WINDOWED_SIGNALS
from stream_processors.signals.edits import edit_operations
from stream_processors.signals.outcome import (
    EDIT,
    Feedback,
    Interaction,
    compute_outcome,
    next_candidates,
    outcome_version,
)

EmitKind = Literal["joined", "outcome", "contribution", "deadletter", "edit_ops"]


@dataclass(frozen=True, slots=True)
class Emit:
    """Something to publish: which stream it belongs to, its key and its JSON-ready value."""

    kind: EmitKind
    key: str
    value: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LostEvent:
    """An input that cannot be used; it goes to the dead-letter topic with the reason."""

    partition: int
    feedback: Feedback | None
    interaction: Interaction | None
    reason: str
    error_type: str


@dataclass(slots=True)
class Record:
    """Everything known about one interaction id."""

    interaction_id: UUID
    session_id: str
    first_seen_ms: int
    interaction: Interaction | None = None
    feedback: dict[UUID, Feedback] = field(default_factory=dict)
    regenerated_by: dict[UUID, int] = field(default_factory=dict)
    settled: bool = False
    emitted_version: int = 0

    def anchor_ms(self) -> int:
        """The time the record's windows count from."""
        return self.interaction.created_ms if self.interaction else self.first_seen_ms

    def encode(self, partition: int) -> bytes:
        """The record as changelog bytes."""
        return orjson.dumps(
            {
                "p": partition,
                "s": self.session_id,
                "t0": self.first_seen_ms,
                "i": self.interaction.to_state() if self.interaction else None,
                "f": [f.to_state() for f in self.feedback.values()],
                "r": self.regenerated_by,
                "settled": self.settled,
                "v": self.emitted_version,
            },
            option=orjson.OPT_NON_STR_KEYS,
        )

    @classmethod
    def decode(cls, interaction_id: UUID, data: bytes) -> tuple[int, Record]:
        """Inverse of :meth:`encode`: the partition and the record."""
        raw = orjson.loads(data)
        feedback = [Feedback.from_state(f) for f in raw["f"]]
        record = cls(
            interaction_id=interaction_id,
            session_id=raw["s"],
            first_seen_ms=raw["t0"],
            interaction=Interaction.from_state(raw["i"]) if raw["i"] is not None else None,
            feedback={f.event_id: f for f in feedback},
            regenerated_by={UUID(child): at for child, at in raw["r"].items()},
            settled=raw["settled"],
            emitted_version=raw["v"],
        )
        return int(raw["p"]), record


@dataclass
class Counters:
    """What one partition has done, for metrics and logs."""

    interactions: int = 0
    feedback: int = 0
    duplicates: int = 0
    outcomes: int = 0
    amendments: int = 0
    expired: int = 0
    dead_letters: int = 0


class PartitionState:
    """State and logic of one input partition (one owner at a time, so no locking inside)."""

    def __init__(self, partition: int, pipeline: PipelineSettings) -> None:
        self.partition = partition
        self.rules = pipeline.signals
        self.window_ms = pipeline.metrics_window_s * 1000
        self.settle_delay_ms = int(
            max(self.rules.abandon_window_s, self.rules.rephrase_window_s, self.rules.followup_window_s)
            * 1000
        )
        self.expire_after_ms = self.settle_delay_ms + int(pipeline.retention_s * 1000)
        self.link_window_ms = int(max(self.rules.rephrase_window_s, self.rules.followup_window_s) * 1000)
        self.records: dict[UUID, Record] = {}
        self.sessions: dict[str, dict[UUID, Interaction]] = {}
        self.watermark_ms = 0
        self.counters = Counters()
        self._settle_heap: list[tuple[int, UUID]] = []
        self._expire_heap: list[tuple[int, UUID]] = []
        self._changed: set[UUID] = set()
        self._deleted: set[UUID] = set()
        self._to_amend: set[UUID] = set()

    # ----------------------------------------------------------------- restore

    @classmethod
    def restore(
        cls, partition: int, pipeline: PipelineSettings, records: Iterable[tuple[str, bytes]]
    ) -> PartitionState:
        """Rebuild the state of ``partition`` from its changelog records (others are skipped)."""
        state = cls(partition, pipeline)
        for key, data in records:
            interaction_id = UUID(key)
            owner, record = Record.decode(interaction_id, data)
            if owner != partition:
                continue
            state.records[interaction_id] = record
            state._index(record)
            if record.interaction is not None and not record.settled:
                heapq.heappush(
                    state._settle_heap, (record.anchor_ms() + state.settle_delay_ms, interaction_id)
                )
            heapq.heappush(state._expire_heap, (record.anchor_ms() + state.expire_after_ms, interaction_id))
        return state

    def _index(self, record: Record) -> None:
        if record.interaction is not None:
            self.sessions.setdefault(record.session_id, {})[record.interaction_id] = record.interaction

    # ----------------------------------------------------------------- apply

    def apply_interaction(self, interaction: Interaction) -> list[Emit | LostEvent]:
        """Take in one interaction; return what it lets us emit right away (joined orphan feedback)."""
        record = self.records.get(interaction.interaction_id)
        if record is not None and record.interaction is not None:
            self.counters.duplicates += 1
            if record.interaction.event_id == interaction.event_id:
                return []
            return [
                LostEvent(
                    self.partition,
                    None,
                    interaction,
                    f"interaction_id {interaction.interaction_id} was already used by event "
                    f"{record.interaction.event_id}; interaction ids must be unique per AI call",
                    "duplicate_interaction_id",
                )
            ]
        self.counters.interactions += 1
        if record is None:
            record = Record(interaction.interaction_id, interaction.session_id, interaction.created_ms)
            self.records[interaction.interaction_id] = record
        record.interaction = interaction
        record.session_id = interaction.session_id
        self._index(record)
        self._touch(record)
        heapq.heappush(
            self._settle_heap, (interaction.created_ms + self.settle_delay_ms, record.interaction_id)
        )
        heapq.heappush(
            self._expire_heap, (interaction.created_ms + self.expire_after_ms, record.interaction_id)
        )

        if interaction.regenerated_from is not None:
            self._link_regeneration(interaction)
        self._amend_earlier_in_session(interaction)
        return [emit for f in record.feedback.values() for emit in self._joined_all(record, f)]

    def _link_regeneration(self, child: Interaction) -> None:
        parent_id = child.regenerated_from
        assert parent_id is not None
        parent = self.records.get(parent_id)
        if parent is None:
            # The regenerated interaction has not arrived (yet): remember the link for it.
            parent = Record(parent_id, child.session_id, child.created_ms)
            self.records[parent_id] = parent
            heapq.heappush(self._expire_heap, (child.created_ms + self.expire_after_ms, parent_id))
        if child.interaction_id not in parent.regenerated_by:
            parent.regenerated_by[child.interaction_id] = child.created_ms
            self._touch(parent)

    def _amend_earlier_in_session(self, newcomer: Interaction) -> None:
        # A new interaction may be the next one of an earlier, already settled interaction.
        for other in self.sessions.get(newcomer.session_id, {}).values():
            if (
                other.user_id == newcomer.user_id
                and other.created_ms <= newcomer.created_ms <= other.created_ms + self.link_window_ms
                and other.interaction_id != newcomer.interaction_id
            ):
                earlier = self.records.get(other.interaction_id)
                if earlier is not None and earlier.settled:
                    self._to_amend.add(other.interaction_id)

    def apply_feedback(self, feedback: Feedback) -> list[Emit | LostEvent]:
        """Take in one feedback event; return the joined feedback when its interaction is known."""
        record = self.records.get(feedback.interaction_id)
        if record is not None and feedback.event_id in record.feedback:
            self.counters.duplicates += 1
            return []
        self.counters.feedback += 1
        if record is None:
            record = Record(feedback.interaction_id, feedback.session_id, feedback.created_ms)
            self.records[feedback.interaction_id] = record
            heapq.heappush(
                self._expire_heap, (feedback.created_ms + self.expire_after_ms, record.interaction_id)
            )
        record.feedback[feedback.event_id] = feedback
        self._touch(record)
        if record.interaction is None:
            return []  # joined when the interaction arrives
        return self._joined_all(record, feedback)

    def _touch(self, record: Record) -> None:
        self._changed.add(record.interaction_id)
        self._deleted.discard(record.interaction_id)
        if record.settled:
            self._to_amend.add(record.interaction_id)

    def _joined_all(self, record: Record, feedback: Feedback) -> list[Emit | LostEvent]:
        """The joined feedback and, for an edit, its word-level operations."""
        joined: list[Emit | LostEvent] = [self._joined(record, feedback)]
        if feedback.feedback_type == EDIT:
            joined.append(self._edit_ops(record, feedback))
        return joined

    def _edit_ops(self, record: Record, feedback: Feedback) -> Emit:
        x = record.interaction
        assert x is not None
        assert feedback.corrected_output is not None
        measures = feedback.edit_measures(x.response, self.rules)
        diff = edit_operations(x.response, feedback.corrected_output)
        return Emit(
            "edit_ops",
            feedback.session_id,
            {
                "schema_version": 1,
                "event_id": feedback.event_id,
                "interaction_id": feedback.interaction_id,
                "user_id": feedback.user_id,
                "session_id": feedback.session_id,
                "created_at": format_ms(feedback.created_ms),
                "prompt_version": x.prompt_version,
                "model": x.model,
                "input_category": x.input_category,
                "response_words": diff.response_words,
                "corrected_words": diff.corrected_words,
                "edit_distance": measures.distance,
                "edit_distance_norm": measures.norm,
                "edit_size": measures.size,
                "operations": [op.to_json() for op in diff.operations],
                "truncated": diff.truncated,
            },
        )

    def _joined(self, record: Record, feedback: Feedback) -> Emit:
        x = record.interaction
        assert x is not None
        return Emit(
            "joined",
            feedback.session_id,
            {
                "schema_version": 1,
                "event_id": feedback.event_id,
                "interaction_id": feedback.interaction_id,
                "user_id": feedback.user_id,
                "session_id": feedback.session_id,
                "created_at": format_ms(feedback.created_ms),
                "feedback_type": feedback.feedback_type,
                "corrected_output": feedback.corrected_output,
                "copied_chars": feedback.copied_chars,
                "dwell_ms": feedback.dwell_ms,
                "comment": feedback.comment,
                "prompt_version": x.prompt_version,
                "original_output": x.response,
                "edit_distance": (
                    feedback.edit_measures(x.response, self.rules).distance
                    if feedback.feedback_type == EDIT
                    else None
                ),
                "time_to_feedback_ms": feedback.created_ms - x.created_ms,
            },
        )

    # ----------------------------------------------------------------- time

    def advance(self, watermark_ms: int) -> list[Emit | LostEvent]:
        """Move event time to ``watermark_ms``: settle, amend and expire what is due."""
        self.watermark_ms = max(self.watermark_ms, watermark_ms)
        wm = self.watermark_ms
        out: list[Emit | LostEvent] = []
        while self._settle_heap and self._settle_heap[0][0] <= wm:
            _, interaction_id = heapq.heappop(self._settle_heap)
            record = self.records.get(interaction_id)
            if record is not None and record.interaction is not None and not record.settled:
                record.settled = True
                self._to_amend.discard(interaction_id)
                out.extend(self._emit_outcome(record))
        for interaction_id in sorted(self._to_amend):
            record = self.records.get(interaction_id)
            if record is not None and record.settled and record.interaction is not None:
                out.extend(self._emit_outcome(record))
        self._to_amend.clear()
        while self._expire_heap and self._expire_heap[0][0] <= wm:
            _, interaction_id = heapq.heappop(self._expire_heap)
            record = self.records.get(interaction_id)
            if record is None:
                continue
            due = record.anchor_ms() + self.expire_after_ms
            if due > wm:  # the interaction arrived after the placeholder: it counts from its own time
                heapq.heappush(self._expire_heap, (due, interaction_id))
                continue
            out.extend(self._expire(record))
        return out

    def _emit_outcome(self, record: Record) -> Iterator[Emit]:
        x = record.interaction
        assert x is not None
        candidates = next_candidates(x, list(self.sessions.get(x.session_id, {}).values()), self.rules)
        version = outcome_version(record.feedback, record.regenerated_by, candidates)
        if version <= record.emitted_version:
            return
        fields = compute_outcome(x, record.feedback, record.regenerated_by, candidates, self.rules)
        amended = record.emitted_version > 0
        self.counters.outcomes += 1
        self.counters.amendments += amended
        record.emitted_version = version
        self._changed.add(record.interaction_id)
        outcome = {
            "schema_version": 1,
            "version": version,
            "interaction_created_at": format_ms(x.created_ms),
            "settled_at": format_ms(self.watermark_ms),
            "amended": amended,
            **fields,
        }
        yield Emit("outcome", x.session_id, outcome)
        window_start = x.created_ms - x.created_ms % self.window_ms
        yield Emit(
            "contribution",
            window_key(window_start, x.prompt_version, x.model, x.input_category),
            {
                "schema_version": 1,
                "interaction_id": x.interaction_id,
                "version": version,
                "window_start_ms": window_start,
                "prompt_version": x.prompt_version,
                "model": x.model,
                "input_category": x.input_category,
                "user_id": x.user_id,
                "response_time_ms": x.response_time_ms,
                **{name: fields[name] for name in CONTRIBUTION_FIELDS},
            },
        )

    def _expire(self, record: Record) -> Iterator[LostEvent]:
        self.counters.expired += 1
        del self.records[record.interaction_id]
        self._changed.discard(record.interaction_id)
        self._deleted.add(record.interaction_id)
        if record.interaction is not None:
            session = self.sessions.get(record.session_id)
            if session is not None:
                session.pop(record.interaction_id, None)
                if not session:
                    del self.sessions[record.session_id]
            return
        for feedback in record.feedback.values():
            self.counters.dead_letters += 1
            yield LostEvent(
                self.partition,
                feedback,
                None,
                f"no interaction {record.interaction_id} arrived in session {record.session_id} within "
                f"{self.expire_after_ms // 1000}s of event time (it never came, came in another session, "
                "or had already expired)",
                "orphan_feedback",
            )

    # ----------------------------------------------------------------- changes

    def take_changes(self) -> tuple[dict[UUID, bytes], set[UUID]]:
        """Records to write to the changelog (encoded) and ids to delete; resets the change set."""
        upserts = {i: self.records[i].encode(self.partition) for i in self._changed if i in self.records}
        deleted = self._deleted
        self._changed = set()
        self._deleted = set()
        return upserts, deleted


#: Outcome fields a metrics window needs besides the interaction's own attributes: the signals the
#: registry gives a window metric (``schemas.signals``), fixed once at import.
CONTRIBUTION_FIELDS: tuple[str, ...] = tuple(s.name for s in WINDOWED_SIGNALS)


def window_key(window_start_ms: int, prompt_version: str, model: str, input_category: str | None) -> str:
    """Message key of a metrics window: all contributions to one window meet in one partition."""
    return f"{window_start_ms}|{prompt_version}|{model}|{input_category or ''}"
