"""``make bench``: how fast the pipeline is, measured, printed.

On the broker that answers at the configured bootstrap servers and chdb, each phase on topics of its
own (a fresh namespace), one after the other so they never share the cores:

1. **throughput**: a generated workload published as fast as possible to one worker process
   (processors, with the sink and the evaluator as its children), timed until the last row is in
   ClickHouse; the CPU seconds and peak RSS of each stage;
2. **scale-out**: the same workload to two ``--stage process`` workers and one ``--stage sink``: their
   events per processor CPU-second together, and how the partitions were shared;
3. **latency**: a steady stream well under capacity, publish -> visible per table (p50/p99);
4. **naive peer**: the same workload through ``bench/naive_peer.py`` (one Faust agent per topic, a
   message at a time, table joins, rapidfuzz, rows into chdb as they come): its events per CPU-second;
5. **compute ceiling**: the same messages through the processors' core with no broker
   (``stream_processors.offline``), in CPU time; and the bytes of state per open interaction.

``run_soak`` (``feedbackloop bench --soak``) runs a worker for minutes at a steady rate with short
signal windows and samples its RSS and the consumer lag every 10 s.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from feedbackloop.supervise import WorkerProcess, pipeline_lag, settings_env, wait_until_drained
from infra.groups import app_id, sink_group_id
from infra.kafka import (
    KafkaUnavailableError,
    client_config,
    delete_topics,
    ensure_topics,
    group_is_stable,
    public_topic_names,
)
from infra.settings import ClickHouseSettings, Settings
from producers.client import EventPublisher
from producers.synthetic import WorkloadSpec, generate
from schemas import InteractionEvent, topics
from stream_processors.offline import OfflinePipeline, RawMessage

#: The naive peer's script (a benchmark subject, not part of the package).
NAIVE_PEER = Path(__file__).resolve().parents[1] / "bench" / "naive_peer.py"


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


# ---------------------------------------------------------------------------- the pure core


def compute_ceiling(prepared: Prepared, settings: Settings, runs: int = 2) -> float:
    """Events per CPU-second through the processors' core alone (the worker's partitions and batch
    size, no broker), best of ``runs``. CPU time, not wall time: on a shared machine the wall clock
    counts other processes' work too."""
    pipeline = settings.pipeline
    best = 0.0
    for _ in range(runs):
        # This process holds the whole workload (a worker does not): frozen, it is not traversed by
        # every full garbage collection, as a worker's start-up state is not (feedbackloop.worker).
        gc.collect()
        gc.freeze()
        try:
            started = time.process_time()
            offline = OfflinePipeline(
                pipeline, partitions=settings.kafka.partitions, batch=pipeline.batch_max_events
            )
            offline.run(prepared.messages)
            best = max(best, len(prepared.messages) / (time.process_time() - started))
        finally:
            gc.unfreeze()
    return best


def deep_size(root: object) -> int:
    """Bytes of ``root`` and everything it refers to (each object once; classes and modules not)."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif hasattr(obj, "__slots__"):
            stack.extend(getattr(obj, name) for name in _slots(type(obj)) if hasattr(obj, name))
        elif hasattr(obj, "__dict__"):
            stack.append(vars(obj))
    return total


def _slots(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    return names


def state_bytes_per_open_interaction(prepared: Prepared, settings: Settings) -> dict[str, float]:
    """The processors' state once the workload is read (what is still inside its observation window
    or retention is held): bytes per record held (interaction, feedback, links, indexes, heaps) and
    per window member."""
    offline = OfflinePipeline(
        settings.pipeline, partitions=settings.kafka.partitions, batch=settings.pipeline.batch_max_events
    )
    for message in prepared.messages:
        offline.feed(message)
    offline.flush()  # everything read; what event time has not yet expired is held
    core = offline.core
    records = sum(len(state.records) for state in core.partitions.values())
    members = sum(len(m) for w in core.windows.values() for m in w.windows.values())
    return {
        "records": records,
        "state_bytes_per_open_interaction": round(deep_size(core.partitions) / max(1, records)),
        "window_bytes_per_member": round(deep_size(core.windows) / max(1, members)),
    }


# ---------------------------------------------------------------------------- processes


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int, key: str = "VmHWM") -> float:
    """Peak (``VmHWM``) or current (``VmRSS``) resident memory of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _children(pid: int) -> dict[str, int]:
    """The worker's child processes by stage (``sink``, ``experiments``)."""
    try:
        pids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return {}
    out = {}
    for child in pids:
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"--stage" in argv:
            out[argv[argv.index(b"--stage") + 1].decode()] = child
    return out


