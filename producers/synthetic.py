"""Synthetic app traffic with a record of what every simulated user did.

Simulated users hold sessions of several AI calls. After each response a user regenerates it,
edits it, rephrases the question, asks a clarifying follow-up, rates it, copies it, accepts it
or walks away — with per-version probabilities, so prompt versions differ measurably (by default
v1.0 is regenerated about 35 % of the time and v1.1 about 18 %). Besides the events, the
generator keeps its own record (:class:`UserAction`, :class:`PlannedInteraction`) of every
action, which tests use to compute the expected outcomes independently of the pipeline.

Publishing order is event-time order with the disorder real apps produce: some feedback before
its interaction, some events delivered twice, some delivered late (after their interaction
settled), and a few malformed messages.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from producers.assignment import Experiment
from schemas import FeedbackEvent, FeedbackType, InteractionEvent

NextKind = Literal["regeneration", "rephrase", "followup", "new", "none"]


@dataclass(frozen=True)
class VersionProfile:
    """How users react to one prompt version (probabilities per response)."""

    regenerate: float
    edit: float
    thumbs_down: float
    rephrase: float
    followup: float = 0.06
    thumbs_up: float = 0.25
    copy: float = 0.45
    accept: float = 0.2


DEFAULT_PROFILES = {
    "v1.0": VersionProfile(regenerate=0.35, edit=0.25, thumbs_down=0.12, rephrase=0.08),
    "v1.1": VersionProfile(regenerate=0.18, edit=0.15, thumbs_down=0.06, rephrase=0.04),
}


@dataclass(frozen=True)
class WorkloadSpec:
    """What to generate. Event times end ``end_before`` before ``now`` so everything can settle."""

    interactions: int = 5000
    users: int = 200
    profiles: dict[str, VersionProfile] = field(default_factory=lambda: dict(DEFAULT_PROFILES))
    seed: int = 7
    span: timedelta = timedelta(hours=2)
    end_before: timedelta = timedelta(minutes=15)
    feedback_first_rate: float = 0.03
    duplicate_rate: float = 0.01
    late_rate: float = 0.01
    late_by: timedelta = timedelta(minutes=15)
    malformed: int = 3
    models: tuple[str, ...] = ("gpt-4o-mini",)
    now: datetime | None = None
    #: When set, users are assigned to the profiles' versions by this experiment's consistent hash
    #: (weights per version, e.g. {"v1.0": 80, "v1.1": 20}) and events carry experiment_id/variant.
    experiment_id: str | None = None
    split: dict[str, int] | None = None
    #: Users are ``{user_prefix}-00000`` ...: workloads with other prefixes share no user or session.
    user_prefix: str = "user"


@dataclass
class UserAction:
    """One thing a simulated user did with a response."""

    feedback_type: FeedbackType
    at: datetime
    event_id: uuid.UUID
    corrected_output: str | None = None
    copied_chars: int | None = None
    dwell_ms: int | None = None


@dataclass
class PlannedInteraction:
    """One simulated AI call and everything the user did with it."""

    event: InteractionEvent
    actions: list[UserAction] = field(default_factory=list)
    #: What the user's next call in the session was, as the generator meant it.
    next_kind: NextKind = "none"


@dataclass
class Workload:
    """Events in publishing order, and the generator's record of what happened."""

    messages: list[InteractionEvent | FeedbackEvent | bytes]
    interactions: dict[uuid.UUID, PlannedInteraction]
    duplicates: int
    late: int
    malformed: int

    @property
    def events(self) -> Iterator[InteractionEvent | FeedbackEvent]:
        """The valid events in publishing order (duplicates included)."""
        return (m for m in self.messages if not isinstance(m, bytes))


# ------------------------------------------------------------------ prompt material

