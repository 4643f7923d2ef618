"""What the schedules of a database look like now: for ``mongoqueue schedules`` and
the dashboard's Schedules page (read only, from ``mongoqueue_schedules``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pymongo.database import Database

from ..errors import driver_errors
from ..status import job_status
from .schedules import SCHEDULES_COLLECTION

__all__ = ["ScheduleRow", "read_schedules"]


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


@dataclass
class ScheduleRow:
    """One schedule as the workers last declared and fired it."""

    id: str
    task: str
    queue: str
    expression: str
    timezone: str
    missed: str
    next_fire_time: datetime | None
    last_fire_time: datetime | None
    last_job_id: Any
    last_job_state: str  # the job-state vocabulary; "unknown" once the job is gone
    declared_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "expression": self.expression,
            "timezone": self.timezone,
            "missed": self.missed,
            "next_fire_time": iso(self.next_fire_time),
            "last_fire_time": iso(self.last_fire_time),
            "last_job_id": None if self.last_job_id is None else str(self.last_job_id),
            "last_job_state": self.last_job_state,
            "declared_at": iso(self.declared_at),
        }


def read_schedules(db: Database[Any]) -> list[ScheduleRow]:
    """Every schedule a worker declared in ``db``, by id, with its last job's state."""
    rows = []
    with driver_errors():
        now = _aware(db.command("hello").get("localTime")) or datetime.now(timezone.utc)
        for doc in db[SCHEDULES_COLLECTION].find().sort("_id", 1):
            job_id = doc.get("last_job_id")
            state = ""
            if job_id is not None:
                job = db[str(doc.get("queue"))].find_one({"_id": job_id})
                state = job_status(job_id, job, now).state
            rows.append(
                ScheduleRow(
                    id=str(doc["_id"]),
                    task=str(doc.get("task", "")),
                    queue=str(doc.get("queue", "")),
                    expression=str(doc.get("expression", "")),
                    timezone=str(doc.get("timezone", "UTC")),
                    missed=str(doc.get("missed", "skip")),
                    next_fire_time=_aware(doc.get("next_fire_time")),
                    last_fire_time=_aware(doc.get("last_fire_time")),
                    last_job_id=job_id,
                    last_job_state=state,
                    declared_at=_aware(doc.get("declared_at")),
                )
            )
    return rows
