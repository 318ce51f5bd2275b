"""A workload that plants known patterns, with the answers the insight views must give.

Planted (counts exact by construction, not by chance):

* a phrase replacement: ``Dear Sir/Madam,`` -> ``Hi <their own name>,`` by 20 distinct users of
  v1.0, written with trivial differences (case, double spaces, a literal ``[Name]``) that
  normalization must fold into one pattern;
* a closing paragraph deleted in exactly 40 % of v1.0's edits;
* ``technical`` inputs of v1.0 regenerated 4x as often as the rest of v1.0 (48 % vs 12 %);
* things that must NOT be found: a replacement made by exactly 5 users (the threshold is "more
  than 5" distinct users), one user making the same replacement in 8 edits (many edits, one
  person), middle sentences deleted in 7.5 % of edits (under the 20 % share), v1.1's closing
  paragraph deleted in 5 of its 20 edits (25 %, but only 5 edits), and a power user of v1.1 who
  regenerates all of their 200 responses, spread evenly over categories (no spike, but the
  version's per-interaction and capped rates disagree);
* every other edit is a one-word replacement with a word nobody else uses.

:func:`load_through_logic` writes a workload into ClickHouse through the processors' pure logic
and the sink's row mapping (no broker): for tests of what reads the tables, not of the pipeline.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from pydantic import BaseModel

from infra.settings import PipelineSettings
from reporting.prompts import PromptVersion
from schemas import FeedbackEvent, FeedbackType, InteractionEvent, to_epoch_ms, topics
from sinks.clickhouse import migrate
from sinks.rows import TABLES
from stream_processors.decode import apply_event
from stream_processors.state import Emit, PartitionState

CATEGORIES = ("billing", "general", "technical", "writing")
GREETING = "Dear Sir/Madam,"
CLOSING = "In summary, this answer covers the main points. Let me know if you have more questions."
NAMES = ("Anna", "Ben", "Chloe", "David", "Emma", "Felix", "Grace", "Hugo", "Ines", "Jonas")
_SENTENCES = (
    "The first step is to check the current settings of your account.",
    "Most teams start with the defaults and adjust them after a week.",
    "You can change this at any time from the dashboard.",
    "The change takes effect within a few minutes.",
    "If something looks wrong, the history page shows every change.",
    "Support can also walk you through it on a short call.",
    "Nothing is lost when you switch back later.",
)
_KINDLY = "Kindly note that the details may vary between plans."
REPEAT_USER = "repeat-user"
_REPEATED_EDITS = 8
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vi", "zo", "pe", "du", "sa", "fi")


@dataclass(frozen=True)
class Expected:
    """What the views must report, computed by the generator as it planted it."""

    #: (prompt_version, original_fragment, corrected_fragment) -> (frequency, distinct_users)
    common_edits: dict[tuple[str, str, str], tuple[int, int]]
    #: (prompt_version, position, unit) -> (deleting_edits, edits of the version)
    consistent_deletions: dict[tuple[str, str, str], tuple[int, int]]
    #: (prompt_version, input_category) flagged as regeneration spikes
    spikes: set[tuple[str, str]]
    #: patterns that exist but stay under a threshold (must not be reported): -> frequency
    below_threshold_edits: dict[tuple[str, str, str], int]
    #: a pattern made many times by a single user (must not be reported): -> (frequency, distinct_users)
    single_user_edits: dict[tuple[str, str, str], tuple[int, int]]
    below_threshold_deletions: dict[tuple[str, str, str], tuple[int, int]]
    power_user: str


@dataclass
class PlantedWorkload:
    """Events in publishing order, the registry entries of their versions, and the answers."""

    events: list[InteractionEvent | FeedbackEvent]
    prompts: list[PromptVersion]
    expected: Expected
    interactions: int
    start: datetime
    end: datetime
    edits_by_version: dict[str, int] = field(default_factory=dict)


def _ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def workload_window(now: datetime, span: timedelta) -> tuple[datetime, datetime]:
    """A span of event time ending a quarter of an hour before ``now``, moved to end before Monday
    00:00 UTC if it would cross it (so that one report week holds all of it)."""
    end = now - timedelta(minutes=15)
    monday = datetime.combine((end - timedelta(days=end.weekday())).date(), datetime.min.time(), UTC)
    if end - span < monday:
        end = monday - timedelta(minutes=1)
    return end - span, end


class _Planter:
    def __init__(self, seed: int, start: datetime, end: datetime) -> None:
        self.rng = random.Random(seed)
        self.start, self.end = start, end
        self.events: list[InteractionEvent | FeedbackEvent] = []
        self.used_words: set[str] = set()

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def at(self, low: float, high: float) -> datetime:
        span = (self.end - self.start).total_seconds()
        return _ms(self.start + timedelta(seconds=span * self.rng.uniform(low, high)))

    def unique_word(self) -> str:
        while True:
            word = "".join(self.rng.choice(_SYLLABLES) for _ in range(4))
            if word not in self.used_words:
                self.used_words.add(word)
                return word

    def response(self, category: str, version: str) -> str:
        body = self.rng.sample([s for s in _SENTENCES if not s.startswith("Kindly")], 4)
        body.insert(self.rng.randint(1, 3), _KINDLY)
        parts = [GREETING] if category == "writing" and version == "v1.0" else []
        parts.append(" ".join(body))
        parts.append(CLOSING)
        return "\n\n".join(parts)

    def interaction(
        self, user: str, version: str, category: str, at: datetime, experiment: bool
    ) -> InteractionEvent:
        event = InteractionEvent(
            event_id=self.uuid(),
            interaction_id=self.uuid(),
            user_id=user,
            session_id=f"{user}-{len(self.events)}",
            prompt=f"A {category} question number {self.rng.randint(1, 10**6)}",
            prompt_version=version,
            model="gpt-4o-mini",
            response=self.response(category, version),
            response_time_ms=self.rng.randint(200, 2000),
            created_at=at,
            input_category=category,
            experiment_id="greeting-v1.1" if experiment else None,
            variant=version if experiment else None,
        )
        self.events.append(event)
        return event

    def feedback(self, x: InteractionEvent, kind: FeedbackType, after_s: float, **extra: Any) -> None:
        self.events.append(
            FeedbackEvent(
                event_id=self.uuid(),
                interaction_id=x.interaction_id,
                user_id=x.user_id,
                session_id=x.session_id,
                created_at=_ms(x.created_at + timedelta(seconds=after_s)),
                feedback_type=kind,
                **extra,
            )
        )

    def edit(self, x: InteractionEvent, corrected: str) -> None:
        self.feedback(x, FeedbackType.EDIT, self.rng.uniform(20, 200), corrected_output=corrected)

    def replace_word(self, text: str) -> str:
        """Replace one word of the body (not the greeting or closing) with a word nobody else uses."""
        paragraphs = text.split("\n\n")
        body_index = len(paragraphs) - 2
        words = paragraphs[body_index].split(" ")
        index = self.rng.randrange(len(words))
        trailing = "".join(ch for ch in words[index][-1:] if not ch.isalnum())
        words[index] = self.unique_word() + trailing
        paragraphs[body_index] = " ".join(words)
        return "\n\n".join(paragraphs)

    def delete_middle_sentence(self, text: str) -> str:
        paragraphs = text.split("\n\n")
        body_index = len(paragraphs) - 2
        sentences = paragraphs[body_index].split(". ")
        del sentences[2]
        paragraphs[body_index] = ". ".join(sentences)
        return "\n\n".join(paragraphs)


def _greeting(user_index: int, name: str) -> str:
    # Trivial differences that must not split the pattern.
    variants = (f"Hi {name},", f"hi {name},", f"Hi  {name} ,", "Hi [Name],", f"HI {name},")
    return variants[user_index % len(variants)]


def planted_workload(
    seed: int = 11, now: datetime | None = None, span: timedelta = timedelta(hours=2)
) -> PlantedWorkload:
    """Generate the workload described in the module doc (about 2,400 interactions, 4,000 events)."""
    start, end = workload_window(now or datetime.now(UTC), span)
    p = _Planter(seed, start, end)
    rng = p.rng
    users = [f"user-{n:03d}" for n in range(300)]
    power_user = "power-user"
    v11_created = _ms(start + (end - start) * 0.5)
    prompts = [
        PromptVersion(
            version="v1.0",
            text="You are a helpful assistant. Answer formally and end with a summary.",
            change="First version.",
            reasoning="Baseline.",
            author="alice",
            created_at=start - timedelta(days=30),
        ),
        PromptVersion(
            version="v1.1",
            parent="v1.0",
            text="You are a helpful assistant. Greet the user by name.",
            change="Greet the user by name instead of 'Dear Sir/Madam'.",
            reasoning="20 users replaced the formal greeting with the reader's name.",
            addresses="common edit: dear sir/madam -> hi <name>",
            author="bob",
            created_at=v11_created,
        ),
    ]

    # v1.0 serves the first 60 % of the span, v1.1 from its creation (the middle) on.
    v10: dict[str, list[InteractionEvent]] = {c: [] for c in CATEGORIES}
    v11: list[InteractionEvent] = []
    for category in CATEGORIES:
        for _ in range(400):
            at = p.at(0.0, 0.6)
            v10[category].append(p.interaction(rng.choice(users), "v1.0", category, at, at >= v11_created))
        for _ in range(150):
            at = p.at(0.5 + 1e-3, 1.0)
            v11.append(p.interaction(rng.choice(users), "v1.1", category, at, True))
    power = []
    for category in CATEGORIES:
        for _ in range(50):
            at = p.at(0.5 + 1e-3, 1.0)
            power.append(p.interaction(power_user, "v1.1", category, at, True))

    # Regenerations: v1.0 technical 48 %, other v1.0 categories 12 %, v1.1 10 %; the power user 100 %.
    regenerated: set[uuid.UUID] = set()

    def regenerate(group: list[InteractionEvent], share: float) -> None:
        for x in rng.sample(group, round(len(group) * share)):
            p.feedback(x, FeedbackType.REGENERATE, rng.uniform(3, 40))
            regenerated.add(x.interaction_id)

    for category in CATEGORIES:
        regenerate(v10[category], 0.48 if category == "technical" else 0.12)
    for category in CATEGORIES:
        regenerate([x for x in v11 if x.input_category == category], 0.10)
    regenerate(power, 1.0)

    # v1.0 edits: 200 = 20 greeting replacements + 80 closing deletions + 15 middle-sentence
    # deletions + 5 'Kindly' -> 'Please' + 10 rewrites (large edits) + 8 'vary' -> 'differ' by one
    # user + 62 unique one-word replacements.
    open_v10 = [x for c in CATEGORIES for x in v10[c] if x.interaction_id not in regenerated]
    rng.shuffle(open_v10)
    greeting_users: set[str] = set()
    greeting_targets = []
    for x in open_v10:
        if x.input_category == "writing" and x.user_id not in greeting_users and x.created_at < v11_created:
            greeting_users.add(x.user_id)
            greeting_targets.append(x)
            if len(greeting_targets) == 20:
                break
    for n, x in enumerate(greeting_targets):
        p.edit(x, x.response.replace(GREETING, _greeting(n, NAMES[n % len(NAMES)]), 1))
    rest = [x for x in open_v10 if x not in greeting_targets]
    closing, middle, kindly, noise = rest[:80], rest[80:95], rest[95:100], rest[100:180]
    for x in closing:
        p.edit(x, x.response.replace("\n\n" + CLOSING, ""))
    for x in middle:
        p.edit(x, p.delete_middle_sentence(x.response))
    for x in kindly:
        p.edit(x, x.response.replace("Kindly note", "Please note", 1))
    for x in noise[:10]:  # large edits: the answer rewritten
        p.edit(x, " ".join(p.unique_word() for _ in range(12)) + ".")
    # One user making the same fix in 8 edits: these interactions become the repeat user's (counts by
    # version and category stay as they are), edited with one replacement.
    for x in noise[10 : 10 + _REPEATED_EDITS]:
        mine = x.model_copy(update={"user_id": REPEAT_USER, "session_id": f"{REPEAT_USER}-{len(p.events)}"})
        p.events[p.events.index(x)] = mine
        group = v10[x.input_category or ""]
        group[group.index(x)] = mine
        p.edit(mine, mine.response.replace("may vary between", "may differ between", 1))
    for x in noise[10 + _REPEATED_EDITS :]:
        p.edit(x, p.replace_word(x.response))

    # v1.1 edits: 20 = 5 closing deletions + 15 unique one-word replacements.
    open_v11 = [x for x in v11 if x.interaction_id not in regenerated]
    rng.shuffle(open_v11)
    for x in open_v11[:5]:
        p.edit(x, x.response.replace("\n\n" + CLOSING, ""))
    for x in open_v11[5:20]:
        p.edit(x, p.replace_word(x.response))

    # Some thumbs-down and copies, so every indicator has data.
    everything = [x for c in CATEGORIES for x in v10[c]] + v11 + power
    for x in rng.sample(everything, 120):
        p.feedback(x, FeedbackType.THUMBS_DOWN, rng.uniform(2, 60))
    for x in rng.sample([x for x in everything if x.interaction_id not in regenerated], 700):
        p.feedback(x, FeedbackType.COPY, rng.uniform(5, 200), copied_chars=len(x.response))

    expected = Expected(
        common_edits={("v1.0", "dear sir/madam", "hi <name>"): (20, 20)},
        consistent_deletions={("v1.0", "closing", "paragraph"): (80, 200)},
        spikes={("v1.0", "technical")},
        below_threshold_edits={("v1.0", "kindly", "please"): 5},
        single_user_edits={("v1.0", "vary", "differ"): (_REPEATED_EDITS, 1)},
        below_threshold_deletions={("v1.1", "closing", "paragraph"): (5, 20)},
        power_user=power_user,
    )
    events = sorted(p.events, key=lambda e: (e.created_at, isinstance(e, FeedbackEvent)))
    return PlantedWorkload(
        events=events,
        prompts=prompts,
        expected=expected,
        interactions=sum(isinstance(e, InteractionEvent) for e in events),
        start=start,
        end=end,
        edits_by_version={"v1.0": 200, "v1.1": 20},
    )


def load_through_logic(
    client: Client,
    database: str,
    events: Iterable[InteractionEvent | FeedbackEvent],
    pipeline: PipelineSettings | None = None,
) -> None:
    """Migrate ``database`` and fill its tables from ``events`` through the processors' pure logic
    (one partition state, every outcome settled) and the sink's row mapping — without Kafka."""
    migrate(client, database)
    state = PartitionState(0, pipeline or PipelineSettings())
    specs = {spec.topic: spec for spec in TABLES}
    rows: dict[str, list[list[Any]]] = {}
    outcomes: dict[str, dict[str, Any]] = {}

    def take(items: list[Any]) -> None:
        for item in items:
            if not isinstance(item, Emit):
                continue
            if item.kind == "outcome":
                key = str(item.value["interaction_id"])
                if key not in outcomes or outcomes[key]["version"] < item.value["version"]:
                    outcomes[key] = item.value
            elif item.kind in ("joined", "edit_ops"):
                topic = topics.FEEDBACK_JOINED if item.kind == "joined" else topics.EDIT_OPERATIONS
                spec = specs[topic]
                rows.setdefault(spec.table, []).append(spec.to_row(orjson.dumps(item.value)))

    interactions = specs[topics.INTERACTIONS]
    latest = 0
    for event in events:
        created_ms = to_epoch_ms(event.created_at)
        latest = max(latest, created_ms)
        if isinstance(event, InteractionEvent):
            rows.setdefault(interactions.table, []).append(
                interactions.to_row(event.model_dump_json().encode())
            )
        take(apply_event(state, event, created_ms, -1))
    take(state.advance(latest + 24 * 3600 * 1000))
    spec = specs[topics.OUTCOMES]
    rows[spec.table] = [spec.to_row(orjson.dumps(value)) for value in outcomes.values()]
    columns = {spec.table: spec.columns for spec in TABLES}
    for table, table_rows in rows.items():
        client.insert(f"{database}.{table}", table_rows, column_names=list(columns[table]))


def insert_records(client: Client, database: str, topic: str, records: Iterable[BaseModel]) -> None:
    """Insert contract records of ``topic`` (tickets, experiment revisions, ...) into its table through
    the sink's row mapping, without Kafka."""
    spec = next(s for s in TABLES if s.topic == topic)
    rows = [spec.to_row(r.model_dump_json().encode()) for r in records]
    if rows:
        client.insert(f"{database}.{spec.table}", rows, column_names=list(spec.columns))


def grafana_sql(raw: str, database: str, start: datetime, end: datetime, interval_s: int = 3600) -> str:
    """A Grafana panel's ClickHouse query with the datasource's macros and ``${database}`` expanded
    the way the grafana-clickhouse-datasource plugin expands them, so chdb can run it."""
    frm, to = int(start.timestamp()), int(end.timestamp())
    sql = raw.replace("${database}", database)
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({frm}) AND \1 <= toDateTime({to})", sql)
    sql = re.sub(r"\$__timeInterval\((\w+)\)", rf"toStartOfInterval(\1, INTERVAL {interval_s} second)", sql)
    return sql.replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")
