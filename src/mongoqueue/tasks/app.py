"""The task layer's application object: ``App(db)``, tasks, handles.

::

    app = mongoqueue.App(client.mydb)

    @app.task(queue="emails", max_attempts=5)
    def send_email(to, template="welcome"):
        ...
        return {"sent": True}

    handle = send_email.enqueue("ada@example.com", template="welcome")
    handle.result(timeout=30)            # {"sent": True}
    send_email.configure(delay=60, key="ada-welcome").enqueue("ada@example.com")

Each queue is one collection of ``db`` (``queue="emails"`` -> ``db.emails``),
driven by a :class:`~mongoqueue.MongoQueue`; a task job is a normal job whose
payload is ``{task, args, kwargs}``, so ``failed``, ``requeue``, ``stats``, the
CLI and the dashboard work on it. Workers: :meth:`App.worker`, ``mongoqueue
worker module:app``, or :meth:`App.run_until_empty` in tests.
:class:`~mongoqueue.tasks.AsyncApp` is the asyncio twin.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar, overload

from bson.codec_options import CodecOptions
from pymongo.database import Database

from .._core import DEFAULT_RETRY
from ..errors import InvalidArgument, InvalidArgumentType, driver_errors
from ..partitions import check_partitions
from ..queue import MongoQueue
from ..retry import RetryPolicy
from ..status import JobStatus
from ..validation import check_positive_int, check_seconds
from .registry import CallOptions, Registry, TaskDef
from .results import wait_result
from .runner import QueueGroup, TaskRunner, check_transactions, run_until_empty
from .scheduler import AppWorker, Scheduler
from .schedules import Schedule

__all__ = ["DEFAULT_KEEP_RESULT", "App", "Task", "TaskHandle"]

#: Default ``keep_result``: completed task jobs and their results are kept one
#: day (then removed by the TTL index); 0 deletes a job when it completes.
DEFAULT_KEEP_RESULT = 24 * 3600.0

#: Default ``max_passes``: deliveries of a job whose task this worker does not
#: know before the job fails (each pass releases it for another worker).
DEFAULT_MAX_PASSES = 10

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def default_consumer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def task_codec_options(base: CodecOptions[Any]) -> CodecOptions[Any]:
    """The collection options of task queues: dates come back timezone-aware UTC."""
    return base.with_options(tz_aware=True, tzinfo=timezone.utc)


def _check_app_partitions(value: object) -> int | dict[str, int]:
    if isinstance(value, Mapping):
        for name in value:
            if not isinstance(name, str):
                raise InvalidArgumentType(
                    "partitions must map queue names (str) to counts, "
                    f"got a {type(name).__name__} key"
                )
        return {name: check_partitions(count) for name, count in value.items()}
    return check_partitions(value)


class AppCore:
    """Settings and registry shared by :class:`App` and ``AsyncApp``."""

    _async = False

    def __init__(
        self,
        *,
        default_queue: str,
        consumer_id: str | None,
        timeout: float,
        max_attempts: int,
        retry: RetryPolicy,
        keep_result: float | timedelta,
        max_passes: int,
        partitions: int | Mapping[str, int] = 1,
    ) -> None:
        self.registry = Registry()
        #: ``partitions=``: one count for every queue of the app, or counts by queue
        #: name (queues not named are unpartitioned); see :mod:`mongoqueue.partitions`.
        self.partitions = _check_app_partitions(partitions)
        self.default_queue = default_queue
        self.consumer_id = consumer_id or default_consumer_id()
        self.timeout = check_seconds("timeout", timeout, allow_zero=False)
        self.max_attempts = check_positive_int("max_attempts", max_attempts)
        if not isinstance(retry, RetryPolicy):
            raise InvalidArgumentType(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self.retry = retry
        self.keep_result = check_seconds("keep_result", keep_result, allow_zero=True)
        self.max_passes = check_positive_int("max_passes", max_passes)
        self.schedules: dict[str, Schedule] = {}

    def partitions_of(self, queue: str) -> int:
        """The count of partitions of the app's queue ``queue``."""
        if isinstance(self.partitions, int):
            return self.partitions
        return self.partitions.get(queue, 1)

    @staticmethod
    def _task_options(options: dict[str, Any]) -> dict[str, Any]:
        allowed = {
            "name": None,
            "queue": None,
            "max_attempts": None,
            "retry": None,
            "timeout": None,
            "priority": 0,
            "keep_result": None,
            "transactional": False,
        }
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise InvalidArgumentType(
                f"unknown task option(s) {', '.join(unknown)}; options: {', '.join(allowed)}"
            )
        return {**allowed, **options}

    def _define(self, func: Callable[..., Any], options: dict[str, Any]) -> TaskDef:
        queue = options.pop("queue", None) or self.default_queue
        keep = options.pop("keep_result", None)
        definition = TaskDef(
            func,
            queue=queue,
            keep_result=self.keep_result if keep is None else keep,
            **options,
        )
        if definition.transactional and definition.is_async != self._async:
            kind = "a coroutine function (async def)" if self._async else "a plain function"
            other = "AsyncApp" if definition.is_async else "App"
            raise InvalidArgument(
                f"transactional task {definition.name} must be {kind} on "
                f"{type(self).__name__}: its session belongs to the app's client; "
                f"register it on an {other}"
            )
        self.registry.add(definition)
        return definition

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        timezone: str = "UTC",
        id: str | None = None,
        kwargs: dict[str, Any] | None = None,
        missed: str = "skip",
        grace: timedelta | float | None = None,
    ) -> Callable[[T], T]:
        """Run a task on a schedule; goes ABOVE ``@app.task``::

            @app.periodic(cron="0 3 * * *", timezone="Europe/Paris")
            @app.task
            def nightly_report(fire_time): ...

        Exactly one of ``cron`` (5 fields, or 6 with seconds first; evaluated in
        ``timezone``, an IANA name, default UTC) and ``every`` (a timedelta or
        seconds, one second or more). ``id``: the schedule's id (default: the
        task's name). ``kwargs``: the arguments of every run; a task that takes a
        ``fire_time`` parameter receives the tick's time (aware UTC). ``missed``:
        ``"skip"`` (default) or ``"latest"`` (run the most recent missed tick
        once); ``grace``: how late a tick may still fire (default: the interval,
        at most 60 s). Every worker serving the task's queue fires the schedule;
        each tick is enqueued once (see :mod:`mongoqueue.tasks.schedules`).
        """
        options: dict[str, Any] = {"cron": cron, "every": every, "timezone": timezone}
        options.update(id=id, kwargs=kwargs, missed=missed, grace=grace)

        def register(task: T) -> T:
            definition = getattr(task, "definition", None)
            if not isinstance(definition, TaskDef) or getattr(task, "app", None) is not self:
                raise InvalidArgumentType(
                    f"@app.periodic(...) goes above @app.task of the same app, got "
                    f"{type(task).__name__}: write @app.periodic(...) then @app.task then def"
                )
            schedule = Schedule(definition, **options)
            if schedule.id in self.schedules:
                raise InvalidArgument(
                    f"schedule id {schedule.id!r} is already used (by task "
                    f"{self.schedules[schedule.id].task.name}); pass id='...' to tell them apart"
                )
            self.schedules[schedule.id] = schedule
            return task

        return register

    def served_schedules(self, queues: list[str]) -> list[Schedule]:
        """The schedules of tasks on ``queues`` (what a worker of them fires)."""
        return [s for s in self.schedules.values() if s.task.queue in queues]

    def unknown_task_message(self, name: str | None) -> str:
        what = f"task {name!r}" if name is not None else "a job that is not a task job"
        return (
            f"no worker could run {what}: after {self.max_passes} deliveries, none had it "
            f"registered (this worker has: {', '.join(self.registry.names()) or 'none'})"
        )

    def served_queues(self, queues: Iterable[str] | None) -> list[str]:
        """The queues a worker serves, highest first: ``queues``, or every queue with
        a task in the order the tasks were registered."""
        if isinstance(queues, str):
            raise InvalidArgumentType("queues must be a list of queue names, not a str")
        names = list(queues) if queues is not None else []
        for name in names:
            if not isinstance(name, str) or not name:
                raise InvalidArgumentType(f"queue names must be non-empty str, got {name!r}")
        return names or self.registry.queues() or [self.default_queue]


