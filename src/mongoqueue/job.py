"""The job handle: a job's data plus the queue that persists its changes.

A handle returned by ``next()`` holds the job under a claim token until it calls
``complete``, ``error`` or ``release``, or its lease expires and another consumer
claims the job. The queue does every write; the handle only keeps the data.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from .errors import MongoQueueError

if TYPE_CHECKING:
    from .queue import MongoQueue

__all__ = ["Job", "JobData", "LetGo"]

#: How a handle let go of its job: it recorded a failed attempt (``error``), it
#: released it, or a fenced call found the job no longer held by it: held by
#: another claim or failed (``lost``), back in the queue unheld (``free``), or
#: deleted (``gone``). The worker reads it to report what happened to a job.
LetGo = Literal["failed", "released", "lost", "free", "gone"]

log = logging.getLogger("mongoqueue")


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class JobData:
    """Read-only view of a job document (shared by the sync and async handles)."""

    __slots__ = ("_data", "_let_go", "_token")

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data: dict[str, Any] = dict(data)
        token = self._data.get("lease_token")
        self._token: str | None = token if isinstance(token, str) else None
        #: How this handle let go of its job, once it has (see ``LetGo``); None while held,
        #: and after ``complete()``.
        self._let_go: LetGo | None = None

    @property
    def id(self) -> Any:
        """The job's ``_id`` (an ObjectId)."""
        return self._data["_id"]

    @property
    def job_id(self) -> Any:
        """The job's ``_id`` (the original mongoqueue's name)."""
        return self._data["_id"]

    @property
    def payload(self) -> Any:
        """Exactly the payload that was put."""
        return self._data["payload"]

    @property
    def data(self) -> dict[str, Any]:
        """A copy of the whole job document: ``payload`` and queue metadata."""
        return dict(self._data)

    @property
    def priority(self) -> int:
        return int(self._data["priority"])

    @property
    def attempts(self) -> int:
        """Failed deliveries so far (``error()`` calls and expired leases)."""
        return int(self._data.get("attempts", 0))

    @property
    def state(self) -> str:
        """``"running"`` while held, ``"waiting"`` when in the queue, or ``"failed"``."""
        if self._data.get("state") == "failed":
            return "failed"
        return "running" if isinstance(self._data.get("lease_token"), str) else "waiting"

    @property
    def held(self) -> bool:
        """True while this handle holds a claim on the job (as far as it knows)."""
        return self._token is not None

    @property
    def key(self) -> str | None:
        return self._data.get("key")

    @property
    def locked_by(self) -> str | None:
        return self._data.get("locked_by")

    @property
    def locked_at(self) -> datetime | None:
        return _utc(self._data.get("locked_at"))

    @property
    def lease_expires_at(self) -> datetime | None:
        return _utc(self._data.get("lease_expires_at"))

    @property
    def available_at(self) -> datetime | None:
        """When the job may next be claimed (server time, UTC)."""
        return _utc(self._data.get("visible_at"))

    @property
    def created_at(self) -> datetime | None:
        return _utc(self._data.get("created_at"))

    @property
    def last_error(self) -> str | None:
        return self._data.get("last_error")

    @property
    def progress_count(self) -> int | None:
        """The count stored by the last ``progress()`` call."""
        return self._data.get("progress")

    def _update(self, metadata: Mapping[str, Any]) -> None:
        """Take fresh metadata from the server (everything but the payload)."""
        self._data.update({k: v for k, v in metadata.items() if k != "payload"})

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.id} state={self.state} priority={self.priority} "
            f"attempts={self.attempts}>"
        )


def lease_lost_message(job_id: Any, action: str, current: Mapping[str, Any] | None) -> str:
    """Why a fenced operation matched nothing, from the job's current document."""
    if current is None:
        why = "it no longer exists (it was completed, purged or cleared)"
    elif current.get("state") == "failed":
        why = "it has failed (max attempts reached)"
    elif isinstance(current.get("lease_token"), str):
        why = f"its lease expired and it was claimed again by {current.get('locked_by')!r}"
    else:
        why = "it was released back to the queue (its lease expired or it was released)"
    return f"cannot {action} job {job_id}: this handle no longer holds it; {why}"


def finished_handle_message(job_id: Any, action: str) -> str:
    return (
        f"cannot {action} job {job_id}: this handle has already completed, failed or "
        "released it (or never held it)"
    )


def exception_message(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> str:
    return "".join(traceback.format_exception(exc_type, exc, tb))


def exit_outcome(
    exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
) -> tuple[Literal["complete", "error", "release"], str | None]:
    """What leaving ``with job`` / ``async with job`` does, and the error message.

    Success completes the job; an ``Exception`` records its traceback as the job's
    error; anything else (KeyboardInterrupt, SystemExit, a cancelled task) is not
    the job's fault and releases it.
    """
    if exc_type is None or exc is None:
        return "complete", None
    if isinstance(exc, Exception):
        return "error", exception_message(exc_type, exc, tb)
    return "release", None


def log_unrecorded_failure(job: JobData, error: MongoQueueError) -> None:
    log.warning("could not record the failure of job %s: %s", job.id, error)


class Job(JobData):
    """A job claimed from a :class:`~mongoqueue.MongoQueue`.

    As a context manager it yields the job document (``data["payload"]``),
    completes the job when the block succeeds, and stores the traceback as the
    job's error when it raises (the exception propagates).
    """

    __slots__ = ("_queue",)

    def __init__(self, queue: MongoQueue, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        self._queue = queue

    @property
    def queue(self) -> MongoQueue:
        return self._queue

    def complete(self) -> None:
        """Mark the job done and remove it from the queue."""
        self._queue._complete(self)

    def error(self, message: str | None = None) -> None:
        """Record a failed attempt; the job is retried after a backoff, or fails."""
        self._queue._error(self, message)

    def progress(self, count: int = 0) -> None:
        """Store ``count`` and extend the lease by the queue's timeout from now."""
        self._queue._progress(self, count)

    def heartbeat(self) -> None:
        """Extend the lease by the queue's timeout from now, keeping the progress count.

        The worker calls it while a handler runs; raises ``LeaseLost`` if the
        lease was already lost.
        """
        self._queue._heartbeat(self)

    def release(self) -> None:
        """Put the job back in the queue at once; its attempts are unchanged."""
        self._queue._release(self)

    def __enter__(self) -> dict[str, Any]:
        return self.data

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outcome, message = exit_outcome(exc_type, exc, tb)
        if outcome == "complete":
            self.complete()
            return
        try:
            if outcome == "error":
                self.error(message)
            else:
                self.release()
        except MongoQueueError as inner:
            log_unrecorded_failure(self, inner)
