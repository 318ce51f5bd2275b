"""Which broker errors are retried, and how: real KafkaError / KafkaException objects, no broker."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from infra.kafka import RETRIABLE_CODES, KafkaUnavailableError, call_with_retries, is_retriable


def _exc(code: int, *, fatal: bool = False, retriable: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, f"test {code}", fatal=fatal, retriable=retriable))


class FakeClock:
    """A clock the retry loop advances by sleeping on it (so a 30 s deadline takes no time)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._UNKNOWN_PARTITION,
    ],
)
def test_a_brokers_not_now_is_retriable(code: int) -> None:
    assert code in RETRIABLE_CODES
    assert is_retriable(_exc(code))


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.INVALID_PARTITIONS,
        KafkaError.TOPIC_ALREADY_EXISTS,
        KafkaError.INVALID_CONFIG,
        KafkaError._AUTHENTICATION,
    ],
)
def test_a_brokers_no_is_not(code: int) -> None:
    assert not is_retriable(_exc(code))


def test_librdkafkas_own_retriable_flag_counts_and_fatal_never_retries() -> None:
    assert is_retriable(_exc(KafkaError.INVALID_REQUEST, retriable=True))
    assert not is_retriable(_exc(KafkaError.NOT_LEADER_FOR_PARTITION, fatal=True))
    assert not is_retriable(KafkaException("no KafkaError inside"))
    assert not is_retriable(RuntimeError("not Kafka at all"))


def test_retriable_errors_are_retried_with_growing_waits_until_the_call_succeeds() -> None:
    clock = FakeClock()
    failures = [
        _exc(KafkaError.NOT_LEADER_FOR_PARTITION),
        _exc(KafkaError.LEADER_NOT_AVAILABLE),
        _exc(KafkaError.COORDINATOR_LOAD_IN_PROGRESS),
    ]

    def flaky() -> str:
        if failures:
            raise failures.pop(0)
        return "watermarks"

    assert call_with_retries(flaky, "watermarks", 30.0, sleep=clock.sleep, clock=clock) == "watermarks"
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4])


def test_waits_are_capped_and_the_deadline_raises_naming_the_call_and_the_error() -> None:
    clock = FakeClock()
    calls = 0

    def never() -> None:
        nonlocal calls
        calls += 1
        raise _exc(KafkaError.NOT_LEADER_FOR_PARTITION)

    with pytest.raises(KafkaUnavailableError, match="lag of group g: still failing after 30s") as info:
        call_with_retries(never, "lag of group g", 30.0, sleep=clock.sleep, clock=clock)
    assert "NOT_LEADER_FOR_PARTITION" in str(info.value)
    assert max(clock.sleeps) == 2.0
    assert clock.now == pytest.approx(30.0)  # the last wait is cut to the deadline, not past it
    assert calls == len(clock.sleeps) + 1
    assert isinstance(info.value.__cause__, KafkaException)


def test_errors_waiting_cannot_fix_are_raised_at_once_unchanged() -> None:
    clock = FakeClock()
    calls = 0
    denied = _exc(KafkaError.TOPIC_AUTHORIZATION_FAILED)

    def forbidden() -> None:
        nonlocal calls
        calls += 1
        raise denied

    with pytest.raises(KafkaException) as info:
        call_with_retries(forbidden, "list topics", 30.0, sleep=clock.sleep, clock=clock)
    assert info.value is denied
    assert (calls, clock.sleeps) == (1, [])


def test_other_exceptions_pass_through_without_retries() -> None:
    clock = FakeClock()

    def broken() -> None:
        raise ValueError("a bug, not the broker")

    with pytest.raises(ValueError, match="a bug"):
        call_with_retries(broken, "x", 30.0, sleep=clock.sleep, clock=clock)
    assert clock.sleeps == []
