"""The workers registry and the activity counts against a real server (both workers)."""

from __future__ import annotations

import os
import threading
import time

from pymongo import MongoClient, monitoring

from mongoqueue import NO_BACKOFF, MongoQueue, Worker
from mongoqueue.activity import ACTIVITY_COLLECTION, ActivityBuffer
from mongoqueue.presence import WorkerPresence, read_activity, read_workers
from mongoqueue.registry import WORKERS_COLLECTION, holder
from mongoqueue.worker import EXIT_OK
from tests.helpers import wait_for


def _mine(db, queue_name):
    return read_workers(db, queue_name)


def test_a_running_worker_is_registered_and_leaves_when_it_stops(workers, collection) -> None:
    db = collection.database
    producer = MongoQueue(collection, "producer")
    job_id = producer.put({"n": 1})
    release = threading.Event()
    worker = workers.worker(workers.waiting(release), concurrency=3, heartbeat=0.3)
    runner = workers.start(worker)
    try:
        row = wait_for(
            lambda: next((w for w in _mine(db, collection.name) if w.jobs == [job_id]), None)
        )
        assert row.id == worker.worker_id
        assert row.id.startswith(worker.queue.consumer_id + "#")
        assert row.consumer_id == worker.queue.consumer_id
        assert row.queues == [collection.name]
        assert row.concurrency == 3
        assert row.kind == ("Worker" if workers.kind == "sync" else "AsyncWorker")
        assert row.state == "alive"
        assert row.age is not None
        assert row.age < 5
        assert row.started is not None
        assert row.heartbeat >= row.started
        assert row.pid == os.getpid()
        held = collection.find_one({"_id": job_id})
        assert holder(job_id, held["locked_by"], _mine(db, collection.name)).id == row.id
    finally:
        release.set()
        worker.stop()
        assert runner.join() == EXIT_OK
    assert db[WORKERS_COLLECTION].count_documents({"queues": collection.name}) == 0
    assert "mq_workers_ttl" in db[WORKERS_COLLECTION].index_information()
    ttl = db[ACTIVITY_COLLECTION].index_information()["mq_activity_ttl"]
    assert ttl["expireAfterSeconds"] == 0


def test_completions_and_failures_are_counted_per_minute(workers, collection) -> None:
    producer = MongoQueue(collection, "producer")
    producer.put_many([{"ok": True}] * 7 + [{"ok": False}] * 2)

    def body(job) -> None:
        if not job.payload["ok"]:
            raise ValueError("no")

    worker = workers.worker(workers.handler(body), burst=True, max_attempts=2)
    assert workers.run(worker) == EXIT_OK
    assert worker.counts["completed"] == 7
    assert worker.counts["retried"] == 2
    assert worker.counts["failed"] == 2
    rows = read_activity(collection.database, collection.name, 5)
    assert sum(c["completed"] for _, c in rows) == 7
    assert sum(c["failed"] for _, c in rows) == 2
    assert sum(c["retried"] for _, c in rows) == 2


def test_one_registry_write_per_interval_not_per_job(collection, mongodb_uri) -> None:
    class Writes(monitoring.CommandListener):
        def __init__(self) -> None:
            self.registry = 0
            self.activity = 0

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            target = event.command.get(event.command_name)
            if event.command_name in ("findAndModify", "update") and target == WORKERS_COLLECTION:
                self.registry += 1
            if event.command_name == "update" and target == ACTIVITY_COLLECTION:
                self.activity += 1

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    writes = Writes()
    client: MongoClient = MongoClient(mongodb_uri, event_listeners=[writes])
    try:
        queue = MongoQueue(
            client[collection.database.name][collection.name], "w", timeout=30, retry=NO_BACKOFF
        )
        queue.put_many([{"n": n} for n in range(30)])
        worker = Worker(queue, lambda job: None, burst=True, heartbeat=5, handle_signals=False)
        started = time.monotonic()
        assert worker.run() == EXIT_OK
        elapsed = time.monotonic() - started
    finally:
        client.close()
    assert worker.counts["completed"] == 30
    beats = 2 + int(elapsed / 5)  # at start, one per interval, at stop
    assert 2 <= writes.registry <= beats < 30
    assert 1 <= writes.activity <= beats


def test_a_worker_that_stops_beating_is_shown_dead(collection) -> None:
    """As after kill -9: its document stays, its heartbeat ages past 3 intervals."""
    presence = WorkerPresence(
        collection.database,
        "ghost",
        kind="Worker",
        queue=collection.name,
        concurrency=1,
        interval=0.2,
        snapshot=lambda: (["job-1"], {}),
        buffer=ActivityBuffer(),
    )
    presence.beat()
    try:
        (row,) = _mine(collection.database, collection.name)
        assert row.id == presence.id
        assert row.jobs == ["job-1"]
        dead = wait_for(
            lambda: next(
                (w for w in _mine(collection.database, collection.name) if not w.alive), None
            )
        )
        assert dead.age is not None
        assert dead.age > 0.6
    finally:
        collection.database[WORKERS_COLLECTION].delete_one({"_id": presence.id})


def test_a_registry_that_cannot_be_written_never_stops_the_worker(caplog) -> None:
    down: MongoClient = MongoClient("mongodb://127.0.0.1:1/", serverSelectionTimeoutMS=200)
    buffer = ActivityBuffer()
    buffer.add("jobs", "completed")
    presence = WorkerPresence(
        down["mongoqueue"], "w", kind="Worker", queue="jobs", concurrency=1, interval=1.0,
        snapshot=lambda: ([], {}), buffer=buffer,
    )  # fmt: skip
    try:
        assert presence.beat() is False
        presence.stop()  # returns; the entry (if any) would show dead, then expire
    finally:
        down.close()
    assert caplog.text.count("workers registry: heartbeat of w#") == 2
    assert len(buffer) == 1  # kept for the next heartbeat


def test_the_dashboards_reads_are_served_by_their_indexes(collection) -> None:
    """The throughput window and a job's worker: keys examined = documents returned (+1)."""
    from datetime import timedelta

    from mongoqueue import activity, registry
    from mongoqueue.presence import server_time

    db = collection.database
    buckets = db[ACTIVITY_COLLECTION]
    buckets.create_indexes(activity.indexes())
    now = server_time(db)
    mine = f"{collection.name}-explain"
    counts = {
        (queue, activity.minute_of(now - timedelta(minutes=m))): {"completed": 1}
        for queue in (mine, f"{mine}-other", f"{mine}-third")
        for m in range(120)
    }
    buckets.bulk_write(activity.flush_requests(counts))
    try:
        query = activity.window_filter(mine, now - timedelta(minutes=14))
        plan = buckets.find(query).explain()["executionStats"]
        assert plan["nReturned"] == 15
        assert plan["totalKeysExamined"] <= plan["nReturned"] + 1
        workers = db[WORKERS_COLLECTION]
        workers.create_indexes(registry.indexes())
        workers.insert_many(
            [{"_id": f"{mine}-{n}", "consumer_id": f"{mine}-c{n}"} for n in range(50)]
        )
        plan = workers.find(registry.holders_filter([f"{mine}-c7", f"{mine}-c9"])).explain()
        stats = plan["executionStats"]
        assert stats["nReturned"] == 2
        assert stats["totalKeysExamined"] <= 4
    finally:
        buckets.delete_many({"queue": {"$regex": f"^{mine}"}})
        db[WORKERS_COLLECTION].delete_many({"_id": {"$regex": f"^{mine}"}})
