"""What only the async queue has: ``async with``, cancellation, sharing one event loop.

Each test runs its own event loop with ``asyncio.run`` and its own
``AsyncMongoClient``. The behaviour both twins share is tested once for both in
``test_semantics.py`` and ``test_original_api.py``.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection

from mongoqueue import NO_BACKOFF, AsyncJob, AsyncMongoQueue, LeaseLost

T = TypeVar("T")


def run(
    uri: str,
    collection: Collection[Any],
    body: Callable[[AsyncCollection[Any]], Awaitable[T]],
) -> T:
    """Run ``body`` on a fresh event loop with an async handle of ``collection``."""

    async def main() -> T:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        try:
            return await body(client[collection.database.name][collection.name])
        finally:
            await client.close()

    return asyncio.run(main())


def test_async_with_completes_records_errors_and_releases_on_cancel(
    mongodb_uri, collection
) -> None:
    async def body(jobs: AsyncCollection[Any]) -> None:
        queue = AsyncMongoQueue(jobs, "c1", timeout=30, retry=NO_BACKOFF)
        await queue.put({"n": 1})
        job = await queue.next()
        assert isinstance(job, AsyncJob)
        async with job as data:
            assert data["payload"] == {"n": 1}
        assert await queue.size() == 0

        failing_id = await queue.put({"n": 2})
        job = await queue.next()
        with pytest.raises(ZeroDivisionError):
            async with job:
                1 / 0  # noqa: B018
        failed = await queue.get(failing_id)
        assert failed.attempts == 1
        assert "ZeroDivisionError" in failed.last_error

        held = asyncio.Event()

        async def consume() -> None:
            job = await queue.next()
            async with job:
                held.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(consume())
        await held.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        released = await queue.get(failing_id)
        assert released.state == "waiting"  # back in the queue at once
        assert released.attempts == 1  # a cancellation is not the job's failure
        again = await queue.next()
        assert again.id == failing_id
        await again.complete()

    run(mongodb_uri, collection, body)


def test_stale_async_handle_raises_lease_lost(mongodb_uri, collection) -> None:
    async def body(jobs: AsyncCollection[Any]) -> None:
        queue = AsyncMongoQueue(jobs, "c1", timeout=30, retry=NO_BACKOFF)
        await queue.put({"n": 1})
        job = await queue.next()
        await job.complete()
        with pytest.raises(LeaseLost, match="already"):
            await job.release()
        assert not job.held

    run(mongodb_uri, collection, body)


@pytest.mark.parametrize("change_streams", [True, False], ids=["change-stream", "polling"])
def test_waiting_consumer_leaves_the_loop_free(mongodb_uri, collection, change_streams) -> None:
    """A producer on the same event loop runs while a consumer waits, and wakes it."""

    async def body(jobs: AsyncCollection[Any]) -> None:
        consumer = AsyncMongoQueue(jobs, "consumer", timeout=30)
        consumer._change_streams = change_streams
        producer = AsyncMongoQueue(jobs, "producer")
        await producer.ensure_indexes()
        waiting = asyncio.create_task(consumer.next(wait=20))

        await asyncio.sleep(0.3)  # the waiting consumer must let this run
        assert not waiting.done()
        await producer.put({"late": True})
        job = await asyncio.wait_for(waiting, timeout=20)
        assert job is not None
        assert job.payload == {"late": True}
        await job.complete()

    run(mongodb_uri, collection, body)


def test_many_coroutines_complete_each_job_exactly_once(mongodb_uri, collection) -> None:
    """20 coroutines on 4 queue objects race over 60 jobs; a third fail once first.

    Checks: every job is completed exactly once, no job is ever held by two
    coroutines at a time, and every failed first attempt was delivered again.
    """
    n_jobs, n_coroutines, n_queues = 60, 20, 4

    async def body(jobs: AsyncCollection[Any]) -> None:
        producer = AsyncMongoQueue(jobs, "producer", retry=NO_BACKOFF)
        await producer.put_many([{"i": i, "fail_first": i % 3 == 0} for i in range(n_jobs)])
        queues = [
            AsyncMongoQueue(jobs, f"consumer-{k}", timeout=30, retry=NO_BACKOFF)
            for k in range(n_queues)
        ]
        holding: set[Any] = set()
        overlaps: list[Any] = []
        completed: Counter[int] = Counter()
        deliveries: Counter[int] = Counter()

        async def consume(queue: AsyncMongoQueue, seed: int) -> None:
            rng = random.Random(seed)
            while True:
                job = await queue.next()
                if job is None:
                    if await queue.size() == 0:
                        return
                    await asyncio.sleep(0.01)
                    continue
                if job.id in holding:
                    overlaps.append(job.id)
                holding.add(job.id)
                deliveries[job.payload["i"]] += 1
                await asyncio.sleep(rng.random() * 0.005)  # let others run while held
                holding.discard(job.id)
                if job.payload["fail_first"] and job.attempts == 0:
                    await job.error("first attempt fails")
                else:
                    await job.complete()
                    completed[job.payload["i"]] += 1

        await asyncio.gather(*(consume(queues[k % n_queues], seed=k) for k in range(n_coroutines)))
        assert overlaps == []
        assert completed == Counter(range(n_jobs))  # each exactly once
        retried = {i for i in range(n_jobs) if i % 3 == 0}
        assert {i for i, n in deliveries.items() if n == 2} == retried
        assert sum(deliveries.values()) == n_jobs + len(retried)
        assert (await producer.stats())["total"] == 0

    run(mongodb_uri, collection, body)