_TECH_TASKS = [
    ("reverse", "list", "python"),
    ("sort", "dictionary by value", "python"),
    ("parse", "JSON file", "go"),
    ("merge", "two arrays", "javascript"),
    ("read", "CSV file", "rust"),
    ("deduplicate", "array", "typescript"),
    ("flatten", "nested list", "python"),
    ("retry", "HTTP request", "java"),
    ("debounce", "input handler", "react"),
    ("paginate", "SQL query", "postgres"),
    ("hash", "password", "node"),
    ("schedule", "cron job", "linux"),
]
_WRITING_TASKS = [
    ("a polite follow-up email", "a client who has not paid an invoice"),
    ("a short apology note", "a customer whose order arrived late"),
    ("a product description", "a waterproof hiking backpack"),
    ("a LinkedIn post", "our team winning a sustainability award"),
    ("a meeting agenda", "the quarterly planning session"),
    ("a welcome message", "new members of the gardening club"),
]
_GENERAL_TASKS = [
    "the difference between weather and climate",
    "how vaccines train the immune system",
    "why the sky is blue",
    "how compound interest works",
    "what causes the seasons",
    "how a bill becomes a law",
    "why bread dough rises",
    "how noise-cancelling headphones work",
]
_FOLLOWUPS = [
    "What do you mean by '{term}'?",
    "Can you explain the second step?",
    "Why is that?",
    "Could you give an example of that?",
    "What does '{term}' do exactly?",
    "Which one is faster?",
]
_FILLER = (
    "This approach keeps the code readable and avoids surprises at runtime. It also works well with "
    "existing tools, and you can adapt it as your requirements change. "
)


_TERMS = {
    "technical": ["idempotency", "exponential backoff", "memoization", "a guard clause", "lazy evaluation"],
    "writing": ["the call to action", "the salutation", "a softer tone"],
    "general": ["a feedback loop", "equilibrium", "the mechanism"],
}


def _prompt(rng: random.Random, category: str) -> tuple[str, str, str]:
    """A request, a reworded version of it, and a term its answer will use (not in the request)."""
    term = rng.choice(_TERMS[category])
    if category == "technical":
        verb, obj, lang = rng.choice(_TECH_TASKS)
        return f"How do I {verb} a {obj} in {lang}?", f"{lang}: what's the way to {verb} a {obj}?", term
    if category == "writing":
        what, whom = rng.choice(_WRITING_TASKS)
        return f"Write {what} for {whom}.", f"Please draft {what} for {whom}", term
    topic = rng.choice(_GENERAL_TASKS)
    return f"Explain {topic}.", f"Can you explain {topic}?", term


def _ms(value: datetime) -> datetime:
    """The contract's precision: milliseconds."""
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def _response(rng: random.Random, prompt: str, term: str) -> str:
    body = f"Here is an answer to: {prompt} The key idea is '{term}'. " + _FILLER * rng.randint(1, 8)
    if rng.random() < 0.4:
        body += "In summary, this should cover what you need. Let me know if you have more questions."
    return body


