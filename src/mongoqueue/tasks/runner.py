"""Running task jobs: the dispatching handler and the multi-queue claim source.

The task layer adds no worker of its own: :class:`~mongoqueue.worker.Worker`
runs :class:`TaskRunner` as its handler on a :class:`QueueGroup`.

* :class:`TaskRunner` reads ``{task, args, kwargs}`` from the job, calls the
  registered function and completes the job with its result (one fenced update:
  ``job.complete(result=, keep=)``). A job whose task is not registered here is
  handed back (``job.hand_back``) for another worker; after ``max_passes`` such
  deliveries it fails with a message naming the task and the registered ones.
* A transactional task runs in a transaction together with the job's fenced
  completion (see :func:`run_transactional`).
* :class:`QueueGroup` claims from several queues in priority order and waits on
  one database change stream filtered to their collections.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pymongo.errors
from pymongo.client_session import ClientSession

from .._core import DEFAULT_RETRY
from ..errors import MongoQueueError, driver_errors
from ..job import Job, JobData, exception_message
from ..queue import MongoQueue
from ..waiting import (
    CHANGE_STREAMS_UNSUPPORTED,
    RECHECK_SECONDS,
    WAKE_SLACK_SECONDS,
    Deadline,
    PollBackoff,
)
from .errors import TransactionsUnsupported
from .operations import queues_wake_pipeline, read_call
from .registry import TaskDef

if TYPE_CHECKING:
    from .app import AppCore

__all__ = ["QueueGroup", "TaskRunner", "TaskTimeout", "cancel_requested", "current_job"]

log = logging.getLogger("mongoqueue.worker")

#: Seconds a handed-back job stays invisible, so other workers get it first.
PASS_DELAY_SECONDS = 1.0

_current: contextvars.ContextVar[JobData | None] = contextvars.ContextVar(
    "mongoqueue_current_job", default=None
)


def current_job() -> Any:
    """The Job (or AsyncJob) whose task is running in this context, or None."""
    return _current.get()


def cancel_requested() -> bool:
    """True when the running task's job has a cancel request (seen at a heartbeat).

    A long sync task may check it and return or raise; its job then ends cancelled.
    """
    job = _current.get()
    return job is not None and job.cancel_requested


class TaskTimeout(MongoQueueError):
    """A task ran past its ``timeout``; the attempt counts as failed."""


class TaskCancelledHere(MongoQueueError):
    """A running task was cancelled on request; its job ends cancelled."""


#: How often a running coroutine task's job is checked for a cancel request (no I/O:
#: the flag arrives with the worker's heartbeats).
CANCEL_CHECK_SECONDS = 0.05


def has_label(exc: BaseException, label: str) -> bool:
    """Whether ``exc`` (or the driver error it wraps) carries an error label."""
    while exc is not None:
        if isinstance(exc, pymongo.errors.PyMongoError) and exc.has_error_label(label):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


def check_transactions(hello: Mapping[str, Any], registry: Any, queues: list[str]) -> None:
    """Refuse transactional tasks on a server without transactions (standalone)."""
    if hello.get("setName") or hello.get("msg") == "isdbgrid":
        return
    names = [t.name for t in registry.values() if t.transactional and t.queue in queues]
    raise TransactionsUnsupported(
        f"transactional task(s) {', '.join(names)} need a MongoDB replica set or sharded "
        "cluster; this server is standalone (run mongod with --replSet, even a single "
        "node, or declare the tasks without transactional=True)"
    )


def call_sync(task: TaskDef, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Call the task's function in this thread (a coroutine function via asyncio.run),
    enforcing its ``timeout``: past it the attempt fails and the call is abandoned."""
    if task.is_async:
        job = _current.get()

        async def run() -> Any:
            # Checked often (no I/O: heartbeats bring the flag), so a cancel request
            # or the timeout cancels the coroutine at once, as on AsyncApp.
            running = asyncio.ensure_future(task.func(*args, **kwargs))
            started = time.monotonic()
            while True:
                done, _ = await asyncio.wait({running}, timeout=CANCEL_CHECK_SECONDS)
                if done:
                    return running.result()
                cancelled = job is not None and job.cancel_requested
                late = task.timeout is not None and time.monotonic() - started >= task.timeout
                if cancelled or late:
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
                    if cancelled:
                        raise TaskCancelledHere(f"task {task.name} was cancelled while running")
                    raise TaskTimeout(f"task {task.name} ran past its timeout of {task.timeout}s")

        return asyncio.run(run())
    if task.timeout is None:
        return task.func(*args, **kwargs)
    box: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box["value"] = context.run(task.func, *args, **kwargs)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"mongoqueue-task-{task.name}", daemon=True)
    thread.start()
    thread.join(task.timeout)
    if thread.is_alive():
        raise TaskTimeout(
            f"task {task.name} ran past its timeout of {task.timeout}s (its thread is "
            "abandoned; its result will be discarded)"
        )
    if "error" in box:
        raise box["error"]
    return box.get("value")


