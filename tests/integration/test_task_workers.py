"""Task workers: several queues in order, wake-up on any queue, unknown tasks, async twin."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.database import Database

from mongoqueue import NO_BACKOFF, App, AsyncApp
from mongoqueue.tasks import TaskFailed


@pytest.fixture
def db(client: MongoClient[dict[str, Any]]) -> Iterator[Database[dict[str, Any]]]:
    name = f"taskw_{uuid.uuid4().hex[:12]}"
    yield client[name]
    client.drop_database(name)


def wait_until(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_higher_queue_is_always_drained_first(db: Database[dict[str, Any]]) -> None:
    app = App(db, retry=NO_BACKOFF)
    ran: list[str] = []

    @app.task(queue="low")
    def low(n: int) -> None:
        ran.append(f"low{n}")

    @app.task(queue="high")
    def high(n: int) -> None:
        ran.append(f"high{n}")
        if n == 0:
            high.enqueue(9)  # put while low jobs wait: still runs before them

    for n in range(2):
        low.enqueue(n)
    high.enqueue(0)
    assert app.run_until_empty(["high", "low"]) == 4
    assert ran == ["high0", "high9", "low0", "low1"]


def test_worker_on_two_queues_is_woken_by_a_put_to_either(db: Database[dict[str, Any]]) -> None:
    app = App(db, retry=NO_BACKOFF)

    @app.task(queue="a")
    def on_a() -> str:
        return "a"

    @app.task(queue="b")
    def on_b() -> str:
        return "b"

    worker = app.worker(["a", "b"], idle_wait=5, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert on_b.enqueue().result(timeout=20) == "b"
        assert on_a.enqueue().result(timeout=20) == "a"
    finally:
        worker.stop()
        thread.join(30)
    assert worker.counts["completed"] == 2


def test_unknown_task_is_handed_back_then_fails_naming_tasks(
    db: Database[dict[str, Any]],
) -> None:
    producer = App(db, retry=NO_BACKOFF)

    @producer.task
    def resize(image: str) -> str:
        return f"resized {image}"

    other = App(db, retry=NO_BACKOFF, max_passes=2)

    @other.task
    def unrelated() -> None:
        return None

    handle = resize.enqueue("cat.png")
    # A worker without the task hands it back: not lost, not an attempt.
    assert other.run_until_empty() == 1
    status = handle.status()
    assert status == "delayed"
    assert status.attempts == 0
    # A worker that has it runs it.
    db["default"].update_one({"_id": handle.id}, {"$currentDate": {"visible_at": True}})
    assert producer.run_until_empty() == 1
    assert handle.result(timeout=5) == "resized cat.png"

    stuck = resize.enqueue("dog.png")
    strict = App(db, retry=NO_BACKOFF, max_passes=1)

    @strict.task
    def only_this() -> None:
        return None

    assert strict.run_until_empty() == 1
    with pytest.raises(TaskFailed) as info:
        stuck.result(timeout=5)
    assert "'resize'" in str(info.value)
    assert "only_this" in str(info.value)


def test_async_app_enqueue_run_result_and_cancel(mongodb_uri: str) -> None:
    async def scenario() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        name = f"taska_{uuid.uuid4().hex[:12]}"
        try:
            app = AsyncApp(client[name], retry=NO_BACKOFF)
            started = asyncio.Event()

            @app.task
            async def add(a: int, b: int) -> int:
                return a + b

            @app.task(queue="slow")
            async def sleepy() -> None:
                started.set()
                await asyncio.sleep(60)

            @app.task
            def plain(x: str) -> str:
                return x.upper()

            h1 = await add.enqueue(1, b=2)
            h2 = await plain.configure(priority=5).enqueue("abc")
            assert await h1.status() == "waiting"
            assert await app.run_until_empty(["default"]) == 2
            assert await h1.result(timeout=5) == 3
            assert await h2.result(timeout=5) == "ABC"

            # A running coroutine task is cancelled at the heartbeat that brings the request.
            worker = await app.worker(["slow"], heartbeat=0.2, handle_signals=False)
            slow = await sleepy.enqueue()
            run = asyncio.create_task(worker.run())
            await asyncio.wait_for(started.wait(), 20)
            assert await slow.cancel() == "requested"
            from mongoqueue.tasks import TaskCancelled

            with pytest.raises(TaskCancelled):
                await slow.result(timeout=20)
            assert await slow.status() == "cancelled"
            worker.stop()
            assert await asyncio.wait_for(run, 30) == 0
        finally:
            await client.drop_database(name)
            await client.close()

    asyncio.run(scenario())


def test_sync_task_sees_cancel_request_at_heartbeat_and_ends_cancelled(
    db: Database[dict[str, Any]],
) -> None:
    from mongoqueue.tasks import TaskCancelled, cancel_requested

    app = App(db, retry=NO_BACKOFF, timeout=5)
    started = threading.Event()
    stopped_by_flag: list[bool] = []

    @app.task
    def crunch() -> str:
        started.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if cancel_requested():
                stopped_by_flag.append(True)
                return "partial"
            time.sleep(0.02)
        return "finished"

    handle = crunch.enqueue()
    worker = app.worker(heartbeat=0.2, idle_wait=0.5, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert started.wait(20)
        assert handle.status() == "running"
        assert handle.cancel() == "requested"
        with pytest.raises(TaskCancelled):
            handle.result(timeout=20)
    finally:
        worker.stop()
        thread.join(30)
    assert stopped_by_flag == [True]
    status = handle.status()
    assert status == "cancelled"
    assert status.attempts == 0  # never retried
    assert app.run_until_empty() == 0


def test_async_transactional_task_commits_with_its_completion(mongodb_uri: str) -> None:
    async def scenario() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        name = f"taskat_{uuid.uuid4().hex[:12]}"
        db = client[name]
        try:
            app = AsyncApp(db, retry=NO_BACKOFF, timeout=30)
            await db.create_collection("accounts")

            @app.task(transactional=True, max_attempts=1)
            async def credit(amount: int, *, session: Any) -> int:
                await db.accounts.update_one(
                    {"_id": "a"}, {"$inc": {"n": amount}}, upsert=True, session=session
                )
                if amount < 0:
                    raise ValueError("no debits")
                return amount

            good = await credit.enqueue(5)
            bad = await credit.enqueue(-1)
            assert await app.run_until_empty() == 2
            assert await good.result(timeout=5) == 5
            with pytest.raises(TaskFailed, match="no debits"):
                await bad.result(timeout=5)
            assert await db.accounts.find_one({"_id": "a"}) == {"_id": "a", "n": 5}
        finally:
            await client.drop_database(name)
            await client.close()

    asyncio.run(scenario())


def test_cancel_requested_before_a_dead_holder_lease_ends_is_honoured_by_the_next(
    db: Database[dict[str, Any]],
) -> None:
    from mongoqueue.tasks import TaskCancelled

    app = App(db, retry=NO_BACKOFF, timeout=1)
    ran: list[int] = []

    @app.task
    def work() -> None:
        ran.append(1)

    handle = work.enqueue()
    crashed = app.queue().next()  # a worker claims it, then dies without a word
    assert crashed is not None
    assert handle.cancel() == "requested"
    deadline = time.monotonic() + 20
    while app.run_until_empty() == 0:  # the lease expires, the next worker claims it
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with pytest.raises(TaskCancelled):
        handle.result(timeout=5)
    assert ran == []


def test_coroutine_task_on_a_sync_app_is_cancelled_at_once(
    db: Database[dict[str, Any]],
) -> None:
    from mongoqueue.tasks import TaskCancelled

    app = App(db, retry=NO_BACKOFF, timeout=5)
    started = threading.Event()
    finished: list[bool] = []

    @app.task
    async def wait_forever() -> None:
        started.set()
        await asyncio.sleep(60)
        finished.append(True)

    handle = wait_forever.enqueue()
    worker = app.worker(heartbeat=0.2, idle_wait=0.5, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert started.wait(20)
        assert handle.cancel() == "requested"
        with pytest.raises(TaskCancelled):
            handle.result(timeout=20)
    finally:
        worker.stop()
        thread.join(30)
    assert finished == []
    assert handle.status() == "cancelled"
