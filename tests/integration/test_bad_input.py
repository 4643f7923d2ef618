"""Bad input: a clear error of ours, and the queue unchanged."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId

from mongoqueue import (
    InvalidArgument,
    InvalidArgumentType,
    InvalidPayload,
    MongoQueue,
    MongoQueueError,
    PayloadTooLarge,
    RetryPolicy,
)


@pytest.fixture
def snapshot(queue):
    """Take the collection's contents; assert later that nothing changed."""
    queue.put({"existing": 1}, priority=2)

    def contents():
        return sorted(queue.collection.find({}, {"payload": 1, "state": 1}), key=str)

    before = contents()
    yield
    assert contents() == before


@pytest.mark.usefixtures("snapshot")
@pytest.mark.parametrize(
    ("payload", "error", "match"),
    [
        (["a", "list"], TypeError, "payload must be a mapping"),
        ("text", TypeError, "payload must be a mapping"),
        (None, TypeError, "payload must be a mapping"),
        ({"$where": "1"}, InvalidPayload, r"'\$where' at the top level is not allowed"),
        ({"a.b": 1}, InvalidPayload, "'a.b' at the top level is not allowed"),
        ({"ok": {"deep": {"$set": 1}}}, InvalidPayload, r"'\$set' at ok\.deep is not allowed"),
        ({"ok": [{"x.y": 1}]}, InvalidPayload, r"'x\.y' at ok\[0\] is not allowed"),
        ({"nul\x00": 1}, InvalidPayload, "NUL"),
        ({1: "int key"}, InvalidPayload, "string keys"),
        ({"s": {1, 2}}, InvalidPayload, "cannot be stored as BSON"),
        ({"o": object()}, InvalidPayload, "cannot be stored as BSON"),
        ({"big": 2**70}, InvalidPayload, "cannot be stored as BSON"),
    ],
)
def test_bad_payloads(queue, payload, error, match) -> None:
    with pytest.raises(error, match=match) as info:
        queue.put(payload)
    assert isinstance(info.value, MongoQueueError)


@pytest.mark.usefixtures("snapshot")
def test_payload_over_the_document_limit(queue) -> None:
    with pytest.raises(PayloadTooLarge, match=r"16,777,216 bytes \(16 MiB\)") as info:
        queue.put({"blob": "x" * (16 * 1024 * 1024)})
    assert isinstance(info.value, ValueError)
    # Just under the limit less the metadata allowance is accepted.
    queue.put({"blob": "x" * (15 * 1024 * 1024)})
    queue.collection.delete_one({"payload.blob": {"$exists": True}})


@pytest.mark.usefixtures("snapshot")
def test_deeply_nested_payload(queue) -> None:
    payload: dict = {}
    inner = payload
    for _ in range(5000):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(InvalidPayload):
        queue.put(payload)


@pytest.mark.usefixtures("snapshot")
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"priority": "high"}, TypeError, "priority must be an int"),
        ({"priority": 1.5}, TypeError, "priority must be an int"),
        ({"priority": True}, TypeError, "priority must be an int"),
        ({"priority": 2**64}, ValueError, "64-bit"),
        ({"delay": -1}, ValueError, "delay must be >= 0"),
        ({"delay": "soon"}, TypeError, "delay must be a number"),
        ({"delay": float("nan")}, ValueError, "finite"),
        ({"run_at": datetime(2030, 1, 1)}, ValueError, "timezone-aware"),
        ({"run_at": "2030-01-01"}, TypeError, "run_at must be a datetime"),
        (
            {"run_at": datetime.now(timezone.utc), "delay": 5},
            ValueError,
            "either delay or run_at",
        ),
        ({"key": ""}, ValueError, "key must be a non-empty"),
        ({"key": 5}, TypeError, "key must be a str"),
        ({"max_attempts": 0}, ValueError, "max_attempts must be >= 1"),
        ({"retry": {"initial": 1}}, TypeError, "RetryPolicy"),
    ],
)
def test_bad_put_arguments(queue, kwargs, error, match) -> None:
    with pytest.raises(error, match=match) as info:
        queue.put({"a": 1}, **kwargs)
    assert isinstance(info.value, MongoQueueError)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"consumer_id": ""}, ValueError, "consumer_id must be a non-empty"),
        ({"consumer_id": "   "}, ValueError, "consumer_id must be a non-empty"),
        ({"consumer_id": None}, TypeError, "consumer_id must be a str"),
        ({"timeout": 0}, ValueError, "timeout must be > 0"),
        ({"timeout": -5}, ValueError, "timeout must be > 0"),
        ({"timeout": "300"}, TypeError, "timeout must be a number"),
        ({"max_attempts": 0}, ValueError, "max_attempts must be >= 1"),
        ({"max_attempts": 2.5}, TypeError, "max_attempts must be an int"),
        ({"max_attempts": True}, TypeError, "max_attempts must be an int"),
        ({"retry": None}, TypeError, "retry must be a RetryPolicy"),
    ],
)
def test_bad_constructor_arguments(collection, kwargs, error, match) -> None:
    args = {"consumer_id": "c", "timeout": 300, "max_attempts": 3, **kwargs}
    with pytest.raises(error, match=match) as info:
        MongoQueue(collection, **args)
    assert isinstance(info.value, MongoQueueError)


def test_collection_must_be_a_collection(client) -> None:
    with pytest.raises(InvalidArgumentType, match="pymongo Collection"):
        MongoQueue(client, "c")  # a client, not a collection
    with pytest.raises(InvalidArgumentType, match="pymongo Collection"):
        MongoQueue(client.db, "c")  # a database


def test_timedelta_timeout_accepted(collection) -> None:
    queue = MongoQueue(collection, "c", timeout=timedelta(minutes=2))
    assert queue.timeout == 120


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial": -1}, "initial must be >= 0"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"minimum": 10, "maximum": 5}, "must not exceed maximum"),
    ],
)
def test_bad_retry_policy(kwargs, match) -> None:
    with pytest.raises(InvalidArgument, match=match):
        RetryPolicy(**kwargs)


@pytest.mark.usefixtures("snapshot")
def test_bad_method_arguments(queue) -> None:
    with pytest.raises(TypeError, match="n must be an int"):
        queue.next_batch("5")
    with pytest.raises(ValueError, match="n must be >= 1"):
        queue.next_batch(0)
    with pytest.raises(ValueError, match="wait must be >= 0"):
        queue.next(wait=-1)
    with pytest.raises(TypeError, match="payloads must be an iterable"):
        queue.put_many({"a": 1})
    with pytest.raises(ValueError, match="limit must be >= 1"):
        queue.failed(limit=0)
    assert queue.requeue(ObjectId()) == 0  # an unknown id requeues nothing


def test_bad_progress_count(queue) -> None:
    queue.put({"a": 1})
    job = queue.next()
    with pytest.raises(TypeError, match="count must be an int"):
        job.progress("3")
    assert queue.get(job.id).progress_count is None
    job.complete()


def test_key_with_dollar_cannot_change_queries(queue) -> None:
    """Strings that look like operators are stored as data, never interpreted."""
    queue2 = MongoQueue(queue.collection, "$locked_by", timeout=30)
    job_id = queue.put({"a": 1}, key="$state")
    job = queue2.next()
    assert job.locked_by == "$locked_by"
    job.error("$attempts")
    stored = queue.get(job_id)
    assert stored.last_error == "$attempts"
    assert stored.key == "$state"
    assert stored.attempts == 1
