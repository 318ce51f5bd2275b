"""How users are assigned to experiment variants: the consistent hash every producer and the evaluator share.

This is part of the contract: an app in any language assigns users with it, the SDK does
(``producers.assignment``), and the evaluator recomputes every user's variant with it to check what the
apps logged. The spec (also in docs/producers.md, with test vectors in tests/data/assignment_vectors.json):

1. ``key = experiment_id + ":" + user_id``, encoded as UTF-8.
2. ``h = MurmurHash3_x86_32(key, seed=0)``, an unsigned 32-bit integer (``mmh3.hash(key, signed=False)``
   in Python, Guava's ``murmur3_32_fixed()`` in Java).
3. ``bucket = h % 10_000``.
4. Variants keep the order they are given in, with non-negative integer weights ``w_i`` summing to
   ``W > 0``. Variant ``i`` owns the buckets ``[cut_{i-1}, cut_i)`` where
   ``cut_i = floor(10_000 * (w_1 + ... + w_i) / W)`` (integer arithmetic) and ``cut_0 = 0``.

Nothing here depends on the process (no ``hash()``, no random seed), so a user keeps their variant
across restarts, machines and languages.

An experiment record (``ai.experiments.v1``) is the one source of the variants and their weights:
:func:`experiment_variants` gives ``{control: split[0], treatment: split[1]}``, in that order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.experiments import Experiment

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


def variant_of_bucket(bucket: int, cuts: Sequence[tuple[int, str]]) -> str:
    """The variant that owns ``bucket`` given the :func:`cut_points` of the variants."""
    for cut, name in cuts:
        if bucket < cut:
            return name
    raise ValueError(f"bucket {bucket} is outside [0, {BUCKETS})")


@dataclass(frozen=True)
class Assignment:
    """A user's variant in one experiment; pass it to ``record_interaction(assignment=...)``."""

    experiment_id: str
    variant: str
    bucket: int


def assign_variant(experiment_id: str, user_id: str, variants: Mapping[str, int]) -> Assignment:
    """The variant ``user_id`` belongs to among ``variants`` (name -> weight, in order): the whole spec."""
    if not experiment_id:
        raise ValueError("experiment_id must be non-empty")
    bucket = bucket_of(experiment_id, user_id)
    return Assignment(experiment_id, variant_of_bucket(bucket, cut_points(variants)), bucket)


def experiment_variants(experiment: Experiment) -> dict[str, int]:
    """The variants of an experiment record with their weights, in assignment order."""
    control_weight, treatment_weight = experiment.split
    return {experiment.control: control_weight, experiment.treatment: treatment_weight}


__all__ = [
    "BUCKETS",
    "Assignment",
    "assign_variant",
    "bucket_of",
    "cut_points",
    "experiment_variants",
    "murmur3_32",
    "variant_of_bucket",
]
