"""The bench's own measurements that need no broker: the compute ceiling and the state size."""

from __future__ import annotations

from dataclasses import dataclass

from feedbackloop.bench import compute_ceiling, deep_size, prepare, state_bytes_per_open_interaction
from infra.settings import Settings


@dataclass
class _Node:
    text: str
    children: list[_Node]


def test_deep_size_counts_each_object_once_through_dicts_lists_and_slots() -> None:
    shared = "x" * 10_000
    tree = _Node(shared, [_Node(shared, []), _Node("y", [])])
    assert 10_000 < deep_size(tree) < 20_000  # the shared text counted once
    assert deep_size({"a": [shared, shared]}) < 11_000


def test_state_per_open_interaction_holds_at_least_the_texts_it_keeps() -> None:
    prepared = prepare(600)
    figures = state_bytes_per_open_interaction(prepared, Settings())
    assert figures["records"] > 0
    # An open record keeps its interaction's prompt and response (hundreds of characters here).
    assert 500 < figures["state_bytes_per_open_interaction"] < 50_000
    assert compute_ceiling(prepared, Settings(), runs=1) > 0
