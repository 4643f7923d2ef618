"""The bounded attempt history a job keeps: error() and lease expiry each append one entry."""

from __future__ import annotations

from datetime import datetime, timezone

from mongoqueue import NO_BACKOFF, MongoQueue
from mongoqueue import operations as ops


def test_each_failure_is_logged_with_time_worker_and_error(collection) -> None:
    queue = MongoQueue(collection, "worker-a", timeout=30, max_attempts=50, retry=NO_BACKOFF)
    job_id = queue.put({"n": 1})
    for n in range(ops.ATTEMPTS_KEPT + 2):
        job = queue.next()
        assert job is not None
        job.error(f"boom {n}\n" + "x" * (ops.ATTEMPT_ERROR_CHARS + 50))
    doc = collection.find_one({"_id": job_id})
    log = doc["attempts_log"]
    assert len(log) == ops.ATTEMPTS_KEPT  # bounded: the two oldest dropped out
    assert [entry["attempt"] for entry in log] == list(range(3, ops.ATTEMPTS_KEPT + 3))
    assert all(entry["worker"] == "worker-a" for entry in log)
    assert log[-1]["error"].startswith(f"boom {ops.ATTEMPTS_KEPT + 1}\n")
    assert len(log[-1]["error"]) == ops.ATTEMPT_ERROR_CHARS
    assert len(doc["last_error"]) > ops.ATTEMPT_ERROR_CHARS  # last_error keeps it all
    assert log[0]["at"] <= log[-1]["at"]


def test_error_without_message_and_lease_expiry_are_logged(collection) -> None:
    queue = MongoQueue(collection, "worker-a", timeout=30, max_attempts=5, retry=NO_BACKOFF)
    job_id = queue.put({"n": 1})
    job = queue.next()
    assert job is not None
    job.error()
    job = queue.next()
    assert job is not None
    # The lease runs out: repair() records it as a failed delivery by worker-a.
    past = datetime(2000, 1, 1, tzinfo=timezone.utc)
    collection.update_one({"_id": job_id}, {"$set": {"lease_expires_at": past}})
    assert queue.repair() == 1
    log = collection.find_one({"_id": job_id})["attempts_log"]
    assert [(e["attempt"], e["worker"]) for e in log] == [(1, "worker-a"), (2, "worker-a")]
    assert log[0]["error"] is None
    assert log[1]["error"] == "lease expired (held by worker-a)"
