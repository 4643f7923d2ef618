"""Hostile input: a clear error of ours every time, and the queue unchanged.

Collection and database names: pymongo itself refuses names with ``$``, NUL,
a leading or trailing ``.`` or an empty name (``InvalidName``), when the
``Collection`` is made, before any queue call; we let that error stand (the
caller built the collection). Names pymongo accepts but the server refuses
(``system.*``, too long) raise our ``InvalidArgument`` at the first queue call.
The CLI turns both into a one-line error with exit code 2.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import bson
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient
from pymongo.errors import InvalidName

from mongoqueue import (
    NO_BACKOFF,
    InvalidArgument,
    InvalidArgumentType,
    InvalidPayload,
    MongoQueue,
    MongoQueueError,
    QueueUnavailable,
    RetryPolicy,
)
from mongoqueue.validation import INT64_MAX, INT64_MIN, MAX_SECONDS
from mongoqueue.worker import Worker
from tests.reliability.tooling import ROOT

# --------------------------------------------------------------------------- the snapshot


def contents(queue: MongoQueue) -> list[bytes]:
    """Every document of the queue's collection, encoded: equal iff nothing changed."""
    return sorted(bson.encode(doc) for doc in queue.collection.find({}))


@pytest.fixture
def busy_queue(queue: MongoQueue) -> Iterator[MongoQueue]:
    """A queue holding a waiting, a running and a failed job; unchanged at the end."""
    queue.put({"waiting": 1}, priority=1)
    queue.put({"running": 1}, priority=5)
    queue.put({"failed": 1}, priority=9, max_attempts=1)
    queue.next().error("boom")  # the failed one
    running = queue.next()
    assert running.payload == {"running": 1}
    before = contents(queue)
    yield queue
    assert contents(queue) == before


# --------------------------------------------------------------------------- payloads

ODD_KEYS = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["$set", "$", "a.b", ".", "nul\x00", "", " ", "_id", "\ud7ff", "é.$"]),
    st.integers(),
    st.binary(max_size=4),
    st.none(),
    st.tuples(st.integers()),
    st.floats(allow_nan=True),
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(max_size=16),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9000, 1, 1)),
    st.datetimes(timezones=st.just(timezone.utc)),
    st.sampled_from([100_000, 1_000_000]).map(lambda n: "x" * n),  # big strings
    st.builds(ObjectId),
    st.builds(object),
    st.builds(Decimal, st.integers()),
    st.complex_numbers(allow_nan=False),
    st.frozensets(st.integers(), max_size=3),
    st.builds(timedelta, seconds=st.integers(0, 1000)),
)


def _nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        doc = {"d": doc}
    return doc


VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(ODD_KEYS, inner, max_size=4),
    ),
    max_leaves=12,
)
PAYLOADS = st.one_of(
    st.dictionaries(ODD_KEYS, VALUES, max_size=5),
    st.sampled_from([10, 90, 1000, 5000]).map(_nested),  # deep nesting
    VALUES,  # not even a mapping, most of the time
)


def _roundtrip(queue: MongoQueue, payload: Any) -> bytes:
    options = queue.collection.codec_options
    return bson.encode(bson.decode(bson.encode(payload), codec_options=options))


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=PAYLOADS)
def test_hostile_payloads(queue, payload) -> None:
    """Stored exactly as BSON would store it, or refused with InvalidPayload/-Type."""
    before = contents(queue)
    try:
        job_id = queue.put(payload)
    except (InvalidPayload, InvalidArgumentType):
        assert contents(queue) == before
    else:
        stored = queue.get(job_id)
        assert stored is not None
        assert bson.encode(stored.payload) == _roundtrip(queue, payload)
        queue.collection.delete_one({"_id": job_id})
        assert contents(queue) == before
    # A batch with it among good payloads is all or nothing.
    try:
        ids = queue.put_many([{"good": 1}, payload, {"good": 2}])
    except (InvalidPayload, InvalidArgumentType):
        assert contents(queue) == before
    else:
        assert len(ids) == 3
        queue.collection.delete_many({"_id": {"$in": ids}})
        assert contents(queue) == before


# --------------------------------------------------------------------------- wrong types

WRONG: list[Any] = [
    None, "1", "", "  ", b"1", 1.5, True, [1], {"a": 1}, object(), math.nan, math.inf,
    -1, 0, 2**70, 1e300, timedelta(seconds=-1), datetime(2030, 1, 1),
]  # fmt: skip


def _seconds(*, zero: bool, none: bool = False) -> Callable[[Any], bool]:
    def ok(value: Any) -> bool:
        if value is None:
            return none
        if isinstance(value, timedelta):
            value = value.total_seconds()
        return (
            not isinstance(value, bool)
            and isinstance(value, (int, float))
            and math.isfinite(value)
            and (value >= 0 if zero else value > 0)
            and value <= MAX_SECONDS
        )

    return ok


def _posint(*, none: bool = False) -> Callable[[Any], bool]:
    def ok(value: Any) -> bool:
        if value is None:
            return none
        return type(value) is int and 1 <= value <= INT64_MAX

    return ok