def run_transactional(job: Job, task: TaskDef, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run ``task`` and complete ``job`` in one transaction; returns the result.

    A transaction left open by an earlier holder that died is aborted first: its
    session (recorded on the job) is killed, so its locks do not hold up this run
    until the server's ``transactionLifetimeLimitSeconds``. Each attempt records
    its own session and renews the lease (outside the transaction),
    then runs the function with ``session=`` and the job's fenced completion in
    a transaction, and commits. The worker's own heartbeats for this job pause
    meanwhile (``job.heartbeat_paused``): a heartbeat is a write to the job
    document, and one landing after the transaction's snapshot would make the
    completion a write conflict, retried for ever by a task longer than the
    heartbeat interval. A stale holder (its lease taken over) fails the fence
    (LeaseLost) or conflicts with the new claim, so its transaction aborts and
    its writes vanish. Transient transaction errors are retried, as the driver
    recommends, while the lease lasts.
    """
    queue = job.queue
    deadline = time.monotonic() + queue.timeout
    keep = task.keep_result
    client = queue.collection.database.client
    prior = job.txn_session
    if prior is not None:
        kill_session(lambda: client.admin.command("killSessions", [prior]), job)
    job.heartbeat_paused = True
    try:
        with client.start_session() as session:
            while True:
                job.record_session(session.session_id)
                try:
                    session.start_transaction()
                    result = call_sync(task, args, {**kwargs, "session": session})
                    job.complete(result=result, keep=keep, session=session)
                    _commit(session, deadline)
                except BaseException as exc:
                    if session.in_transaction:
                        with contextlib.suppress(pymongo.errors.PyMongoError):
                            session.abort_transaction()
                    if has_label(exc, "TransientTransactionError") and time.monotonic() < deadline:
                        continue
                    raise
                job.let_go()
                return result
    finally:
        job.heartbeat_paused = False


def _commit(session: ClientSession, deadline: float) -> None:
    while True:
        try:
            with driver_errors():
                session.commit_transaction()
            return
        except MongoQueueError as exc:
            if has_label(exc, "UnknownTransactionCommitResult") and time.monotonic() < deadline:
                continue
            raise


def kill_session(command: Callable[[], Any], job: JobData) -> None:
    """Run ``killSessions`` for a dead holder's session; a failure only costs time
    (the server aborts that transaction after ``transactionLifetimeLimitSeconds``)."""
    try:
        with driver_errors():
            command()
    except MongoQueueError as exc:
        log.warning("job %s: could not kill the previous holder's session: %s", job.id, exc)


class TaskRunner:
    """The handler a Worker runs for an app: dispatches each job to its task."""

    def __init__(self, app: AppCore) -> None:
        self.app = app

    def __call__(self, job: Job) -> None:
        name, args, kwargs = read_call(job.payload)
        task = self.app.registry.get(name) if name is not None else None
        if task is None:
            job.hand_back(
                self.app.unknown_task_message(name), self.app.max_passes, PASS_DELAY_SECONDS
            )
            return
        if job.cancel_requested:  # requested while an earlier holder ran it
            job.end_cancelled(task.keep_result)
            return
        token = _current.set(job)
        try:
            if task.transactional:
                run_transactional(job, task, args, kwargs)
                return
            try:
                result = call_sync(task, args, kwargs)
            except Exception:
                if job.cancel_requested and job.held:
                    job.end_cancelled(task.keep_result)
                    return
                raise
            if job.cancel_requested:
                job.end_cancelled(task.keep_result)
                return
            job.complete(result=result, keep=task.keep_result)
        finally:
            _current.reset(token)


class QueueGroup(MongoQueue):
    """Several queues claimed as one, in priority order (for a task worker).

    ``next()`` claims from the first queue that has a claimable job, so a higher
    queue is always drained first; ``next(wait=)`` blocks on one change stream
    on the database filtered to the group's collections (polling without
    change streams). The jobs it returns belong to their own queue.
    """

    batch_claims = False  # next() picks among the queues; next_batch() would not

    def __init__(self, queues: list[MongoQueue]) -> None:
        first = queues[0]
        super().__init__(
            first.collection,
            first.consumer_id,
            first.timeout,
            first.max_attempts,
            retry=first.retry or DEFAULT_RETRY,
        )
        self.queues = queues
        self._streams = True

    def __repr__(self) -> str:
        names = ", ".join(q.collection.name for q in self.queues)
        return f"<QueueGroup {self.collection.database.name} [{names}]>"

    def ensure_indexes(self) -> None:
        for queue in self.queues:
            queue.ensure_indexes()

    def size(self) -> int:
        return sum(queue.size() for queue in self.queues)

    def _first(self) -> Job | None:
        for queue in self.queues:
            job = queue.next()
            if job is not None:
                return job
        return None

    def next(self, wait: float | None = None) -> Job | None:
        deadline = self._wait_deadline(wait)
        job = self._first()
        if job is not None or deadline is None:
            return job
        return self._wait_any(deadline)

    def _wait_any(self, deadline: Deadline) -> Job | None:
        names = [q.collection.name for q in self.queues]
        if self._streams:
            try:
                with driver_errors():
                    while True:
                        block = min(RECHECK_SECONDS, deadline.remaining())
                        with self.collection.database.watch(
                            queues_wake_pipeline(names), max_await_time_ms=max(1, int(block * 1000))
                        ) as stream:
                            while True:
                                job = self._first()
                                if job is not None or deadline.expired():
                                    return job
                                if deadline.remaining() + WAKE_SLACK_SECONDS < block:
                                    break
                                stream.try_next()
            except pymongo.errors.OperationFailure as exc:
                if exc.code not in CHANGE_STREAMS_UNSUPPORTED:
                    raise
                self._streams = False
        backoff = PollBackoff()
        while True:
            job = self._first()
            if job is not None or deadline.expired():
                return job
            time.sleep(backoff.next_interval(deadline.remaining()))


def run_until_empty(queues: list[MongoQueue], handler: Callable[[Job], None]) -> int:
    """Claim and run jobs in this thread until none is claimable; returns the count."""
    group = QueueGroup(queues)
    ran = 0
    while (job := group.next()) is not None:
        ran += 1
        try:
            handler(job)
        except Exception as exc:
            if job.held:
                job.error(exception_message(type(exc), exc, exc.__traceback__))
            continue
        if job.held:
            job.complete()
    return ran
