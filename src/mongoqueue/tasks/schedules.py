"""Periodic and cron schedules: definitions, tick arithmetic and documents (no I/O).

::

    @app.periodic(cron="0 3 * * *", timezone="Europe/Paris")
    @app.task
    def nightly_report(fire_time): ...

    @app.periodic(every=timedelta(minutes=5), kwargs={"region": "eu"})
    @app.task
    def refresh(region): ...

**Exactly once per tick.** Every worker serving a schedule's queue evaluates it;
there is no scheduler process. The state of a schedule is one document of the
``mongoqueue_schedules`` collection (``_id`` = the schedule id) holding
``last_fire_time``. A worker fires tick ``T`` with, in one transaction:

1. the conditional update ``{_id: id, last_fire_time < T (or null),
   $expr: T <= $$NOW}`` that moves ``last_fire_time`` to ``T`` (the server
   decides that the tick is due, on its own clock, and at most one writer can
   move a value forward past ``T``: a concurrent transaction gets a write
   conflict and aborts);
2. the insert of the job, whose payload carries ``schedule`` and ``fire_time``
   under a unique index of the queue collection.

The job therefore exists if and only if the schedule advanced to its tick, and
``last_fire_time`` never goes back, so a tick is never enqueued twice, even
after its job completed and was deleted, and whatever the workers' wall clocks
say (their tick arithmetic uses the queue's estimate of the server's clock, and
the server re-checks it with ``$$NOW``). On a standalone server (no
transactions) the two writes are made one after the other: a worker killed
between them loses that tick (at most once, never twice).

**Missed ticks.** ``grace`` (default: the schedule's interval, at most 60 s) is
how late a tick may still fire. Ticks after ``last_fire_time`` fire in order
while they are within it. Older ones were missed (no worker ran then): with
``missed="skip"`` (default) they are dropped; with ``missed="latest"`` the most
recent tick runs once. Never one job per missed tick. A schedule declared for
the first time never fires ticks older than ``grace``.

**Cron** expressions are evaluated by `cronsim <https://pypi.org/project/cronsim/>`_
(5 fields, or 6 with a seconds field first) in the schedule's
IANA ``timezone`` (default UTC). Daylight saving time follows cronsim's rule,
which is Debian cron's: a tick in the hour skipped in spring runs at the first
valid time after the gap (once); a fixed-time tick in the hour repeated in
autumn runs once (in its first occurrence), while wildcard minutes/hours (``*/15
* * * *``) run in both occurrences, as they are distinct instants.

``every=`` intervals (one second or more) are anchored at the Unix epoch in UTC:
``every=timedelta(minutes=5)`` fires at :00, :05, :10...
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import InvalidArgument, InvalidArgumentType

__all__ = [
    "FIRE_TIME_PARAMETER",
    "MAX_GRACE",
    "MISSED_POLICIES",
    "SCHEDULES_COLLECTION",
    "SESSIONS_COLLECTION",
    "STALL",
    "Schedule",
    "advance_filter",
    "advance_update",
    "declare_update",
    "due_tick",
    "job_id_update",
    "job_index",
    "session_record",
    "stale_sessions_filter",
]

#: The collection (in the app's database) holding one document per schedule.
SCHEDULES_COLLECTION = "mongoqueue_schedules"

#: A periodic task that declares this parameter receives the tick's time.
FIRE_TIME_PARAMETER = "fire_time"

MISSED_POLICIES = ("skip", "latest")

#: The default ``grace`` is the schedule's interval, capped at this.
MAX_GRACE = timedelta(seconds=60)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)

Doc = dict[str, Any]


def _utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


def _floor_ms(value: datetime) -> datetime:
    """BSON dates keep milliseconds: ticks are whole milliseconds."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def parse_cron(expression: str, zone: ZoneInfo) -> None:
    """Raise ``InvalidArgument`` unless cronsim accepts ``expression``."""
    try:
        from cronsim import CronSim, CronSimError
    except ImportError as exc:  # pragma: no cover - the extra is part of the test install
        raise InvalidArgument(
            "cron schedules need the cronsim package: pip install 'mongoqueue[schedules]'"
        ) from exc
    if not isinstance(expression, str):
        raise InvalidArgumentType(f"cron must be a str, got {type(expression).__name__}")
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise InvalidArgument(
            f"cron expression {expression!r} has {len(fields)} fields; use 5 "
            "(minute hour day-of-month month day-of-week, e.g. '0 3 * * *') or 6 "
            "(seconds first, e.g. '*/10 * * * * *')"
        )
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=zone))
    except CronSimError as exc:
        raise InvalidArgument(f"invalid cron expression {expression!r}: {exc}") from exc


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentType(
            f"timezone must be an IANA name such as 'Europe/Paris', got {name!r}"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidArgument(
            f"unknown timezone {name!r}: use an IANA name such as 'Europe/Paris' or 'UTC' "
            "(install the tzdata package where the system has no time zone database)"
        ) from exc


def _seconds(name: str, value: object) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, (int, float, timedelta)):
        raise InvalidArgumentType(f"{name} must be a timedelta or seconds, got {value!r}")
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


