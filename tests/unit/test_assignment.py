"""Consistent-hash assignment: reference vectors, stability across processes and languages, split accuracy,
and the experiment record as the one source of the split."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import producers.assignment
import schemas.assignment
from producers.assignment import BUCKETS, Experiment, assign_variant, bucket_of, cut_points, murmur3_32
from schemas.assignment import experiment_variants, variant_of_bucket
from schemas.experiments import Experiment as ExperimentRecord

VECTORS_PATH = Path(__file__).parent.parent / "data" / "assignment_vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text())

# The whole spec in JavaScript, as another team would write it from docs/producers.md.
JS_ASSIGNMENT = r"""
function murmur3(bytes, seed) {
  let h = seed >>> 0; const n = bytes.length, tail = n - (n % 4);
  const mix = (k) => {
    k = Math.imul(k, 0xcc9e2d51); k = (k << 15) | (k >>> 17); return Math.imul(k, 0x1b873593);
  };
  for (let i = 0; i < tail; i += 4) {
    h ^= mix(bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24));
    h = (h << 13) | (h >>> 19); h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  let k = 0;
  switch (n & 3) { case 3: k ^= bytes[tail + 2] << 16; case 2: k ^= bytes[tail + 1] << 8;
                   case 1: k ^= bytes[tail]; h ^= mix(k); }
  h ^= n; h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35); h ^= h >>> 16;
  return h >>> 0;
}
function assign(experimentId, userId, variants) {  // variants: [[name, weight], ...] in order
  const bucket = murmur3(Buffer.from(experimentId + ":" + userId, "utf8"), 0) % 10000;
  const total = variants.reduce((s, [, w]) => s + w, 0);
  let running = 0;
  for (const [name, w] of variants) {
    running += w;
    if (bucket < Math.floor(10000 * running / total)) return [bucket, name];
  }
}
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const refs = input.refs.map((r) => murmur3(Buffer.from(r.input_utf8, "utf8"), r.seed));
const cases = input.cases.map((c) => assign(c.experiment_id, c.user_id, c.variants));
process.stdout.write(JSON.stringify({ refs, cases }));
"""


def test_murmur3_matches_the_reference_vectors() -> None:
    for ref in VECTORS["murmur3_reference"]:
        assert murmur3_32(ref["input_utf8"].encode(), ref["seed"]) == ref["murmur3_32"], ref


def test_assignment_matches_the_documented_vectors() -> None:
    variants = {e["experiment_id"]: e["variants"] for e in VECTORS["experiments"]}
    for case in VECTORS["cases"]:
        key = f"{case['experiment_id']}:{case['user_id']}".encode()
        assert key.hex() == case["key_utf8_hex"]
        assert murmur3_32(key) == case["murmur3_32"]
        assert bucket_of(case["experiment_id"], case["user_id"]) == case["bucket"]
        assignment = assign_variant(case["experiment_id"], case["user_id"], variants[case["experiment_id"]])
        assert (assignment.variant, assignment.bucket) == (case["variant"], case["bucket"]), case


def test_same_user_same_variant_in_another_process() -> None:
    experiment = Experiment("checkout-prompt", {"v1": 20, "v2": 80})
    users = [f"user-{i}" for i in range(200)]
    here = [experiment.assign(u).variant for u in users]
    script = (
        "import json, sys\n"
        "from producers.assignment import Experiment\n"
        "e = Experiment('checkout-prompt', {'v1': 20, 'v2': 80})\n"
        "print(json.dumps([e.assign(f'user-{i}').variant for i in range(200)]))\n"
    )
    # A different hash seed proves nothing depends on Python's per-process str hashing.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    assert json.loads(out.stdout) == here
    assert [experiment.assign(u).variant for u in users] == here


def test_twenty_eighty_split_is_within_one_point_over_100k_users() -> None:
    experiment = Experiment("checkout-prompt", {"v1": 20, "v2": 80})
    n = 100_000
    v1 = sum(experiment.assign(f"user-{i}").variant == "v1" for i in range(n))
    assert abs(v1 / n - 0.20) <= 0.01


def test_three_way_split_uses_integer_cut_points() -> None:
    assert cut_points({"a": 1, "b": 1, "c": 1}) == [(3333, "a"), (6666, "b"), (BUCKETS, "c")]
    assert cut_points({"v1": 20, "v2": 80}) == [(2000, "v1"), (BUCKETS, "v2")]
    assert cut_points({"off": 0, "on": 5}) == [(0, "off"), (BUCKETS, "on")]


@pytest.mark.parametrize(
    "variants",
    [{}, {"a": -1}, {"a": 0}, {"a": 1.5}, {"a": True}, {"": 1}],
)
def test_bad_weights_are_refused_at_the_call_site(variants: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"variant|weight"):
        Experiment("e", variants)


def test_experiment_copies_its_variants() -> None:
    variants = {"v1": 50, "v2": 50}
    experiment = Experiment("e", variants)
    before = [experiment.assign(f"u{i}").variant for i in range(50)]
    variants["v1"] = 0
    assert [experiment.assign(f"u{i}").variant for i in range(50)] == before


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_a_javascript_implementation_agrees() -> None:
    variants = {e["experiment_id"]: list(e["variants"].items()) for e in VECTORS["experiments"]}
    users = [f"user-{i}" for i in range(2000)] + [c["user_id"] for c in VECTORS["cases"]]
    cases = [
        {"experiment_id": experiment_id, "user_id": user, "variants": weights}
        for experiment_id, weights in variants.items()
        for user in users
    ]
    payload = {"refs": VECTORS["murmur3_reference"], "cases": cases}
    node = shutil.which("node")
    assert node is not None
    out = subprocess.run(
        [node, "-e", JS_ASSIGNMENT], input=json.dumps(payload), capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout)
    assert result["refs"] == [ref["murmur3_32"] for ref in VECTORS["murmur3_reference"]]
    expected = [
        [a.bucket, a.variant]
        for a in (assign_variant(c["experiment_id"], c["user_id"], dict(c["variants"])) for c in cases)
    ]
    assert result["cases"] == expected


def test_the_sdk_and_the_evaluator_share_one_implementation() -> None:
    """The spec lives in the contract; the SDK builds on it (the evaluator imports the same module)."""
    for name in ("BUCKETS", "Assignment", "assign_variant", "bucket_of", "cut_points", "murmur3_32"):
        assert getattr(producers.assignment, name) is getattr(schemas.assignment, name)


def record(**fields: Any) -> ExperimentRecord:
    at = datetime(2026, 11, 26, tzinfo=UTC)
    return ExperimentRecord.model_validate(
        {"experiment_id": "checkout-prompt", "revision": 1, "control": "v2", "treatment": "v1",
         "created_at": at, "updated_at": at, **fields}
    )  # fmt: skip


def test_an_experiment_record_is_the_one_source_of_the_split() -> None:
    """The SDK's assignment from a record: control first with its weight, then the treatment -- the order
    and weights the evaluator recomputes variants with."""
    spec = record(split=(80, 20))
    assert experiment_variants(spec) == {"v2": 80, "v1": 20}
    from_record = Experiment.from_record(spec)
    by_hand = Experiment("checkout-prompt", {"v2": 80, "v1": 20})
    users = [f"user-{i}" for i in range(500)]
    assert [from_record.assign(u) for u in users] == [by_hand.assign(u) for u in users]
    cuts = cut_points(experiment_variants(spec))
    assert all(variant_of_bucket(a.bucket, cuts) == a.variant for a in map(from_record.assign, users))


def test_a_bucket_outside_the_range_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        variant_of_bucket(BUCKETS, cut_points({"a": 1}))
