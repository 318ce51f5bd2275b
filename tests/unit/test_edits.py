"""Word-level edit operations: alignment, position, unit, normalization, and their way to a row."""

from __future__ import annotations

import uuid

import orjson
import pytest

from infra.settings import PipelineSettings
from schemas import EditOperations, topics
from sinks.rows import TABLES
from stream_processors.signals.edits import (
    MAX_FRAGMENT_CHARS,
    MAX_OPERATIONS,
    EditOp,
    edit_operations,
    is_trivial,
    normalize_pair,
    position_of,
    tokenize,
    unit_of,
)
from stream_processors.signals.outcome import Feedback, Interaction
from stream_processors.state import Emit, PartitionState

LETTER = (
    "Dear Sir/Madam,\n\n"
    "Thank you for your message about invoice 1234. We will reply within 3 days.\n\n"
    "In summary, we value you. Let us know if you have more questions."
)


def ops(original: str, corrected: str) -> list[EditOp]:
    return list(edit_operations(original, corrected).operations)


def test_identical_texts_have_no_operations() -> None:
    diff = edit_operations(LETTER, LETTER)
    assert diff.operations == ()
    assert diff.response_words == diff.corrected_words == 29
    assert not diff.truncated


def test_whitespace_only_changes_have_no_operations() -> None:
    assert ops("Hello  there,\nfriend.", "Hello there, friend.") == []


def test_a_replaced_greeting_is_one_replacement_at_the_opening_normalized_to_a_placeholder() -> None:
    [op] = ops(LETTER, LETTER.replace("Dear Sir/Madam,", "Hi Anna,"))
    assert (op.kind, op.position, op.unit, op.start) == ("replace", "opening", "paragraph", 0)
    assert (op.original, op.corrected) == ("Dear Sir/Madam,", "Hi Anna,")
    assert (op.original_norm, op.corrected_norm) == ("dear sir/madam", "hi <name>")
    assert (op.original_words, op.corrected_words) == (2, 2)


@pytest.mark.parametrize(
    "greeting", ["Hi Anna,", "hi  Ben,", "Hi [Name],", "HI {name}", "Hi <NAME> ,", "Hi Chloe!"]
)
def test_trivial_differences_do_not_split_a_pattern(greeting: str) -> None:
    [op] = ops(LETTER, LETTER.replace("Dear Sir/Madam,", greeting))
    assert (op.original_norm, op.corrected_norm) == ("dear sir/madam", "hi <name>")


def test_a_deleted_closing_paragraph_is_a_closing_paragraph_deletion() -> None:
    corrected = LETTER[: LETTER.index("\n\nIn summary")]
    [op] = ops(LETTER, corrected)
    assert (op.kind, op.position, op.unit) == ("delete", "closing", "paragraph")
    assert op.original == "In summary, we value you. Let us know if you have more questions."
    assert op.corrected == op.corrected_norm == ""
    assert op.original_words == 13


def test_a_deleted_middle_sentence_is_a_middle_sentence_deletion() -> None:
    text = "One two three. Four five six. Seven eight nine. Ten eleven twelve. End of it."
    [op] = ops(text, text.replace("Seven eight nine. ", ""))
    assert (op.kind, op.position, op.unit) == ("delete", "middle", "sentence")


def test_an_insertion_takes_its_unit_from_the_inserted_words() -> None:
    text = "One two three. Four five six."
    [op] = ops(text, text + " Thanks a lot.")
    assert (op.kind, op.position, op.unit, op.start) == ("insert", "closing", "sentence", 6)
    assert op.corrected == "Thanks a lot."


def test_numbers_become_placeholders_unless_the_number_itself_was_corrected() -> None:
    [op] = ops("It costs 5 dollars today.", "It costs 7 dollars today.")
    assert (op.original_norm, op.corrected_norm) == ("5", "7")  # the correction stays visible
    [op] = ops("Call 555 now.", "Please call 555 now.")
    assert op.kind == "replace"
    assert (op.original_norm, op.corrected_norm) == ("call", "please call")


def test_a_corrected_name_keeps_the_names() -> None:
    [op] = ops("The capital of France is Lyon.", "The capital of France is Paris.")
    assert (op.original_norm, op.corrected_norm) == ("lyon", "paris")
    assert not is_trivial(op)


def test_a_case_only_change_is_trivial() -> None:
    changes = ops("hello world. this is fine.", "Hello world. This is fine.")
    assert len(changes) == 2
    assert all(is_trivial(op) for op in changes)


def test_sentence_initial_capitals_are_words_not_names() -> None:
    a, b = tokenize("Thanks. Maria said hi to Maria."), tokenize("x")
    assert [t.starts_sentence for t in a] == [True, True, False, False, False, False]
    assert normalize_pair(a, b)[0] == "thanks. maria said hi to <name>"


def test_tokens_know_paragraphs_and_sentences() -> None:
    tokens = tokenize("Title\n\nFirst one. Second\n \nLast")
    assert [t.paragraph for t in tokens] == [0, 1, 1, 1, 2]
    assert [t.ends_sentence for t in tokens] == [True, False, True, True, True]
    assert unit_of(tokens, 0, 1) == "paragraph"
    assert unit_of(tokens, 1, 3) == "sentence"
    assert unit_of(tokens, 2, 4) == "words"


