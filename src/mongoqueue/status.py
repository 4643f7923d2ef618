"""A job's status by id, for any job (raw or task): pure, no I/O.

:func:`job_status` turns a job document (or None) and the server's time into a
:class:`JobStatus`, in the one vocabulary of states used by the API, the CLI and
the dashboard:

``waiting``    due, not held
``delayed``    not yet due, not held (scheduled, or backing off after an error)
``running``    held by a consumer (``lease_expired`` tells whether its lease ended)
``completed``  finished and kept with its result (task layer; raw jobs are deleted)
``failed``     reached its max attempts; kept until requeued or purged
``cancelled``  cancelled and kept (task layer)
``unknown``    no such job: never existed, completed and deleted, or expired
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

__all__ = ["STATES", "JobStatus", "job_status"]

STATES = ("waiting", "delayed", "running", "completed", "failed", "cancelled", "unknown")

#: States a job never leaves (apart from a requeue of a failed job).
FINAL_STATES = frozenset({"completed", "failed", "cancelled", "unknown"})


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class JobStatus(str):
    """The state of one job (a ``str``: ``status == "completed"`` works) and its details.

    Attributes: ``state`` (the string itself), ``job_id``, ``attempts``,
    ``max_attempts`` (the job's own limit, or None for the queue's),
    ``last_error``, ``created_at``, ``scheduled_at``, ``available_at``,
    ``started_at`` (of the current claim), ``finished_at``, ``expire_at``,
    ``locked_by``, ``lease_expired``, ``cancel_requested``, ``task`` (task
    name for task jobs), ``result`` (for a completed job) and ``has_result``.
    Times come from the server's clock, as timezone-aware UTC datetimes.
    """

    job_id: Any
    attempts: int
    max_attempts: int | None
    last_error: str | None
    created_at: datetime | None
    scheduled_at: datetime | None
    available_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    expire_at: datetime | None
    locked_by: str | None
    lease_expired: bool
    cancel_requested: bool
    task: str | None
    result: Any
    has_result: bool

    def __new__(
        cls, state: str, job_id: Any, doc: Mapping[str, Any] | None = None, **extra: Any
    ) -> JobStatus:
        self = super().__new__(cls, state)
        doc = doc or {}
        payload = doc.get("payload")
        task = payload.get("task") if isinstance(payload, Mapping) else None
        self.job_id = job_id
        self.attempts = int(doc.get("attempts", 0) or 0)
        self.max_attempts = doc.get("max_attempts")
        self.last_error = doc.get("last_error")
        self.created_at = _utc(doc.get("created_at"))
        self.scheduled_at = _utc(doc.get("scheduled_at"))
        self.available_at = _utc(doc.get("visible_at"))
        self.started_at = _utc(doc.get("locked_at"))
        self.finished_at = _utc(doc.get("finished_at"))
        self.expire_at = _utc(doc.get("expire_at"))
        self.locked_by = doc.get("locked_by")
        self.lease_expired = bool(extra.get("lease_expired", False))
        self.cancel_requested = bool(doc.get("cancel_requested", False))
        self.task = task if isinstance(task, str) else None
        self.has_result = "result" in doc
        self.result = doc.get("result")
        return self

    @property
    def state(self) -> str:
        return str.__str__(self)

    @property
    def final(self) -> bool:
        """True for completed, failed, cancelled and unknown: the job will not run again."""
        return self.state in FINAL_STATES

    def as_dict(self) -> dict[str, Any]:
        """Every field, for JSON output (the result included)."""
        fields = [
            "job_id",
            "attempts",
            "max_attempts",
            "last_error",
            "created_at",
            "scheduled_at",
            "available_at",
            "started_at",
            "finished_at",
            "expire_at",
            "locked_by",
            "lease_expired",
            "cancel_requested",
            "task",
        ]
        out: dict[str, Any] = {"state": self.state}
        out.update({name: getattr(self, name) for name in fields})
        if self.has_result:
            out["result"] = self.result
        return out

    def __getitem__(self, key: Any) -> Any:
        """``status["attempts"]`` reads a field (as in ``as_dict()``); ints and slices
        index the state string as usual."""
        if isinstance(key, str):
            fields = self.as_dict()
            if key not in fields:
                raise KeyError(key)
            return fields[key]
        return str.__getitem__(self, key)

    def __repr__(self) -> str:
        return f"<JobStatus {self.job_id} {self.state} attempts={self.attempts}>"

    def __reduce__(self) -> Any:  # pickling keeps the string only
        return (str, (self.state,))


def job_status(job_id: Any, doc: Mapping[str, Any] | None, now: datetime) -> JobStatus:
    """The status of job ``job_id`` given its document (None: not found) at server time ``now``."""
    if doc is None:
        return JobStatus("unknown", job_id)
    stored = doc.get("state")
    if stored in ("failed", "completed", "cancelled"):
        return JobStatus(str(stored), job_id, doc)
    visible = _utc(doc.get("visible_at"))
    now = _utc(now) or now
    if isinstance(doc.get("lease_token"), str):
        expires = _utc(doc.get("lease_expires_at"))
        expired = expires is not None and expires <= now
        return JobStatus("running", job_id, doc, lease_expired=expired)
    if visible is not None and visible > now:
        return JobStatus("delayed", job_id, doc)
    return JobStatus("waiting", job_id, doc)
