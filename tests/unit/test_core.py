"""The I/O-free core both queues share: decisions checked without a server."""

from __future__ import annotations

import sys
from typing import Any

import pymongo.errors
import pytest
from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection

from mongoqueue import NO_BACKOFF, InvalidArgument, InvalidArgumentType, LeaseLost
from mongoqueue._core import MAX_BATCH, QueueCore, check_collection
from mongoqueue.job import JobData, exit_outcome


def _core() -> QueueCore:
    return QueueCore("c1", 30, 3, NO_BACKOFF)


def _held(token: str | None = "t1") -> JobData:
    return JobData({"_id": ObjectId(), "payload": {}, "priority": 0, "lease_token": token})


def test_check_collection_names_the_client() -> None:
    with pytest.raises(InvalidArgumentType, match=r"example MongoClient\(uri\).*, got str$"):
        check_collection("jobs", Collection, AsyncCollection, "MongoQueue")
    with pytest.raises(InvalidArgumentType, match=r"example AsyncMongoClient\(uri\)"):
        check_collection("jobs", AsyncCollection, Collection, "AsyncMongoQueue")


def test_wait_deadline() -> None:
    assert QueueCore._wait_deadline(None) is None
    assert QueueCore._wait_deadline(0) is None  # no waiting: one claim only
    deadline = QueueCore._wait_deadline(2.5)
    assert deadline is not None
    assert deadline.seconds == 2.5
    with pytest.raises(InvalidArgument, match="wait"):
        QueueCore._wait_deadline(-1)


def test_batch_size_bounds() -> None:
    assert QueueCore._check_batch_size(MAX_BATCH) == MAX_BATCH
    with pytest.raises(InvalidArgument, match="at most"):
        QueueCore._check_batch_size(MAX_BATCH + 1)
    with pytest.raises(InvalidArgumentType):
        QueueCore._check_batch_size(True)


def test_claimed_jobs_keep_the_claim_order_and_skip_lost_ones() -> None:
    ids = [1, 2, 3, 4]
    docs = [{"_id": 4}, {"_id": 1}, {"_id": 3}]  # 2 was taken by someone else
    assert [d["_id"] for d in QueueCore._in_claim_order(ids, docs)] == [1, 3, 4]


def test_fenced_reply_keeps_or_drops_the_token() -> None:
    job = _held("t1")
    QueueCore._after_fenced(job, {"lease_token": "t1", "progress": 3})
    assert job.held
    assert job.progress_count == 3
    QueueCore._after_fenced(job, {"lease_token": None, "state": "failed"})
    assert not job.held
    assert job.state == "failed"


def test_a_handle_without_a_token_cannot_act() -> None:
    job = _held(None)
    with pytest.raises(LeaseLost, match=r"cannot release job .* already"):
        QueueCore._token_of(job, "release")
    assert QueueCore._token_of(_held("t9"), "release") == "t9"


def test_lease_lost_lets_the_handle_go_and_says_why() -> None:
    job = _held("t1")
    error = QueueCore._lease_lost(job, "complete", {"lease_token": "t2", "locked_by": "c2"})
    assert not job.held
    assert "claimed again by 'c2'" in str(error)


def test_a_missing_hinted_index_is_recognised() -> None:
    missing = pymongo.errors.OperationFailure(
        "hint 'mongoqueue_claim' does not correspond to an existing index", code=2
    )
    assert QueueCore._is_missing_index(missing)
    assert not QueueCore._is_missing_index(pymongo.errors.OperationFailure("bad", code=2))
    assert not QueueCore._is_missing_index(pymongo.errors.OperationFailure("hint", code=11000))


def test_requeue_target_takes_any_handle_or_an_id() -> None:
    job = _held()
    assert QueueCore._requeue_target(job) == job.id
    assert QueueCore._requeue_target("some-id") == "some-id"
    assert QueueCore._requeue_target(None) is None


def test_progress_and_error_updates_check_their_input() -> None:
    core = _core()
    with pytest.raises(InvalidArgumentType, match="count must be an int"):
        core._progress_update(True)
    update = core._error_update(ValueError("boom"))  # not a str: stored as its text
    assert update[0]["$set"]["last_error"] == {"$literal": "boom"}


def test_new_jobs_name_the_bad_payload() -> None:
    core = _core()
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    core._clock.record(now, sent_at=0.0)  # a queue anchors its clock before it puts
    docs = core._new_jobs([{"a": 1}, {"a": 2}], 0, None, None, None, None, now)
    assert [d["priority"] for d in docs] == [0, 0]
    with pytest.raises(InvalidArgumentType, match=r"payloads\[1\]"):
        core._new_jobs([{"a": 1}, 7], 0, None, None, None, None, now)


def _exc_info(exc: BaseException) -> tuple[Any, Any, Any]:
    try:
        raise exc
    except BaseException:
        return sys.exc_info()


def test_exit_outcome() -> None:
    assert exit_outcome(None, None, None) == ("complete", None)
    outcome, message = exit_outcome(*_exc_info(ValueError("bad")))
    assert outcome == "error"
    assert "ValueError: bad" in message
    assert "Traceback" in message
    for interrupt in (KeyboardInterrupt(), SystemExit(1)):
        assert exit_outcome(*_exc_info(interrupt)) == ("release", None)
