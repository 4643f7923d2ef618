"""Worker and AsyncWorker side by side, so one behavioural test runs against both.

``workers.worker(handler, **options)`` builds either worker on the test's
collection (the async one on its own ``AsyncMongoClient``); ``workers.run(w)``
runs it to the end in this thread, ``workers.start(w)`` in a background thread
(the async one on its own event loop there) so the test can watch and stop it.
Handlers come in pairs, one per kind: ``workers.handler(body)`` turns a plain,
non-blocking ``body(job)`` into either; ``workers.pick(sync, async_)`` chooses;
``workers.waiting(event)`` waits for a ``threading.Event`` without blocking the
event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from pymongo import AsyncMongoClient, MongoClient
from pymongo.collection import Collection

from mongoqueue import NO_BACKOFF, AsyncMongoQueue, AsyncWorker, MongoQueue, RetryPolicy, Worker


class Runner:
    """A worker running in a background thread."""

    def __init__(self, target: Callable[[], int]) -> None:
        self.codes: list[int] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self.thread.start()

    def _run(self, target: Callable[[], int]) -> None:
        try:
            self.codes.append(target())
        except BaseException as exc:
            self.errors.append(exc)

    def join(self, timeout: float = 30) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"worker still running after {timeout}s"
        assert not self.errors, self.errors
        (code,) = self.codes
        return code


class SyncWorkers:
    kind = "sync"
    worker_class: type = Worker

    def __init__(self, collection: Collection[Any], uri: str) -> None:
        self.collection = collection
        self.uri = uri
        self._sync_clients: list[MongoClient[dict[str, Any]]] = []

    def queue(
        self,
        consumer_id: str = "worker-1",
        timeout: float = 5,
        max_attempts: int = 1,
        retry: RetryPolicy = NO_BACKOFF,
        uri: str | None = None,
    ) -> Any:
        """A queue on the test's collection (or the same names at ``uri``)."""
        collection = self.collection
        if uri is not None:
            client: MongoClient[dict[str, Any]] = MongoClient(uri)
            self._sync_clients.append(client)
            collection = client[collection.database.name][collection.name]
        return MongoQueue(collection, consumer_id, timeout, max_attempts, retry=retry)

    def worker(self, handler: Any, **options: Any) -> Any:
        """A worker on a new queue; ``timeout``, ``max_attempts``, ``retry`` go to the queue."""
        options.setdefault("handle_signals", False)
        options.setdefault("idle_wait", 0.2)
        names = ("consumer_id", "timeout", "max_attempts", "retry", "uri")
        queue = self.queue(**{name: options.pop(name) for name in names if name in options})
        return self.worker_class(queue, handler, **options)

    def run(self, worker: Any) -> int:
        code: int = worker.run()
        return code

    def start(self, worker: Any) -> Runner:
        return Runner(lambda: self.run(worker))

    # ------------------------------------------------------------------ handlers

    def pick(self, sync: Callable[..., Any], async_: Callable[..., Any]) -> Callable[..., Any]:
        return sync

    def handler(self, body: Callable[[Any], object]) -> Callable[..., Any]:
        def handle(job: Any) -> None:
            body(job)

        async def handle_async(job: Any) -> None:
            body(job)

        return self.pick(handle, handle_async)

    def waiting(self, event: threading.Event, seconds: float = 60) -> Callable[..., Any]:
        """A handler that returns once ``event`` is set (or after ``seconds``)."""

        def wait(job: Any) -> None:
            event.wait(seconds)

        async def wait_async(job: Any) -> None:
            deadline = time.monotonic() + seconds
            while not event.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

        return self.pick(wait, wait_async)

    def sleeping(self, seconds: float) -> Callable[..., Any]:
        def sleep(job: Any) -> None:
            time.sleep(seconds)

        async def sleep_async(job: Any) -> None:
            await asyncio.sleep(seconds)

        return self.pick(sleep, sleep_async)

    def close(self) -> None:
        for client in self._sync_clients:
            client.close()


class AsyncWorkers(SyncWorkers):
    kind = "async"
    worker_class = AsyncWorker

    def __init__(self, collection: Collection[Any], uri: str) -> None:
        super().__init__(collection, uri)
        self._clients: dict[int, AsyncMongoClient[dict[str, Any]]] = {}

    def queue(
        self,
        consumer_id: str = "worker-1",
        timeout: float = 5,
        max_attempts: int = 1,
        retry: RetryPolicy = NO_BACKOFF,
        uri: str | None = None,
    ) -> Any:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri or self.uri)
        collection = client[self.collection.database.name][self.collection.name]
        queue = AsyncMongoQueue(collection, consumer_id, timeout, max_attempts, retry=retry)
        self._clients[id(queue)] = client
        return queue

    def run(self, worker: Any) -> int:
        client = self._clients.pop(id(worker.queue))

        async def main() -> int:
            try:
                code: int = await worker.run()
                return code
            finally:
                await client.close()

        return asyncio.run(main())

    def pick(self, sync: Callable[..., Any], async_: Callable[..., Any]) -> Callable[..., Any]:
        return async_

    def close(self) -> None:
        for client in self._clients.values():
            asyncio.run(client.close())
        self._clients.clear()
        super().close()
