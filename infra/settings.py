"""The one settings object of feedbackloop.

Built once at the entry point (the CLI) and passed down; nothing below reads the
environment. Every field can be set with ``FEEDBACKLOOP_<SECTION>__<FIELD>``, e.g.
``FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS`` or ``FEEDBACKLOOP_CLICKHOUSE__URL``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Project-local, git-ignored folder for everything the local stack and chdb write.
DEFAULT_HOME = Path(".feedbackloop")


class KafkaSettings(BaseModel):
    """Where the broker is, how our topics are laid out, and how every client authenticates.

    The security settings apply to every Kafka client feedbackloop makes: the confluent-kafka
    producers, consumers and admin clients (``infra.kafka.client_config``, which the SDK's sender
    process is configured from too) and Faust's aiokafka clients in the processors
    (``stream_processors.app``). Secrets are :class:`~pydantic.SecretStr`: never in a repr, a log
    line or a command's output.
    """

    # A refused value may be a secret: errors name the setting, not what it held.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    partitions: int = Field(4, ge=1, description="Partition count of every feedbackloop topic.")
    replication_factor: int = Field(1, ge=1, description="Replication factor used when creating topics.")
    topic_namespace: str = Field(
        "",
        description="Prefix put before every topic name ('' keeps the contract names); tests use it "
        "to get topics of their own.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How clients talk to the brokers: SSL and SASL_SSL encrypt (and verify the brokers' "
        "certificates), SASL_* authenticate with a user name and password.",
    )
    sasl_mechanism: str | None = Field(
        None, description="SASL mechanism with SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password.")
    ssl_ca_file: Path | None = Field(
        None,
        description="PEM file of the CA certificates the brokers' certificates are verified against "
        "(SSL, SASL_SSL); none -> the system's trusted CAs.",
    )
    ssl_cert_file: Path | None = Field(
        None,
        description="PEM client certificate, for brokers that authenticate clients by certificate (mTLS).",
    )
    ssl_key_file: Path | None = Field(None, description="PEM private key of the client certificate.")
    ssl_key_password: SecretStr | None = Field(None, description="Password of an encrypted private key.")
    ssl_check_hostname: bool = Field(
        True,
        description="Check that a broker's certificate names the host connected to. Turn off only for "
        "brokers addressed by a name their certificate lacks (the connection is still encrypted and "
        "the certificate still verified against the CA).",
    )

    @property
    def uses_tls(self) -> bool:
        """Whether clients encrypt (SSL or SASL_SSL)."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        """Whether clients authenticate with SASL (SASL_PLAINTEXT or SASL_SSL)."""
        return self.security_protocol.startswith("SASL")

    @model_validator(mode="after")
    def _certificate_with_its_key(self) -> KafkaSettings:
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("kafka.ssl_cert_file and kafka.ssl_key_file go together: set both or neither")
        if self.ssl_key_password is not None and self.ssl_key_file is None:
            raise ValueError("kafka.ssl_key_password needs kafka.ssl_key_file")
        return self


#: What a database name may be: it is put into SQL as an identifier, never quoted as data.
DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_database_name(name: str) -> str:
    """``name`` if it is a plain identifier (letters, digits, ``_``; not starting with a digit);
    else ``ValueError``. Every database name that reaches SQL passes here first."""
    if not isinstance(name, str) or not DATABASE_NAME.fullmatch(name):
        raise ValueError(
            "a database name is letters, digits and underscores, not starting with a digit "
            "(it is put into SQL as an identifier)"
        )
    return name


class ClickHouseSettings(BaseModel):
    """Which ClickHouse to write to: embedded chdb (``chdb:///dir``) or a server (``http(s)://...``).

    A password in the url (``http://user:pass@host:8123``) is taken out of it at validation and kept
    as :attr:`password`, so the url can be shown anywhere; the password is never shown.
    """

    # A refused value may hold the password (a url): errors name the setting, not what it held.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    url: str = Field(
        f"chdb://{(DEFAULT_HOME / 'chdb').as_posix()}",
        description="chdb:///<absolute dir>, chdb://<relative dir> or "
        "http(s)://[user[:password]@]host[:port] (a password here is moved to `password`).",
    )
    password: SecretStr | None = Field(
        None, description="Password of the url's user (or give it in the url; not both)."
    )
    verify: bool = Field(
        True,
        description="https: verify the server's certificate (against ca_cert, else the system's CAs). "
        "Turning it off lets anyone on the path read and change what is written.",
    )
    ca_cert: Path | None = Field(
        None,
        description="https: PEM file of the CA certificates the server's certificate is verified against.",
    )
    client_cert: Path | None = Field(
        None,
        description="https: PEM client certificate, for servers that authenticate clients by certificate.",
    )
    client_cert_key: Path | None = Field(
        None, description="https: the client certificate's private key, if not in the certificate file."
    )
    database: str = Field("feedbackloop", description="Database (an identifier: letters, digits, _).")
    insert_batch_rows: int = Field(20_000, ge=1, description="Rows per insert, per table.")
    flush_interval_s: float = Field(1.0, gt=0, description="Longest a row waits in the sink buffer.")

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_the_url(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        url, password = split_password(data["url"])
        if password is None:
            return data
        given = data.get("password")
        given_text = given.get_secret_value() if isinstance(given, SecretStr) else given
        if given_text not in (None, password):
            raise ValueError("clickhouse: the url holds a password and clickhouse.password another one")
        return {**data, "url": url, "password": SecretStr(password)}

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(("chdb://", "http://", "https://")):
            raise ValueError("clickhouse url must start with chdb://, http:// or https://")
        return url

    @field_validator("database")
    @classmethod
    def _identifier(cls, name: str) -> str:
        return check_database_name(name)

    @property
    def shown_url(self) -> str:
        """The url to show a person: the password, if any, as ``***``."""
        if self.password is None:
            return self.url
        parts = urlsplit(self.url)
        user, _, host = parts.netloc.rpartition("@")
        netloc = f"{user or 'default'}:***@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def split_password(url: str) -> tuple[str, str | None]:
    """``url`` without the password of its user info, and that password (percent-decoded; None if
    there is none). ``http://u:p%40ss@h:8123/`` -> (``http://u@h:8123/``, ``p@ss``)."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url, None
    user, _, password = userinfo.partition(":")
    netloc = f"{user}@{host}" if user else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), unquote(password)


class SinkSettings(BaseModel):
    """How the sink writes the output topics to its backend, and what it does while the backend is down.

    A failure that is not the row's own fault (the backend unreachable, overloaded, out of space, a
    table missing) pauses consumption and is retried for as long as it takes; only rows the backend
    refuses for what they hold are dead-lettered (see ``sinks/runner.py``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str = Field(
        "clickhouse",
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Which backend writes the rows (a name in sinks/registry.py); where it is lives in "
        "that backend's own section, e.g. `clickhouse`.",
    )
    retry_initial_s: float = Field(
        0.5, gt=0, description="Wait after the first failed write of an outage; it doubles per attempt."
    )
    retry_max_s: float = Field(
        5.0, gt=0, description="Longest wait between attempts while paused (the cap of the backoff)."
    )
    status_log_interval_s: float = Field(
        60.0, gt=0, description="While paused, one log line this often says so (not one per attempt)."
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Serve the sink's Prometheus metrics on this port (0: do not)."
    )
    stall_timeout_s: float = Field(
        120.0,
        gt=0,
        description="A sink that has read nothing for this long while its group is behind on a partition "
        "it owns (and the backend is up) exits non-zero, committing nothing it did not write, so its "
        "supervisor restarts it with fresh Kafka clients: a client stuck after a broker restart is "
        "said and healed instead of stalling silently.",
    )
    fault_file: Path | None = Field(
        None,
        description="Outage drill: while this file holds a UNIX time in the future, every write fails "
        "as if the backend refused the connection. For tests and fire drills; unset in production.",
    )

    @model_validator(mode="after")
    def _cap_not_below_start(self) -> SinkSettings:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("sink.retry_max_s must be at least sink.retry_initial_s")
        return self


class SignalSettings(BaseModel):
    """Thresholds and windows of the implicit signals; their meaning is the README's contract."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    abandon_window_s: float = Field(300.0, gt=0, description="No positive action within this -> abandoned.")
    rephrase_window_s: float = Field(
        120.0, gt=0, description="Next interaction within this may be a rephrase."
    )
    followup_window_s: float = Field(
        60.0, gt=0, description="Next interaction within this may be a follow-up."
    )
    short_dwell_ms: int = Field(3000, ge=0, description="view_end dwell under this is a short dwell.")
    partial_copy_below: float = Field(0.9, gt=0, le=1, description="copied_fraction under this is partial.")
    edit_small_max_norm: float = Field(0.15, ge=0, le=1, description="edit_distance_norm <= this is small.")
    edit_large_min_norm: float = Field(0.5, ge=0, le=1, description="edit_distance_norm >= this is large.")

    @property
    def settle_delay_s(self) -> float:
        """How long after ``created_at`` an interaction settles: the longest window a later event can still
        change its signals in. The processors settle on it and the evaluator cuts its windows by it."""
        return max(self.abandon_window_s, self.rephrase_window_s, self.followup_window_s)


class PipelineSettings(BaseModel):
    """How the stream processors run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app_id: str = Field("feedbackloop", description="Faust app id: consumer group and internal topic prefix.")
    batch_max_events: int = Field(2000, ge=1, description="Most input messages handled in one batch.")
    allowed_lateness_s: float = Field(
        5.0, ge=0, description="Out-of-orderness tolerated before the watermark passes an event."
    )
    idle_advance_s: float = Field(
        3.0,
        gt=0,
        description="When every input of a partition has been read to its end for this long, its "
        "watermark follows the wall clock (so the last interactions settle without new traffic).",
    )
    retention_s: float = Field(
        3600.0,
        gt=0,
        description="How long after settling an interaction still accepts late events (event time; for a "
        "session that arrived behind the watermark, also this long in wall-clock time after its last event).",
    )
    late_horizon_s: float = Field(
        72 * 3600.0,
        gt=0,
        description="Events whose created_at is further than this behind the partition's watermark are "
        "dead-lettered as too late; anything newer counts exactly as if it had arrived on time (the SDK's "
        "spool can hold events for as long as the broker is away).",
    )
    max_future_skew_s: float = Field(
        300.0,
        ge=0,
        description="Events dated more than this ahead of the wall clock are refused (by the SDK and the "
        "collector with a 400, by the processors as dead letters): a forged clock never moves event time.",
    )
    metrics_window_s: int = Field(60, ge=1, description="Tumbling window of prompt_version_metrics.")
    metrics_retention_s: float = Field(
        6 * 3600.0, gt=0, description="How far behind the newest window a metrics window still takes updates."
    )
    standby_replicas: int = Field(0, ge=0, description="Faust table standby replicas (faster fail-over).")
    commit_interval_s: float = Field(1.0, gt=0, description="How often consumer offsets are committed.")
    session_timeout_s: float = Field(
        10.0, ge=6, description="Consumer group session timeout: how soon a dead worker's partitions move."
    )
    fetch_max_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Per-partition fetch size.")
    web_port: int = Field(6066, ge=0)
    data_dir: Path = Field(
        DEFAULT_HOME / "faust",
        description="The processors' state folder (Faust's datadir; one subfolder per app id). The worker's "
        "user must be able to write there: in a container, put it on a volume that user owns.",
    )
    sink_stats_file: Path | None = Field(
        None, description="Where the sink writes its counters and latency percentiles (JSON), if anywhere."
    )
    signals: SignalSettings = SignalSettings()


class StackSettings(BaseModel):
    """The local single-node Kafka started without Docker."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kafka_version: str = "4.4.0"
    home: Path = Field(DEFAULT_HOME, description="Where the broker's data, logs and pid file live.")
    cache_dir: Path = Field(
        Path.home() / ".cache" / "feedbackloop", description="Where the broker's jars are cached."
    )
    port: int = Field(9092, ge=1, le=65535)
    controller_port: int = Field(9093, ge=1, le=65535)
    heap: str = "1g"


class FieldCaps(BaseModel):
    """Size caps of an event's free-text fields, in characters (``metadata``: its keys and values
    together). An event over a cap is refused where it is recorded (``EventTooLargeError``; 413 at
    the collector) with an error naming the field. The contract has no such caps: they are a
    deployment's choice, and every cap here keeps a typical event well under the message limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: int = Field(100_000, ge=1, description="Characters of an interaction's prompt.")
    response: int = Field(100_000, ge=1, description="Characters of an interaction's response.")
    corrected_output: int = Field(100_000, ge=1, description="Characters of an edit's corrected text.")
    comment: int = Field(
        10_000,
        ge=1,
        le=10_000,
        description="Characters of a feedback comment (the contract's own cap is 10,000).",
    )
    metadata: int = Field(
        16_384, ge=0, description="Characters of an interaction's metadata keys and values together."
    )


#: The built-in detectors of redaction (producers/redaction.py), in the order they win an overlap.
RedactionDetector = Literal["email", "card", "ip", "phone"]
_PATTERN_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
#: The shortest bearer token or redaction key accepted (an empty one would open the door).
MIN_SECRET_CHARS = 16
#: The shortest interaction secret accepted (an HMAC key).
MIN_INTERACTION_SECRET_CHARS = 32
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#]+|null")


class RedactionSettings(BaseModel):
    """What the SDK and the collector redact from free text (prompt, response, corrected_output,
    comment, metadata values) before an event leaves the app or is acknowledged (docs/security.md).

    Off by default: nothing is detected and nothing costs anything until a detector or a pattern
    is switched on. A redacted value becomes one placeholder word (``[email]``), so edit distance
    and edit patterns still work on the text.
    """

    # A refused secret must not be echoed into a log with the error (pydantic shows the input).
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    detectors: tuple[RedactionDetector, ...] = Field(
        (),
        description="Built-in detectors to switch on: email addresses, card numbers (Luhn-checked), IP "
        "addresses (v4 and v6), phone numbers. JSON list in the environment.",
    )
    patterns: dict[str, str] = Field(
        {},
        description="Custom patterns: placeholder name (lower case, [a-z0-9_]) -> Python regular "
        "expression; each match becomes [name]. They win overlaps with the built-in detectors.",
    )
    key: SecretStr | None = Field(
        None,
        description="With a key (16+ characters), a placeholder also names its value by a keyed hash "
        "([email:3f9a0c12]): the same value gives the same placeholder in every event, a different "
        "value a different one, so an edit that changes an address stays visible. Set the same key "
        "in the SDK and the collector.",
    )

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, patterns: dict[str, str]) -> dict[str, str]:
        for name, pattern in patterns.items():
            if not _PATTERN_NAME.fullmatch(name):
                raise ValueError(f"redaction pattern name {name!r} must match [a-z][a-z0-9_]{{0,31}}")
            if name in get_args(RedactionDetector):
                raise ValueError(f"redaction pattern name {name!r} is a built-in detector's name")
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"redaction pattern {name!r} is not a regular expression: {exc}") from exc
            if compiled.fullmatch(""):
                raise ValueError(f"redaction pattern {name!r} matches the empty string")
        return patterns

    @field_validator("key")
    @classmethod
    def _key_long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"producer.redaction.key must have at least {MIN_SECRET_CHARS} characters")
        return key


class ProducerSettings(BaseModel):
    """How the producer SDK buffers, spools and hands events to Kafka (see docs/producers.md)."""

    # A refused secret must not be echoed into a log with the error (pydantic shows the input).
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    client_id: str = Field("feedbackloop-sdk", description="Kafka client.id; also the metrics label.")
    buffer_max_events: int = Field(
        100_000, ge=1, description="In-memory buffer between callers and the sender thread; full -> refused."
    )
    max_in_flight: int = Field(
        10_000,
        ge=1,
        description="Events handed to librdkafka and not yet acknowledged; more are spooled instead.",
    )
    spool_after_s: float = Field(
        1.0, gt=0, description="An event unacknowledged this long means the broker is unwell: spool."
    )
    linger_ms: int = Field(5, ge=0, description="librdkafka linger.ms: batching delay.")
    sender_linger_ms: float = Field(
        20.0,
        ge=0,
        description="While busy, the sender (in its own process) lets events gather this long "
        "between rounds, so each round hands librdkafka and the spool a larger batch.",
    )
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    close_timeout_s: float = Field(
        10.0, ge=0, description="How long close() waits for deliveries before spooling what is left."
    )
    spool_dir: Path = Field(DEFAULT_HOME / "spool", description="Where the on-disk spool lives.")
    spool_max_bytes: int = Field(
        1 << 30, ge=1 << 16, description="Spool size bound; events beyond it are dropped, loudly."
    )
    spool_segment_bytes: int = Field(16 << 20, ge=1 << 12, description="Size at which a segment rolls.")
    spool_fsync_interval_s: float = Field(
        0.2,
        ge=0,
        description="Longest a spooled record waits for fsync (0: after every write). A process crash "
        "loses nothing written; this bounds what a machine crash can take.",
    )
    max_message_bytes: int = Field(
        1_000_000,
        ge=1_000,
        le=1_000_000_000,
        description="The largest Kafka message, as the broker's and librdkafka's message.max.bytes "
        "(and the topics' max.message.bytes) allow: an event whose key and JSON, plus 100 bytes of "
        "record overhead, exceed it is refused where it is recorded (EventTooLargeError, 413), not "
        "lost when librdkafka refuses it later. Passed to librdkafka as its message.max.bytes.",
    )
    field_caps: FieldCaps = Field(FieldCaps(), description="Size caps of the free-text fields.")
    redaction: RedactionSettings = Field(
        RedactionSettings(), description="Redaction of free text at the edge (off by default)."
    )
    interaction_secret: SecretStr | None = Field(
        None,
        description="Signs interaction references: with it, FeedbackClient.interaction_token() gives an "
        "HMAC over interaction, user and session, and the collector refuses events without a valid "
        "one (docs/security.md). 32+ characters; the same value in the app and the collector.",
    )
    interaction_previous_secrets: tuple[SecretStr, ...] = Field(
        (),
        description="Secrets the collector still accepts tokens of (key rotation); nothing is signed "
        "with them. JSON list in the environment.",
    )

    @field_validator("interaction_secret")
    @classmethod
    def _secret_long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < MIN_INTERACTION_SECRET_CHARS:
            raise ValueError(
                f"producer.interaction_secret must have at least {MIN_INTERACTION_SECRET_CHARS} characters "
                "(an HMAC key; e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return secret

    @model_validator(mode="after")
    def _previous_need_a_current(self) -> ProducerSettings:
        if self.interaction_previous_secrets and self.interaction_secret is None:
            raise ValueError("producer.interaction_previous_secrets needs producer.interaction_secret")
        if any(not secret.get_secret_value() for secret in self.interaction_previous_secrets):
            raise ValueError("producer.interaction_previous_secrets holds an empty secret")
        return self


class CollectorSettings(BaseModel):
    """The HTTP collector that browsers and mobile apps post events to (docs/security.md says which
    settings each deployment needs)."""

    # A refused secret must not be echoed into a log with the error (pydantic shows the input).
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    auth_token: SecretStr | None = Field(
        None,
        description="Bearer token clients must send (16+ characters); none -> only clients on this "
        "machine, from no foreign web page. An empty value is an error, not 'no token'.",
    )
    cors_origins: tuple[str, ...] = Field(
        (),
        description="Origins (scheme://host[:port]) web pages may post from ('*' for any, only with a "
        "token). A request with an Origin header not listed is refused, unless a token is set and "
        "this is empty.",
    )
    allowed_hosts: tuple[str, ...] = Field(
        (),
        description="Host names requests may address besides IP addresses and localhost ('*' for any). "
        "Checked without a token (against DNS rebinding) and whenever set.",
    )
    trusted_proxies: tuple[str, ...] = Field(
        ("127.0.0.1",),
        description="Addresses whose X-Forwarded-For / X-Forwarded-Proto are believed (the client's "
        "address then comes from there); '*' for any, only behind a proxy that sets them.",
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Larger request bodies get 413.")
    max_events_per_request: int = Field(500, ge=1, description="Longer batches get 413.")
    field_caps: FieldCaps | None = Field(
        None,
        description="Caps for events posted here, e.g. tighter ones for browsers; none -> the "
        "producer's (which the SDK enforces on every event in any case).",
    )
    rate_limit_per_s: float = Field(
        50.0,
        ge=0,
        description="Requests per second one client (address; IPv6 by /64) may make to POST /v1/events "
        "on average, per collector process; more get 429 with Retry-After. 0: no limit.",
    )
    rate_limit_burst: int = Field(
        200, ge=1, description="Requests a client may make at once before the rate applies."
    )
    rate_limit_clients: int = Field(
        100_000, ge=1, description="Clients whose rate is remembered; the longest idle are forgotten."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A connection must deliver a request's line and headers within this (from its "
        "opening, or from a kept-alive request's first byte); else 408 and closed.",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="A request body must arrive within this once its headers have; else 408."
    )
    keep_alive_timeout_s: int = Field(
        5, ge=1, description="An idle kept-alive connection is closed after this many seconds."
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Connections (and requests in progress) at once; beyond it requests get 503 at once.",
    )

    @field_validator("auth_token")
    @classmethod
    def _token_long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(
                f"collector.auth_token has {len(token.get_secret_value())} characters; at least "
                f"{MIN_SECRET_CHARS} are needed (an empty value, e.g. an unset variable in a template, "
                "would let anyone post). Unset it to take local clients only."
            )
        return token

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"collector.cors_origins: {origin!r} is not an origin (scheme://host[:port], no path "
                    "and no trailing slash, as browsers send it) or '*'"
                )
        return origins

    @model_validator(mode="after")
    def _any_origin_needs_a_token(self) -> CollectorSettings:
        if "*" in self.cors_origins and self.auth_token is None:
            raise ValueError(
                "collector.cors_origins '*' without collector.auth_token would let any web page the "
                "user opens post to this collector; list the origins, or set a token"
            )
        return self


class InsightSettings(BaseModel):
    """Thresholds of the edit patterns, segment spikes, vocal-minority guard and weekly report.

    The ClickHouse views read the SQL-side thresholds from the table ``insight_settings``; the
    report and ``feedbackloop insights sync`` write these values there (see docs/insights.md).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_registry: Path = Field(
        Path("prompts.json"), description="The prompt registry file `feedbackloop prompts` manages."
    )
    user_weight_cap: int = Field(
        20, ge=1, description="Most interactions (or edits) one user weighs in a capped rate."
    )
    min_pattern_edits: int = Field(
        5, ge=0, description="Deletions, large edits and thumbs-down issues need more than this many edits."
    )
    min_pattern_users: int = Field(
        5,
        ge=0,
        description="A common edit needs more than this many distinct users (a user repeating a fix is one).",
    )
    min_deletion_share: float = Field(
        0.2, ge=0, le=1, description="A deletion is consistent from this share of a version's edits."
    )
    spike_ratio: float = Field(
        2.0, gt=1, description="A category spikes when its regeneration rate is this many times the rest's."
    )
    spike_min_interactions: int = Field(
        50, ge=1, description="Categories with fewer interactions are never flagged (too few to act on)."
    )
    spike_min_z: float = Field(
        3.0, ge=0, description="Two-proportion z-score a spike needs against the rest of its version."
    )
    regeneration_target: float = Field(0.15, gt=0, le=1, description="Target regeneration rate.")
    disagreement: float = Field(
        0.05, gt=0, le=1, description="Capped and per-interaction rates further apart than this disagree."
    )
    severity_regeneration: float = Field(3.0, ge=0, description="Issue weight of a regeneration.")
    severity_thumbs_down: float = Field(2.0, ge=0, description="Issue weight of a thumbs-down.")
    severity_large_edit: float = Field(3.0, ge=0, description="Issue weight of a large edit.")
    severity_medium_edit: float = Field(1.5, ge=0, description="Issue weight of a medium edit.")
    severity_small_edit: float = Field(1.0, ge=0, description="Issue weight of a small edit.")
    top_issues: int = Field(5, ge=1, le=20, description="How many issues the weekly report ranks.")
    loop_weeks: int = Field(
        12, ge=4, le=52, description="Weeks of trend in the report's 'Is the loop working?' section."
    )
    trend_tolerance: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="An indicator moves when its last complete week differs from the mean of the weeks "
        "before it by more than this share; moving the wrong way flags it.",
    )
    time_to_fix_target_days: float = Field(
        14.0, gt=0, description="Target time from a pattern's first appearance to its fix (days)."
    )


