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
    assert set(ops.claim_filter(NOW)) == {"state", "visible_at"}


def test_claim_filter_names_the_expected_state() -> None:
    assert ops.claim_filter(NOW) == {"state": "ready", "visible_at": {"$lte": NOW}}


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


def test_stats_pipeline_is_one_group() -> None:
    pipeline = ops.stats_pipeline(NOW)
    assert list(pipeline[0]) == ["$group"]
    assert set(ops.STATS_KEYS) <= set(pipeline[0]["$group"])
