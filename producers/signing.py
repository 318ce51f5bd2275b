"""Signed interaction references: proof that the app server vouched for an interaction's ids.

A browser can post any ``interaction_id``, ``user_id`` and ``session_id`` it likes. With a secret
configured (``producer.interaction_secret``), the app server hands the page an *interaction
token* next to the ids (``FeedbackClient.interaction_token``), and the collector takes an event
only with a token that matches its ids. Pure: no I/O, no settings object.

Token format, ``v1.`` + base64url (no padding) of HMAC-SHA256(secret, message) where message is
``b"feedbackloop/interaction/v1\\0"``, the 16 bytes of the interaction id, then the UTF-8 user id
and session id, each preceded by its length as 4 bytes big-endian (lengths make the encoding
unambiguous: no choice of ids can give another triple's message).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable
from typing import Final
from uuid import UUID

VERSION: Final = "v1"
_DOMAIN: Final = b"feedbackloop/interaction/v1\0"
_PREFIX: Final = VERSION + "."
MISSING: Final = (
    "missing: with producer.interaction_secret set, every event needs the interaction_token the app "
    "server issued for its interaction"
)


def _message(interaction_id: UUID, user_id: str, session_id: str) -> bytes:
    user, session = user_id.encode(), session_id.encode()
    return b"".join(
        (
            _DOMAIN,
            interaction_id.bytes,
            len(user).to_bytes(4, "big"),
            user,
            len(session).to_bytes(4, "big"),
            session,
        )
    )


class InteractionSigner:
    """Signs with ``secret``; verifies against it and every one of ``previous`` (key rotation)."""

    def __init__(self, secret: bytes, previous: Iterable[bytes] = ()) -> None:
        if not secret:
            raise ValueError("an interaction secret cannot be empty")
        self._secret = secret
        self._keys = (secret, *(key for key in previous if key))

    def token(self, interaction_id: UUID, user_id: str, session_id: str) -> str:
        """The token of these ids (``v1.`` and 43 base64url characters)."""
        mac = hmac.digest(self._secret, _message(interaction_id, user_id, session_id), "sha256")
        return _PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def check(self, token: object, interaction_id: UUID, user_id: str, session_id: str) -> str | None:
        """None when ``token`` is valid for these ids under any accepted secret, else why not.

        The comparison is constant-time (``hmac.compare_digest``) for every accepted secret, so
        the answer's timing does not tell how much of a guess was right.
        """
        if token is None or token == "":
            return MISSING
        if not isinstance(token, str) or not token.startswith(_PREFIX):
            return f"does not match its interaction, user and session (not a {VERSION} token)"
        body = token[len(_PREFIX) :]
        try:
            supplied = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            supplied = b""
        message = _message(interaction_id, user_id, session_id)
        valid = False
        for key in self._keys:  # every key, always: no early exit whose timing tells which matched
            valid |= hmac.compare_digest(hmac.digest(key, message, "sha256"), supplied)
        if valid:
            return None
        return "does not match its interaction, user and session"


__all__ = ["MISSING", "VERSION", "InteractionSigner"]