def _settings_for(base: Settings, workdir: Path, **pipeline: Any) -> Settings:
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"topic_namespace": f"bench{uuid.uuid4().hex[:8]}"}),
            "clickhouse": ClickHouseSettings(url=f"chdb://{workdir / 'chdb'}", database="bench"),
            "pipeline": base.pipeline.model_copy(
                update={"idle_advance_s": 1.0, "sink_stats_file": workdir / "sink-stats.json", **pipeline}
            ),
        }
    )


@contextmanager
def _workers(
    base: Settings, name: str, stages: tuple[str, ...] = ("all",), extra_env: dict[str, str] | None = None,
    **pipeline: Any,
) -> Iterator[tuple[Settings, list[WorkerProcess], Path]]:  # fmt: skip
    """Worker processes of ``stages`` on topics and a chdb directory of their own, ready for traffic.
    Afterwards the topics are deleted, and the directory too unless the phase failed (its logs)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"feedbackloop-bench-{name}-"))
    settings = _settings_for(base, workdir, **pipeline)
    ensure_topics(settings.kafka, public_topic_names(settings.kafka))
    env = {
        **settings_env(settings),
        "FEEDBACKLOOP_PIPELINE__SINK_STATS_FILE": str(workdir / "sink-stats.json"),
        **(extra_env or {}),
    }
    workers = []
    try:
        for index, stage in enumerate(stages):
            # Two processors in one group need two web ports (unused, but Faust binds them).
            own = {"FEEDBACKLOOP_PIPELINE__WEB_PORT": str(settings.pipeline.web_port + index)}
            workers.append(
                WorkerProcess(stage, workdir / f"worker-{index}-{stage}.log", {**env, **own}).start()
            )
        _wait_ready(settings, workers)
        yield settings, workers, workdir
    finally:
        for worker in workers:
            worker.stop()
        _forget_topics(settings)
    shutil.rmtree(workdir, ignore_errors=True)


def _forget_topics(settings: Settings) -> None:
    """Delete every topic of the phase's namespace (its inputs and outputs, and the changelogs and
    internal topics Faust made for it): on a shared broker they would pile up run after run."""
    namespace = settings.kafka.topic_namespace
    try:
        admin = AdminClient(client_config(settings.kafka))
        names = [name for name in admin.list_topics(timeout=10).topics if namespace in name]
        delete_topics(settings.kafka, names)
    except (KafkaException, KafkaUnavailableError) as exc:
        # Tidying up must not hide what the phase raised, nor fail figures already measured.
        print(f"warning: the bench's topics {namespace}.* were not deleted: {exc}", file=sys.stderr)


def _wait_ready(settings: Settings, workers: list[WorkerProcess], timeout_s: float = 120) -> None:
    """Until every stage's consumer group is stable with all its members (so startup is not timed)."""
    deadline = time.monotonic() + timeout_s
    groups = [app_id(settings), sink_group_id(settings)]
    processors = sum(1 for w in workers if w.stage in ("all", "process"))
    while time.monotonic() < deadline:
        dead = [w for w in workers if not w.alive()]
        if dead:
            raise RuntimeError(f"a worker died at startup; see {dead[0].log_path}")
        if all(group_is_stable(settings.kafka, g) for g in groups) and (
            processors < 2 or len(group_members(settings, app_id(settings))) >= processors
        ):
            time.sleep(2.0)  # let table recovery of the (empty) changelogs finish
            return
        time.sleep(0.5)
    raise TimeoutError("the workers did not get ready")


def group_members(settings: Settings, group: str) -> dict[str, dict[str, list[int]]]:
    """Each member of a consumer group (by client id and host) -> topic -> partitions assigned."""
    admin = AdminClient(client_config(settings.kafka))
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    out: dict[str, dict[str, list[int]]] = {}
    for index, member in enumerate(description.members):
        topics_of: dict[str, list[int]] = {}
        for tp in member.assignment.topic_partitions:
            topics_of.setdefault(tp.topic, []).append(tp.partition)
        out[f"member {index + 1} ({member.client_id})"] = {t: sorted(p) for t, p in sorted(topics_of.items())}
    return out


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


# ---------------------------------------------------------------------------- phases


