"""Several workers in one process: one signal stops them all (``mongoqueue._signals``).

The signals are real (``os.kill`` of this process, from a helper thread); a
sentinel handler installed around each test catches any the workers would leave
unhandled, and must be back in place when the last worker has ended.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from mongoqueue import AsyncMongoQueue, AsyncWorker, MongoQueue, Worker
from mongoqueue._signals import registry
from mongoqueue.worker import EXIT_OK
from tests.helpers import wait_for


@pytest.fixture
def sentinel() -> Iterator[list[int]]:
    """A SIGTERM handler of the test's own, restored afterwards; records stray signals."""
    stray: list[int] = []

    def record(signum: int, frame: object) -> None:
        stray.append(signum)

    previous = signal.signal(signal.SIGTERM, record)
    try:
        yield stray
    finally:
        registry.restore_if_idle()
        signal.signal(signal.SIGTERM, previous)


def _signal_when(ready: Callable[[], bool]) -> threading.Thread:
    def send() -> None:
        wait_for(ready, timeout=20)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_one_signal_stops_two_async_workers_under_one_gather(
    mongodb_uri, collection, sentinel
) -> None:
    async def main() -> list[int]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        try:
            db = client[collection.database.name]
            workers = [
                AsyncWorker(
                    AsyncMongoQueue(db[f"{collection.name}_{n}"], f"w{n}"),
                    _noop,
                    idle_wait=0.2,
                )
                for n in range(2)
            ]
            sender = _signal_when(lambda: len(registry._workers) == 2)
            codes = await asyncio.wait_for(asyncio.gather(*(w.run() for w in workers)), 30)
            sender.join(5)
            return list(codes)
        finally:
            await client.close()

    assert asyncio.run(main()) == [EXIT_OK, EXIT_OK]
    assert sentinel == []
    assert not registry.installed
    assert signal.getsignal(signal.SIGTERM).__qualname__ == "sentinel.<locals>.record"


def test_one_signal_stops_a_worker_in_the_main_thread_and_one_in_another(
    collection, sentinel
) -> None:
    main_worker = Worker(MongoQueue(collection, "main"), _sync_noop, idle_wait=0.2)
    other = Worker(
        MongoQueue(collection.database[f"{collection.name}_2"], "other"),
        _sync_noop,
        idle_wait=0.2,
    )
    codes: list[int] = []

    def start_other() -> None:
        wait_for(lambda: registry.installed)
        codes.append(other.run())

    thread = threading.Thread(target=start_other, daemon=True)
    thread.start()
    sender = _signal_when(lambda: len(registry._workers) == 2)
    assert main_worker.run() == EXIT_OK
    thread.join(20)
    sender.join(5)
    assert codes == [EXIT_OK]
    assert sentinel == []
    # Whichever worker ended last (restored in the main thread, or passed on from the
    # handler left installed by a worker ending in its thread), signals reach the old one.
    os.kill(os.getpid(), signal.SIGTERM)
    wait_for(lambda: sentinel == [signal.SIGTERM])


def test_a_worker_in_a_thread_says_it_cannot_handle_signals(collection, caplog) -> None:
    worker = Worker(MongoQueue(collection, "threaded"), _sync_noop, idle_wait=0.2)
    codes: list[int] = []
    with caplog.at_level(logging.WARNING, logger="mongoqueue.worker"):
        thread = threading.Thread(target=lambda: codes.append(worker.run()), name="jobs")
        thread.start()
        wait_for(lambda: "cannot install signal handlers" in caplog.text)
        worker.stop()
        thread.join(20)
    assert codes == [EXIT_OK]
    assert "runs in thread 'jobs'" in caplog.text
    assert "stop it with its stop() method" in caplog.text


async def _noop(job: Any) -> None:
    return None


def _sync_noop(job: Any) -> None:
    return None
