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
from schemas import FeedbackEvent, FeedbackType, InteractionEvent, SupportTicket

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
    #: An edit is small below this draw, medium below ``medium_below``, else large (a rewrite).
    small_below: float = 0.5
    medium_below: float = 0.8


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
    #: Sessions are ``{user}-{session_tag}s{n}``: workloads with other tags share users but no session.
    session_tag: str = ""


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


def _edit(rng: random.Random, response: str, profile: VersionProfile) -> str:
    kind = rng.random()
    if kind < profile.small_below:  # a small refinement
        return response.replace("readable", "clear", 1) if "readable" in response else response + " Thanks."
    if kind < profile.medium_below:  # a medium rewrite: drop the closing paragraph or a sentence
        cut = response.rfind("In summary")
        return response[:cut].rstrip() if cut > 0 else response[: len(response) * 2 // 3]
    return "Actually, the right answer is different: " + response[: len(response) // 4][::-1]  # large


# ------------------------------------------------------------------ generation


class _Builder:
    def __init__(self, spec: WorkloadSpec, user_version: dict[str, str] | None = None) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.planned: dict[uuid.UUID, PlannedInteraction] = {}
        self.events: list[InteractionEvent | FeedbackEvent] = []
        now = spec.now or datetime.now(UTC)
        self.end = now - spec.end_before
        self.start = self.end - spec.span
        versions = sorted(spec.profiles)
        users = [f"{spec.user_prefix}-{u:05d}" for u in range(spec.users)]
        if user_version is not None:
            self.user_version = dict(user_version)
        elif spec.experiment_id is not None:
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
        session = f"{user}-{self.spec.session_tag}s{number}"
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
                        corrected_output=_edit(rng, response, profile),
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
    return _deliver(builder, spec)


def _deliver(builder: _Builder, spec: WorkloadSpec) -> Workload:
    """The workload of what ``builder`` generated, in publishing order with the spec's disorder."""
    rng = builder.rng
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


# ------------------------------------------------------------------ weeks of history, and tickets


@dataclass(frozen=True)
class HistoryWeek:
    """One week of history: which versions serve (weights of the users) and who comes.

    The week's users are last week's users who return (each with probability ``returning``), users
    seen before but not last week who come back (``reactivation``), and ``new_users`` first-timers.
    """

    versions: dict[str, int]
    new_users: int
    returning: float
    reactivation: float = 0.05


@dataclass(frozen=True)
class HistorySpec:
    """Weeks of traffic ending at ``end`` (exclusive; a Monday 00:00 UTC keeps them ISO weeks), each
    generated like a :class:`WorkloadSpec` of its own (sessions tagged ``w<n>``, no malformed message)."""

    weeks: tuple[HistoryWeek, ...]
    end: datetime
    profiles: dict[str, VersionProfile]
    seed: int = 11
    user_prefix: str = "user"
    #: Sessions per active user in a week, and interactions a session may hold (inclusive ranges).
    sessions: tuple[int, int] = (1, 2)
    budget: tuple[int, int] = (1, 5)


@dataclass
class History:
    """The weeks' workloads, oldest first, and the Monday each starts."""

    weeks: list[Workload]
    week_starts: list[datetime]

    @property
    def messages(self) -> list[InteractionEvent | FeedbackEvent | bytes]:
        """Every week's messages in publishing order, week after week."""
        return [m for week in self.weeks for m in week.messages]

    @property
    def interactions(self) -> dict[uuid.UUID, PlannedInteraction]:
        """Every planned interaction of every week."""
        return {k: v for week in self.weeks for k, v in week.interactions.items()}


def _weighted(name: str, weights: dict[str, int], user: str) -> str:
    return Experiment(name, weights).assign(user).variant


def generate_history(spec: HistorySpec) -> History:
    """Generate weeks of traffic of returning and new users (see :class:`HistoryWeek`).

    A user keeps one version per week, chosen by the consistent hash over the week's weights, so a
    rollout moves users as an app would. Users are ``{user_prefix}-00000``, ``-00001``, ... in the order
    they first come, so a workload generated with the same prefix shares its first users with this one.
    """
    rng = random.Random(spec.seed)
    start = spec.end - timedelta(weeks=len(spec.weeks))
    seen: list[str] = []
    last: set[str] = set()
    workloads: list[Workload] = []
    starts: list[datetime] = []
    for number, week in enumerate(spec.weeks):
        week_start = start + timedelta(weeks=number)
        dormant = [u for u in seen if u not in last]
        active = {u for u in sorted(last) if rng.random() < week.returning}
        active |= {u for u in dormant if rng.random() < week.reactivation}
        fresh = [f"{spec.user_prefix}-{n:05d}" for n in range(len(seen), len(seen) + week.new_users)]
        seen.extend(fresh)
        active |= set(fresh)
        users = sorted(active)
        versions = {u: _weighted(f"history-w{number}", week.versions, u) for u in users}
        profiles = {v: spec.profiles[v] for v in week.versions}
        # The week is generated as a workload of its own ending at the week's end (sessions start in its
        # first 90 % and stay inside it).
        workload_spec = WorkloadSpec(
            interactions=0,
            users=0,
            profiles=profiles,
            seed=rng.getrandbits(32),
            span=timedelta(weeks=1) - timedelta(minutes=1),
            end_before=timedelta(0),
            now=week_start + timedelta(weeks=1),
            malformed=0,
            user_prefix=spec.user_prefix,
            session_tag=f"w{number}",
        )
        builder = _Builder(workload_spec, user_version=versions)
        session_no = 0
        for user in users:
            for _ in range(rng.randint(*spec.sessions)):
                builder.session(user, session_no, rng.randint(*spec.budget))
                session_no += 1
        workloads.append(_deliver(builder, workload_spec))
        starts.append(week_start)
        last = active
    return History(workloads, starts)


@dataclass(frozen=True)
class TicketSpec:
    """How often users open support tickets about the interactions of a workload.

    An AI-quality ticket follows an interaction the user regenerated or gave a thumbs-down with
    probability ``ai_rate`` (so better versions get fewer); ``other_rate`` per interaction opens a
    ticket about something else (billing, login, ...). ``linked_share`` of the AI-quality tickets name
    their interaction; ``mislinked_share`` of those are filed by another user (a ticket that must not
    count for the version). Tickets are opened 5 minutes to 30 hours after the interaction, never after
    ``now`` minus a minute.
    """

    ai_rate: float = 0.06
    #: ``ai_rate`` of particular prompt versions (the others take ``ai_rate``).
    ai_rates: dict[str, float] = field(default_factory=dict)
    other_rate: float = 0.004
    linked_share: float = 0.7
    mislinked_share: float = 0.05
    ai_categories: tuple[str, ...] = ("wrong answer", "too long", "tone")
    other_categories: tuple[str, ...] = ("billing", "login", "feature request")
    seed: int = 5
    id_prefix: str = "T"


def generate_tickets(
    interactions: Iterator[PlannedInteraction] | list[PlannedInteraction],
    spec: TicketSpec,
    now: datetime,
) -> list[SupportTicket]:
    """Support tickets about ``interactions`` (in their order), opened as :class:`TicketSpec` says."""
    rng = random.Random(spec.seed)
    planned = sorted(interactions, key=lambda p: (p.event.created_at, str(p.event.interaction_id)))
    users = sorted({p.event.user_id for p in planned})
    latest = _ms(now - timedelta(minutes=1))
    tickets: list[SupportTicket] = []
    for p in planned:
        x = p.event
        kinds = {a.feedback_type for a in p.actions}
        unhappy = FeedbackType.REGENERATE in kinds or FeedbackType.THUMBS_DOWN in kinds
        ai_rate = spec.ai_rates.get(x.prompt_version, spec.ai_rate) if unhappy else 0.0
        for ai_quality, rate in ((True, ai_rate), (False, spec.other_rate)):
            if rng.random() >= rate:
                continue
            at = min(latest, _ms(x.created_at + timedelta(seconds=rng.uniform(300, 30 * 3600))))
            user, link = x.user_id, None
            if ai_quality and rng.random() < spec.linked_share:
                link = x.interaction_id
                if rng.random() < spec.mislinked_share and len(users) > 1:
                    user = rng.choice([u for u in users if u != x.user_id])
            categories = spec.ai_categories if ai_quality else spec.other_categories
            tickets.append(
                SupportTicket(
                    event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                    ticket_id=f"{spec.id_prefix}-{len(tickets) + 1:06d}",
                    user_id=user,
                    created_at=at,
                    category=rng.choice(categories),
                    ai_quality=ai_quality,
                    interaction_id=link,
                )
            )
    return tickets
