"""The operation documents, checked without a server."""

from __future__ import annotations

from datetime import datetime, timezone

from bson import ObjectId
from bson.raw_bson import RawBSONDocument

from mongoqueue import NO_BACKOFF, RetryPolicy
from mongoqueue import operations as ops

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def _walk(value):
    """Every string inside a document, pipeline or expression."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    elif isinstance(value, str):
        yield value


def test_claim_index_is_equality_then_the_sort() -> None:
    keys = list(ops.CLAIM_INDEX.document["key"].items())
    assert keys[0] == ("state", 1)  # equality
    assert keys[1:] == ops.CLAIM_SORT  # the sort, in order: the index serves it
    # The range field sits right after priority, so that within one priority the
    # claimable jobs come first and the first key past now ends the run.
    assert keys[2] == ("visible_at", 1)
    assert ops.CLAIM_INDEX_NAMES[0] == ops.CLAIM_INDEX.document["name"]
    assert set(ops.claim_filter(NOW)) == {"state", "visible_at", "$expr"}


def test_claim_filter_names_the_expected_state() -> None:
    assert ops.claim_filter(NOW) == {
        "state": "ready",
        "visible_at": {"$lte": NOW},
        # Expiry decided on the server's own clock too (issue 10 item 2).
        "$expr": {"$lte": ["$visible_at", "$$NOW"]},
    }


def test_expired_filter_checks_the_servers_clock() -> None:
    assert ops.expired_filter(NOW)["$expr"] == {"$lte": ["$lease_expires_at", "$$NOW"]}


def test_held_filter_is_fenced_by_token() -> None:
    job_id = ObjectId()
    assert ops.held(job_id, "tok") == {"_id": job_id, "lease_token": "tok"}


def test_user_strings_are_literals_in_pipelines() -> None:
    pipeline = ops.claim_update("$token", "$consumer", 1000, 3, NO_BACKOFF, 1.0)
    assert {"$literal": "$consumer"} in list(_dicts(pipeline))
    assert {"$literal": "$token"} in list(_dicts(pipeline))
    # Outside a $literal, the user strings never appear where they would be read as paths.
    bare = list(_walk(_strip_literals(pipeline)))
    assert "$consumer" not in bare
    assert "$token" not in bare
    fail = ops.fail_update("$attempts", 3, NO_BACKOFF, 1.0)
    assert {"$literal": "$attempts"} in list(_dicts(fail))


def _strip_literals(value):
    if isinstance(value, dict):
        return {k: _strip_literals(v) for k, v in value.items() if k != "$literal"}
    if isinstance(value, list):
        return [_strip_literals(v) for v in value]
    return value


def _dicts(value):
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _dicts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _dicts(v)


def test_new_job_document() -> None:
    job_id = ObjectId()
    payload = RawBSONDocument(b"\x05\x00\x00\x00\x00")
    doc = ops.new_job(
        job_id, payload, priority=3, created_at=NOW, scheduled_at=NOW, key="k", max_attempts=5
    )
    assert doc["payload"] is payload
    assert doc["state"] == "ready"
    assert doc["visible_at"] == doc["scheduled_at"] == NOW
    assert doc["attempts"] == 0
    assert doc["lease_token"] is None
    assert doc["key"] == "k"
    assert doc["max_attempts"] == 5
    plain = ops.new_job(job_id, payload, priority=0, created_at=NOW, scheduled_at=NOW)
    assert "key" not in plain  # absent, so the unique key index ignores it
    assert "max_attempts" not in plain
    assert "retry" not in plain


def test_retry_document_in_milliseconds() -> None:
    policy = RetryPolicy(initial=1.5, maximum=60, minimum=0.25, multiplier=3, jitter=False)
    assert ops.retry_document(policy) == {
        "initial_ms": 1500,
        "maximum_ms": 60000,
        "minimum_ms": 250,
        "multiplier": 3.0,
        "jitter": False,
    }


def test_failure_drops_the_lease_and_counts_an_attempt() -> None:
    first, second = ops.fail_update("boom", 3, NO_BACKOFF, 1.0)
    assert first["$set"]["attempts"] == {"$add": ["$attempts", 1]}
    assert second["$set"]["lease_token"] is None
    assert second["$set"]["state"]["$cond"][1:] == ["failed", "ready"]


def test_release_keeps_attempts() -> None:
    [stage] = ops.release_update()
    assert "attempts" not in stage["$set"]
    assert stage["$set"]["lease_token"] is None


def test_expired_filter_matches_the_lease_index() -> None:
    flt = ops.expired_filter(NOW)
    partial = ops.LEASE_INDEX.document["partialFilterExpression"]
    assert flt["lease_expires_at"]["$type"] == partial["lease_expires_at"]["$type"]


def test_key_index_is_unique_among_ready_jobs() -> None:
    spec = ops.KEY_INDEX.document
    assert spec["unique"] is True
    assert spec["partialFilterExpression"] == {"key": {"$exists": True}, "state": "ready"}


def test_batch_tokens_match_the_expression() -> None:
    ids = [ObjectId(), ObjectId()]
    assert ops.batch_tokens("p", ids) == [f"p:{ids[0]}", f"p:{ids[1]}"]
    assert ops.batch_token("p") == {"$concat": [{"$literal": "p:"}, {"$toString": "$_id"}]}


def _served_by_an_index(query: dict) -> bool:
    """A count filter starts with ``state`` equality (the claim index's prefix), is the
    partial lease index's own filter (maybe with a range), or is empty (the _id index)."""
    if not query:
        return True
    if set(query) <= {"state", "visible_at"} and isinstance(query.get("state"), str):
        return True
    lease = ops.LEASE_INDEX.document["partialFilterExpression"]
    return (
        set(query) == {"lease_expires_at"}
        and lease["lease_expires_at"].items() <= query["lease_expires_at"].items()
    )


def test_stats_filters_are_served_by_indexes() -> None:
    filters = ops.stats_filters()
    assert set(filters) == {"ready", "held", "failed", "total"}
    assert all(_served_by_an_index(query) for query in filters.values())
    assert filters["held"] == ops.LEASE_INDEX.document["partialFilterExpression"]


def test_count_filters_are_served_by_indexes() -> None:
    filters = ops.count_filters(NOW)
    assert all(_served_by_an_index(query) for query in filters.values())
    assert filters["due"] == {"state": "ready", "visible_at": {"$lte": NOW}}
    assert filters["not_due"] == {"state": "ready", "visible_at": {"$gt": NOW}}
    assert filters["lease_expired"] == {"lease_expires_at": {"$type": "date", "$lte": NOW}}
    assert filters["total"] == {}


def test_every_count_names_its_index() -> None:
    hints = {name: ops.count_hint(q) for name, q in ops.count_filters(NOW).items()}
    assert hints == {
        "due": "mongoqueue_claim_v2",
        "not_due": "mongoqueue_claim_v2",
        "running": "mongoqueue_lease",
        "lease_expired": "mongoqueue_lease",
        "failed": "mongoqueue_claim_v2",
        "completed": "mongoqueue_claim_v2",
        "cancelled": "mongoqueue_claim_v2",
        "total": "_id_",
    }
    assert {ops.count_hint(q) for q in ops.stats_filters().values()} == set(hints.values())


def test_stats_has_exactly_the_original_keys() -> None:
    raw = {"ready": 7, "held": 2, "failed": 1, "total": 11}
    assert ops.stats_from(raw) == {"available": 5, "locked": 2, "errors": 1, "total": 11}
    assert (
        tuple(ops.stats_from(raw))
        == ops.STATS_KEYS
        == (
            "available",
            "locked",
            "errors",
            "total",
        )
    )


def test_counts_take_held_jobs_out_of_due_and_not_due() -> None:
    # 3 waiting, 2 delayed, 4 running of which 1 past its lease, 1 failed, 1 completed.
    raw = {
        "due": 3 + 1,  # waiting, plus held past their lease (visible_at = lease end)
        "not_due": 2 + 3,  # delayed, plus held within their lease
        "running": 4,
        "lease_expired": 1,
        "failed": 1,
        "completed": 1,
        "cancelled": 0,
        "total": 11,
    }
    counts = ops.counts_from(raw)
    assert counts == {
        "waiting": 3,
        "delayed": 2,
        "running": 4,
        "lease_expired": 1,
        "failed": 1,
        "completed": 1,
        "cancelled": 0,
        "total": 11,
    }
    assert tuple(counts) == ops.COUNT_KEYS


def test_counts_read_during_changes_never_go_negative() -> None:
    # A job claimed between the reads: counted neither as due nor as held.
    raw = dict.fromkeys(ops.COUNT_KEYS, 0) | {"due": 0, "not_due": 0, "running": 1}
    raw["lease_expired"] = 2  # more expired than running: read after a claim
    counts = ops.counts_from(raw)
    assert min(counts.values()) >= 0
    assert counts["lease_expired"] <= counts["running"]
    assert ops.stats_from({"ready": 0, "held": 1, "failed": 0, "total": 1})["available"] == 0


def test_size_counts_failed_jobs_too() -> None:
    assert ops.size_filter() == {"state": {"$nin": ["completed", "cancelled"]}}
