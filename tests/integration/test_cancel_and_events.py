"""cancel() of a waiting job, and the per-process event counts, for both twins."""

from __future__ import annotations

from mongoqueue import NO_BACKOFF
from tests.helpers import expire_lease_of


def test_cancel_deletes_only_a_waiting_job(api, collection) -> None:
    queue = api.queue("consumer-1", timeout=30, max_attempts=1, retry=NO_BACKOFF)
    due = queue.put({"n": 1})
    delayed = queue.put({"n": 2}, delay=600)
    running_id = queue.put({"n": 3})
    failing_id = queue.put({"n": 4})
    assert queue.cancel(due) is True
    assert queue.cancel(due) is False  # already gone
    assert queue.cancel(delayed) is True
    running = queue.next()
    assert running.id == running_id
    failing = queue.next()
    failing.error("no")
    assert queue.cancel(running_id) is False  # held: not touched
    assert queue.cancel(failing_id) is False  # failed: not touched
    assert {doc["_id"] for doc in collection.find()} == {running_id, failing_id}
    running.complete()  # the holder still holds it


def test_cancel_takes_a_job_handle(api, collection) -> None:
    queue = api.queue("consumer-1", timeout=30, retry=NO_BACKOFF)
    queue.put({"n": 1})
    snapshot = queue.get(collection.find_one()["_id"])
    assert queue.cancel(snapshot) is True
    assert collection.count_documents({}) == 0


def test_events_count_puts_and_recorded_expiries(api, collection) -> None:
    queue = api.queue("consumer-1", timeout=30, max_attempts=5, retry=NO_BACKOFF)
    queue.put({"n": 1})
    queue.put_many([{"n": 2}, {"n": 3}])
    assert queue.events.put == 3
    held = [queue.next(), queue.next()]
    for job in held:
        expire_lease_of(collection, job.id)
    other = api.queue("consumer-2", timeout=30, max_attempts=5, retry=NO_BACKOFF)
    other.next()  # meets one expired lease and records it, then claims
    assert other.events.lease_expiries >= 1
    assert other.events.lease_expiries + other.repair() == 2
    assert other.events.lease_expiries == 2
    assert queue.events.lease_expiries == 0