@pytest.mark.parametrize(
    ("start", "end", "length", "position"),
    [
        (0, 2, 10, "opening"),
        (8, 10, 10, "closing"),
        (0, 10, 10, "middle"),  # the whole text
        (4, 6, 10, "middle"),
        (1, 2, 10, "opening"),
        (9, 9, 10, "closing"),  # an insertion point near the end
        (10, 10, 10, "closing"),  # appended
        (0, 0, 10, "opening"),  # prepended
        (0, 0, 0, "middle"),
    ],
)
def test_positions(start: int, end: int, length: int, position: str) -> None:
    assert position_of(start, end, length) == position


def test_long_fragments_are_cut_and_many_operations_capped() -> None:
    long_words = " ".join(f"w{i}" for i in range(400))
    [op] = ops(long_words, "short")
    assert len(op.original) == MAX_FRAGMENT_CHARS
    assert op.original.endswith("…")
    original = " ".join(f"keep{i} old{i}" for i in range(MAX_OPERATIONS + 20))
    corrected = " ".join(f"keep{i} new{i}" for i in range(MAX_OPERATIONS + 20))
    diff = edit_operations(original, corrected)
    assert len(diff.operations) == MAX_OPERATIONS
    assert diff.truncated


def test_operations_are_a_pure_function_of_the_texts() -> None:
    corrected = LETTER.replace("Dear Sir/Madam,", "Hi Anna,").replace("3 days", "two days")
    assert edit_operations(LETTER, corrected) == edit_operations(LETTER, corrected)


# ------------------------------------------------------------------ the state emits them, the sink maps them

T0 = 1_795_000_000_000


def _interaction() -> Interaction:
    return Interaction(
        str(uuid.uuid4()), str(uuid.uuid4()), "u1", "s1", T0, "Write to a customer", "v1.0", "m", LETTER, 300,
        None, "writing", None, None,
    )  # fmt: skip


def _edit(x: Interaction, corrected: str) -> Feedback:
    return Feedback(
        str(uuid.uuid4()), x.interaction_id, "u1", "s1", T0 + 5000, "edit", corrected, None, None, None
    )


@pytest.mark.parametrize("feedback_first", [False, True])
def test_every_edit_is_joined_and_emits_its_operations_once(feedback_first: bool) -> None:
    state = PartitionState(0, PipelineSettings())
    x = _interaction()
    edit = _edit(x, LETTER.replace("Dear Sir/Madam,", "Hi Anna,"))
    if feedback_first:
        assert state.apply_feedback(edit) == []
        emitted = state.apply_interaction(x)
    else:
        state.apply_interaction(x)
        emitted = state.apply_feedback(edit)
    assert [e.kind for e in emitted if isinstance(e, Emit)] == ["joined", "edit_ops"]
    assert state.apply_feedback(edit) == []  # a duplicate emits nothing
    value = emitted[1].value  # type: ignore[union-attr]
    model = EditOperations.model_validate_json(orjson.dumps(value))
    assert str(model.event_id) == edit.event_id
    assert model.input_category == "writing"
    assert model.edit_size == "small"
    assert [op.corrected_norm for op in model.operations] == ["hi <name>"]


def test_other_feedback_emits_no_operations() -> None:
    state = PartitionState(0, PipelineSettings())
    x = _interaction()
    state.apply_interaction(x)
    thumbs = Feedback(
        str(uuid.uuid4()), x.interaction_id, "u1", "s1", T0 + 1, "thumbs_up", None, None, None, None
    )
    assert [e.kind for e in state.apply_feedback(thumbs) if isinstance(e, Emit)] == ["joined"]


def test_the_sink_maps_an_edit_to_one_row_with_parallel_operation_arrays() -> None:
    state = PartitionState(0, PipelineSettings())
    x = _interaction()
    state.apply_interaction(x)
    corrected = LETTER.replace("Dear Sir/Madam,", "Hi Anna,").replace(
        " Let us know if you have more questions.", ""
    )
    [_, emit] = state.apply_feedback(_edit(x, corrected))
    assert isinstance(emit, Emit)
    spec = next(s for s in TABLES if s.topic == topics.EDIT_OPERATIONS)
    row = dict(zip(spec.columns, spec.to_row(orjson.dumps(emit.value)), strict=True))
    assert spec.table == "edit_operations"
    assert row["op_kind"] == ["replace", "delete"]
    assert row["op_position"] == ["opening", "closing"]
    assert row["op_unit"] == ["paragraph", "sentence"]
    assert row["prompt_version"] == "v1.0"


def test_an_ambiguous_deletion_slides_to_whole_sentences() -> None:
    # LCS may draw this as "change ... minutes. The" removed; it is the sentence "The change ... minutes."
    text = "Intro here. The change takes effect soon. The history page shows it. Done."
    [op] = ops(text, text.replace("The change takes effect soon. ", ""))
    assert (op.kind, op.unit, op.original) == ("delete", "sentence", "The change takes effect soon.")
    [op] = ops(text.replace("The change takes effect soon. ", ""), text)
    assert (op.kind, op.unit, op.corrected) == ("insert", "sentence", "The change takes effect soon.")
