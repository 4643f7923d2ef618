"""Clock, retry policy, validation and waiting: pure code, no server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from bson.raw_bson import RawBSONDocument

from mongoqueue import RetryPolicy
from mongoqueue.clock import ServerClock
from mongoqueue.validation import encode_payload
from mongoqueue.waiting import PollBackoff


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_clock_advances_with_the_monotonic_clock() -> None:
    mono = FakeMonotonic()
    clock = ServerClock(refresh=60, monotonic=mono)
    assert clock.needs_sync()
    server = datetime(2030, 1, 1, 12, 0, 0)
    clock.record(server, sent_at=mono.now)
    assert not clock.needs_sync()
    assert clock.now() == server.replace(tzinfo=timezone.utc) + timedelta(milliseconds=1)
    mono.now += 10
    assert clock.now() - server.replace(tzinfo=timezone.utc) == timedelta(seconds=10.001)
    mono.now += 50
    assert clock.needs_sync()


def test_clock_is_an_upper_bound() -> None:
    """Anchored at the send time: the estimate never runs behind the server."""
    mono = FakeMonotonic()
    clock = ServerClock(monotonic=mono)
    sent = mono.now
    mono.now += 0.5  # the reply took half a second
    server = datetime(2030, 1, 1, tzinfo=timezone.utc)  # stamped somewhere in between
    clock.record(server, sent_at=sent)
    assert clock.now() >= server + timedelta(seconds=0.5)


def test_clock_before_record() -> None:
    with pytest.raises(RuntimeError):
        ServerClock().now()


def test_retry_delays() -> None:
    policy = RetryPolicy(initial=1, maximum=10, minimum=0.5, multiplier=2, jitter=False)
    assert [policy.delay(n, 1.0).total_seconds() for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.delay(3, 0.0).total_seconds() == 0.5  # the minimum holds under jitter
    assert policy.draw_jitter() == 1.0
    jittery = RetryPolicy()
    draws = {jittery.draw_jitter() for _ in range(20)}
    assert all(0 <= d < 1 for d in draws)
    assert len(draws) > 1


def test_encode_payload_is_a_snapshot() -> None:
    payload = {"a": [1, 2]}
    encoded = encode_payload(payload, 16 * 1024 * 1024)
    payload["a"].append(3)
    assert isinstance(encoded, RawBSONDocument)
    assert encoded["a"] == [1, 2]


def test_poll_backoff_is_capped_and_bounded_by_the_deadline() -> None:
    backoff = PollBackoff(first=0.05, cap=0.4)
    assert [backoff.next_interval(10) for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
    assert backoff.next_interval(0.01) == 0.01
