"""The asyncio twin of :class:`~mongoqueue.App`: ``AsyncApp(async_db)``.

Same decorator, options and semantics; ``enqueue``, ``status``, ``result`` and
``cancel`` are coroutines::

    app = AsyncApp(AsyncMongoClient(uri).mydb)

    @app.task
    async def resize(image_id):
        ...

    handle = await resize.enqueue(image_id)
    await handle.result(timeout=30)

Workers: :meth:`AsyncApp.worker` (an :class:`~mongoqueue.AsyncWorker`),
``mongoqueue worker module:app``, or ``await app.run_until_empty()``.
Coroutine tasks are awaited; plain functions run in a thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

from pymongo.asynchronous.database import AsyncDatabase

from .._core import DEFAULT_RETRY
from ..aio import AsyncMongoQueue
from ..errors import InvalidArgumentType, driver_errors
from ..retry import RetryPolicy
from ..status import JobStatus
from .aio_runner import AsyncQueueGroup, AsyncTaskRunner, run_until_empty_async
from .aio_scheduler import AsyncAppWorker, AsyncScheduler
from .app import DEFAULT_KEEP_RESULT, DEFAULT_MAX_PASSES, AppCore, task_codec_options
from .registry import CallOptions, TaskDef
from .results import wait_result_async
from .runner import check_transactions

__all__ = ["AsyncApp", "AsyncTask", "AsyncTaskHandle"]

F = TypeVar("F", bound=Callable[..., Any])


class AsyncApp(AppCore):
    """Tasks on the queues of one pymongo ``AsyncDatabase`` (see :class:`~mongoqueue.App`)."""

    _async = True

    def __init__(
        self,
        db: AsyncDatabase[Any],
        *,
        default_queue: str = "default",
        consumer_id: str | None = None,
        timeout: float = 300,
        max_attempts: int = 3,
        retry: RetryPolicy = DEFAULT_RETRY,
        keep_result: float | timedelta = DEFAULT_KEEP_RESULT,
        max_passes: int = DEFAULT_MAX_PASSES,
        partitions: int | Mapping[str, int] = 1,
    ) -> None:
        if not isinstance(db, AsyncDatabase):
            raise InvalidArgumentType(
                f"db must be a pymongo AsyncDatabase (for example AsyncMongoClient(uri).mydb), "
                f"got {type(db).__name__}; use App with a Database"
            )
        super().__init__(
            default_queue=default_queue,
            consumer_id=consumer_id,
            timeout=timeout,
            max_attempts=max_attempts,
            retry=retry,
            keep_result=keep_result,
            max_passes=max_passes,
            partitions=partitions,
        )
        self.db = db
        self._queues: dict[str, AsyncMongoQueue] = {}

    def __repr__(self) -> str:
        return f"<AsyncApp {self.db.name} tasks={self.registry.names()}>"

    @overload
    def task(self, func: F) -> AsyncTask: ...

    @overload
    def task(
        self,
        func: None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        priority: int = 0,
        keep_result: float | timedelta | None = None,
        transactional: bool = False,
    ) -> Callable[[F], AsyncTask]: ...

    def task(self, func: Any = None, **options: Any) -> Any:
        """Register a function as a task (see :meth:`mongoqueue.App.task`)."""

        settings = self._task_options(options)

        def register(function: Callable[..., Any]) -> AsyncTask:
            return AsyncTask(self, self._define(function, dict(settings)))

        if func is not None:
            if options:
                raise InvalidArgumentType("use @app.task or @app.task(name=..., ...)")
            return register(func)
        return register

    def queue(self, name: str | None = None) -> AsyncMongoQueue:
        """The raw async queue of ``name`` (default: the default queue)."""
        name = name or self.default_queue
        queue = self._queues.get(name)
        if queue is None:
            collection = self.db.get_collection(
                name, codec_options=task_codec_options(self.db.codec_options)
            )
            queue = AsyncMongoQueue(
                collection,
                self.consumer_id,
                self.timeout,
                self.max_attempts,
                retry=self.retry,
                partitions=self.partitions_of(name),
            )
            self._queues[name] = queue
        return queue

    @contextlib.contextmanager
    def bound_to(self, db: AsyncDatabase[Any]) -> Iterator[None]:
        """Use ``db`` instead of the app's database inside the block (for tests:
        see :mod:`mongoqueue.testing`); the tasks enqueue and run there."""
        saved, self.db, self._queues = (self.db, self._queues), db, {}
        try:
            yield
        finally:
            self.db, self._queues = saved

    def get_task(self, name: str) -> TaskDef:
        return self.registry[name]

    def handle(self, job_id: Any, queue: str | None = None) -> AsyncTaskHandle:
        return AsyncTaskHandle(self.queue(queue), job_id)

    async def status(self, job_id: Any, queue: str | None = None) -> JobStatus:
        return await self.queue(queue).status(job_id)

    async def check_transactions(self, queues: Iterable[str] | None = None) -> None:
        served = self.served_queues(queues)
        if any(t.transactional and t.queue in served for t in self.registry.values()):
            with driver_errors():
                hello = await self.db.command("hello")
            check_transactions(hello, self.registry, served)

    async def worker(self, queues: Iterable[str] | None = None, **options: Any) -> AsyncAppWorker:
        """An :class:`~mongoqueue.AsyncWorker` running this app's tasks (see ``App.worker``)."""
        served = self.served_queues(queues)
        await self.check_transactions(served)
        group = AsyncQueueGroup([self.queue(name) for name in served])
        schedules = self.served_schedules(served)
        scheduler = AsyncScheduler(self, schedules) if schedules else None
        return AsyncAppWorker(group, AsyncTaskRunner(self), scheduler=scheduler, **options)

    def scheduler(self, queues: Iterable[str] | None = None) -> AsyncScheduler:
        """The schedules of ``queues`` (default: all): ``await .tick()`` fires what is
        due now (workers do it on their own; this is for tests and scripts)."""
        served = self.served_queues(queues) if queues is not None else self.registry.queues()
        return AsyncScheduler(self, self.served_schedules(served))

    async def run_until_empty(self, queues: Iterable[str] | None = None) -> int:
        """Run queued jobs in this task until none is claimable now (for tests)."""
        served = self.served_queues(queues)
        await self.check_transactions(served)
        return await run_until_empty_async(
            [self.queue(name) for name in served], AsyncTaskRunner(self)
        )


