"""Small Kafka helpers every stage shares: client config, topic creation, offsets and lag."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from infra.settings import KafkaSettings
from schemas import topics


class KafkaUnavailableError(RuntimeError):
    """The broker did not answer in time."""


#: Where librdkafka's own log lines go (Python logging, like everything else we log).
LIBRDKAFKA_LOGGER = "librdkafka"

# A broker that cannot be reached *yet* -- starting, restarting, failing over, a container whose
# name does not resolve until it runs -- is routine: librdkafka retries by itself, and what really
# fails reaches the caller as an error or a failed delivery. These lines say nothing more.
_TRANSIENT = re.compile(
    r"connection refused|connect to .* failed|disconnected|brokers are down|broker transport failure"
    r"|timed out|connection reset|receive failed|send failed|failed to resolve|name or service not known"
    r"|coordinator load in progress|not coordinator|leader not available|retrying|purging",
    re.IGNORECASE,
)


def librdkafka_transient(line: str) -> bool:
    """Whether a librdkafka log line only says that a broker is not reachable right now."""
    return _TRANSIENT.search(line) is not None


class LibrdkafkaLog:
    """librdkafka's log lines through Python logging (logger ``librdkafka``), at a sane level.

    librdkafka's notices and transient connection failures (see :func:`librdkafka_transient`) go
    to DEBUG: a client created while the broker starts would otherwise print a line every 50 ms.
    A broker that stays unreachable is still said, at WARNING, once it has been so for
    ``outage_warn_s`` seconds, and then at most once per ``outage_warn_s``. Warnings and errors of
    any other kind keep their level. confluent-kafka calls :meth:`log` (config key ``logger``).
    """

    def __init__(self, outage_warn_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logging.getLogger(LIBRDKAFKA_LOGGER)
        self.outage_warn_s = outage_warn_s
        self._clock = clock
        self._outage_since: float | None = None
        self._last_failure = 0.0
        self._last_warning: float | None = None
        self._suppressed = 0

    def log(self, level: int, msg: str, *args: Any) -> None:
        """Log one librdkafka line (``msg % args``, args = facility, client name, text)."""
        text = str(args[-1]) if args else msg
        if level >= logging.WARNING and librdkafka_transient(text):
            self._transient(msg, args)
            return
        self.logger.log(logging.DEBUG if level < logging.WARNING else level, msg, *args)

    def _transient(self, msg: str, args: tuple[Any, ...]) -> None:
        now = self._clock()
        # A quiet spell longer than librdkafka's longest reconnect backoff (10 s) ends an outage.
        if self._outage_since is None or now - self._last_failure > max(self.outage_warn_s, 10.0):
            self._outage_since, self._last_warning, self._suppressed = now, None, 0
        self._last_failure = now
        lasted = now - self._outage_since
        due = self._last_warning is None or now - self._last_warning >= self.outage_warn_s
        if lasted >= self.outage_warn_s and due:
            self._last_warning = now
            self.logger.warning(
                "no connection to Kafka for %.0f s (%d similar lines since the last report); "
                "the client keeps retrying. Last: " + msg,
                lasted,
                self._suppressed,
                *args,
            )
            self._suppressed = 0
        else:
            self._suppressed += 1
            self.logger.debug(msg, *args)


def client_config(kafka: KafkaSettings, **extra: Any) -> dict[str, Any]:
    """librdkafka configuration for ``kafka``, with ``extra`` keys on top.

    librdkafka logs through Python logging (:class:`LibrdkafkaLog`) unless ``extra`` has a ``logger``.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "security.protocol": kafka.security_protocol,
        "logger": LibrdkafkaLog(),
    }
    if kafka.sasl_mechanism:
        config["sasl.mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_username:
        config["sasl.username"] = kafka.sasl_username
    if kafka.sasl_password:
        config["sasl.password"] = kafka.sasl_password.get_secret_value()
    config.update(extra)
    return config


def public_topic_names(kafka: KafkaSettings) -> list[str]:
    """The real names of every public topic under the configured namespace."""
    return [topics.topic_name(t, kafka.topic_namespace) for t in topics.PUBLIC_TOPICS]


def wait_for_broker(kafka: KafkaSettings, timeout_s: float = 60.0) -> None:
    """Return once the broker answers a metadata request; raise :class:`KafkaUnavailableError` otherwise."""
    admin = AdminClient(client_config(kafka))
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            last_error = exc
            time.sleep(0.5)
    raise KafkaUnavailableError(f"no Kafka broker answered at {kafka.bootstrap_servers}: {last_error}")


def ensure_topics(
    kafka: KafkaSettings,
    names: Iterable[str],
    *,
    partitions: int | None = None,
    config: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Existing topics are checked, not changed: a partition count other than the one asked for
    raises, because co-partitioning by ``session_id`` depends on it.
    """
    want = partitions or kafka.partitions
    admin = AdminClient(client_config(kafka))
    existing = admin.list_topics(timeout=timeout_s).topics
    names = list(dict.fromkeys(names))
    for name in names:
        if name in existing and len(existing[name].partitions) != want:
            raise RuntimeError(
                f"topic {name} has {len(existing[name].partitions)} partitions, feedbackloop needs {want}"
            )
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(n, want, kafka.replication_factor, config=dict(config or {})) for n in missing],
        operation_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    _wait_for_leaders(admin, missing, timeout_s)
    return created


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=timeout_s).topics
        if all(
            n in meta and meta[n].partitions and all(p.leader >= 0 for p in meta[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.2)
    raise KafkaUnavailableError(f"topics {names} got no partition leaders within {timeout_s}s")


def delete_topics(kafka: KafkaSettings, names: Iterable[str], timeout_s: float = 30.0) -> None:
    """Delete topics that exist (used by tests to clean up after themselves)."""
    admin = AdminClient(client_config(kafka))
    existing = admin.list_topics(timeout=timeout_s).topics
    doomed = [n for n in names if n in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=timeout_s).values():
            future.result()


@dataclass(frozen=True)
class GroupLag:
    """How far a consumer group is behind the end of some topics."""

    end_offsets: dict[tuple[str, int], int]
    committed: dict[tuple[str, int], int]

    @property
    def total(self) -> int:
        """Messages not yet committed by the group, over all partitions."""
        return sum(end - max(self.committed.get(tp, 0), 0) for tp, end in self.end_offsets.items())


def group_lag(kafka: KafkaSettings, group_id: str, topic_names: Iterable[str]) -> GroupLag:
    """Committed offsets of ``group_id`` against the end offsets of ``topic_names``."""
    consumer = Consumer(client_config(kafka, **{"group.id": group_id, "enable.auto.commit": False}))
    try:
        meta = consumer.list_topics(timeout=10)
        tps = [
            TopicPartition(name, p)
            for name in topic_names
            if name in meta.topics
            for p in meta.topics[name].partitions
        ]
        end = {}
        for tp in tps:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            end[(tp.topic, tp.partition)] = high
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, timeout=10)}
        return GroupLag(end_offsets=end, committed=committed)
    finally:
        consumer.close()


def group_is_stable(kafka: KafkaSettings, group_id: str) -> bool:
    """Whether a consumer group has members and has finished rebalancing."""
    admin = AdminClient(client_config(kafka))
    try:
        description = admin.describe_consumer_groups([group_id])[group_id].result(timeout=10)
    except KafkaException:
        return False
    return bool(description.members) and str(description.state).endswith("STABLE")
