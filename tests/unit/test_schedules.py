"""Schedules without a server: next-fire computation, missed-tick policy, DST, declaration."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pymongo import MongoClient

from mongoqueue import App, InvalidArgument, InvalidArgumentType, MongoQueueError
from mongoqueue.tasks import AsyncApp
from mongoqueue.tasks.schedules import Schedule, advance_filter, due_tick

UTC = timezone.utc


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture
def app() -> App:
    # No connection is made: declaring schedules needs no server.
    client: MongoClient[dict[str, Any]] = MongoClient("mongodb://127.0.0.1:1", connect=False)
    return App(client.unit)


def schedule(app: App, **options: Any) -> Schedule:
    @app.task(name=f"t{len(app.schedules)}")
    def job(fire_time: datetime) -> None: ...

    app.periodic(**options)(job)
    return list(app.schedules.values())[-1]


def test_every_ticks_are_anchored_at_the_epoch_in_utc(app: App) -> None:
    s = schedule(app, every=timedelta(minutes=5))
    assert s.next_after(at(2026, 1, 1, 10, 3)) == at(2026, 1, 1, 10, 5)
    assert s.next_after(at(2026, 1, 1, 10, 5)) == at(2026, 1, 1, 10, 10)
    assert s.latest_at_or_before(at(2026, 1, 1, 10, 5)) == at(2026, 1, 1, 10, 5)
    assert s.latest_at_or_before(at(2026, 1, 1, 10, 9, 59)) == at(2026, 1, 1, 10, 5)
    one = schedule(app, every=1)
    moment = at(2026, 1, 1, 10, 0, 0).replace(microsecond=400000)
    assert one.next_after(moment) == at(2026, 1, 1, 10, 0, 1)
    assert one.latest_at_or_before(moment) == at(2026, 1, 1, 10, 0, 0)


def test_cron_ticks_in_a_timezone(app: App) -> None:
    s = schedule(app, cron="0 3 * * *", timezone="Europe/Paris")
    # 03:00 in Paris is 02:00 UTC in winter, 01:00 UTC in summer.
    assert s.next_after(at(2026, 1, 10, 12)) == at(2026, 1, 11, 2)
    assert s.next_after(at(2026, 7, 10, 12)) == at(2026, 7, 11, 1)
    assert s.latest_at_or_before(at(2026, 1, 11, 2)) == at(2026, 1, 11, 2)
    assert s.latest_at_or_before(at(2026, 1, 11, 1, 59, 59)) == at(2026, 1, 10, 2)
    seconds = schedule(app, cron="*/10 * * * * *")
    assert seconds.next_after(at(2026, 1, 1, 0, 0, 5)) == at(2026, 1, 1, 0, 0, 10)


def test_dst_spring_forward_europe_paris(app: App) -> None:
    # 2026-03-29: 02:00 local jumps to 03:00 (01:00 UTC). A 02:30 tick has no local
    # time that day: cronsim (Debian cron's rule) runs it once at 03:00 local.
    s = schedule(app, cron="30 2 * * *", timezone="Europe/Paris")
    ticks = [s.next_after(at(2026, 3, 28, 12))]
    for _ in range(2):
        ticks.append(s.next_after(ticks[-1]))
    assert ticks == [at(2026, 3, 29, 1, 0), at(2026, 3, 30, 0, 30), at(2026, 3, 31, 0, 30)]
    # An hourly schedule has one tick less that day, none twice.
    hourly = schedule(app, cron="0 * * * *", timezone="Europe/Paris")
    day = [hourly.next_after(at(2026, 3, 28, 23))]
    while day[-1] < at(2026, 3, 29, 22):
        day.append(hourly.next_after(day[-1]))
    assert len(day) == 23
    assert len(set(day)) == 23


def test_dst_fall_back_europe_paris(app: App) -> None:
    # 2026-10-25: 03:00 local goes back to 02:00 (01:00 UTC). A fixed 02:30 tick runs
    # once, in the first occurrence; a */30 schedule runs in both (distinct instants).
    s = schedule(app, cron="30 2 * * *", timezone="Europe/Paris")
    first = s.next_after(at(2026, 10, 24, 12))
    assert first == at(2026, 10, 25, 0, 30)
    assert s.next_after(first) == at(2026, 10, 26, 1, 30)
    half = schedule(app, cron="*/30 2 * * *", timezone="Europe/Paris")
    ticks = [half.next_after(at(2026, 10, 24, 12))]
    for _ in range(3):
        ticks.append(half.next_after(ticks[-1]))
    assert ticks == [
        at(2026, 10, 25, 0, 0),
        at(2026, 10, 25, 0, 30),
        at(2026, 10, 25, 1, 0),
        at(2026, 10, 25, 1, 30),
    ]
    assert half.latest_at_or_before(at(2026, 10, 25, 1, 10)) == at(2026, 10, 25, 1, 0)


def test_due_tick_on_time_late_and_missed(app: App) -> None:
    s = schedule(app, every=60)  # grace defaults to the interval (60 s)
    last = at(2026, 1, 1, 10, 0)
    assert due_tick(s, last, at(2026, 1, 1, 10, 0, 59)) is None
    assert due_tick(s, last, at(2026, 1, 1, 10, 1)) == at(2026, 1, 1, 10, 1)
    # Late by less than grace: the next tick in order (no tick skipped).
    assert due_tick(s, last, at(2026, 1, 1, 10, 1, 50)) == at(2026, 1, 1, 10, 1)
    # Down for an hour: skip drops the missed ticks and fires the one within grace.
    assert due_tick(s, last, at(2026, 1, 1, 11, 0, 30)) == at(2026, 1, 1, 11, 0)
    # ...and nothing when no tick is within grace.
    tight = schedule(app, every=60, grace=5)
    assert due_tick(tight, last, at(2026, 1, 1, 11, 0, 30)) is None
    assert due_tick(tight, last, at(2026, 1, 1, 11, 0, 3)) == at(2026, 1, 1, 11, 0)


def test_missed_latest_runs_the_most_recent_tick_once(app: App) -> None:
    s = schedule(app, cron="0 3 * * *", missed="latest")
    last = at(2026, 1, 1, 3)
    now = at(2026, 1, 5, 12)  # four nightly ticks missed
    tick = due_tick(s, last, now)
    assert tick == at(2026, 1, 5, 3)
    # Once fired, nothing more until the next night: never one job per missed tick.
    assert due_tick(s, tick, now) is None
    skip = schedule(app, cron="0 3 * * *")
    assert due_tick(skip, last, now) is None


def test_a_new_schedule_fires_nothing_from_before_it_existed(app: App) -> None:
    s = schedule(app, cron="0 3 * * *", missed="latest")
    assert due_tick(s, None, at(2026, 1, 5, 12)) is None
    assert due_tick(s, None, at(2026, 1, 5, 3, 0, 20)) == at(2026, 1, 5, 3)


def test_the_advance_is_conditional_on_the_server_clock_and_the_last_tick() -> None:
    tick = at(2026, 1, 1)
    doc = advance_filter("nightly", tick)
    assert doc["_id"] == "nightly"
    assert {"$expr": {"$lte": [tick, "$$NOW"]}} in doc["$and"]
    assert {"$or": [{"last_fire_time": None}, {"last_fire_time": {"$lt": tick}}]} in doc["$and"]


def test_payload_carries_schedule_tick_kwargs_and_fire_time(app: App) -> None:
    @app.periodic(every=timedelta(minutes=5), id="refresh-eu", kwargs={"region": "eu"})
    @app.task
    def refresh(region: str, fire_time: datetime | None = None) -> None: ...

    s = app.schedules["refresh-eu"]
    tick = at(2026, 1, 1, 0, 5)
    assert s.payload(tick) == {
        "task": "refresh",
        "args": [],
        "kwargs": {"region": "eu", "fire_time": tick},
        "schedule": "refresh-eu",
        "fire_time": tick,
    }

    @app.periodic(cron="0 3 * * *")
    @app.task
    def plain() -> None: ...

    assert app.schedules["plain"].payload(tick)["kwargs"] == {}
    assert refresh.name == "refresh"
    assert callable(refresh)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *'"),
        ({"cron": "0 3 * *"}, "has 4 fields"),
        ({"cron": "0 3 * * *", "timezone": "Europe/Pariss"}, "unknown timezone 'Europe/Pariss'"),
        ({}, "exactly one of cron="),
        ({"cron": "* * * * *", "every": 60}, "exactly one of cron="),
        ({"every": timedelta(milliseconds=500)}, "one second or more"),
        ({"every": 60, "missed": "all"}, "missed must be one of 'skip', 'latest'"),
        ({"every": 60, "kwargs": {"nope": 1}}, "unexpected keyword argument 'nope'"),
        ({"every": 60, "kwargs": {"fire_time": 1}}, "must not set 'fire_time'"),
    ],
)
def test_bad_declarations_fail_at_once(app: App, options: dict[str, Any], message: str) -> None:
    @app.task
    def job(fire_time: datetime) -> None: ...

    with pytest.raises(MongoQueueError) as info:
        app.periodic(**options)(job)
    assert isinstance(info.value, (InvalidArgument, InvalidArgumentType))
    assert message in str(info.value)
    assert app.schedules == {}


def test_periodic_goes_above_task_and_ids_are_unique(app: App) -> None:
    def bare() -> None: ...

    with pytest.raises(InvalidArgumentType, match=r"goes above @app\.task"):
        app.periodic(every=60)(bare)

    @app.periodic(every=60)
    @app.task
    def one() -> None: ...

    @app.task
    def two() -> None: ...

    with pytest.raises(InvalidArgument, match="schedule id 'one' is already used"):
        app.periodic(every=60, id="one")(two)
    app.periodic(every=60, id="two-fast")(two)
    assert sorted(app.schedules) == ["one", "two-fast"]


def test_async_app_declares_schedules_too() -> None:
    from pymongo import AsyncMongoClient

    app = AsyncApp(AsyncMongoClient("mongodb://127.0.0.1:1", connect=False).unit)

    @app.periodic(cron="*/5 * * * *", timezone="America/New_York")
    @app.task
    async def ping(fire_time: datetime) -> None: ...

    assert app.schedules["ping"].task.name == "ping"
