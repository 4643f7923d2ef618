"""The queue's rules, each checked on a real server, for both twins.

Every test runs twice, against MongoQueue and AsyncMongoQueue (the ``api``
fixture): ``api.queue(...)`` takes MongoQueue's arguments without the collection.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from mongoqueue import NO_BACKOFF, LeaseLost, MongoQueue, RetryPolicy
from tests.helpers import expire_lease_of, wait_for


@pytest.fixture
def queue(api):
    """The sync or the async queue, with no retry backoff."""
    return api.queue("consumer-1", timeout=30, max_attempts=3, retry=NO_BACKOFF)


# ---------------------------------------------------------------- isolation


def test_one_holder_at_a_time(api, queue, collection) -> None:
    queue.put({"a": 1})
    other = api.queue("consumer-2", timeout=30, retry=NO_BACKOFF)
    first = queue.next()
    assert first is not None
    assert other.next() is None  # held: not delivered twice


def test_stale_handle_cannot_change_the_job(api, queue, collection) -> None:
    queue.put({"a": 1})
    claim = queue.next().data  # what the first consumer holds
    expire_lease_of(collection, claim["_id"])
    other = api.queue("consumer-2", timeout=30, retry=NO_BACKOFF)
    fresh = other.next()
    assert fresh is not None
    assert fresh.id == claim["_id"]
    actions = ("complete", "release", "error", "progress")
    for action in actions:
        stale = api.job(queue, claim)  # a handle of the first claim
        with pytest.raises(LeaseLost, match="claimed again by 'consumer-2'"):
            getattr(stale, action)()
        assert not stale.held
    # The job is untouched by the stale handles and still held by the fresh one.
    current = queue.get(fresh.id)
    assert current.locked_by == "consumer-2"
    assert current.attempts == 1
    assert current.progress_count is None
    fresh.complete()
    assert queue.size() == 0


def test_every_claim_gets_a_fresh_token(queue) -> None:
    queue.put({"a": 1})
    first = queue.next()
    token = first._token
    first.release()
    second = queue.next()
    assert second._token is not None
    assert second._token != token
    with pytest.raises(LeaseLost):
        first.complete()


# ---------------------------------------------------------------- reliability


def test_expired_lease_is_claimed_again_without_repair(api, collection) -> None:
    queue = api.queue("c1", timeout=0.5, retry=NO_BACKOFF)
    queue.put({"a": 1})
    held = queue.next()
    assert queue.next() is None
    again = wait_for(queue.next, timeout=10)  # real time passes; nobody calls repair()
    assert again.id == held.id
    assert again.attempts == 1
    assert "lease expired" in again.last_error


def test_repair_frees_every_expired_lease(queue, collection) -> None:
    for i in range(3):
        queue.put({"i": i})
    jobs = [queue.next() for _ in range(3)]
    expire_lease_of(collection, jobs[0].id)
    expire_lease_of(collection, jobs[1].id)
    assert queue.counts()["lease_expired"] == 2
    assert queue.stats()["locked"] == 3  # an expired lease is still a lock until freed
    assert queue.repair() == 2
    stats = queue.stats()
    assert stats["locked"] == 1
    assert stats["available"] == 2
    for job in jobs[:2]:
        assert queue.get(job.id).attempts == 1
    assert queue.repair() == 0
    jobs[2].complete()


# ---------------------------------------------------------------- attempts


def test_max_attempts_fails_the_job(api, collection) -> None:
    queue = api.queue("c", timeout=30, max_attempts=2, retry=NO_BACKOFF)
    job_id = queue.put({"a": 1})
    queue.next().error("one")
    job = queue.next()
    job.error("two")
    assert job.state == "failed"
    assert queue.next() is None  # never delivered again
    failed = queue.failed()
    assert [j.id for j in failed] == [job_id]
    assert failed[0].attempts == 2
    assert failed[0].last_error == "two"
    assert queue.counts()["failed"] == queue.stats()["errors"] == 1
    assert queue.size() == 1  # a failed job still counts, as in 0.7.2


def test_expired_leases_count_towards_max_attempts(api, collection) -> None:
    queue = api.queue("c", timeout=30, max_attempts=2, retry=NO_BACKOFF)
    queue.put({"a": 1})
    expire_lease_of(collection, queue.next().id)
    job = queue.next()
    assert job.attempts == 1
    expire_lease_of(collection, job.id)
    assert queue.next() is None
    [failed] = queue.failed()
    assert failed.attempts == 2
    assert "lease expired" in failed.last_error


def test_release_keeps_attempts(queue) -> None:
    queue.put({"a": 1})
    for _ in range(5):
        queue.next().release()
    job = queue.next()
    assert job.attempts == 0


def test_requeue_one_and_all_and_purge(api, collection) -> None:
    queue = api.queue("c", timeout=30, max_attempts=1, retry=NO_BACKOFF)
    ids = [queue.put({"i": i}) for i in range(3)]
    for _ in ids:
        queue.next().error("boom")
    assert len(queue.failed()) == 3
    assert queue.requeue(ids[0]) == 1
    assert queue.requeue(ids[0]) == 0  # not failed any more
    job = queue.next()
    assert job.id == ids[0]
    assert job.attempts == 0
    job.complete()
    assert queue.requeue(queue.failed()[0]) == 1  # a Job is accepted too
    assert queue.requeue() == 1
    assert queue.counts()["failed"] == queue.stats()["errors"] == 0
    for _ in range(2):
        queue.next().error("again")
    assert queue.purge_failed() == 2
    assert queue.stats()["total"] == 0


def test_per_job_max_attempts(queue) -> None:
    queue.put({"a": 1}, max_attempts=1)
    job = queue.next()
    job.error("boom")
    assert job.state == "failed"


# ---------------------------------------------------------------- order


def test_priority_then_fifo(queue) -> None:
    queue.put({"n": "low-1"}, priority=0)
    queue.put({"n": "high-1"}, priority=5)
    queue.put({"n": "low-2"}, priority=0)
    queue.put({"n": "neg"}, priority=-3)
    queue.put({"n": "high-2"}, priority=5)
    queue.put({"n": "low-3"}, priority=0)
    order = []
    while (job := queue.next()) is not None:
        order.append(job.payload["n"])
        job.complete()
    assert order == ["high-1", "high-2", "low-1", "low-2", "low-3", "neg"]


def test_a_retried_job_goes_behind_and_a_released_job_keeps_its_place(queue) -> None:
    queue.put({"n": "a"})
    queue.put({"n": "b"})
    first = queue.next()
    assert first.payload["n"] == "a"
    first.release()
    again = queue.next()
    assert again.payload["n"] == "a"  # released: back to its place at the head
    again.error("boom")  # retried (no backoff): due now, behind b which was due before
    assert [queue.next().payload["n"] for _ in range(2)] == ["b", "a"]


def test_put_many_keeps_order_and_is_one_batch(queue) -> None:
    ids = queue.put_many([{"i": i} for i in range(50)])
    assert len(ids) == 50
    got = [queue.next().payload["i"] for _ in range(50)]
    assert got == list(range(50))


def test_put_many_rejects_before_writing(queue) -> None:
    with pytest.raises(TypeError, match=r"payloads\[2\]"):
        queue.put_many([{"a": 1}, {"a": 2}, ["not", "a", "mapping"]])
    assert queue.stats()["total"] == 0
    assert queue.put_many([]) == []


# ---------------------------------------------------------------- progress


def test_progress_extends_the_lease(api, collection) -> None:
    queue = api.queue("c1", timeout=2, retry=NO_BACKOFF)
    other = api.queue("c2", timeout=2, retry=NO_BACKOFF)
    queue.put({"a": 1})
    job = queue.next()
    first_end = job.lease_expires_at
    wait_for(lambda: queue._now() > first_end - timedelta(seconds=1), timeout=5)
    job.progress(7)
    assert job.progress_count == 7
    assert job.lease_expires_at > first_end
    # Past the first lease's end the job is still held: progress extended it.
    wait_for(lambda: queue._now() > first_end + timedelta(milliseconds=100), timeout=5)
    assert other.next() is None
    assert queue.get(job.id).progress_count == 7
    job.complete()


# ---------------------------------------------------------------- clocks


def test_times_are_utc_server_times(queue, client) -> None:
    queue.put({"a": 1})
    job = queue.next()
    server_now = client.admin.command("hello")["localTime"].replace(tzinfo=timezone.utc)
    assert job.locked_at.tzinfo is not None
    assert abs((server_now - job.locked_at).total_seconds()) < 5
    assert job.lease_expires_at - job.locked_at == timedelta(seconds=30)


def test_lease_expiry_ignores_local_clock(api, collection, monkeypatch) -> None:
    """A consumer whose wall clock is hours off still honours others' leases."""
    queue = api.queue("c1", timeout=30, retry=NO_BACKOFF)
    queue.put({"a": 1})
    job = queue.next()
    skewed = api.queue("skewed", timeout=30, retry=NO_BACKOFF)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3 * 3600)
    monkeypatch.setattr(f"{api.module}.datetime", _SkewedDatetime, raising=False)
    monkeypatch.setattr("mongoqueue._core.datetime", _SkewedDatetime, raising=False)
    assert skewed.next() is None  # three hours "later" locally; the lease still holds
    job.complete()