class Schedule:
    """One periodic schedule of a task (see ``App.periodic``)."""

    def __init__(
        self,
        task: Any,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        timezone: str = "UTC",
        id: str | None = None,
        kwargs: Mapping[str, Any] | None = None,
        missed: str = "skip",
        grace: timedelta | float | None = None,
    ) -> None:
        if (cron is None) == (every is None):
            raise InvalidArgument(
                "give a schedule exactly one of cron='0 3 * * *' or every=timedelta(minutes=5)"
            )
        self.task = task
        self.zone = _zone(timezone)
        self.timezone = timezone
        self.cron = cron
        self.every: timedelta | None = None
        if cron is not None:
            parse_cron(cron, self.zone)
        else:
            interval = _seconds("every", every)
            if interval < timedelta(seconds=1):
                raise InvalidArgument(f"every must be one second or more, got {interval}")
            if interval % _MS:
                raise InvalidArgument(f"every must be whole milliseconds, got {interval}")
            if timezone != "UTC":
                raise InvalidArgument(
                    "timezone applies to cron schedules; every= intervals are anchored in UTC"
                )
            self.every = interval
        if id is None:
            id = task.name
        if not isinstance(id, str) or not id:
            raise InvalidArgumentType(f"schedule id must be a non-empty str, got {id!r}")
        self.id = id
        if missed not in MISSED_POLICIES:
            raise InvalidArgument(
                f"missed must be one of {', '.join(map(repr, MISSED_POLICIES))}, got {missed!r}"
            )
        self.missed = missed
        self.grace = None if grace is None else _seconds("grace", grace)
        if self.grace is not None and self.grace < timedelta(0):
            raise InvalidArgument(f"grace must not be negative, got {self.grace}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise InvalidArgumentType(f"kwargs must be a dict, got {type(kwargs).__name__}")
        self.kwargs = dict(kwargs or {})
        self.takes_fire_time = FIRE_TIME_PARAMETER in task.signature.parameters
        if FIRE_TIME_PARAMETER in self.kwargs:
            raise InvalidArgument(
                f"kwargs of schedule {self.id!r} must not set {FIRE_TIME_PARAMETER!r}: "
                "each run receives its tick's time there"
            )
        # The arguments must bind and be BSON now, not at the first tick.
        self.payload(_EPOCH)

    def __repr__(self) -> str:
        return f"<Schedule {self.id} {self.expression} task={self.task.name}>"

    @property
    def expression(self) -> str:
        if self.cron is not None:
            return self.cron
        assert self.every is not None
        return f"every {_format_interval(self.every)}"

    # ------------------------------------------------------------------ ticks

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment`` (aware UTC)."""
        if self.every is not None:
            count = (moment - _EPOCH) // self.every
            return _EPOCH + (count + 1) * self.every
        return self._cron(moment, forward=True)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last tick at or before ``moment`` (aware UTC)."""
        if self.every is not None:
            return _EPOCH + ((moment - _EPOCH) // self.every) * self.every
        return self._cron(moment, forward=False)

    def _cron(self, moment: datetime, forward: bool) -> datetime:
        from cronsim import CronSim

        assert self.cron is not None
        second = _utc(moment).replace(microsecond=0)
        start = second if forward else second + timedelta(seconds=1)
        ticks: Iterator[datetime] = CronSim(
            self.cron, start.astimezone(self.zone), reverse=not forward
        )
        for tick in ticks:
            value = _utc(tick)
            if (value > moment) if forward else (value <= moment):
                return value
        raise AssertionError("unreachable: cronsim iterates forever")  # pragma: no cover

    def interval_near(self, moment: datetime) -> timedelta:
        if self.every is not None:
            return self.every
        after = self.next_after(moment)
        return after - self.latest_at_or_before(after - _MS)

    def grace_at(self, moment: datetime) -> timedelta:
        if self.grace is not None:
            return self.grace
        return min(MAX_GRACE, self.interval_near(moment))

    # ------------------------------------------------------------------ jobs

    def payload(self, fire_time: datetime) -> Doc:
        kwargs = dict(self.kwargs)
        if self.takes_fire_time:
            kwargs[FIRE_TIME_PARAMETER] = fire_time
        doc = self.task.encode_call((), kwargs)
        return {**doc, "schedule": self.id, "fire_time": fire_time}


def _format_interval(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def due_tick(schedule: Schedule, last: datetime | None, now: datetime) -> datetime | None:
    """The tick to fire at server time ``now`` after ``last`` (None: none due).

    On time or late by at most ``grace``: the first tick after ``last``. Older
    ticks were missed: ``skip`` fires the first tick still within ``grace``
    (none if there is none), ``latest`` fires the most recent tick once. A
    schedule that never fired (``last`` None) fires nothing older than ``grace``.
    """
    grace = schedule.grace_at(now)
    if last is not None:
        first = schedule.next_after(last)
        if first > now:
            return None
        if first >= now - grace:
            return first
        if schedule.missed == "latest":
            return schedule.latest_at_or_before(now)
    recent = schedule.next_after(now - grace - _MS)
    return recent if recent <= now else None


# ---------------------------------------------------------------------- documents


def declare_update(schedule: Schedule, next_fire_time: datetime) -> list[Doc]:
    """Upsert pipeline of a worker declaring ``schedule``: what the code says now
    (the CLI and dashboard show it); ``last_fire_time`` is left alone."""
    return [
        {
            "$set": {
                "task": schedule.task.name,
                "queue": schedule.task.queue,
                "expression": schedule.expression,
                "timezone": schedule.timezone,
                "missed": schedule.missed,
                "next_fire_time": next_fire_time,
                "declared_at": "$$NOW",
                "last_fire_time": {"$ifNull": ["$last_fire_time", None]},
            }
        }
    ]


def advance_filter(schedule_id: str, tick: datetime) -> Doc:
    """The schedule, if its last tick is before ``tick`` and ``tick`` is due on the
    server's clock: the write that makes a tick fire at most once."""
    return {
        "_id": schedule_id,
        "$and": [
            {"$or": [{"last_fire_time": None}, {"last_fire_time": {"$lt": tick}}]},
            {"$expr": {"$lte": [tick, "$$NOW"]}},
        ],
    }


def advance_update(tick: datetime, next_fire_time: datetime) -> Doc:
    return {
        "$set": {"last_fire_time": tick, "next_fire_time": next_fire_time},
        "$currentDate": {"fired_at": True},
        "$unset": {"last_job_id": ""},
    }


def job_id_update(job_id: Any) -> Doc:
    return {"$set": {"last_job_id": job_id}}


#: Sessions of the workers' tick transactions, one document per (schedule, worker):
#: a worker killed inside its transaction leaves the schedule's document locked until
#: the server aborts it (``transactionLifetimeLimitSeconds``, 60 s); the others kill
#: its session instead when they keep conflicting for ``STALL``.
SESSIONS_COLLECTION = "mongoqueue_schedule_sessions"
STALL = timedelta(seconds=3)


def session_record(schedule_id: str, worker: str, lsid: Any) -> tuple[Doc, Doc]:
    """Filter and update recording that ``worker`` is about to fire ``schedule_id``."""
    return (
        {"_id": f"{schedule_id}/{worker}"},
        {"$set": {"schedule": schedule_id, "lsid": lsid}, "$currentDate": {"at": True}},
    )


def stale_sessions_filter(schedule_id: str, worker: str, server_now: datetime) -> Doc:
    """Sessions of other workers that have not attempted a tick for ``STALL`` (on the
    server's clock, as estimated): a live worker records its session before every
    attempt."""
    return {
        "schedule": schedule_id,
        "_id": {"$ne": f"{schedule_id}/{worker}"},
        "at": {"$lt": server_now - STALL},
    }


def job_index() -> tuple[list[tuple[str, int]], Doc]:
    """Keys and options of the queue index that keeps one job per (schedule, tick)."""
    return (
        [("payload.schedule", 1), ("payload.fire_time", 1)],
        {
            "name": "mongoqueue_schedule_tick",
            "unique": True,
            "partialFilterExpression": {"payload.schedule": {"$exists": True}},
        },
    )
