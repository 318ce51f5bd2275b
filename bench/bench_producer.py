"""Producer SDK benchmark: events/s, and how long a ``record_*`` call holds the caller's thread.

The workload alternates ``record_interaction`` and ``record_copy`` in a tight loop: the worst
case for the caller, whose thread never gives the GIL up by itself, so the SDK's writer thread
can only take it by force (every ``sys.getswitchinterval()``). Three runs:

* ``validation_only``: the same loop building the contract's pydantic models and nothing else.
  It is the floor: what validation at the call site costs on this machine, at this moment.
* ``broker_down``: the SDK points at a closed port on 127.0.0.1, so every event goes through the
  buffer and the sender process into the on-disk spool. The 50 µs p99 budget is about this run.
* ``broker_up``: the configured broker, on topics of the run's own namespace (deleted after).
* ``broker_down_redacted``: ``broker_down`` with every built-in redaction detector switched on
  (tight loop only). The workload's text has nothing to redact, so this is what the scans cost
  every event; ``redaction_us`` times the redactor alone on texts with and without findings.

``sdk_events_per_s`` counts until the SDK finished the work (acknowledged, or written to the
spool); ``caller_events_per_s`` only the loop. ``app_cpu_us_per_event`` is the CPU the app's
process spent per event (caller and writer thread, validation included),
``sender_cpu_us_per_event`` the sender process's (Linux). ``paced`` repeats the three runs at
5,000 events/s (an app recording events as they come, sleeping in between, as apps waiting
for I/O do). ``load_average`` is the machine's at the end. Run
``python bench/bench_producer.py [events]``; it prints JSON. ``run(settings)`` returns the same
dict.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.kafka import delete_topics, ensure_topics
from infra.settings import KafkaSettings, ProducerSettings, RedactionSettings, Settings
from producers import FeedbackClient, InteractionLike, Redactor
from producers.redaction import BUILT_IN
from producers.wire import new_id
from schemas import FeedbackEvent, FeedbackType, InteractionEvent, topics

PROMPT = "Summarise the attached meeting notes in three bullet points."
RESPONSE = "- Budget approved\n- Launch moved to May\n- Hiring freeze lifted " * 3


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _workload(
    interaction: Callable[[int], InteractionLike],
    copy: Callable[[InteractionLike], object],
    events: int,
    rate: float | None = None,
) -> tuple[list[int], float]:
    """Durations (ns) of every call, and the loop's wall time (s); at most ``rate`` events/s."""
    durations: list[int] = []
    perf = time.perf_counter_ns
    started = time.perf_counter()
    for i in range(events // 2):
        if rate is not None and (delay := started + 2 * i / rate - time.perf_counter()) > 0:
            time.sleep(delay)  # an app between requests: the GIL is free meanwhile
        t0 = perf()
        event = interaction(i)
        t1 = perf()
        copy(event)
        t2 = perf()
        durations += (t1 - t0, t2 - t1)
    return durations, time.perf_counter() - started


def _figures(durations: list[int], loop_s: float, events: int) -> dict[str, Any]:
    ordered = sorted(durations)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0, 1)

    return {
        "events": events,
        "caller_events_per_s": round(events / loop_s),
        "call_p50_us": pct(0.50),
        "call_p99_us": pct(0.99),
        "call_p999_us": pct(0.999),
        "call_mean_us": round(statistics.fmean(ordered) / 1000, 1),
    }


def _validation_only(events: int, rate: float | None = None) -> dict[str, Any]:
    def interaction(i: int) -> InteractionEvent:
        return InteractionEvent(
            event_id=new_id(),
            interaction_id=new_id(),
            user_id=f"user-{i % 1000}",
            session_id=f"session-{i % 200}",
            created_at=datetime.now(UTC),
            prompt=PROMPT,
            response=RESPONSE,
            prompt_version="v1.2",
            model="gpt-4o-mini",
            response_time_ms=850,
            metadata={},
        )

    def copy(event: InteractionLike) -> FeedbackEvent:
        return FeedbackEvent(
            event_id=new_id(),
            interaction_id=event.interaction_id,
            user_id=event.user_id,
            session_id=event.session_id,
            created_at=datetime.now(UTC),
            feedback_type=FeedbackType.COPY,
            copied_chars=42,
        )

    _workload(interaction, copy, 1000)  # warm-up
    return _figures(*_workload(interaction, copy, events, rate), events)


