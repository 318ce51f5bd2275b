"""The HTTP collector as deployed: ``feedbackloop collector`` in a process of its own, a real
uvicorn on 127.0.0.1, called with httpx, publishing to the real broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.kafka import client_config, delete_topics, ensure_topics, public_topic_names
from infra.settings import KafkaSettings, ProducerSettings
from producers import FeedbackClient, InteractionRef
from schemas import topics

TOKEN = "collector-test-token"
ORIGIN = "https://app.example"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running collector: its base URL, process and settings."""

    url: str
    process: subprocess.Popen[bytes]
    kafka: KafkaSettings
    log: Path

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown, which closes the SDK), then wait for the PID."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


def start_collector(kafka: KafkaSettings, workdir: Path, **env: str) -> Server:
    """Start ``feedbackloop collector`` on a free port and wait until /healthz answers 200."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "FEEDBACKLOOP_KAFKA__TOPIC_NAMESPACE": kafka.topic_namespace,
        "FEEDBACKLOOP_PRODUCER__SPOOL_DIR": str(workdir / "spool"),
        **{f"FEEDBACKLOOP_{key.upper()}": value for key, value in env.items()},
    }
    log = workdir / "collector.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "feedbackloop.cli",
                "collector",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=workdir,  # away from any .env of the checkout
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, kafka, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"collector exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"collector did not become healthy:\n{log.read_text()}")


def wait_for_event_ids(kafka: KafkaSettings, base: str, wanted: set[str], timeout_s: float = 90) -> list[str]:
    """Every event_id in the topic once ``wanted`` are all there (all of it, to catch duplicates)."""
    name = topics.topic_name(base, kafka.topic_namespace)
    consumer = Consumer(
        client_config(kafka, **{"group.id": f"read-{uuid.uuid4().hex}", "enable.auto.commit": False})
    )
    try:
        partitions = consumer.list_topics(name, timeout=30).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in partitions])
        seen: list[str] = []
        deadline = time.monotonic() + timeout_s
        while not wanted <= set(seen):
            assert time.monotonic() < deadline, f"missing {len(wanted - set(seen))} events in {name}"
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                seen.append(json.loads(message.value() or b"{}")["event_id"])
        # Drain what else is there, so a duplicate would show.
        while (message := consumer.poll(2.0)) is not None:
            if not message.error():
                seen.append(json.loads(message.value() or b"{}")["event_id"])
        return seen
    finally:
        consumer.close()


def interaction(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "interaction",
        "event_id": str(uuid.uuid4()),
        "interaction_id": str(uuid.uuid4()),
        "user_id": "web-user",
        "session_id": "web-session",
        "created_at": datetime.now(UTC).isoformat(),
        "prompt": "hi",
        "prompt_version": "v1",
        "model": "m",
        "response": "hello",
        "response_time_ms": 120,
        **overrides,
    }


def feedback(feedback_type: str, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "feedback",
        "event_id": str(uuid.uuid4()),
        "interaction_id": str(uuid.uuid4()),
        "user_id": "web-user",
        "session_id": "web-session",
        "feedback_type": feedback_type,
        **overrides,
    }


@pytest.fixture(scope="module")
def module_kafka(bootstrap_servers: str) -> Iterator[KafkaSettings]:
    """Topics of this module's own, shared by its long-running collectors."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_namespace=f"c{uuid.uuid4().hex[:10]}")
    ensure_topics(kafka, public_topic_names(kafka))
    yield kafka
    delete_topics(kafka, public_topic_names(kafka))