class ExperimentSettings(BaseModel):
    """The experiment evaluator and the regression alerts (docs/experiments.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_s: int = Field(
        60,
        ge=1,
        description="Event-time window: experiments are decided and regressions checked once per window.",
    )
    idle_flush_s: float = Field(
        15.0,
        gt=0,
        description="When every outcomes partition has been read to its end and nothing came for this long, "
        "look at what has arrived instead of waiting for the other partitions' event time.",
    )
    auto_apply: bool = Field(
        False, description="Apply promote/revert decisions to the experiment (else they are recommendations)."
    )
    min_users_per_arm: int = Field(
        500,
        ge=2,
        description="Users each arm needs before a promote or revert (`experiments create` default; "
        "users are the randomized unit).",
    )
    improvement_alpha: float = Field(
        0.25,
        gt=0,
        lt=0.5,
        description="Bound on promoting a treatment whose improvement is exactly the minimum: promote needs "
        "the improvement to exceed the minimum at this one-sided level, at every look.",
    )
    srm_threshold: float = Field(
        0.001,
        gt=0,
        lt=1,
        description="Bound on invalidating a healthy experiment for a sample ratio mismatch over all looks "
        "(sequential test).",
    )
    max_assignment_mismatch: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="Share of users logged in another arm than the consistent hash gives above which an "
        "experiment is invalid.",
    )
    cuped: bool = Field(
        True,
        description="Reduce variance with each user's pre-experiment values (CUPED); the evaluator then "
        "keeps every user's history.",
    )
    regression_metrics: tuple[
        Literal[
            "regeneration_rate",
            "correction_rate",
            "abandonment_rate",
            "edit_distance_norm",
            "response_time_ms",
        ],
        ...,
    ] = Field(
        ("regeneration_rate", "correction_rate", "abandonment_rate", "edit_distance_norm"),
        description="Metrics every prompt version is watched on.",
    )
    regression_min_relative_rise: float = Field(
        0.20, ge=0, description="A rise must be at least this share of the baseline to alert."
    )
    regression_min_absolute_rise: float = Field(
        0.02, ge=0, description="... and at least this much in the metric's units (rates: 0.02 = 2 points)."
    )
    regression_false_alarm_budget: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="Bound on a false alert per version and metric within the horizon "
        "(for a rise at the floors).",
    )
    regression_horizon_windows: int = Field(1440, ge=1, description="The horizon of that bound, in windows.")
    regression_baseline_windows: int = Field(
        240, ge=2, description="Trailing in-control windows in a baseline (suspicious windows never join)."
    )
    regression_min_baseline_windows: int = Field(10, ge=2, description="No verdicts before this many.")
    regression_min_window_interactions: int = Field(
        30, ge=1, description="Windows with fewer interactions carrying the metric are skipped."
    )
    regression_detect_excess: tuple[float, ...] = Field(
        (0.5, 2.0, 8.0),
        min_length=1,
        description="Rises beyond the floors, as shares of the floor, that the alerts' CUSUMs are tuned to "
        "(one CUSUM each: small ones found surely, large ones at once).",
    )
    regression_resolve_after: int = Field(5, ge=1, description="Consecutive clear windows that resolve it.")
    evidence_link_template: str | None = Field(
        None,
        description="Link around an alert's evidence SQL, with '{sql}' where the URL-quoted query goes "
        "(e.g. a ClickHouse play or Grafana explore URL).",
    )


class RetentionSettings(BaseModel):
    """How long personal free text is kept in ClickHouse (docs/security.md, "Retention and erasure").

    Applied by ``feedbackloop migrate`` and whenever the sink opens ClickHouse
    (``sinks.clickhouse.retention``): column TTLs blank the raw text of older rows (prompts,
    responses, corrections, comments, edit fragments, metadata) while the rows, their ids, flags
    and numbers stay, so every rate and aggregate stays as it was; dead letters, which are only
    their payload, expire whole.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_text_days: int | None = Field(
        None,
        ge=0,
        le=36_500,
        description="Days raw text is kept after its event time (e.g. 90); 0: kept until erased (the "
        "TTLs removed); unset: the TTLs are left as an earlier migrate set them (none at first). "
        "Set it where the sink runs and where `feedbackloop migrate` runs; a change is applied at the "
        "next of either. Text already blanked does not come back.",
    )


class Settings(BaseSettings):
    """Everything feedbackloop can be told, from env vars or a ``.env`` file."""

    model_config = SettingsConfigDict(
        env_prefix="FEEDBACKLOOP_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
        # Errors name the setting but do not repeat its value: a refused token or secret (too short)
        # must not end up in a log. The nested sections' own option applies only when validated alone.
        hide_input_in_errors=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    sink: SinkSettings = SinkSettings()
    pipeline: PipelineSettings = PipelineSettings()
    stack: StackSettings = StackSettings()
    producer: ProducerSettings = ProducerSettings()
    collector: CollectorSettings = CollectorSettings()
    insights: InsightSettings = InsightSettings()
    experiments: ExperimentSettings = ExperimentSettings()
    retention: RetentionSettings = RetentionSettings()