def _process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None where /proc cannot tell)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sdk(
    kafka: KafkaSettings, producer: ProducerSettings, events: int, broker_up: bool, rate: float | None = None
) -> dict[str, Any]:
    with FeedbackClient(kafka, producer) as client:
        client.spool_dir  # noqa: B018 - waits until the sender process is up
        sender = client.sender_pid

        def interaction(i: int) -> InteractionEvent:
            return client.record_interaction(
                user_id=f"user-{i % 1000}",
                session_id=f"session-{i % 200}",
                prompt=PROMPT,
                response=RESPONSE,
                prompt_version="v1.2",
                model="gpt-4o-mini",
                response_time_ms=850,
            )

        def copy(event: InteractionLike) -> FeedbackEvent:
            return client.record_copy(event, 42)

        _workload(interaction, copy, 1000)  # warm-up: first segment, librdkafka connect
        client.flush(30 if broker_up else 0.5)
        base = client.metrics()
        started = time.perf_counter()
        app_cpu, sender_cpu = time.process_time(), _process_cpu_s(sender)
        durations, loop_s = _workload(interaction, copy, events, rate)
        if broker_up:
            client.flush(300)
        else:
            # No broker: the work is done once the sender has written every event to the spool.
            deadline = time.monotonic() + 300
            while client.metrics()["spooled"] - base["spooled"] < events and time.monotonic() < deadline:
                time.sleep(0.002)
        done_s = time.perf_counter() - started
        app_cpu = time.process_time() - app_cpu
        sender_after = _process_cpu_s(sender)
        final = client.metrics()
    return {
        **_figures(durations, loop_s, events),
        "sdk_events_per_s": round(events / done_s),
        "app_cpu_us_per_event": round(app_cpu / events * 1e6, 1),
        "sender_cpu_us_per_event": (
            round((sender_after - sender_cpu) / events * 1e6, 1)
            if sender_after is not None and sender_cpu is not None
            else None
        ),
        "sent": final["sent"] - base["sent"],
        "spooled": final["spooled"] - base["spooled"],
        "dropped": final["dropped"],
        "refused": final["refused"],  # refused at the call site: the spool could not keep them
    }


#: The paced runs: an app recording events as they come, well under the SDK's capacity.
PACED_EVENTS_PER_S = 5000

#: Texts the redactor is timed on alone: the workload's, prose with numbers, and one with a value
#: of every kind.
REDACTION_TEXTS = {
    "workload_prompt_and_response": PROMPT + RESPONSE,
    "numbered_list": "1. Budget approved for 2025\n2. Launch moved to May 3\n3. Hiring freeze lifted\n" * 2,
    "every_kind": "Mail jane.doe@example.com or call +1 415 555 0100 about card 4111 1111 1111 1111 "
    "(seen from 10.1.2.3).",
}


def _redaction_us(repeat: int = 20_000) -> dict[str, float]:
    """Microseconds the redactor (every built-in detector) takes per text, alone."""
    redactor = Redactor(BUILT_IN)
    out: dict[str, float] = {}
    for name, text in REDACTION_TEXTS.items():
        started = time.perf_counter()
        for _ in range(repeat):
            redactor.redact(text)
        out[name] = round((time.perf_counter() - started) / repeat * 1e6, 2)
    return out


def run(settings: Settings, events: int = 20_000) -> dict[str, Any]:
    """Benchmark validation alone, the SDK with the broker down (closed port) and up (``settings.kafka``).

    First as a tight loop (the top-level keys), then paced at ``PACED_EVENTS_PER_S`` for a
    quarter of ``events`` (under ``"paced"``).
    """
    results: dict[str, Any] = {}
    paced: dict[str, Any] = {"events_per_s": PACED_EVENTS_PER_S}
    with tempfile.TemporaryDirectory(prefix="bench-producer-") as tmp:
        producer = settings.producer.model_copy(update={"close_timeout_s": 1.0})
        down = settings.kafka.model_copy(
            update={"bootstrap_servers": f"127.0.0.1:{_closed_port()}", "topic_namespace": "bench-down"}
        )
        up = settings.kafka.model_copy(update={"topic_namespace": f"bench{uuid.uuid4().hex[:8]}"})
        names = [topics.topic_name(t, up.topic_namespace) for t in (topics.INTERACTIONS, topics.FEEDBACK)]
        ensure_topics(up, names)
        try:
            for out, count, rate in ((results, events, None), (paced, events // 4, PACED_EVENTS_PER_S)):
                label = "paced" if rate else "tight"
                out["validation_only"] = _validation_only(count, rate)
                spool = Path(tmp) / f"down-{label}"
                out["broker_down"] = _sdk(
                    down, producer.model_copy(update={"spool_dir": spool}), count, False, rate
                )
                spool = Path(tmp) / f"up-{label}"
                out["broker_up"] = _sdk(
                    up, producer.model_copy(update={"spool_dir": spool}), count, True, rate
                )
            redacting = producer.model_copy(
                update={
                    "spool_dir": Path(tmp) / "down-redacted",
                    "redaction": RedactionSettings(detectors=BUILT_IN),
                }
            )
            results["broker_down_redacted"] = _sdk(down, redacting, events, False)
        finally:
            delete_topics(up, names)
    results["redaction_us"] = _redaction_us()
    results["paced"] = paced
    results["load_average"] = [round(load, 2) for load in os.getloadavg()]
    return results


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    print(json.dumps(run(Settings(), count), indent=2))
