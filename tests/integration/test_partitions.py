"""Partitioned queues (``partitions=P``): the properties that make them targeted on a
sharded cluster, proven on one server.

No sharded cluster runs here. What makes every operation on one job go to one
shard is that its filter names the partition by equality (the shard key is
``{partition: 1}``) and that every index starts with the partition: a command
listener records everything the queue sends while the whole API runs, and the
test fails on any command on one job without that equality.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient

from mongoqueue import NO_BACKOFF, App, AsyncMongoQueue, MongoQueue, MongoQueueError
from mongoqueue import partitions as parts
from tests.conftest import TEST_DB
from tests.helpers import Commands, check_race, kill_holding_consumer, spawn_consumer, wait_for

P = 8


@pytest.fixture
def listened(mongodb_uri: str) -> Iterator[tuple[Any, Commands]]:
    commands = Commands()
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, event_listeners=[commands])
    name = f"parts_{uuid.uuid4().hex[:12]}"
    yield client[TEST_DB][name], commands
    client[TEST_DB].drop_collection(name)
    client[TEST_DB][parts.META_COLLECTION].delete_one({"_id": name})
    client.close()


@pytest.fixture
def forget_record(collection: Any) -> Iterator[None]:
    yield
    collection.database[parts.META_COLLECTION].delete_one({"_id": collection.name})


def _targeted(query: Any) -> bool:
    """Whether ``query`` names one partition by equality."""
    if not isinstance(query, dict) or "partition" not in query:
        return False
    value = query["partition"]
    if isinstance(value, dict):
        value = value.get("$eq") if list(value) == ["$eq"] else None
    return isinstance(value, int) and not isinstance(value, bool)


def _on_one_job(commands: list[dict[str, Any]], collection: str) -> list[tuple[str, Any]]:
    """Every (command, filter) of ``commands`` on ``collection`` that acts on one job.

    findAndModify always does; an update statement without ``multi``, a delete
    with ``limit: 1``, and any update/delete/find whose filter names an ``_id``.
    """
    found = []
    for command in commands:
        name = next(iter(command))
        if command[name] != collection:
            continue
        if name == "findAndModify":
            found.append((name, command["query"]))
        elif name == "update":
            for statement in command["updates"]:
                if not statement.get("multi") or "_id" in statement["q"]:
                    found.append((name, statement["q"]))
        elif name == "delete":
            for statement in command["deletes"]:
                if statement.get("limit") == 1 or "_id" in statement["q"]:
                    found.append((name, statement["q"]))
        elif name == "find" and "_id" in command.get("filter", {}):
            found.append((name, command["filter"]))
    return found


def _run_whole_api(queue: MongoQueue) -> None:
    """Every operation of the queue and its job handles, with handles (not bare ids)."""
    # Two jobs that fail for good (requeued at the end, by handle and all at once).
    queue.put_many([{"n": "fail-a"}, {"n": "fail-b"}])
    while len(queue.failed()) < 2:
        queue.next().error("again")
    keyed = queue.put({"n": "keyed"}, key="k1")
    assert queue.put({"n": "again"}, key="k1") == keyed  # deduplicated, targeted lookup
    queue.put({"n": 0}, priority=5)
    queue.put_many([{"n": n} for n in range(1, 30)])
    queue.put({"n": "later"}, delay=3600)
    assert queue.size() == 34
    queue.stats()
    queue.counts()
    queue.jobs(limit=5)
    queue.jobs("waiting", key="k1")
    job = queue.next()
    assert job is not None
    job.progress(3)
    job.heartbeat()
    assert queue.get(job) is not None
    assert queue.status(job).state == "running"
    job.release()
    job = queue.next()
    job.error("boom")
    job = queue.next()
    job.complete()
    job = queue.next()
    job.complete(keep=60, result={"ok": True})
    job = queue.next()
    job.hand_back("not mine", max_passes=5, delay=0)
    job = queue.next()
    assert queue.request_cancel(job) == "requested"
    job.heartbeat()
    assert job.cancel_requested
    job.end_cancelled(60)
    batch = queue.next_batch(5)
    assert len(batch) == 5
    for held in batch:
        held.complete()
    waiting = queue.jobs("waiting", limit=2)
    assert queue.cancel(waiting[0])
    assert queue.request_cancel(waiting[1], keep=60) == "cancelled"
    first, _second = queue.failed()
    assert queue.requeue(first) == 1
    assert queue.requeue() == 1
    expiring = queue.next()
    past = queue.server_time().replace(year=2000)  # the lease ends (as expire_lease)
    queue.collection.update_one(
        {"partition": expiring.data["partition"], "_id": expiring.id},
        {"$set": {"lease_expires_at": past, "visible_at": past}},
    )
    queue.repair()
    assert queue.next(wait=0.2) is not None
    queue.purge_failed()
    queue.server_time()


def test_every_command_on_one_job_names_its_partition(listened) -> None:
    collection, commands = listened
    queue = MongoQueue(collection, "c1", timeout=30, max_attempts=2, retry=NO_BACKOFF, partitions=P)
    _run_whole_api(queue)
    on_one_job = _on_one_job(commands.sent, collection.name)
    names = Counter(name for name, _ in on_one_job)
    # The run really exercised every kind of command on one job.
    assert names["findAndModify"] >= 10, names
    assert names["update"] >= 5, names
    assert names["delete"] >= 3, names
    untargeted = [(name, query) for name, query in on_one_job if not _targeted(query)]
    assert untargeted == []
    # Claims and batch claims, too, are in one partition.
    batch_updates = [
        s["q"]
        for c in commands.sent
        if "update" in c and c["update"] == collection.name
        for s in c["updates"]
        if s.get("multi") and "_id" in s["q"]
    ]
    assert batch_updates
    assert all(_targeted(q) for q in batch_updates)


def test_ids_from_outside_are_looked_up_once_then_written_targeted(listened) -> None:
    collection, commands = listened
    queue = MongoQueue(collection, "c1", retry=NO_BACKOFF, max_attempts=1, partitions=P)
    put = queue.put_many([{"n": n} for n in range(4)])
    held = queue.next()
    held.error("failed")  # max_attempts=1: failed
    ids = [None, *(job_id for job_id in put if job_id != held.id)]
    start = len(commands.sent)
    assert queue.cancel(str(ids[1])) is True
    assert queue.request_cancel(ids[2]) == "cancelled"
    assert queue.requeue(held.id) == 1
    assert queue.get(ids[3]) is not None
    assert queue.status(ids[3]).state == "waiting"
    assert queue.cancel(uuid.uuid4().hex) is False  # no such job: no write at all
    on_one_job = _on_one_job(commands.sent[start:], collection.name)
    writes = [(n, q) for n, q in on_one_job if n != "find"]
    assert len(writes) == 3, writes
    assert all(_targeted(q) for _, q in writes), writes
    # The only commands without the partition are the reads of an id (sent to every
    # partition): the lookups before each write and get()/status() of a bare id.
    reads = [q for n, q in on_one_job if n == "find" and not _targeted(q)]
    assert len(reads) == 6, reads
    assert all(set(q) == {"_id"} for q in reads), reads


def test_every_index_starts_with_the_partition(collection, forget_record) -> None:
    queue = MongoQueue(collection, "c1", partitions=P)
    queue.put({"x": 1})
    names = set()
    for index in collection.list_indexes():
        names.add(index["name"])
        if index["name"] == "_id_":
            continue
        if index.get("expireAfterSeconds") is not None:
            # MongoDB allows a TTL index on one field only: the server sweeps it on
            # each shard by itself, no query of the queue uses it.
            assert list(index["key"]) == ["expire_at"]
            continue
        assert next(iter(index["key"])) == "partition", index
    assert {"mongoqueue_p_claim", "mongoqueue_p_key", "mongoqueue_p_lease"} <= names


def test_claims_are_served_by_the_partitioned_claim_index(listened) -> None:
    collection, commands = listened
    queue = MongoQueue(collection, "c1", partitions=P)
    queue.put_many([{"n": n} for n in range(200)])
    assert queue.next() is not None
    claim = [c for c in commands.sent if "findAndModify" in c][-1]
    command = {k: claim[k] for k in ("findAndModify", "query", "sort", "update", "new")}
    reply = collection.database.command({"explain": command, "verbosity": "executionStats"})
    scans = [s for s in _stages(reply["queryPlanner"]["winningPlan"]) if s["stage"] == "IXSCAN"]
    assert [s["indexName"] for s in scans] == ["mongoqueue_p_claim"]
    partition = claim["query"]["partition"]
    assert scans[0]["indexBounds"]["partition"] == [f"[{partition}, {partition}]"]


def _stages(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "stage" in node:
            yield node
        for value in node.values():
            yield from _stages(value)
    elif isinstance(node, list):
        for value in node:
            yield from _stages(value)


def test_keys_deduplicate_across_partitions_and_consumers(collection, forget_record) -> None:
    a = MongoQueue(collection, "a", partitions=P)
    b = MongoQueue(collection, "b", partitions=P)
    first = a.put({"x": 1}, key="same")
    assert b.put({"x": 2}, key="same") == first
    doc = collection.find_one({"_id": first})
    assert doc["partition"] == parts.partition_of_key("same", P)


def test_jobs_without_a_key_spread_evenly(collection, forget_record) -> None:
    queue = MongoQueue(collection, "c1", partitions=P)
    queue.put_many([{"n": n} for n in range(P * 5)])
    for n in range(P * 3):
        queue.put({"n": n})
    per_partition = Counter(d["partition"] for d in collection.find({}, {"partition": 1}))
    assert per_partition == {p: 8 for p in range(P)}


def test_order_is_kept_within_a_partition(collection, forget_record) -> None:
    queue = MongoQueue(collection, "c1", partitions=2)
    queue.put_many([{"n": n} for n in range(20)])
    queue.put({"n": "urgent"}, priority=9)
    seen: dict[int, list[Any]] = defaultdict(list)
    while (job := queue.next()) is not None:
        seen[job.data["partition"]].append(job.payload["n"])
        job.complete()
    urgent_partition = next(p for p, ns in seen.items() if "urgent" in ns)
    assert seen[urgent_partition][0] == "urgent"  # priority first, within its partition
    for ns in seen.values():
        numbers = [n for n in ns if n != "urgent"]
        assert numbers == sorted(numbers)  # FIFO within each partition
    assert sum(len(ns) for ns in seen.values()) == 21


def test_an_idle_consumer_does_not_sweep_every_partition(listened) -> None:
    collection, commands = listened
    queue = MongoQueue(collection, "idle", partitions=64)
    queue.ensure_indexes()
    start = len(commands.sent)
    assert queue.next() is None
    sent = [next(iter(c)) for c in commands.sent[start:] if c.get(next(iter(c))) == collection.name]
    # One claim in its current partition, then at most two probe reads over all.
    assert sent.count("findAndModify") == 1, sent
    assert sent.count("find") <= 2, sent


def test_a_consumer_finds_a_job_in_any_partition(collection, forget_record) -> None:
    producer = MongoQueue(collection, "producer", partitions=64)
    consumers = [MongoQueue(collection, f"c{i}", partitions=64) for i in range(5)]
    for consumer in consumers:
        job_id = producer.put({"x": 1})
        job = consumer.next()
        assert job is not None
        assert job.id == job_id
        job.complete()
        assert consumer.next_batch(3) == []


def test_next_batch_fills_from_several_partitions(collection, forget_record) -> None:
    queue = MongoQueue(collection, "c1", partitions=4)
    queue.put_many([{"n": n} for n in range(4)])  # one job in each partition
    batch = queue.next_batch(4)
    assert {job.data["partition"] for job in batch} == {0, 1, 2, 3}


def test_a_waiting_consumer_wakes_on_a_put_to_another_partition(
    collection, mongodb_uri, forget_record
) -> None:
    consumer = MongoQueue(collection, "waiter", partitions=16)
    consumer.ensure_indexes()
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(consumer.next(wait=30)))
    thread.start()
    producer = MongoQueue(collection, "producer", partitions=16)
    home = parts.home_partition("waiter", 16)
    key = next(f"k{i}" for i in range(1000) if parts.partition_of_key(f"k{i}", 16) != home)
    job_id = producer.put({"x": 1}, key=key)
    thread.join(timeout=40)
    assert not thread.is_alive()
    consumer.close_stream()
    assert got
    assert got[0] is not None
    assert got[0].id == job_id


def test_the_async_twin_is_partitioned_alike(mongodb_uri, collection, forget_record) -> None:
    async def run() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        try:
            jobs = client[collection.database.name][collection.name]
            queue = AsyncMongoQueue(jobs, "async", partitions=4)
            ids = await queue.put_many([{"n": n} for n in range(8)])
            keyed = await queue.put({"n": "k"}, key="k")
            claimed = []
            while (job := await queue.next()) is not None:
                claimed.append(job.id)
                await job.complete()
            assert sorted(claimed) == sorted([*ids, keyed])
            with pytest.raises(MongoQueueError, match="partitions=4"):
                await AsyncMongoQueue(jobs, "other", partitions=2).size()
        finally:
            await client.close()

    asyncio.run(run())
    docs = list(collection.database[parts.META_COLLECTION].find({"_id": collection.name}))
    assert docs == [{"_id": collection.name, "partitions": 4}]


def test_another_count_refuses_to_start(collection, forget_record) -> None:
    MongoQueue(collection, "first", partitions=8).put({"x": 1})
    with pytest.raises(MongoQueueError, match=r"created with partitions=8.*given partitions=4"):
        MongoQueue(collection, "other", partitions=4).put({"x": 2})
    with pytest.raises(MongoQueueError, match=r"created with partitions=8.*given partitions=1"):
        MongoQueue(collection, "plain").next()
    with pytest.raises(MongoQueueError, match="partitions=8"):
        MongoQueue(collection, "reader", partitions=16).size()
    assert collection.count_documents({}) == 1  # nothing half-written


def test_a_partitioned_queue_refuses_unpartitioned_jobs(collection, forget_record) -> None:
    MongoQueue(collection, "old").put({"x": 1})
    with pytest.raises(MongoQueueError, match="without a partition"):
        MongoQueue(collection, "new", partitions=8).next()
    assert collection.database[parts.META_COLLECTION].find_one({"_id": collection.name}) is None


def test_bad_partition_counts(collection) -> None:
    for bad in (0, -1, parts.MAX_PARTITIONS + 1):
        with pytest.raises(MongoQueueError, match="partitions must be between 1 and"):
            MongoQueue(collection, "c", partitions=bad)
    with pytest.raises(MongoQueueError, match="partitions must be an int"):
        MongoQueue(collection, "c", partitions="8")  # type: ignore[arg-type]


def test_the_task_layer_partitions_its_queues(client, forget_record, collection) -> None:
    app = App(client[TEST_DB], partitions={collection.name: 4}, consumer_id="w")

    @app.task(queue=collection.name)
    def double(x: int) -> int:
        return 2 * x

    handle = double.enqueue(21)
    assert collection.find_one({"_id": handle.id})["partition"] in range(4)
    assert app.queue(collection.name).partitions == 4
    assert app.queue("default").partitions == 1
    app.run_until_empty(queues=[collection.name])
    assert handle.result(timeout=5) == 42


# --------------------------------------------------------------------------- processes


def test_four_processes_race_on_a_partitioned_queue(mongodb_uri, collection, forget_record):
    jobs = 120
    queue = MongoQueue(collection, "producer", retry=NO_BACKOFF, partitions=P)
    ids = {str(i) for i in queue.put_many([{"n": n} for n in range(jobs)])}
    db, coll = collection.database.name, collection.name
    procs = [
        spawn_consumer("race", mongodb_uri, db, coll, f"consumer-{i}", str(i), str(P))
        for i in range(4)
    ]
    check_race(procs, ids)
    assert queue.stats()["total"] == 0


def test_a_killed_consumers_job_comes_back_in_its_partition(mongodb_uri, collection, forget_record):
    queue = MongoQueue(collection, "survivor", timeout=2, retry=NO_BACKOFF, partitions=P)
    job_id = queue.put({"work": "important"})
    proc = spawn_consumer(
        "hold", mongodb_uri, collection.database.name, collection.name, "2", str(P)
    )
    claim = kill_holding_consumer(proc)
    assert claim["_id"] == job_id
    assert queue.next() is None  # still leased to the dead consumer
    again = wait_for(queue.next, timeout=30)
    assert again.id == job_id
    assert again.attempts == 1
    assert again.data["partition"] == claim["partition"]
