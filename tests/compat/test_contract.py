"""The original mongoqueue 0.7.2's contract, as code written for it sees it.

Two groups, each run on ``MongoQueue`` and ``AsyncMongoQueue`` (the ``api``
fixture): what 0.7.2's own ``test.py`` checks, written here as our own tests,
and every row of the audit of its public behaviour (README, "Compatibility with
0.7.2"): kept as it was, or different on purpose and tested as documented.
Queues are built as old code builds them: no ``retry`` argument.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from bson import ObjectId
from pymongo import MongoClient

from mongoqueue import (
    DEFAULT_RETRY,
    NO_BACKOFF,
    AsyncMongoQueue,
    InvalidArgument,
    InvalidArgumentType,
    Job,
    LeaseLost,
    MongoQueue,
    RetryPolicy,
)
from tests.helpers import expire_lease_of


@pytest.fixture
def queue(api):
    """A queue as 0.7.2's README makes one: ``MongoQueue(collection, consumer_id)``."""
    return api.queue("consumer_1")


def payload(n: int = 0) -> dict[str, Any]:
    return {"context_id": "alpha", "data": [1, 2, 3], "n": n, "more-data": time.time()}


# ------------------------------------------------------------------ what 0.7.2's test.py checks


def test_put_then_next_gives_the_payload_back(queue) -> None:
    sent = payload()
    queue.put(dict(sent))
    job = queue.next()
    assert job.payload == sent
    assert {k: job.payload[k] for k in sent} == sent


def test_next_on_an_empty_queue_is_none(queue) -> None:
    assert queue.next() is None


def test_higher_priority_first(queue) -> None:
    queue.put({"name": "alice"}, priority=1)
    queue.put({"name": "bob"}, priority=2)
    queue.put({"name": "mike"}, priority=0)
    assert [queue.next().payload["name"] for _ in range(3)] == ["bob", "alice", "mike"]


def test_complete_removes_the_job(queue) -> None:
    queue.put(payload())
    assert queue.size() == 1
    queue.next().complete()
    assert queue.size() == 0


def test_release_puts_the_job_back(queue) -> None:
    sent = payload()
    queue.put(sent)
    queue.next().release()
    assert queue.size() == 1
    assert queue.next().payload == sent


def test_stats_after_an_error_are_the_originals(queue) -> None:
    for n in range(5):
        queue.put(payload(n))
    queue.next().error("problem")
    assert queue.stats() == {"available": 5, "total": 5, "locked": 0, "errors": 0}


def test_an_exception_in_the_with_block_hands_the_job_back(queue) -> None:
    queue.put({"foobar": 1})
    job = queue.next()
    seen = []
    with pytest.raises(SyntaxError), job as data:  # noqa: PT012
        seen.append(data["payload"]["foobar"])
        raise SyntaxError
    assert seen == [1]
    again = queue.next()  # at once: no backoff by default
    assert again is not None
    assert again.data["attempts"] == 1
    assert "SyntaxError" in again.data["last_error"]


def test_a_with_block_that_succeeds_completes_the_job(queue) -> None:
    queue.put({"foobar": 1})
    with queue.next() as data:
        assert data["payload"]["foobar"] == 1
    assert queue.next() is None


# ------------------------------------------------------------------ defaults: no backoff


def test_the_default_retry_is_no_backoff(api) -> None:
    assert api.queue("c").retry == NO_BACKOFF
    assert MongoQueue.__init__.__kwdefaults__["retry"] == NO_BACKOFF
    assert AsyncMongoQueue.__init__.__kwdefaults__["retry"] == NO_BACKOFF
    assert DEFAULT_RETRY != NO_BACKOFF  # the backoff of the CLI worker, one argument away


def test_an_error_makes_the_job_available_at_once(queue) -> None:
    job_id = queue.put({"a": 1})
    assert queue.next().error("boom") is None
    assert queue.stats()["available"] == 1
    again = queue.next()
    assert again.job_id == job_id
    assert again.attempts == 1
    assert again.last_error == "boom"


def test_an_expired_lease_makes_the_job_available_at_once(queue, collection) -> None:
    job_id = queue.put({"a": 1})
    queue.next()
    expire_lease_of(collection, job_id)
    again = queue.next()
    assert again.job_id == job_id
    assert again.attempts == 1


def test_repair_leaves_expired_jobs_available(queue, collection) -> None:
    ids = [queue.put({"a": n}) for n in range(2)]
    queue.next()
    queue.next()
    for job_id in ids:
        expire_lease_of(collection, job_id)
    assert queue.repair() == 2  # 0.7.2 returned None (and freed one job per call)
    assert queue.stats() == {"available": 2, "locked": 0, "errors": 0, "total": 2}
    assert queue.counts()["waiting"] == 2
    assert {queue.next().job_id, queue.next().job_id} == set(ids)


