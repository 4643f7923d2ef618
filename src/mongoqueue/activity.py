"""What the workers did, per queue and minute: the ``mongoqueue_activity`` collection (no I/O).

Completed jobs are deleted, so no query can count completions after the fact:
the workers count them as they happen. Each worker keeps an
:class:`ActivityBuffer` in memory and flushes it with its registry heartbeat
(:mod:`mongoqueue.registry`), once per heartbeat interval and when it stops,
as one ``$inc`` upsert per queue and minute::

    {_id: "<queue>|<minute ISO>", queue: "jobs", minute: <date>, expire_at: <date>,
     completed: 12, retried: 2, failed: 1, released: 0, lost: 0}

``minute`` is the server's minute of each event: an event is timed on the
worker's monotonic clock and placed by the server time of the heartbeat write
that flushes it (so a client wall clock never decides). A TTL index on
``expire_at`` removes a bucket :data:`KEEP_SECONDS` after its minute.

Events (the worker outcomes of :mod:`mongoqueue._worker_core`): ``completed``;
``retried`` (the handler failed, or was abandoned at the hard limit, and the
job will run again after its backoff); ``failed`` (the same, and the job
reached its max attempts: failed for good); ``released`` (given back unfinished
at shutdown); ``lost`` (the worker had lost the lease when it tried to settle
the job).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from pymongo import ASCENDING, IndexModel, UpdateOne

__all__ = [
    "ACTIVITY_COLLECTION",
    "EVENTS",
    "KEEP_SECONDS",
    "ActivityBuffer",
    "flush_requests",
    "indexes",
    "minute_of",
    "per_minute",
    "window_filter",
]

#: The collection (in each queue's database) of the per-minute event counts.
ACTIVITY_COLLECTION = "mongoqueue_activity"

#: The events counted, in display order.
EVENTS = ("completed", "retried", "failed", "released", "lost")

#: A minute's bucket is removed by the TTL index this long after the minute.
KEEP_SECONDS = 24 * 3600

Doc = dict[str, Any]


def indexes() -> list[IndexModel]:
    """The TTL index, and the index behind the dashboard's per-queue window read."""
    return [
        IndexModel([("expire_at", ASCENDING)], expireAfterSeconds=0, name="mq_activity_ttl"),
        IndexModel([("queue", ASCENDING), ("minute", ASCENDING)], name="mq_activity_queue_minute"),
    ]


def minute_of(when: datetime) -> datetime:
    """The start of the UTC minute holding ``when`` (aware)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.replace(second=0, microsecond=0)


class ActivityBuffer:
    """The events of one worker not yet flushed, by queue, event and monotonic second.

    Thread-safe; no I/O. :meth:`take` empties it and places each event in the
    server's minute, given the server time of the write that flushes it.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._counts: dict[tuple[str, str, int], int] = {}
        self._lock = threading.Lock()

    def add(self, queue: str, event: str, count: int = 1) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; events are {', '.join(EVENTS)}")
        key = (queue, event, math.floor(self._monotonic()))
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + count

    def __len__(self) -> int:
        with self._lock:
            return len(self._counts)

    def take(self, server_now: datetime) -> dict[tuple[str, datetime], dict[str, int]]:
        """Empty the buffer: ``{(queue, minute): {event: count}}`` in the server's minutes."""
        with self._lock:
            counts, self._counts = self._counts, {}
        now = self._monotonic()
        buckets: dict[tuple[str, datetime], dict[str, int]] = {}
        for (queue, event, second), count in counts.items():
            at = server_now - timedelta(seconds=max(0.0, now - second))
            bucket = buckets.setdefault((queue, minute_of(at)), {})
            bucket[event] = bucket.get(event, 0) + count
        return buckets

    def put_back(self, buckets: Mapping[tuple[str, datetime], Mapping[str, int]]) -> None:
        """Return counts whose flush failed, to be flushed with the next heartbeat."""
        second = math.floor(self._monotonic())
        with self._lock:
            for (queue, _minute), events in buckets.items():
                for event, count in events.items():
                    key = (queue, event, second)
                    self._counts[key] = self._counts.get(key, 0) + count


def flush_requests(
    buckets: Mapping[tuple[str, datetime], Mapping[str, int]],
) -> list[UpdateOne]:
    """One ``$inc`` upsert per queue and minute (sent as one ``bulk_write``)."""
    requests = []
    for (queue, minute), events in sorted(buckets.items()):
        requests.append(
            UpdateOne(
                {"_id": f"{queue}|{minute.strftime('%Y-%m-%dT%H:%M')}"},
                {
                    "$inc": dict(events),
                    "$setOnInsert": {
                        "queue": queue,
                        "minute": minute,
                        "expire_at": minute + timedelta(seconds=KEEP_SECONDS),
                    },
                },
                upsert=True,
            )
        )
    return requests


def window_filter(queue: str, since: datetime) -> Doc:
    """The buckets of ``queue`` from the minute holding ``since`` on (index-backed)."""
    return {"queue": queue, "minute": {"$gte": minute_of(since)}}


def per_minute(
    docs: Iterable[Mapping[str, Any]], since: datetime, now: datetime
) -> list[tuple[datetime, dict[str, int]]]:
    """Every minute from ``since`` to ``now`` with its counts (zeros where nothing happened)."""
    found: dict[datetime, dict[str, int]] = {}
    for doc in docs:
        minute = doc.get("minute")
        if not isinstance(minute, datetime):
            continue
        counts = found.setdefault(minute_of(minute), dict.fromkeys(EVENTS, 0))
        for event in EVENTS:
            value = doc.get(event)
            if isinstance(value, int):
                counts[event] += value
    rows = []
    minute, last = minute_of(since), minute_of(now)
    while minute <= last:
        rows.append((minute, found.get(minute, dict.fromkeys(EVENTS, 0))))
        minute += timedelta(minutes=1)
    return rows
