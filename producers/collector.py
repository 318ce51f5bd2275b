"""The HTTP collector: browsers and mobile apps POST events; we validate and publish them via the SDK.

``POST /v1/events`` takes one event object or an array of them, each with ``"type"`` set to
``"interaction"``, ``"feedback"`` or ``"support_ticket"`` next to the contract's fields (and, with signed
references, ``"interaction_token"``). Answers: 202 when every event was accepted (buffered or spooled), 400
with a reason per invalid event (the valid ones in the same request are accepted all the same),
403 with a reason per event without a valid interaction token (likewise), 413 for a body or batch
over the limits or an event over a field cap or the Kafka message limit (named, per event; the
others are accepted), 429 when the SDK's buffer is full or the client is over its rate, 503 with
``Retry-After`` whenever the SDK could not keep the events (spool bound reached, spool failing to
write, sender process not running), 401/403 for a failed token, origin, host or address check,
408 for a body that does not arrive in time. ``GET /healthz`` answers 200 while events can be
accepted; ``GET /metrics`` serves Prometheus metrics. A spool folder that cannot be created or
written stops the collector at start.

Closed by default (docs/security.md): without a token only clients on this machine, addressing it
by an IP address or ``localhost`` (not a name a web page could rebind), from no web page whose
origin is not listed, may post. Every event is redacted (``producer.redaction``) before it is
acknowledged.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from pydantic import ValidationError

from infra.settings import CollectorSettings, Settings
from producers.errors import EventTimeError, EventTooLargeError, NotAcceptingError
from producers.http_guard import header_deadline_protocol
from producers.limits import EventLimits
from producers.ratelimit import RateLimiter, client_key
from producers.redaction import Redactor
from producers.sdk import BufferFullError, ClientClosedError, Event, FeedbackClient, interaction_signer
from producers.sender.spool import SpoolError, check_spool_root
from producers.signing import InteractionSigner
from schemas import FeedbackEvent, InteractionEvent, SupportTicket, to_epoch_ms
from schemas.events import event_time_error

log = logging.getLogger(__name__)

#: Seconds a client is told to wait after a 503 (the spool drains or its disk is fixed meanwhile).
RETRY_AFTER_S: Final = 5

EVENT_TYPES: Final[dict[str, type[InteractionEvent] | type[FeedbackEvent] | type[SupportTicket]]] = {
    "interaction": InteractionEvent,
    "feedback": FeedbackEvent,
    "support_ticket": SupportTicket,
}
#: The collector's own fields of a posted event, taken off before the contract validates the rest.
TOKEN_FIELD: Final = "interaction_token"  # noqa: S105 - a field name, not a secret
ENVELOPE_FIELDS: Final = frozenset({"type", TOKEN_FIELD})
SIGNED_TICKETS: Final = (
    "support tickets are refused where interaction references must be signed (a ticket has no session to "
    "sign): record them from a server with the SDK's record_support_ticket"
)


class BatchTooLargeError(ValueError):
    """More events in one request than ``max_events_per_request``."""


@dataclass
class ParsedBatch:
    """Valid events with their index in the request, and the reasons for the invalid ones
    (``too_large`` of them over a size limit, ``forbidden`` without a valid interaction token)."""

    events: list[tuple[int, Event]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    too_large: int = 0
    forbidden: int = 0

    @property
    def status(self) -> int:
        """The answer's status: 403 over 413 over 400 over 202 (the most specific refusal first)."""
        if self.forbidden:
            return 403
        if self.too_large:
            return 413
        return 400 if self.errors else 202


def _reasons(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(part) for part in error["loc"]) or "(event)", "message": error["msg"]}
        for error in exc.errors(include_url=False)
    ]


