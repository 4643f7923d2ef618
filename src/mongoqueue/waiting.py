"""Timing of ``next(wait=...)``: how long to block between claim attempts.

Pure, shared by the sync and async queues. A change stream wakes a waiting
consumer as soon as a job may have become claimable. Without change streams (a
standalone mongod) the consumer polls with a capped exponential backoff.

What an idle consumer costs: each queue object keeps **one** change stream open
across ``next(wait=)`` calls (``WakeState``) and resumes it, rather than opening
one per call; it claims only when the stream reports a change, or when a job may
have become claimable without one (a delayed job coming due, a backoff ending, a
lease expiring: at most ``RECHECK_SECONDS`` apart while the queue holds any ready
job). When the queue holds no ready job at all, nothing can become claimable
without a change event, so it re-checks only every ``EMPTY_RECHECK_SECONDS`` (a
safety net). An idle consumer on an empty queue then sends one ``getMore`` per
``RECHECK_SECONDS`` and little else. Polling (no change streams) keeps its
interval between calls too, so an idle consumer polls once per
``POLL_MAX_SECONDS`` rather than restarting from ``POLL_FIRST_SECONDS`` each call.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

#: Without a wake-up, re-check at least this often (seconds) while the queue holds
#: ready jobs (some may come due); also the longest a change stream's getMore blocks.
RECHECK_SECONDS = 1.0
#: Without a wake-up, re-check this often (seconds) when the queue held no ready job.
EMPTY_RECHECK_SECONDS = 30.0
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
    """Capped exponential intervals for polling (one per queue object, renewed by a claim)."""

    first: float = POLL_FIRST_SECONDS
    cap: float = POLL_MAX_SECONDS
    _next: float = 0.0
    due_at: float = 0.0  # monotonic time of the next poll

    def next_interval(self, remaining: float) -> float:
        interval = self._next or self.first
        self._next = min(self.cap, interval * 2)
        return min(interval, remaining)

    def claim_due(self) -> bool:
        return time.monotonic() >= self.due_at

    def claimed_nothing(self) -> None:
        """A poll found nothing: the next one is due after the next interval."""
        self.due_at = time.monotonic() + self.next_interval(float("inf"))

    def wait_seconds(self, remaining: float) -> float:
        """How long to sleep before the next poll, within ``remaining``."""
        return max(0.0, min(self.due_at - time.monotonic(), remaining))


@dataclass
class WakeState:
    """A queue object's change stream for ``next(wait=)``, kept open between calls.

    ``claim_at``: the monotonic time from which a claim is due again even without a
    change event (0: claim at once). One waiter at a time uses it (``lock``); a
    second concurrent waiter on the same queue object opens a stream of its own.
    """

    stream: Any = None
    await_seconds: float = 0.0
    claim_at: float = 0.0
    probe_at: float = 0.0  # when to ask again whether the queue holds any ready job
    lock: threading.Lock = field(default_factory=threading.Lock)

    def needs_open(self, remaining: float) -> bool:
        """Whether to (re)open: none is open, its getMore would outlast ``remaining``, or
        it waits much less than a wait of ``remaining`` seconds would (a tail reopened it).
        """
        if self.stream is None or remaining + WAKE_SLACK_SECONDS < self.await_seconds:
            return True
        return self.await_seconds + WAKE_SLACK_SECONDS < stream_await_seconds(remaining)

    def opened(self, stream: Any, await_seconds: float) -> None:
        self.stream, self.await_seconds, self.claim_at, self.probe_at = (
            stream,
            await_seconds,
            0.0,
            0.0,
        )

    def claim_due(self) -> bool:
        return time.monotonic() >= self.claim_at

    def woken(self) -> None:
        """A change event arrived (or a job was claimed): claim at once."""
        self.claim_at = 0.0

    def probe_due(self) -> bool:
        """Whether to ask if the queue holds any ready job (after an empty claim).

        Once it did, the answer is trusted for ``EMPTY_RECHECK_SECONDS``: a queue
        with jobs held or delayed is re-checked every ``RECHECK_SECONDS`` with a
        claim alone, not a claim and a probe.
        """
        return time.monotonic() >= self.probe_at

    def idle(self, queue_empty: bool | None) -> None:
        """A claim found nothing: when to claim again without a change event.

        ``queue_empty``: what a probe found, or None when no probe was due (the
        queue held ready jobs at the last one).
        """
        now = time.monotonic()
        if queue_empty is not None:
            self.probe_at = 0.0 if queue_empty else now + EMPTY_RECHECK_SECONDS
        self.claim_at = now + (EMPTY_RECHECK_SECONDS if queue_empty else RECHECK_SECONDS)


def stream_await_seconds(remaining: float) -> float:
    """The getMore await time of a stream opened for a wait with ``remaining`` seconds."""
    return max(0.001, min(RECHECK_SECONDS, remaining))
