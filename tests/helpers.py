"""Small test helpers: deadline-bounded polling and direct lease expiry."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from pymongo import monitoring
from pymongo.collection import Collection

from mongoqueue import Job, MongoQueue

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.02) -> T:
    """Call ``probe`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def expire_lease(queue: MongoQueue, job: Job) -> None:
    """Make ``job``'s lease end now, as if its timeout had passed.

    Moves the lease end into the past on the server; the queue itself still has
    to notice the expiry. Used where waiting out a real lease would slow tests.
    """
    past = queue._now().replace(year=2000)
    result = queue.collection.update_one(
        {"_id": job.id, "lease_token": {"$type": "string"}},
        {"$set": {"lease_expires_at": past, "visible_at": past}},
    )
    assert result.matched_count == 1, "job is not held"


def expire_lease_of(collection: Collection[Any], job_id: Any) -> None:
    """Make the lease of the job ``job_id`` end in the past (for either twin's queue)."""
    past = datetime(2000, 1, 1, tzinfo=timezone.utc)
    result = collection.update_one(
        {"_id": job_id, "lease_token": {"$type": "string"}},
        {"$set": {"lease_expires_at": past, "visible_at": past}},
    )
    assert result.matched_count == 1, "job is not held"


class Commands(monitoring.CommandListener):
    """A command listener that records every command a client sends (``sent``)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
