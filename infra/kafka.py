"""Small Kafka helpers every stage shares: client config, topic creation, offsets and lag.

Every admin or metadata call here goes through :func:`call_with_retries`: a broker answers "not now"
for a while after a topic is created or a leader moves (``NOT_LEADER_FOR_PARTITION``,
``LEADER_NOT_AVAILABLE``, a coordinator still loading, a request that timed out), and such an answer
is retried until a deadline instead of failing the command, the demo or a test on a fresh machine.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, but not in __all__
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from confluent_kafka.cimpl import NewTopic

from infra.settings import KafkaSettings
from schemas import topics

T = TypeVar("T")


class KafkaUnavailableError(RuntimeError):
    """The broker did not answer in time, or kept answering "not now" until the deadline."""


#: Broker and client errors that mean "not now" rather than "no": leadership moving or not yet elected
#: (a topic created a moment ago), a group coordinator loading or moving, a request or the connection
#: timing out, metadata not yet propagated (unknown topic or partition right after creation).
RETRIABLE_CODES: frozenset[int] = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.NOT_CONTROLLER,
        KafkaError.KAFKA_STORAGE_ERROR,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.OFFSET_NOT_AVAILABLE,
        KafkaError.PREFERRED_LEADER_NOT_AVAILABLE,
        KafkaError.THROTTLING_QUOTA_EXCEEDED,
        # librdkafka's own (negative) codes: no broker reachable yet, a local timeout, metadata not
        # yet known for a new topic or partition, a coordinator still being looked up.
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._TIMED_OUT,
        KafkaError._TIMED_OUT_QUEUE,
        KafkaError._WAIT_COORD,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
    }
)


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The :class:`KafkaError` a :class:`KafkaException` carries, if it carries one."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def is_retriable(exc: BaseException) -> bool:
    """Whether ``exc`` is a broker's "not now" (see :data:`RETRIABLE_CODES`); fatal errors never are."""
    error = kafka_error(exc)
    if error is None or error.fatal():
        return False
    return error.code() in RETRIABLE_CODES or bool(error.retriable())


