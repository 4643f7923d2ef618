"""Isolation and reliability with real OS processes racing on one collection."""

from __future__ import annotations

import pytest

from mongoqueue import NO_BACKOFF, Job, LeaseLost, MongoQueue
from tests.helpers import check_race, kill_holding_consumer, spawn_consumer, wait_for


def test_four_processes_race_without_overlap(mongodb_uri, collection) -> None:
    jobs = 120
    queue = MongoQueue(collection, "producer", retry=NO_BACKOFF)
    ids = {str(i) for i in queue.put_many([{"n": n} for n in range(jobs)])}
    db, coll = collection.database.name, collection.name
    procs = [
        spawn_consumer("race", mongodb_uri, db, coll, f"consumer-{i}", str(i)) for i in range(4)
    ]
    check_race(procs, ids)
    assert queue.stats()["total"] == 0


def test_killed_consumer_job_comes_back(mongodb_uri, collection) -> None:
    queue = MongoQueue(collection, "survivor", timeout=2, retry=NO_BACKOFF)
    job_id = queue.put({"work": "important"})
    proc = spawn_consumer("hold", mongodb_uri, collection.database.name, collection.name, "2")
    claim = kill_holding_consumer(proc)
    assert claim["_id"] == job_id

    assert queue.next() is None  # still leased to the dead consumer
    again = wait_for(queue.next, timeout=30)  # delivered again once the lease expired
    assert again.id == job_id
    assert again.attempts == 1
    assert again.payload == {"work": "important"}

    stale = Job(queue, claim)  # the dead consumer's handle
    with pytest.raises(LeaseLost, match="claimed again by 'survivor'"):
        stale.complete()
    again.complete()
    assert queue.stats()["total"] == 0
