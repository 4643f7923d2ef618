"""Pure parts of prefetching and batch acknowledgements: documents, sizes, the buffer."""

from __future__ import annotations

from pymongo import DeleteOne, UpdateOne

from mongoqueue import operations as ops
from mongoqueue.prefetch import PrefetchBuffer, buffer_max_age, claim_size


def test_complete_writes_fence_each_delete_by_its_own_token() -> None:
    writes = ops.complete_writes([ops.held(1, "a:1"), ops.held(2, "a:2")])
    assert writes == [
        DeleteOne({"_id": 1, "lease_token": "a:1"}),
        DeleteOne({"_id": 2, "lease_token": "a:2"}),
    ]


def test_start_writes_fence_each_update_and_drop_the_prefetched_mark() -> None:
    (write,) = ops.start_writes([ops.held(7, "t")], 30_000)
    assert write == UpdateOne({"_id": 7, "lease_token": "t"}, ops.start_update(30_000))
    assert ops.start_update(30_000)[-1] == {"$unset": ["prefetched"]}
    assert ops.start_update(30_000)[:-1] == ops.heartbeat_update(30_000)


def test_acknowledge_writes_are_completions_then_starts() -> None:
    writes = ops.acknowledge_writes([ops.held(1, "a")], [ops.held(2, "b")], 1000)
    assert [type(w) for w in writes] == [DeleteOne, UpdateOne]


def test_a_claim_marks_prefetched_jobs_and_their_expiry_counts_no_attempt() -> None:
    from mongoqueue.retry import NO_BACKOFF

    mark = ops.prefetched_unless([1, 2])
    assert mark == {"$not": [{"$in": ["$_id", {"$literal": [1, 2]}]}]}
    pipeline = ops.claim_update("t", "c", 1000, 3, NO_BACKOFF, 0.0, mark)
    assert "prefetched" in str(pipeline)
    single = ops.claim_update("t", "c", 1000, 3, NO_BACKOFF, 0.0)
    assert "'$prefetched', '$$REMOVE']" in str(single)  # a plain claim clears an old mark
    # The expiry recorded by a claim or repair() adds 0 for a prefetched job, else 1.
    step = {"$cond": [{"$eq": ["$prefetched", True]}, 0, 1]}
    assert str(step) in str(single)
    assert str(step) in str(ops.expire_update(3, NO_BACKOFF, 0.0))
    # error() always counts one attempt: the handler ran.
    assert str(step) not in str(ops.fail_update("x", 3, NO_BACKOFF, 0.0))


def test_claim_size_is_free_slots_plus_prefetch_capped() -> None:
    assert claim_size(8, 0, 8) == 16
    assert claim_size(8, 8, 8) == 8
    assert claim_size(1, 0, 0) == 1
    assert claim_size(64, 0, 1000) == 100


def test_a_buffered_job_waits_a_third_of_the_lease_at_most() -> None:
    assert buffer_max_age(30, 10) == 10
    assert buffer_max_age(30, 2) == 2
    assert buffer_max_age(3, 2.9) == 1


def test_buffer_takes_oldest_first_and_gives_back_stale_jobs() -> None:
    buffer: PrefetchBuffer[str] = PrefetchBuffer(max_age=1.0)
    buffer.put(["a", "b"], claimed_at=10.0)
    buffer.put(["c"], claimed_at=10.5)
    assert buffer.take() == ("a", 10.0)
    assert buffer.stale(11.2) == ["b"]
    assert len(buffer) == 1
    assert buffer.drain() == ["c"]
    assert buffer.take() is None
