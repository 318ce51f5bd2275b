"""What a message that could not be used becomes: a dead letter with its original bytes and the reason."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import SCHEMA_VERSION, Timestamp


class DeadLetter(BaseModel):
    """A message that failed decoding, validation or processing, kept byte for byte."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this schema.")
    source_topic: str = Field(description="Topic the message was read from.")
    partition: int = Field(description="Partition it was read from.")
    offset: int = Field(description="Offset it was read from.")
    key_b64: str | None = Field(None, description="The original key, base64.")
    value_b64: str | None = Field(None, description="The original value bytes, base64.")
    value_text: str | None = Field(None, description="The original value as text, when it was valid UTF-8.")
    reason: str = Field(description="Human-readable cause, e.g. the validation errors.")
    error_type: str = Field(description="Machine-readable cause: decode_error, validation_error, ...")
    stage: str = Field(description="Which stage gave up on it: processor, sink, ...")
    dead_lettered_at: Timestamp = Field(description="When it was dead-lettered.")

    @classmethod
    def of(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        error_type: str,
        stage: str,
    ) -> DeadLetter:
        """Build a dead letter from a raw message; never fails, whatever the bytes are."""
        text: str | None
        try:
            text = value.decode("utf-8") if value is not None else None
        except UnicodeDecodeError:
            text = None
        return cls(
            source_topic=topic,
            partition=partition,
            offset=offset,
            key_b64=base64.b64encode(key).decode() if key is not None else None,
            value_b64=base64.b64encode(value).decode() if value is not None else None,
            value_text=text,
            reason=reason,
            error_type=error_type,
            stage=stage,
            dead_lettered_at=datetime.now(UTC),
        )

    def original_value(self) -> bytes | None:
        """The original value bytes."""
        return base64.b64decode(self.value_b64) if self.value_b64 is not None else None
