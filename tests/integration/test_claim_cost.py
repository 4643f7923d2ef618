"""A claim's cost does not grow with the jobs that are held, backing off or delayed.

Judged the way mongod would run it: the exact ``findAndModify`` a claim sends
(captured with a pymongo ``CommandListener``) is replayed under ``explain``
(executionStats) and its index keys are counted. Each situation puts 1000 jobs
that are not claimable ahead of (or instead of) the claimable one; with the
previous claim index (sorted by ``scheduled_at`` with ``visible_at`` last) each
claim examined about 1001 keys, now it examines a handful (bounded by the number
of distinct priorities in use).

The servers differ here: the SecantusDB Rust server and mongod report the keys
of a B-tree walk; the Python server reports a collection scan for every query, so
these tests need one of the former.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo import MongoClient

from mongoqueue import MongoQueue, RetryPolicy
from mongoqueue import operations as ops
from tests.conftest import TEST_DB
from tests.helpers import Commands

N = 1000
#: Keys a claim may examine: one per distinct priority in use, one for the job
#: it claims, and one for the end of the scan.
BOUND = 4


@pytest.fixture
def listened(mongodb_uri: str) -> Iterator[tuple[Any, Commands]]:
    commands = Commands()
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, event_listeners=[commands])
    name = f"cost_{uuid.uuid4().hex[:12]}"
    yield client[TEST_DB][name], commands
    client[TEST_DB].drop_collection(name)
    client.close()


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "stage" in node:
            yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def explain_last_claim(collection: Any, commands: Commands) -> tuple[int, list[str], set[str]]:
    """Keys examined, stages and index names of the last claim replayed under explain."""
    claim = [c for c in commands.sent if "findAndModify" in c][-1]
    command = {
        k: v
        for k, v in claim.items()
        if k in {"findAndModify", "query", "sort", "update", "new", "fields", "upsert"}
    }
    reply = collection.database.command({"explain": command, "verbosity": "executionStats"})
    stages = [node["stage"] for node in _walk(reply["queryPlanner"]["winningPlan"])]
    indexes = {
        node["indexName"]
        for node in _walk(reply["queryPlanner"]["winningPlan"])
        if node["stage"] == "IXSCAN"
    }
    if "COLLSCAN" in stages:
        pytest.skip("this server reports a collection scan for every query (Python server)")
    return reply["executionStats"]["totalKeysExamined"], stages, indexes


def held_ahead(q: MongoQueue) -> None:
    q.put_many([{"n": i} for i in range(N)])
    assert len(q.next_batch(N)) == N


def backing_off_ahead(q: MongoQueue) -> None:
    q.put_many([{"n": i} for i in range(N)])
    for job in q.next_batch(N):
        job.error("downstream outage")  # a backoff of an hour


def delayed_at_higher_priority(q: MongoQueue) -> None:
    q.put_many([{"n": i} for i in range(N)], priority=5, delay=3600)


SITUATIONS: dict[str, Callable[[MongoQueue], None]] = {
    "1000 held ahead of a due job": held_ahead,
    "1000 backing off ahead of a due job": backing_off_ahead,
    "1000 delayed at priority 5, one due at priority 0": delayed_at_higher_priority,
}


@pytest.mark.parametrize("situation", list(SITUATIONS))
def test_claim_examines_a_bounded_number_of_keys(listened, situation: str) -> None:
    collection, commands = listened
    q = MongoQueue(collection, "c", timeout=3600, retry=RetryPolicy(initial=3600, jitter=False))
    SITUATIONS[situation](q)
    # Two due jobs: the first claim is the command we replay; the second due job is
    # still there when the command is replayed, behind every unclaimable job.
    q.put({"due": 1})
    q.put({"due": 2})
    first = q.next()
    assert first is not None
    assert first.payload == {"due": 1}
    keys, stages, indexes = explain_last_claim(collection, commands)
    assert indexes == {ops.CLAIM_INDEX.document["name"]}
    assert "SORT" not in stages
    assert keys <= BOUND, f"{situation}: the claim examined {keys} index keys"
    second = q.next()
    assert second is not None
    assert second.payload == {"due": 2}


def test_an_empty_claim_over_delayed_jobs_examines_a_bounded_number_of_keys(listened) -> None:
    collection, commands = listened
    q = MongoQueue(collection, "c")
    q.put_many([{"n": i} for i in range(N)], delay=3600)
    assert q.next() is None
    keys, stages, indexes = explain_last_claim(collection, commands)
    assert indexes == {ops.CLAIM_INDEX.document["name"]}
    assert "SORT" not in stages
    assert keys <= BOUND, f"the empty claim examined {keys} index keys"


def test_an_idle_consumer_keeps_one_stream_and_does_not_claim_an_empty_queue(listened) -> None:
    """next(wait=) in a loop on an empty queue: one stream, resumed, no claim per call."""
    collection, commands = listened
    q = MongoQueue(collection, "idle")
    q.ensure_indexes()
    calls = 4
    for _ in range(calls):
        assert q.next(wait=0.3) is None
    sent = [next(iter(c)) for c in commands.sent]
    if "aggregate" not in sent:
        pytest.skip("this server has no change streams (standalone)")
    assert sent.count("aggregate") == 1  # the stream is opened once and kept
    # One claim before the stream opens and one right after (a put in between is not
    # missed); then none: on an empty queue nothing becomes claimable without an event.
    assert sent.count("findAndModify") == 2
    assert sent.count("getMore") >= calls
    # A put is still seen at once by the stream kept open between calls.
    MongoQueue(collection, "producer").put({"n": 1})
    job = q.next(wait=5)
    assert job is not None
    assert job.payload == {"n": 1}


def test_an_idle_polling_consumer_keeps_its_interval_between_calls(listened) -> None:
    """Without change streams (standalone), polling does not restart at 50 ms per call."""
    collection, commands = listened
    q = MongoQueue(collection, "idle")
    q.ensure_indexes()
    q._change_streams = False  # what a standalone server makes it do
    for _ in range(4):
        assert q.next(wait=0.3) is None
    claims = [c for c in commands.sent if "findAndModify" in c]
    # Restarting at 50 ms doubling in every call took 4 claims per call (16 here).
    assert len(claims) <= 6
    MongoQueue(collection, "producer").put({"n": 1})
    job = q.next(wait=5)
    assert job is not None


def test_an_idle_consumer_over_delayed_jobs_rechecks_with_a_claim_alone(listened) -> None:
    """Jobs that may come due without an event: re-check by claiming, probe rarely."""
    collection, commands = listened
    q = MongoQueue(collection, "idle")
    q.put_many([{"n": i} for i in range(5)], delay=3600)
    commands.sent.clear()
    for _ in range(4):
        assert q.next(wait=0.6) is None
    sent = [next(iter(c)) for c in commands.sent]
    if "aggregate" not in sent:
        pytest.skip("this server has no change streams (standalone)")
    assert sent.count("find") == 1  # "does the queue hold ready jobs?", asked once
    assert sent.count("findAndModify") <= 5  # re-checks at most about once a second
