"""Handlers that the acceptance tests' worker processes import (``tests.acceptance.handlers:NAME``).

Each delivery is recorded in the collection ``<queue collection>_log``: the
payload, the worker, the attempts so far and the claim time (``locked_at``,
server time), so a test can see what ran, where and when.
"""

from __future__ import annotations

import time
from typing import Any

from mongoqueue import Job


def _record(job: Job, **extra: Any) -> None:
    log = job.queue.collection.database[job.queue.collection.name + "_log"]
    log.insert_one(
        {
            "job_id": job.id,
            "payload": job.payload,
            "worker": job.queue.consumer_id,
            "attempts": job.attempts,
            "locked_at": job.locked_at,
            **extra,
        }
    )


def record(job: Job) -> None:
    """Record the delivery, sleep ``payload["sleep"]`` seconds (default 0) and return."""
    _record(job)
    time.sleep(float(job.payload.get("sleep", 0)))


def fail(job: Job) -> None:
    """Record the delivery and raise."""
    _record(job)
    raise RuntimeError(f"handler failed on purpose for {job.payload!r}")
