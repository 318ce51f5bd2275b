"""The collector closed by default (issue 12): tokens, origins, hosts, rate limits, signed references.

Each test drives the collector's ASGI app in-process (``TestClient``) with the SDK behind it
pointing at a closed port, so accepted events go to a spool of the test's own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from infra.settings import CollectorSettings, KafkaSettings, ProducerSettings, RedactionSettings, Settings
from producers import FeedbackClient, InteractionRef
from producers.collector import bearer_token, create_app, host_name
from producers.ratelimit import RateLimiter, client_key
from producers.signing import MISSING, InteractionSigner
from tests.unit.test_collector import _request
from tests.unit.test_producer_sdk import closed_port, spooled_values, wait_for

TOKEN = "a-collector-token-of-32-characters"
SECRET = "an-interaction-secret-of-at-least-32-chars"
APP = "https://app.example"
EVIL = "https://evil.example"


def _feedback(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "feedback",
        "interaction_id": str(uuid.uuid4()),
        "user_id": "u",
        "session_id": "s",
        "feedback_type": "accept",
        **overrides,
    }


class Collectors:
    """Starts collectors with the given collector (and producer) settings; closes them at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.opened: list[tuple[TestClient, FeedbackClient]] = []

    def __call__(
        self,
        *,
        producer: dict[str, Any] | None = None,
        peer: str = "127.0.0.1",
        base_url: str = "http://127.0.0.1:8080",
        **collector: Any,
    ) -> TestClient:
        kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}", topic_namespace="unit")
        producer_settings = ProducerSettings(
            spool_dir=self.tmp_path / f"spool-{len(self.opened)}",
            close_timeout_s=0.2,
            spool_fsync_interval_s=0,
            **(producer or {}),
        )
        settings = Settings(kafka=kafka, producer=producer_settings, collector=CollectorSettings(**collector))
        client = FeedbackClient(kafka, producer_settings)
        http = TestClient(create_app(settings, client), base_url=base_url, client=(peer, 5000))
        http.__enter__()
        self.opened.append((http, client))
        return http

    def sdk(self, http: TestClient) -> FeedbackClient:
        """The SDK client behind the collector ``http`` talks to."""
        return next(client for server, client in self.opened if server is http)

    def close(self) -> None:
        for http, client in self.opened:
            http.__exit__(None, None, None)
            client.close()


Serve = Collectors


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Collectors]:
    collectors = Collectors(tmp_path)
    yield collectors
    collectors.close()


# -- the token -----------------------------------------------------------------------------------


def test_an_empty_token_from_the_environment_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: FEEDBACKLOOP_COLLECTOR__AUTH_TOKEN= made `?access_token=` pass, for remote clients too."""
    monkeypatch.setenv("FEEDBACKLOOP_COLLECTOR__AUTH_TOKEN", "")
    with pytest.raises(ValidationError, match=r"collector.auth_token has 0 characters; at least 16"):
        Settings()


def test_a_short_token_is_a_settings_error_that_does_not_repeat_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACKLOOP_COLLECTOR__AUTH_TOKEN", "fifteen-chars-x")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "has 15 characters" in str(raised.value)
    assert "fifteen-chars-x" not in str(raised.value)
    monkeypatch.setenv("FEEDBACKLOOP_COLLECTOR__AUTH_TOKEN", "sixteen-chars-xx")
    assert Settings().collector.auth_token == SecretStr("sixteen-chars-xx")


def test_an_empty_supplied_token_counts_as_missing() -> None:
    assert bearer_token(_request({}, "access_token=")) is None
    assert bearer_token(_request({"Authorization": "Bearer "}, "access_token=")) is None


def test_a_remote_client_with_an_empty_token_is_refused(serve: Serve) -> None:
    http = serve(auth_token=TOKEN, peer="203.0.113.7")
    response = http.post("/v1/events?access_token=", json=_feedback())
    assert response.status_code == 401
    assert http.post(f"/v1/events?access_token={TOKEN}", json=_feedback()).status_code == 202


# -- drive-by posts from web pages, DNS rebinding ---------------------------------------------------


def _beacon(http: TestClient, origin: str | None, query: str = "", **headers: str) -> Any:
    """What navigator.sendBeacon sends: a text/plain POST (a CORS simple request: no preflight)."""
    if origin is not None:
        headers["Origin"] = origin
    return http.post(
        f"/v1/events{query}",
        content=json.dumps([_feedback()]),
        headers={"Content-Type": "text/plain;charset=UTF-8", **headers},
    )


def test_without_a_token_a_foreign_web_page_cannot_post(serve: Serve) -> None:
    """Before: a text/plain POST with Origin: https://evil.example to a default collector got 202."""
    http = serve()
    refused = _beacon(http, EVIL)
    assert refused.status_code == 403
    assert "Origin 'https://evil.example' is not in collector.cors_origins" in refused.json()["error"]
    assert _beacon(http, "null").status_code == 403  # sandboxed frames, file:// pages
    assert _beacon(http, None).status_code == 202  # curl, scripts, the SDK's own tools


