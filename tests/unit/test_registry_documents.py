"""The workers registry and activity documents (pure functions, no server)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mongoqueue import activity, registry
from mongoqueue._worker_core import result_of, stop_summary
from mongoqueue.job import JobData

NOW = datetime(2026, 11, 30, 1, 30, 15, tzinfo=timezone.utc)


def _doc(**fields):
    doc = {
        "_id": "w-1#0a0b0c0d",
        "consumer_id": "w-1",
        "host": "h",
        "pid": 12,
        "kind": "Worker",
        "queues": ["jobs"],
        "concurrency": 4,
        "version": "1.0",
        "interval": 2.0,
        "started": NOW - timedelta(minutes=5),
        "heartbeat": NOW - timedelta(seconds=1),
        "jobs": ["a", "b"],
        "counts": {"completed": 3},
    }
    doc.update(fields)
    return doc


def test_worker_id_is_derived_from_the_consumer_id() -> None:
    one, two = registry.new_worker_id("host-12"), registry.new_worker_id("host-12")
    assert one.startswith("host-12#")
    assert two.startswith("host-12#")
    assert one != two  # two workers sharing a consumer id get two documents


def test_beat_update_takes_every_time_from_the_server() -> None:
    (stage,) = registry.beat_update(
        consumer_id="c", kind="Worker", db="d", queues=["q"], concurrency=2,
        version="1", interval=1.5, jobs=["j"], counts={"completed": 1},
    )  # fmt: skip
    fields = stage["$set"]
    assert fields["heartbeat"] == "$$NOW"
    assert fields["started"] == {"$ifNull": ["$started", "$$NOW"]}
    assert "$$NOW" in str(fields["expire_at"])
    assert fields["jobs"] == {"$literal": ["j"]}  # ids are data, never expressions
    assert fields["queues"] == ["q"]
    assert fields["interval"] == 1.5


def test_alive_and_dead_by_heartbeat_age() -> None:
    alive, dead = registry.parse_workers(
        [
            _doc(_id="b", heartbeat=NOW - timedelta(seconds=6)),  # exactly 3 intervals: alive
            _doc(_id="a", heartbeat=NOW - timedelta(seconds=6.5)),
        ],
        NOW,
    )
    assert (alive.id, alive.state, alive.age) == ("b", "alive", 6.0)
    assert (dead.id, dead.state) == ("a", "dead")
    naive = registry.parse_workers(
        [_doc(heartbeat=(NOW - timedelta(seconds=1)).replace(tzinfo=None))], NOW
    )
    assert naive[0].alive


def test_holder_prefers_the_worker_listing_the_job() -> None:
    one, two = registry.parse_workers(
        [_doc(_id="w-1#1", jobs=["x"]), _doc(_id="w-1#2", jobs=["y"])], NOW
    )
    assert registry.holder("y", "w-1", [one, two]) is two
    assert registry.holder("z", "w-1", [one, two]) is one  # same consumer id, not listed yet
    assert registry.holder("y", "other", [one, two]) is None
    assert registry.holder("y", None, [one, two]) is None


def test_activity_buffer_places_events_in_the_servers_minutes() -> None:
    clock = [1000.0]
    buffer = activity.ActivityBuffer(lambda: clock[0])
    buffer.add("jobs", "completed")
    clock[0] = 1030.0
    buffer.add("jobs", "completed", 2)
    buffer.add("jobs", "failed")
    buffer.add("other", "retried")
    with pytest.raises(ValueError, match="unknown event"):
        buffer.add("jobs", "exploded")
    server_now = datetime(2026, 1, 1, 12, 0, 10, tzinfo=timezone.utc)
    buckets = buffer.take(server_now)
    assert len(buffer) == 0
    minute = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    before = minute - timedelta(minutes=1)
    assert buckets == {
        ("jobs", before): {"completed": 1},  # 30 s before the write: the previous minute
        ("jobs", minute): {"completed": 2, "failed": 1},
        ("other", minute): {"retried": 1},
    }
    requests = activity.flush_requests(buckets)
    assert len(requests) == 3
    doc = requests[1]._doc
    assert requests[1]._filter == {"_id": "jobs|2026-01-01T12:00"}
    assert doc["$inc"] == {"completed": 2, "failed": 1}
    assert doc["$setOnInsert"]["expire_at"] == minute + timedelta(seconds=activity.KEEP_SECONDS)
    buffer.put_back(buckets)
    assert sum(sum(b.values()) for b in buffer.take(server_now).values()) == 5


def test_per_minute_fills_the_window_with_zeros() -> None:
    since = datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc)
    now = since + timedelta(minutes=2)
    rows = activity.per_minute(
        [{"minute": datetime(2026, 1, 1, 12, 1), "completed": 4, "failed": 1}], since, now
    )
    assert [m.minute for m, _ in rows] == [0, 1, 2]
    assert [c["completed"] for _, c in rows] == [0, 4, 0]
    assert rows[1][1]["failed"] == 1


class _Job(JobData):
    def __init__(self, state: str) -> None:
        super().__init__({"_id": 1, "payload": {}, "state": state, "attempts": 1})


def test_outcomes_say_retried_or_failed_final() -> None:
    assert result_of(_Job("failed"), "failed") == "failed"
    assert result_of(_Job("ready"), "failed") == "retried"
    assert result_of(_Job("ready"), "abandoned") == "retried"
    assert result_of(_Job("ready"), "completed") == "completed"


def test_stop_summary_counts_jobs_and_attempts() -> None:
    counts = dict.fromkeys(("completed", "retried", "failed", "released", "lost", "abandoned"), 0)
    counts.update(completed=3, retried=2, failed=1)
    assert stop_summary(counts) == (
        "3 jobs completed, 1 job failed (final), 2 attempts failed and retried, "
        "0 jobs released, 0 leases lost"
    )
