"""Timing of ``next(wait=...)``: how long to block between claim attempts.

Pure, shared by the sync and async queues. A change stream wakes a waiting
consumer as soon as a job may have become claimable; the consumer still
re-tries the claim at least every ``recheck`` seconds, because a delayed job or a
lease that expires produces no change event. Without change streams (a
standalone mongod) the consumer polls with a capped exponential backoff.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

#: Without a wake-up, re-check at least this often (seconds).
RECHECK_SECONDS = 1.0
#: A wait on the change stream may end this long after the deadline (seconds).
WAKE_SLACK_SECONDS = 0.05
#: Polling without change streams: first interval, and cap (seconds).
POLL_FIRST_SECONDS = 0.05
POLL_MAX_SECONDS = 1.0

#: Server error codes meaning "change streams are not available here".
CHANGE_STREAMS_UNSUPPORTED = frozenset({40573, 40324, 136, 115})


@dataclass
class Deadline:
    seconds: float
    start: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return max(0.0, self.start + self.seconds - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0


@dataclass
class PollBackoff:
    """Capped exponential intervals for polling (one instance per wait)."""

    first: float = POLL_FIRST_SECONDS
    cap: float = POLL_MAX_SECONDS
    _next: float = 0.0

    def next_interval(self, remaining: float) -> float:
        interval = self._next or self.first
        self._next = min(self.cap, interval * 2)
        return min(interval, remaining)