def test_sendbeacon_from_a_configured_origin_still_works(serve: Serve) -> None:
    http = serve(cors_origins=(APP,))
    accepted = _beacon(http, APP)
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["access-control-allow-origin"] == APP
    assert _beacon(http, EVIL).status_code == 403


def test_with_a_token_listed_origins_are_enforced_too(serve: Serve) -> None:
    http = serve(auth_token=TOKEN, cors_origins=(APP,), peer="203.0.113.7")
    query = f"?access_token={TOKEN}"
    assert _beacon(http, APP, query).status_code == 202
    assert _beacon(http, EVIL, query).status_code == 403
    # A token and no origins listed: the token is the gate, pages anywhere may use it.
    open_http = serve(auth_token=TOKEN, peer="203.0.113.7")
    assert _beacon(open_http, EVIL, query).status_code == 202


def test_any_origin_needs_a_token() -> None:
    with pytest.raises(ValidationError, match=r"'\*' without collector.auth_token"):
        CollectorSettings(cors_origins=("*",))
    assert CollectorSettings(cors_origins=("*",), auth_token=SecretStr(TOKEN)).cors_origins == ("*",)
    with pytest.raises(ValidationError, match="no trailing slash"):
        CollectorSettings(cors_origins=("https://app.example/",))


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8080", True),
        ("localhost:8080", True),
        ("[::1]:8080", True),
        ("192.0.2.10", True),  # an address cannot be rebound; only a name can
        ("rebind.evil.example:8080", False),
        ("localhost.evil.example", False),
    ],
)
def test_without_a_token_the_host_must_not_be_a_foreign_name(serve: Serve, host: str, allowed: bool) -> None:
    """DNS rebinding: a page on rebind.evil.example, re-resolved to 127.0.0.1, posts same-origin."""
    http = serve()
    response = _beacon(http, None, Host=host)
    assert response.status_code == (202 if allowed else 403), response.text
    if not allowed:
        assert "collector.allowed_hosts" in response.json()["error"]


def test_allowed_hosts_name_the_collector(serve: Serve) -> None:
    http = serve(auth_token=TOKEN, allowed_hosts=("feedback.example.com",), peer="203.0.113.7")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert _beacon(http, None, Host="feedback.example.com", **auth).status_code == 202
    assert _beacon(http, None, Host="other.example.com", **auth).status_code == 403
    # With a token and no allowed_hosts the Host is not checked (a proxy may use any name).
    assert _beacon(serve(auth_token=TOKEN), None, Host="any.example", **auth).status_code == 202


# -- rate limit ------------------------------------------------------------------------------------


def test_one_client_gets_429_with_retry_after_and_the_others_do_not(serve: Serve) -> None:
    """Before: 0 of ~10,000 requests from one client got 429."""
    http = serve(rate_limit_per_s=0.5, rate_limit_burst=5)
    statuses = [http.post("/v1/events", json=_feedback()).status_code for _ in range(8)]
    assert statuses == [202] * 5 + [429] * 3
    limited = http.post("/v1/events", json=_feedback())
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 2
    assert "collector.rate_limit_per_s" in limited.json()["error"]
    other = serve(rate_limit_per_s=0.5, rate_limit_burst=5, peer="127.0.0.2")
    assert other.post("/v1/events", json=_feedback()).status_code == 202


def test_the_rate_limit_can_be_switched_off(serve: Serve) -> None:
    http = serve(rate_limit_per_s=0, rate_limit_burst=1)
    assert {http.post("/v1/events", json=_feedback()).status_code for _ in range(20)} == {202}


# -- signed interaction references ---------------------------------------------------------------


def test_with_a_secret_feedback_needs_a_valid_interaction_token(serve: Serve, tmp_path: Path) -> None:
    http = serve(producer={"interaction_secret": SECRET})
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    with FeedbackClient(
        kafka, ProducerSettings(spool_dir=tmp_path / "app", interaction_secret=SECRET)
    ) as app:
        ref = InteractionRef(uuid.uuid4(), "u-1", "s-1")
        token = app.interaction_token(ref)
    ids = {"interaction_id": str(ref.interaction_id), "user_id": "u-1", "session_id": "s-1"}
    good = _feedback(**ids, interaction_token=token)
    missing = _feedback(**ids)
    forged = _feedback(**{**ids, "user_id": "someone-else"}, interaction_token=token)
    garbage = _feedback(**ids, interaction_token="v1.not-a-token")
    response = http.post("/v1/events", json=[good, missing, forged, garbage])
    assert response.status_code == 403
    body = response.json()
    assert [a["index"] for a in body["accepted"]] == [0]
    reasons = {r["index"]: r["errors"][0] for r in body["rejected"]}
    assert {r["field"] for r in reasons.values()} == {"interaction_token"}
    assert "missing" in reasons[1]["message"]
    assert "does not match" in reasons[2]["message"]
    assert "does not match" in reasons[3]["message"]
    assert http.post("/v1/events", json=good).status_code == 202


