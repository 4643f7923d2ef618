"""Prometheus metrics for a queue (extra ``metrics``: ``pip install 'mongoqueue[metrics]'``).

``QueueMetrics(queue)`` keeps, in its own ``CollectorRegistry``:

=====================================  =========  ===========================================
``mongoqueue_jobs_put_total``          counter    jobs this process put (``queue.events``)
``mongoqueue_jobs_completed_total``    counter    jobs the worker completed
``mongoqueue_jobs_failed_total``       counter    handler failures that made the job *failed*
                                                  (max attempts reached)
``mongoqueue_jobs_retried_total``      counter    handler failures that left the job to be
                                                  delivered again after its backoff
``mongoqueue_jobs_released_total``     counter    jobs released unfinished at shutdown
``mongoqueue_leases_lost_total``       counter    jobs whose lease the worker had lost when it
                                                  tried to settle them
``mongoqueue_lease_expiries_total``    counter    expired leases this process recorded as
                                                  failed deliveries (in a claim or ``repair``)
``mongoqueue_job_duration_seconds``    histogram  handler time, labelled by ``outcome``
``mongoqueue_jobs``                    gauge      jobs in the queue by ``state`` (available,
                                                  delayed, running, expired, failed); only
                                                  with ``depth=True`` or a ``DepthCollector``
=====================================  =========  ===========================================

Every metric has a ``queue`` label (``db.collection``). The counters are this
process's; Prometheus sums them over workers.

**Depth is exported from one place.** The depth gauges describe the queue, not
the process, and each scrape reads them from the server; if every worker
exported them, a fleet of N workers would run N reads per scrape interval for
the same numbers. So ``QueueMetrics`` exports the per-process counters only by
default, and depth comes from one exporter: the dashboard's ``/metrics``
(``mongoqueue dashboard``, every queue of its database), or one process that
registers a ``DepthCollector`` (or ``QueueMetrics(queue, depth=True)``,
``mongoqueue worker --metrics-depth``).

A worker feeds it through its observer hook: ``Worker(queue, handler,
observer=metrics.observe)``; ``mongoqueue worker --metrics-port P`` does that
and serves ``/metrics`` on 127.0.0.1:P. With an ``AsyncWorker`` the depth
gauges, if wanted, come from a ``DepthCollector`` of a sync ``MongoQueue``
(scrapes run in the HTTP server's thread), as the CLI does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "mongoqueue.metrics needs the 'metrics' extra: pip install 'mongoqueue[metrics]'"
    ) from exc

from .aio import AsyncJob, AsyncMongoQueue
from .errors import InvalidArgument, MongoQueueError
from .job import Job
from .queue import MongoQueue

__all__ = ["DEPTH_STATES", "DepthCollector", "QueueMetrics", "serve"]

log = logging.getLogger("mongoqueue.metrics")

#: ``stats()`` keys exported as the ``state`` label of ``mongoqueue_jobs`` (locked → running).
DEPTH_STATES = {
    "available": "available",
    "delayed": "delayed",
    "locked": "running",
    "expired": "expired",
    "failed": "failed",
}

#: Handler durations, in seconds: from a few milliseconds to an hour.
DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def _name(queue: MongoQueue | AsyncMongoQueue) -> str:
    return queue.collection.full_name


class DepthCollector(Collector):
    """``mongoqueue_jobs{queue, state}`` from one ``stats()`` aggregation per queue, per scrape.

    ``queues`` returns the queues to report (the dashboard lists the database's
    queues on each scrape). A queue that cannot be read is skipped and logged.
    """

    def __init__(self, queues: Callable[[], Iterable[MongoQueue]]) -> None:
        self._queues = queues

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "mongoqueue_jobs", "Jobs in the queue by state.", labels=["queue", "state"]
        )
        try:
            queues = list(self._queues())
        except MongoQueueError as exc:
            log.warning("metrics: cannot list the queues: %s", exc)
            queues = []
        for queue in queues:
            try:
                counts = queue.stats()
            except MongoQueueError as exc:
                log.warning("metrics: cannot read %s: %s", _name(queue), exc)
                continue
            for key, state in DEPTH_STATES.items():
                gauge.add_metric([_name(queue), state], counts[key])
        yield gauge

    def describe(self) -> Iterator[Metric]:
        return iter(())


class _EventCollector(Collector):
    """The queue object's own counts (puts, recorded lease expiries), read at scrape time."""

    def __init__(self, queue: MongoQueue | AsyncMongoQueue) -> None:
        self._queue = queue

    def collect(self) -> Iterator[Metric]:
        name = _name(self._queue)
        events = self._queue.events
        put = CounterMetricFamily(
            "mongoqueue_jobs_put", "Jobs put by this process.", labels=["queue"]
        )
        put.add_metric([name], events.put)
        expiries = CounterMetricFamily(
            "mongoqueue_lease_expiries",
            "Expired leases this process recorded as failed deliveries.",
            labels=["queue"],
        )
        expiries.add_metric([name], events.lease_expiries)
        yield put
        yield expiries

    def describe(self) -> Iterator[Metric]:
        return iter(())