def _int64(value: Any) -> bool:
    return type(value) is int and INT64_MIN <= value <= INT64_MAX


def _retry(*, none: bool) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, RetryPolicy) or (none and value is None)


#: (name, accepted(value), call(queue, value)) for every public argument.
ARGUMENTS: list[tuple[str, Callable[[Any], bool], Callable[[MongoQueue, Any], Any]]] = [
    ("MongoQueue(consumer_id)", lambda v: (isinstance(v, str) and bool(v.strip())) or _int64(v),
     lambda q, v: MongoQueue(q.collection, v)),
    ("MongoQueue(timeout)", _seconds(zero=False), lambda q, v: MongoQueue(q.collection, "c", v)),
    ("MongoQueue(max_attempts)", _posint(), lambda q, v: MongoQueue(q.collection, "c", 30, v)),
    ("MongoQueue(retry)", _retry(none=False),
     lambda q, v: MongoQueue(q.collection, "c", retry=v)),
    ("put(payload)", lambda v: isinstance(v, Mapping), lambda q, v: q.put(v)),
    ("put(priority)", _int64, lambda q, v: q.put({"a": 1}, v)),
    ("put(delay)", _seconds(zero=True, none=True), lambda q, v: q.put({"a": 1}, delay=v)),
    ("put(run_at)", lambda v: v is None, lambda q, v: q.put({"a": 1}, run_at=v)),
    ("put(key)", lambda v: v is None or (isinstance(v, str) and bool(v)),
     lambda q, v: q.put({"a": 1}, key=v)),
    ("put(max_attempts)", _posint(none=True), lambda q, v: q.put({"a": 1}, max_attempts=v)),
    ("put(retry)", _retry(none=True), lambda q, v: q.put({"a": 1}, retry=v)),
    ("put_many(payloads)", lambda v: False, lambda q, v: q.put_many(v)),
    ("put_many(payloads[0])", lambda v: isinstance(v, Mapping), lambda q, v: q.put_many([v])),
    ("put_many(priority)", _int64, lambda q, v: q.put_many([{"a": 1}], v)),
    ("put_many(delay)", _seconds(zero=True, none=True),
     lambda q, v: q.put_many([{"a": 1}], delay=v)),
    ("put_many(run_at)", lambda v: v is None, lambda q, v: q.put_many([{"a": 1}], run_at=v)),
    ("put_many(max_attempts)", _posint(none=True),
     lambda q, v: q.put_many([{"a": 1}], max_attempts=v)),
    ("put_many(retry)", _retry(none=True), lambda q, v: q.put_many([{"a": 1}], retry=v)),
    ("next_batch(n)", lambda v: False, lambda q, v: q.next_batch(v)),
    ("failed(limit)", lambda v: v is None, lambda q, v: q.failed(limit=v)),
    ("Job.progress(count)", _int64, lambda q, v: _held(q).progress(v)),
    ("Worker(handler)", callable, lambda q, v: Worker(q, v)),
    ("Worker(concurrency)", _posint(), lambda q, v: Worker(q, print, concurrency=v)),
    ("Worker(heartbeat)", _seconds(zero=False, none=True),
     lambda q, v: Worker(q, print, heartbeat=v)),
    ("Worker(hard_limit)", _seconds(zero=False, none=True),
     lambda q, v: Worker(q, print, hard_limit=v)),
    ("Worker(grace)", _seconds(zero=True), lambda q, v: Worker(q, print, grace=v)),
    ("Worker(idle_wait)", _seconds(zero=False), lambda q, v: Worker(q, print, idle_wait=v)),
    ("Worker(queue)", lambda v: False, lambda q, v: Worker(v, print)),
    ("RetryPolicy(initial)", _seconds(zero=True), lambda q, v: RetryPolicy(initial=v)),
    ("RetryPolicy(maximum)", _seconds(zero=True), lambda q, v: RetryPolicy(maximum=v)),
    ("RetryPolicy(multiplier)", lambda v: False, lambda q, v: RetryPolicy(multiplier=v)),
]  # fmt: skip


def _held(queue: MongoQueue) -> Any:
    """The running job of ``busy_queue``, as a handle of its own (same token)."""
    from mongoqueue import Job

    doc = queue.collection.find_one({"payload.running": 1})
    return Job(queue, doc)


@pytest.mark.parametrize(("name", "accepted", "call"), ARGUMENTS, ids=[a[0] for a in ARGUMENTS])
def test_wrong_values_for_every_argument(busy_queue, name, accepted, call) -> None:
    tried = 0
    for value in WRONG:
        if accepted(value) or (name == "RetryPolicy(multiplier)" and _multiplier_ok(value)):
            continue
        tried += 1
        with pytest.raises(MongoQueueError) as info:
            call(busy_queue, value)
        assert isinstance(info.value, (InvalidArgument, InvalidArgumentType)), (value, info.value)
        assert str(info.value), value
    assert tried >= 5


def _multiplier_ok(value: Any) -> bool:
    return _seconds(zero=False)(value) and value >= 1


