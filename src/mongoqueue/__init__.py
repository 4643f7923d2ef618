"""mongoqueue: a job queue for Python that keeps its jobs in MongoDB.

Isolation (a job is held by one consumer at a time, fenced by a claim token),
reliability (a job whose consumer died is delivered again when its lease
expires) and atomic state changes, on pymongo 4.9+ and MongoDB 4.4+.
"""

from .aio import AsyncJob, AsyncMongoQueue
from .aio_worker import AsyncWorker
from .errors import (
    DuplicateKeyConflict,
    IndexConflict,
    InvalidArgument,
    InvalidArgumentType,
    InvalidPayload,
    LeaseLost,
    MongoQueueError,
    OperationFailed,
    PayloadTooLarge,
    QueueUnavailable,
)
from .job import Job
from .queue import DEFAULT_RETRY, MongoQueue
from .retry import NO_BACKOFF, RetryPolicy
from .worker import Worker

__version__ = "1.0.0.dev0"

__all__ = [
    "DEFAULT_RETRY",
    "NO_BACKOFF",
    "AsyncJob",
    "AsyncMongoQueue",
    "AsyncWorker",
    "DuplicateKeyConflict",
    "IndexConflict",
    "InvalidArgument",
    "InvalidArgumentType",
    "InvalidPayload",
    "Job",
    "LeaseLost",
    "MongoQueue",
    "MongoQueueError",
    "OperationFailed",
    "PayloadTooLarge",
    "QueueUnavailable",
    "RetryPolicy",
    "Worker",
    "__version__",
]
