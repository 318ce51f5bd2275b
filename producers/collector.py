"""The HTTP collector: browsers and mobile apps POST events; we validate and publish them via the SDK.

``POST /v1/events`` takes one event object or an array of them, each with ``"type"`` set to
``"interaction"``, ``"feedback"``, ``"support_ticket"`` next to the contract's fields. 202 when every event
was accepted (buffered or spooled), 400 with a reason per invalid event (the valid ones in the
same request are accepted all the same), 413 for a body or batch over the limits or an event over
a field cap or the Kafka message limit (named, per event; the others are accepted), 429 when the
SDK's buffer is full, 503 with ``Retry-After`` whenever the SDK could not keep the events (spool
bound reached, spool failing to write, sender process not running), 401/403 for failed auth.
``GET /healthz`` answers 200 while events can be accepted; ``GET /metrics`` serves Prometheus
metrics. A spool folder that cannot be created or written stops the collector at start.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
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
from producers.limits import EventLimits
from producers.sdk import BufferFullError, ClientClosedError, Event, FeedbackClient
from producers.sender.spool import SpoolError, check_spool_root
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


class BatchTooLargeError(ValueError):
    """More events in one request than ``max_events_per_request``."""


@dataclass
class ParsedBatch:
    """Valid events with their index in the request, and the reasons for the invalid ones
    (``too_large`` of them over a size limit)."""

    events: list[tuple[int, Event]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    too_large: int = 0


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
    fields = {k: v for k, v in obj.items() if k != "type"}
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
    max_future_skew_ms: int | None = None,
) -> ParsedBatch:
    """Validate a request body already decoded from JSON: one event object or an array of them.

    With ``limits``, an event over a field cap or the message limit is refused too, naming the
    event and the field (the SDK would refuse it; better to say so per event than for the batch).
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
    """The token of ``Authorization: Bearer ...``, else of the ``access_token`` query parameter.

    The query parameter (RFC 6750 section 2.3) is for ``navigator.sendBeacon``, which cannot set
    headers.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.query_params.get("access_token")


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
        self.requests = Counter(
            "feedbackloop_collector_requests",
            "HTTP requests to POST /v1/events by status code.",
            ["status"],
            registry=registry,
        )
        self.events = Counter(
            "feedbackloop_collector_events",
            "Events received, by outcome (accepted, invalid, too_large, refused).",
            ["outcome"],
            registry=registry,
        )

    def authorize(self, request: Request) -> JSONResponse | None:
        expected = self.settings.auth_token
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

    async def read_body(self, request: Request) -> bytes | None:
        """The body, or None once it exceeds ``max_body_bytes`` (checked before reading when declared)."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def post_events(self, request: Request) -> Response:
        response = await self._post_events(request)
        self.requests.labels(str(response.status_code)).inc()
        return response

    async def _post_events(self, request: Request) -> Response:
        if (denied := self.authorize(request)) is not None:
            return denied
        client = self.client
        if client is None:
            return _error(503, "the collector is starting or stopping")
        body = await self.read_body(request)
        if body is None:
            return _error(413, f"request body over {self.settings.max_body_bytes} bytes")
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
                max_future_skew_ms=self.max_future_skew_ms,
            )
        except BatchTooLargeError as exc:
            return _error(413, str(exc))
        events = [event for _, event in batch.events]
        try:
            # The SDK reserves the events' room in the spool under its own lock: no separate
            # "is there room?" check here, which would race with the other requests.
            client.publish_many(events)
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
        self.events.labels("invalid").inc(len(batch.errors) - batch.too_large)
        self.events.labels("too_large").inc(batch.too_large)
        content = {
            "accepted": [{"index": i, "event_id": str(event.event_id)} for i, event in batch.events],
            "rejected": batch.errors,
        }
        status = 413 if batch.too_large else 400 if batch.errors else 202
        return JSONResponse(content, status_code=status)


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
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        # X-Forwarded-For is honoured from a proxy on this machine only, so a proxied remote
        # client never passes for a local one.
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
