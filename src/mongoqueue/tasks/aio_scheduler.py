"""The asyncio twin of :mod:`mongoqueue.tasks.scheduler`: an AsyncApp worker's schedules.

The same decisions (:mod:`mongoqueue.tasks.schedules`) and the same writes, awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

import pymongo.errors

from ..aio_worker import AsyncWorker
from ..errors import MongoQueueError, driver_errors
from . import schedules as sops
from .runner import has_label
from .scheduler import (
    ERROR_PAUSE,
    MAX_PAUSE,
    MIN_PAUSE,
    RETRY_PAUSE,
    pause_until,
    transactions_supported,
)
from .schedules import Schedule, due_tick

__all__ = ["AsyncAppWorker", "AsyncScheduler"]

log = logging.getLogger("mongoqueue.schedules")

_UNKNOWN = object()


class AsyncScheduler:
    """Fires ``schedules`` (of an AsyncApp) on time; ``await tick()`` is one pass."""

    def __init__(self, app: Any, schedules: list[Schedule]) -> None:
        self.app = app
        self.schedules = schedules
        self._last: dict[str, Any] = {}
        self._transactions: bool | None = None
        self._lost = False  # a tick was lost (raced, or not due yet on the server)
        self._conflicts: dict[str, float] = {}  # schedule id -> first conflict (monotonic)
        self.fired = 0

    def __repr__(self) -> str:
        return f"<AsyncScheduler {[s.id for s in self.schedules]}>"

    @property
    def collection(self) -> Any:
        from .app import task_codec_options

        db = self.app.db
        return db.get_collection(
            sops.SCHEDULES_COLLECTION, codec_options=task_codec_options(db.codec_options)
        )

    @property
    def sessions(self) -> Any:
        return self.app.db.get_collection(sops.SESSIONS_COLLECTION)

    async def prepare(self) -> None:
        with driver_errors():
            self._transactions = transactions_supported(await self.app.db.command("hello"))
            keys, options = sops.job_index()
            for name in sorted({s.task.queue for s in self.schedules}):
                await self.app.queue(name).collection.create_index(keys, **options)
            # Records of workers gone for an hour go (their transactions are long over).
            await self.sessions.create_index("at", expireAfterSeconds=3600)
            await self.sessions.create_index("schedule")
            for schedule in self.schedules:
                now = await self.app.queue(schedule.task.queue).server_time()
                await self.collection.update_one(
                    {"_id": schedule.id},
                    sops.declare_update(schedule, schedule.next_after(now)),
                    upsert=True,
                )
        self._last.clear()

    async def tick(self) -> list[Any]:
        if self._transactions is None:
            await self.prepare()
        fired = []
        for schedule in self.schedules:
            job_id = await self._evaluate(schedule)
            if job_id is not None:
                fired.append(job_id)
        return fired

    async def pause(self) -> float:
        if self._lost:
            self._lost = False
            return RETRY_PAUSE
        ticks = []
        now = None
        for schedule in self.schedules:
            last = self._last.get(schedule.id, _UNKNOWN)
            if last is _UNKNOWN:
                return MIN_PAUSE
            now = now or await self.app.queue(schedule.task.queue).server_time()
            ticks.append(schedule.next_after(last or now))
        return pause_until(ticks, now) if now is not None else MAX_PAUSE

    async def _read_last(self, schedule: Schedule) -> datetime | None:
        with driver_errors():
            doc = await self.collection.find_one({"_id": schedule.id}, {"last_fire_time": 1})
        if doc is None:
            await self.prepare()
            return None
        last: datetime | None = doc.get("last_fire_time")
        self._last[schedule.id] = last
        return last

    async def _evaluate(self, schedule: Schedule) -> Any:
        last = self._last.get(schedule.id, _UNKNOWN)
        if last is _UNKNOWN:
            last = await self._read_last(schedule)
        queue = self.app.queue(schedule.task.queue)
        now = await queue.server_time()
        tick = due_tick(schedule, last, now)
        if tick is None:
            return None
        job_id = await self._fire(schedule, tick)
        if job_id is None:
            self._lost = True
            self._last.pop(schedule.id, None)
            return None
        self._last[schedule.id] = tick
        self.fired += 1
        log.info("schedule %s fired tick %s: job %s", schedule.id, tick.isoformat(), job_id)
        return job_id

    async def _fire(self, schedule: Schedule, tick: datetime) -> Any:
        if not self._transactions:
            return await self._advance_and_put(schedule, tick, None)
        client = self.app.db.client
        try:
            async with client.start_session() as session:
                await self._record_session(schedule, session)
                async with await session.start_transaction():
                    job_id = await self._advance_and_put(schedule, tick, session)
            self._conflicts.pop(schedule.id, None)
            return job_id
        except (pymongo.errors.PyMongoError, MongoQueueError) as exc:
            if has_label(exc, "TransientTransactionError"):
                await self._on_conflict(schedule)
            log.debug("schedule %s tick %s not fired here: %s", schedule.id, tick, exc)
            return None

    async def _record_session(self, schedule: Schedule, session: Any) -> None:
        filter, update = sops.session_record(schedule.id, self.app.consumer_id, session.session_id)
        with driver_errors():
            await self.sessions.update_one(filter, update, upsert=True)

    async def _on_conflict(self, schedule: Schedule) -> None:
        """Write conflicts for ``STALL``: a worker killed in its transaction holds the
        schedule's document; kill the sessions of workers that stopped attempting."""
        first = self._conflicts.setdefault(schedule.id, time.monotonic())
        if time.monotonic() - first < sops.STALL.total_seconds():
            return
        self._conflicts.pop(schedule.id, None)
        try:
            now = await self.app.queue(schedule.task.queue).server_time()
            with driver_errors():
                stale = await self.sessions.find(
                    sops.stale_sessions_filter(schedule.id, self.app.consumer_id, now)
                ).to_list()
                if stale:
                    await self.app.db.client.admin.command(
                        "killSessions", [doc["lsid"] for doc in stale]
                    )
                    await self.sessions.delete_many({"_id": {"$in": [doc["_id"] for doc in stale]}})
        except MongoQueueError as exc:
            log.warning("schedule %s: could not kill stale sessions: %s", schedule.id, exc)
            return
        log.warning(
            "schedule %s: killed %d stale session(s) holding it (a worker killed mid-tick)",
            schedule.id,
            len(stale),
        )

    async def _advance_and_put(self, schedule: Schedule, tick: datetime, session: Any) -> Any:
        task = schedule.task
        queue = self.app.queue(task.queue)
        with driver_errors():
            advanced = await self.collection.update_one(
                sops.advance_filter(schedule.id, tick),
                sops.advance_update(tick, schedule.next_after(tick)),
                session=session,
            )
        if advanced.matched_count == 0:
            if session is not None:
                await session.abort_transaction()
            return None
        job_id = await queue.put(
            schedule.payload(tick),
            task.priority,
            max_attempts=task.max_attempts,
            retry=task.retry,
            session=session,
        )
        with driver_errors():
            await self.collection.update_one(
                {"_id": schedule.id}, sops.job_id_update(job_id), session=session
            )
        return job_id

    async def run(self) -> None:
        """Evaluate until cancelled; errors are logged and retried after a pause."""
        while True:
            try:
                await self.tick()
                pause = await self.pause()
            except MongoQueueError as exc:
                log.warning("schedules: %s (retrying in %.0f s)", exc, ERROR_PAUSE)
                self._last.clear()
                self._transactions = None
                pause = ERROR_PAUSE
            except Exception:
                log.exception("schedules: unexpected error (retrying in %.0f s)", ERROR_PAUSE)
                self._last.clear()
                self._transactions = None
                pause = ERROR_PAUSE
            await asyncio.sleep(pause)


class AsyncAppWorker(AsyncWorker):
    """An :class:`~mongoqueue.AsyncWorker` of an AsyncApp that also fires its schedules."""

    def __init__(self, *args: Any, scheduler: AsyncScheduler | None = None, **options: Any) -> None:
        super().__init__(*args, **options)
        self.scheduler = scheduler

    async def run(self) -> int:
        if self.scheduler is None:
            return await super().run()
        task = asyncio.get_running_loop().create_task(self.scheduler.run())
        try:
            return await super().run()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
