"""MongoLock and lock (and their asyncio twins) on a real server.

The original's own lock tests, rewritten: the context manager, a lease that
expires and is taken over, a release by the old handle that leaves the new
owner alone. Then what 0.7 got wrong: ``wait`` in seconds that really waits,
``renew()``, leases on the server's clock (checked from processes whose wall
clocks are ten minutes off), and the asyncio twin.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.collection import Collection

from mongoqueue import (
    AsyncMongoLock,
    InvalidArgument,
    InvalidArgumentType,
    LockNotAcquired,
    MongoLock,
    MongoQueueError,
    async_lock,
    lock,
)
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_context_manager_holds_then_deletes_the_lock(collection) -> None:
    with lock(collection, "test1") as handle:
        assert handle.locked
        doc = collection.find_one({"_id": "test1"})
        assert doc["client_id"] == handle.client_id
    assert not handle.locked
    assert collection.count_documents({}) == 0


def test_expired_lease_is_taken_over_and_the_old_release_leaves_it_alone(collection) -> None:
    first = MongoLock(collection, "test2", lease=0.5)
    assert first.acquire()
    assert first.locked
    wait_for(lambda: not first.locked, timeout=5)  # the local bound ran out
    second = MongoLock(collection, "test2")
    assert wait_for(second.acquire, timeout=5)  # takes over the expired lease

    assert first.release()  # True, as in 0.7: the handle had the lock
    records = list(collection.find())
    assert [r["client_id"] for r in records] == [second.client_id]
    assert not first.acquire(wait=False)
    assert not first.renew()

    assert second.release()
    assert not second.release()  # nothing left to release
    assert list(collection.find()) == []


def test_a_held_lock_is_refused_until_released(collection) -> None:
    holder = MongoLock(collection, "job", lease=30)
    other = MongoLock(collection, "job", lease=30)
    assert holder.acquire()
    assert not other.acquire()
    assert not other.acquire(wait=False)
    assert not other.locked
    assert other.remaining == 0.0
    assert holder.acquire()  # the holder acquiring again renews its lease
    holder.release()
    assert other.acquire()
    other.release()


def test_wait_is_seconds_and_really_waits(collection) -> None:
    holder = MongoLock(collection, "w", lease=30)
    assert holder.acquire()
    waiter = MongoLock(collection, "w")
    started = time.monotonic()
    assert not waiter.acquire(wait=0.6, poll_period=0.05)
    assert time.monotonic() - started >= 0.6  # it waited the whole deadline

    # Released during the wait: the waiter gets it before its deadline.
    releaser = threading.Timer(0.3, holder.release)
    releaser.start()
    started = time.monotonic()
    try:
        assert waiter.acquire(wait=timedelta(seconds=20), poll_period=0.05)
    finally:
        releaser.join()
    assert time.monotonic() - started < 20
    waiter.release()


def test_lock_that_cannot_be_acquired_yields_an_unlocked_handle_or_raises(collection) -> None:
    holder = MongoLock(collection, "busy", lease=30)
    assert holder.acquire()
    ran = []
    with lock(collection, "busy", wait=0.2, poll_period=0.05) as handle:
        ran.append(handle.locked)  # as in 0.7, the block runs: the handle says so
    assert ran == [False]
    assert collection.find_one({"_id": "busy"})["client_id"] == holder.client_id

    with (
        pytest.raises(LockNotAcquired, match="could not acquire the lock 'busy'"),
        lock(collection, "busy", wait=0.2, poll_period=0.05, required=True),
    ):
        pytest.fail("the block must not run")
    assert issubclass(LockNotAcquired, MongoQueueError)
    assert collection.find_one({"_id": "busy"})["client_id"] == holder.client_id


def test_renew_extends_the_lease(collection) -> None:
    holder = MongoLock(collection, "r", lease=0.8)
    other = MongoLock(collection, "r")
    assert holder.acquire()
    deadline = time.monotonic() + 2.0  # more than twice the lease
    while time.monotonic() < deadline:
        assert holder.renew()
        assert holder.locked
        assert not other.acquire()
        time.sleep(0.1)
    assert wait_for(lambda: not holder.locked, timeout=5)
    assert wait_for(other.acquire, timeout=5)
    assert not holder.renew()  # taken over: renew says so and the handle lets go
    assert not holder.locked
    assert holder.release() is False
    assert collection.find_one({"_id": "r"})["client_id"] == other.client_id


def test_the_lease_is_stored_on_the_servers_clock(client, collection) -> None:
    handle = MongoLock(collection, "clock", lease=42)
    before = client.admin.command("hello")["localTime"]
    assert handle.acquire()
    after = client.admin.command("hello")["localTime"]
    doc = collection.find_one({"_id": "clock"})
    slack = timedelta(milliseconds=1)
    assert before - slack <= doc["acquired_at"] <= after + slack
    assert doc["ttl"] - doc["acquired_at"] == timedelta(seconds=42)
    handle.release()


def _try_from_process(uri: str, collection: Collection[Any], skew: float) -> dict[str, Any]:
    db, coll = collection.database.name, collection.name
    out = subprocess.run(
        [sys.executable, "-m", "tests.integration.lockers", "try", uri, db, coll, "p", "30"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MONGOQUEUE_TEST_SKEW": str(skew)},
        check=True,
    )
    record: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return record


@pytest.mark.parametrize("skew", [600.0, -600.0])
def test_wall_clocks_ten_minutes_off_change_nothing(mongodb_uri, client, collection, skew) -> None:
    """A process whose clock is 10 min ahead must not see a fresh lease as expired,
    and one 10 min behind must not write a lease that lasts 10 min too long."""
    holder = MongoLock(collection, "skew", lease=30)
    assert holder.acquire()
    assert _try_from_process(mongodb_uri, collection, skew)["acquired"] is False
    holder.release()

    server_before = client.admin.command("hello")["localTime"].replace(tzinfo=timezone.utc)
    record = _try_from_process(mongodb_uri, collection, skew)
    assert record["acquired"] is True
    ttl = datetime.fromisoformat(record["ttl"]).replace(tzinfo=timezone.utc)
    assert server_before < ttl <= server_before + timedelta(seconds=30 + 20)


def test_bad_arguments_are_clear_errors(collection) -> None:
    with pytest.raises(InvalidArgumentType, match="lock_name must be a str"):
        MongoLock(collection, {"$ne": None})
    with pytest.raises(InvalidArgument, match="lease must be > 0"):
        MongoLock(collection, "x", lease=0)
    handle = MongoLock(collection, "x")
    with pytest.raises(InvalidArgument, match="wait must be >= 0"):
        handle.acquire(wait=-1)
    with pytest.raises(InvalidArgument, match="poll_period must be > 0"):
        handle.acquire(wait=1, poll_period=0)
    with pytest.raises(InvalidArgumentType, match="pass a Collection to MongoLock instead"):
        AsyncMongoLock(collection, "x")
    assert collection.count_documents({}) == 0


# ------------------------------------------------------------------ asyncio twin


def _run_async(uri: str, collection: Collection[Any], body: Any) -> Any:
    async def main() -> Any:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        try:
            return await body(client[collection.database.name][collection.name])
        finally:
            await client.close()

    return asyncio.run(main())


def test_async_twin_acquires_renews_waits_and_releases(mongodb_uri, collection) -> None:
    async def body(locks: Any) -> None:
        async with async_lock(locks, "a") as handle:
            assert handle.locked
            assert (await locks.find_one({"_id": "a"}))["client_id"] == handle.client_id
            other = AsyncMongoLock(locks, "a", lease=0.5)
            assert not await other.acquire(wait=0.2, poll_period=0.05)
            with pytest.raises(LockNotAcquired):
                async with async_lock(locks, "a", wait=0.1, poll_period=0.05, required=True):
                    pytest.fail("the block must not run")
        assert await locks.count_documents({}) == 0

        first = AsyncMongoLock(locks, "b", lease=0.5)
        assert await first.acquire()
        assert await first.renew()
        second = AsyncMongoLock(locks, "b")
        assert await second.acquire(wait=5, poll_period=0.05)  # after first's lease ran out
        assert not first.locked
        assert await first.release()  # True, and second's lock stays
        assert (await locks.find_one({"_id": "b"}))["client_id"] == second.client_id
        assert await second.release()
        assert await locks.count_documents({}) == 0

    _run_async(mongodb_uri, collection, body)


def test_sync_and_async_handles_exclude_each_other(mongodb_uri, collection) -> None:
    holder = MongoLock(collection, "mixed", lease=30)
    assert holder.acquire()

    async def body(locks: Any) -> bool:
        return await AsyncMongoLock(locks, "mixed").acquire(wait=0.2, poll_period=0.05)

    assert _run_async(mongodb_uri, collection, body) is False
    holder.release()
    assert _run_async(mongodb_uri, collection, body) is True


def test_async_tasks_racing_for_one_lock_take_turns(mongodb_uri, collection) -> None:
    async def body(locks: Any) -> list[tuple[float, float]]:
        windows: list[tuple[float, float]] = []

        async def worker() -> None:
            handle = AsyncMongoLock(locks, "turns", lease=30)
            for _ in range(4):
                assert await handle.acquire(wait=30, poll_period=0.01)
                start = time.monotonic()
                await asyncio.sleep(0.005)
                windows.append((start, time.monotonic()))
                assert await handle.release()

        await asyncio.gather(*(worker() for _ in range(4)))
        return windows

    windows = sorted(_run_async(mongodb_uri, collection, body))
    assert len(windows) == 16
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert start >= end  # one holder at a time