def test_backoff_is_one_argument_away(api) -> None:
    queue = api.queue("c", retry=RetryPolicy(initial=600, jitter=False))
    queue.put({"a": 1})
    queue.next().error("boom")
    assert queue.next() is None  # backing off
    # stats() counts it as available, as 0.7.2 counted every unlocked job;
    # counts() says it is delayed.
    assert queue.stats() == {"available": 1, "locked": 0, "errors": 0, "total": 1}
    assert queue.counts()["delayed"] == 1


# ------------------------------------------------------------------ stats() and size()


def test_stats_has_exactly_the_original_keys(queue) -> None:
    assert queue.stats() == {"available": 0, "locked": 0, "errors": 0, "total": 0}


def test_stats_meanings(api) -> None:
    queue = api.queue("c", max_attempts=1)
    queue.put({"n": 1})
    queue.put({"n": 2}, delay=600)  # delayed: not locked, not failed, so available
    queue.put({"n": 3}, priority=9)
    queue.put({"n": 4}, priority=8)
    queue.next().error("fails for good")  # n=3: max attempts reached
    held = queue.next()  # n=4
    assert held.payload == {"n": 4}
    assert queue.stats() == {"available": 2, "locked": 1, "errors": 1, "total": 4}
    assert queue.size() == 4  # 0.7.2's size() counted every job, failed ones too
    assert queue.counts() == {
        "waiting": 1,
        "delayed": 1,
        "running": 1,
        "lease_expired": 0,
        "failed": 1,
        "completed": 0,
        "cancelled": 0,
        "total": 4,
    }


def test_an_expired_lease_is_still_locked_until_freed(queue, collection) -> None:
    job_id = queue.put({"a": 1})
    queue.next()
    expire_lease_of(collection, job_id)
    assert queue.stats()["locked"] == 1
    assert queue.counts()["lease_expired"] == queue.counts()["running"] == 1


def test_drop_max_attempts_deletes_only_failed_jobs(api) -> None:
    queue = api.queue("c", max_attempts=1)
    queue.put({"n": 1})
    queue.put({"n": 2})
    queue.next().error("boom")
    assert queue.drop_max_attempts() == 1
    assert queue.stats() == {"available": 1, "locked": 0, "errors": 0, "total": 1}


# ------------------------------------------------------------------ return values


def test_put_returns_the_job_id(queue) -> None:
    job_id = queue.put({"a": 1})
    assert isinstance(job_id, ObjectId)
    assert queue.next().job_id == job_id


def test_complete_returns_the_job_document_and_a_second_call_does_nothing(queue) -> None:
    job_id = queue.put({"a": 1})
    job = queue.next()
    done = job.complete()
    assert done["_id"] == job_id
    assert done["payload"] == {"a": 1}
    assert job.complete() is None  # 0.7.2's second find-and-modify matched nothing
    assert queue.size() == 0


def test_progress_and_release_return_the_job_document(queue) -> None:
    job_id = queue.put({"a": 1})
    job = queue.next()
    progressed = job.progress(5)
    assert progressed["_id"] == job_id
    assert progressed["progress"] == 5
    released = job.release()
    assert released["_id"] == job_id
    assert released["locked_by"] is None
    assert queue.next().attempts == 0  # release() does not count an attempt (0.7.2 did)


def test_a_handle_that_let_go_still_cannot_complete(queue) -> None:
    queue.put({"a": 1})
    job = queue.next()
    job.release()
    with pytest.raises(LeaseLost, match="already"):
        job.complete()  # 0.7.2 returned None silently: the job is not completed
    assert queue.size() == 1


def test_completing_inside_the_with_block(queue) -> None:
    queue.put({"a": 1})
    job = queue.next()
    with job:
        job.complete()
    assert queue.size() == 0


def test_an_error_recorded_inside_the_with_block_is_kept(queue) -> None:
    queue.put({"a": 1})
    job = queue.next()
    with job:
        job.error("not this one")  # no exception: leaving the block does nothing more
    again = queue.next()
    assert again.attempts == 1
    assert again.last_error == "not this one"


def test_clear_drops_the_collection_and_the_queue_stays_usable(api, collection) -> None:
    queue = api.queue("c")
    other = api.queue("other")  # has made the indexes before the clear
    queue.put({"a": 1}, key="k")
    other.put({"a": 2})
    collection.create_index("payload.a", name="mine")
    assert queue.clear() is None  # 0.7.2 returned the drop's None
    names = {index["name"] for index in collection.list_indexes()}
    assert "mine" not in names  # the collection was dropped
    assert {"mongoqueue_claim_v2", "mongoqueue_key", "mongoqueue_lease"} <= names  # re-made
    assert queue.stats()["total"] == 0
    first = other.put({"b": 1}, key="k")
    assert other.put({"b": 2}, key="k") == first  # deduplicated: the key index is back
    assert queue.next().payload == {"b": 1}