class _SkewedDatetime(datetime):
    @classmethod
    def now(cls, tz=None):  # type: ignore[override]
        return datetime.now(tz) + timedelta(hours=3)


# ---------------------------------------------------------------- payload isolation


def test_payload_is_a_snapshot(queue) -> None:
    payload = {"a": 1, "nested": {"b": [1, 2]}}
    queue.put(payload)
    payload["a"] = 2
    payload["nested"]["b"].append(3)
    job = queue.next()
    assert job.payload == {"a": 1, "nested": {"b": [1, 2]}}


def test_payload_apart_from_metadata(queue) -> None:
    payload = {"state": "failed", "attempts": 99, "lease_token": "x", "priority": 5, "_id": 1}
    queue.put(payload)
    job = queue.next()
    assert job.payload == payload
    assert job.attempts == 0
    assert job.priority == 0


# ---------------------------------------------------------------- delays and retries


def test_delay_and_run_at(queue) -> None:
    queue.put({"n": "later"}, delay=timedelta(seconds=1))
    queue.put({"n": "much-later"}, run_at=datetime.now(timezone.utc) + timedelta(hours=1))
    assert queue.next() is None
    assert queue.counts()["delayed"] == 2
    job = wait_for(queue.next, timeout=10)
    assert job.payload == {"n": "later"}
    assert queue.next() is None