class App(AppCore):
    """Tasks on the queues (collections) of one pymongo ``Database``.

    ``default_queue``: queue of tasks that name none. ``consumer_id``: this
    process's name in leases (default host-pid). ``timeout``: lease in seconds;
    ``max_attempts`` and ``retry``: defaults of tasks that set none (the task
    layer backs off by default). ``keep_result``: seconds a completed job and
    its result are kept (default one day; 0 deletes on completion).
    ``max_passes``: deliveries of an unknown task before it fails.
    ``partitions``: partitions of the app's queues (for a sharded cluster: see
    the sharding guide), one count for every queue or a mapping of queue names to
    counts (queues not in it are unpartitioned); default 1, unpartitioned.
    """

    def __init__(
        self,
        db: Database[Any],
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
        if not isinstance(db, Database):
            raise InvalidArgumentType(
                f"db must be a pymongo Database (for example MongoClient(uri).mydb), got "
                f"{type(db).__name__}; use AsyncApp with an AsyncDatabase"
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
        self._queues: dict[str, MongoQueue] = {}

    def __repr__(self) -> str:
        return f"<App {self.db.name} tasks={self.registry.names()}>"

    @overload
    def task(self, func: F) -> Task: ...

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
    ) -> Callable[[F], Task]: ...

    def task(self, func: Any = None, **options: Any) -> Any:
        """Register a function as a task (``@app.task`` or ``@app.task(...)``).

        ``name`` (default: the function's name), ``queue`` (default: the app's
        default queue), ``max_attempts``, ``retry``, ``priority`` (higher first),
        ``timeout`` (seconds the function may run; past it the attempt fails),
        ``keep_result`` (seconds; 0 deletes on completion), ``transactional``
        (the function takes a ``session`` keyword; its writes and the job's
        completion commit in one transaction).
        """

        settings = self._task_options(options)

        def register(function: Callable[..., Any]) -> Task:
            return Task(self, self._define(function, dict(settings)))

        if func is not None:
            if options:
                raise InvalidArgumentType("use @app.task or @app.task(name=..., ...)")
            return register(func)
        return register

    def queue(self, name: str | None = None) -> MongoQueue:
        """The raw queue of ``name`` (default: the default queue)."""
        name = name or self.default_queue
        queue = self._queues.get(name)
        if queue is None:
            collection = self.db.get_collection(
                name, codec_options=task_codec_options(self.db.codec_options)
            )
            queue = MongoQueue(
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
    def bound_to(self, db: Database[Any]) -> Iterator[None]:
        """Use ``db`` instead of the app's database inside the block (for tests:
        see :mod:`mongoqueue.testing`); the tasks enqueue and run there."""
        saved, self.db, self._queues = (self.db, self._queues), db, {}
        try:
            yield
        finally:
            self.db, self._queues = saved

    def get_task(self, name: str) -> TaskDef:
        """The registered task ``name`` (``UnknownTaskError`` if none)."""
        return self.registry[name]

    def handle(self, job_id: Any, queue: str | None = None) -> TaskHandle:
        """A handle on an existing job (e.g. an id kept from an earlier enqueue)."""
        return TaskHandle(self.queue(queue), job_id)

    def status(self, job_id: Any, queue: str | None = None) -> JobStatus:
        return self.queue(queue).status(job_id)

    # ------------------------------------------------------------------ workers

    def check_transactions(self, queues: Iterable[str] | None = None) -> None:
        """Raise ``TransactionsUnsupported`` if a transactional task of ``queues``
        cannot run on this server (a standalone mongod)."""
        served = self.served_queues(queues)
        if any(t.transactional and t.queue in served for t in self.registry.values()):
            with driver_errors():
                hello = self.db.command("hello")
            check_transactions(hello, self.registry, served)

    def worker(self, queues: Iterable[str] | None = None, **options: Any) -> AppWorker:
        """A :class:`~mongoqueue.worker.Worker` that runs this app's tasks.

        ``queues``: names in priority order (a higher queue is always drained
        first; default: every queue with a task). ``options``: the Worker's
        (``concurrency``, ``heartbeat``, ``hard_limit``, ``grace``, ``burst``...).
        Fails at once with ``TransactionsUnsupported`` when a transactional task
        cannot run on this server.
        """
        served = self.served_queues(queues)
        self.check_transactions(served)
        group = QueueGroup([self.queue(name) for name in served])
        schedules = self.served_schedules(served)
        scheduler = Scheduler(self, schedules) if schedules else None
        return AppWorker(group, TaskRunner(self), scheduler=scheduler, **options)

    def scheduler(self, queues: Iterable[str] | None = None) -> Scheduler:
        """The schedules of ``queues`` (default: all): ``.tick()`` fires what is due
        now (workers do it on their own; this is for tests and scripts)."""
        served = self.served_queues(queues) if queues is not None else self.registry.queues()
        return Scheduler(self, self.served_schedules(served))

    def run_until_empty(self, queues: Iterable[str] | None = None) -> int:
        """Run queued jobs in this process, one at a time, until none is claimable
        now (for tests); returns how many deliveries ran. Delayed jobs and
        retries still backing off are left for later."""
        served = self.served_queues(queues)
        self.check_transactions(served)
        return run_until_empty([self.queue(name) for name in served], TaskRunner(self))


class Task:
    """A registered task: call it to run the function here, ``enqueue`` to queue it."""

    def __init__(self, app: App, definition: TaskDef, options: CallOptions | None = None) -> None:
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
        return f"<Task {self.name} queue={self.queue!r}>"

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
    ) -> Task:
        """The same task with per-call options; ``.enqueue(...)`` on the result."""
        changes = {
            "delay": delay,
            "run_at": run_at,
            "key": key,
            "priority": priority,
            "queue": queue,
            "session": session,
        }
        options = self._options.merged(**{k: v for k, v in changes.items() if v is not None})
        return Task(self.app, self.definition, options)

    def enqueue(self, *args: Any, **kwargs: Any) -> TaskHandle:
        """Queue a call of the task with these arguments; returns its handle."""
        task, options = self.definition, self._options
        payload = task.encode_call(args, kwargs)
        queue = self.app.queue(self.queue)
        job_id = queue.put(
            payload,
            task.priority if options.priority is None else options.priority,
            delay=options.delay,
            run_at=options.run_at,
            key=options.key,
            max_attempts=task.max_attempts,
            retry=task.retry,
            session=options.session,
        )
        return TaskHandle(queue, job_id, task.name)


class TaskHandle:
    """A queued job: ``id``, ``status()``, ``result(timeout=)``, ``cancel()``."""

    def __init__(self, queue: MongoQueue, job_id: Any, task: str | None = None) -> None:
        self.queue = queue
        self.id = job_id
        self.task = task

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id} task={self.task!r} queue={self.queue.collection.name!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def status(self) -> JobStatus:
        """The job's status now (see :mod:`mongoqueue.status`)."""
        return self.queue.status(self.id)

    def result(self, timeout: float | None = 30) -> Any:
        """Wait up to ``timeout`` seconds for the job to finish; return its result.

        Raises ``TaskFailed`` (with the remote error and traceback), ``TaskCancelled``,
        ``ResultUnavailable`` (no such job) or ``ResultTimeout`` (naming the state).
        """
        return wait_result(self.queue, self.id, timeout)

    def cancel(self, keep: float | timedelta = DEFAULT_KEEP_RESULT) -> str:
        """Cancel: a waiting job at once (kept ``keep`` seconds as cancelled), a
        running one at its worker's next heartbeat. Returns ``"cancelled"``,
        ``"requested"``, or ``""`` when the job had already finished."""
        return self.queue.request_cancel(self.id, keep=keep)