def parse_event(obj: Any, max_future_skew_ms: int | None = None) -> Event:
    """Validate one event object against the contract; fill ``event_id`` and ``created_at`` if absent.

    Raises ``ValueError`` (a ``pydantic.ValidationError`` for field errors) with the reason, and
    :class:`EventTimeError` for a ``created_at`` more than ``max_future_skew_ms`` ahead of now.
    """
    if not isinstance(obj, dict):
        raise ValueError("an event must be a JSON object")
    kind = obj.get("type")
    model = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ValueError(f"type must be one of {sorted(EVENT_TYPES)}, got {kind!r}")
    fields = {k: v for k, v in obj.items() if k not in ENVELOPE_FIELDS}
    fields.setdefault("event_id", str(uuid.uuid4()))
    fields.setdefault("created_at", datetime.now(UTC))
    if model is SupportTicket:
        fields.setdefault("ticket_id", fields["event_id"])  # as the SDK: a ticket without its help desk's id
    event = model.model_validate(fields)
    if max_future_skew_ms is not None:
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        reason = event_time_error(to_epoch_ms(event.created_at), now_ms, max_future_skew_ms)
        if reason is not None:
            raise EventTimeError(reason)
    return event


def parse_batch(
    payload: Any,
    *,
    max_events: int,
    limits: EventLimits | None = None,
    signer: InteractionSigner | None = None,
    redactor: Redactor | None = None,
    max_future_skew_ms: int | None = None,
) -> ParsedBatch:
    """Validate a request body already decoded from JSON: one event object or an array of them.

    With ``signer``, an event whose ``interaction_token`` does not match its interaction, user
    and session is refused (``forbidden``). With ``redactor``, each event's free text is redacted.
    With ``limits``, an event over a field cap or the message limit (after redaction: what would
    be sent) is refused too, naming the event and the field (the SDK would refuse it; better to
    say so per event than for the batch).
    """
    items = payload if isinstance(payload, list) else [payload]
    if len(items) > max_events:
        raise BatchTooLargeError(f"{len(items)} events in one request; the limit is {max_events}")
    batch = ParsedBatch()
    for index, item in enumerate(items):
        try:
            event = parse_event(item, max_future_skew_ms)
        except ValidationError as exc:
            batch.errors.append({"index": index, "errors": _reasons(exc)})
            continue
        except EventTimeError as exc:
            batch.errors.append({"index": index, "errors": [{"field": exc.field, "message": str(exc)}]})
            continue
        except ValueError as exc:
            batch.errors.append({"index": index, "errors": [{"field": "(event)", "message": str(exc)}]})
            continue
        if signer is not None:
            if isinstance(event, SupportTicket):  # no session to sign: where references are signed,
                batch.forbidden += 1  # tickets come from servers
                batch.errors.append(
                    {"index": index, "errors": [{"field": "type", "message": SIGNED_TICKETS}]}
                )
                continue
            reason = signer.check(
                item.get(TOKEN_FIELD), event.interaction_id, event.user_id, event.session_id
            )
            if reason is not None:
                batch.forbidden += 1
                batch.errors.append(
                    {
                        "index": index,
                        "event_id": str(event.event_id),
                        "errors": [{"field": TOKEN_FIELD, "message": f"{TOKEN_FIELD} {reason}"}],
                    }
                )
                continue
        if redactor is not None and not isinstance(event, SupportTicket):  # a ticket has no free text
            try:
                event = redactor.redact_event(event)
            except ValidationError as exc:  # a placeholder longer than a value pushed a field over
                batch.errors.append({"index": index, "errors": _reasons(exc)})
                continue
        if limits is not None:
            try:
                limits.check(event)
            except EventTooLargeError as exc:
                batch.too_large += 1
                batch.errors.append(
                    {
                        "index": index,
                        "event_id": str(event.event_id),
                        "errors": [{"field": exc.field or "(event)", "message": str(exc)}],
                    }
                )
                continue
        batch.events.append((index, event))
    return batch


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (the peer address uvicorn reports) is this machine."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer ...``, else of the ``access_token`` query parameter;
    None when neither is there or not empty (an empty token is no token).

    The query parameter (RFC 6750 section 2.3) is for ``navigator.sendBeacon``, which cannot set
    headers.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.query_params.get("access_token") or None


