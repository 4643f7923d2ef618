"""Handlers that the acceptance tests' worker processes import (``tests.acceptance.handlers:NAME``).

``record`` and ``fail`` are plain functions (the CLI runs them with Worker);
``arecord`` and ``afail`` are their coroutine twins (run with AsyncWorker).

Each delivery is recorded in the collection ``<queue collection>_log``: the
payload, the worker, the attempts so far and the claim time (``locked_at``,
server time), so a test can see what ran, where and when.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mongoqueue import AsyncJob, Job


def _record(job: Job, **extra: Any) -> None:
    log = job.queue.collection.database[job.queue.collection.name + "_log"]
    log.insert_one(_entry(job, **extra))


def record(job: Job) -> None:
    """Record the delivery, sleep ``payload["sleep"]`` seconds (default 0) and return."""
    _record(job, worker_kind="sync")
    time.sleep(float(job.payload.get("sleep", 0)))


def fail(job: Job) -> None:
    """Record the delivery and raise."""
    _record(job, worker_kind="sync")
    raise RuntimeError(f"handler failed on purpose for {job.payload!r}")


def fail_bad(job: Job) -> None:
    """Record the delivery; raise when ``payload["n"] == "bad"``, else return."""
    _record(job, worker_kind="sync")
    if job.payload.get("n") == "bad":
        raise RuntimeError("bad job")


def _entry(job: Job | AsyncJob, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "payload": job.payload,
        "worker": job.queue.consumer_id,
        "attempts": job.attempts,
        "locked_at": job.locked_at,
        **extra,
    }


async def _arecord(job: AsyncJob, **extra: Any) -> None:
    log = job.queue.collection.database[job.queue.collection.name + "_log"]
    await log.insert_one(_entry(job, **extra))


async def arecord(job: AsyncJob) -> None:
    """``record`` as a coroutine: record, ``await asyncio.sleep(payload["sleep"])``, return."""
    await _arecord(job, worker_kind="async")
    await asyncio.sleep(float(job.payload.get("sleep", 0)))


async def afail(job: AsyncJob) -> None:
    """``fail`` as a coroutine."""
    await _arecord(job, worker_kind="async")
    raise RuntimeError(f"handler failed on purpose for {job.payload!r}")
