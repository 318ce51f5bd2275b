"""Word-level operations of one edit (topic ``ai.edits.operations.v1``, table ``edit_operations``).

The stream processors emit one :class:`EditOperations` per edit feedback event, once the edit has
met its interaction. Operations are derived deterministically from the response and the
corrected text, so a replayed edit yields the same message and the table folds it by event id.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import SCHEMA_VERSION, Identifier, Label, Timestamp
from schemas.signals import EditSize

EditOpKind = Literal["replace", "insert", "delete"]
EditPosition = Literal["opening", "middle", "closing"]
EditUnit = Literal["words", "sentence", "paragraph"]


class EditOperation(BaseModel):
    """One changed stretch of the response."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: EditOpKind = Field(description="replace | insert | delete (word level).")
    position: EditPosition = Field(
        description="opening: starts the response or lies in its first fifth; closing: ends it or lies "
        "in its last fifth; else middle."
    )
    unit: EditUnit = Field(
        description="paragraph: whole paragraphs; sentence: whole sentences; else words (of the "
        "response for replace/delete, of the corrected text for insert)."
    )
    start: int = Field(ge=0, description="Index of its first word in the response (insert: the word after).")
    original_words: int = Field(ge=0, description="Words of the response it removes or replaces.")
    corrected_words: int = Field(ge=0, description="Words of the corrected text it puts in.")
    original: str = Field(description="The response's fragment (at most 300 characters).")
    corrected: str = Field(description="The corrected fragment (at most 300 characters).")
    original_norm: str = Field(
        description="Normalized original fragment: lower case, single spaces, <num>, <name>."
    )
    corrected_norm: str = Field(description="Normalized corrected fragment.")


class EditOperations(BaseModel):
    """Every word-level operation of one edit feedback event, with the interaction's attributes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this schema.")
    event_id: UUID = Field(description="The edit feedback event's id.")
    interaction_id: UUID = Field(description="The interaction whose response was edited.")
    user_id: Identifier = Field(description="Who edited.")
    session_id: Identifier = Field(description="The session; also the Kafka message key.")
    created_at: Timestamp = Field(description="When the edit was made.")
    prompt_version: Label = Field(description="The interaction's prompt version.")
    model: Label = Field(description="The interaction's model.")
    input_category: Label | None = Field(description="The interaction's input category.")
    response_words: int = Field(ge=0, description="Words in the response.")
    corrected_words: int = Field(ge=0, description="Words in the corrected text.")
    edit_distance: int = Field(ge=0, description="Levenshtein distance in characters.")
    edit_distance_norm: float = Field(ge=0, description="edit_distance / max(len(response), len(edit)).")
    edit_size: EditSize = Field(description="small | medium | large, by edit_distance_norm (settings).")
    operations: list[EditOperation] = Field(description="The operations, in response order (at most 100).")
    truncated: bool = Field(description="True when the edit had more than 100 operations.")