def test_error_backoff_follows_the_policy(api, collection) -> None:
    policy = RetryPolicy(initial=2.0, maximum=60.0, jitter=False)
    queue = api.queue("c", timeout=30, max_attempts=5, retry=policy)
    queue.put({"a": 1})
    for failures in (1, 2, 3):
        job = queue.next()
        before = queue._now()
        job.error("boom")
        delay = job.available_at - before
        expected = policy.delay(failures, jitter=1.0)
        assert expected - timedelta(seconds=1) <= delay <= expected + timedelta(seconds=1)
        assert queue.next() is None  # not before its backoff
        collection.update_one({"_id": job.id}, {"$set": {"visible_at": before}})


def test_per_job_retry_policy(queue) -> None:
    queue.put({"a": 1}, retry=RetryPolicy(initial=3600, maximum=7200, jitter=False))
    job = queue.next()
    job.error("boom")
    assert job.available_at - queue._now() > timedelta(minutes=59)


# ---------------------------------------------------------------- dedup, batches, waiting


def test_key_deduplicates_while_active(queue) -> None:
    first = queue.put({"a": 1}, key="report-42")
    assert queue.put({"a": 2}, key="report-42") == first
    assert queue.size() == 1
    queue.next().complete()
    second = queue.put({"a": 3}, key="report-42")
    assert second != first


def test_next_batch(queue) -> None:
    queue.put_many([{"i": i} for i in range(7)])
    batch = queue.next_batch(5)
    assert [j.payload["i"] for j in batch] == [0, 1, 2, 3, 4]
    assert len({j._token for j in batch}) == 5
    assert queue.next_batch(5)[0].payload["i"] == 5
    for job in batch:
        job.complete()
    assert queue.stats()["locked"] == 2


def test_next_wait_returns_none_at_deadline(queue) -> None:
    start = time.monotonic()
    assert queue.next(wait=0.5) is None
    assert time.monotonic() - start >= 0.5


def test_next_wait_wakes_for_a_put(queue, collection) -> None:
    import threading

    producer = MongoQueue(collection, "producer")  # a sync producer in another thread
    timer = threading.Timer(0.3, lambda: producer.put({"late": True}))
    timer.start()
    try:
        job = queue.next(wait=20)
    finally:
        timer.join()
    assert job is not None
    assert job.payload == {"late": True}
