"""The processing state of one input partition, and the pure logic that drives it.

One :class:`Record` per interaction id holds the interaction (once it arrived), every feedback
event on it and the later interactions that regenerated it. ``PartitionState`` applies events,
joins feedback to interactions in either order, settles interactions when the watermark passes
their observation window, amends them when late events change them, and expires them after the
retention horizon.

Late sessions. A session whose events arrive behind the watermark (an app that was offline, the
SDK's spool draining after an outage) would settle and expire on arrival, before its feedback is
read. Its records are *held* instead: they settle once the session has been quiet for
``idle_advance_s`` of wall-clock time with every input read to its end (or for the settle delay in
any case), and they expire only when, besides event time, ``retention_s`` of wall-clock time has
passed since they were last touched. So a late session produces the outcomes it would have produced
on time; only ``settled_at`` and ``amended`` may differ. Events further behind the wall clock than
``late_horizon_s`` are dead letters (``too_late``); feedback or a regeneration claiming an
interaction of another user or session is never joined (``ownership_mismatch``). The wall clock is
passed in, never read.

It does no I/O: it returns what to emit and which records changed; the core
(``stream_processors.core``) hands both to its transport (the Faust worker, ``stream_processors.app``),
which sends the emissions, waits for them to be acknowledged, and only then writes the changed
records to the changelog. That order — outputs, then state,
then consumer offsets — is what keeps results exact when a worker dies at any moment: a replay
re-derives the same outputs with the same versions, and duplicates of inputs are recognised by
their ``event_id`` in the state.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

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

    interaction_id: str
    session_id: str
    first_seen_ms: int
    interaction: Interaction | None = None
    feedback: dict[str, Feedback] = field(default_factory=dict)
    regenerated_by: dict[str, int] = field(default_factory=dict)
    settled: bool = False
    emitted_version: int = 0
    #: Created behind the watermark: settles when its session goes quiet, expires on wall-clock time too.
    late: bool = False
    #: Wall-clock time it was last changed (not persisted: a restart counts from the restore).
    touched_wall_ms: int = 0

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
                **({"late": True} if self.late else {}),
            }
        )

    @classmethod
    def decode(cls, interaction_id: str, data: bytes) -> tuple[int, Record]:
        """Inverse of :meth:`encode`: the partition and the record."""
        raw = orjson.loads(data)
        feedback = [Feedback.from_state(f) for f in raw["f"]]
        record = cls(
            interaction_id=interaction_id,
            session_id=raw["s"],
            first_seen_ms=raw["t0"],
            interaction=Interaction.from_state(raw["i"]) if raw["i"] is not None else None,
            feedback={f.event_id: f for f in feedback},
            regenerated_by=raw["r"],
            settled=raw["settled"],
            emitted_version=raw["v"],
            late=raw.get("late", False),
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
    #: Records created behind the watermark (held until their session goes quiet).
    late: int = 0
    #: Events beyond the late horizon, and feedback or links claiming another owner's interaction.
    too_late: int = 0
    ownership_mismatches: int = 0


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
        self.retention_ms = int(pipeline.retention_s * 1000)
        self.late_horizon_ms = int(pipeline.late_horizon_s * 1000)
        self.quiet_ms = int(pipeline.idle_advance_s * 1000)
        #: Wall-clock time a record stays after it was last touched, even once event time has passed its
        #: horizon: what a session's later events take to arrive when the watermark ran ahead of it
        #: (another session's newer events in the same batch, a topic read ahead of the other).
        self.expire_grace_ms = self.expire_grace(pipeline)
        self.records: dict[str, Record] = {}
        self.sessions: dict[str, dict[str, Interaction]] = {}
        self.watermark_ms = 0
        #: The latest wall-clock reading passed in (epoch ms).
        self.now_ms = 0
        self.counters = Counters()
        self._settle_heap: list[tuple[int, str]] = []
        self._expire_heap: list[tuple[int, str]] = []
        #: Late records expire on wall-clock time too: (wall deadline, id).
        self._expire_wall_heap: list[tuple[int, str]] = []
        #: Late records waiting for their session to go quiet, and each such session's last input (wall).
        self._late_pending: dict[str, set[str]] = {}
        self._session_wall: dict[str, int] = {}
        self._changed: set[str] = set()
        self._deleted: set[str] = set()
        self._to_amend: set[str] = set()

    @staticmethod
    def expire_grace(pipeline: PipelineSettings) -> int:
        """The wall-clock grace of :attr:`expire_grace_ms` (ms) for these settings."""
        return int(min(pipeline.retention_s * 1000, max(10 * pipeline.idle_advance_s * 1000, 30_000)))

    # ----------------------------------------------------------------- restore

    @classmethod
    def restore(
        cls,
        partition: int,
        pipeline: PipelineSettings,
        records: Iterable[tuple[str, bytes]],
        now_ms: int = 0,
    ) -> PartitionState:
        """Rebuild the state of ``partition`` from its changelog records (others are skipped);
        ``now_ms`` is the wall clock, from which held late records count again."""
        state = cls(partition, pipeline)
        state.now_ms = now_ms
        for interaction_id, data in records:
            owner, record = Record.decode(interaction_id, data)
            if owner != partition:
                continue
            record.touched_wall_ms = now_ms
            state.records[interaction_id] = record
            state._index(record)
            if record.interaction is not None and not record.settled:
                if record.late:
                    state._hold(record)
                else:
                    heapq.heappush(
                        state._settle_heap, (record.anchor_ms() + state.settle_delay_ms, interaction_id)
                    )
            heapq.heappush(state._expire_heap, (record.anchor_ms() + state.expire_after_ms, interaction_id))
        return state

    def _index(self, record: Record) -> None:
        if record.interaction is not None:
            self.sessions.setdefault(record.session_id, {})[record.interaction_id] = record.interaction

    # ----------------------------------------------------------------- apply

    def _clock(self, now_ms: int | None) -> None:
        if now_ms is not None and now_ms > self.now_ms:
            self.now_ms = now_ms

    def _too_late(self, created_ms: int) -> str | None:
        # Measured against the wall clock, so a partition that has seen nothing yet refuses a forged
        # far-past event as surely as a busy one (the watermark never runs ahead of the wall clock).
        now = max(self.now_ms, self.watermark_ms)
        behind = now - created_ms
        if now <= 0 or behind <= self.late_horizon_ms:
            return None
        self.counters.too_late += 1
        return (
            f"created_at {format_ms(created_ms)} is {behind / 3_600_000:.1f} h behind the wall clock "
            f"({format_ms(now)}), beyond the late horizon of "
            f"{self.late_horizon_ms / 3_600_000:g} h: raise FEEDBACKLOOP_PIPELINE__LATE_HORIZON_S and "
            "replay it (feedbackloop deadletters replay --reason too_late)"
        )

    def _is_behind(self, anchor_ms: int) -> bool:
        """Whether a record anchored at ``anchor_ms`` would settle the moment it is created. Only the
        watermark says so: it is the slowest input's progress, so a topic read ahead of the other
        (a backlog) does not make the sessions it is ahead of late. A session that newer traffic in
        the same batch carries the watermark past is kept by the expiry's wall-clock grace."""
        return anchor_ms + self.settle_delay_ms <= self.watermark_ms

    def _hold(self, record: Record) -> None:
        """Hold a late record until its session goes quiet (see the module docstring)."""
        self._late_pending.setdefault(record.session_id, set()).add(record.interaction_id)
        self._session_wall[record.session_id] = self.now_ms

    def _new_record(self, interaction_id: str, session_id: str, anchor_ms: int) -> Record:
        record = Record(interaction_id, session_id, anchor_ms, touched_wall_ms=self.now_ms)
        if self._is_behind(anchor_ms):
            record.late = True
            self.counters.late += 1
        self.records[interaction_id] = record
        heapq.heappush(self._expire_heap, (anchor_ms + self.expire_after_ms, interaction_id))
        return record

    def apply_interaction(
        self, interaction: Interaction, now_ms: int | None = None
    ) -> list[Emit | LostEvent]:
        """Take in one interaction (``now_ms``: the wall clock); return what it lets us emit right away
        (its joined feedback) and what must be dead-lettered."""
        self._clock(now_ms)
        too_late = self._too_late(interaction.created_ms)
        if too_late is not None:
            return [LostEvent(self.partition, None, interaction, too_late, "too_late")]
        if interaction.session_id in self._session_wall:
            self._session_wall[interaction.session_id] = self.now_ms
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
            record = self._new_record(
                interaction.interaction_id, interaction.session_id, interaction.created_ms
            )
        else:
            heapq.heappush(
                self._expire_heap, (interaction.created_ms + self.expire_after_ms, record.interaction_id)
            )
            if self._is_behind(interaction.created_ms) and not record.late:
                record.late = True
                self.counters.late += 1
        record.interaction = interaction
        record.session_id = interaction.session_id
        out: list[Emit | LostEvent] = list(self._disown(record))
        self._index(record)
        self._touch(record)
        if record.late:
            self._hold(record)
        else:
            heapq.heappush(
                self._settle_heap, (interaction.created_ms + self.settle_delay_ms, record.interaction_id)
            )

        if interaction.regenerated_from is not None:
            self._link_regeneration(interaction)
        self._amend_earlier_in_session(interaction)
        out.extend(emit for f in record.feedback.values() for emit in self._joined_all(record, f))
        return out

    @staticmethod
    def _owner_mismatch(owner: Interaction, user_id: str, session_id: str) -> str | None:
        if owner.user_id == user_id and owner.session_id == session_id:
            return None
        return (
            f"interaction {owner.interaction_id} belongs to user {owner.user_id!r} in session "
            f"{owner.session_id!r}, not to user {user_id!r} in session {session_id!r}: "
            "feedback is only joined to its own user's interaction"
        )

    def _disown(self, record: Record) -> Iterator[LostEvent]:
        """Feedback and regeneration links that arrived before the interaction and claim another owner."""
        x = record.interaction
        assert x is not None
        for event_id, feedback in list(record.feedback.items()):
            reason = self._owner_mismatch(x, feedback.user_id, feedback.session_id)
            if reason is not None:
                del record.feedback[event_id]
                self.counters.ownership_mismatches += 1
                yield LostEvent(self.partition, feedback, None, reason, "ownership_mismatch")
        for child_id in list(record.regenerated_by):
            child = self.records.get(child_id)
            theirs = child.interaction if child is not None else None
            if theirs is not None and self._owner_mismatch(x, theirs.user_id, theirs.session_id):
                del record.regenerated_by[child_id]
                self.counters.ownership_mismatches += 1

    def _link_regeneration(self, child: Interaction) -> None:
        parent_id = child.regenerated_from
        assert parent_id is not None
        parent = self.records.get(parent_id)
        if parent is None:
            # The regenerated interaction has not arrived (yet): remember the link for it.
            parent = self._new_record(parent_id, child.session_id, child.created_ms)
        elif parent.interaction is not None and self._owner_mismatch(
            parent.interaction, child.user_id, child.session_id
        ):
            self.counters.ownership_mismatches += 1  # a regenerate of another user's answer: not linked
            return
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

    def apply_feedback(self, feedback: Feedback, now_ms: int | None = None) -> list[Emit | LostEvent]:
        """Take in one feedback event (``now_ms``: the wall clock); return the joined feedback when its
        interaction is known, and what must be dead-lettered."""
        self._clock(now_ms)
        record = self.records.get(feedback.interaction_id)
        if record is not None and feedback.event_id in record.feedback:
            self.counters.duplicates += 1
            return []
        too_late = self._too_late(feedback.created_ms)
        if too_late is not None:
            return [LostEvent(self.partition, feedback, None, too_late, "too_late")]
        if feedback.session_id in self._session_wall:
            self._session_wall[feedback.session_id] = self.now_ms
        if record is not None and record.interaction is not None:
            reason = self._owner_mismatch(record.interaction, feedback.user_id, feedback.session_id)
            if reason is not None:
                self.counters.ownership_mismatches += 1
                return [LostEvent(self.partition, feedback, None, reason, "ownership_mismatch")]
        self.counters.feedback += 1
        if record is None:
            record = self._new_record(feedback.interaction_id, feedback.session_id, feedback.created_ms)
        record.feedback[feedback.event_id] = feedback
        self._touch(record)
        if record.interaction is None:
            return []  # joined when the interaction arrives
        return self._joined_all(record, feedback)

    def _touch(self, record: Record) -> None:
        record.touched_wall_ms = self.now_ms
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

    def advance(
        self, watermark_ms: int, now_ms: int | None = None, inputs_read: bool = False
    ) -> list[Emit | LostEvent]:
        """Move event time to ``watermark_ms`` and the wall clock to ``now_ms``: settle, amend and expire
        what is due. ``inputs_read``: every input of the partition has been read to its end, so a quiet
        late session has nothing more on its way."""
        self._clock(now_ms)
        self.watermark_ms = max(self.watermark_ms, watermark_ms)
        wm = self.watermark_ms
        out: list[Emit | LostEvent] = []
        while self._settle_heap and self._settle_heap[0][0] <= wm:
            _, interaction_id = heapq.heappop(self._settle_heap)
            record = self.records.get(interaction_id)
            if (
                record is not None
                and record.interaction is not None
                and not record.settled
                and not record.late
            ):
                self._settle(record, out)
        if self._session_wall:
            self._settle_quiet_sessions(inputs_read, out)
        for interaction_id in sorted(self._to_amend):
            record = self.records.get(interaction_id)
            if record is not None and record.settled and record.interaction is not None:
                out.extend(self._emit_outcome(record))
        self._to_amend.clear()
        while self._expire_heap and self._expire_heap[0][0] <= wm:
            _, interaction_id = heapq.heappop(self._expire_heap)
            self._expire_if_due(interaction_id, out)
        while self._expire_wall_heap and self._expire_wall_heap[0][0] <= self.now_ms:
            _, interaction_id = heapq.heappop(self._expire_wall_heap)
            self._expire_if_due(interaction_id, out)
        return out

    def _settle(self, record: Record, out: list[Emit | LostEvent]) -> None:
        record.settled = True
        self._to_amend.discard(record.interaction_id)
        out.extend(self._emit_outcome(record))

    def _settle_quiet_sessions(self, inputs_read: bool, out: list[Emit | LostEvent]) -> None:
        """Settle the held records of every late session that has gone quiet."""
        for session_id, last_wall_ms in sorted(self._session_wall.items()):
            quiet_ms = self.now_ms - last_wall_ms
            if not ((inputs_read and quiet_ms >= self.quiet_ms) or quiet_ms >= self.settle_delay_ms):
                continue
            del self._session_wall[session_id]
            for interaction_id in sorted(self._late_pending.pop(session_id, ())):
                record = self.records.get(interaction_id)
                if record is not None and record.interaction is not None and not record.settled:
                    self._settle(record, out)

    def _expire_if_due(self, interaction_id: str, out: list[Emit | LostEvent]) -> None:
        """Expire a record once event time has passed its horizon and wall-clock time has passed the
        grace (for a late record: ``retention``) since it was last touched; else look again then."""
        record = self.records.get(interaction_id)
        if record is None:
            return
        due = record.anchor_ms() + self.expire_after_ms
        if due > self.watermark_ms:  # the interaction arrived after the placeholder: its own time counts
            heapq.heappush(self._expire_heap, (due, interaction_id))
            return
        wall_due = record.touched_wall_ms + (self.retention_ms if record.late else self.expire_grace_ms)
        held = record.session_id in self._session_wall  # its session has not settled yet
        # With no wall clock (offline, now 0) event time alone decides, but a held session still waits.
        if held or (self.now_ms > 0 and wall_due > self.now_ms):
            heapq.heappush(self._expire_wall_heap, (max(wall_due, self.now_ms + 1), interaction_id))
            return
        out.extend(self._expire(record))

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
                "or had already expired: settled interactions take feedback for "
                "FEEDBACKLOOP_PIPELINE__RETENTION_S)",
                "orphan_feedback",
            )

    def erase(self, users: Collection[str]) -> int:
        """Forget everything of ``users`` (erased): their records, held sessions and feedback on
        records they do not own; return how many records went. Nothing is emitted for them; the
        deletions reach the changelog with the next :meth:`take_changes`."""
        gone = 0
        for record in list(self.records.values()):
            x = record.interaction
            if x is not None and x.user_id in users:
                self._forget(record)
                gone += 1
                continue
            theirs = [event_id for event_id, f in record.feedback.items() if f.user_id in users]
            for event_id in theirs:
                del record.feedback[event_id]
            if theirs and x is None and not record.feedback and not record.regenerated_by:
                self._forget(record)
                gone += 1
            elif theirs:
                self._changed.add(record.interaction_id)
        return gone

    def _forget(self, record: Record) -> None:
        interaction_id, session_id = record.interaction_id, record.session_id
        del self.records[interaction_id]
        self._changed.discard(interaction_id)
        self._to_amend.discard(interaction_id)
        self._deleted.add(interaction_id)
        session = self.sessions.get(session_id)
        if session is not None:
            session.pop(interaction_id, None)
            if not session:
                del self.sessions[session_id]
        held = self._late_pending.get(session_id)
        if held is not None:
            held.discard(interaction_id)
            if not held:
                del self._late_pending[session_id]
                self._session_wall.pop(session_id, None)

    def snapshot(self) -> dict[str, bytes]:
        """Every record as its changelog entry (key, bytes): what the state is, all of it."""
        return {i: record.encode(self.partition) for i, record in self.records.items()}

    def held_sessions(self) -> list[str]:
        """Late sessions whose records wait for the session to go quiet."""
        return list(self._session_wall)

    # ----------------------------------------------------------------- changes

    def take_changes(self) -> tuple[dict[str, bytes], set[str]]:
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
