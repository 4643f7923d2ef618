"""Batch acknowledgements on the queue, prefetched claims, and prefetching workers."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from mongoqueue import InvalidArgumentType, MongoQueue
from mongoqueue.worker import EXIT_OK
from tests.helpers import wait_for


@pytest.fixture
def producer(collection) -> MongoQueue:
    return MongoQueue(collection, "producer")


def _take_over(collection, job_id: object) -> object:
    """The lease of ``job_id`` alone runs out (its expiry moved an hour back) and a
    rival claims it; returns the rival's job."""
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    collection.update_one({"_id": job_id}, {"$set": {"lease_expires_at": past, "visible_at": past}})
    rival = MongoQueue(collection, "rival", timeout=60)
    return wait_for(lambda: rival.next(), timeout=10)


# ------------------------------------------------------------------ queue (both twins)


def test_complete_many_completes_each_held_job_in_one_call(api, producer, collection) -> None:
    producer.put_many([{"n": n} for n in range(5)])
    queue = api.queue("c")
    jobs = queue.next_batch(5)
    assert queue.complete_many(jobs) == [True] * 5
    assert collection.count_documents({}) == 0
    assert all(not job.held for job in jobs)
    assert queue.complete_many(jobs) == [True] * 5  # as complete(): a second call does nothing


def test_complete_many_reports_a_taken_over_lease_and_completes_the_others(
    api, producer, collection
) -> None:
    producer.put_many([{"n": n} for n in range(3)])
    queue = api.queue("slow")
    jobs = queue.next_batch(3)
    taken = _take_over(collection, jobs[0].id)
    assert taken.payload == jobs[0].payload  # the first job is held by the rival now
    assert queue.complete_many(jobs) == [False, True, True]
    (left,) = collection.find()
    assert left["_id"] == jobs[0].id
    assert left["locked_by"] == "rival"  # the rival's hold is untouched
    assert not jobs[0].held


def test_complete_many_refuses_what_is_not_a_list_of_its_jobs(api, producer, collection) -> None:
    producer.put({"n": 1})
    queue = api.queue("c")
    other = api.queue("other")
    job = other.next()
    with pytest.raises(InvalidArgumentType, match="list of jobs"):
        queue.complete_many(job)
    with pytest.raises(InvalidArgumentType, match="claimed from this queue"):
        queue.complete_many([job])
    assert job.held


def test_next_batch_hold_claims_the_last_jobs_prefetched(api, producer, collection) -> None:
    producer.put_many([{"n": n} for n in range(4)])
    queue = api.queue("c")
    jobs = queue.next_batch(4, hold=3)
    assert [job.prefetched for job in jobs] == [False, True, True, True]
    assert queue.start_many(jobs[1:3]) == [True, True]
    assert [job.prefetched for job in jobs] == [False, False, False, True]
    stored = {doc["_id"]: doc.get("prefetched") is True for doc in collection.find()}
    assert [stored[job.id] for job in jobs] == [False, False, False, True]
    jobs[3].start()
    assert collection.count_documents({"prefetched": True}) == 0


def test_an_unstarted_prefetched_job_costs_no_attempt_when_its_lease_expires(
    api, producer, collection
) -> None:
    producer.put_many([{"n": n} for n in range(2)])
    queue = api.queue("dies", timeout=0.5)
    started, buffered = queue.next_batch(2, hold=1)
    assert buffered.prefetched
    assert not started.prefetched
    # The holder dies: both leases expire; a rival takes both.
    rival = MongoQueue(collection, "rival", timeout=60)
    first = wait_for(lambda: rival.next(), timeout=10)
    second = wait_for(lambda: rival.next(), timeout=10)
    attempts = {job.payload["n"]: job.attempts for job in (first, second)}
    assert attempts == {started.payload["n"]: 1, buffered.payload["n"]: 0}
    assert not second.prefetched
    assert not first.prefetched


def test_start_many_reports_a_lost_lease(api, producer, collection) -> None:
    producer.put_many([{"n": n} for n in range(2)])
    queue = api.queue("slow")
    jobs = queue.next_batch(2, hold=2)
    _take_over(collection, jobs[0].id)
    assert queue.start_many(jobs) == [False, True]
    assert not jobs[0].held
    assert jobs[1].held


# ------------------------------------------------------------------ prefetching workers


def test_a_stopping_worker_releases_its_buffer_without_counting_attempts(
    workers, producer, collection
) -> None:
    producer.put_many([{"n": n} for n in range(4)])
    release = threading.Event()
    worker = workers.worker(workers.waiting(release), concurrency=1, prefetch=3, grace=0.2)
    runner = workers.start(worker)
    try:
        wait_for(lambda: worker.running == 1 and len(worker._buffer) == 3)
        assert collection.count_documents({"prefetched": True}) == 3
        worker.stop()
        assert runner.join() == EXIT_OK
    finally:
        release.set()
    assert worker.counts["released"] == 1  # the running one, after the grace period
    docs = list(collection.find())
    assert len(docs) == 4
    assert all(doc["attempts"] == 0 and doc["lease_token"] is None for doc in docs)


def test_buffered_jobs_go_back_before_their_leases_could_expire(
    workers, producer, collection
) -> None:
    producer.put_many([{"n": n} for n in range(3)])
    release = threading.Event()
    worker = workers.worker(workers.waiting(release), concurrency=1, prefetch=2, timeout=1.5)
    runner = workers.start(worker)
    try:
        wait_for(lambda: worker.running == 1)
        # The buffer may hold jobs a third of the lease at most: they are released
        # (attempts unchanged) while the running job stays held by its heartbeats.
        wait_for(lambda: collection.count_documents({"lease_token": None}) == 2, timeout=10)
        time.sleep(2.0)  # longer than the lease: nothing expired meanwhile
        assert collection.count_documents({"attempts": {"$gt": 0}}) == 0
        assert collection.count_documents({"lease_token": {"$type": "string"}}) == 1
        worker.stop()
        release.set()
        assert runner.join() == EXIT_OK
    finally:
        release.set()


def test_batched_acknowledgements_settle_each_job_once(workers, producer, collection) -> None:
    producer.put_many([{"n": n} for n in range(60)])
    heard: list[int] = []
    lock = threading.Lock()

    def observer(job, outcome: str, seconds: float) -> None:
        with lock:
            heard.append(job.payload["n"])

    def handle(job) -> None:
        if job.payload["n"] % 20 == 7:
            raise RuntimeError("fails")

    worker = workers.worker(
        workers.handler(handle), concurrency=4, burst=True, observer=observer, max_attempts=1
    )
    assert workers.run(worker) == EXIT_OK
    assert sorted(heard) == list(range(60))
    assert worker.counts["completed"] == 57
    assert worker.counts["failed"] == 3
    assert collection.count_documents({}) == 3


def test_prefetch_zero_and_no_batching_is_the_old_worker(workers, producer, collection) -> None:
    producer.put_many([{"n": n} for n in range(5)])
    worker = workers.worker(
        workers.handler(lambda job: None), burst=True, prefetch=0, batch_acks=False
    )
    assert workers.run(worker) == EXIT_OK
    assert worker.counts["completed"] == 5
    assert worker._acks is None


@pytest.mark.parametrize("bad", [-1, 1001, 1.5, True])
def test_bad_prefetch_is_refused(workers, bad) -> None:
    from mongoqueue import MongoQueueError

    with pytest.raises(MongoQueueError, match="prefetch"):
        workers.worker(workers.handler(print), prefetch=bad)
