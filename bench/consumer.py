"""Consumers that run in their own processes (started with multiprocessing, spawn).

A consumer in its own process keeps the client's GIL out of the producer's way,
as in production.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

from pymongo import MongoClient

from mongoqueue import MongoQueue


def _queue(uri: str, database: str, collection: str, name: str) -> MongoQueue:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    q = MongoQueue(client[database][collection], f"{name}-{os.getpid()}", timeout=300)
    q.ensure_indexes()
    client.admin.command("ping")
    return q


def drain(uri: str, database: str, collection: str, start: Any, results: Any) -> None:
    """Claim and complete until the queue is empty; report the job numbers seen.

    ``start`` is a barrier shared with the parent, so that every consumer starts
    at once and the parent's clock covers the whole run.
    """
    q = _queue(uri, database, collection, "drain")
    seen: list[int] = []
    start.wait()
    began = time.perf_counter()
    while (job := q.next()) is not None:
        seen.append(job.payload["n"])
        job.complete()
    results.put((seen, time.perf_counter() - began))


def wait_for_jobs(
    uri: str,
    database: str,
    collection: str,
    polling: bool,
    count: int,
    ready: Any,
    results: Any,
) -> None:
    """``next(wait=)`` in a loop; report put -> handler start latencies (seconds).

    Each payload carries ``t``, the producer's ``time.time()`` just before its
    ``put()``; the handler starts when ``next()`` returns. With ``polling`` the
    queue is told change streams are unavailable, so it uses its polling
    fallback (what it does on a standalone mongod).
    """
    q = _queue(uri, database, collection, "waiter")
    if polling:
        q._change_streams = False  # the fallback for servers without change streams
    latencies: list[float] = []
    ready.set()
    while len(latencies) < count:
        job = q.next(wait=30)
        if job is None:
            break
        latencies.append(time.time() - job.payload["t"])
        job.complete()
    results.put(latencies)


def memory(uri: str, database: str, collection: str, checkpoints: list[int], results: Any) -> None:
    """A plain consumer loop with ``next(wait=)``; RSS (bytes) at each checkpoint.

    Stops after the last checkpoint (the parent keeps the queue topped up).
    """
    import psutil

    process = psutil.Process()
    q = _queue(uri, database, collection, "memory")
    done = 0
    rss: dict[int, int] = {}
    while done < max(checkpoints):
        job = q.next(wait=30)
        if job is None:
            break
        job.complete()
        done += 1
        if done in checkpoints:
            gc.collect()
            rss[done] = process.memory_info().rss
    results.put((done, rss))


def worker_memory(
    uri: str, database: str, collection: str, checkpoints: list[int], results: Any
) -> None:
    """A :class:`~mongoqueue.worker.Worker` (4 threads) with a no-op handler; RSS at checkpoints.

    The handler counts the jobs it ran and reads RSS when the count reaches a
    checkpoint; at the last one it asks the worker to stop.
    """
    import threading

    import psutil

    from mongoqueue.worker import Worker

    process = psutil.Process()
    q = _queue(uri, database, collection, "worker-memory")
    lock = threading.Lock()
    done = 0
    rss: dict[int, int] = {}

    def handler(job: Any) -> None:
        nonlocal done
        with lock:
            done += 1
            if done in checkpoints:
                gc.collect()
                rss[done] = process.memory_info().rss
            if done >= max(checkpoints):
                worker.stop()

    worker = Worker(q, handler, concurrency=4, handle_signals=False, grace=60)
    worker.run()
    results.put((done, rss))


def task_worker(uri: str, database: str, collection: str, ready: Any, stop: Any) -> None:
    """An app worker (``App.worker``) on queue ``collection`` running a no-op task,
    until ``stop`` is set: the far end of the enqueue -> result row."""
    import threading

    from mongoqueue import App

    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    app = App(client[database], consumer_id=f"bench-worker-{os.getpid()}")

    @app.task(name="noop", queue=collection)
    def noop(t: float) -> float:
        return t

    worker = app.worker([collection], idle_wait=1.0, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    ready.set()
    stop.wait()
    worker.stop()
    thread.join()
    client.close()