def throughput(base: Settings, prepared: Prepared) -> dict[str, Any]:
    """One worker process (processors; sink and evaluator as its children) on a backlog."""
    events = len(prepared.messages)
    with _workers(base, "throughput") as (settings, (worker,), _):
        children = _children(worker.pid)
        pids = {"processor": worker.pid, **children}
        cpu_before = {stage: _cpu_seconds(pid) for stage, pid in pids.items()}
        started = time.monotonic()
        published = _publish(settings, prepared.messages)
        finished = wait_until_drained(
            settings, prepared.interactions, timeout_s=1800, quiet_s=3.0, alive=worker.alive
        )
        cpu = {stage: _cpu_seconds(pid) - cpu_before[stage] for stage, pid in pids.items()}
        rss = {stage: _rss_mb(pid) for stage, pid in pids.items()}
    elapsed = finished - started
    return {
        "events": events,
        "interactions": prepared.interactions,
        "publish_s": round(published, 2),
        "end_to_end_s": round(elapsed, 2),
        "end_to_end_events_per_s": round(events / elapsed),
        "processor_cpu_s": round(cpu["processor"], 2),
        "sink_cpu_s": round(cpu.get("sink", 0.0), 2),
        "events_per_processor_cpu_s": round(events / cpu["processor"]),
        "sink_events_per_cpu_s": round(events / cpu["sink"]) if cpu.get("sink") else None,
        "peak_rss_mb": rss,
    }


def scale_out(base: Settings, prepared: Prepared) -> dict[str, Any]:
    """Two ``--stage process`` workers and one ``--stage sink`` on the same partitions."""
    events = len(prepared.messages)
    stages = ("process", "process", "sink")
    with _workers(base, "scale-out", stages) as (settings, workers, _):
        processors = [w for w in workers if w.stage == "process"]
        before = {w.pid: _cpu_seconds(w.pid) for w in workers}
        _publish(settings, prepared.messages)

        def alive() -> bool:
            return all(w.alive() for w in workers)

        wait_until_drained(settings, prepared.interactions, timeout_s=1800, quiet_s=3.0, alive=alive)
        cpu = {w.pid: _cpu_seconds(w.pid) - before[w.pid] for w in workers}
        shared = group_members(settings, app_id(settings))
        rss = [_rss_mb(w.pid) for w in processors]
    processor_cpu = [cpu[w.pid] for w in processors]
    return {
        "processes": len(processors),
        "processor_cpu_s": [round(c, 2) for c in processor_cpu],
        "events_per_processor_cpu_s": round(events / sum(processor_cpu)),
        "peak_rss_mb": rss,
        "partitions": shared,
    }


def latency(base: Settings, paced_rate: float) -> dict[str, Any]:
    """A steady stream of ``paced_rate`` events/s; publish -> visible per table, from the sink's stats."""
    steady = prepare(max(2000, int(paced_rate * 8)), seed=12)
    with _workers(base, "latency") as (settings, (worker,), workdir):
        _publish(settings, steady.messages, rate=paced_rate)
        wait_until_drained(settings, steady.interactions, timeout_s=600, quiet_s=2.0, alive=worker.alive)
        worker.stop()  # the sink writes its final stats as it stops
        stats: dict[str, dict[str, int]] = json.loads((workdir / "sink-stats.json").read_text()).get(
            "latency", {}
        )
    return {
        "latency_at_events_per_s": paced_rate,
        "p50_ms": {table: numbers["p50_ms"] for table, numbers in stats.items()},
        "p99_ms": {table: numbers["p99_ms"] for table, numbers in stats.items()},
    }


