"""The scheduler thread of an app worker: fires the schedules of the queues it serves.

Every worker runs one (see :mod:`mongoqueue.tasks.schedules` for why any number
of them can, and how a tick is enqueued exactly once). ``AsyncScheduler`` in
:mod:`mongoqueue.tasks.aio_scheduler` is the asyncio twin.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

import pymongo.errors

from ..errors import MongoQueueError, driver_errors
from ..worker import Worker
from . import schedules as sops
from .runner import has_label
from .schedules import Schedule, due_tick

__all__ = ["AppWorker", "Scheduler"]

log = logging.getLogger("mongoqueue.schedules")

#: Longest pause between two evaluations, and the pause after an error (seconds).
MAX_PAUSE = 1.0
ERROR_PAUSE = 2.0
#: Shortest pause: a tick the server did not see as due yet is tried again soon.
MIN_PAUSE = 0.02
#: Pause after a tick was lost: another worker fired it, or the server's clock had not
#: reached it yet (this process's estimate runs ahead after a step back).
RETRY_PAUSE = 0.1

_UNKNOWN = object()


def transactions_supported(hello: dict[str, Any]) -> bool:
    return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"


def pause_until(ticks: list[datetime], now: datetime) -> float:
    """Seconds to sleep before the earliest of ``ticks`` (bounded)."""
    if not ticks:
        return MAX_PAUSE
    wait = (min(ticks) - now).total_seconds()
    return max(MIN_PAUSE, min(MAX_PAUSE, wait))


class Scheduler:
    """Fires ``schedules`` (of ``app``) on time; ``tick()`` is one pass."""

    def __init__(self, app: Any, schedules: list[Schedule]) -> None:
        self.app = app
        self.schedules = schedules
        self._last: dict[str, Any] = {}
        self._transactions: bool | None = None
        self._lost = False  # a tick was lost (raced, or not due yet on the server)
        self._conflicts: dict[str, float] = {}  # schedule id -> first conflict (monotonic)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.fired = 0

    def __repr__(self) -> str:
        return f"<Scheduler {[s.id for s in self.schedules]}>"

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

    def prepare(self) -> None:
        """Indexes, transaction support, and each schedule declared (for the CLI)."""
        with driver_errors():
            self._transactions = transactions_supported(self.app.db.command("hello"))
            keys, options = sops.job_index()
            for name in sorted({s.task.queue for s in self.schedules}):
                self.app.queue(name).collection.create_index(keys, **options)
            # Records of workers gone for an hour go (their transactions are long over).
            self.sessions.create_index("at", expireAfterSeconds=3600)
            self.sessions.create_index("schedule")
            for schedule in self.schedules:
                now = self.app.queue(schedule.task.queue).server_time()
                self.collection.update_one(
                    {"_id": schedule.id},
                    sops.declare_update(schedule, schedule.next_after(now)),
                    upsert=True,
                )
        self._last.clear()

    def tick(self) -> list[Any]:
        """Fire every schedule that is due now; returns the new jobs' ids."""
        if self._transactions is None:
            self.prepare()
        fired = []
        for schedule in self.schedules:
            job_id = self._evaluate(schedule)
            if job_id is not None:
                fired.append(job_id)
        return fired

    def pause(self) -> float:
        """Seconds until the next tick known here is due (at most ``MAX_PAUSE``)."""
        if self._lost:
            self._lost = False
            return RETRY_PAUSE
        ticks = []
        now = None
        for schedule in self.schedules:
            last = self._last.get(schedule.id, _UNKNOWN)
            if last is _UNKNOWN:
                return MIN_PAUSE
            now = now or self.app.queue(schedule.task.queue).server_time()
            ticks.append(schedule.next_after(last or now))
        return pause_until(ticks, now) if now is not None else MAX_PAUSE

    def _read_last(self, schedule: Schedule) -> datetime | None:
        with driver_errors():
            doc = self.collection.find_one({"_id": schedule.id}, {"last_fire_time": 1})
        if doc is None:
            self.prepare()
            return None
        last: datetime | None = doc.get("last_fire_time")
        self._last[schedule.id] = last
        return last

    def _evaluate(self, schedule: Schedule) -> Any:
        last = self._last.get(schedule.id, _UNKNOWN)
        if last is _UNKNOWN:
            last = self._read_last(schedule)
        queue = self.app.queue(schedule.task.queue)
        now = queue.server_time()
        tick = due_tick(schedule, last, now)
        if tick is None:
            return None
        job_id = self._fire(schedule, tick)
        if job_id is None:
            self._lost = True
            self._last.pop(schedule.id, None)  # lost the race, or not due on the server yet
            return None
        self._last[schedule.id] = tick
        self.fired += 1
        log.info("schedule %s fired tick %s: job %s", schedule.id, tick.isoformat(), job_id)
        return job_id

    def _fire(self, schedule: Schedule, tick: datetime) -> Any:
        """Advance the schedule to ``tick`` and insert its job, atomically where the
        server has transactions; None when another worker had it first."""
        if not self._transactions:
            return self._advance_and_put(schedule, tick, None)
        client = self.app.db.client
        try:
            with client.start_session() as session:
                self._record_session(schedule, session)
                with session.start_transaction():
                    job_id = self._advance_and_put(schedule, tick, session)
            self._conflicts.pop(schedule.id, None)
            return job_id
        except (pymongo.errors.PyMongoError, MongoQueueError) as exc:
            if has_label(exc, "TransientTransactionError"):
                self._on_conflict(schedule)
            # A write conflict with the worker that won, the tick's unique index, or an
            # unknown commit result: the schedule's document says which on the next read.
            log.debug("schedule %s tick %s not fired here: %s", schedule.id, tick, exc)
            return None

    def _record_session(self, schedule: Schedule, session: Any) -> None:
        filter, update = sops.session_record(schedule.id, self.app.consumer_id, session.session_id)
        with driver_errors():
            self.sessions.update_one(filter, update, upsert=True)

    def _on_conflict(self, schedule: Schedule) -> None:
        """Write conflicts for ``STALL``: a worker killed in its transaction holds the
        schedule's document; kill the sessions of workers that stopped attempting."""
        first = self._conflicts.setdefault(schedule.id, time.monotonic())
        if time.monotonic() - first < sops.STALL.total_seconds():
            return
        self._conflicts.pop(schedule.id, None)
        try:
            now = self.app.queue(schedule.task.queue).server_time()
            with driver_errors():
                stale = self.sessions.find(
                    sops.stale_sessions_filter(schedule.id, self.app.consumer_id, now)
                ).to_list()
                if stale:
                    self.app.db.client.admin.command("killSessions", [doc["lsid"] for doc in stale])
                    self.sessions.delete_many({"_id": {"$in": [doc["_id"] for doc in stale]}})
        except MongoQueueError as exc:
            log.warning("schedule %s: could not kill stale sessions: %s", schedule.id, exc)
            return
        log.warning(
            "schedule %s: killed %d stale session(s) holding it (a worker killed mid-tick)",
            schedule.id,
            len(stale),
        )

    def _advance_and_put(self, schedule: Schedule, tick: datetime, session: Any) -> Any:
        task = schedule.task
        queue = self.app.queue(task.queue)
        with driver_errors():
            advanced = self.collection.update_one(
                sops.advance_filter(schedule.id, tick),
                sops.advance_update(tick, schedule.next_after(tick)),
                session=session,
            )
        if advanced.matched_count == 0:
            if session is not None:
                session.abort_transaction()
            return None
        job_id = queue.put(
            schedule.payload(tick),
            task.priority,
            max_attempts=task.max_attempts,
            retry=task.retry,
            session=session,
        )
        with driver_errors():
            self.collection.update_one(
                {"_id": schedule.id}, sops.job_id_update(job_id), session=session
            )
        return job_id

    # ------------------------------------------------------------------ thread

    def run(self) -> None:
        """Evaluate until ``stop()``; errors are logged and retried after a pause."""
        while not self._stopping.is_set():
            try:
                self.tick()
                pause = self.pause()
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
            self._stopping.wait(pause)

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self.run, name="mongoqueue-schedules", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class AppWorker(Worker):
    """A :class:`~mongoqueue.worker.Worker` of an app that also fires its schedules."""

    def __init__(self, *args: Any, scheduler: Scheduler | None = None, **options: Any) -> None:
        super().__init__(*args, **options)
        self.scheduler = scheduler

    def run(self) -> int:
        if self.scheduler is not None:
            self.scheduler.start()
        try:
            return super().run()
        finally:
            if self.scheduler is not None:
                self.scheduler.stop()