class AsyncTask:
    """A registered task of an :class:`AsyncApp`: ``await task.enqueue(...)``."""

    def __init__(
        self, app: AsyncApp, definition: TaskDef, options: CallOptions | None = None
    ) -> None:
        self.app = app
        self.definition = definition
        self._options = options or CallOptions()
        self.__wrapped__ = definition.func
        self.__doc__ = definition.func.__doc__
        self.__name__ = getattr(definition.func, "__name__", definition.name)

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def queue(self) -> str:
        return self._options.queue or self.definition.queue

    def __repr__(self) -> str:
        return f"<AsyncTask {self.name} queue={self.queue!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.definition.func(*args, **kwargs)

    def configure(
        self,
        *,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        key: str | None = None,
        priority: int | None = None,
        queue: str | None = None,
        session: Any = None,
    ) -> AsyncTask:
        """The same task with per-call options; ``await .enqueue(...)`` on the result."""
        changes = {
            "delay": delay,
            "run_at": run_at,
            "key": key,
            "priority": priority,
            "queue": queue,
            "session": session,
        }
        options = self._options.merged(**{k: v for k, v in changes.items() if v is not None})
        return AsyncTask(self.app, self.definition, options)

    async def enqueue(self, *args: Any, **kwargs: Any) -> AsyncTaskHandle:
        """Queue a call of the task with these arguments; returns its handle."""
        task, options = self.definition, self._options
        payload = task.encode_call(args, kwargs)
        queue = self.app.queue(self.queue)
        job_id = await queue.put(
            payload,
            task.priority if options.priority is None else options.priority,
            delay=options.delay,
            run_at=options.run_at,
            key=options.key,
            max_attempts=task.max_attempts,
            retry=task.retry,
            session=options.session,
        )
        return AsyncTaskHandle(queue, job_id, task.name)


class AsyncTaskHandle:
    """A queued job: ``id``, ``await status()``, ``await result(timeout=)``, ``await cancel()``."""

    def __init__(self, queue: AsyncMongoQueue, job_id: Any, task: str | None = None) -> None:
        self.queue = queue
        self.id = job_id
        self.task = task

    def __repr__(self) -> str:
        name = self.queue.collection.name
        return f"<AsyncTaskHandle {self.id} task={self.task!r} queue={name!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncTaskHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def status(self) -> JobStatus:
        return await self.queue.status(self.id)

    async def result(self, timeout: float | None = 30) -> Any:
        """See :meth:`mongoqueue.TaskHandle.result`."""
        return await wait_result_async(self.queue, self.id, timeout)

    async def cancel(self, keep: float | timedelta = DEFAULT_KEEP_RESULT) -> str:
        return await self.queue.request_cancel(self.id, keep=keep)
