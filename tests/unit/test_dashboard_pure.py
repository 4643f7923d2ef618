"""The dashboard's and metrics' pure parts: new operations, throughput derivation, charts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId

from mongoqueue import InvalidArgument
from mongoqueue import operations as ops
from mongoqueue.dashboard.app import _local_path, job_state, parse_job_id
from mongoqueue.dashboard.history import History, Sample, line_chart
from mongoqueue.dashboard.observed import throughput_chart

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def counts(waiting: int = 0, delayed: int = 0, running: int = 0, failed: int = 0) -> dict:
    total = waiting + delayed + running + failed
    return dict(waiting=waiting, delayed=delayed, running=running, lease_expired=0,
                failed=failed, completed=0, cancelled=0, total=total)  # fmt: skip


def test_cancel_filter_names_the_waiting_state() -> None:
    assert ops.cancel_filter(7) == {
        "_id": {"$eq": 7},
        "state": "ready",
        "lease_token": {"$not": {"$type": "string"}},
    }


def test_listing_filter_narrows_the_state_filter() -> None:
    assert ops.listing_filter("failed", NOW) == {"state": "failed"}
    narrowed = ops.listing_filter("running", NOW, key="k", locked_by="w1", priority=0)
    assert narrowed == {**ops.state_filter("running", NOW), "key": {"$eq": "k"},
                        "locked_by": {"$eq": "w1"}, "priority": {"$eq": 0}}  # fmt: skip
    with pytest.raises(InvalidArgument, match="state must be one of"):
        ops.listing_filter("done", NOW)


def test_listing_cursor_round_trips_into_a_keyset_filter() -> None:
    doc = {"_id": "id-1", "state": "ready", "priority": 2, "visible_at": NOW}
    paged = ops.listing_filter("all", NOW, after=ops.listing_cursor(doc))
    [branches] = [part["$or"] for part in paged["$and"] if "$or" in part]
    assert branches[0] == {"state": {"$gt": "ready"}}
    assert branches[-1]["_id"] == {"$gt": "id-1"}
    assert branches[-1]["visible_at"]["$eq"] == NOW
    with pytest.raises(InvalidArgument, match="after must be"):
        ops.listing_filter("all", NOW, after="not json")


def test_history_keeps_the_window() -> None:
    history = History(window=10)
    for t in range(30):
        history.add("q", Sample(float(t), counts()))
    assert [s.at for s in history.samples("q")] == [float(t) for t in range(19, 30)]
    assert history.samples("other") == []


def test_throughput_chart_stacks_failures_on_completions_per_minute() -> None:
    minute = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    rows = [
        (minute, {"completed": 0, "failed": 0, "retried": 0}),
        (minute + timedelta(minutes=1), {"completed": 6, "failed": 2, "retried": 3}),
        (minute + timedelta(minutes=2), {"completed": 4, "failed": 0, "retried": 0}),
    ]
    chart = throughput_chart(rows, width=300, height=80)
    assert chart.peak == 8
    assert (chart.completed, chart.failed, chart.retried) == (10, 2, 3)
    done, failed, later = chart.bars
    assert (done.x, done.height, done.y, done.colour) == (100, 60, 20, "#3a7")
    assert (failed.x, failed.height, failed.y, failed.colour) == (100, 20, 0, "#b00")
    assert (later.x, later.height) == (200, 40)
    assert done.label == "12:01 UTC: 6 completed, 2 failed (final), 3 retried"
    assert chart.ticks[0] == (0, "12:00")
    assert throughput_chart([]).bars == []


def test_line_chart_has_one_line_per_state() -> None:
    samples = [Sample(0.0, counts(waiting=4)), Sample(60.0, counts(failed=2))]
    chart = line_chart(samples, window=60, now=60, width=600, height=100)
    lines = dict(chart.lines)
    assert chart.peak == 4
    assert lines["waiting"] == "0.0,0.0 600.0,100.0"
    assert lines["failed"] == "0.0,100.0 600.0,50.0"


def test_job_state_as_counts_counts_it() -> None:
    base = {"state": "ready", "lease_token": None, "visible_at": NOW}
    assert job_state(base, NOW) == "waiting"
    assert job_state({**base, "visible_at": NOW + timedelta(seconds=1)}, NOW) == "delayed"
    assert job_state({**base, "lease_token": "t"}, NOW) == "running"
    assert job_state({**base, "state": "failed"}, NOW) == "failed"
    assert job_state({**base, "state": "completed"}, NOW) == "completed"
    assert job_state({**base, "state": "cancelled"}, NOW) == "cancelled"


def test_redirect_targets_stay_on_this_server() -> None:
    assert _local_path("/queues/jobs?state=failed")
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example", "queues"):
        assert not _local_path(target)


def test_job_ids_from_urls() -> None:
    oid = ObjectId()
    assert parse_job_id(str(oid)) == oid
    assert parse_job_id("my-id") == "my-id"
