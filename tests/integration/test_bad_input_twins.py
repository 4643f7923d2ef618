"""Bad input gets our errors, before anything is written, from both twins."""

from __future__ import annotations

import asyncio

import pytest
from pymongo import AsyncMongoClient

from mongoqueue import (
    NO_BACKOFF,
    AsyncMongoQueue,
    InvalidArgument,
    InvalidArgumentType,
    InvalidPayload,
    MongoQueue,
    MongoQueueError,
)


@pytest.fixture
def queue(api):
    return api.queue("consumer-1", timeout=30, max_attempts=3, retry=NO_BACKOFF)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda q: q.put(["not", "a", "mapping"]), InvalidArgumentType, "payload"),
        (lambda q: q.put({"$bad": 1}), InvalidPayload, r"\$bad"),
        (lambda q: q.put({"a": 1}, priority="high"), InvalidArgumentType, "priority"),
        (lambda q: q.put({"a": 1}, delay=-1), InvalidArgument, "delay"),
        (lambda q: q.put({"a": 1}, max_attempts=0), InvalidArgument, "max_attempts"),
        (lambda q: q.put({"a": 1}, retry=3), InvalidArgumentType, "retry"),
        (lambda q: q.put_many({"a": 1}), InvalidArgumentType, "iterable of mappings"),
        (lambda q: q.put_many([{"a": 1}, {"$b": 2}]), InvalidPayload, r"payloads\[1\]"),
        (lambda q: q.next(wait=-1), InvalidArgument, "wait"),
        (lambda q: q.next(wait="soon"), InvalidArgumentType, "wait"),
        (lambda q: q.next_batch(0), InvalidArgument, "n must be >= 1"),
        (lambda q: q.next_batch(10**6), InvalidArgument, "at most"),
        (lambda q: q.failed(limit=0), InvalidArgument, "limit"),
    ],
    ids=[
        "payload-type",
        "payload-key",
        "priority",
        "delay",
        "max-attempts",
        "retry",
        "put-many-mapping",
        "put-many-payload",
        "wait-negative",
        "wait-type",
        "batch-zero",
        "batch-huge",
        "failed-limit",
    ],
)
def test_bad_arguments_are_refused_before_writing(queue, collection, call, error, match) -> None:
    with pytest.raises(error, match=match):
        call(queue)
    assert collection.count_documents({}) == 0


def test_bad_progress_count_leaves_the_job_held(queue) -> None:
    queue.put({"a": 1})
    job = queue.next()
    with pytest.raises(InvalidArgumentType, match="count must be an int"):
        job.progress("3")
    assert job.held
    job.complete()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"consumer_id": ""}, InvalidArgument, "consumer_id"),
        ({"timeout": 0}, InvalidArgument, "timeout"),
        ({"max_attempts": 1.5}, InvalidArgumentType, "max_attempts"),
    ],
)
def test_bad_settings(api, kwargs, error, match) -> None:
    settings = {"consumer_id": "c", "timeout": 30, "max_attempts": 3} | kwargs
    with pytest.raises(error, match=match):
        api.queue(**settings)


def test_each_queue_names_its_twin_for_the_other_collection(collection, mongodb_uri) -> None:
    with pytest.raises(InvalidArgumentType, match="pass a Collection to MongoQueue instead"):
        AsyncMongoQueue(collection, "c")

    async def sync_queue_on_async_collection() -> None:
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri)
        try:
            with pytest.raises(InvalidArgumentType, match="to AsyncMongoQueue instead"):
                MongoQueue(client.db.jobs, "c")
        finally:
            await client.close()

    asyncio.run(sync_queue_on_async_collection())
    with pytest.raises(MongoQueueError, match="must be a pymongo AsyncCollection"):
        AsyncMongoQueue("jobs", "c")  # type: ignore[arg-type]
