"""The dashboard's and metrics' pure parts: new operations, throughput derivation, charts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId

from mongoqueue import InvalidArgument
from mongoqueue import operations as ops
from mongoqueue.dashboard.app import _local_path, job_state, parse_job_id
from mongoqueue.dashboard.history import History, Sample, bar_chart, completions, line_chart

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def counts(available: int = 0, delayed: int = 0, locked: int = 0, failed: int = 0) -> dict:
    total = available + delayed + locked + failed
    return dict(available=available, delayed=delayed, locked=locked, expired=0, failed=failed,
                total=total)  # fmt: skip


def test_cancel_filter_names_the_waiting_state() -> None:
    assert ops.cancel_filter(7) == {
        "_id": 7,
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


def test_completions_is_a_lower_bound_from_two_samples() -> None:
    before = Sample(0.0, counts(available=10))
    # 6 left the queue, 1 of them failed: at least 5 completed.
    assert completions(before, Sample(5.0, counts(available=3, locked=1, failed=1))) == 5
    # Puts outnumbering completions hide them: never negative.
    assert completions(before, Sample(5.0, counts(available=20))) == 0
    # A requeue (failed back to available) is not a completion.
    assert completions(Sample(0, counts(failed=2)), Sample(1, counts(available=2))) == 0


def test_history_keeps_the_window() -> None:
    history = History(window=10)
    for t in range(30):
        history.add("q", Sample(float(t), counts()))
    assert [s.at for s in history.samples("q")] == [float(t) for t in range(19, 30)]
    assert history.samples("other") == []


def test_bar_chart_places_rates_on_the_time_axis() -> None:
    samples = [
        Sample(40.0, counts(available=12)),
        Sample(50.0, counts(available=2)),  # 10 done in 10 s: 60/min
        Sample(60.0, counts(available=0)),  # 2 done in 10 s: 12/min
    ]
    chart = bar_chart(samples, window=60, now=60, width=600, height=100)
    assert chart.peak == 60
    first, second = chart.bars
    assert (first.x, first.height, first.y) == (400, 100, 0)
    assert (second.x, second.height) == (500, 20)
    assert "10 completed" in first.label
    assert bar_chart([], window=60, now=0).bars == []


def test_line_chart_has_one_line_per_state() -> None:
    samples = [Sample(0.0, counts(available=4)), Sample(60.0, counts(failed=2))]
    chart = line_chart(samples, window=60, now=60, width=600, height=100)
    lines = dict(chart.lines)
    assert chart.peak == 4
    assert lines["available"] == "0.0,0.0 600.0,100.0"
    assert lines["failed"] == "0.0,100.0 600.0,50.0"


def test_job_state_as_stats_counts_it() -> None:
    base = {"state": "ready", "lease_token": None, "visible_at": NOW}
    assert job_state(base, NOW) == "available"
    assert job_state({**base, "visible_at": NOW + timedelta(seconds=1)}, NOW) == "delayed"
    assert job_state({**base, "lease_token": "t"}, NOW) == "running"
    assert job_state({**base, "state": "failed"}, NOW) == "failed"


def test_redirect_targets_stay_on_this_server() -> None:
    assert _local_path("/queues/jobs?state=failed")
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example", "queues"):
        assert not _local_path(target)


def test_job_ids_from_urls() -> None:
    oid = ObjectId()
    assert parse_job_id(str(oid)) == oid
    assert parse_job_id("my-id") == "my-id"
