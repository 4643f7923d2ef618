"""Prometheus metrics: the worker's observer, the event counters, depth from counts()."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from prometheus_client import generate_latest
from pymongo import MongoClient, monitoring

from mongoqueue import NO_BACKOFF, Job, MongoQueue
from mongoqueue import operations as ops
from mongoqueue.metrics import DepthCollector, QueueMetrics
from mongoqueue.worker import EXIT_OK, Worker


def value(metrics: QueueMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"queue": metrics.queue.collection.full_name,
                                                    **labels})  # fmt: skip


def test_worker_outcomes_are_counted(collection) -> None:
    queue = MongoQueue(collection, "worker-1", timeout=5, max_attempts=2, retry=NO_BACKOFF)
    queue.put_many([{"n": 1}, {"n": 2}])
    queue.put({"fail": True})
    metrics = QueueMetrics(queue, depth=True)

    def handler(job: Job) -> None:
        if job.payload.get("fail"):
            raise RuntimeError("bad job")

    worker = Worker(queue, handler, handle_signals=False, idle_wait=0.2, burst=True,
                    observer=metrics.observe)  # fmt: skip
    assert worker.run() == EXIT_OK
    assert value(metrics, "mongoqueue_jobs_put_total") == 3
    assert value(metrics, "mongoqueue_jobs_completed_total") == 2
    assert value(metrics, "mongoqueue_jobs_retried_total") == 1  # first failure: retried
    assert value(metrics, "mongoqueue_jobs_failed_total") == 1  # second: max attempts
    assert value(metrics, "mongoqueue_job_duration_seconds_count", outcome="completed") == 2
    assert value(metrics, "mongoqueue_job_duration_seconds_count", outcome="failed") == 1
    assert value(metrics, "mongoqueue_jobs", state="failed") == 1
    assert value(metrics, "mongoqueue_jobs", state="waiting") == 0
    assert value(metrics, "mongoqueue_jobs_lease_expired") == 0
    assert value(metrics, "mongoqueue_expired_leases_reclaimed_total") == 0
    text = generate_latest(metrics.registry).decode()
    assert "# TYPE mongoqueue_job_duration_seconds histogram" in text
    # By default a worker's metrics are its own counters: depth comes from one place.
    assert value(QueueMetrics(queue), "mongoqueue_jobs", state="failed") is None


def test_a_failing_observer_does_not_stop_the_worker(collection) -> None:
    queue = MongoQueue(collection, "worker-1", timeout=5, retry=NO_BACKOFF)
    queue.put({"n": 1})

    def observer(job: Job, outcome: str, seconds: float) -> None:
        raise ValueError("observer bug")

    worker = Worker(queue, lambda job: None, handle_signals=False, idle_wait=0.2, burst=True,
                    observer=observer)  # fmt: skip
    assert worker.run() == EXIT_OK
    assert worker.counts["completed"] == 1


def test_an_async_worker_feeds_the_same_metrics(collection, mongodb_uri) -> None:
    import asyncio

    from pymongo import AsyncMongoClient

    from mongoqueue import AsyncJob, AsyncMongoQueue, AsyncWorker, InvalidArgument

    MongoQueue(collection, "producer").put_many([{"n": 1}, {"n": 2}])
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
    queue = AsyncMongoQueue(client[collection.database.name][collection.name], "w", timeout=5)
    with pytest.raises(InvalidArgument, match="depth=False"):
        QueueMetrics(queue, depth=True)
    metrics = QueueMetrics(queue)
    metrics.registry.register(DepthCollector(lambda: [MongoQueue(collection, "depth")]))

    async def handler(job: AsyncJob) -> None:
        await asyncio.sleep(0)

    async def main() -> int:
        try:
            worker = AsyncWorker(queue, handler, handle_signals=False, idle_wait=0.2,
                                 burst=True, observer=metrics.observe)  # fmt: skip
            return await worker.run()
        finally:
            await client.close()

    assert asyncio.run(main()) == EXIT_OK
    assert value(metrics, "mongoqueue_jobs_completed_total") == 2
    assert value(metrics, "mongoqueue_job_duration_seconds_count", outcome="completed") == 2
    assert value(metrics, "mongoqueue_jobs", state="waiting") == 0


def expire_lease(collection: Any, job: Job) -> None:
    """Move a held job's lease end into the past, as if its consumer had stalled."""
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    collection.update_one({"_id": job.id}, {"$set": {"lease_expires_at": past, "visible_at": past}})


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)
        self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_depth_gauges_come_from_counts_with_disjoint_states(mongodb_uri, collection) -> None:
    listener = Commands()
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, event_listeners=[listener])
    try:
        queue = MongoQueue(client[collection.database.name][collection.name], "c", timeout=30)
        queue.put_many([{"n": 1}, {"n": 2}, {"n": 3}])
        queue.put({"n": 4}, delay=600)
        first = queue.next()
        queue.next()
        expire_lease(collection, first)  # running, and past its lease
        queue.counts()  # syncs the clock estimate, so the scrape sends only its counts
        listener.names.clear()
        families = {family.name: family for family in DepthCollector(lambda: [queue]).collect()}
        gauges = {s.labels["state"]: s.value for s in families["mongoqueue_jobs"].samples}
        # Only counts, no aggregation with $group over the collection.
        assert set(listener.names) == {"aggregate"}
        assert len(listener.names) == len(ops.count_filters(queue._now()))
        assert all("$group" not in str(c["pipeline"][0]) for c in listener.commands[-8:])
        assert gauges == {"waiting": 1, "delayed": 1, "running": 2, "failed": 0,
                          "completed": 0, "cancelled": 0}  # fmt: skip
        assert sum(gauges.values()) == queue.counts()["total"] == 4
        (expired,) = families["mongoqueue_jobs_lease_expired"].samples
        assert expired.value == 1
    finally:
        client.close()