@pytest.fixture(scope="module")
def secured(module_kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A collector with a bearer token, CORS for one origin and small limits."""
    server = start_collector(
        module_kafka,
        tmp_path_factory.mktemp("secured"),
        collector__auth_token=TOKEN,
        collector__cors_origins=json.dumps([ORIGIN]),
        collector__max_body_bytes="8192",
        collector__max_events_per_request="10",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def local_only(module_kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A collector without a token (local clients only) and a 5-event buffer."""
    server = start_collector(module_kafka, tmp_path_factory.mktemp("local"), producer__buffer_max_events="5")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_one_event_or_a_batch_gets_202(secured: Server, http: httpx.Client) -> None:
    one = http.post(f"{secured.url}/v1/events", json=interaction(), headers=auth())
    assert one.status_code == 202, one.text
    assert [a["index"] for a in one.json()["accepted"]] == [0]
    batch = [interaction(), feedback("copy", copied_chars=3), feedback("view_end", dwell_ms=900)]
    many = http.post(f"{secured.url}/v1/events", json=batch, headers=auth())
    assert many.status_code == 202, many.text
    assert [a["event_id"] for a in many.json()["accepted"]] == [e["event_id"] for e in batch]
    assert many.json()["rejected"] == []


def test_ids_and_timestamps_are_filled_in_when_absent(secured: Server, http: httpx.Client) -> None:
    event = feedback("thumbs_up")
    del event["event_id"]
    response = http.post(f"{secured.url}/v1/events", json=event, headers=auth())
    assert response.status_code == 202, response.text
    assert uuid.UUID(response.json()["accepted"][0]["event_id"])


def test_invalid_events_get_400_with_reasons_and_the_valid_ones_go_through(
    secured: Server, http: httpx.Client
) -> None:
    good_first, good_last = interaction(), feedback("edit", corrected_output="fixed")
    batch = [
        good_first,
        feedback("copy"),  # copied_chars missing
        {"type": "click", "x": 1},
        feedback("thumbs_down", user_id=7),
        "not an object",
        good_last,
    ]
    response = http.post(f"{secured.url}/v1/events", json=batch, headers=auth())
    assert response.status_code == 400
    body = response.json()
    assert [a["index"] for a in body["accepted"]] == [0, 5]
    reasons = {r["index"]: r["errors"] for r in body["rejected"]}
    assert set(reasons) == {1, 2, 3, 4}
    assert any("copied_chars" in e["message"] for e in reasons[1])
    assert "type must be one of" in reasons[2][0]["message"]
    assert reasons[3][0]["field"] == "user_id"
    assert "JSON object" in reasons[4][0]["message"]
    wanted = {good_first["event_id"], good_last["event_id"]}
    ids = wait_for_event_ids(secured.kafka, topics.INTERACTIONS, {good_first["event_id"]})
    ids += wait_for_event_ids(secured.kafka, topics.FEEDBACK, {good_last["event_id"]})
    assert wanted <= set(ids)
    assert len(ids) == len(set(ids))


def test_malformed_bodies_get_400(secured: Server, http: httpx.Client) -> None:
    for body in (b"{not json", b"42", b"[]"):
        response = http.post(f"{secured.url}/v1/events", content=body, headers=auth())
        assert response.status_code == 400, body
        assert response.json()["error"]


def test_oversized_bodies_and_batches_get_413(secured: Server, http: httpx.Client) -> None:
    big = interaction(response="x" * 10_000)
    declared = http.post(f"{secured.url}/v1/events", json=big, headers=auth())
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        data = json.dumps(big).encode()
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    streamed = http.post(f"{secured.url}/v1/events", content=chunks(), headers=auth())
    assert streamed.status_code == 413
    too_many = http.post(f"{secured.url}/v1/events", json=[feedback("accept")] * 11, headers=auth())
    assert too_many.status_code == 413
    assert "limit is 10" in too_many.json()["error"]


def test_bearer_token_is_required_when_configured(secured: Server, http: httpx.Client) -> None:
    url = f"{secured.url}/v1/events"
    missing = http.post(url, json=feedback("accept"))
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = http.post(url, json=feedback("accept"), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert http.post(url, json=feedback("accept"), headers=auth()).status_code == 202
    # For navigator.sendBeacon, which cannot set headers: RFC 6750's query parameter.
    beacon = http.post(
        url,
        params={"access_token": TOKEN},
        content=json.dumps(feedback("accept")),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert beacon.status_code == 202
    assert http.get(f"{secured.url}/metrics").status_code == 401
    assert http.get(f"{secured.url}/healthz").status_code == 200


def test_without_a_token_only_local_clients_may_post(local_only: Server, http: httpx.Client) -> None:
    url = f"{local_only.url}/v1/events"
    assert http.post(url, json=feedback("accept")).status_code == 202
    # Through a proxy on this machine a remote client keeps its own address (X-Forwarded-For).
    remote = http.post(url, json=feedback("accept"), headers={"X-Forwarded-For": "203.0.113.7"})
    assert remote.status_code == 403


def test_a_full_buffer_gets_429(local_only: Server, http: httpx.Client) -> None:
    response = http.post(f"{local_only.url}/v1/events", json=[feedback("accept") for _ in range(6)])
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert http.post(f"{local_only.url}/v1/events", json=[feedback("accept")] * 2).status_code == 202


def test_cors_for_the_configured_origin(secured: Server, http: httpx.Client) -> None:
    preflight = http.options(
        f"{secured.url}/v1/events",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    post = http.post(
        f"{secured.url}/v1/events", json=feedback("accept"), headers={**auth(), "Origin": ORIGIN}
    )
    assert post.headers["access-control-allow-origin"] == ORIGIN
    other = http.options(
        f"{secured.url}/v1/events",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers


def test_health_and_prometheus_metrics(secured: Server, http: httpx.Client) -> None:
    health = http.get(f"{secured.url}/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    metrics = http.get(f"{secured.url}/metrics", headers=auth())
    assert metrics.status_code == 200
    for name in (
        "feedbackloop_collector_requests_total",
        "feedbackloop_collector_events_total",
        "feedbackloop_producer_sent_total",
        "feedbackloop_producer_spooled_total",
        "feedbackloop_producer_dropped_total",
    ):
        assert name in metrics.text


def test_graceful_shutdown_delivers_what_was_accepted(kafka: KafkaSettings, tmp_path: Path) -> None:
    server = start_collector(kafka, tmp_path / "collector", collector__auth_token=TOKEN)
    try:
        events = [interaction(session_id=f"s{i % 4}") for i in range(200)]
        with httpx.Client(timeout=30) as http:
            for start in range(0, len(events), 50):
                response = http.post(
                    f"{server.url}/v1/events", json=events[start : start + 50], headers=auth()
                )
                assert response.status_code == 202, response.text
    finally:
        server.stop()
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete.
    assert server.process.returncode in (0, -signal.SIGTERM), server.log.read_text()
    assert "Application shutdown complete" in server.log.read_text()
    ids = wait_for_event_ids(kafka, topics.INTERACTIONS, {e["event_id"] for e in events})
    assert sorted(ids) == sorted(e["event_id"] for e in events)


def test_a_broker_outage_is_absorbed_by_the_spool(kafka: KafkaSettings, tmp_path: Path) -> None:
    """Nothing listens on the collector's bootstrap port: events are spooled, 202 all the same, and
    a collector started later on the same spool delivers them."""
    dead = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    workdir = tmp_path / "collector"
    offline = start_collector(dead, workdir, collector__auth_token=TOKEN)
    events = [feedback("copy", copied_chars=i) for i in range(30)]
    try:
        with httpx.Client(timeout=30) as http:
            response = http.post(f"{offline.url}/v1/events", json=events[:10], headers=auth())
            assert response.status_code == 202
            _wait(lambda: http.get(f"{offline.url}/healthz").json().get("mode") == "spool")
            response = http.post(f"{offline.url}/v1/events", json=events[10:20], headers=auth())
            assert response.status_code == 202
            response = http.post(f"{offline.url}/v1/events", json=events[20:], headers=auth())
            assert response.status_code == 202
    finally:
        offline.stop()
    online = start_collector(kafka, workdir, collector__auth_token=TOKEN)
    try:
        ids = wait_for_event_ids(kafka, topics.FEEDBACK, {e["event_id"] for e in events})
    finally:
        online.stop()
    assert sorted(ids) == sorted(e["event_id"] for e in events)


def _wait(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_a_spool_folder_that_cannot_be_created_stops_the_start_naming_it(
    module_kafka: KafkaSettings, tmp_path: Path
) -> None:
    """Before: the collector started, answered 202, and its sender process crash-looped (exit 2)."""
    (tmp_path / "a-file").write_text("")
    spool_dir = tmp_path / "a-file" / "spool"  # a real ENOTDIR from the kernel
    environment = {
        **os.environ,
        "FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS": module_kafka.bootstrap_servers,
        "FEEDBACKLOOP_PRODUCER__SPOOL_DIR": str(spool_dir),
    }
    result = subprocess.run(
        [sys.executable, "-m", "feedbackloop.cli", "collector", "--port", str(free_port())],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert str(spool_dir) in result.stderr
    assert "cannot be created or written" in result.stderr


def test_an_event_just_under_one_mib_gets_413_naming_it(module_kafka: KafkaSettings, tmp_path: Path) -> None:
    """Before: a body just under 1 MiB got 202, then librdkafka refused it (MSG_SIZE_TOO_LARGE): lost."""
    server = start_collector(module_kafka, tmp_path / "collector", producer__field_caps__response="2000000")
    try:
        big, small = interaction(response="r" * 1_040_000), feedback("thumbs_up")
        body = json.dumps([big, small]).encode()
        assert len(body) < 1 << 20  # within the collector's body limit
        with httpx.Client(timeout=60) as http:
            response = http.post(f"{server.url}/v1/events", content=body)
            assert response.status_code == 413, response.text
            rejected = response.json()["rejected"]
            assert [(r["index"], r["event_id"]) for r in rejected] == [(0, big["event_id"])]
            assert "the limit is 1,000,000" in rejected[0]["errors"][0]["message"]
    finally:
        server.stop()
    ids = wait_for_event_ids(module_kafka, topics.FEEDBACK, {small["event_id"]})
    assert ids.count(small["event_id"]) == 1


def test_four_clients_against_a_small_spool_lose_no_accepted_event(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """Before, with the broker away and a 64 KiB spool: 360 events got 202, 46 were spooled and
    314 dropped. Now every 202 is kept (and delivered once the broker answers); the rest get 503."""
    dead = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    workdir = tmp_path / "collector"
    offline = start_collector(
        dead, workdir, producer__spool_max_bytes=str(1 << 16), producer__spool_segment_bytes=str(1 << 12)
    )
    kept: list[list[str]] = [[] for _ in range(4)]
    statuses: list[int] = []

    def poster(n: int) -> None:
        with httpx.Client(timeout=30) as http:
            for i in range(30):
                batch = [
                    feedback("copy", copied_chars=i, comment="c" * 200, session_id=f"c{n}") for _ in range(3)
                ]
                response = http.post(f"{offline.url}/v1/events", json=batch)
                statuses.append(response.status_code)
                if response.status_code == 202:
                    kept[n] += [e["event_id"] for e in batch]
                else:
                    assert response.status_code == 503, response.text
                    assert response.headers["retry-after"] == "5"

    try:
        threads = [threading.Thread(target=poster, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert 503 in statuses
        health = httpx.get(f"{offline.url}/healthz", timeout=10)
        assert health.status_code == 503
        assert "spool" in health.json()["reason"]
    finally:
        offline.stop()
    wanted = {event_id for ids in kept for event_id in ids}
    assert wanted
    online = start_collector(kafka, workdir)
    try:
        ids = wait_for_event_ids(kafka, topics.FEEDBACK, wanted)
    finally:
        online.stop()
    assert sorted(ids) == sorted(wanted)  # every accepted event, once; nothing refused got in


def test_a_field_over_its_default_cap_gets_413_naming_it(local_only: Server, http: httpx.Client) -> None:
    event = interaction(response="r" * 100_001)
    response = http.post(f"{local_only.url}/v1/events", json=event)
    assert response.status_code == 413
    error = response.json()["rejected"][0]
    assert (error["event_id"], error["errors"][0]["field"]) == (event["event_id"], "response")
    assert "producer.field_caps.response" in error["errors"][0]["message"]


# -- closed by default (issue 12) ------------------------------------------------------------------

SECRET = "an-interaction-secret-of-at-least-32-chars"


def test_drive_by_posts_and_rebound_names_are_refused(local_only: Server, http: httpx.Client) -> None:
    """Before: a text/plain POST with Origin: https://evil.example to a default collector got 202."""
    url = f"{local_only.url}/v1/events"
    beacon = {"Content-Type": "text/plain;charset=UTF-8"}
    body = json.dumps([feedback("accept")])
    evil = http.post(url, content=body, headers={**beacon, "Origin": "https://evil.example"})
    assert evil.status_code == 403
    assert "collector.cors_origins" in evil.json()["error"]
    rebound = http.post(url, content=body, headers={**beacon, "Host": "rebind.evil.example"})
    assert rebound.status_code == 403
    assert "collector.allowed_hosts" in rebound.json()["error"]
    assert http.post(url, content=body, headers={**beacon, "Host": "localhost"}).status_code == 202


def test_an_empty_token_stops_the_collector_at_start(module_kafka: KafkaSettings, tmp_path: Path) -> None:
    """Before: FEEDBACKLOOP_COLLECTOR__AUTH_TOKEN= let ?access_token= pass, for remote clients too."""
    environment = {
        **os.environ,
        "FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS": module_kafka.bootstrap_servers,
        "FEEDBACKLOOP_PRODUCER__SPOOL_DIR": str(tmp_path / "spool"),
        "FEEDBACKLOOP_COLLECTOR__AUTH_TOKEN": "",
    }
    result = subprocess.run(
        [sys.executable, "-m", "feedbackloop.cli", "collector", "--port", str(free_port())],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "collector.auth_token has 0 characters; at least 16" in result.stdout + result.stderr


def test_one_client_over_its_rate_gets_429(module_kafka: KafkaSettings, tmp_path: Path) -> None:
    """Before: 0 of ~10,000 requests from one client got 429."""
    server = start_collector(
        module_kafka, tmp_path / "collector", collector__rate_limit_per_s="1", collector__rate_limit_burst="5"
    )
    try:
        with httpx.Client(timeout=30) as http:
            statuses = [
                http.post(f"{server.url}/v1/events", json=feedback("accept")).status_code for _ in range(8)
            ]
            limited = http.post(f"{server.url}/v1/events", json=feedback("accept"))
    finally:
        server.stop()
    assert statuses[:5] == [202] * 5
    assert 429 in statuses[5:]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1


@pytest.fixture(scope="module")
def hardened(module_kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A collector with signed references, redaction and short timeouts."""
    server = start_collector(
        module_kafka,
        tmp_path_factory.mktemp("hardened"),
        producer__interaction_secret=SECRET,
        producer__redaction__detectors=json.dumps(["email", "card"]),
        collector__header_timeout_s="1",
        collector__body_timeout_s="1",
    )
    yield server
    server.stop()


def _held_open_s(url: str, head: bytes = b"", trickle: bytes = b"") -> tuple[bytes, float]:
    """Open a socket to ``url``, send ``head`` then ``trickle`` a byte per 0.1 s; the answer and
    how long the server kept the socket open."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=0.1) as sock:
        opened = time.monotonic()
        sock.sendall(head)
        received, position = b"", 0
        while time.monotonic() - opened < 20:
            if position < len(trickle):
                with contextlib.suppress(OSError):
                    sock.sendall(trickle[position : position + 1])
                position += 1
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        return received, time.monotonic() - opened


def test_slow_clients_are_cut_off(hardened: Server) -> None:
    """Before: idle, header-trickle and body-trickle sockets stayed open for 20 s (and more)."""
    answer, held = _held_open_s(hardened.url)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert held < 4
    answer, held = _held_open_s(hardened.url, trickle=b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert held < 4
    head = b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n"
    answer, held = _held_open_s(hardened.url, head, trickle=b"x" * 500)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"collector.body_timeout_s" in answer
    assert held < 4


def test_signed_references_and_redaction_end_to_end(
    hardened: Server, module_kafka: KafkaSettings, tmp_path: Path
) -> None:
    app = ProducerSettings(spool_dir=tmp_path / "app-spool", interaction_secret=SECRET)
    with FeedbackClient(module_kafka, app) as sdk:  # the app server, which renders the page
        ref = InteractionRef(uuid.uuid4(), "web-user", "web-session")
        token = sdk.interaction_token(ref)
    ids = {"interaction_id": str(ref.interaction_id), "user_id": ref.user_id, "session_id": ref.session_id}
    signed = interaction(**ids, interaction_token=token, prompt="mail ann@example.com")
    edit = feedback("edit", **ids, interaction_token=token, corrected_output="Card 4111 1111 1111 1111.")
    forged = feedback("thumbs_down", **{**ids, "user_id": "someone-else"}, interaction_token=token)
    unsigned = feedback("thumbs_up", **ids)
    with httpx.Client(timeout=30) as http:
        response = http.post(f"{hardened.url}/v1/events", json=[signed, edit, forged, unsigned])
    assert response.status_code == 403, response.text
    assert [a["event_id"] for a in response.json()["accepted"]] == [signed["event_id"], edit["event_id"]]
    assert {r["index"] for r in response.json()["rejected"]} == {2, 3}
    stored = _values(module_kafka, topics.INTERACTIONS, signed["event_id"])
    assert stored["prompt"] == "mail [email]"
    assert stored["metadata"] == {"redacted.prompt": "email"}
    assert "interaction_token" not in stored
    assert _values(module_kafka, topics.FEEDBACK, edit["event_id"])["corrected_output"] == "Card [card]."


def _values(kafka: KafkaSettings, base: str, event_id: str, timeout_s: float = 90) -> dict[str, Any]:
    """The JSON of the event ``event_id`` in the topic (waiting for it)."""
    name = topics.topic_name(base, kafka.topic_namespace)
    consumer = Consumer(
        client_config(kafka, **{"group.id": f"read-{uuid.uuid4().hex}", "enable.auto.commit": False})
    )
    try:
        partitions = consumer.list_topics(name, timeout=30).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                value: dict[str, Any] = json.loads(message.value() or b"{}")
                if value.get("event_id") == event_id:
                    return value
        raise AssertionError(f"event {event_id} not in {name}")
    finally:
        consumer.close()
