"""``make bench``: how fast the pipeline is, measured, printed.

One run publishes a generated workload to the real broker, with a worker already running, and
times it until the last row is in ClickHouse; the same messages then go through the pure logic
in a tight loop (the compute ceiling). Printed: end-to-end events/s per worker process, events
per CPU-second of the processor, the ceiling, their ratio, and publish-to-visible latency.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from feedbackloop.kafka_io import ensure_topics, group_is_stable, public_topic_names
from feedbackloop.settings import ClickHouseSettings, PipelineSettings, Settings
from feedbackloop.supervise import WorkerProcess, settings_env, wait_until_drained
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


def compute_ceiling(prepared: Prepared, pipeline: PipelineSettings) -> float:
    """Events per second through the pure logic, best of two runs."""
    best = 0.0
    for _ in range(2):
        started = time.perf_counter()
        OfflinePipeline(pipeline).run(prepared.messages)
        best = max(best, len(prepared.messages) / (time.perf_counter() - started))
    return best


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def run_pipeline_bench(base: Settings, interactions: int = 40_000) -> dict[str, Any]:
    """Run the end-to-end benchmark and the compute ceiling; return the figures."""
    prepared = prepare(interactions)
    workdir = Path(tempfile.mkdtemp(prefix="feedbackloop-bench-"))
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=base.kafka.model_copy(update={"topic_namespace": namespace}),
        clickhouse=ClickHouseSettings(url=f"chdb://{workdir / 'chdb'}", database="bench"),
        pipeline=base.pipeline.model_copy(
            update={"idle_advance_s": 1.0, "sink_stats_file": workdir / "sink-stats.json"}
        ),
    )
    ensure_topics(settings.kafka, public_topic_names(settings.kafka))
    env = {
        **settings_env(settings),
        "FEEDBACKLOOP_PIPELINE__SINK_STATS_FILE": str(workdir / "sink-stats.json"),
    }
    worker = WorkerProcess("all", workdir / "worker.log", env).start()
    try:
        _wait_ready(settings, worker)
        raw_topic = topics.topic_name(topics.INTERACTIONS, namespace)
        feedback_topic = topics.topic_name(topics.FEEDBACK, namespace)
        cpu_before = {pid: _cpu_seconds(pid) for pid in [worker.pid, *_children(worker.pid)]}
        started = time.monotonic()
        with EventPublisher(settings.kafka, linger_ms=20) as publisher:
            for m in prepared.messages:
                publisher.publish_raw(
                    raw_topic if m.is_interaction else feedback_topic, m.key, m.value or b""
                )
        published = time.monotonic() - started
        finished = wait_until_drained(
            settings, prepared.interactions, timeout_s=1800, quiet_s=3.0, alive=worker.alive
        )
        elapsed = finished - started
        pids = [worker.pid, *_children(worker.pid)]
        cpu = {pid: _cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in pids}
    finally:
        worker.stop()
    stats = json.loads((workdir / "sink-stats.json").read_text())
    events = len(prepared.messages)
    ceiling = compute_ceiling(prepared, settings.pipeline)
    processor_cpu = cpu.get(pids[0], 0.0)
    sink_cpu = sum(v for pid, v in cpu.items() if pid != pids[0])
    e2e = events / elapsed
    return {
        "events": events,
        "interactions": prepared.interactions,
        "publish_s": round(published, 2),
        "end_to_end_s": round(elapsed, 2),
        "end_to_end_events_per_s": round(e2e),
        "processor_cpu_s": round(processor_cpu, 2),
        "sink_cpu_s": round(sink_cpu, 2),
        "events_per_processor_cpu_s": round(events / processor_cpu) if processor_cpu else None,
        "compute_ceiling_events_per_s": round(ceiling),
        "ratio_end_to_end_to_ceiling": round(e2e / ceiling, 3),
        "ratio_per_processor_cpu_to_ceiling": round(events / processor_cpu / ceiling, 3)
        if processor_cpu
        else None,
        "latency": stats.get("latency", {}),
        "workdir": str(workdir),
    }


def _wait_ready(settings: Settings, worker: WorkerProcess, timeout_s: float = 120) -> None:
    """Until both stages' consumer groups are stable with members (so startup is not timed)."""
    from sinks.runner import sink_group_id
    from stream_processors.app import app_id

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"the worker died at startup; see {worker.log_path}")
        if all(group_is_stable(settings.kafka, g) for g in (app_id(settings), sink_group_id(settings))):
            time.sleep(2.0)  # let table recovery of the (empty) changelogs finish
            return
        time.sleep(0.5)
    raise TimeoutError("the worker did not get ready")
