"""The dashboard's and metrics' pure parts: new operations, throughput derivation, charts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId

from mongoqueue import InvalidArgument
from mongoqueue import operations as ops
from mongoqueue.dashboard import queries
from mongoqueue.dashboard.app import _local_path, age, job_state, parse_job_id
from mongoqueue.dashboard.charts import scale, time_chart
from mongoqueue.dashboard.history import History, Sample, depth_series
from mongoqueue.dashboard.observed import rate_per_minute, throughput_series

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


T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


def test_depth_series_one_per_state_at_each_sample() -> None:
    samples = [Sample(0.0, counts(waiting=12), T0 + 40), Sample(10.0, counts(failed=2), T0 + 50)]
    series = depth_series(samples)
    assert list(series) == ["waiting", "delayed", "running", "failed"]
    assert series["waiting"] == [(T0 + 40, 12.0), (T0 + 50, 0.0)]
    assert series["failed"] == [(T0 + 40, 0.0), (T0 + 50, 2.0)]


def test_throughput_from_the_workers_counts_per_minute() -> None:
    minute = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    rows = [
        (minute, {"completed": 0, "failed": 0, "retried": 0}),
        (minute + timedelta(minutes=1), {"completed": 6, "failed": 2, "retried": 3}),
        (minute + timedelta(minutes=2), {"completed": 4, "failed": 0, "retried": 0}),
    ]
    done = throughput_series(rows)
    assert (done.completed, done.failed, done.retried) == (10, 2, 3)
    at = minute.timestamp()
    assert (done.start, done.end) == (at, at + 180)
    assert done.series["completed"] == [(at, 0), (at + 60, 6), (at + 120, 4)]
    assert done.series["failed"][1] == (at + 90, 2)  # lines: the middle of each minute
    chart = time_chart(done.series, done.start, done.end, unit="completed", bars="completed")
    # One bar per minute with completions (none for the idle minute), labelled with the count.
    assert [b.title for b in chart.bars] == ["12:01 UTC: 6 completed", "12:02 UTC: 4 completed"]
    assert [line.name for line in chart.lines] == ["failed", "retried"]
    assert [t.label for t in chart.y_ticks] == ["0", "2", "4", "6"]
    # The overview's rate: whole minutes only (the last, current minute is left out).
    assert rate_per_minute(rows) == 3.0
    assert rate_per_minute(rows[:1]) == 0.0
    assert throughput_series([]).series["completed"] == []


def test_value_axis_has_round_steps() -> None:
    cases = {0: (1, 1), 1: (1, 1), 3: (1, 3), 5: (1, 5), 7: (2, 4), 10: (2, 5), 11: (5, 3),
             240: (50, 5), 358.4: (100, 4), 1001: (500, 3)}  # fmt: skip
    assert {peak: scale(peak) for peak in cases} == cases


def test_time_chart_has_labelled_axes_and_bars_per_bucket() -> None:
    chart = time_chart(
        {"completed": [(T0, 10), (T0 + 60, 2)]},
        T0 - 240,
        T0 + 360,  # ten minutes
        unit="completed",
        bars="completed",
        width=660,
        height=134,
    )
    # Plot area: 600 px for 600 s, 100 px tall; the scale is 0 to 10 by 2.
    assert (chart.left, chart.plot_width, chart.plot_height) == (48, 600, 100)
    assert [t.label for t in chart.y_ticks] == ["0", "2", "4", "6", "8", "10"]
    assert [t.label for t in chart.x_ticks] == [
        "23:56",
        "23:58",
        "00:00",
        "00:02",
        "00:04",
        "00:06",
    ]
    first, second = chart.bars
    assert (first.x, first.width, first.height) == (288, 59, 100)
    assert (second.x, second.height) == (348, 20)
    assert first.title == "00:00 UTC: 10 completed"
    assert not chart.empty
    assert time_chart({}, T0, T0 + 60, unit="jobs").empty


def test_time_chart_lines_one_per_series() -> None:
    chart = time_chart(
        {"waiting": [(T0, 4), (T0 + 60, 0)], "failed": [(T0, 0), (T0 + 60, 2)]},
        T0,
        T0 + 60,
        unit="jobs",
        width=660,
        height=134,
    )
    lines = {line.name: line for line in chart.lines}
    assert lines["waiting"].points == "48.0,10.0 648.0,110.0"  # scale 0 to 4
    assert lines["failed"].points == "48.0,110.0 648.0,60.0"
    assert lines["failed"].last == 2


def test_keyset_cursor_round_trip_and_filter() -> None:
    oid = ObjectId()
    doc = {"_id": oid, "priority": 3, "scheduled_at": NOW}
    sort = [("priority", -1), ("scheduled_at", 1), ("_id", 1)]
    cursor = queries.encode_cursor(doc, sort)
    values = queries.decode_cursor(cursor, sort)
    assert values == [3, NOW, oid]
    assert queries._keyset(sort, values, True) == {"$or": [
        {"priority": {"$lt": 3}},
        {"priority": 3, "scheduled_at": {"$gt": NOW}},
        {"priority": 3, "scheduled_at": NOW, "_id": {"$gt": oid}},
    ]}  # fmt: skip
    assert queries._keyset(sort, values, False)["$or"][0] == {"priority": {"$gt": 3}}
    for bad in ("!!", "bm90IGpzb24", queries.encode_cursor(doc, sort[:1])):
        with pytest.raises(queries.BadQuery):
            queries.decode_cursor(bad, sort)


def test_error_text_filter_is_an_escaped_bounded_regex() -> None:
    query, sort = queries.job_filter(queries.Filters(state="failed", error="a.b("), NOW)
    assert query == {"state": "failed", "last_error": {"$regex": r"a\.b\(", "$options": "i"}}
    assert sort[0] == ("priority", -1)
    with pytest.raises(queries.BadQuery, match="at most 200"):
        queries.job_filter(queries.Filters(error="x" * 201), NOW)
    with pytest.raises(queries.BadQuery, match="state must be one of"):
        queries.job_filter(queries.Filters(state="done"), NOW)


def test_age() -> None:
    assert age(None, NOW) == "—"
    assert age(NOW - timedelta(seconds=59), NOW) == "59 s"
    assert age(NOW - timedelta(minutes=125), NOW) == "2 h 5 min"
    assert age(NOW - timedelta(hours=49), NOW) == "2 d 1 h"


def test_job_state_in_the_shared_vocabulary() -> None:
    base = {"state": "ready", "lease_token": None, "visible_at": NOW}
    later = NOW + timedelta(seconds=1)
    assert job_state(base, NOW) == "waiting"
    assert job_state({**base, "visible_at": later}, NOW) == "delayed"
    assert job_state({**base, "lease_token": "t", "lease_expires_at": later}, NOW) == "running"
    assert job_state({**base, "lease_token": "t", "lease_expires_at": NOW}, NOW) == "lease_expired"
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


def test_a_page_after_a_cursor_is_three_simple_ranges_nearest_first() -> None:
    oid = ObjectId()
    sort = [("priority", -1), ("scheduled_at", 1), ("_id", 1)]
    base = {"state": "failed"}
    assert queries.keyset_queries(base, sort, None, True) == [base]
    after = queries.keyset_queries(base, sort, [3, NOW, oid], True)
    assert after == [
        {"$and": [base, {"priority": 3, "scheduled_at": NOW, "_id": {"$gt": oid}}]},
        {"$and": [base, {"priority": 3, "scheduled_at": {"$gt": NOW}}]},
        {"$and": [base, {"priority": {"$lt": 3}}]},
    ]
    before = queries.keyset_queries(base, sort, [3, NOW, oid], False)
    assert before[0]["$and"][1]["_id"] == {"$lt": oid}
    assert before[2]["$and"][1] == {"priority": {"$gt": 3}}
