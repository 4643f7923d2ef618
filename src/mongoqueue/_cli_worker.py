"""What ``mongoqueue worker`` runs: Worker or AsyncWorker, with optional metrics.

Split from :mod:`mongoqueue.cli`, which parses the options. A coroutine
function (``async def``) handler runs with :class:`~mongoqueue.AsyncWorker`
on an ``AsyncMongoClient`` under ``asyncio.run``; any other callable with
:class:`~mongoqueue.worker.Worker`. Both get the same options, and with
``--metrics-port`` the same Prometheus metrics: this process's counters, and
with ``--metrics-depth`` the queue's depth gauges too (off by default: depth is
exported from one place, the dashboard; see :mod:`mongoqueue.metrics`). The
depth gauges of an async worker are read through a sync queue, since scrapes
come from the HTTP server's thread.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pymongo import AsyncMongoClient

from ._worker_core import is_async_handler
from .aio import AsyncMongoQueue
from .aio_worker import AsyncWorker
from .errors import InvalidArgument
from .httpauth import BasicAuth
from .queue import MongoQueue
from .worker import Worker

if TYPE_CHECKING:
    from .cli import Settings

__all__ = ["import_extra", "run_app_worker", "run_worker"]

log = logging.getLogger("mongoqueue.worker")


def import_extra(module: str, extra: str) -> Any:
    """Import a module of an optional extra, or say which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise InvalidArgument(f"{exc} (pip install 'mongoqueue[{extra}]')") from exc


def run_worker(
    settings: Settings,
    handler: Callable[..., Any],
    consumer_id: str | None,
    queue_options: dict[str, Any],
    options: dict[str, Any],
    *,
    metrics_port: int | None,
    metrics_host: str,
    metrics_auth: BasicAuth | None = None,
    metrics_depth: bool = False,
) -> int:
    """Run the worker that fits ``handler`` until it stops; returns its exit code."""
    metrics = (metrics_port, metrics_host, metrics_auth)
    if is_async_handler(handler):
        consumer = settings.consumer(consumer_id)
        return asyncio.run(
            _run_async(settings, consumer, handler, queue_options, options, metrics, metrics_depth)
        )
    queue = settings.queue(consumer_id, **queue_options)
    stop_metrics = None
    if metrics_port is not None:
        depth = queue if metrics_depth else None
        options["observer"], stop_metrics = _serve_metrics(queue, depth, *metrics)
    try:
        return Worker(queue, handler, **options).run()
    finally:
        if stop_metrics is not None:
            stop_metrics()


async def _run_async(
    settings: Settings,
    consumer: str,
    handler: Callable[..., Any],
    queue_options: dict[str, Any],
    options: dict[str, Any],
    metrics: tuple[int | None, str, BasicAuth | None],
    metrics_depth: bool,
) -> int:
    settings.check_uri()
    try:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.uri, **settings.client_options
        )
    except ValueError as exc:  # pymongo raises a bare ValueError for some URIs
        raise InvalidArgument(f"invalid connection settings: {exc}") from exc
    stop_metrics = None
    try:
        collection = client[settings.db][settings.collection]
        queue = AsyncMongoQueue(collection, consumer, **queue_options)
        if metrics[0] is not None:
            depth = settings.queue(consumer, **queue_options) if metrics_depth else None
            options["observer"], stop_metrics = _serve_metrics(queue, depth, *metrics)
        return await AsyncWorker(queue, handler, **options).run()
    finally:
        if stop_metrics is not None:
            stop_metrics()
        await client.close()


def _serve_metrics(
    queue: MongoQueue | AsyncMongoQueue,
    depth: MongoQueue | None,
    port: int | None,
    host: str,
    auth: BasicAuth | None,
) -> tuple[Callable[[Any, str, float], None], Callable[[], None]]:
    """Start the metrics server; the worker's observer and a function that stops it.

    ``depth``: the sync queue whose depth gauges to export too, or None.
    """
    assert port is not None
    metrics_module = import_extra("mongoqueue.metrics", "metrics")
    metrics = metrics_module.QueueMetrics(queue)
    if depth is not None:
        metrics.registry.register(metrics_module.DepthCollector(lambda: [depth]))
    # The command refused a non-loopback host without auth unless --metrics-no-auth.
    stop: Callable[[], None] = metrics_module.serve(
        metrics.registry, port, host, auth=auth, allow_unauthenticated=auth is None
    )
    log.info("metrics at http://%s:%d/metrics", host, port)
    observe: Callable[[Any, str, float], None] = metrics.observe
    return observe, stop


def run_app_worker(
    app: Any,
    queues: list[str],
    options: dict[str, Any],
    *,
    metrics_port: int | None,
    metrics_host: str,
    metrics_auth: BasicAuth | None = None,
) -> int:
    """Run the worker of a task app (``mongoqueue worker module:app``) on the app's database.

    An ``AsyncApp`` runs on an AsyncWorker under ``asyncio.run``, an ``App`` on a
    Worker. A transactional task on a server without transactions fails here, at
    start, with ``TransactionsUnsupported``.
    """
    from .tasks import AsyncApp

    if isinstance(app, AsyncApp):
        return asyncio.run(
            _run_async_app(app, queues, options, metrics_port, metrics_host, metrics_auth)
        )
    worker = app.worker(queues or None, **options)
    stop_metrics = None
    if metrics_port is not None:
        worker.observer, stop_metrics = _serve_metrics(
            worker.queue, None, metrics_port, metrics_host, metrics_auth
        )
    try:
        code: int = worker.run()
        return code
    finally:
        if stop_metrics is not None:
            stop_metrics()


async def _run_async_app(
    app: Any,
    queues: list[str],
    options: dict[str, Any],
    metrics_port: int | None,
    metrics_host: str,
    metrics_auth: BasicAuth | None,
) -> int:
    worker = await app.worker(queues or None, **options)
    stop_metrics = None
    if metrics_port is not None:
        worker.observer, stop_metrics = _serve_metrics(
            worker.queue, None, metrics_port, metrics_host, metrics_auth
        )
    try:
        code: int = await worker.run()
        return code
    finally:
        if stop_metrics is not None:
            stop_metrics()
