"""The server's clock, as seen from this process.

Leases and delays are stored as times on the *server's* clock. Updates compute
them on the server (``$$NOW`` in update pipelines), and the claim and repair
filters check expiry on the server's clock too (``$expr`` with ``$$NOW``), so a
lease is never taken over before it has ended on the server, whatever this
estimate says. Query filters also carry a literal "now" (it bounds the index
range), and puts stamp new jobs with it: that is where this estimate is used.

It keeps two bounds of the server's time, each advanced with this process's
*monotonic* clock, so nothing here depends on the wall clocks of the consumers:

* an **upper bound**, :meth:`ServerClock.now`: a server time read during a round
  trip, plus the millisecond it is truncated to, counted from when the request
  was *sent*;
* a **lower bound**, :meth:`ServerClock.lower`: the same time counted from when
  the reply *arrived*. A job put as due "now" is stamped with it, so it is due
  for every consumer at once whatever their own estimates' errors.

Samples come from ``hello`` (``localTime``; the first anchor is the best of
:data:`FIRST_SAMPLES` round trips, so the handshake and server selection of a
cold connection do not widen it) and, for free, from the ``locked_at`` that
the server writes with ``$$NOW`` on each claim. (``$clusterTime`` and
``operationTime`` are not used: they are logical oplog timestamps, only loosely
tied to the primary's wall clock, and would not bound it.) Each sample narrows the bounds
(the smallest upper bound, the largest lower bound). Every ``refresh`` seconds
a new ``hello`` replaces them, which corrects the slow drift of the local
monotonic clock.

Both readings are **monotonic** in a process: a sample that would move them
back (a tighter bound, a re-anchor) makes them pause until the server's time
catches up, so a job put later is never stamped earlier than one put before.
Only a real step of the server's clock back by more than
:data:`STEP_TOLERANCE` (an NTP step, a failover to a primary whose clock is
behind) is followed at once: staying ahead would hide new jobs from the
server-side checks for the length of the step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

__all__ = ["FIRST_SAMPLES", "STEP_TOLERANCE", "ServerClock"]

#: ``localTime`` and ``$$NOW`` are BSON dates: milliseconds, truncated.
_TRUNCATION = timedelta(milliseconds=1)

#: ``hello`` round trips of the first anchor; the tightest one is kept.
FIRST_SAMPLES = 3

#: A sample below the known lower bound by more than this is a step of the server's
#: clock back, which the estimate follows; smaller disagreements (drift) are absorbed.
STEP_TOLERANCE = timedelta(seconds=1)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class ServerClock:
    """An estimate of the server's current time: monotonic upper and lower bounds."""

    def __init__(
        self, refresh: float = 60.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._refresh = refresh
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # The bounds at monotonic time 0: bound(t) = base + t seconds.
        self._upper: datetime | None = None
        self._lower = _EPOCH
        self._synced_at = 0.0
        # The last readings handed out (they never go back, see the module docstring).
        self._last_now: datetime | None = None
        self._last_lower: datetime | None = None

    def needs_sync(self) -> bool:
        return self._upper is None or self._monotonic() - self._synced_at >= self._refresh

    def samples(self) -> int:
        """How many ``hello`` round trips the next sync should take."""
        return FIRST_SAMPLES if self._upper is None else 1

    def record(
        self, server_time: datetime, sent_at: float, received_at: float | None = None
    ) -> None:
        """Re-anchor on ``server_time`` (``hello.localTime``) of a request sent at ``sent_at``.

        ``sent_at`` is a reading of the monotonic clock taken right before the request
        was sent, ``received_at`` right after the reply came. The bounds are replaced
        by this sample's (readings stay monotonic). A naive ``server_time`` is taken
        as UTC (pymongo returns naive datetimes unless the client was made with
        ``tz_aware=True``).
        """
        upper, lower = self._bounds(server_time, sent_at, received_at)
        with self._lock:
            self._take(upper, lower)
            self._synced_at = sent_at

    def observe(
        self, server_time: datetime, sent_at: float, received_at: float | None = None
    ) -> None:
        """Narrow the bounds with a server time read during a round trip.

        Another ``hello`` of the same sync, or the ``locked_at`` (``$$NOW``) of a
        claim. A sample that contradicts the bounds (the server's clock stepped)
        replaces them.
        """
        upper, lower = self._bounds(server_time, sent_at, received_at)
        with self._lock:
            if self._upper is None or upper < self._lower or lower > self._upper:
                self._take(upper, lower)
            else:
                self._upper = min(self._upper, upper)
                self._lower = max(self._lower, lower)

    @property
    def spread(self) -> timedelta:
        """The width of the estimate: upper minus lower bound (at least 1 ms)."""
        if self._upper is None:
            return _TRUNCATION
        return self._upper - self._lower

    def now(self) -> datetime:
        """The estimated server time, an upper bound. Call :meth:`record` first."""
        if self._upper is None:
            raise RuntimeError("ServerClock.now() called before the first record()")
        with self._lock:
            value = self._upper + timedelta(seconds=self._monotonic())
            if self._last_now is not None and value < self._last_now:
                value = self._last_now
            self._last_now = value
            return value

    def lower(self) -> datetime:
        """A lower bound of the server's time (never after :meth:`now`)."""
        if self._upper is None:
            raise RuntimeError("ServerClock.lower() called before the first record()")
        with self._lock:
            value = self._lower + timedelta(seconds=self._monotonic())
            if self._last_lower is not None and value < self._last_lower:
                value = self._last_lower
            self._last_lower = value
            return value

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _bounds(
        server_time: datetime, sent_at: float, received_at: float | None
    ) -> tuple[datetime, datetime]:
        """A sample's upper and lower bounds at monotonic time 0."""
        if server_time.tzinfo is None:
            server_time = server_time.replace(tzinfo=timezone.utc)
        server_time = server_time.astimezone(timezone.utc)
        received = sent_at if received_at is None else max(sent_at, received_at)
        upper = server_time + _TRUNCATION - timedelta(seconds=sent_at)
        lower = server_time - timedelta(seconds=received)
        return upper, lower

    def _take(self, upper: datetime, lower: datetime) -> None:
        """Replace the bounds; forget the last readings if the server's clock went back."""
        if self._upper is not None and upper < self._lower - STEP_TOLERANCE:
            self._last_now = None
            self._last_lower = None
        self._upper = upper
        self._lower = lower
