"""No silent split: a sink on embedded ClickHouse (chdb) must be the only member of its consumer group.

With chdb every sink writes a database of its own, on its own machine. Two sinks in one consumer group
share the partitions, so each database gets a part of the rows -- and every number read from either is
wrong, without a warning. A sink on a ClickHouse server has no such problem: all sinks write one
database, and sharing partitions is how they scale out.

So a sink on chdb refuses to run when another member is in its group:

* before it starts (:func:`check_alone`): a member still there after the session timeout is another
  sink. One that leaves before is the ghost of a sink that was killed a moment ago: its partitions
  could not move before its session expired anyway, so waiting for it costs the restart nothing;
* while it runs (:class:`SplitWatch`): a member that joins later (two sinks started at the same
  moment both find the group empty, and a sink on a server cannot know the others use chdb) and
  stays longer than the same grace. A broker restart leaves this sink's own old membership behind
  beside its new one until that session expires: a ghost too, not another sink.

The processors and the experiment evaluator keep no state on the machine: the processors' tables
are in-memory copies of changelog topics, the evaluator rebuilds its state from the log and holds a
lease. Only the sink's embedded database splits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from infra.clickhouse import chdb_path
from infra.groups import sink_group_id
from infra.kafka import client_config
from infra.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)

#: Exit code of a sink that refused to split the data.
SPLIT_EXIT_CODE = 3


class SplitError(RuntimeError):
    """Another sink is in the consumer group of a sink on embedded ClickHouse."""


@dataclass(frozen=True)
class GroupMember:
    """One member of a consumer group, as the group coordinator describes it."""

    member_id: str
    client_id: str
    host: str


#: Describes a consumer group: its members, or None when the broker could not be asked.
Describe = Callable[[KafkaSettings, str], "list[GroupMember] | None"]


def embedded(settings: Settings) -> bool:
    """Whether the sink writes to embedded ClickHouse (chdb) rather than a server."""
    return chdb_path(settings.clickhouse.url) is not None


def group_members(kafka: KafkaSettings, group_id: str, timeout_s: float = 10.0) -> list[GroupMember] | None:
    """The members of ``group_id`` (none for an unknown group); None when the broker did not answer."""
    admin = AdminClient(client_config(kafka))
    try:
        description = admin.describe_consumer_groups([group_id], request_timeout=timeout_s)[group_id].result()
    except KafkaException as exc:
        log.warning("could not describe consumer group %s: %s", group_id, exc)
        return None
    finally:
        admin.poll(0)  # serve its log lines
    return [
        GroupMember(member.member_id, member.client_id, member.host.lstrip("/"))
        for member in description.members or []
    ]


def split_message(settings: Settings, members: list[GroupMember], *, joined: bool = False) -> str:
    """What a refusing sink says: why, and the setting that fixes it (``joined``: this sink is one
    of ``members``)."""
    others = len(members) - 1 if joined else len(members)
    where = ", ".join(sorted(f"{m.client_id} on {m.host}" for m in members)) or "unknown"
    return (
        f"refusing to run the ClickHouse sink: it writes to embedded ClickHouse "
        f"({settings.clickhouse.url}), and {others} other member(s) share its consumer group "
        f"{sink_group_id(settings)} (members: {where}). Each embedded sink writes a database "
        "of its own, so the rows would be split between them without a warning. Point every sink at one "
        "ClickHouse server (the server option): FEEDBACKLOOP_CLICKHOUSE__URL=http://user:password@host:8123 "
        "(docker-compose.yml runs one), or run a single sink per consumer group."
    )


def check_alone(
    settings: Settings,
    *,
    grace_s: float | None = None,
    poll_s: float = 1.0,
    describe: Describe = group_members,
) -> None:
    """Return when a sink may start; raise :class:`SplitError` when it would split the data.

    Only a sink on chdb is checked. Members that leave within ``grace_s`` (default: the session
    timeout and 5 s) are the ghosts of killed sinks; one still there then is another sink. When the
    broker cannot be asked, the sink starts and :class:`SplitWatch` asks again.
    """
    if not embedded(settings):
        return
    group = sink_group_id(settings)
    wait_s = settings.pipeline.session_timeout_s + 5.0 if grace_s is None else grace_s
    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        members = describe(settings.kafka, group)
        if not members:
            if members is None:
                log.warning(
                    "could not tell whether another sink is in %s; checking again once running", group
                )
            return
        if time.monotonic() >= deadline:
            raise SplitError(split_message(settings, members))
        if not waited:
            log.info(
                "%d member(s) already in %s: waiting up to %.0f s for them to leave (a sink killed a moment "
                "ago leaves when its session expires)",
                len(members),
                group,
                wait_s,
            )
            waited = True
        time.sleep(poll_s)


class SplitWatch:
    """While a sink on chdb runs, check its group every ``interval_s``; call ``on_split`` once when
    the group has had another member at every check for ``grace_s`` (default: the session timeout and
    5 s, as for :func:`check_alone`) and at least two checks in a row. A ghost -- this sink's own
    membership left behind by a broker restart, a killed sink -- leaves within that time; another sink
    stays."""

    def __init__(
        self,
        settings: Settings,
        on_split: Callable[[str], None],
        *,
        interval_s: float = 5.0,
        grace_s: float | None = None,
        describe: Describe = group_members,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.on_split = on_split
        self.interval_s = interval_s
        self.grace_s = settings.pipeline.session_timeout_s + 5.0 if grace_s is None else grace_s
        self._describe = describe
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sink-split-watch", daemon=True)

    def start(self) -> SplitWatch:
        """Start watching (nothing to watch for a sink on a ClickHouse server)."""
        if embedded(self.settings):
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def _run(self) -> None:
        group = sink_group_id(self.settings)
        crowded, crowded_since = 0, 0.0
        while not self._stop.wait(self.interval_s):
            members = self._describe(self.settings.kafka, group)
            if members is None:
                continue
            if len(members) <= 1:
                crowded = 0
                continue
            if crowded == 0:
                crowded_since = self._clock()
            crowded += 1
            if crowded >= 2 and self._clock() - crowded_since >= self.grace_s:
                # Which one is this process cannot be told from the broker's side: name them all.
                self.on_split(split_message(self.settings, members, joined=True))
                return


__all__ = [
    "SPLIT_EXIT_CODE",
    "Describe",
    "GroupMember",
    "SplitError",
    "SplitWatch",
    "check_alone",
    "embedded",
    "group_members",
    "split_message",
]
