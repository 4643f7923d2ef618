"""The task layer: tasks, results and transactional jobs on top of the raw queue.

``App(db)`` / ``AsyncApp(async_db)`` register functions as tasks
(``@app.task``), enqueue calls (``task.enqueue(...)``), and run them
(``app.worker()``, ``mongoqueue worker module:app``, ``app.run_until_empty()``).
Import arrows point down: ``app`` -> ``runner``/``results``/``registry`` ->
``operations``/``errors`` -> the raw queue.
"""

from .aio_app import AsyncApp, AsyncTask, AsyncTaskHandle
from .app import DEFAULT_KEEP_RESULT, App, Task, TaskHandle
from .errors import (
    ResultTimeout,
    ResultUnavailable,
    TaskCancelled,
    TaskFailed,
    TransactionsUnsupported,
    UnknownTaskError,
)
from .runner import TaskTimeout, cancel_requested, current_job

__all__ = [
    "DEFAULT_KEEP_RESULT",
    "App",
    "AsyncApp",
    "AsyncTask",
    "AsyncTaskHandle",
    "ResultTimeout",
    "ResultUnavailable",
    "Task",
    "TaskCancelled",
    "TaskFailed",
    "TaskHandle",
    "TaskTimeout",
    "TransactionsUnsupported",
    "UnknownTaskError",
    "cancel_requested",
    "current_job",
]
