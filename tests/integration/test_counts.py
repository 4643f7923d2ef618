"""counts() and stats(): correct figures, and every count an index scan under explain.

The commands each method sends are captured with a pymongo ``CommandListener``
and replayed under ``explain`` (``executionStats``): every one must walk the
index it names, never scan the collection, and examine no more index keys than
the jobs in its range (plus one, for the end of the range).
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient, monitoring

from mongoqueue import MongoQueue, RetryPolicy
from mongoqueue import operations as ops
from tests.helpers import expire_lease


class Aggregates(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "aggregate":
            self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _find(explained: Any, key: str) -> Any:
    """``key`` of an explain reply: at the top, or in its ``$cursor`` stage (aggregate)."""
    if key in explained:
        return explained[key]
    for stage in explained.get("stages", []):
        if "$cursor" in stage and key in stage["$cursor"]:
            return stage["$cursor"][key]
    raise AssertionError(f"no {key} in {explained}")


def _stages(plan: Any) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    if isinstance(plan, dict):
        if "stage" in plan:
            found.append((plan["stage"], plan.get("indexName")))
        for value in plan.values():
            found.extend(_stages(value))
    elif isinstance(plan, list):
        for value in plan:
            found.extend(_stages(value))
    return found


SESSION_FIELDS = {"lsid", "$db", "$clusterTime", "$readPreference", "txnNumber", "signature"}


@pytest.fixture
def watched(mongodb_uri, collection):
    listener = Aggregates()
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, event_listeners=[listener])
    queue = MongoQueue(
        client[collection.database.name][collection.name],
        "c",
        max_attempts=1,
        retry=RetryPolicy(initial=600, jitter=False),
    )
    yield queue, listener
    client.close()


def _fill(queue: MongoQueue) -> None:
    """31 waiting, 10 delayed and 1 backing off, 6 running (2 past their lease), 3 failed."""
    queue.put_many([{"n": n} for n in range(40)])
    queue.put_many([{"n": n} for n in range(10)], delay=600)
    for _ in range(3):
        queue.next().error("fails for good")  # max_attempts=1
    held = [queue.next() for _ in range(6)]
    for job in held[:2]:
        expire_lease(queue, job)
    queue.put({"retry": True}, priority=9, max_attempts=5)
    queue.next().error("backing off")  # not failed: delayed by the queue's backoff


def test_counts_and_stats_figures(watched) -> None:
    queue, _ = watched
    _fill(queue)
    assert queue.counts() == {
        "waiting": 31,
        "delayed": 11,
        "running": 6,
        "lease_expired": 2,
        "failed": 3,
        "completed": 0,
        "cancelled": 0,
        "total": 51,
    }
    assert queue.stats() == {"available": 42, "locked": 6, "errors": 3, "total": 51}


@pytest.mark.parametrize("method", ["counts", "stats"])
def test_every_count_is_an_index_scan(watched, method) -> None:
    queue, listener = watched
    _fill(queue)
    listener.commands.clear()
    figures = getattr(queue, method)()
    sent = list(listener.commands)
    expected = ops.count_filters(queue._now()) if method == "counts" else ops.stats_filters()
    assert len(sent) == len(expected)
    database = queue.collection.database
    for command in sent:
        pipeline = command["pipeline"]
        match = pipeline[0]["$match"]
        assert all("$group" not in stage or stage["$group"]["_id"] == 1 for stage in pipeline)
        replay = {k: v for k, v in command.items() if k not in SESSION_FIELDS}
        explained = database.command("explain", replay, verbosity="executionStats")
        stages = _stages(_find(explained, "queryPlanner")["winningPlan"])
        keys = _find(explained, "executionStats")["totalKeysExamined"]
        names = {stage for stage, _ in stages}
        assert "COLLSCAN" not in names, (match, stages)
        assert names & {"IXSCAN", "COUNT_SCAN"}, (match, stages)
        assert {index for _, index in stages if index} == {ops.count_hint(match)}
        # One key per job in the range at most (plus one to find its end); a range on
        # the claim index's last field is checked on every key of its state.
        counted = match if "visible_at" not in match else {"state": match["state"]}
        in_range = queue.collection.count_documents(counted, hint=ops.count_hint(match))
        assert keys <= in_range + 1, (match, keys, in_range)
    assert figures["total"] == 51
