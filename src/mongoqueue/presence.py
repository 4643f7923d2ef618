"""A running worker's registry document and activity flushes (the I/O of :mod:`.registry`).

:class:`WorkerPresence` (a thread, for :class:`~mongoqueue.worker.Worker`) and
:class:`AsyncWorkerPresence` (a task, for
:class:`~mongoqueue.aio_worker.AsyncWorker`) register the worker when it
starts, write its heartbeat document once per interval (one upsert carrying
the jobs it holds and its counts), flush its :class:`~mongoqueue.activity.
ActivityBuffer` with the server time that write returns, and delete the
document when it stops. A failure of any of these is logged and never stops the
worker: the registry is for watching, the jobs' leases stay the truth.

:func:`read_workers` and :func:`read_activity` are what ``mongoqueue workers``
and the dashboard read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pymongo
import pymongo.errors
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection
from pymongo.database import Database

from . import activity, registry
from .activity import ActivityBuffer
from .errors import MongoQueueError, driver_errors

__all__ = [
    "AsyncWorkerPresence",
    "WorkerPresence",
    "read_activity",
    "read_workers",
    "server_time",
]

log = logging.getLogger("mongoqueue.worker")

#: What a heartbeat returns (the server time of the write is all it needs).
_BEAT_PROJECTION = {"heartbeat": 1, "_id": 0}

#: Longest time one registry write may take (pymongo's client-side timeout; at most the
#: heartbeat interval, at least 1 s), so a worker stopping while MongoDB is unreachable is
#: not held up by server selection.
WRITE_TIMEOUT_SECONDS = 5.0

#: The errors a registry write may meet; logged, never raised into the worker.
_ERRORS = (pymongo.errors.PyMongoError, MongoQueueError)

Snapshot = Callable[[], tuple[Sequence[Any], Mapping[str, int]]]


def _version() -> str:
    from . import __version__

    return __version__


class _PresenceCore:
    """What the sync and async presences share: the documents of each write."""

    def __init__(
        self,
        database: Any,
        consumer_id: str | int,
        *,
        kind: str,
        queue: str,
        concurrency: int,
        interval: float,
        snapshot: Snapshot,
        buffer: ActivityBuffer,
    ) -> None:
        self.id = registry.new_worker_id(consumer_id)
        self.interval = interval
        self.buffer = buffer
        self._workers = database[registry.WORKERS_COLLECTION]
        self._activity = database[activity.ACTIVITY_COLLECTION]
        self._snapshot = snapshot
        self._static = {
            "consumer_id": consumer_id,
            "kind": kind,
            "db": database.name,
            "queues": [queue],
            "concurrency": concurrency,
            "version": _version(),
            "interval": interval,
        }
        self._indexed = False
        self._timeout = max(1.0, min(WRITE_TIMEOUT_SECONDS, interval))

    def _update(self) -> list[dict[str, Any]]:
        jobs, counts = self._snapshot()
        return registry.beat_update(**self._static, jobs=jobs, counts=counts)

    @staticmethod
    def _server_time(doc: Mapping[str, Any] | None) -> datetime | None:
        value = None if doc is None else doc.get("heartbeat")
        if not isinstance(value, datetime):
            return None
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class WorkerPresence(_PresenceCore):
    """The registry document of a sync worker, written from its own thread."""

    _workers: Collection[Any]
    _activity: Collection[Any]

    def __init__(self, database: Database[Any], consumer_id: str | int, **kwargs: Any) -> None:
        super().__init__(database, consumer_id, **kwargs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mongoqueue-presence", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        """Flush the last counts and remove the worker's document."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        if not self.beat():
            return  # MongoDB unreachable: the entry shows dead, then the TTL index removes it
        try:
            with pymongo.timeout(self._timeout), driver_errors():
                self._workers.delete_one({"_id": self.id})
        except _ERRORS as exc:
            log.warning("workers registry: could not unregister %s: %s", self.id, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> bool:
        """One heartbeat write, then the activity flush placed by its server time.

        False when the heartbeat write failed (logged)."""
        try:
            with pymongo.timeout(self._timeout), driver_errors():
                if not self._indexed:
                    self._workers.create_indexes(registry.indexes())
                    self._activity.create_indexes(activity.indexes())
                    self._indexed = True
                doc = self._workers.find_one_and_update(
                    {"_id": self.id},
                    self._update(),
                    projection=_BEAT_PROJECTION,
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
        except _ERRORS as exc:
            log.warning("workers registry: heartbeat of %s failed: %s", self.id, exc)
            return False
        now = self._server_time(doc)
        if now is None or not len(self.buffer):
            return True
        buckets = self.buffer.take(now)
        try:
            with pymongo.timeout(self._timeout), driver_errors():
                self._activity.bulk_write(activity.flush_requests(buckets), ordered=False)
        except _ERRORS as exc:
            self.buffer.put_back(buckets)
            log.warning("workers registry: could not record activity (will retry): %s", exc)
        return True


class AsyncWorkerPresence(_PresenceCore):
    """The registry document of an async worker, written from its own task."""

    _workers: AsyncCollection[Any]
    _activity: AsyncCollection[Any]

    def __init__(self, database: Any, consumer_id: str | int, **kwargs: Any) -> None:
        super().__init__(database, consumer_id, **kwargs)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._run(), name="mongoqueue-presence")

    async def stop(self) -> None:
        """Flush the last counts and remove the worker's document."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not await self.beat():
            return  # MongoDB unreachable: the entry shows dead, then the TTL index removes it
        try:
            with pymongo.timeout(self._timeout), driver_errors():
                await self._workers.delete_one({"_id": self.id})
        except _ERRORS as exc:
            log.warning("workers registry: could not unregister %s: %s", self.id, exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.beat()

    async def beat(self) -> bool:
        """One heartbeat write, then the activity flush placed by its server time.

        False when the heartbeat write failed (logged)."""
        try:
            with pymongo.timeout(self._timeout), driver_errors():
                if not self._indexed:
                    await self._workers.create_indexes(registry.indexes())
                    await self._activity.create_indexes(activity.indexes())
                    self._indexed = True
                doc = await self._workers.find_one_and_update(
                    {"_id": self.id},
                    self._update(),
                    projection=_BEAT_PROJECTION,
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
        except _ERRORS as exc:
            log.warning("workers registry: heartbeat of %s failed: %s", self.id, exc)
            return False
        now = self._server_time(doc)
        if now is None or not len(self.buffer):
            return True
        buckets = self.buffer.take(now)
        try:
            with pymongo.timeout(self._timeout), driver_errors():
                await self._activity.bulk_write(activity.flush_requests(buckets), ordered=False)
        except _ERRORS as exc:
            self.buffer.put_back(buckets)
            log.warning("workers registry: could not record activity (will retry): %s", exc)
        return True


# --------------------------------------------------------------------------- readers


def server_time(database: Database[Any]) -> datetime:
    """The server's current time (``hello``'s ``localTime``), aware UTC."""
    with driver_errors():
        reply = database.command("hello")
    value = reply.get("localTime")
    if not isinstance(value, datetime):
        raise MongoQueueError("the server's hello reply has no localTime")
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def read_workers(
    database: Database[Any],
    queue: str | None = None,
    *,
    consumer_ids: Iterable[str | int] | None = None,
) -> list[registry.WorkerInfo]:
    """The registered workers (of one queue, or holding jobs of ``consumer_ids``)."""
    now = server_time(database)
    query = (
        registry.workers_filter(queue)
        if consumer_ids is None
        else registry.holders_filter(consumer_ids)
    )
    with driver_errors():
        docs = list(database[registry.WORKERS_COLLECTION].find(query))
    return registry.parse_workers(docs, now)


def read_activity(
    database: Database[Any], queue: str, minutes: int
) -> list[tuple[datetime, dict[str, int]]]:
    """The events of ``queue`` in each of the last ``minutes`` minutes (server time)."""
    now = server_time(database)
    since = now - timedelta(minutes=minutes - 1)
    with driver_errors():
        docs = list(
            database[activity.ACTIVITY_COLLECTION].find(activity.window_filter(queue, since))
        )
    return activity.per_minute(docs, since, now)