def test_without_a_secret_an_interaction_token_is_ignored(serve: Serve) -> None:
    http = serve()
    response = http.post("/v1/events", json=_feedback(interaction_token="v1.anything"))
    assert response.status_code == 202, response.text


def test_a_previous_secret_is_still_accepted(serve: Serve, tmp_path: Path) -> None:
    new = "a-new-interaction-secret-of-32-chars!"
    http = serve(producer={"interaction_secret": new, "interaction_previous_secrets": (SECRET,)})
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    with FeedbackClient(
        kafka, ProducerSettings(spool_dir=tmp_path / "app", interaction_secret=SECRET)
    ) as app:
        ref = InteractionRef(uuid.uuid4(), "u", "s")
        old_token = app.interaction_token(ref)
    ids = {"interaction_id": str(ref.interaction_id), "user_id": "u", "session_id": "s"}
    assert http.post("/v1/events", json=_feedback(**ids, interaction_token=old_token)).status_code == 202


# -- redaction at the collector --------------------------------------------------------------------


def test_the_collector_redacts_before_it_acknowledges(serve: Serve, tmp_path: Path) -> None:
    http = serve(producer={"redaction": RedactionSettings(detectors=("email", "card"))})
    interaction = {
        "type": "interaction",
        "interaction_id": str(uuid.uuid4()),
        "user_id": "u",
        "session_id": "s",
        "prompt": "write to ann@example.com",
        "prompt_version": "v1",
        "model": "m",
        "response": "Done: ann@example.com, card 4111 1111 1111 1111.",
        "response_time_ms": 5,
    }
    edit = _feedback(feedback_type="edit", corrected_output="Sent to ann@example.com")
    response = http.post("/v1/events", json=[interaction, edit])
    assert response.status_code == 202, response.text
    sdk = serve.sdk(http)
    wait_for(lambda: sdk.metrics()["spooled"] == 2)
    spool_dir = sdk.spool_dir
    sdk.close()
    stored = spooled_values(spool_dir)
    text = json.dumps(stored)
    assert "ann@example.com" not in text
    assert "4111" not in text
    assert stored[0]["response"] == "Done: [email], card [card]."
    assert stored[0]["metadata"] == {"redacted.prompt": "email", "redacted.response": "card,email"}
    assert stored[1]["corrected_output"] == "Sent to [email]"


# -- the pure parts: buckets, tokens, hosts ----------------------------------------------------------


def test_token_buckets_refill_at_the_rate_and_cap_at_the_burst() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 0.0) == pytest.approx(0.5)  # one token comes back in 0.5 s
    assert limiter.take("a", 0.5) == 0.0
    assert limiter.take("b", 0.5) == 0.0  # another client has its own bucket
    assert [limiter.take("a", 100.0) for _ in range(4)][-1] > 0  # idle for long: only the burst
    with pytest.raises(ValueError, match="rate_per_s"):
        RateLimiter(0, 1)


def test_the_buckets_are_bounded_forgetting_the_least_recently_used() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, max_keys=2)
    limiter.take("a", 0.0)
    limiter.take("b", 0.0)
    limiter.take("a", 0.0)  # refused; a is now the most recently used
    limiter.take("c", 0.0)  # b is forgotten
    assert len(limiter) == 2
    assert limiter.take("a", 0.0) > 0
    assert limiter.take("b", 0.0) == 0.0  # came back with a full bucket


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same /64: one client
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "-"),
    ],
)
def test_clients_are_counted_by_address_and_ipv6_by_its_64(address: str | None, key: str) -> None:
    assert client_key(address) == key


def test_interaction_tokens_bind_all_three_ids_unambiguously() -> None:
    signer = InteractionSigner(b"k" * 32)
    interaction = uuid.uuid4()
    token = signer.token(interaction, "ab", "c")
    assert token.startswith("v1.")
    assert len(token) == 46
    assert signer.check(token, interaction, "ab", "c") is None
    assert signer.check(token, interaction, "a", "bc") is not None  # lengths keep the ids apart
    assert signer.check(token.upper(), interaction, "ab", "c") is not None
    assert signer.check(token[:-1], interaction, "ab", "c") is not None
    assert signer.check(12345, interaction, "ab", "c") is not None
    assert signer.check("", interaction, "ab", "c") == MISSING
    rotated = InteractionSigner(b"n" * 32, [b"k" * 32])
    assert rotated.check(token, interaction, "ab", "c") is None
    assert rotated.token(interaction, "ab", "c") != token  # new tokens use the new secret


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("LocalHost", "localhost"),
        ("feedback.example.com.:443", "feedback.example.com"),
    ],
)
def test_host_names(header: str, name: str) -> None:
    assert host_name(header) == name
