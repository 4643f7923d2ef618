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
from .queue import MongoQueue
from .worker import Worker

if TYPE_CHECKING:
    from .cli import Settings

__all__ = ["import_extra", "run_worker"]

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
    metrics_depth: bool = False,
) -> int:
    """Run the worker that fits ``handler`` until it stops; returns its exit code."""
    if is_async_handler(handler):
        consumer = settings.consumer(consumer_id)
        return asyncio.run(
            _run_async(
                settings,
                consumer,
                handler,
                queue_options,
                options,
                metrics_port,
                metrics_host,
                metrics_depth,
            )
        )
    queue = settings.queue(consumer_id, **queue_options)
    stop_metrics = None
    if metrics_port is not None:
        depth = queue if metrics_depth else None
        options["observer"], stop_metrics = _serve_metrics(queue, depth, metrics_port, metrics_host)
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
    metrics_port: int | None,
    metrics_host: str,
    metrics_depth: bool,
) -> int:
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
        if metrics_port is not None:
            depth = settings.queue(consumer, **queue_options) if metrics_depth else None
            options["observer"], stop_metrics = _serve_metrics(
                queue, depth, metrics_port, metrics_host
            )
        return await AsyncWorker(queue, handler, **options).run()
    finally:
        if stop_metrics is not None:
            stop_metrics()
        await client.close()


def _serve_metrics(
    queue: MongoQueue | AsyncMongoQueue, depth: MongoQueue | None, port: int, host: str
) -> tuple[Callable[[Any, str, float], None], Callable[[], None]]:
    """Start the metrics server; the worker's observer and a function that stops it.

    ``depth``: the sync queue whose depth gauges to export too, or None.
    """
    metrics_module = import_extra("mongoqueue.metrics", "metrics")
    metrics = metrics_module.QueueMetrics(queue)
    if depth is not None:
        metrics.registry.register(metrics_module.DepthCollector(lambda: [depth]))
    try:
        stop: Callable[[], None] = metrics_module.serve(metrics.registry, port, host)
    except OSError as exc:
        raise InvalidArgument(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    log.info("metrics at http://%s:%d/metrics", host, port)
    observe: Callable[[Any, str, float], None] = metrics.observe
    return observe, stop