def host_name(header: str) -> str:
    """The name or address a ``Host`` header addresses: no port, no brackets, lower case, no final dot."""
    host = header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    name, colon, port = host.rpartition(":")
    if colon and ":" not in name and (port.isdigit() or not port):
        host = name
    return host.rstrip(".")


def host_allowed(name: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Whether a request addressed to ``name`` (see :func:`host_name`) may be served.

    IP addresses always may: DNS rebinding needs a name (a page on evil.example, whose name is
    re-resolved to 127.0.0.1, reaches the collector as the same origin, with ``Host: evil.example``).
    So may ``localhost`` and ``*.localhost`` (which resolve to this machine only), and the names
    in ``allowed_hosts`` (``"*"``: any).
    """
    if "*" in allowed_hosts or name in (host.lower() for host in allowed_hosts):
        return True
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def origin_allowed(origin: str | None, cors_origins: tuple[str, ...], token_configured: bool) -> bool:
    """Whether a request with this ``Origin`` header may post.

    No header (curl, servers, apps): yes. A listed origin (or ``"*"``): yes. Any other web page:
    no, unless a token is configured and no origins are listed (the token is the gate then).
    Browsers send ``Origin`` on every POST, ``sendBeacon``'s included, and a page cannot forge it.
    """
    if origin is None:
        return True
    if "*" in cors_origins or origin.lower() in (allowed.lower() for allowed in cors_origins):
        return True
    return token_configured and not cors_origins


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Collector:
    """Request handling with its settings, SDK client and metrics."""

    def __init__(
        self, settings: CollectorSettings, registry: CollectorRegistry, max_future_skew_ms: int
    ) -> None:
        self.settings = settings
        self.max_future_skew_ms = max_future_skew_ms
        self.client: FeedbackClient | None = None
        self.limits: EventLimits | None = None
        self.signer: InteractionSigner | None = None
        self.redactor: Redactor | None = None
        # Without a token the Host is always checked (DNS rebinding); with one, when names are set.
        self.check_host = settings.auth_token is None or bool(settings.allowed_hosts)
        self.limiter = (
            RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst, settings.rate_limit_clients)
            if settings.rate_limit_per_s > 0
            else None
        )
        self.requests = Counter(
            "feedbackloop_collector_requests",
            "HTTP requests to POST /v1/events by status code.",
            ["status"],
            registry=registry,
        )
        self.events = Counter(
            "feedbackloop_collector_events",
            "Events received, by outcome (accepted, invalid, too_large, forbidden, refused).",
            ["outcome"],
            registry=registry,
        )

    def authorize(self, request: Request) -> JSONResponse | None:
        """None when the request may go on; else the answer: the Host, the Origin, then the token
        (or, without one, the client's address) are checked."""
        settings = self.settings
        expected = settings.auth_token
        if self.check_host and (host := request.headers.get("host")) is not None:
            name = host_name(host)
            if not host_allowed(name, settings.allowed_hosts):
                why = (
                    "collector.allowed_hosts"
                    if settings.allowed_hosts
                    else "IP addresses, localhost and collector.allowed_hosts (no token is configured: "
                    "a web page could rebind a name of its own to this machine)"
                )
                return _error(403, f"Host {name!r} is not allowed here: only {why}")
        origin = request.headers.get("origin")
        if not origin_allowed(origin, settings.cors_origins, expected is not None):
            return _error(
                403,
                f"Origin {origin!r} is not in collector.cors_origins: web pages elsewhere may not post here",
            )
        if expected is None:
            if is_loopback(request.client.host if request.client else None):
                return None
            return _error(403, "no auth token is configured, so only clients on this machine may post")
        supplied = bearer_token(request)
        if supplied is None or not hmac.compare_digest(
            supplied.encode(), expected.get_secret_value().encode()
        ):
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        return None

    def rate_limited(self, request: Request) -> JSONResponse | None:
        """The 429 for a client over its rate (counted by address; IPv6 by /64), else None."""
        if self.limiter is None:
            return None
        wait_s = self.limiter.take(
            client_key(request.client.host if request.client else None), time.monotonic()
        )
        if wait_s <= 0:
            return None
        retry = max(1, math.ceil(wait_s))
        return _error(
            429,
            f"too many requests from this client (over collector.rate_limit_per_s = "
            f"{self.settings.rate_limit_per_s:g}/s, bursts of {self.settings.rate_limit_burst}); "
            f"retry in {retry} s",
            {"Retry-After": str(retry)},
        )

    async def read_body(self, request: Request) -> bytes | JSONResponse:
        """The body; or 413 once it exceeds ``max_body_bytes`` (checked before reading when
        declared), 408 when it has not all arrived within ``body_timeout_s``."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return _error(413, f"request body over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        return _error(413, f"request body over {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            return _error(
                408,
                f"request body not received within {self.settings.body_timeout_s:g} s "
                "(collector.body_timeout_s)",
                {"Connection": "close"},
            )
        return b"".join(chunks)

    async def post_events(self, request: Request) -> Response:
        response = await self._post_events(request)
        self.requests.labels(str(response.status_code)).inc()
        return response

    async def _post_events(self, request: Request) -> Response:
        # The rate first: refused requests (a token being guessed) count against it too.
        if (limited := self.rate_limited(request)) is not None:
            return limited
        if (denied := self.authorize(request)) is not None:
            return denied
        client = self.client
        if client is None:
            return _error(503, "the collector is starting or stopping")
        body = await self.read_body(request)
        if isinstance(body, Response):
            return body
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"body is not valid JSON: {exc}")
        if payload == [] or not isinstance(payload, dict | list):
            return _error(400, "the body must be an event object or a non-empty array of them")
        try:
            batch = parse_batch(
                payload,
                max_events=self.settings.max_events_per_request,
                limits=self.limits,
                signer=self.signer,
                redactor=self.redactor,
                max_future_skew_ms=self.max_future_skew_ms,
            )
        except BatchTooLargeError as exc:
            return _error(413, str(exc))
        events = [event for _, event in batch.events]
        try:
            # The SDK reserves the events' room in the spool under its own lock: no separate
            # "is there room?" check here, which would race with the other requests. The events
            # were redacted in parse_batch (each answered for on its own): not twice.
            client.publish_many(events, redact=False)
        except BufferFullError:
            self.events.labels("refused").inc(len(events))
            return _error(429, "the collector's buffer is full; retry shortly", {"Retry-After": "1"})
        except NotAcceptingError as exc:
            self.events.labels("refused").inc(len(events))
            return _error(503, f"not accepted: {exc}", {"Retry-After": str(RETRY_AFTER_S)})
        except EventTooLargeError as exc:  # the collector's limits are checked first; a backstop
            self.events.labels("too_large").inc(len(events))
            return _error(413, str(exc))
        except ClientClosedError:
            return _error(503, "the collector is stopping", {"Retry-After": str(RETRY_AFTER_S)})
        self.events.labels("accepted").inc(len(events))
        self.events.labels("invalid").inc(len(batch.errors) - batch.too_large - batch.forbidden)
        self.events.labels("too_large").inc(batch.too_large)
        self.events.labels("forbidden").inc(batch.forbidden)
        content = {
            "accepted": [{"index": i, "event_id": str(event.event_id)} for i, event in batch.events],
            "rejected": batch.errors,
        }
        return JSONResponse(content, status_code=batch.status)


def create_app(settings: Settings, client: FeedbackClient | None = None) -> FastAPI:
    """The collector's ASGI app. Without ``client`` it builds one from settings and closes it on shutdown."""
    registry = CollectorRegistry()
    collector = _Collector(settings.collector, registry, int(settings.pipeline.max_future_skew_s * 1000))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        own = client is None
        # A spool folder that cannot be created or written stops the start here (SpoolError
        # names it), before any event could be answered 202 and then lost.
        collector.client = FeedbackClient.from_settings(settings) if own else client
        assert collector.client is not None
        collector.limits = collector_limits(settings.collector, collector.client)
        # The SDK's own settings (which the client may have been built with): one secret, one
        # redactor, whoever posts.
        collector.signer = interaction_signer(collector.client.settings)
        collector.redactor = collector.client.redactor
        registry.register(collector.client.prometheus_collector())
        # Not client.spool_dir: it waits for the sender process; the SDK logs the slot when ready.
        log.info("collector publishing through the SDK, spool under %s", settings.producer.spool_dir)
        try:
            yield
        finally:
            active, collector.client = collector.client, None
            if own:
                # Graceful shutdown: deliver what the broker takes in time, spool the rest.
                await active.aclose()

    app = FastAPI(
        title="feedbackloop collector",
        summary="Browser and mobile feedback events into Kafka.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    if settings.collector.cors_origins:
        # CORS only lets a listed page read the answers (and send Authorization); what keeps other
        # pages out is authorize(): a simple request (sendBeacon, a text/plain form post) needs
        # no preflight, so the browser sends it whatever CORS says.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.collector.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )

    @app.post("/v1/events")
    async def post_events(request: Request) -> Response:
        return await collector.post_events(request)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        active = collector.client
        if active is None:
            return JSONResponse({"status": "unavailable", "reason": "starting or stopping"}, status_code=503)
        if not active.accepting:
            return JSONResponse(
                {"status": "unavailable", "reason": active.not_accepting_reason()},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        return JSONResponse({"status": "ok", "mode": active.mode.value})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if (denied := collector.authorize(request)) is not None:
            return denied
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def collector_limits(settings: CollectorSettings, client: FeedbackClient) -> EventLimits:
    """The size limits posted events get: the collector's caps (if set), then the SDK's own."""
    caps = [(client.settings.field_caps, "producer.field_caps")]
    if settings.field_caps is not None:
        caps.insert(0, (settings.field_caps, "collector.field_caps"))
    return EventLimits(client.settings.max_message_bytes, tuple(caps))


def server_config(settings: Settings, app: FastAPI, *, host: str, port: int) -> uvicorn.Config:
    """The uvicorn configuration the collector is served with: its timeouts and limits.

    * a request's line and headers must arrive within ``collector.header_timeout_s`` of the
      connection opening (or of a kept-alive request's first byte), else 408 and closed
      (:mod:`producers.http_guard`); its body within ``collector.body_timeout_s`` (the app);
    * an idle kept-alive connection is closed after ``collector.keep_alive_timeout_s``;
    * beyond ``collector.max_connections`` connections (or requests in progress), requests get 503
      at once;
    * ``X-Forwarded-For`` is believed from ``collector.trusted_proxies`` only (by default a proxy
      on this machine), so a proxied remote client never passes for a local one.
    """
    collector = settings.collector
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=header_deadline_protocol(collector.header_timeout_s),
        ws="none",
        proxy_headers=True,
        forwarded_allow_ips=list(collector.trusted_proxies),
        timeout_keep_alive=collector.keep_alive_timeout_s,
        limit_concurrency=collector.max_connections,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the collector with uvicorn until SIGINT/SIGTERM; shutdown flushes or spools every event.

    Exits at once, with a message naming the folder, when the spool folder cannot be created or
    written: a collector that answered 202 for events it cannot keep would be worse than none.
    """
    try:
        check_spool_root(settings.producer.spool_dir)
    except SpoolError as exc:
        log.error("feedbackloop collector cannot start: %s", exc)
        raise SystemExit(f"feedbackloop collector cannot start: {exc}") from exc
    uvicorn.Server(server_config(settings, create_app(settings), host=host, port=port)).run()
