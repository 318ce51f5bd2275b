"""Redaction at the edge: the detectors, the placeholders, the marks, and that edits still measure."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr, ValidationError

from infra.settings import RedactionSettings
from producers.redaction import BUILT_IN, Redactor, luhn_valid
from schemas import FeedbackEvent, FeedbackType, InteractionEvent
from stream_processors.signals.distance import word_distance
from stream_processors.signals.edits import edit_operations

ALL = Redactor(BUILT_IN)


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        # e-mail addresses
        ("mail bob.smith+x@Example.co.uk. ok", "mail [email]. ok"),
        ("<ann@example.com>, zoë@exämple.de", "<[email]>, [email]"),
        ("user@localhost and @mentions", "user@localhost and @mentions"),  # no dot: not an address
        # card numbers: Luhn-checked, 13-19 digits in whole groups, starting 2-6
        ("card 4111 1111 1111 1111 exp 2031", "card [card] exp 2031"),
        ("4111-1111-1111-1111", "[card]"),
        ("4111111111111111", "[card]"),
        ("Amex 3782 822463 10005", "Amex [card]"),
        ("4111 1111 1111 1112", "4111 1111 1111 1112"),  # fails Luhn
        ("1999 2000 2001 2002", "1999 2000 2001 2002"),  # years, and no network starts with 1
        ("id 12345678901234567890123", "id 12345678901234567890123"),  # longer than any card
        # IP addresses
        ("from 10.1.2.3.", "from [ip]."),
        ("2001:db8::1 and ::1", "[ip] and [ip]"),
        ("::ffff:10.0.0.1", "[ip]"),
        ("999.1.1.1 and 12:30:45 and std::vector", "999.1.1.1 and 12:30:45 and std::vector"),
        # phone numbers
        ("call +1 (555) 123-4567 now", "call [phone] now"),
        ("+4915112345678", "[phone]"),
        ("tel:+44 20 7946 0958", "tel:[phone]"),
        ("555-123-4567 or 555-1234", "[phone] or [phone]"),
        ("(555) 123 4567", "[phone]"),
        ("on 2024-01-15, pi 3.14159265, order 5551234567", "on 2024-01-15, pi 3.14159265, order 5551234567"),
        ("In 2023 we sold 1,200 units for $35,000.", "In 2023 we sold 1,200 units for $35,000."),
    ],
)
def test_the_built_in_detectors(text: str, redacted: str) -> None:
    assert ALL.redact(text)[0] == redacted


def test_the_kinds_found_are_reported_sorted_and_nothing_found_returns_the_text_itself() -> None:
    text = "ann@example.com +1 555 123 4567"
    assert ALL.redact(text) == ("[email] [phone]", ("email", "phone"))
    plain = "Summarise the attached notes in three bullet points."
    out, kinds = ALL.redact(plain)
    assert out is plain
    assert kinds == ()


def test_only_the_switched_on_detectors_run() -> None:
    only_email = Redactor(["email"])
    assert only_email.redact("ann@example.com 4111 1111 1111 1111") == (
        "[email] 4111 1111 1111 1111",
        ("email",),
    )
    with pytest.raises(ValueError, match="unknown redaction detectors"):
        Redactor(["ssn"])
    assert Redactor.from_settings(RedactionSettings()) is None


def test_custom_patterns_win_overlaps_and_name_their_placeholder() -> None:
    redactor = Redactor(["phone"], {"employee": r"EMP-\d{3}-\d{4}"})
    assert redactor.redact("ask EMP-555-1234 or 555-1234") == (
        "ask [employee] or [phone]",
        ("employee", "phone"),
    )


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ({"Bad Name": "x"}, "must match"),
        ({"email": "x"}, "built-in detector"),
        ({"ticket": "("}, "not a regular expression"),
        ({"anything": "a*"}, "matches the empty string"),
    ],
)
def test_bad_patterns_are_settings_errors(patterns: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RedactionSettings(patterns=patterns)


def test_a_short_key_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="at least 16"):
        RedactionSettings(detectors=("email",), key=SecretStr("short"))


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


# -- what edits see --------------------------------------------------------------------------------


def test_a_redacted_value_is_one_word_and_the_same_in_response_and_correction() -> None:
    response = "Sure, I will write to ann.lee@example.com about the invoice."
    corrected = "Sure, I will write to ann.lee@example.com today about the invoice."
    r, c = ALL.redact(response)[0], ALL.redact(corrected)[0]
    assert r == "Sure, I will write to [email] about the invoice."
    # The edit is the inserted word, exactly as on the raw text: redaction adds no change.
    assert word_distance(r, c) == word_distance(response, corrected) == 1
    raw_ops = edit_operations(response, corrected).operations
    ops = edit_operations(r, c).operations
    assert [(op.kind, op.original, op.corrected) for op in ops] == [("insert", "", "today")]
    assert [(op.kind, op.original, op.corrected) for op in raw_ops] == [("insert", "", "today")]


def test_with_a_key_the_same_value_gives_the_same_placeholder_and_another_value_another() -> None:
    keyed = Redactor(BUILT_IN, key=b"a-redaction-key-16+")
    first = keyed.redact("Call 555-123-4567 or mail Ann@Example.com")[0]
    again = keyed.redact("call (555) 123 4567 or mail ann@example.com")[0]  # same values, other forms
    other = keyed.redact("Call 555-123-9999 or mail bob@example.com")[0]
    words = first.split()
    assert words[1].startswith("[phone:")
    assert words[4].startswith("[email:")
    assert again.split()[1] == words[1]
    assert again.split()[-1] == words[4]
    assert other.split()[1] != words[1]
    assert other.split()[-1] != words[4]
    # A correction of the phone number or the address is still an edit.
    ops = edit_operations(first, other).operations
    assert len(ops) == 2
    assert all(op.kind == "replace" for op in ops)
    another_key = Redactor(BUILT_IN, key=b"another-key-of-16-chars")
    assert another_key.redact("mail ann@example.com")[0] != keyed.redact("mail ann@example.com")[0]


# -- events and their marks ------------------------------------------------------------------------


def _interaction(**overrides: object) -> InteractionEvent:
    fields: dict[str, object] = {
        "event_id": uuid.uuid4(),
        "interaction_id": uuid.uuid4(),
        "user_id": "u",
        "session_id": "s",
        "created_at": datetime.now(UTC),
        "prompt": "Email ann@example.com",
        "prompt_version": "v1",
        "model": "m",
        "response": "Done.",
        "response_time_ms": 5,
        "metadata": {"client_ip": "203.0.113.9", "plan": "pro"},
        **overrides,
    }
    return InteractionEvent.model_validate(fields)


def test_an_interaction_marks_each_redacted_field_in_metadata() -> None:
    event = _interaction()
    redacted = ALL.redact_event(event)
    assert isinstance(redacted, InteractionEvent)
    assert redacted.prompt == "Email [email]"
    assert redacted.response == "Done."
    assert redacted.metadata == {
        "client_ip": "[ip]",
        "plan": "pro",
        "redacted.prompt": "email",
        "redacted.metadata.client_ip": "ip",
    }
    assert event.metadata == {"client_ip": "203.0.113.9", "plan": "pro"}  # the original is untouched
    # Redacting again changes nothing and keeps the marks.
    assert ALL.redact_event(redacted) is redacted


def test_ids_and_other_fields_are_not_redacted() -> None:
    event = _interaction(user_id="ann@example.com", prompt="hi", metadata={})
    assert ALL.redact_event(event) is event


def test_feedback_is_marked_by_its_placeholders() -> None:
    event = FeedbackEvent(
        event_id=uuid.uuid4(),
        interaction_id=uuid.uuid4(),
        user_id="u",
        session_id="s",
        created_at=datetime.now(UTC),
        feedback_type=FeedbackType.EDIT,
        corrected_output="Write to ann@example.com",
        comment="my card 4111 1111 1111 1111 was shown",
    )
    redacted = ALL.redact_event(event)
    assert isinstance(redacted, FeedbackEvent)
    assert (redacted.corrected_output, redacted.comment) == ("Write to [email]", "my card [card] was shown")


def test_hostile_text_costs_linear_time() -> None:
    """A prompt is typed by a user: no pattern may backtrack quadratically on it."""
    for text in (
        "x" * 200_000 + " a@b.com",  # a long word, then an "@"
        "a:" * 100_000 + "g",  # colons and hex letters
        "1 " * 100_000,  # digit groups
        "1." * 100_000,
        "a@b.co " * 20_000,  # many findings
    ):
        started = time.perf_counter()
        ALL.redact(text)
        assert time.perf_counter() - started < 2.0, text[:20]
