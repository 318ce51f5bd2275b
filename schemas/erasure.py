"""A request to forget one user: recorded on a compacted topic, honoured by every stage, for good."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from schemas.events import SCHEMA_VERSION, Identifier, Timestamp


class ErasureRequest(BaseModel):
    """One user to forget (``feedbackloop forget``), on ``ai.erasures.v1`` with key = ``user_id``.

    The topic is compacted and never gets a tombstone: it is the lasting record that the user was
    erased, which the processors and the sink read whole when they start, so a replay of older
    events never brings the user back. It holds the user id and nothing else about the user.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this schema.")
    user_id: Identifier = Field(
        description="The user to forget, as the application identifies them (the events' user_id)."
    )
    requested_at: Timestamp = Field(description="When the erasure was requested, RFC 3339 with zone.")
    requested_by: str = Field(
        "", max_length=256, description="Who asked for it (an operator or a system), for the audit trail."
    )

    @classmethod
    def now(cls, user_id: str, requested_by: str = "") -> ErasureRequest:
        """A request to forget ``user_id``, made now."""
        return cls(user_id=user_id, requested_at=datetime.now(UTC), requested_by=requested_by)


def named_user(value: bytes | str | None) -> str | None:
    """The ``user_id`` a raw message names, when it is a JSON object with a string one (else None).

    For what is kept of a message that failed validation (a dead letter): it still names its user,
    and an erased user's copy must not be kept either."""
    if not value:
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    user = parsed.get("user_id") if isinstance(parsed, dict) else None
    return user if isinstance(user, str) else None
