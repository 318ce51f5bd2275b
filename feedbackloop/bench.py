"""``make bench``: how fast the pipeline is, measured, printed.

One run publishes a generated workload to the real broker, with a worker already running, and
times it until the last row is in ClickHouse; a second worker then takes a steady stream well
under its capacity, to measure publish-to-visible latency per table; the same messages of the
first run go through the worker's processing core with no broker (the compute ceiling). Printed: end-to-end
events/s per worker process, events per CPU-second of the processor, the ceiling, their ratio,
and p50/p99 latency.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from feedbackloop.supervise import WorkerProcess, settings_env, wait_until_drained
from infra.groups import app_id, sink_group_id
from infra.kafka import ensure_topics, group_is_stable, public_topic_names
from infra.settings import ClickHouseSettings, Settings
from producers.client import EventPublisher
from producers.synthetic import WorkloadSpec, generate
from schemas import InteractionEvent, topics
from stream_processors.offline import OfflinePipeline, RawMessage


@dataclass(frozen=True)
class Prepared:
    """A workload serialized once, as it goes on the wire."""

    messages: list[RawMessage]
    interactions: int


def prepare(interactions: int, seed: int = 11) -> Prepared:
    """Generate and serialize a workload (duplicates, late and early feedback included)."""
    workload = generate(
        WorkloadSpec(interactions=interactions, users=max(200, interactions // 30), seed=seed,
                     span=timedelta(hours=12), malformed=0)
    )  # fmt: skip
    messages = [
        RawMessage(isinstance(m, InteractionEvent), m.session_id.encode(), m.model_dump_json().encode())
        for m in workload.events
    ]
    return Prepared(messages, len(workload.interactions))


def compute_ceiling(prepared: Prepared, settings: Settings) -> float:
    """Events per second through the processors' core alone (the worker's partitions and batch size,
    no broker), best of two runs."""
    pipeline = settings.pipeline
    best = 0.0
    for _ in range(2):
        # This process holds the whole workload (a worker does not): frozen, it is not traversed by
        # every full garbage collection, which otherwise took a quarter or more of the measured time.
        gc.collect()
        gc.freeze()
        try:
            started = time.perf_counter()
            offline = OfflinePipeline(
                pipeline, partitions=settings.kafka.partitions, batch=pipeline.batch_max_events
            )
            offline.run(prepared.messages)
            best = max(best, len(prepared.messages) / (time.perf_counter() - started))
        finally:
            gc.unfreeze()
    return best


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@contextmanager
def _worker(base: Settings, name: str) -> Iterator[tuple[Settings, WorkerProcess, Path]]:
    """A worker (processors + sink) on topics and a chdb directory of its own, ready to take traffic."""
    workdir = Path(tempfile.mkdtemp(prefix=f"feedbackloop-bench-{name}-"))
    stats_file = workdir / "sink-stats.json"
    settings = Settings(
        kafka=base.kafka.model_copy(update={"topic_namespace": f"bench{uuid.uuid4().hex[:8]}"}),
        clickhouse=ClickHouseSettings(url=f"chdb://{workdir / 'chdb'}", database="bench"),
        pipeline=base.pipeline.model_copy(update={"idle_advance_s": 1.0, "sink_stats_file": stats_file}),
    )
    ensure_topics(settings.kafka, public_topic_names(settings.kafka))
    env = {**settings_env(settings), "FEEDBACKLOOP_PIPELINE__SINK_STATS_FILE": str(stats_file)}
    worker = WorkerProcess("all", workdir / "worker.log", env).start()
    try:
        _wait_ready(settings, worker)
        yield settings, worker, workdir
    finally:
        worker.stop()


def _publish(settings: Settings, messages: list[RawMessage], rate: float | None = None) -> float:
    """Publish (at ``rate`` messages/s, or as fast as possible); return the seconds it took."""
    names = {
        True: topics.topic_name(topics.INTERACTIONS, settings.kafka.topic_namespace),
        False: topics.topic_name(topics.FEEDBACK, settings.kafka.topic_namespace),
    }
    started = time.monotonic()
    with EventPublisher(settings.kafka, linger_ms=5 if rate else 20) as publisher:
        for index, m in enumerate(messages):
            if rate is not None:
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            publisher.publish_raw(names[m.is_interaction], m.key, m.value or b"")
    return time.monotonic() - started


def run_pipeline_bench(
    base: Settings, interactions: int = 40_000, paced_rate: float = 1000.0
) -> dict[str, Any]:
    """Throughput (a backlog as fast as the worker takes it), latency (a steady ``paced_rate`` of
    events/s, well under capacity), and the compute ceiling; return the figures."""
    prepared = prepare(interactions)
    events = len(prepared.messages)
    with _worker(base, "throughput") as (settings, worker, _):
        pids = [worker.pid, *_children(worker.pid)]
        cpu_before = {pid: _cpu_seconds(pid) for pid in pids}
        started = time.monotonic()
        published = _publish(settings, prepared.messages)
        finished = wait_until_drained(
            settings, prepared.interactions, timeout_s=1800, quiet_s=3.0, alive=worker.alive
        )
        cpu = {pid: _cpu_seconds(pid) - before for pid, before in cpu_before.items()}
    elapsed = finished - started
    steady = prepare(max(2000, int(paced_rate * 8)), seed=12)
    with _worker(base, "latency") as (settings, worker, workdir):
        _publish(settings, steady.messages, rate=paced_rate)
        wait_until_drained(settings, steady.interactions, timeout_s=600, quiet_s=2.0, alive=worker.alive)
    latency = json.loads((workdir / "sink-stats.json").read_text()).get("latency", {})
    ceiling = compute_ceiling(prepared, base)
    processor_cpu = cpu[pids[0]]
    e2e = events / elapsed
    return {
        "events": events,
        "interactions": prepared.interactions,
        "publish_s": round(published, 2),
        "end_to_end_s": round(elapsed, 2),
        "end_to_end_events_per_s": round(e2e),
        "processor_cpu_s": round(processor_cpu, 2),
        "sink_cpu_s": round(sum(v for pid, v in cpu.items() if pid != pids[0]), 2),
        "events_per_processor_cpu_s": round(events / processor_cpu),
        "compute_ceiling_events_per_s": round(ceiling),
        "ratio_end_to_end_to_ceiling": round(e2e / ceiling, 3),
        "ratio_per_processor_cpu_to_ceiling": round(events / processor_cpu / ceiling, 3),
        "latency_at_events_per_s": paced_rate,
        "latency": latency,
    }


def _wait_ready(settings: Settings, worker: WorkerProcess, timeout_s: float = 120) -> None:
    """Until both stages' consumer groups are stable with members (so startup is not timed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"the worker died at startup; see {worker.log_path}")
        if all(group_is_stable(settings.kafka, g) for g in (app_id(settings), sink_group_id(settings))):
            time.sleep(2.0)  # let table recovery of the (empty) changelogs finish
            return
        time.sleep(0.5)
    raise TimeoutError("the worker did not get ready")