def _edit(rng: random.Random, response: str) -> str:
    kind = rng.random()
    if kind < 0.5:  # a small refinement
        return response.replace("readable", "clear", 1) if "readable" in response else response + " Thanks."
    if kind < 0.8:  # a medium rewrite: drop the closing paragraph or a sentence
        cut = response.rfind("In summary")
        return response[:cut].rstrip() if cut > 0 else response[: len(response) * 2 // 3]
    return "Actually, the right answer is different: " + response[: len(response) // 4][::-1]  # large


# ------------------------------------------------------------------ generation


class _Builder:
    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.planned: dict[uuid.UUID, PlannedInteraction] = {}
        self.events: list[InteractionEvent | FeedbackEvent] = []
        now = spec.now or datetime.now(UTC)
        self.end = now - spec.end_before
        self.start = self.end - spec.span
        versions = sorted(spec.profiles)
        users = [f"{spec.user_prefix}-{u:05d}" for u in range(spec.users)]
        if spec.experiment_id is not None:
            experiment = Experiment(spec.experiment_id, spec.split or dict.fromkeys(versions, 1))
            self.user_version = {user: experiment.assign(user).variant for user in users}
        else:
            self.user_version = {
                user: versions[uuid.UUID(int=self.rng.getrandbits(128)).int % len(versions)] for user in users
            }

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def _interaction(
        self,
        user: str,
        session: str,
        at: datetime,
        prompt: str,
        term: str,
        category: str,
        regenerated_from: uuid.UUID | None,
    ) -> PlannedInteraction:
        at = _ms(at)
        event = InteractionEvent(
            event_id=self._uuid(),
            interaction_id=self._uuid(),
            user_id=user,
            session_id=session,
            prompt=prompt,
            prompt_version=self.user_version[user],
            model=self.rng.choice(self.spec.models),
            response=_response(self.rng, prompt, term),
            response_time_ms=int(self.rng.lognormvariate(6.5, 0.5)),
            created_at=at,
            regenerated_from=regenerated_from,
            input_category=category,
            experiment_id=self.spec.experiment_id,
            variant=self.user_version[user] if self.spec.experiment_id else None,
        )
        planned = PlannedInteraction(event)
        self.planned[event.interaction_id] = planned
        self.events.append(event)
        return planned

    def _act(self, planned: PlannedInteraction, kind: FeedbackType, at: datetime, **values: object) -> None:
        at = _ms(at)
        action = UserAction(kind, at, self._uuid(), **values)  # type: ignore[arg-type]
        planned.actions.append(action)
        x = planned.event
        self.events.append(
            FeedbackEvent(
                event_id=action.event_id,
                interaction_id=x.interaction_id,
                user_id=x.user_id,
                session_id=x.session_id,
                created_at=at,
                feedback_type=kind,
                corrected_output=action.corrected_output,
                copied_chars=action.copied_chars,
                dwell_ms=action.dwell_ms,
            )
        )

    def session(self, user: str, number: int, budget: int) -> int:
        rng = self.rng
        session = f"{user}-s{number}"
        at = self.start + timedelta(seconds=rng.uniform(0, self.spec.span.total_seconds() * 0.9))
        category = rng.choice(["technical", "technical", "general", "writing"])
        original, reworded, term = _prompt(rng, category)
        prompt = original
        regenerated_from: uuid.UUID | None = None
        made = 0
        while made < budget and at < self.end:
            x = self._interaction(user, session, at, prompt, term, category, regenerated_from)
            made += 1
            regenerated_from = None
            profile = self.spec.profiles[x.event.prompt_version]
            response = x.event.response
            roll = rng.random()
            gap = timedelta(seconds=rng.uniform(150, 900))  # a new request, well after the windows
            kind: NextKind = "new"
            if roll < profile.regenerate:
                click = at + timedelta(seconds=rng.uniform(3, 40))
                self._act(x, FeedbackType.REGENERATE, click)
                kind, regenerated_from = "regeneration", x.event.interaction_id
                gap = click - at + timedelta(milliseconds=rng.randint(200, 4000))
            else:
                if rng.random() < profile.edit:
                    self._act(
                        x,
                        FeedbackType.EDIT,
                        at + timedelta(seconds=rng.uniform(10, 240)),
                        corrected_output=_edit(rng, response),
                    )
                if rng.random() < profile.thumbs_down:
                    self._act(x, FeedbackType.THUMBS_DOWN, at + timedelta(seconds=rng.uniform(2, 60)))
                elif rng.random() < profile.thumbs_up:
                    self._act(x, FeedbackType.THUMBS_UP, at + timedelta(seconds=rng.uniform(2, 60)))
                if rng.random() < profile.copy:
                    copied = (
                        len(response) if rng.random() < 0.6 else rng.randint(10, max(11, len(response) // 2))
                    )
                    # Mostly within the abandon window, sometimes after it (still a copy, but late).
                    delay = rng.uniform(5, 200) if rng.random() < 0.9 else rng.uniform(320, 600)
                    self._act(x, FeedbackType.COPY, at + timedelta(seconds=delay), copied_chars=copied)
                if rng.random() < profile.accept:
                    self._act(x, FeedbackType.ACCEPT, at + timedelta(seconds=rng.uniform(5, 120)))
                if rng.random() < 0.5:
                    dwell = rng.randint(500, 2900) if rng.random() < 0.3 else rng.randint(3000, 90_000)
                    self._act(x, FeedbackType.VIEW_END, at + timedelta(milliseconds=dwell), dwell_ms=dwell)
                follow = rng.random()
                if follow < profile.rephrase and prompt in (original, reworded):
                    kind, prompt = "rephrase", reworded if prompt == original else original
                    gap = timedelta(seconds=rng.uniform(8, 110))
                elif follow < profile.rephrase + profile.followup and prompt in (original, reworded):
                    kind = "followup"
                    # A different question each time: asking the same one again would be a rephrase.
                    prompt = rng.choice(
                        [f.format(term=term) for f in _FOLLOWUPS if f.format(term=term) != prompt]
                    )
                    gap = timedelta(seconds=rng.uniform(5, 55))
                else:
                    category = rng.choice(["technical", "general", "writing"])
                    original, reworded, term = _prompt(rng, category)
                    prompt = original
            x.next_kind = kind if made < budget else "none"
            at = at + gap
        if made and at >= self.end:
            last = list(self.planned.values())[-1]
            last.next_kind = "none"
        return made


def generate(spec: WorkloadSpec) -> Workload:
    """Generate a workload: events in publishing order and the record of what users did."""
    builder = _Builder(spec)
    rng = builder.rng
    users = sorted(builder.user_version)
    made = session_no = 0
    while made < spec.interactions:
        user = users[session_no % len(users)]
        made += builder.session(user, session_no, min(rng.randint(1, 8), spec.interactions - made))
        session_no += 1
    # A session's last interaction has no next one in the generator's record.
    by_session: dict[str, list[PlannedInteraction]] = {}
    for planned in builder.planned.values():
        by_session.setdefault(planned.event.session_id, []).append(planned)
    for members in by_session.values():
        members.sort(key=lambda p: (p.event.created_at, str(p.event.interaction_id)))
        members[-1].next_kind = "none"

    messages, late = _deliver_late(sorted(builder.events, key=lambda e: e.created_at), spec, rng)
    _feedback_first(messages, spec.feedback_first_rate, rng)
    duplicates = _redeliver(messages, spec.duplicate_rate, rng)
    bad = [b"{not json", b'{"schema_version": 1, "event_id": "nope"}', b"\xff\xfe"]
    for n in range(spec.malformed):
        messages.insert(rng.randint(0, len(messages)), bad[n % len(bad)])
    return Workload(messages, builder.planned, duplicates, late, spec.malformed)


Message = InteractionEvent | FeedbackEvent | bytes


def _deliver_late(
    ordered: list[InteractionEvent | FeedbackEvent], spec: WorkloadSpec, rng: random.Random
) -> tuple[list[Message], int]:
    """Event-time order, except that some feedback is held back by ``spec.late_by``."""
    messages: list[Message] = []
    held: list[tuple[datetime, int, FeedbackEvent]] = []
    late = 0
    for seq, event in enumerate(ordered):
        while held and held[0][0] <= event.created_at:
            messages.append(heapq.heappop(held)[2])
        if isinstance(event, FeedbackEvent) and rng.random() < spec.late_rate:
            heapq.heappush(held, (event.created_at + spec.late_by, seq, event))
            late += 1
            continue
        messages.append(event)
    messages.extend(e for *_, e in sorted(held))
    return messages, late


def _feedback_first(messages: list[Message], rate: float, rng: random.Random) -> None:
    """Let some feedback overtake its interaction (swap the two messages)."""
    first: dict[uuid.UUID, int] = {}
    for i, m in enumerate(messages):
        if isinstance(m, InteractionEvent):
            first.setdefault(m.interaction_id, i)
    for i, m in enumerate(messages):
        if isinstance(m, FeedbackEvent) and rng.random() < rate:
            j = first.get(m.interaction_id)
            if j is not None and j < i:
                messages[i], messages[j] = messages[j], messages[i]
                first[m.interaction_id] = i


def _redeliver(messages: list[Message], rate: float, rng: random.Random) -> int:
    """Deliver some events a second time, a little later; return how many."""
    picks = sorted((i for i in range(len(messages)) if rng.random() < rate), reverse=True)
    for i in picks:
        messages.insert(min(len(messages), i + rng.randint(1, 50)), messages[i])
    return len(picks)
