"""Prometheus metrics: the worker's observer, the event counters, depth from one aggregation."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest
from pymongo import MongoClient, monitoring

from mongoqueue import NO_BACKOFF, Job, MongoQueue
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
    assert value(metrics, "mongoqueue_jobs", state="available") == 0
    assert value(metrics, "mongoqueue_lease_expiries_total") == 0
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
    assert value(metrics, "mongoqueue_jobs", state="available") == 0


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_depth_gauges_come_from_one_aggregation(mongodb_uri, collection) -> None:
    listener = Commands()
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, event_listeners=[listener])
    try:
        queue = MongoQueue(client[collection.database.name][collection.name], "c")
        queue.put({"n": 1})
        queue.put({"n": 2}, delay=600)
        queue.stats()  # syncs the clock estimate, so the scrape sends only its own query
        listener.names.clear()
        gauges = {
            sample.labels["state"]: sample.value
            for family in DepthCollector(lambda: [queue]).collect()
            for sample in family.samples
        }
        assert listener.names == ["aggregate"]
        assert gauges == {"available": 1, "delayed": 1, "running": 0, "expired": 0, "failed": 0}
    finally:
        client.close()
