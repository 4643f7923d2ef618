"""Worker and AsyncWorker in this process (the acceptance tests run them as real processes).

Most cases run against both workers through the ``workers`` fixture
(``tests.worker_twins``); the last ones are about what only one of them has.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from typing import Any

import pytest

import mongoqueue.aio
import mongoqueue.aio_worker
import mongoqueue.heartbeat
import mongoqueue.queue
import mongoqueue.waiting
from mongoqueue import AsyncJob, Job, LeaseLost, MongoQueue, QueueUnavailable
from mongoqueue import operations as ops
from mongoqueue.worker import EXIT_OK, EXIT_UNAVAILABLE
from tests.helpers import wait_for


def _held(collection):
    return collection.find_one({"lease_token": {"$type": "string"}})


@pytest.fixture
def producer(collection) -> MongoQueue:
    return MongoQueue(collection, "producer")


# ------------------------------------------------------------------ both workers


def test_completes_on_return_and_records_the_traceback(workers, producer, collection) -> None:
    producer.put({"ok": True})
    bad = producer.put({"ok": False})

    def check(job) -> None:
        if not job.payload["ok"]:
            raise ValueError("no good")

    worker = workers.worker(workers.handler(check), burst=True)
    assert workers.run(worker) == EXIT_OK
    assert worker.counts["completed"] == 1
    assert worker.counts["failed"] == 1
    (left,) = collection.find()
    assert left["_id"] == bad
    assert left["state"] == "failed"
    assert "Traceback" in left["last_error"]
    assert "in check" in left["last_error"]
    assert left["last_error"].rstrip().endswith("ValueError: no good")


def test_a_handler_may_settle_its_job_itself(workers, producer, collection) -> None:
    producer.put({"n": 1})

    async def complete_async(job: AsyncJob) -> None:
        await job.complete()

    handler = workers.pick(lambda job: job.complete(), complete_async)
    worker = workers.worker(handler, burst=True)
    assert workers.run(worker) == EXIT_OK
    assert worker.counts == {**dict.fromkeys(worker.counts, 0), "completed": 1}
    assert collection.count_documents({}) == 0


def test_runs_concurrency_jobs_at_once(workers, producer, collection) -> None:
    producer.put_many([{"n": n} for n in range(3)])
    started: list[object] = []
    all_in = threading.Event()

    def arrive(job) -> None:
        started.append(job.id)
        if len(started) == 3:
            all_in.set()

    def handle(job: Job) -> None:
        arrive(job)
        assert all_in.wait(20)

    async def handle_async(job: AsyncJob) -> None:
        arrive(job)
        deadline = time.monotonic() + 20
        while not all_in.is_set():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)

    worker = workers.worker(workers.pick(handle, handle_async), concurrency=3, burst=True)
    assert workers.run(worker) == EXIT_OK
    assert worker.counts["completed"] == 3  # each saw all three started: they ran together


def test_heartbeats_keep_a_job_held_past_its_lease(workers, producer, collection) -> None:
    producer.put({"n": 1})
    rival = MongoQueue(collection, "rival")
    lease = 1.0
    worker = workers.worker(workers.sleeping(3 * lease), timeout=lease, burst=True)
    runner = workers.start(worker)
    first = wait_for(lambda: _held(collection))
    # The lease is 1 s and the job takes 3 s: only heartbeats keep it held.
    while collection.count_documents({}) > 0:
        assert rival.next() is None
        time.sleep(0.05)
    assert runner.join() == EXIT_OK
    assert first["locked_by"] == "worker-1"
    assert worker.counts["completed"] == 1


def test_hard_limit_abandons_and_moves_on(workers, producer, collection) -> None:
    producer.put({"hang": True}, priority=1)
    producer.put({"hang": False})
    release = threading.Event()
    hang = workers.waiting(release)
    done = workers.handler(lambda job: None)

    def handle(job: Job) -> None:
        (hang if job.payload["hang"] else done)(job)

    async def handle_async(job: AsyncJob) -> None:
        await (hang if job.payload["hang"] else done)(job)

    worker = workers.worker(workers.pick(handle, handle_async), hard_limit=0.3, burst=True)
    try:
        assert workers.run(worker) == EXIT_OK
    finally:
        release.set()
    assert worker.counts["abandoned"] == 1
    assert worker.counts["completed"] == 1
    (hung,) = collection.find()
    assert hung["state"] == "failed"
    assert "hard limit of 0.3s" in hung["last_error"]


def test_stop_lets_a_running_job_finish_within_the_grace_period(
    workers, producer, collection, caplog
) -> None:
    producer.put({"n": 1})
    release = threading.Event()
    worker = workers.worker(workers.waiting(release), grace=30)
    with caplog.at_level(logging.INFO, logger="mongoqueue.worker"):
        runner = workers.start(worker)
        try:
            # Running, not just held: a prefetching worker holds a job before it starts.
            wait_for(lambda: worker.running == 1)
            worker.stop()
            wait_for(lambda: "waiting up to 30.0s for 1 running job(s)" in caplog.text)
            release.set()  # the job finishes during the grace period
            assert runner.join() == EXIT_OK
        finally:
            release.set()
    assert worker.counts["completed"] == 1
    assert collection.count_documents({}) == 0


def test_stop_releases_the_jobs_still_running_after_the_grace_period(
    workers, producer, collection
) -> None:
    producer.put({"n": 1})
    release = threading.Event()
    worker = workers.worker(workers.waiting(release), grace=0.2)
    runner = workers.start(worker)
    try:
        wait_for(lambda: worker.running == 1)  # running, not just held (prefetch)
        worker.stop()
        assert runner.join() == EXIT_OK
    finally:
        release.set()
    assert worker.counts["released"] == 1
    job = MongoQueue(collection, "next").next()
    assert job is not None
    assert job.attempts == 0


def test_stop_before_run_exits_at_once(workers, producer, collection) -> None:
    producer.put({"n": 1})
    worker = workers.worker(workers.handler(lambda job: None))
    worker.stop()
    assert workers.run(worker) == EXIT_OK
    assert worker.counts == dict.fromkeys(worker.counts, 0)
    assert not _held(collection)
    assert collection.find_one()["attempts"] == 0


def test_idle_worker_is_woken_by_a_put(workers, collection, monkeypatch) -> None:
    # Without a wake-up the worker would re-check only after its 30 s wait.
    monkeypatch.setattr(mongoqueue.waiting, "RECHECK_SECONDS", 30.0)
    monkeypatch.setattr(mongoqueue.waiting, "EMPTY_RECHECK_SECONDS", 30.0)
    done = threading.Event()
    worker = workers.worker(workers.handler(lambda job: done.set()), idle_wait=30)
    runner = workers.start(worker)
    try:
        wait_for(lambda: collection.index_information().get(ops.CLAIM_INDEX.document["name"]))
        start = time.monotonic()
        MongoQueue(collection, "producer").put({"n": 1})
        assert done.wait(20)
        assert time.monotonic() - start < 15  # woken, not waiting out its 30 s wait
    finally:
        worker.stop()
        runner.join(timeout=40)


def test_reconnects_with_a_growing_pause_while_mongodb_is_unavailable(
    workers, producer, collection, caplog
) -> None:
    producer.put({"n": 1})
    worker = workers.worker(workers.handler(lambda job: None), burst=True)
    claim = worker.queue.next
    outages = [QueueUnavailable("server down (test)")] * 2

    def next_sync(wait: float | None = None) -> Job | None:
        if outages:
            raise outages.pop()
        return claim(wait)

    async def next_async(wait: float | None = None) -> AsyncJob | None:
        if outages:
            raise outages.pop()
        return await claim(wait)

    worker.queue.next = workers.pick(next_sync, next_async)
    with caplog.at_level(logging.WARNING, logger="mongoqueue.worker"):
        assert workers.run(worker) == EXIT_OK
    assert worker.counts["completed"] == 1
    assert "server down (test); retrying in 0.5s" in caplog.text
    assert "server down (test); retrying in 1.0s" in caplog.text


def test_the_observer_hears_each_settled_job_and_its_errors_are_contained(
    workers, producer, collection, caplog
) -> None:
    producer.put({"ok": True}, priority=1)
    producer.put({"ok": False})
    heard: list[tuple[object, str, float]] = []

    def observer(job, outcome: str, seconds: float) -> None:
        heard.append((job.payload["ok"], outcome, seconds))
        raise ValueError("observer bug")  # logged; the worker goes on

    def check(job) -> None:
        if not job.payload["ok"]:
            raise RuntimeError("bad job")

    worker = workers.worker(workers.handler(check), burst=True, observer=observer)
    with caplog.at_level(logging.ERROR, logger="mongoqueue.worker"):
        assert workers.run(worker) == EXIT_OK
    # Completions are acknowledged in batches a few ms later: compare without order.
    assert sorted((ok, outcome) for ok, outcome, _ in heard) == [
        (False, "failed"),
        (True, "completed"),
    ]
    assert all(seconds >= 0 for _, _, seconds in heard)
    assert caplog.text.count("the worker's observer failed") == 2
    assert worker.counts["completed"] == 1


# pymongo's async monitor leaks its socket when the client is closed during a
# connection attempt (it closes it on OSError only, not on cancellation): let
# the socket's ResourceWarning pass, and collect it here rather than in a later test.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_unreachable_server_at_start(workers) -> None:
    uri = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"
    worker = workers.worker(workers.handler(print), uri=uri)
    assert workers.run(worker) == EXIT_UNAVAILABLE
    del worker
    gc.collect()


# ------------------------------------------------------------------ the sync worker


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


# ------------------------------------------------------------------ the async worker


@pytest.fixture
def async_workers(collection, mongodb_uri):
    from tests.worker_twins import AsyncWorkers

    twin = AsyncWorkers(collection, mongodb_uri)
    yield twin
    twin.close()


def test_hard_limit_cancels_the_handler_before_recording_the_error(
    async_workers, producer, collection
) -> None:
    producer.put({"n": 1})
    seen: list[str] = []

    async def handler(job: AsyncJob) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            await asyncio.sleep(0.2)  # cleanup that awaits: the job is still held meanwhile
            seen.append("still held" if _held(collection) else "not held")
            raise

    worker = async_workers.worker(handler, hard_limit=0.3, burst=True)
    assert async_workers.run(worker) == EXIT_OK
    assert seen == ["cancelled", "still held"]
    assert worker.counts["abandoned"] == 1
    (job,) = collection.find()
    assert job["state"] == "failed"
    assert "hard limit of 0.3s" in job["last_error"]


def test_a_handler_that_ignores_cancellation_is_left_behind(
    async_workers, producer, collection, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(mongoqueue.aio_worker, "CANCEL_WAIT_SECONDS", 0.2)
    producer.put({"n": 1}, priority=1)
    producer.put({"n": 2})
    release = threading.Event()

    async def stubborn(job: AsyncJob) -> None:
        if job.payload["n"] == 2:
            return
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # refuses to stop
                await asyncio.sleep(0.01)

    worker = async_workers.worker(stubborn, hard_limit=0.3, burst=True)
    with caplog.at_level(logging.INFO, logger="mongoqueue.worker"):
        runner = async_workers.start(worker)
        try:
            # The worker moved on: job 2 done, job 1 failed, while the handler still runs.
            wait_for(lambda: collection.count_documents({"state": "failed"}) == 1)
            wait_for(lambda: collection.count_documents({}) == 1)
            assert worker.counts["abandoned"] == 1
            # Counted just after the delete returns: poll rather than race it.
            wait_for(lambda: worker.counts["completed"] == 1)
        finally:
            release.set()
        assert runner.join() == EXIT_OK
    assert "did not stop within 0.2s of being cancelled" in caplog.text
    assert "result discarded" in caplog.text


def test_a_cancelled_error_of_the_handler_itself_is_a_failure(
    async_workers, producer, collection
) -> None:
    producer.put({"n": 1})

    async def handler(job: AsyncJob) -> None:
        raise asyncio.CancelledError("not the worker's")

    worker = async_workers.worker(handler, burst=True)
    assert async_workers.run(worker) == EXIT_OK
    assert worker.counts["failed"] == 1
    assert "CancelledError" in collection.find_one()["last_error"]


def test_cancelling_run_releases_the_running_jobs(async_workers, producer, collection) -> None:
    producer.put({"n": 1})
    started = asyncio.Event()

    async def handler(job: AsyncJob) -> None:
        started.set()
        await asyncio.sleep(60)

    worker = async_workers.worker(handler, grace=30)
    client = async_workers._clients.pop(id(worker.queue))

    async def main() -> None:
        try:
            task = asyncio.create_task(worker.run())
            await asyncio.wait_for(started.wait(), 20)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await client.close()

    asyncio.run(main())
    assert worker.counts["released"] == 1
    assert not _held(collection)
    assert collection.find_one()["attempts"] == 0


def test_a_failing_heartbeat_pass_is_logged_and_the_heartbeats_go_on(
    workers, producer, collection, monkeypatch, caplog
) -> None:
    """A bug in one pass of the heartbeat loop (thread or task) does not end the loop:
    the job is still beaten past its lease and completed once."""
    producer.put({"n": 1})
    owner = mongoqueue.aio_worker.AsyncWorker if workers.kind == "async" else None
    failures = [RuntimeError("heartbeat bug")] * 3
    if owner is not None:
        original = owner._beat

        async def flaky_async(self) -> None:
            if failures:
                raise failures.pop()
            await original(self)

        monkeypatch.setattr(owner, "_beat", flaky_async)
    else:
        beat = mongoqueue.heartbeat.Heartbeat.beat

        def flaky(self) -> None:
            if failures:
                raise failures.pop()
            beat(self)

        monkeypatch.setattr(mongoqueue.heartbeat.Heartbeat, "beat", flaky)
    worker = workers.worker(workers.sleeping(2.5), timeout=1.5, heartbeat=0.3, burst=True)
    with caplog.at_level(logging.ERROR, logger="mongoqueue.worker"):
        assert workers.run(worker) == EXIT_OK
    assert caplog.text.count("heartbeat pass failed; the heartbeats go on") == 3
    assert worker.counts["completed"] == 1
    assert collection.count_documents({}) == 0


def test_stop_from_the_event_loop(async_workers, producer, collection) -> None:
    producer.put_many([{"n": n} for n in range(3)])

    async def handler(job: AsyncJob) -> None:
        worker.stop()  # from inside a handler: the worker finishes this job, claims no more

    worker = async_workers.worker(handler)
    assert async_workers.run(worker) == EXIT_OK
    assert worker.counts["completed"] == 1
    assert collection.count_documents({}) == 2


# ------------------------------------------------------------------ what the worker reports


def test_a_job_the_handler_settled_itself_is_reported_as_what_happened(
    workers, producer, collection
) -> None:
    producer.put({"do": "error"}, priority=2)
    producer.put({"do": "release"}, priority=1)
    producer.put({"do": "nothing"})
    released: list[object] = []

    def act(job) -> Any:
        if job.payload["do"] == "error":
            return job.error("the handler's own error")
        if job.payload["do"] == "release" and not released:
            released.append(job.id)
            return job.release()
        return None

    async def act_async(job) -> None:
        result = act(job)
        if result is not None:
            await result

    worker = workers.worker(workers.pick(act, act_async), burst=True, max_attempts=1)
    assert workers.run(worker) == EXIT_OK
    # error -> failed; release -> released, then delivered again and completed; nothing -> completed
    assert worker.counts == {
        "completed": 2,
        "retried": 0,
        "failed": 1,
        "abandoned": 0,
        "released": 1,
        "lost": 0,
    }
    (left,) = collection.find()
    assert left["last_error"] == "the handler's own error"


def test_a_job_whose_lease_was_taken_over_while_it_ran_is_reported_lost(
    workers, producer, collection, caplog
) -> None:
    job_id = producer.put({"n": 1})
    release = threading.Event()
    heard: list[str] = []
    worker = workers.worker(
        workers.waiting(release),
        timeout=3,
        heartbeat=0.2,
        observer=lambda job, outcome, seconds: heard.append(outcome),
    )
    with caplog.at_level(logging.WARNING, logger="mongoqueue.worker"):
        runner = workers.start(worker)
        try:
            wait_for(lambda: _held(collection))
            # What a consumer that outlived a SIGSTOP sees: another claim took the job.
            collection.update_one(
                {"_id": job_id}, {"$set": {"lease_token": "rival-token", "locked_by": "rival"}}
            )
            wait_for(lambda: "heartbeat: cannot extend the lease" in caplog.text)
            release.set()
            wait_for(lambda: worker.counts["lost"] == 1)
        finally:
            release.set()
            worker.stop()
            runner.join()
    assert worker.counts["completed"] == 0
    assert heard == ["lost"]  # what metrics export as leases_lost, not jobs_completed
    assert collection.find_one({"_id": job_id})["locked_by"] == "rival"


def test_burst_exits_when_nothing_is_due_for_it(workers, producer, collection) -> None:
    producer.put({"n": "later"}, delay=600)
    producer.put({"n": "now"})
    other = MongoQueue(collection, "other-worker", timeout=600)
    producer.put({"n": "held by another worker"}, priority=5)
    assert other.next().payload["n"] == "held by another worker"
    worker = workers.worker(workers.handler(lambda job: None), burst=True)
    runner = workers.start(worker)
    assert runner.join(timeout=20) == EXIT_OK
    assert worker.counts["completed"] == 1
    assert collection.count_documents({}) == 2  # the delayed job and the other worker's
