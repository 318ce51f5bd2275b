"""The faust-streaming internals ``stream_processors/faust_transport.py`` relies on are still there.

That module overrides private methods and reads private attributes of faust-streaming (and of mode,
its service library). None of them is an API: a release may rename, re-sign or rewrite them without
notice. Each test here fails with a message that says what moved and what to re-check, so an
upgrade is a conscious re-read of those internals, never a silent change of behaviour.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import tomllib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport import base as faust_base
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from packaging.requirements import Requirement

from stream_processors.faust_transport import FastApp, FastConsumer, FastTransport

RECHECK = (
    "stream_processors/faust_transport.py relies on it: re-read faust-streaming's "
    "faust/transport/consumer.py (Consumer._drain_messages, ack, _commit_offsets) and "
    "faust/transport/drivers/aiokafka.py in the installed version, adapt FastConsumer/FastApp, "
    "then update this test"
)
Consumer = faust_aiokafka.Consumer


def _pin() -> Requirement:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    pins = [Requirement(d) for d in pyproject["project"]["dependencies"] if d.startswith("faust-streaming")]
    assert len(pins) == 1, "pyproject.toml must list faust-streaming once"
    return pins[0]


def test_the_installed_faust_streaming_is_within_the_pin() -> None:
    pin = _pin()
    installed = importlib.metadata.version("faust-streaming")
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in pin.specifier), (
        f"{pin} has no upper bound: faust-streaming's private internals may change in any release; {RECHECK}"
    )
    assert pin.specifier.contains(installed), (
        f"faust-streaming {installed} is installed, pyproject.toml pins {pin}; {RECHECK}"
    )


#: (owner, name, parameter names, kind) of every private or semi-private callable we override or call.
SIGNATURES: list[tuple[type, str, list[str], str]] = [
    (Consumer, "_drain_messages", ["self", "fetcher"], "coroutine"),  # overridden
    (Consumer, "_commit_offsets", ["self", "offsets", "start_new_transaction"], "coroutine"),  # overridden
    (Consumer, "_add_gap", ["self", "tp", "offset_from", "offset_to"], "coroutine"),
    (Consumer, "commit", ["self", "topics", "start_new_transaction"], "coroutine"),
    (Consumer, "getmany", ["self", "timeout"], "async generator"),
    (Consumer, "track_message", ["self", "message"], "function"),
    (Consumer, "ack", ["self", "message"], "function"),
    (Consumer, "highwater", ["self", "tp"], "function"),
    (Consumer, "position", ["self", "tp"], "coroutine"),
    (Consumer, "assignment", ["self"], "function"),
    (Consumer, "wait_first", ["self", "coros", "timeout"], "coroutine"),
    (faust.App, "_new_transport", ["self"], "function"),  # overridden
    (faust_base.Transport, "__init__", ["self", "url", "app", "loop"], "function"),
]


def _kind(function: Callable[..., Any]) -> str:
    if inspect.isasyncgenfunction(function):
        return "async generator"
    if inspect.iscoroutinefunction(function):
        return "coroutine"
    return "function"


@pytest.mark.parametrize(
    ("owner", "name", "parameters", "kind"),
    SIGNATURES,
    ids=[f"{o.__name__}.{n}" for o, n, _, _ in SIGNATURES],
)
def test_the_methods_we_override_or_call_keep_their_signatures(
    owner: type, name: str, parameters: list[str], kind: str
) -> None:
    function = getattr(owner, name, None)
    assert function is not None, f"{owner.__qualname__}.{name} is gone; {RECHECK}"
    found = list(inspect.signature(function).parameters)
    assert found == parameters, f"{owner.__qualname__}.{name}{inspect.signature(function)} changed; {RECHECK}"
    assert _kind(function) == kind, f"{owner.__qualname__}.{name} is no longer a {kind}; {RECHECK}"


#: sha256 of the source of faust-streaming 0.15.3's ``Consumer._drain_messages``, which
#: ``FastConsumer._drain_messages`` re-implements step for step (gaps, read offsets, commit_every).
DRAIN_MESSAGES_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


def test_the_fetch_loop_we_reimplement_is_the_one_we_read() -> None:
    assert Consumer._drain_messages is faust_consumer.Consumer._drain_messages, (
        f"the aiokafka driver now has a fetch loop of its own; {RECHECK}"
    )
    source = inspect.getsource(faust_consumer.Consumer._drain_messages)
    assert hashlib.sha256(source.encode()).hexdigest() == DRAIN_MESSAGES_SHA256, (
        f"faust-streaming's Consumer._drain_messages changed (a fix FastConsumer may need too); {RECHECK}"
    )


@pytest.fixture
def app() -> faust.App:
    """A Faust app with our transport; building its consumer opens no connection."""
    return FastApp("internals-check", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)


def test_the_consumer_is_ours_and_has_the_private_state_we_read(app: faust.App) -> None:
    assert isinstance(app.transport, FastTransport), f"App._new_transport is no longer used; {RECHECK}"
    consumer = app.consumer
    assert isinstance(consumer, FastConsumer), f"the transport no longer builds its Consumer class; {RECHECK}"
    read_offset = consumer._read_offset
    assert isinstance(read_offset, defaultdict), (
        f"Consumer._read_offset is no longer a defaultdict; {RECHECK}"
    )
    assert read_offset[TP("t", 0)] is None, f"Consumer._read_offset no longer defaults to None; {RECHECK}"
    assert isinstance(consumer._n_acked, int), f"Consumer._n_acked is gone or not a count; {RECHECK}"
    assert consumer._commit_every is None or isinstance(consumer._commit_every, int), (
        f"Consumer._commit_every changed; {RECHECK}"
    )
    for name in ("_stopped", "suspend_flow"):
        event = getattr(consumer, name, None)
        assert callable(getattr(event, "is_set", None)), f"Consumer.{name} is no longer an event; {RECHECK}"
    assert callable(consumer.suspend_flow.wait), f"Consumer.suspend_flow.wait is gone; {RECHECK}"
    assert callable(consumer.callback), f"Consumer.callback is gone; {RECHECK}"
    assert isinstance(type(consumer).should_stop, property), f"Service.should_stop changed; {RECHECK}"
    assert consumer.transport.app is app, f"Consumer.transport.app changed; {RECHECK}"
    assert callable(app.topics.acks_enabled_for), f"Conductor.acks_enabled_for is gone; {RECHECK}"
    assert isinstance(consumer.consumer_stopped_errors, tuple), (
        f"Consumer.consumer_stopped_errors changed; {RECHECK}"
    )


def test_handed_offset_reads_without_growing_the_map(app: faust.App) -> None:
    consumer = app.consumer
    assert isinstance(consumer, FastConsumer)
    tp = TP("t", 3)
    assert consumer.handed_offset(tp) is None
    assert tp not in consumer._read_offset
    consumer._read_offset[tp] = 41
    assert consumer.handed_offset(tp) == 41
