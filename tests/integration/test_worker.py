"""The Worker in this process (the acceptance tests run it as a real process)."""

from __future__ import annotations

import threading
import time

import pytest

import mongoqueue.queue
from mongoqueue import NO_BACKOFF, Job, LeaseLost, MongoQueue
from mongoqueue.worker import EXIT_OK, EXIT_UNAVAILABLE, Worker
from tests.helpers import wait_for


@pytest.fixture
def failing_queue(collection) -> MongoQueue:
    return MongoQueue(collection, "worker-1", timeout=5, max_attempts=1, retry=NO_BACKOFF)


def _worker(queue: MongoQueue, handler, **options) -> Worker:
    return Worker(queue, handler, handle_signals=False, idle_wait=0.2, **options)


def test_completes_on_return_and_records_the_traceback(failing_queue, collection) -> None:
    failing_queue.put({"ok": True})
    bad = failing_queue.put({"ok": False})

    def handler(job: Job) -> None:
        if not job.payload["ok"]:
            raise ValueError("no good")

    worker = _worker(failing_queue, handler, burst=True)
    assert worker.run() == EXIT_OK
    assert worker.counts["completed"] == 1
    assert worker.counts["failed"] == 1
    (left,) = collection.find()
    assert left["_id"] == bad
    assert left["state"] == "failed"
    assert "Traceback" in left["last_error"]
    assert left["last_error"].rstrip().endswith("ValueError: no good")


def test_a_handler_may_settle_its_job_itself(failing_queue, collection) -> None:
    failing_queue.put({"n": 1})
    worker = _worker(failing_queue, lambda job: job.complete(), burst=True)
    assert worker.run() == EXIT_OK
    assert worker.counts == {"completed": 1, "failed": 0, "abandoned": 0, "released": 0, "lost": 0}
    assert collection.count_documents({}) == 0


def test_runs_concurrency_jobs_at_once(failing_queue, collection) -> None:
    failing_queue.put_many([{"n": n} for n in range(3)])
    barrier = threading.Barrier(3, timeout=20)
    worker = _worker(failing_queue, lambda job: barrier.wait(), concurrency=3, burst=True)
    assert worker.run() == EXIT_OK
    assert worker.counts["completed"] == 3  # each passed the barrier: all three ran together


def test_heartbeat_extends_the_lease_and_keeps_the_progress(queue) -> None:
    queue.put({"n": 1})
    job = queue.next()
    job.progress(7)
    before = job.lease_expires_at
    time.sleep(0.01)
    job.heartbeat()
    assert job.lease_expires_at > before
    assert job.progress_count == 7
    assert queue.get(job.id).progress_count == 7
    job.complete()
    with pytest.raises(LeaseLost):
        job.heartbeat()


def test_hard_limit_abandons_and_moves_on(failing_queue, collection) -> None:
    failing_queue.put({"hang": True}, priority=1)
    failing_queue.put({"hang": False})
    release = threading.Event()

    def handler(job: Job) -> None:
        if job.payload["hang"]:
            release.wait(60)

    worker = _worker(failing_queue, handler, hard_limit=0.3, burst=True)
    try:
        assert worker.run() == EXIT_OK
    finally:
        release.set()
    assert worker.counts["abandoned"] == 1
    assert worker.counts["completed"] == 1
    (hung,) = collection.find()
    assert hung["state"] == "failed"
    assert "hard limit of 0.3s" in hung["last_error"]


def test_stop_releases_the_jobs_still_running_after_the_grace_period(queue, collection) -> None:
    queue.put({"n": 1})
    release = threading.Event()
    worker = _worker(queue, lambda job: release.wait(60), grace=0.2)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(worker.run()))
    runner.start()
    try:
        wait_for(lambda: collection.find_one({"lease_token": {"$type": "string"}}))
        worker.stop()
        runner.join(timeout=30)
    finally:
        release.set()
    assert codes == [EXIT_OK]
    assert worker.counts["released"] == 1
    job = queue.next()
    assert job is not None
    assert job.attempts == 0


def test_idle_worker_is_woken_by_a_put(queue, collection, monkeypatch) -> None:
    # Without a wake-up the worker would re-check only after its 30 s wait.
    monkeypatch.setattr(mongoqueue.queue, "RECHECK_SECONDS", 30.0)
    done = threading.Event()
    worker = Worker(queue, lambda job: done.set(), handle_signals=False, idle_wait=30)
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        wait_for(lambda: collection.index_information().get("mongoqueue_claim"))
        start = time.monotonic()
        MongoQueue(collection, "producer").put({"n": 1})
        assert done.wait(20)
        assert time.monotonic() - start < 15  # woken, not waiting out its 30 s wait
    finally:
        worker.stop()
        runner.join(timeout=40)


def test_unreachable_server_at_start() -> None:
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]] = MongoClient(
        "mongodb://127.0.0.1:1", serverSelectionTimeoutMS=200
    )
    try:
        queue = MongoQueue(client.db.jobs, "w")
        assert _worker(queue, print).run() == EXIT_UNAVAILABLE
    finally:
        client.close()
