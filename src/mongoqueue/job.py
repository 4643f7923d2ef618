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
    from .queue import Job

__all__ = ["Job", "JobData", "LetGo"]

#: How a handle let go of its job: it recorded a failed attempt (``error``), it
#: released it, or a fenced call found the job no longer held by it: held by
#: another claim or failed (``lost``), back in the queue unheld (``free``), or
#: deleted (``gone``). The worker reads it to report what happened to a job.
LetGo = Literal["failed", "released", "lost", "free", "gone"]

log = logging.getLogger("mongoqueue")


def __getattr__(name: str) -> Any:
    # Job is defined in the generated mongoqueue.queue (see scripts/synchro), which
    # imports this module: import it on first use so ``mongoqueue.job.Job`` keeps working.
    if name == "Job":
        from .queue import Job

        return Job
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class JobData:
    """Read-only view of a job document (shared by the sync and async handles)."""

    __slots__ = ("_data", "_let_go", "_settled", "_token", "heartbeat_paused")

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data: dict[str, Any] = dict(data)
        token = self._data.get("lease_token")
        self._token: str | None = token if isinstance(token, str) else None
        #: How this handle itself let go of the job: "complete", "returned" (error or
        #: release), or None while it holds it (or never did, or lost its lease).
        self._settled: str | None = None
        #: While True, a worker's heartbeat leaves this job alone (the task layer
        #: sets it while a transaction that completes the job is open, so a
        #: heartbeat write cannot conflict with the transaction's completion).
        self.heartbeat_paused = False
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
    def prefetched(self) -> bool:
        """Claimed to wait in a worker's buffer and not started yet (see ``start()``)."""
        return self._data.get("prefetched") is True

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
        if self._data.get("state") in ("failed", "completed", "cancelled"):
            return str(self._data["state"])
        return "running" if isinstance(self._data.get("lease_token"), str) else "waiting"

    @property
    def held(self) -> bool:
        """True while this handle holds a claim on the job (as far as it knows)."""
        return self._token is not None

    @property
    def key(self) -> str | None:
        return self._data.get("key")

    @property
    def locked_by(self) -> str | int | None:
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
    def txn_session(self) -> dict[str, Any] | None:
        """The lsid recorded by the last ``record_session`` on this job, if any."""
        value = self._data.get("txn_session")
        return dict(value) if isinstance(value, Mapping) else None

    @property
    def cancel_requested(self) -> bool:
        """True once a cancel request for this running job reached this handle.

        A worker's heartbeat brings it; a long sync task may check it and stop.
        """
        return bool(self._data.get("cancel_requested", False))

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


def settled_by_handle(job: JobData) -> bool:
    """Whether the handle already completed, errored or released the job itself.

    Leaving ``with job`` then does nothing more (0.7.2's second find-and-modify
    matched nothing): ``with job: ...; job.complete()`` and a ``job.error()`` inside
    the block stay what they were.
    """
    return job._token is None and job._settled is not None


def log_unrecorded_failure(job: JobData, error: MongoQueueError) -> None:
    log.warning("could not record the failure of job %s: %s", job.id, error)