def naive_peer(base: Settings, prepared: Prepared, timeout_s: float = 1800) -> dict[str, Any]:
    """The same workload through the naive peer (``bench/naive_peer.py``) on the same broker."""
    workdir = Path(tempfile.mkdtemp(prefix="feedbackloop-bench-naive-"))
    settings = _settings_for(base, workdir)
    ns = settings.kafka.topic_namespace
    names = [topics.topic_name(t, ns) for t in (topics.INTERACTIONS, topics.FEEDBACK)]
    ensure_topics(settings.kafka, names)
    stats = workdir / "naive-stats.json"
    # Every joined feedback and every interaction, once: what the peer has written when it is done.
    rows = prepared.interactions + _distinct_feedback(prepared)
    command = [
        sys.executable, str(NAIVE_PEER), "--bootstrap", settings.kafka.bootstrap_servers,
        "--interactions", names[0], "--feedback", names[1], "--app-id", f"naive-{ns}",
        "--chdb", str(workdir / "chdb"), "--stats", str(stats), "--datadir", str(workdir / "faust"),
        "--partitions", str(settings.kafka.partitions), "worker", "-l", "warn",
    ]  # fmt: skip
    with open(workdir / "naive.log", "ab") as log:
        peer = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not stats.exists():  # its first report: started, subscribed, tables ready
            if peer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the naive peer did not start; see {workdir / 'naive.log'}")
            time.sleep(0.5)
        cpu_before = _cpu_seconds(peer.pid)
        started = time.monotonic()
        _publish(settings, prepared.messages)
        done = json.loads(stats.read_text())
        while done["events"] < len(prepared.messages) or done["rows"] < rows:
            if peer.poll() is not None or time.monotonic() - started > timeout_s:
                raise RuntimeError(f"the naive peer stopped at {done}; see {workdir / 'naive.log'}")
            time.sleep(0.5)
            done = json.loads(stats.read_text())
        elapsed = time.monotonic() - started
        cpu = _cpu_seconds(peer.pid) - cpu_before
        rss = _rss_mb(peer.pid)
    finally:
        peer.send_signal(signal.SIGTERM)
        try:
            peer.wait(60)
        except subprocess.TimeoutExpired:
            peer.kill()
            peer.wait()
        _forget_topics(settings)
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "naive_events_per_processor_cpu_s": round(len(prepared.messages) / cpu),
        "naive_cpu_s": round(cpu, 2),
        "naive_end_to_end_events_per_s": round(len(prepared.messages) / elapsed),
        "naive_peak_rss_mb": rss,
    }


def _distinct_feedback(prepared: Prepared) -> int:
    import orjson

    return len(
        {orjson.loads(m.value or b"{}")["event_id"] for m in prepared.messages if not m.is_interaction}
    )