def test_next_batch_next_and_failed_reject_wrong_values(busy_queue) -> None:
    # (Their valid values claim or list jobs, so they are kept out of the matrix above.)
    for value in ("1", True, -1, math.nan, math.inf, 1e300, timedelta(seconds=-1)):
        with pytest.raises((InvalidArgument, InvalidArgumentType)):
            busy_queue.next(wait=value)
    for value in ("1", 1.5, True, None, 0, -1, 2**70):
        with pytest.raises((InvalidArgument, InvalidArgumentType)):
            busy_queue.next_batch(value)
    for value in ("1", 1.5, True, 0, -1):
        with pytest.raises((InvalidArgument, InvalidArgumentType)):
            busy_queue.failed(limit=value)


def test_a_huge_error_message_is_recorded_shortened(queue) -> None:
    """A failure whose message would not fit in a document is still recorded."""
    queue.put({"a": 1})
    job = queue.next()
    job.error("start " + "x" * 20_000_000 + " the end")
    stored = queue.get(job.id)
    assert stored.attempts == 1
    assert stored.last_error.startswith("start ")
    assert stored.last_error.endswith(" the end")
    assert "characters cut" in stored.last_error
    assert len(stored.last_error) < 100_000


def test_ids_are_never_read_as_operators(busy_queue) -> None:
    assert busy_queue.get({"$ne": None}) is None
    assert busy_queue.get({"$where": "1"}) is None
    assert busy_queue.requeue({"$ne": None}) == 0  # the failed job stays failed


# --------------------------------------------------------------------------- names and URIs


@pytest.mark.parametrize("name", ["bad$name", "", ".lead", "trail.", "nul\x00"])
def test_collection_names_pymongo_refuses(client, name) -> None:
    with pytest.raises(InvalidName):
        client["mongoqueue_tests"][name]


@pytest.mark.parametrize("name", ["system.jobs", "x" * 300])
def test_collection_names_the_server_refuses(client, name) -> None:
    queue = MongoQueue(client["mongoqueue_tests"][name], "c")
    for call in (queue.ensure_indexes, lambda: queue.put({"a": 1})):
        with pytest.raises(InvalidArgument, match="rejects the queue's database or collection"):
            call()
    assert name not in client["mongoqueue_tests"].list_collection_names()


def test_an_unreachable_server_is_our_error() -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(
        "mongodb://127.0.0.1:1/?directConnection=true", serverSelectionTimeoutMS=200
    )
    queue = MongoQueue(client["db"]["jobs"], "c", retry=NO_BACKOFF)
    try:
        for call in (lambda: queue.put({"a": 1}), queue.next, queue.stats, queue.size):
            with pytest.raises(QueueUnavailable, match="check the URI"):
                call()
    finally:
        client.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mongoqueue", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("uri", "code", "message"),
    [
        ("http://example.com", 2, "invalid MongoDB URI 'http://example.com': it must start"),
        ("notauri", 2, "invalid MongoDB URI 'notauri'"),
        ("mongodb://", 2, "invalid connection settings"),
        ("mongodb://127.0.0.1:99999", 2, "invalid connection settings: Port must be"),
        ("mongodb://127.0.0.1:abc", 2, "invalid connection settings: Port contains"),
        ("mongodb://u:p@127.0.0.1:1/?authSource=", 2, "invalid connection settings"),
        ("mongodb://127.0.0.1:1/?directConnection=true", 3, "could not reach MongoDB"),
    ],
)
def test_cli_bad_uris(uri, code, message) -> None:
    commands = (
        ["stats"],
        ["put", '{"a": 1}'],
        ["worker", "tests.reliability.handlers:ledger"],
        ["worker", "tests.reliability.handlers:noop_async"],
    )
    for command in commands:
        done = _cli("--uri", uri, "--server-timeout", "0.3", *command)
        assert done.returncode == code, (command, done.stderr)
        assert message in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ["bad$name", "system.jobs", "x" * 300])
def test_cli_bad_collection_names(mongodb_uri, client, name) -> None:
    """Refused with exit code 2 by the commands that write (reading such a name finds nothing)."""
    before = sorted(client["mongoqueue_tests"].list_collection_names())
    for command in (["put", '{"a": 1}'], ["worker", "tests.reliability.handlers:ledger"]):
        where = ("--uri", mongodb_uri, "--db", "mongoqueue_tests", "--collection", name)
        done = _cli(*where, *command)
        assert done.returncode == 2, (command, done.stderr)
        assert "name" in done.stderr
        assert "Traceback" not in done.stderr
    assert sorted(client["mongoqueue_tests"].list_collection_names()) == before


def test_ids_are_never_read_as_operators_async(busy_queue, mongodb_uri) -> None:
    import asyncio

    from pymongo import AsyncMongoClient

    from mongoqueue import AsyncMongoQueue

    async def probe() -> tuple[Any, Any]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        try:
            coll = client[busy_queue.collection.database.name][busy_queue.collection.name]
            queue = AsyncMongoQueue(coll, "async")
            return await queue.get({"$ne": None}), await queue.requeue({"$ne": None})
        finally:
            await client.close()

    assert asyncio.run(probe()) == (None, 0)
