"""The server clock estimate: an upper bound from now(), a lower bound from now() - spread."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from mongoqueue.clock import ServerClock

BASE = datetime(2030, 1, 1, tzinfo=timezone.utc)


@given(
    rtt=st.floats(0, 0.5),
    read_at=st.floats(0, 1),  # when, within the round trip, the server read its clock
    fraction=st.floats(0, 0.000999),  # localTime is truncated to milliseconds
    later=st.floats(0, 100),
)
def test_now_and_spread_bound_the_servers_time(
    rtt: float, read_at: float, fraction: float, later: float
) -> None:
    sent = 1000.0
    received = sent + rtt
    server_read = sent + read_at * rtt
    # The server's true time t seconds (monotonic) after `sent`: its clock read BASE + fraction
    # at `server_read`; localTime reports BASE (truncated).
    ticks = [sent]
    clock = ServerClock(monotonic=lambda: ticks[0])
    clock.record(BASE.replace(tzinfo=None), sent, received)
    ticks[0] = received + later
    true_now = BASE + timedelta(seconds=fraction + ticks[0] - server_read)
    assert clock.now() >= true_now - timedelta(microseconds=1)
    assert clock.now() - clock.spread <= true_now + timedelta(microseconds=1)


def test_spread_without_a_receive_time_is_the_truncation() -> None:
    clock = ServerClock(monotonic=lambda: 5.0)
    clock.record(BASE, 5.0)
    assert clock.spread == timedelta(milliseconds=1)


class _Ticks:
    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_a_re_anchor_never_moves_the_readings_back() -> None:
    """A cold first anchor is loose (10 ms of handshake); the warm re-anchor is tighter.
    Readings pause until the tighter estimate catches up instead of going back."""
    ticks = _Ticks()
    clock = ServerClock(monotonic=ticks)
    clock.record(BASE, sent_at=100.0, received_at=100.012)  # server read its clock at ~100.011
    ticks.now = 160.0
    before_now, before_lower = clock.now(), clock.lower()
    clock.record(BASE + timedelta(seconds=60.000), sent_at=160.0, received_at=160.001)
    assert clock.now() >= before_now
    assert clock.lower() >= before_lower
    ticks.now = 161.0  # once caught up, the tighter anchor rules
    assert clock.now() == BASE + timedelta(seconds=61.001)


def test_the_best_sample_wins_and_bounds_stay_sound() -> None:
    ticks = _Ticks()
    clock = ServerClock(monotonic=ticks)
    clock.record(BASE, sent_at=100.0, received_at=100.050)  # a slow first round trip
    assert clock.spread == timedelta(milliseconds=51)
    clock.observe(BASE + timedelta(seconds=0.0505), sent_at=100.050, received_at=100.051)
    narrow = clock.spread
    assert narrow <= timedelta(milliseconds=2)  # the two samples' best bounds together
    clock.observe(BASE, sent_at=100.0, received_at=100.9)  # a worse one changes nothing
    assert clock.spread == narrow
    ticks.now = 101.0
    assert clock.lower() <= clock.now()


def test_a_server_clock_stepped_back_is_followed() -> None:
    """An NTP step or a failover to a primary that is behind: past the tolerance, the
    estimate follows the server (staying ahead would hide new jobs for the whole step)."""
    ticks = _Ticks()
    clock = ServerClock(monotonic=ticks)
    clock.record(BASE, sent_at=100.0, received_at=100.001)
    ticks.now = 110.0
    ahead = clock.now()
    clock.observe(BASE + timedelta(seconds=10 - 300), sent_at=110.0, received_at=110.001)
    assert clock.now() < ahead - timedelta(seconds=299)
    # A small disagreement (drift) is absorbed: the readings pause rather than go back.
    ticks.now = 120.0
    last = clock.now()
    clock.record(BASE + timedelta(seconds=20 - 300 - 0.5), sent_at=120.0, received_at=120.001)
    assert clock.now() >= last


def test_a_sample_ahead_of_the_estimate_moves_it_forward() -> None:
    ticks = _Ticks()
    clock = ServerClock(monotonic=ticks)
    clock.record(BASE, sent_at=100.0, received_at=100.001)
    clock.observe(BASE + timedelta(seconds=30), sent_at=100.0, received_at=100.001)
    assert clock.lower() >= BASE + timedelta(seconds=30) - timedelta(milliseconds=2)


def test_first_sync_takes_several_samples_later_ones_one() -> None:
    clock = ServerClock(monotonic=_Ticks())
    assert clock.samples() > 1
    clock.record(BASE, sent_at=100.0)
    assert clock.samples() == 1
