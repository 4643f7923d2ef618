"""Prometheus metrics for a queue (extra ``metrics``: ``pip install 'mongoqueue[metrics]'``).

``QueueMetrics(queue)`` keeps, in its own ``CollectorRegistry``:

==============================================  =========  ==================================
``mongoqueue_jobs_put_total``                   counter    jobs this process put
                                                           (``queue.events``)
``mongoqueue_jobs_completed_total``             counter    jobs the worker completed
``mongoqueue_jobs_retried_total``               counter    failed attempts (handler raised or
                                                           hard limit) after which the job
                                                           runs again after its backoff
``mongoqueue_jobs_failed_total``                counter    jobs failed for good: a failed
                                                           attempt reached max attempts
``mongoqueue_jobs_released_total``              counter    jobs released unfinished at shutdown
``mongoqueue_jobs_lease_lost_total``            counter    jobs the worker was running whose
                                                           lease it had lost when it settled
                                                           them (they may run twice)
``mongoqueue_expired_leases_reclaimed_total``   counter    expired leases of other consumers
                                                           this process took back as failed
                                                           deliveries (in a claim or
                                                           ``repair``)
``mongoqueue_job_duration_seconds``             histogram  handler time, by ``outcome``
                                                           (completed, retried, failed,
                                                           released, lost)
``mongoqueue_jobs``                             gauge      jobs by ``state``: waiting, delayed,
                                                           running, failed, completed,
                                                           cancelled (disjoint: they sum to
                                                           the jobs in the collection); only
                                                           with ``depth=True`` or a
                                                           ``DepthCollector``
``mongoqueue_jobs_lease_expired``               gauge      running jobs past their lease (a
                                                           subset of ``state="running"``)
==============================================  =========  ==================================

Every counter also has its ``_created`` sample (prometheus_client's default);
the dashboard adds ``mongoqueue_up`` (:class:`UpCollector`).

Every metric has a ``queue`` label (``db.collection``). The counters are this
process's; Prometheus sums them over workers. The depth gauges are read at
scrape time from ``queue.counts()`` (a few index-served counts per queue).

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
and serves ``/metrics`` on 127.0.0.1:P. An ``AsyncWorker`` takes the same
observer; its ``QueueMetrics(async_queue, depth=False)`` gets the depth gauges
from a ``DepthCollector`` of a sync ``MongoQueue`` (as the CLI does).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "mongoqueue.metrics needs the 'metrics' extra: pip install 'mongoqueue[metrics]'"
    ) from exc

from .aio import AsyncJob, AsyncMongoQueue
from .errors import InvalidArgument, MongoQueueError
from .httpauth import BasicAuth, PortInUse, require_auth
from .job import Job
from .queue import MongoQueue

__all__ = ["DEPTH_STATES", "DepthCollector", "QueueMetrics", "UpCollector", "serve"]

log = logging.getLogger("mongoqueue.metrics")

#: ``counts()`` keys exported as the ``state`` label of ``mongoqueue_jobs``: disjoint states.
DEPTH_STATES = ("waiting", "delayed", "running", "failed", "completed", "cancelled")

#: Handler durations, in seconds: from a few milliseconds to an hour.
DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def _name(queue: MongoQueue | AsyncMongoQueue) -> str:
    return queue.collection.full_name


class DepthCollector(Collector):
    """``mongoqueue_jobs{queue, state}`` and ``mongoqueue_jobs_lease_expired{queue}``,
    from ``counts()`` of each queue, per scrape.

    ``queues`` returns the queues to report (the dashboard lists the database's
    queues on each scrape). A queue that cannot be read is skipped and logged.
    """

    def __init__(self, queues: Callable[[], Iterable[MongoQueue]]) -> None:
        self._queues = queues

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "mongoqueue_jobs", "Jobs in the queue by state.", labels=["queue", "state"]
        )
        expired = GaugeMetricFamily(
            "mongoqueue_jobs_lease_expired",
            "Running jobs whose lease has ended (part of state running).",
            labels=["queue"],
        )
        try:
            queues = list(self._queues())
        except MongoQueueError as exc:
            log.warning("metrics: cannot list the queues: %s", exc)
            queues = []
        for queue in queues:
            try:
                counts = queue.counts()
            except MongoQueueError as exc:
                log.warning("metrics: cannot read %s: %s", _name(queue), exc)
                continue
            for state in DEPTH_STATES:
                gauge.add_metric([_name(queue), state], counts[state])
            expired.add_metric([_name(queue)], counts["lease_expired"])
        yield gauge
        yield expired

    def describe(self) -> Iterator[Metric]:
        return iter(())


class UpCollector(Collector):
    """``mongoqueue_up``: 1 when MongoDB answered a ``ping`` at scrape time, else 0.

    So a scrape while MongoDB is down says so (the depth gauges are then absent),
    rather than answering with no samples.
    """

    def __init__(self, ping: Callable[[], object]) -> None:
        self._ping = ping

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "mongoqueue_up", "1 if MongoDB answered at scrape time, else 0.", labels=[]
        )
        try:
            self._ping()
            up = 1
        except Exception as exc:  # any failure to reach the server means "down"
            log.warning("metrics: MongoDB did not answer: %s", exc)
            up = 0
        gauge.add_metric([], up)
        yield gauge

    def describe(self) -> Iterator[Metric]:
        return iter(())


class _EventCollector(Collector):
    """The queue object's own counts (puts, recorded lease expiries), read at scrape time."""

    def __init__(self, queue: MongoQueue | AsyncMongoQueue) -> None:
        self._queue = queue
        # The _created sample, as prometheus_client's own counters have (from the same clock).
        self._created = time.time()

    def collect(self) -> Iterator[Metric]:
        name = _name(self._queue)
        events = self._queue.events
        put = CounterMetricFamily(
            "mongoqueue_jobs_put", "Jobs put by this process.", labels=["queue"]
        )
        put.add_metric([name], events.put, created=self._created)
        expiries = CounterMetricFamily(
            "mongoqueue_expired_leases_reclaimed",
            "Expired leases of other consumers this process took back as failed deliveries.",
            labels=["queue"],
        )
        expiries.add_metric([name], events.lease_expiries, created=self._created)
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
                "the depth gauges read counts() at scrape time, from the metrics server's "
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
            "mongoqueue_jobs_failed", "Jobs failed for good: a failed attempt reached max attempts."
        )
        self.retried = counter(
            "mongoqueue_jobs_retried", "Failed attempts after which the job runs again."
        )
        self.released = counter(
            "mongoqueue_jobs_released", "Jobs released unfinished at worker shutdown."
        )
        self.leases_lost = counter(
            "mongoqueue_jobs_lease_lost",
            "Jobs this worker ran whose lease it had lost when it settled them.",
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


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not news


def serve(
    registry: CollectorRegistry,
    port: int,
    host: str = "127.0.0.1",
    *,
    auth: BasicAuth | None = None,
    allow_unauthenticated: bool = False,
) -> Callable[[], None]:
    """Serve ``registry`` at ``http://host:port/metrics`` in a thread; returns a stop function.

    With ``auth`` every scrape needs HTTP basic credentials (Prometheus's
    ``basic_auth`` in a scrape config); a wrong or missing one gets 401. On a
    non-loopback ``host`` it raises :class:`~mongoqueue.httpauth.AuthenticationRequired`
    without ``auth``, unless ``allow_unauthenticated``; and
    :class:`~mongoqueue.httpauth.PortInUse` when the port is taken.
    """
    if not allow_unauthenticated:
        require_auth(
            host,
            auth,
            "metrics",
            "Pass auth=BasicAuth(...) (CLI: --metrics-password-env or --metrics-password-file), "
            "or allow_unauthenticated=True (CLI: --metrics-no-auth).",
        )
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if auth is not None and not auth.check(environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", auth.challenge)],
            )
            return [b"401: authentication required\n"]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    class Server(_Server):
        pass

    try:
        Server.address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server = make_server(host, port, app, Server, handler_class=_QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"metrics port {port} on {host} is already in use: choose another --metrics-port"
            ) from exc
        raise InvalidArgument(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    thread = threading.Thread(target=server.serve_forever, name="mongoqueue-metrics", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
