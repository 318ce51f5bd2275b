"""The naive peer: the blog post's design written plainly, as a benchmark subject for ``make bench``.

One Faust agent per input topic, each handling one message at a time; the join by table lookups (an
interaction waits in a table for its feedback, feedback that came first waits in another); edit
distance as character Levenshtein with rapidfuzz; rows inserted into ClickHouse (chdb) as they come
(gathered for up to ``--flush-s`` or ``--batch`` rows, since an INSERT per row would make it ten
times slower still and say nothing about the design). It computes no outcomes and no windows: it is
what "a few lines of Faust" give, and the bench compares its events per processor CPU-second with
the processors' on the same workload and broker.

Run by ``feedbackloop bench`` as a child process::

    python bench/naive_peer.py --bootstrap 127.0.0.1:9092 --interactions T1 --feedback T2 \
        --app-id G --chdb DIR --stats FILE worker -l warn

It writes ``{"events": n, "rows": n}`` to ``--stats`` every second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import chdb
import faust
from rapidfuzz.distance import Levenshtein

from schemas import FeedbackEvent, InteractionEvent

DDL = (
    "CREATE DATABASE IF NOT EXISTS naive",
    """CREATE TABLE IF NOT EXISTS naive.interactions (
        interaction_id UUID, event_id UUID, user_id String, session_id String, created_at DateTime64(3),
        prompt_version String, model String, response_time_ms UInt32
    ) ENGINE = ReplacingMergeTree ORDER BY interaction_id""",
    """CREATE TABLE IF NOT EXISTS naive.feedback (
        event_id UUID, interaction_id UUID, user_id String, feedback_type String,
        created_at DateTime64(3), prompt_version String, edit_distance Nullable(UInt32),
        time_to_feedback_ms Int64
    ) ENGINE = ReplacingMergeTree ORDER BY event_id""",
)


class Rows:
    """Rows on their way into chdb, written as they come (a small batch at most)."""

    def __init__(self, path: str, batch: int, flush_s: float) -> None:
        self.session = chdb.session.Session(path)
        for statement in DDL:
            self.session.query(statement)
        self.batch = batch
        self.flush_s = flush_s
        self.pending: dict[str, list[str]] = {"interactions": [], "feedback": []}
        self.written = 0
        self.last = time.monotonic()

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.pending[table].append(json.dumps(row))
        if len(self.pending[table]) >= self.batch or time.monotonic() - self.last >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        for table, rows in self.pending.items():
            if rows:
                self.session.query(f"INSERT INTO naive.{table} FORMAT JSONEachRow\n" + "\n".join(rows))
                self.written += len(rows)
                rows.clear()
        self.last = time.monotonic()


def build(args: argparse.Namespace) -> faust.App:
    """The peer's Faust app."""
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        topic_partitions=args.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=args.datadir,
    )
    interactions_topic = app.topic(args.interactions, key_serializer="raw", value_serializer="raw")
    feedback_topic = app.topic(args.feedback, key_serializer="raw", value_serializer="raw")
    interactions = app.Table("interactions", partitions=args.partitions)
    waiting = app.Table("waiting_feedback", partitions=args.partitions)
    rows = Rows(args.chdb, args.batch, args.flush_s)
    counted = {"events": 0}

    def joined(x: dict[str, Any], fb: dict[str, Any]) -> None:
        distance = None
        if fb["feedback_type"] == "edit":
            distance = Levenshtein.distance(x["response"], fb["corrected_output"])
        rows.add(
            "feedback",
            {
                "event_id": fb["event_id"], "interaction_id": fb["interaction_id"],
                "user_id": fb["user_id"], "feedback_type": fb["feedback_type"],
                "created_at": fb["created_at"][:-1].replace("T", " "),
                "prompt_version": x["prompt_version"], "edit_distance": distance,
                "time_to_feedback_ms": fb["created_ms"] - x["created_ms"],
            },
        )  # fmt: skip

    @app.agent(interactions_topic)
    async def on_interaction(stream: Any) -> None:
        async for value in stream:
            counted["events"] += 1
            event = InteractionEvent.model_validate_json(value)
            x = json.loads(event.model_dump_json())
            x["created_ms"] = int(event.created_at.timestamp() * 1000)
            iid = x["interaction_id"]
            if interactions.get(iid) is not None:
                continue  # a redelivery
            interactions[iid] = x
            rows.add(
                "interactions",
                {
                    "interaction_id": iid, "event_id": x["event_id"], "user_id": x["user_id"],
                    "session_id": x["session_id"], "created_at": x["created_at"][:-1].replace("T", " "),
                    "prompt_version": x["prompt_version"], "model": x["model"],
                    "response_time_ms": x["response_time_ms"],
                },
            )  # fmt: skip
            early = waiting.get(iid)
            if early:
                for fb in early:
                    joined(x, fb)
                waiting[iid] = []

    @app.agent(feedback_topic)
    async def on_feedback(stream: Any) -> None:
        async for value in stream:
            counted["events"] += 1
            event = FeedbackEvent.model_validate_json(value)
            fb = json.loads(event.model_dump_json())
            fb["created_ms"] = int(event.created_at.timestamp() * 1000)
            x = interactions.get(fb["interaction_id"])
            if x is None:
                waiting[fb["interaction_id"]] = [*(waiting.get(fb["interaction_id"]) or []), fb]
            else:
                joined(x, fb)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]  # mode's timer decorator is untyped
    async def report() -> None:
        rows.flush()
        scratch = f"{args.stats}.tmp"
        Path(scratch).write_text(json.dumps({"events": counted["events"], "rows": rows.written}))
        os.replace(scratch, args.stats)

    return app


def main() -> None:
    """Parse the peer's own options; the rest goes to Faust's command line (``worker -l warn``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--bootstrap", "--interactions", "--feedback", "--app-id", "--chdb", "--stats", "--datadir"):
        parser.add_argument(name, required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--flush-s", type=float, default=1.0)
    args, rest = parser.parse_known_args()
    app = build(args)
    sys.argv = [sys.argv[0], *rest]
    app.main()


if __name__ == "__main__":
    main()
