"""The workers registry: the documents of the ``mongoqueue_workers`` collection (no I/O).

While it runs, every worker (:class:`~mongoqueue.worker.Worker`,
:class:`~mongoqueue.aio_worker.AsyncWorker`, ``mongoqueue worker``) keeps one
document in the ``mongoqueue_workers`` collection of its queue's database,
written once per heartbeat interval (never per job) and deleted when it stops:

==============  ==========================================================================
``_id``         the worker's id: its queue's ``consumer_id``, ``#``, 8 random hex digits
                (several workers may share a consumer id; each has its own document)
``consumer_id`` the ``locked_by`` of the jobs it holds: how a job is matched to its worker
``host``        host name; ``pid``: process id; ``kind``: ``Worker`` or ``AsyncWorker``
``queues``      the collection names it works on; ``db``: their database
``concurrency`` jobs it runs at once; ``version``: mongoqueue's version
``interval``    seconds between two of its heartbeat writes
``started``     when it registered; ``heartbeat``: its last write (both the server's
                ``$$NOW``)
``expire_at``   ``heartbeat`` plus :data:`REMOVE_AFTER_SECONDS`: a TTL index removes the
                documents of workers that died without unregistering
``jobs``        the ids of the jobs it holds now
``counts``      what it settled since it started (completed, retried, failed, released,
                lost, abandoned: see :mod:`mongoqueue._worker_core`)
==============  ==========================================================================

A worker is *dead* when its last heartbeat is older than
:data:`DEAD_AFTER_BEATS` intervals by the server's clock: it was killed, or
cannot reach MongoDB. A job held by a dead worker comes back when its lease
expires; the dashboard and ``mongoqueue workers`` show it before then.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pymongo import ASCENDING, IndexModel

__all__ = [
    "DEAD_AFTER_BEATS",
    "REMOVE_AFTER_SECONDS",
    "WORKERS_COLLECTION",
    "WorkerInfo",
    "beat_update",
    "holder",
    "indexes",
    "new_worker_id",
    "parse_workers",
]

#: The collection (in each queue's database) where running workers register.
WORKERS_COLLECTION = "mongoqueue_workers"

#: A worker whose last heartbeat is older than this many of its intervals is shown as dead.
DEAD_AFTER_BEATS = 3

#: The TTL index removes a dead worker's document this long after its last heartbeat.
REMOVE_AFTER_SECONDS = 3600

Doc = dict[str, Any]


def indexes() -> list[IndexModel]:
    """The TTL index on ``expire_at`` and the index that finds a job's worker."""
    return [
        IndexModel([("expire_at", ASCENDING)], expireAfterSeconds=0, name="mq_workers_ttl"),
        IndexModel([("consumer_id", ASCENDING)], name="mq_workers_consumer"),
    ]


def new_worker_id(consumer_id: str | int) -> str:
    """A registry id derived from the queue's ``consumer_id``, unique per worker."""
    return f"{consumer_id}#{secrets.token_hex(4)}"


def _after_ms(ms: int) -> Doc:
    # As operations._after_ms: $toDate of $toLong milliseconds (MongoDB 4.0+).
    return {"$toDate": {"$add": [{"$toLong": "$$NOW"}, ms]}}


def beat_update(
    *,
    consumer_id: str | int,
    kind: str,
    db: str,
    queues: Sequence[str],
    concurrency: int,
    version: str,
    interval: float,
    jobs: Iterable[Any],
    counts: Mapping[str, int],
) -> list[Doc]:
    """The update pipeline of one heartbeat write (upserted by ``_id``; server times)."""
    return [
        {
            "$set": {
                "consumer_id": consumer_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "kind": kind,
                "db": db,
                "queues": list(queues),
                "concurrency": concurrency,
                "version": version,
                "interval": float(interval),
                "started": {"$ifNull": ["$started", "$$NOW"]},
                "heartbeat": "$$NOW",
                "expire_at": _after_ms(int(REMOVE_AFTER_SECONDS * 1000)),
                "jobs": {"$literal": list(jobs)},
                "counts": {"$literal": dict(counts)},
            }
        }
    ]


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class WorkerInfo:
    """One registered worker, as read at the server time ``now``."""

    id: str
    consumer_id: str | int
    host: str
    pid: int | None
    kind: str
    queues: list[str]
    concurrency: int | None
    version: str
    interval: float
    started: datetime | None
    heartbeat: datetime | None
    age: float | None  # seconds since its last heartbeat, by the server's clock
    jobs: list[Any]
    counts: dict[str, int]

    @property
    def alive(self) -> bool:
        """False once its last heartbeat is older than ``DEAD_AFTER_BEATS`` intervals."""
        return self.age is not None and self.age <= DEAD_AFTER_BEATS * self.interval

    @property
    def state(self) -> str:
        return "alive" if self.alive else "dead"

    def as_json(self) -> Doc:
        return {
            "id": self.id,
            "consumer_id": self.consumer_id,
            "host": self.host,
            "pid": self.pid,
            "kind": self.kind,
            "queues": self.queues,
            "concurrency": self.concurrency,
            "version": self.version,
            "state": self.state,
            "heartbeat_age_seconds": None if self.age is None else round(self.age, 3),
            "interval": self.interval,
            "started": self.started,
            "heartbeat": self.heartbeat,
            "jobs": self.jobs,
            "counts": self.counts,
        }


def parse_workers(docs: Iterable[Mapping[str, Any]], now: datetime) -> list[WorkerInfo]:
    """The registry's documents as :class:`WorkerInfo`, alive ones first, then by id."""
    now = _utc(now) or now
    rows = []
    for doc in docs:
        beat = _utc(doc.get("heartbeat"))
        interval = doc.get("interval")
        rows.append(
            WorkerInfo(
                id=str(doc.get("_id")),
                consumer_id=str(doc.get("consumer_id", "")),
                host=str(doc.get("host", "")),
                pid=doc.get("pid") if isinstance(doc.get("pid"), int) else None,
                kind=str(doc.get("kind", "")),
                queues=[str(q) for q in doc.get("queues") or []],
                concurrency=doc.get("concurrency"),
                version=str(doc.get("version", "")),
                interval=float(interval) if isinstance(interval, (int, float)) else 0.0,
                started=_utc(doc.get("started")),
                heartbeat=beat,
                age=None if beat is None else max(0.0, (now - beat).total_seconds()),
                jobs=list(doc.get("jobs") or []),
                counts=dict(doc.get("counts") or {}),
            )
        )
    return sorted(rows, key=lambda w: (not w.alive, w.id))


def holder(
    job_id: Any, locked_by: str | int | None, workers: Iterable[WorkerInfo]
) -> WorkerInfo | None:
    """The registered worker holding a running job: the one with the job's ``locked_by``
    as its consumer id that lists the job among its held jobs, else any with that id."""
    if locked_by is None:
        return None
    candidates = [w for w in workers if w.consumer_id == locked_by]
    for worker in candidates:
        if job_id in worker.jobs:
            return worker
    return candidates[0] if candidates else None


def workers_filter(queue: str | None = None) -> Doc:
    """The registry documents of the workers of one queue (collection name), or all."""
    return {} if queue is None else {"queues": queue}


def holders_filter(consumer_ids: Iterable[str | int]) -> Doc:
    """The registry documents that may hold jobs locked by ``consumer_ids``."""
    return {"consumer_id": {"$in": sorted(set(consumer_ids))}}