#: Every series a worker's QueueMetrics exports: name -> (type, label names).
WORKER_SERIES = {
    "mongoqueue_jobs_put": ("counter", {"queue"}),
    "mongoqueue_jobs_completed": ("counter", {"queue"}),
    "mongoqueue_jobs_retried": ("counter", {"queue"}),
    "mongoqueue_jobs_failed": ("counter", {"queue"}),
    "mongoqueue_jobs_released": ("counter", {"queue"}),
    "mongoqueue_jobs_lease_lost": ("counter", {"queue"}),
    "mongoqueue_expired_leases_reclaimed": ("counter", {"queue"}),
    "mongoqueue_job_duration_seconds": ("histogram", {"queue", "outcome"}),
    "mongoqueue_jobs": ("gauge", {"queue", "state"}),
    "mongoqueue_jobs_lease_expired": ("gauge", {"queue"}),
}


def test_the_exposition_parses_with_the_official_parser(collection) -> None:
    """Names, types and labels as documented; every counter has its _created sample."""
    from prometheus_client.parser import text_string_to_metric_families

    queue = MongoQueue(collection, "worker-1", timeout=5, max_attempts=2, retry=NO_BACKOFF)
    queue.put_many([{"fail": False}, {"fail": True}])
    metrics = QueueMetrics(queue, depth=True)  # every series, the depth gauges included

    def handler(job: Job) -> None:
        if job.payload["fail"]:
            raise RuntimeError("bad job")

    Worker(queue, handler, handle_signals=False, idle_wait=0.2, burst=True,
           observer=metrics.observe).run()  # fmt: skip
    families = {
        family.name: family
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
    }
    # In the text format each counter and histogram has its _created series as a gauge:
    # all of them (prometheus_client's default kept), not some.
    created = {f"{n}_created" for n, (kind, _) in WORKER_SERIES.items() if kind != "gauge"}
    assert set(families) == set(WORKER_SERIES) | created
    for name, (kind, labels) in WORKER_SERIES.items():
        family = families[name]
        assert family.type == kind, name
        assert family.documentation, name
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
        if kind == "counter":
            assert {s.name for s in family.samples} == {f"{name}_total"}
        if kind != "gauge":
            stamps = families[f"{name}_created"]
            assert stamps.type == "gauge"
            assert all(s.value > 0 for s in stamps.samples)
    outcomes = {
        s.labels["outcome"]
        for s in families["mongoqueue_job_duration_seconds"].samples
        if "outcome" in s.labels
    }
    assert outcomes == {"completed", "retried", "failed"}  # documented values only
    lost = families["mongoqueue_jobs_lease_lost"].samples
    assert [s.value for s in lost if s.name.endswith("_total")] == [0]


def test_up_gauge(collection) -> None:
    from prometheus_client import CollectorRegistry

    from mongoqueue.metrics import UpCollector

    registry = CollectorRegistry()
    registry.register(UpCollector(lambda: collection.database.command("ping")))
    assert registry.get_sample_value("mongoqueue_up") == 1
    down: MongoClient[dict[str, Any]] = MongoClient(
        "mongodb://127.0.0.1:1/", serverSelectionTimeoutMS=200
    )
    try:
        registry = CollectorRegistry()
        registry.register(UpCollector(lambda: down.admin.command("ping")))
        assert registry.get_sample_value("mongoqueue_up") == 0
    finally:
        down.close()
