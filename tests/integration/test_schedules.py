"""Schedules on a real server: one job per tick whatever the number of workers."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.database import Database

from mongoqueue import NO_BACKOFF, App
from mongoqueue.tasks import AsyncApp
from mongoqueue.tasks.schedules import SCHEDULES_COLLECTION


@pytest.fixture
def db(client: MongoClient[dict[str, Any]]) -> Iterator[Database[dict[str, Any]]]:
    name = f"sched_{uuid.uuid4().hex[:12]}"
    yield client[name]
    client.drop_database(name)


def make_app(db: Database[dict[str, Any]], every: Any = 1, **options: Any) -> App:
    app = App(db, retry=NO_BACKOFF, keep_result=options.pop("keep_result", 3600))

    @app.periodic(every=every, **options)
    @app.task
    def beat(fire_time: datetime) -> str:
        return fire_time.isoformat()

    return app


def fire_times(db: Database[dict[str, Any]], queue: str = "default") -> list[datetime]:
    return [j["payload"]["fire_time"] for j in db[queue].find({}, {"payload.fire_time": 1})]


def fire_times_of_state(app: App) -> list[datetime]:
    """The last tick recorded in the schedule's document (aware, as the app reads it)."""
    state = app.scheduler().collection.find_one({"_id": "beat"})
    return [state["last_fire_time"]]


def aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc)


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("transactions", [True, False], ids=["transaction", "standalone-path"])
def test_racing_schedulers_enqueue_each_tick_once(
    db: Database[dict[str, Any]], transactions: bool
) -> None:
    apps = [make_app(db) for _ in range(6)]
    schedulers = [a.scheduler() for a in apps]
    for scheduler in schedulers:
        scheduler.prepare()
        scheduler._transactions = transactions  # without: two writes, at most once
    stop = time.monotonic() + 3.5
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            while time.monotonic() < stop:
                schedulers[index].tick()
                time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(apps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    times = sorted(fire_times(db))
    assert len(times) >= 3
    assert [t for t, n in Counter(times).items() if n > 1] == []
    # Consecutive seconds: none missed while the schedulers ran.
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))
    assert sum(s.fired for s in schedulers) == len(times)
    state = db[SCHEDULES_COLLECTION].find_one({"_id": "beat"})
    assert state is not None
    assert state["last_fire_time"] == times[-1].replace(tzinfo=None)


def test_a_tick_stays_fired_after_its_job_is_deleted(db: Database[dict[str, Any]]) -> None:
    app = make_app(db, keep_result=0)
    scheduler = app.scheduler()
    wait_for(lambda: bool(scheduler.tick()))
    assert app.run_until_empty() == 1
    assert db.default.count_documents({}) == 0  # completed and deleted
    (tick,) = fire_times_of_state(app)
    # A slow worker that still thinks the tick is due cannot enqueue it again.
    stale = make_app(db, keep_result=0).scheduler()
    stale.prepare()
    assert stale._fire(stale.schedules[0], tick) is None
    stale._transactions = False  # the standalone path too
    assert stale._fire(stale.schedules[0], tick) is None
    assert db.default.count_documents({}) == 0


def test_the_server_decides_when_a_tick_is_due(db: Database[dict[str, Any]]) -> None:
    # A worker whose estimate runs ahead (or a bug) cannot fire a tick early: the
    # advance checks the tick against $$NOW.
    app = make_app(db, every=60)
    scheduler = app.scheduler()
    scheduler.prepare()
    future = scheduler.schedules[0].next_after(app.queue().server_time() + timedelta(minutes=5))
    assert scheduler._fire(scheduler.schedules[0], future) is None
    assert db.default.count_documents({}) == 0


def test_two_deployments_disagreeing_never_double_a_tick(db: Database[dict[str, Any]]) -> None:
    # A rolling restart: the old code says every second, the new one every 2 s
    # (same schedule id). Ticks they share are enqueued once; last_fire_time only
    # moves forward, so neither re-fires what the other did.
    old, new = make_app(db, every=1), make_app(db, every=2)
    a, b = old.scheduler(), new.scheduler()
    stop = time.monotonic() + 4.2
    while time.monotonic() < stop:
        b.tick()  # the new code first: on even seconds both see a tick due
        a.tick()
        time.sleep(0.02)
    times = sorted(fire_times(db))
    assert len(times) >= 3
    assert len(times) == len(set(times))
    assert a.fired >= 1
    assert b.fired >= 1


def test_missed_latest_after_downtime_runs_once(db: Database[dict[str, Any]]) -> None:
    app = make_app(db, every=60, missed="latest")
    scheduler = app.scheduler()
    scheduler.prepare()
    now = app.queue().server_time()
    db[SCHEDULES_COLLECTION].update_one(
        {"_id": "beat"}, {"$set": {"last_fire_time": now - timedelta(hours=3)}}
    )
    fired = scheduler.tick() + scheduler.tick()
    assert len(fired) == 1
    (tick,) = fire_times(db)
    assert tick.replace(tzinfo=None) == scheduler.schedules[0].latest_at_or_before(
        app.queue().server_time()
    ).replace(tzinfo=None)