def run_pipeline_bench(
    base: Settings,
    interactions: int = 40_000,
    paced_rate: float = 1000.0,
    *,
    naive: bool = True,
    scale: bool = True,
    on_phase: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every phase (see the module docstring); return the figures under stable keys."""
    say = on_phase or (lambda _phase: None)
    prepared = prepare(interactions)
    figures: dict[str, Any] = {"partitions": base.kafka.partitions}
    say("throughput: one worker process")
    figures.update(throughput(base, prepared))
    if scale:
        say("scale-out: two processor processes and a sink")
        out = scale_out(base, prepared)
        out["vs_one_process"] = round(
            out["events_per_processor_cpu_s"] / figures["events_per_processor_cpu_s"], 3
        )
        figures["scale_out"] = out
    say(f"latency at a steady {paced_rate:g} events/s")
    figures.update(latency(base, paced_rate))
    if naive:
        say("the naive peer")
        figures.update(naive_peer(base, prepared))
        figures["ratio_to_naive"] = round(
            figures["events_per_processor_cpu_s"] / figures["naive_events_per_processor_cpu_s"], 2
        )
        all_in = len(prepared.messages) / (figures["processor_cpu_s"] + figures["sink_cpu_s"])
        figures["ratio_to_naive_all_in"] = round(all_in / figures["naive_events_per_processor_cpu_s"], 2)
        figures["peak_rss_mb"]["naive"] = figures.pop("naive_peak_rss_mb")
    say("compute ceiling and state size")
    ceiling = compute_ceiling(prepared, base)
    figures["compute_ceiling_events_per_s"] = round(ceiling)
    figures["ratio_per_processor_cpu_to_ceiling"] = round(figures["events_per_processor_cpu_s"] / ceiling, 3)
    figures.update(state_bytes_per_open_interaction(prepared, base))
    return figures


# ---------------------------------------------------------------------------- soak


#: Short signal windows for the soak, so the state reaches its steady size within the first minute
#: (with the defaults an interaction is held for its 5-minute window plus an hour of retention).
SOAK_PIPELINE_ENV = {
    "FEEDBACKLOOP_PIPELINE__SIGNALS__ABANDON_WINDOW_S": "20",
    "FEEDBACKLOOP_PIPELINE__SIGNALS__REPHRASE_WINDOW_S": "20",
    "FEEDBACKLOOP_PIPELINE__SIGNALS__FOLLOWUP_WINDOW_S": "20",
    "FEEDBACKLOOP_PIPELINE__RETENTION_S": "30",
    "FEEDBACKLOOP_PIPELINE__METRICS_RETENTION_S": "60",
}


@dataclass
class SoakSample:
    """One sample of a soak."""

    at_s: float
    processor_rss_mb: float
    sink_rss_mb: float
    processor_lag: int
    sink_lag: int
    published: int


@dataclass
class _Feeder:
    """Publishes minute-long chunks of generated traffic at a steady rate, each dated in the minute
    before it is sent (event time follows the wall clock, as in production)."""

    settings: Settings
    rate: float
    duration_s: float
    published: int = 0
    interactions: int = 0
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the soak
            self.error = exc

    def _run(self) -> None:
        names = {
            True: topics.topic_name(topics.INTERACTIONS, self.settings.kafka.topic_namespace),
            False: topics.topic_name(topics.FEEDBACK, self.settings.kafka.topic_namespace),
        }
        started = time.monotonic()
        chunk_s = 60.0
        # About 2.5 events per interaction in the generated workload.
        per_chunk = max(10, int(self.rate * chunk_s / 2.5))
        with EventPublisher(self.settings.kafka, linger_ms=5) as publisher:
            chunk = 0
            while not self._stop.is_set() and time.monotonic() - started < self.duration_s:
                workload = generate(
                    WorkloadSpec(
                        interactions=per_chunk, users=max(50, per_chunk // 20), seed=100 + chunk,
                        span=timedelta(seconds=chunk_s), end_before=timedelta(0), malformed=0,
                        now=datetime.now(UTC), user_prefix=f"soak{chunk}",
                    )
                )  # fmt: skip
                self.interactions += len(workload.interactions)
                events = list(workload.events)
                chunk_started = time.monotonic()
                pace = len(events) / chunk_s
                for index, event in enumerate(events):
                    if self._stop.is_set():
                        return
                    delay = chunk_started + index / pace - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    value = event.model_dump_json().encode()
                    publisher.publish_raw(
                        names[isinstance(event, InteractionEvent)], event.session_id.encode(), value
                    )
                    self.published += 1
                chunk += 1

    def stop(self) -> None:
        self._stop.set()


def run_soak(
    base: Settings,
    rate: float,
    minutes: float = 10.0,
    sample_s: float = 10.0,
    on_sample: Callable[[SoakSample], None] | None = None,
) -> dict[str, Any]:
    """A worker under ``rate`` events/s for ``minutes``: RSS and lag every ``sample_s``; then drained."""
    samples: list[SoakSample] = []
    with _workers(base, "soak", extra_env=SOAK_PIPELINE_ENV) as (settings, (worker,), _):
        sink_pid = _children(worker.pid).get("sink", worker.pid)
        feeder = _Feeder(settings, rate, minutes * 60)
        thread = threading.Thread(target=feeder.run, name="soak-feeder", daemon=True)
        started = time.monotonic()
        thread.start()
        try:
            while thread.is_alive():
                time.sleep(sample_s)
                if not worker.alive():
                    raise RuntimeError(f"the worker died during the soak; see {worker.log_path}")
                lag_processing, lag_sink = pipeline_lag(settings)
                sample = SoakSample(
                    round(time.monotonic() - started, 1), _rss_mb(worker.pid, "VmRSS"),
                    _rss_mb(sink_pid, "VmRSS"), lag_processing, lag_sink, feeder.published,
                )  # fmt: skip
                samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)
        finally:
            feeder.stop()
            thread.join()
        if feeder.error is not None:
            raise RuntimeError(f"the soak's publisher failed: {feeder.error}") from feeder.error
        drained_at = wait_until_drained(settings, feeder.interactions, timeout_s=600, alive=worker.alive)
        peak = {"processor": _rss_mb(worker.pid), "sink": _rss_mb(sink_pid)}
    after_first_minute = next((s for s in samples if s.at_s >= 60), samples[0] if samples else None)
    last = samples[-1] if samples else None
    growth = (
        round(last.processor_rss_mb / after_first_minute.processor_rss_mb - 1, 3)
        if last is not None and after_first_minute is not None
        else None
    )
    return {
        "rate_events_per_s": rate,
        "minutes": minutes,
        "published": feeder.published,
        "interactions": feeder.interactions,
        "drained_s_after_end": round(drained_at - started - minutes * 60, 1),
        "processor_rss_growth_after_first_minute": growth,
        "max_processor_lag": max((s.processor_lag for s in samples), default=0),
        "max_sink_lag": max((s.sink_lag for s in samples), default=0),
        "peak_rss_mb": peak,
        "samples": [vars(s) for s in samples],
    }