def call_with_retries(
    call: Callable[[], T],
    what: str,
    timeout_s: float = 30.0,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Return ``call()``; while it raises a retriable broker error, wait (0.1 s, doubling up to 2 s)
    and call again. Past ``timeout_s`` raise :class:`KafkaUnavailableError` naming ``what`` and the
    last error; any other error is raised at once, unchanged."""
    deadline = clock() + timeout_s
    delay = 0.1
    attempts = 0
    while True:
        attempts += 1
        try:
            return call()
        except KafkaException as exc:
            if not is_retriable(exc):
                raise
            remaining = deadline - clock()
            if remaining <= 0:
                raise KafkaUnavailableError(
                    f"{what}: still failing after {timeout_s:g}s and {attempts} attempts: {exc}"
                ) from exc
            sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)


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


class _OutageThrottle:
    """Turns a stream of "broker not reachable" lines into one WARNING per ``outage_warn_s`` once the
    outage has lasted that long; everything else of the kind goes to DEBUG."""

    def __init__(self, outage_warn_s: float, clock: Callable[[], float]) -> None:
        self.outage_warn_s = outage_warn_s
        self._clock = clock
        self._outage_since: float | None = None
        self._last_failure = 0.0
        self._last_warning: float | None = None
        self._suppressed = 0

    def note(self) -> tuple[float, int] | None:
        """Count one transient line; return (seconds of outage, lines held back) when it is due as a
        warning, else None (log it at DEBUG)."""
        now = self._clock()
        # A quiet spell longer than librdkafka's longest reconnect backoff (10 s) ends an outage.
        if self._outage_since is None or now - self._last_failure > max(self.outage_warn_s, 10.0):
            self._outage_since, self._last_warning, self._suppressed = now, None, 0
        self._last_failure = now
        lasted = now - self._outage_since
        if lasted >= self.outage_warn_s and (
            self._last_warning is None or now - self._last_warning >= self.outage_warn_s
        ):
            self._last_warning = now
            suppressed, self._suppressed = self._suppressed, 0
            return lasted, suppressed
        self._suppressed += 1
        return None


_OUTAGE_WARNING = (
    "no connection to Kafka for %.0f s (%d similar lines since the last report); "
    "the client keeps retrying. Last: "
)


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
        self._outage = _OutageThrottle(outage_warn_s, clock)

    def log(self, level: int, msg: str, *args: Any) -> None:
        """Log one librdkafka line (``msg % args``, args = facility, client name, text)."""
        text = str(args[-1]) if args else msg
        if level >= logging.WARNING and librdkafka_transient(text):
            if (due := self._outage.note()) is not None:
                self.logger.warning(_OUTAGE_WARNING + msg, *due, *args)
            else:
                self.logger.debug(msg, *args)
            return
        self.logger.log(logging.DEBUG if level < logging.WARNING else level, msg, *args)


#: The logger aiokafka (the client inside Faust) reports connection failures on.
AIOKAFKA_LOGGER = "aiokafka"


class AiokafkaOutageFilter(logging.Filter):
    """The same policy for aiokafka, the client inside Faust: while a broker is down it logs "Unable
    connect to node" at ERROR ten times a second. Installed on the ``aiokafka`` logger by
    :func:`quiet_client_outages`; such records are demoted to DEBUG except one WARNING per
    ``outage_warn_s`` once the outage has lasted that long. Any other record passes unchanged."""

    def __init__(self, outage_warn_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(AIOKAFKA_LOGGER)
        self._outage = _OutageThrottle(outage_warn_s, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not librdkafka_transient(record.getMessage()):
            return True
        if (due := self._outage.note()) is not None:
            record.msg, record.args = _OUTAGE_WARNING + "%s", (*due, record.getMessage())
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        else:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def quiet_client_outages() -> None:
    """Install :class:`AiokafkaOutageFilter` on the ``aiokafka`` logger (once per process)."""
    logger = logging.getLogger(AIOKAFKA_LOGGER)
    if not any(isinstance(f, AiokafkaOutageFilter) for f in logger.filters):
        logger.addFilter(AiokafkaOutageFilter())


def client_config(kafka: KafkaSettings, **extra: Any) -> dict[str, Any]:
    """librdkafka configuration for ``kafka``, with ``extra`` keys on top: the brokers and the
    security settings (TLS and SASL), for every producer, consumer and admin client.

    SASL credentials are set only with a SASL protocol and TLS files only with a TLS one, so a secret
    never sits in a configuration that does not use it. File paths are made absolute (the SDK's
    sender process may be restarted after the app changed directory). librdkafka logs through
    Python logging (:class:`LibrdkafkaLog`) unless ``extra`` has a ``logger``.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "security.protocol": kafka.security_protocol,
        "logger": LibrdkafkaLog(),
    }
    if kafka.uses_sasl:
        if kafka.sasl_mechanism:
            config["sasl.mechanism"] = kafka.sasl_mechanism.upper()
        if kafka.sasl_username is not None:
            config["sasl.username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            config["sasl.password"] = kafka.sasl_password.get_secret_value()
    if kafka.uses_tls:
        config["enable.ssl.certificate.verification"] = True
        config["ssl.endpoint.identification.algorithm"] = "https" if kafka.ssl_check_hostname else "none"
        if kafka.ssl_ca_file is not None:
            config["ssl.ca.location"] = str(kafka.ssl_ca_file.absolute())
        if kafka.ssl_cert_file is not None:
            config["ssl.certificate.location"] = str(kafka.ssl_cert_file.absolute())
        if kafka.ssl_key_file is not None:
            config["ssl.key.location"] = str(kafka.ssl_key_file.absolute())
        if kafka.ssl_key_password is not None:
            config["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    config.update(extra)
    return config


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of ``kafka`` for Python clients (Faust's aiokafka), None without TLS: the
    brokers' certificates verified against ``ssl_ca_file`` (else the system's CAs), their host names
    checked unless ``ssl_check_hostname`` is off, and the client certificate loaded if given. Raises
    :class:`OSError` / :class:`ssl.SSLError` naming a file that cannot be read."""
    if not kafka.uses_tls:
        return None
    ca = str(kafka.ssl_ca_file.absolute()) if kafka.ssl_ca_file is not None else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.check_hostname = kafka.ssl_check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if kafka.ssl_cert_file is not None:
        password = kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password is not None else None
        context.load_cert_chain(
            str(kafka.ssl_cert_file.absolute()),
            str(kafka.ssl_key_file.absolute()) if kafka.ssl_key_file is not None else None,
            password=password,
        )
    return context


def public_topic_names(kafka: KafkaSettings) -> list[str]:
    """The real names of every public topic under the configured namespace."""
    return [topics.topic_name(t, kafka.topic_namespace) for t in topics.PUBLIC_TOPICS]


def wait_for_broker(kafka: KafkaSettings, timeout_s: float = 60.0) -> None:
    """Return once the broker answers a metadata request; raise :class:`KafkaUnavailableError` otherwise.

    Errors that waiting cannot fix (authentication, a bad configuration) are raised at once."""
    admin = AdminClient(client_config(kafka))
    try:
        call_with_retries(
            lambda: admin.list_topics(timeout=min(5.0, max(0.5, timeout_s))), "metadata request", timeout_s
        )
    except KafkaUnavailableError as exc:
        raise KafkaUnavailableError(
            f"no Kafka broker answered at {kafka.bootstrap_servers}: {exc.__cause__}"
        ) from exc


def _list_topics(admin: AdminClient, timeout_s: float) -> dict[str, Any]:
    return call_with_retries(
        lambda: admin.list_topics(timeout=min(10.0, timeout_s)).topics, "list topics", timeout_s
    )


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
    raises, because co-partitioning by ``session_id`` depends on it. The contract's compacted topics
    (``topics.COMPACTED_TOPICS``) are created compacted (see :func:`ensure_compacted` for older ones).
    """
    want = partitions or kafka.partitions
    admin = AdminClient(client_config(kafka))
    existing = _list_topics(admin, timeout_s)
    names = list(dict.fromkeys(names))
    for name in names:
        if name in existing and len(existing[name].partitions) != want:
            raise RuntimeError(
                f"topic {name} has {len(existing[name].partitions)} partitions, feedbackloop needs {want}"
            )
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    todo = list(missing)
    created: list[str] = []

    compacted = {topics.topic_name(base, kafka.topic_namespace) for base in topics.COMPACTED_TOPICS}

    def topic_config(name: str) -> dict[str, str]:
        return {**({"cleanup.policy": "compact"} if name in compacted else {}), **dict(config or {})}

    def create_the_rest() -> None:
        futures = admin.create_topics(
            [NewTopic(n, want, kafka.replication_factor, config=topic_config(n)) for n in todo],
            operation_timeout=timeout_s,
        )
        failure: KafkaException | None = None
        for name, future in futures.items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                error = kafka_error(exc)
                if error is None or error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    failure = failure or exc
                    continue
            todo.remove(name)
        if failure is not None:
            raise failure

    call_with_retries(create_the_rest, f"create topics {missing}", timeout_s)
    _wait_for_leaders(admin, missing, timeout_s)
    return created


def ensure_compacted(kafka: KafkaSettings, names: Iterable[str], timeout_s: float = 30.0) -> list[str]:
    """Make existing topics ``cleanup.policy=compact`` (an idempotent config change, for topics
    created before they were meant to be compacted); return the names changed."""
    admin = AdminClient(client_config(kafka))
    changed = []
    for name in names:
        resource = ConfigResource(ResourceType.TOPIC, name)

        def describe(resource: Any = resource) -> dict[str, Any]:
            return dict(admin.describe_configs([resource])[resource].result(timeout=timeout_s))

        current = call_with_retries(describe, f"configuration of {name}", timeout_s)
        entry = current.get("cleanup.policy")
        if entry is not None and entry.value == "compact":
            continue
        change = ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)
            ],
        )
        admin.incremental_alter_configs([change])[change].result(timeout=timeout_s)
        changed.append(name)
    return changed


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        meta = _list_topics(admin, timeout_s)
        if all(
            n in meta
            and meta[n].error is None
            and meta[n].partitions
            and all(p.leader >= 0 for p in meta[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.2)
    raise KafkaUnavailableError(f"topics {names} got no partition leaders within {timeout_s}s")


def delete_topics(kafka: KafkaSettings, names: Iterable[str], timeout_s: float = 30.0) -> None:
    """Delete topics that exist (used by tests to clean up after themselves)."""
    admin = AdminClient(client_config(kafka))
    existing = _list_topics(admin, timeout_s)
    todo = [n for n in names if n in existing]
    if not todo:
        return

    def delete_the_rest() -> None:
        failure: KafkaException | None = None
        for name, future in admin.delete_topics(list(todo), operation_timeout=timeout_s).items():
            try:
                future.result()
            except KafkaException as exc:
                error = kafka_error(exc)
                if error is None or error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:  # else: gone already
                    failure = failure or exc
                    continue
            todo.remove(name)
        if failure is not None:
            raise failure

    call_with_retries(delete_the_rest, f"delete topics {todo}", timeout_s)


@dataclass(frozen=True)
class GroupLag:
    """How far a consumer group is behind the end of some topics."""

    end_offsets: dict[tuple[str, int], int]
    committed: dict[tuple[str, int], int]

    @property
    def total(self) -> int:
        """Messages not yet committed by the group, over all partitions."""
        return sum(end - max(self.committed.get(tp, 0), 0) for tp, end in self.end_offsets.items())


def group_lag(
    kafka: KafkaSettings, group_id: str, topic_names: Iterable[str], timeout_s: float = 30.0
) -> GroupLag:
    """Committed offsets of ``group_id`` against the end offsets of ``topic_names`` (topics that do not
    exist count as empty). A topic whose leaders are still being elected is waited for (``timeout_s``)."""
    names = list(topic_names)
    consumer = Consumer(client_config(kafka, **{"group.id": group_id, "enable.auto.commit": False}))

    def read() -> GroupLag:
        meta = consumer.list_topics(timeout=10)
        tps: list[TopicPartition] = []
        for name in names:
            topic = meta.topics.get(name)
            if topic is None:
                continue
            if topic.error is not None:  # e.g. LEADER_NOT_AVAILABLE on a topic created a moment ago
                raise KafkaException(topic.error)
            tps.extend(TopicPartition(name, p) for p in topic.partitions)
        end = {}
        for tp in tps:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            end[(tp.topic, tp.partition)] = high
        committed = {}
        for tp in consumer.committed(tps, timeout=10):
            if tp.error is not None:
                raise KafkaException(tp.error)
            committed[(tp.topic, tp.partition)] = tp.offset
        return GroupLag(end_offsets=end, committed=committed)

    try:
        return call_with_retries(read, f"lag of consumer group {group_id}", timeout_s)
    finally:
        consumer.close()


def group_is_stable(kafka: KafkaSettings, group_id: str, timeout_s: float = 10.0) -> bool:
    """Whether a consumer group has members and has finished rebalancing (False while its
    coordinator cannot say, or says the group does not exist)."""
    admin = AdminClient(client_config(kafka))
    try:
        description = call_with_retries(
            lambda: admin.describe_consumer_groups([group_id])[group_id].result(timeout=10),
            f"describe consumer group {group_id}",
            timeout_s,
        )
    except (KafkaException, KafkaUnavailableError, TimeoutError):
        return False
    return bool(description.members) and str(description.state).endswith("STABLE")


def read_topic(
    kafka: KafkaSettings, topic: str, timeout_s: float = 30.0, group_id: str = "feedbackloop-reader"
) -> Iterator[Message]:
    """Every message of ``topic`` from its beginning up to its end as of the call, in partition order.

    For tools that look at a whole topic (dead letters, experiments): nothing is committed. A topic
    that does not exist is empty; :class:`TimeoutError` when the end is not reached in ``timeout_s``.
    """
    consumer = Consumer(client_config(kafka, **{"group.id": group_id, "enable.auto.commit": False}))
    try:
        meta = call_with_retries(lambda: consumer.list_topics(topic, timeout=10), f"metadata of {topic}")
        found = meta.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            return
        remaining: dict[int, int] = {}
        for partition in found.partitions:
            low, high = watermark_offsets(consumer, TopicPartition(topic, partition))
            if high > low:
                remaining[partition] = high
        if not remaining:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in remaining])
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within {timeout_s}s")
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                partition = message.partition()
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    continue
                offset = message.offset()
                if partition not in remaining or offset is None:
                    continue
                if offset + 1 >= remaining[partition]:
                    remaining.pop(partition)
                yield message
    finally:
        consumer.close()


def watermark_offsets(consumer: Consumer, tp: TopicPartition, timeout_s: float = 30.0) -> tuple[int, int]:
    """(low, high) offsets of a partition, retried while a broker answers "not now" (a new topic)."""

    def offsets() -> tuple[int, int]:
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        return int(low), int(high)

    return call_with_retries(offsets, f"offsets of {tp.topic} [{tp.partition}]", timeout_s)
