"""Assign users to experiment variants by consistent hashing, the same way in every language.

The spec (also in docs/producers.md, with test vectors in tests/data/assignment_vectors.json):

1. ``key = experiment_id + ":" + user_id``, encoded as UTF-8.
2. ``h = MurmurHash3_x86_32(key, seed=0)``, an unsigned 32-bit integer (``mmh3.hash(key, signed=False)``
   in Python, Guava's ``murmur3_32_fixed()`` in Java).
3. ``bucket = h % 10_000``.
4. Variants keep the order they are given in, with non-negative integer weights ``w_i`` summing to
   ``W > 0``. Variant ``i`` owns the buckets ``[cut_{i-1}, cut_i)`` where
   ``cut_i = floor(10_000 * (w_1 + ... + w_i) / W)`` (integer arithmetic) and ``cut_0 = 0``.

Nothing here depends on the process (no ``hash()``, no random seed), so a user keeps their variant
across restarts, machines and languages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: Buckets of the assignment hash; weights are resolved to this granularity (0.01 %).
BUCKETS = 10_000

_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_MASK = 0xFFFFFFFF


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86_32 of ``data`` as an unsigned 32-bit integer (the reference algorithm)."""
    h = seed & _MASK
    length = len(data)
    tail_start = length - length % 4
    for i in range(0, tail_start, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _C1) & _MASK
        k = ((k << 15) | (k >> 17)) & _MASK
        k = (k * _C2) & _MASK
        h ^= k
        h = ((h << 13) | (h >> 19)) & _MASK
        h = (h * 5 + 0xE6546B64) & _MASK
    k = 0
    tail = data[tail_start:]
    if len(tail) == 3:
        k ^= tail[2] << 16
    if len(tail) >= 2:
        k ^= tail[1] << 8
    if tail:
        k ^= tail[0]
        k = (k * _C1) & _MASK
        k = ((k << 15) | (k >> 17)) & _MASK
        k = (k * _C2) & _MASK
        h ^= k
    h ^= length
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h


def bucket_of(experiment_id: str, user_id: str) -> int:
    """The user's bucket in ``[0, 10_000)`` for this experiment (steps 1-3 of the spec)."""
    return murmur3_32(f"{experiment_id}:{user_id}".encode()) % BUCKETS


def cut_points(weights: Mapping[str, int]) -> list[tuple[int, str]]:
    """Exclusive upper bucket bound of each variant, in the variants' order (step 4 of the spec)."""
    if not weights:
        raise ValueError("an experiment needs at least one variant")
    for name, weight in weights.items():
        # bool is an int; a weight of True is almost certainly a bug at the call site.
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise ValueError(f"weight of variant {name!r} must be a non-negative int, got {weight!r}")
        if not name:
            raise ValueError("variant names must be non-empty")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("variant weights must not all be zero")
    cuts = []
    running = 0
    for name, weight in weights.items():
        running += weight
        cuts.append((BUCKETS * running // total, name))
    return cuts


@dataclass(frozen=True)
class Assignment:
    """A user's variant in one experiment; pass it to ``record_interaction(assignment=...)``."""

    experiment_id: str
    variant: str
    bucket: int


@dataclass(frozen=True)
class Experiment:
    """An A/B experiment: an id and its variants with integer weights, e.g. ``{"v1": 20, "v2": 80}``.

    Variant names are typically prompt versions. The order of ``variants`` is part of the
    assignment: reordering them reassigns users.
    """

    experiment_id: str
    variants: Mapping[str, int]
    _cuts: list[tuple[int, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.experiment_id:
            raise ValueError("experiment_id must be non-empty")
        # Freeze a copy: a caller mutating their dict must not move users between variants.
        object.__setattr__(self, "variants", MappingProxyType(dict(self.variants)))
        object.__setattr__(self, "_cuts", cut_points(self.variants))

    def assign(self, user_id: str) -> Assignment:
        """The variant ``user_id`` belongs to; the same on every call, process and language."""
        bucket = bucket_of(self.experiment_id, user_id)
        for cut, name in self._cuts:
            if bucket < cut:
                return Assignment(self.experiment_id, name, bucket)
        raise AssertionError("unreachable: the last cut point is BUCKETS")  # pragma: no cover


def assign_variant(experiment_id: str, user_id: str, variants: Mapping[str, int]) -> Assignment:
    """Shortcut for ``Experiment(experiment_id, variants).assign(user_id)``."""
    return Experiment(experiment_id, variants).assign(user_id)
