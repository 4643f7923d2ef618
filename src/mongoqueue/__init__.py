"""mongoqueue: a job queue for Python that keeps its jobs in MongoDB.

Isolation (a job is held by one consumer at a time, fenced by a claim token),
reliability (a job whose consumer died is delivered again when its lease
expires) and atomic state changes, on pymongo 4.9+ and MongoDB 4.4+.
"""

from .aio import AsyncJob, AsyncMongoQueue
from .aio_lock import AsyncMongoLock, async_lock
from .aio_worker import AsyncWorker
from .errors import (
    DuplicateKeyConflict,
    IndexConflict,
    InvalidArgument,
    InvalidArgumentType,
    InvalidPayload,
    LeaseLost,
    LockNotAcquired,
    MigrationError,
    MigrationRefused,
    MongoQueueError,
    NotBSON,
    OldFormatDocuments,
    OperationFailed,
    PayloadTooLarge,
    QueueUnavailable,
)
from .job import Job
from .lock import MongoLock, lock
from .migration import MigrationReport, migrate
from .queue import DEFAULT_RETRY, MongoQueue
from .retry import NO_BACKOFF, RetryPolicy
from .status import JobStatus
from .tasks import (
    App,
    AsyncApp,
    ResultTimeout,
    ResultUnavailable,
    Task,
    TaskCancelled,
    TaskFailed,
    TaskHandle,
    TransactionsUnsupported,
)
from .worker import Worker

__version__ = "1.0.0.dev0"

__all__ = [
    "DEFAULT_RETRY",
    "NO_BACKOFF",
    "App",
    "AsyncApp",
    "AsyncJob",
    "AsyncMongoLock",
    "AsyncMongoQueue",
    "AsyncWorker",
    "DuplicateKeyConflict",
    "IndexConflict",
    "InvalidArgument",
    "InvalidArgumentType",
    "InvalidPayload",
    "Job",
    "JobStatus",
    "LeaseLost",
    "LockNotAcquired",
    "MigrationError",
    "MigrationRefused",
    "MigrationReport",
    "MongoLock",
    "MongoQueue",
    "MongoQueueError",
    "NotBSON",
    "OldFormatDocuments",
    "OperationFailed",
    "PayloadTooLarge",
    "QueueUnavailable",
    "ResultTimeout",
    "ResultUnavailable",
    "RetryPolicy",
    "Task",
    "TaskCancelled",
    "TaskFailed",
    "TaskHandle",
    "TransactionsUnsupported",
    "Worker",
    "__version__",
    "async_lock",
    "lock",
    "migrate",
]