class QueueMetrics:
    """The metrics of one queue in this process (see the module docstring)."""

    def __init__(
        self,
        queue: MongoQueue | AsyncMongoQueue,
        registry: CollectorRegistry | None = None,
        *,
        depth: bool = False,
    ) -> None:
        if depth and isinstance(queue, AsyncMongoQueue):
            raise InvalidArgument(
                "the depth gauges read stats() at scrape time, from the metrics server's "
                "thread: with an AsyncMongoQueue pass depth=False and register a "
                "DepthCollector of a MongoQueue on the same collection"
            )
        self.queue = queue
        self.registry = CollectorRegistry() if registry is None else registry
        self._label = _name(queue)

        def counter(name: str, text: str) -> Counter:
            return Counter(name, text, ["queue"], registry=self.registry)

        self.completed = counter("mongoqueue_jobs_completed", "Jobs completed by this worker.")
        self.failed = counter(
            "mongoqueue_jobs_failed", "Handler failures that made the job failed (max attempts)."
        )
        self.retried = counter(
            "mongoqueue_jobs_retried", "Handler failures after which the job will run again."
        )
        self.released = counter(
            "mongoqueue_jobs_released", "Jobs released unfinished at worker shutdown."
        )
        self.leases_lost = counter(
            "mongoqueue_leases_lost", "Jobs whose lease was lost before the worker settled them."
        )
        self.duration = Histogram(
            "mongoqueue_job_duration_seconds",
            "Handler run time in seconds, by outcome.",
            ["queue", "outcome"],
            registry=self.registry,
            buckets=DURATION_BUCKETS,
        )
        # Export zeros from the start, so rates and alerts see the series before the first event.
        for metric in (self.completed, self.failed, self.retried, self.released, self.leases_lost):
            metric.labels(self._label)
        self.registry.register(_EventCollector(queue))
        if depth and isinstance(queue, MongoQueue):
            self.registry.register(DepthCollector(lambda: [queue]))

    def observe(self, job: Job | AsyncJob, outcome: str, seconds: float) -> None:
        """The worker's observer: count one settled job and its handler time."""
        if outcome in ("failed", "abandoned"):
            outcome = "failed" if job.state == "failed" else "retried"
        target = {
            "completed": self.completed,
            "failed": self.failed,
            "retried": self.retried,
            "released": self.released,
            "lost": self.leases_lost,
        }.get(outcome)
        if target is None:
            log.warning("metrics: unknown outcome %r for job %s", outcome, job.id)
            return
        target.labels(self._label).inc()
        self.duration.labels(self._label, outcome).observe(seconds)


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
    """Serve ``registry`` at ``http://host:port/metrics`` in a thread; returns a stop function."""
    server: Any
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
