"""``jobs()``: the public listing the CLI and dashboard use, on both twins."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from mongoqueue import InvalidArgument, InvalidArgumentType
from mongoqueue import operations as ops


def test_jobs_lists_by_state_in_claim_order(api) -> None:
    queue = api.queue("lister", max_attempts=1)
    low = queue.put({"n": "low"})
    high = queue.put({"n": "high"}, priority=3)
    later = queue.put({"n": "later"}, delay=3600)
    running = queue.put({"n": "running"}, priority=9)
    held = queue.next()
    assert held.id == running
    failed = queue.put({"n": "failed"}, priority=10)
    queue.next().error("boom")

    def ids(state: str, **kw: object) -> list[object]:
        listed = queue.jobs(state, **kw)
        assert all(not job.held and api.is_job(job) for job in listed)  # snapshots
        return [job.id for job in listed]

    assert ids("waiting") == [high, low]
    assert ids("available") == [high, low]  # stats()'s word for waiting
    assert ids("delayed") == [later]
    assert ids("running") == [running]
    assert ids("lease_expired") == []
    assert ids("failed") == [failed]
    assert ids("all") == [failed, running, high, low, later]
    assert ids("all", limit=2) == [failed, running]
    assert ids("all", priority=3) == [high]
    assert ids("running", locked_by="lister") == [running]
    assert ids("running", locked_by="someone else") == []
    assert isinstance(queue.server_time(), datetime)
    assert queue.server_time().tzinfo is not None


def test_jobs_pages_after_a_job_even_when_it_is_gone(api) -> None:
    queue = api.queue("pager")
    ids = queue.put_many([{"i": i} for i in range(7)])
    first = queue.jobs("waiting", limit=3)
    assert [job.id for job in first] == ids[:3]
    assert queue.cancel(first[-1])  # the page's last job is gone: paging goes on
    second = queue.jobs("waiting", limit=3, after=first[-1])
    assert [job.id for job in second] == ids[3:6]
    cursor = ops.listing_cursor(second[-1].data)
    assert [job.id for job in queue.jobs("waiting", after=cursor)] == ids[6:]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"state": "sideways"}, InvalidArgument, "state must be one of"),
        ({"state": 3}, InvalidArgumentType, "state must be a str"),
        ({"key": {"$ne": None}}, InvalidArgumentType, "key must be a str"),
        ({"locked_by": 5}, InvalidArgumentType, "locked_by must be a str"),
        ({"limit": 0}, InvalidArgument, "limit"),
        ({"after": 5}, InvalidArgumentType, "after must be"),
        ({"after": "{"}, InvalidArgument, "after must be"),
    ],
)
def test_jobs_refuses_bad_arguments(api, kwargs, error, match) -> None:
    queue = api.queue("lister")
    with pytest.raises(error, match=match):
        queue.jobs(**kwargs)


def test_jobs_is_read_from_the_claim_index(queue, collection) -> None:
    queue.put_many([{"i": i} for i in range(5)])
    now = datetime.now(timezone.utc)
    plan = collection.find(ops.listing_filter("waiting", now), sort=ops.LISTING_SORT).explain()
    text = str(plan["queryPlanner"]["winningPlan"])
    if "COLLSCAN" in text:
        pytest.skip("this server reports a collection scan for every query (Python server)")
    assert ops.CLAIM_INDEX.document["name"] in text
    assert "'SORT'" not in text
