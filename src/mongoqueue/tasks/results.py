"""Waiting for a job's outcome: ``handle.result(timeout=...)``, sync and async.

A wait opens a change stream on the one job (``documentKey._id``) *before*
reading its status, so no change made meanwhile is missed, then reads the
status again after each event, and at least every ``RECHECK_SECONDS`` (a
stream may end or miss nothing but a TTL deletion is still an event). Without
change streams (a standalone server) it polls with a capped backoff.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pymongo.errors

from ..aio import AsyncMongoQueue
from ..errors import driver_errors
from ..queue import MongoQueue
from ..status import JobStatus
from ..validation import MAX_SECONDS, check_seconds
from ..waiting import (
    CHANGE_STREAMS_UNSUPPORTED,
    RECHECK_SECONDS,
    WAKE_SLACK_SECONDS,
    Deadline,
    PollBackoff,
)
from .errors import ResultTimeout, ResultUnavailable, TaskCancelled, TaskFailed
from .operations import job_watch_pipeline

__all__ = ["outcome", "wait_result", "wait_result_async"]


def outcome(status: JobStatus) -> Any:
    """The value of a final status: the result, or the error it stands for."""
    if status == "completed":
        return status.result
    if status == "failed":
        raise TaskFailed(status.job_id, status.last_error, status.attempts)
    if status == "cancelled":
        raise TaskCancelled(status.job_id)
    raise ResultUnavailable(status.job_id)


def _timeout(timeout: float | None) -> float:
    """``timeout`` in seconds; None waits as long as it takes."""
    return MAX_SECONDS if timeout is None else check_seconds("timeout", timeout, allow_zero=True)


def wait_result(queue: MongoQueue, job_id: Any, timeout: float | None) -> Any:
    seconds = _timeout(timeout)
    deadline = Deadline(seconds)
    status = queue.status(job_id)
    if status.final or deadline.expired():
        return _finish(status, seconds)
    try:
        with driver_errors():
            while True:
                block = min(RECHECK_SECONDS, deadline.remaining())
                with queue.collection.watch(
                    job_watch_pipeline(job_id), max_await_time_ms=max(1, int(block * 1000))
                ) as stream:
                    while True:
                        status = queue.status(job_id)
                        if status.final or deadline.expired():
                            return _finish(status, seconds)
                        if deadline.remaining() + WAKE_SLACK_SECONDS < block:
                            break
                        stream.try_next()
    except pymongo.errors.OperationFailure as exc:
        if exc.code not in CHANGE_STREAMS_UNSUPPORTED:
            raise
    backoff = PollBackoff()
    while True:
        status = queue.status(job_id)
        if status.final or deadline.expired():
            return _finish(status, seconds)
        time.sleep(backoff.next_interval(deadline.remaining()))


async def wait_result_async(queue: AsyncMongoQueue, job_id: Any, timeout: float | None) -> Any:
    seconds = _timeout(timeout)
    deadline = Deadline(seconds)
    status = await queue.status(job_id)
    if status.final or deadline.expired():
        return _finish(status, seconds)
    try:
        with driver_errors():
            while True:
                block = min(RECHECK_SECONDS, deadline.remaining())
                async with await queue.collection.watch(
                    job_watch_pipeline(job_id), max_await_time_ms=max(1, int(block * 1000))
                ) as stream:
                    while True:
                        status = await queue.status(job_id)
                        if status.final or deadline.expired():
                            return _finish(status, seconds)
                        if deadline.remaining() + WAKE_SLACK_SECONDS < block:
                            break
                        await stream.try_next()
    except pymongo.errors.OperationFailure as exc:
        if exc.code not in CHANGE_STREAMS_UNSUPPORTED:
            raise
    backoff = PollBackoff()
    while True:
        status = await queue.status(job_id)
        if status.final or deadline.expired():
            return _finish(status, seconds)
        await asyncio.sleep(backoff.next_interval(deadline.remaining()))


def _finish(status: JobStatus, timeout: float) -> Any:
    if status.final:
        return outcome(status)
    raise ResultTimeout(status.job_id, status.state, timeout)
