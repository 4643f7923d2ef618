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