def test_missed_skip_after_downtime_runs_nothing_old(db: Database[dict[str, Any]]) -> None:
    app = make_app(db, every=3600, grace=1)
    scheduler = app.scheduler()
    scheduler.prepare()
    now = app.queue().server_time()
    db[SCHEDULES_COLLECTION].update_one(
        {"_id": "beat"}, {"$set": {"last_fire_time": now - timedelta(hours=5)}}
    )
    latest = scheduler.schedules[0].latest_at_or_before(now)
    fired = scheduler.tick()
    if now - latest > timedelta(seconds=1):
        assert fired == []
        assert db.default.count_documents({}) == 0


def test_app_worker_runs_its_schedules(db: Database[dict[str, Any]]) -> None:
    app = make_app(db)
    worker = app.worker(handle_signals=False, idle_wait=0.1)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: db.default.count_documents({"state": "completed"}) >= 2)
    finally:
        worker.stop()
        thread.join(10)
    done = db.default.find_one({"state": "completed"})
    assert done is not None
    assert done["result"] == aware(done["payload"]["fire_time"]).isoformat()
    assert done["payload"]["kwargs"]["fire_time"] == done["payload"]["fire_time"]


def test_a_worker_of_other_queues_does_not_fire(db: Database[dict[str, Any]]) -> None:
    app = make_app(db)
    assert app.worker(queues=["other"], handle_signals=False).scheduler is None
    assert app.worker(handle_signals=False).scheduler is not None


def test_async_app_worker_runs_its_schedules(
    mongodb_uri: str, db: Database[dict[str, Any]]
) -> None:
    async def main() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        app = AsyncApp(client[db.name], retry=NO_BACKOFF)

        @app.periodic(every=timedelta(seconds=1), kwargs={"label": "x"})
        @app.task
        async def beat(label: str, fire_time: datetime) -> str:
            return f"{label}{fire_time.isoformat()}"

        worker = await app.worker(handle_signals=False, idle_wait=0.1)
        running = asyncio.ensure_future(worker.run())
        deadline = time.monotonic() + 15
        while await client[db.name].default.count_documents({"state": "completed"}) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        worker.stop()
        await running
        await client.close()

    asyncio.run(main())
    times = fire_times(db)
    assert len(times) == len(set(times)) >= 2
    done = db.default.find_one({"state": "completed"})
    assert done is not None
    assert done["result"].startswith("x")


def test_cli_and_dashboard_list_schedules(mongodb_uri: str, db: Database[dict[str, Any]]) -> None:
    import json

    from click.testing import CliRunner
    from starlette.testclient import TestClient

    from mongoqueue.cli import cli
    from mongoqueue.dashboard import create_app

    app = make_app(db)

    @app.periodic(cron="0 3 * * *", timezone="Europe/Paris", id="nightly")
    @app.task
    def report() -> None: ...

    scheduler = app.scheduler()
    wait_for(lambda: bool(scheduler.tick()))
    app.run_until_empty()
    result = CliRunner().invoke(
        cli, ["--uri", mongodb_uri, "--db", db.name, "schedules", "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.output)}
    assert rows["beat"]["expression"] == "every 1s"
    assert rows["beat"]["last_job_state"] == "completed"
    assert rows["nightly"]["expression"] == "0 3 * * *"
    assert rows["nightly"]["timezone"] == "Europe/Paris"
    assert rows["nightly"]["last_job_id"] is None
    assert rows["nightly"]["next_fire_time"].endswith(("01:00:00+00:00", "02:00:00+00:00"))
    table = CliRunner(env={"COLUMNS": "250"}).invoke(
        cli, ["--uri", mongodb_uri, "--db", db.name, "schedules"]
    )
    assert table.exit_code == 0
    assert "nightly" in table.output
    assert "completed" in table.output
    page = TestClient(create_app(db, sample_interval=60)).get("/schedules")
    assert page.status_code == 200
    assert 'data-schedule="nightly"' in page.text
    assert "Europe/Paris" in page.text
    assert 'data-state="completed"' in page.text


def test_a_worker_killed_inside_its_tick_transaction_does_not_stall_the_schedule(
    mongodb_uri: str, db: Database[dict[str, Any]]
) -> None:
    # The dead worker: its transaction wrote the schedule's document and never ended
    # (a SIGKILL); the server would hold that write for transactionLifetimeLimitSeconds.
    from mongoqueue.tasks.schedules import SESSIONS_COLLECTION

    app = make_app(db)
    live = app.scheduler()
    live.prepare()
    dead_client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri)
    session = dead_client.start_session()
    try:
        dead_client[db.name][SESSIONS_COLLECTION].update_one(
            {"_id": "beat/dead-worker"},
            {
                "$set": {
                    "schedule": "beat",
                    "lsid": session.session_id,
                    "at": datetime.now(timezone.utc) - timedelta(minutes=1),
                }
            },
            upsert=True,
        )
        session.start_transaction()
        dead_client[db.name][SCHEDULES_COLLECTION].update_one(
            {"_id": "beat"}, {"$set": {"held": True}}, session=session
        )
        started = time.monotonic()
        wait_for(lambda: bool(live.tick()), timeout=20)
        # Freed by killSessions after STALL (3 s), not by the server's 60 s limit.
        assert time.monotonic() - started < 15
        assert db[SESSIONS_COLLECTION].count_documents({"_id": "beat/dead-worker"}) == 0
    finally:
        dead_client.close()
