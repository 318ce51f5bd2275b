"""Fast paths for the per-event costs of the SDK on the caller's thread: ids, "now" and the JSON.

They give exactly what the contract gives (a random version-4 UUID; a timestamp at the contract's
millisecond precision; the bytes of ``event.model_dump_json()``), several times faster; unit
tests hold them to that.
"""

from __future__ import annotations

import functools
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Final
from uuid import UUID, SafeUUID

import orjson
from pydantic import BaseModel, PlainSerializer, WrapSerializer

from schemas import format_ms, to_epoch_ms
from schemas import format_timestamp as contract_format_timestamp

_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_V4_SET = (0x4000 << 64) | (0x8000 << 48)


_new_object = object.__new__
_set_attribute = object.__setattr__
_random_bits = random.getrandbits


def new_id() -> UUID:
    """A random version-4 UUID without a system call.

    ``uuid.uuid4()`` reads ``os.urandom`` on every call (a syscall that also lets other threads
    take the GIL mid-call). Event ids must be unique, not unpredictable, so 122 bits of the
    ``random`` module (seeded from ``os.urandom``, re-seeded in forked children) are enough.
    The UUID is built as ``UUID(int=...)`` would build it, without that constructor's argument
    checks (a third of the cost of an id).
    """
    uuid = _new_object(UUID)
    _set_attribute(uuid, "int", _random_bits(128) & _V4_CLEAR | _V4_SET)
    _set_attribute(uuid, "is_safe", SafeUUID.unknown)
    return uuid


def format_timestamp(value: datetime) -> str:
    """``schemas.format_timestamp`` (RFC 3339, UTC, ms, ``Z``): the contract's own formatter."""
    return format_ms(to_epoch_ms(value))


_MILLIS_DELTA: Final = tuple(timedelta(milliseconds=ms) for ms in range(1000))
_MILLIS_TEXT: Final = tuple(f"{ms:03d}Z" for ms in range(1000))
# (second since the epoch, that second as a datetime, its text up to the "."): replaced whole.
_this_second: tuple[int, datetime, str] = (-1, datetime.fromtimestamp(0, UTC), "")


def now_ms() -> tuple[datetime, str]:
    """Now at millisecond precision (what the contract keeps of ``created_at``) and its text.

    The same as ``datetime.now(UTC)`` truncated to milliseconds and ``format_timestamp`` of it
    (a unit test holds them to that), in a fraction of the time: the datetime and the text of
    the current second are kept, the millisecond is added from tables.
    """
    global _this_second
    second, millis = divmod(time.time_ns() // 1_000_000, 1000)
    cached = _this_second
    if cached[0] != second:
        start = datetime.fromtimestamp(second, UTC)
        cached = _this_second = (second, start, format_ms(second * 1000)[:-4])
    return cached[1] + _MILLIS_DELTA[millis], cached[2] + _MILLIS_TEXT[millis]


@functools.cache
def _timestamp_fields(model: type[BaseModel]) -> tuple[str, ...] | None:
    """The fields serialized by the contract's timestamp serializer; None if any other custom
    serializer is involved (then only pydantic itself knows the bytes)."""
    decorators = model.__pydantic_decorators__
    if decorators.field_serializers or decorators.model_serializers:
        return None
    names = []
    for name, field in model.model_fields.items():
        for meta in field.metadata:
            if isinstance(meta, PlainSerializer | WrapSerializer):
                if meta.func is not contract_format_timestamp:
                    return None
                names.append(name)
    return tuple(names)


_CREATED_AT_ONLY = ("created_at",)


def event_json(event: BaseModel, created_at_text: str | None = None) -> bytes:
    """The same bytes as ``event.model_dump_json().encode()`` for the contract's events.

    The contract's only custom serializer is the timestamp's; every other field is a type
    orjson writes the way pydantic does (str, int, UUID, str enums, None, dict[str, str]).
    A unit test holds the two to byte equality. ``created_at_text`` is the contract's text of
    ``event.created_at`` when the caller has it already (see :func:`now_ms`).
    """
    timestamps = _timestamp_fields(type(event))
    if timestamps is None:
        return event.model_dump_json().encode()
    fields = event.__dict__
    if timestamps == _CREATED_AT_ONLY:  # every contract event: one dict, one dumps
        text = created_at_text or format_timestamp(fields["created_at"])
        return orjson.dumps({**fields, "created_at": text})
    fields = dict(fields)
    for name in timestamps:
        if (value := fields[name]) is not None:
            fields[name] = format_timestamp(value)
    return orjson.dumps(fields)
