"""The sink's stall check: which owned partitions have messages past the group's committed offset."""

from __future__ import annotations

from infra.kafka import GroupLag
from infra.settings import SinkSettings
from sinks.runner import STALL_EXIT_CODE, waiting


def test_only_owned_partitions_with_messages_past_the_commit_wait() -> None:
    lag = GroupLag(
        end_offsets={("a", 0): 10, ("a", 1): 5, ("b", 0): 7, ("b", 1): 3},
        committed={("a", 0): 10, ("a", 1): 2, ("b", 0): -1001},  # b[0] never committed; b[1] unknown
    )
    owned = {("a", 0), ("a", 1), ("b", 0), ("b", 1)}
    assert waiting(owned, lag) == {("a", 1): 3, ("b", 0): 7, ("b", 1): 3}
    assert waiting({("a", 0)}, lag) == {}  # caught up
    assert waiting(set(), lag) == {}  # another sink's partitions are not this one's stall


def test_a_stalled_sink_has_its_own_exit_code_and_a_setting() -> None:
    assert STALL_EXIT_CODE not in (0, 1, 2, 3)  # 3: split refused; 2: usage; 1: crash
    assert SinkSettings().stall_timeout_s == 120.0
