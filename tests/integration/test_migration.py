"""Upgrading a live mongoqueue 0.7.2 queue: detection, migration, resumption.

The 0.7.2 collections are written by ``tests.legacy07``: the original's own
``put``/``next``/``error``/``progress``/``release`` bodies on pymongo 4.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, MongoClient, monitoring
from pymongo.collection import Collection

from mongoqueue import (
    NO_BACKOFF,
    AsyncMongoQueue,
    MigrationError,
    MigrationRefused,
    MongoQueue,
    MongoQueueError,
    OldFormatDocuments,
    migrate,
)
from mongoqueue import migration_operations as mops
from mongoqueue import operations as ops
from tests import legacy07
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
#: Every field of a current job (optional ones aside), as put() writes it.
JOB_FIELDS = set(
    ops.new_job(ObjectId(), {}, priority=0, created_at=datetime.now(), scheduled_at=datetime.now())  # type: ignore[arg-type]
)


def _old_queue(collection: Collection[Any]) -> dict[str, Any]:
    """A 0.7.2 queue in every state, as its own code left it (max_attempts=2)."""
    priorities = [1, 2, 0, 2, 1, 0, 2]
    waiting = [legacy07.put(collection, {"n": n}, priority=p) for n, p in enumerate(priorities)]
    legacy07.put(collection, {"n": "failing"}, priority=5)
    failing = legacy07.next_job(collection, "old-1", max_attempts=2)
    legacy07.error(collection, failing["_id"], "old-1", "Traceback ...\nKeyError: 'x'")
    legacy07.put(collection, {"n": "released"}, priority=5)
    released = legacy07.next_job(collection, "old-1", max_attempts=2)
    legacy07.release(collection, released["_id"], "old-1")  # attempts 2: failed as well
    legacy07.put(collection, {"n": "held"}, priority=9)
    held = legacy07.next_job(collection, "old-2", max_attempts=2)
    legacy07.put(collection, {"n": "progressing"}, priority=9)
    progressing = legacy07.next_job(collection, 123, max_attempts=2)  # a non-str consumer id
    legacy07.progress(collection, progressing["_id"], 123, 40)
    order = sorted(
        zip(priorities, waiting, range(len(priorities)), strict=True), key=lambda t: (-t[0], t[1])
    )
    return {
        "waiting_order": [n for _, _, n in order],
        "failed": [failing["_id"], released["_id"]],
        "held": held["_id"],
        "progressing": progressing["_id"],
        "total": len(priorities) + 4,
    }


def _server_now(client: MongoClient[Any]) -> datetime:
    localtime: datetime = client.admin.command("hello")["localTime"]
    return localtime


def test_a_07_queue_is_migrated_in_place(client, collection) -> None:
    old = _old_queue(collection)
    before_migration = _server_now(client)
    report = migrate(collection, timeout=30, max_attempts=2)
    after_migration = _server_now(client)

    assert report.before == {
        "waiting": 7,
        "failed": 2,
        "running": 2,
        "unclassifiable": 0,
        "current": 0,
        "total": 11,
    }
    assert report.converted == {"waiting": 7, "failed": 2, "running": 2}
    assert report.after == {
        "waiting": 0,
        "failed": 0,
        "running": 0,
        "unclassifiable": 0,
        "current": 11,
        "total": 11,
    }
    assert report.complete
    for doc in collection.find():  # exactly the current format, nothing more or less
        assert set(doc) == JOB_FIELDS, doc

    queue = MongoQueue(collection, "new", timeout=30, max_attempts=2, retry=NO_BACKOFF)
    claimed = []
    while (job := queue.next()) is not None:
        claimed.append(job.payload["n"])
        job.complete()
    assert claimed == old["waiting_order"]  # priority order, then first in first out

    failed = {job.id: job for job in queue.failed()}
    assert set(failed) == set(old["failed"])
    assert failed[old["failed"][0]].last_error == "Traceback ...\nKeyError: 'x'"
    assert failed[old["failed"][0]].attempts == 2

    held = queue.get(old["held"])
    assert held.state == "running"
    assert held.data["locked_by"] == "old-2"
    lease_end = held.data["lease_expires_at"]
    assert before_migration + timedelta(seconds=30) <= lease_end
    assert lease_end <= after_migration + timedelta(seconds=30, milliseconds=1)
    progressing = queue.get(old["progressing"])
    assert progressing.data["locked_by"] == "123"
    assert progressing.data["progress"] == 40
    assert queue.stats()["total"] == 4

    again = migrate(collection, timeout=30, max_attempts=2)  # idempotent
    assert again.converted == {"waiting": 0, "failed": 0, "running": 0}
    assert again.before == again.after
    assert again.after["total"] == 4


def test_a_job_held_by_an_old_consumer_comes_back_after_the_timeout(collection) -> None:
    legacy07.put(collection, {"n": 1})
    legacy07.next_job(collection, "old-consumer")  # then the old consumer is stopped
    queue = MongoQueue(collection, "new", timeout=1, retry=NO_BACKOFF)
    assert queue.migrate().converted["running"] == 1
    assert queue.next() is None  # still held, for timeout seconds from the migration
    job = wait_for(queue.next, timeout=20)
    assert job.payload == {"n": 1}
    assert job.attempts == 2  # 0.7 counted 1 at its claim; the expired lease adds one
    job.complete()


def test_the_queue_detects_old_documents_and_says_to_migrate(collection) -> None:
    for n in range(3):
        legacy07.put(collection, {"n": n})
    queue = MongoQueue(collection, "new", retry=NO_BACKOFF)
    calls = (queue.next, queue.size, queue.stats, queue.ensure_indexes, queue.repair, queue.failed)
    for call in calls:
        with pytest.raises(OldFormatDocuments, match="mongoqueue migrate") as caught:
            call()
        assert caught.value.count == 3
        assert "holds 3 documents written by mongoqueue 0.7" in str(caught.value)
    with pytest.raises(OldFormatDocuments):
        queue.put({"n": "new"})
    assert collection.count_documents({"state": {"$exists": True}}) == 0  # nothing added
    assert set(collection.index_information()) == {"_id_"}  # not even the queue's indexes
    assert issubclass(OldFormatDocuments, MongoQueueError)

    assert queue.migrate().complete
    assert [queue.next().payload["n"] for _ in range(3)] == [0, 1, 2]


class _Finds(monitoring.CommandListener):
    def __init__(self) -> None:
        self.filters: list[Any] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.filters.append(event.command.get("filter"))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_detection_runs_once_per_queue_object(mongodb_uri, collection) -> None:
    listener = _Finds()
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, event_listeners=[listener])
    try:
        queue = MongoQueue(client[collection.database.name][collection.name], "c", retry=NO_BACKOFF)
        queue.put_many([{"n": n} for n in range(5)])
        for _ in range(5):
            queue.next().complete()
        queue.size()
        queue.stats()
    finally:
        client.close()
    checks = [f for f in listener.filters if f == {"state": {"$exists": False}}]
    assert len(checks) == 1


def test_unclassifiable_documents_are_refused_and_nothing_is_written(collection) -> None:
    legacy07.put(collection, {"n": 1})
    legacy07.put(collection, "a string payload")
    weird = collection.insert_one({"payload": {}, "priority": "high", "attempts": 0}).inserted_id
    snapshot = list(collection.find().sort("_id", 1))
    with pytest.raises(MigrationRefused) as caught:
        migrate(collection)
    message = str(caught.value)
    assert "2 documents" in message
    assert "payload is string, not a document" in message
    assert f"_id {weird!r}" in message
    assert "priority 'high' is not an integer" in message
    assert "nothing was written" in message
    assert list(collection.find().sort("_id", 1)) == snapshot


def test_an_interrupted_migration_resumes_without_loss_or_duplicates(collection) -> None:
    payloads = [{"n": n} for n in range(30)]
    for n, payload in enumerate(payloads):
        legacy07.put(collection, payload, priority=n % 3)
    legacy07.next_job(collection, "old")  # one held
    first = migrate(collection, limit=12, batch_size=5)
    assert sum(first.converted.values()) == 12
    assert not first.complete
    assert first.after["current"] == 12
    queue = MongoQueue(collection, "new", retry=NO_BACKOFF)
    with pytest.raises(OldFormatDocuments) as caught:
        queue.next()  # half-migrated: still refused
    assert caught.value.count == 18

    second = queue.migrate()
    assert sum(second.converted.values()) == 18
    assert second.complete
    assert second.after["total"] == 30
    claimed = []
    while (job := queue.next()) is not None:
        claimed.append(job.payload["n"])
        job.complete()
    held = collection.find_one({"lease_token": {"$type": "string"}})
    assert sorted([*claimed, held["payload"]["n"]]) == list(range(30))  # each job once
    expected = sorted(range(30), key=lambda n: (-(n % 3), n))
    expected.remove(held["payload"]["n"])
    assert claimed == expected


def test_a_killed_migration_process_resumes(mongodb_uri, collection) -> None:
    jobs = 600
    collection.insert_many(
        [{**legacy07.DEFAULT_INSERT, "payload": {"n": n}} for n in range(jobs)], ordered=True
    )
    command = [
        *(sys.executable, "-m", "mongoqueue", "--uri", mongodb_uri),
        *("--db", collection.database.name, "--collection", collection.name),
        *("migrate", "--batch-size", "1"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: collection.count_documents({"state": "ready"}) >= 5, timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    done = collection.count_documents({"state": "ready"})
    assert 0 < done < jobs, "the migration was not interrupted half-way"
    report = migrate(collection)
    assert sum(report.converted.values()) == jobs - done
    assert report.complete
    assert report.after["total"] == jobs
    queue = MongoQueue(collection, "new", retry=NO_BACKOFF)
    seen = [job.payload["n"] for job in iter(queue.next, None)]
    assert seen == list(range(jobs))  # every job once, first in first out


def test_async_queue_detects_and_migrates(mongodb_uri, collection) -> None:
    legacy07.put(collection, {"n": 1})
    legacy07.put(collection, {"n": 2}, priority=1)

    async def body() -> list[int]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        try:
            jobs = client[collection.database.name][collection.name]
            queue = AsyncMongoQueue(jobs, "a", retry=NO_BACKOFF)
            with pytest.raises(OldFormatDocuments):
                await queue.next()
            dry = await queue.migrate(dry_run=True)
            assert dry.dry_run
            assert dry.converted == {"waiting": 0, "failed": 0, "running": 0}
            assert dry.after["waiting"] == 2
            report = await queue.migrate()
            assert report.converted["waiting"] == 2
            seen = []
            while (job := await queue.next()) is not None:
                seen.append(job.payload["n"])
            return seen
        finally:
            await client.close()

    assert asyncio.run(body()) == [2, 1]


def test_a_current_queue_has_nothing_to_migrate(collection) -> None:
    queue = MongoQueue(collection, "new", retry=NO_BACKOFF)
    queue.put({"n": 1})
    before = list(collection.find())
    report = queue.migrate()
    assert report.converted == {"waiting": 0, "failed": 0, "running": 0}
    assert report.before["current"] == report.after["current"] == 1
    assert report.complete
    assert list(collection.find()) == before


def test_the_detection_query_is_served_by_the_claim_index(client, collection) -> None:
    queue = MongoQueue(collection, "new", retry=NO_BACKOFF)
    queue.put_many([{"n": n} for n in range(300)])
    queue.next()
    explained = collection.database.command(
        "explain",
        {"find": collection.name, "filter": mops.OLD_FORMAT, "projection": {"_id": 1}, "limit": 1},
        verbosity="executionStats",
    )
    stats = explained["executionStats"]
    assert stats["totalKeysExamined"] <= 1  # not one key per job
    assert stats["totalDocsExamined"] == 0


def test_a_document_changed_after_it_was_read_is_not_converted(collection) -> None:
    """The fence of each conversion: its filter is the document as it was read."""
    legacy07.put(collection, {"n": 1})
    docs = list(collection.aggregate(mops.survey_pipeline()))
    batch = mops.Batch(docs, max_attempts=3, lease_ms=30_000)
    assert len(batch.requests["waiting"]) == 1
    legacy07.next_job(collection, "old-still-running")  # claimed by a 0.7 consumer meanwhile
    assert collection.bulk_write(batch.requests["waiting"]).modified_count == 0
    report = migrate(collection)  # reads it again: now it is a running job
    assert report.converted == {"waiting": 0, "failed": 0, "running": 1}
    assert collection.find_one()["locked_by"] == "old-still-running"


class _OldConsumerMeanwhile(monitoring.CommandListener):
    """Before each conversion update is sent, a 0.7 consumer reports progress on the job."""

    def __init__(self, collection: Collection[Any], job_id: Any) -> None:
        self.collection, self.job_id, self.count = collection, job_id, 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "update":
            self.count += 1
            legacy07.progress(self.collection, self.job_id, "old", self.count)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_documents_that_keep_changing_are_reported_not_converted(mongodb_uri, collection) -> None:
    legacy07.put(collection, {"n": 1})
    legacy07.put(collection, {"n": 2})
    held = legacy07.next_job(collection, "old")
    listener = _OldConsumerMeanwhile(collection, held["_id"])
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, event_listeners=[listener])
    try:
        with pytest.raises(MigrationError, match="old consumers still running") as caught:
            migrate(client[collection.database.name][collection.name])
    finally:
        client.close()
    assert "1 document of" in str(caught.value)
    assert listener.count >= 2  # it tried again in another pass
    left = collection.find_one({"_id": held["_id"]})
    assert "state" not in left  # never converted under the old consumer's feet
    assert left["progress"] == listener.count
    assert collection.count_documents({"state": "ready"}) == 1  # the other job was
