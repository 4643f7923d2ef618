"""Errors of the task layer; all derive from :class:`mongoqueue.MongoQueueError`.

::

    MongoQueueError
    ├── TaskFailed                 result(): the job failed (remote error and traceback)
    ├── TaskCancelled              result(): the job was cancelled
    ├── ResultUnavailable          result(): no such job (expired, deleted, never existed)
    ├── ResultTimeout (TimeoutError) result(timeout=): time ran out; names the job's state
    ├── UnknownTaskError           enqueue/lookup of a name the app does not know
    └── TransactionsUnsupported    transactional tasks on a server without transactions
"""

from __future__ import annotations

from typing import Any

from ..errors import MongoQueueError

__all__ = [
    "ResultTimeout",
    "ResultUnavailable",
    "TaskCancelled",
    "TaskFailed",
    "TransactionsUnsupported",
    "UnknownTaskError",
]


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no error message recorded"


class TaskFailed(MongoQueueError):
    """The job failed (max attempts reached).

    ``job_id``; ``error``: the remote error's last line (``Type: message``);
    ``remote_traceback``: the whole traceback text recorded by the worker;
    ``attempts``.
    """

    def __init__(self, job_id: Any, remote_traceback: str | None, attempts: int) -> None:
        self.job_id = job_id
        self.remote_traceback = remote_traceback or ""
        self.error = _last_line(remote_traceback)
        self.attempts = attempts
        super().__init__(
            f"job {job_id} failed after {attempts} attempt(s): {self.error}\n"
            f"remote traceback:\n{self.remote_traceback}"
        )


class TaskCancelled(MongoQueueError):
    """The job was cancelled; it has no result."""

    def __init__(self, job_id: Any) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} was cancelled")


class ResultUnavailable(MongoQueueError):
    """No job with this id: it never existed, or it finished and was deleted
    (``keep_result=0``) or expired (past ``keep_result``)."""

    def __init__(self, job_id: Any) -> None:
        self.job_id = job_id
        super().__init__(
            f"job {job_id} is unknown: it never existed, or it completed and was deleted "
            "(keep_result=0) or its result expired"
        )


class ResultTimeout(MongoQueueError, TimeoutError):
    """``result(timeout=...)`` ran out of time; ``state`` is the job's state then."""

    def __init__(self, job_id: Any, state: str, timeout: float) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(f"no result for job {job_id} after {timeout}s: the job is {state}")


class UnknownTaskError(MongoQueueError, KeyError):
    """The app has no task of this name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TransactionsUnsupported(MongoQueueError):
    """Transactional tasks need a replica set or a sharded cluster."""