def test_counts_survive_a_drop_by_someone_else(queue, collection) -> None:
    queue.put({"a": 1})
    collection.drop()  # say, 0.7.2 code calling clear() on the same collection
    assert queue.stats() == {"available": 0, "locked": 0, "errors": 0, "total": 0}
    assert queue.counts()["total"] == 0
    # Recreated without our indexes (by an insert elsewhere): the hinted counts
    # find no index, and the queue makes its indexes again.
    collection.insert_one({"not": "a job"})
    assert queue.stats() == {"available": 0, "locked": 0, "errors": 0, "total": 1}
    assert "mongoqueue_claim_v2" in {index["name"] for index in collection.list_indexes()}
    assert queue.counts()["total"] == 1


# ------------------------------------------------------------------ the job's attributes


def test_job_attributes(queue) -> None:
    job_id = queue.put({"x": 1}, priority=7)
    job = queue.next()
    assert job.payload == {"x": 1}
    assert job.job_id == job_id
    assert job.priority == 7
    assert job.attempts == 0
    assert job.locked_by == "consumer_1"
    assert job.locked_at is not None
    assert job.last_error is None
    data = job.data
    assert {"_id", "payload", "priority", "attempts", "locked_by", "locked_at", "last_error"} <= (
        data.keys()
    )
    assert data["_id"] == job_id
    assert data["payload"] == {"x": 1}
    assert data["priority"] == 7
    assert data["locked_by"] == "consumer_1"
    with job as entered:
        assert entered == data


def test_an_int_consumer_id_is_kept_as_an_int(api) -> None:
    queue = api.queue(123)
    queue.put({"a": 1})
    job = queue.next()
    assert job.locked_by == 123
    assert job.data["locked_by"] == 123
    assert queue.stats()["locked"] == 1
    job.complete()


@pytest.mark.parametrize("bad", [1.5, None, True, ["a"]])
def test_other_consumer_ids_are_refused_clearly(api, bad) -> None:
    with pytest.raises(InvalidArgumentType, match="consumer_id must be a str"):
        api.queue(bad)


# ------------------------------------------------------------------ close()


def test_close_closes_the_client(api, mongodb_uri) -> None:
    if api.kind == "sync":
        client: Any = MongoClient(mongodb_uri)
        queue = MongoQueue(client.compat_close.jobs, "c")
    else:
        from pymongo import AsyncMongoClient

        from tests.twins import Blocking

        client = AsyncMongoClient(mongodb_uri)
        queue = Blocking(AsyncMongoQueue(client.compat_close.jobs, "c"), api.loop)
    queue.put({"a": 1})
    assert queue.close() is None
    with pytest.raises(Exception, match="after close"):
        queue.put({"a": 2})
    with MongoClient(mongodb_uri) as check:
        assert check.compat_close.jobs.count_documents({}) == 1
        check.drop_database("compat_close")


# ------------------------------------------------------------------ the original's names


def test_the_original_module_path_still_imports() -> None:
    from mongoqueue.mongoqueue import Job as OldJob
    from mongoqueue.mongoqueue import MongoQueue as OldQueue

    assert OldQueue is MongoQueue
    assert OldJob is Job


def test_settings_can_be_set_after_construction(api) -> None:
    queue = api.queue("c")
    queue.timeout = 600  # plain attributes in 0.7.2
    queue.max_attempts = 1
    queue.consumer_id = "renamed"
    assert (queue.timeout, queue.max_attempts, queue.consumer_id) == (600, 1, "renamed")
    queue.put({"a": 1})
    job = queue.next()
    assert job.locked_by == "renamed"
    job.error("once")
    assert queue.stats()["errors"] == 1  # max_attempts=1 applied
    with pytest.raises(InvalidArgument, match="timeout"):
        queue.timeout = -1


@pytest.mark.parametrize("bad", ["a string", [1, 2], 42])
def test_a_payload_that_is_not_a_document_is_refused_clearly(queue, bad) -> None:
    with pytest.raises(InvalidArgumentType, match="payload"):
        queue.put(bad)  # 0.7.2 stored any value; its README says a dictionary
    assert queue.stats()["total"] == 0


def test_a_priority_that_is_not_an_int_is_refused_clearly(queue) -> None:
    with pytest.raises(InvalidArgumentType, match="priority must be an int"):
        queue.put({"a": 1}, priority=1.5)
