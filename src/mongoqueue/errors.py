"""Every exception mongoqueue raises derives from :class:`MongoQueueError`.

Hierarchy::

    MongoQueueError
    ├── InvalidArgument (also a ValueError)    a value is out of range or malformed
    │   ├── InvalidPayload                     a payload MongoDB cannot store as given
    │   │   ├── PayloadTooLarge                over the server's document size limit
    │   │   └── NotBSON (also a TypeError)     a task argument or result that is not BSON
    │   └── httpauth.AuthenticationRequired    a server beyond loopback without authentication
    ├── InvalidArgumentType (also a TypeError) an argument has the wrong type
    ├── DuplicateKeyConflict                   a state conflict: a waiting or running job
    │                                          already holds that deduplication key
    ├── LeaseLost                              this handle no longer holds its job
    ├── IndexConflict                          an index of ours exists with other options
    ├── QueueUnavailable                       the server could not be reached
    ├── httpauth.PortInUse                     a dashboard or metrics port is already taken
    ├── LockNotAcquired                        ``lock(..., required=True)`` timed out
    ├── OldFormatDocuments                     jobs written by mongoqueue 0.7: migrate first
    └── MigrationError                         the 0.7 migration could not finish
        └── MigrationRefused                   documents it cannot classify; nothing written

Driver errors that a user should not need to know about (connection failures,
index conflicts, a collection name the server rejects) are re-raised as ours
with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pymongo.errors

__all__ = [
    "DuplicateKeyConflict",
    "IndexConflict",
    "InvalidArgument",
    "InvalidArgumentType",
    "InvalidPayload",
    "LeaseLost",
    "LockNotAcquired",
    "MigrationError",
    "MigrationRefused",
    "MongoQueueError",
    "NotBSON",
    "OldFormatDocuments",
    "PayloadTooLarge",
    "QueueUnavailable",
    "driver_errors",
]


class MongoQueueError(Exception):
    """Base class of every error raised by mongoqueue."""


class InvalidArgument(MongoQueueError, ValueError):
    """An argument has the right type but a value we cannot accept."""


class InvalidArgumentType(MongoQueueError, TypeError):
    """An argument has the wrong type."""


class InvalidPayload(InvalidArgument):
    """The payload cannot be stored as given (a forbidden key, a non-BSON value)."""


class PayloadTooLarge(InvalidPayload):
    """The job document would exceed the server's maximum document size."""


class NotBSON(InvalidPayload, TypeError):
    """A task argument or result of a type BSON cannot store (the message names it)."""


class DuplicateKeyConflict(MongoQueueError):
    """A waiting or running job already uses this deduplication key.

    A conflict with the queue's current state, not a bad argument: the same call
    may succeed once that job has finished (``requeue`` of a failed job whose key
    was taken meanwhile; a ``put(key=...)`` that kept racing with jobs finishing).
    """


class LeaseLost(MongoQueueError):
    """This job handle no longer holds its job, so it may not change it.

    Raised by ``complete``, ``error``, ``progress`` and ``release`` when the lease
    expired and the job was claimed again, or when the job was already finished.
    """


class IndexConflict(MongoQueueError):
    """An index with one of our names exists with a different definition."""


class QueueUnavailable(MongoQueueError):
    """The MongoDB server could not be reached (network error or timeout)."""


class LockNotAcquired(MongoQueueError):
    """``lock(..., required=True)`` could not acquire the lock within ``wait`` seconds."""


class OldFormatDocuments(MongoQueueError):
    """The collection holds jobs written by mongoqueue 0.7, which this version cannot read.

    Raised by the queue at its first use of such a collection: run
    ``mongoqueue migrate`` (or ``queue.migrate()``) to convert them in place.
    ``count`` is how many such documents were found.
    """

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


class MigrationError(MongoQueueError):
    """The migration of a mongoqueue 0.7 collection could not finish (run it again)."""


class MigrationRefused(MigrationError):
    """The collection holds documents the migration cannot classify; nothing was written."""


#: The server's error code for a database or collection name it does not accept.
INVALID_NAMESPACE = 73


@contextmanager
def driver_errors() -> Iterator[None]:
    """Re-raise the driver errors a user should not need to know as ours.

    Works around ``await`` too, so the sync and async queues share it.
    """
    try:
        yield
    except pymongo.errors.DocumentTooLarge as exc:
        raise PayloadTooLarge(
            f"the job document exceeds the server's maximum document size: {exc}"
        ) from exc
    except pymongo.errors.OperationFailure as exc:
        if exc.code != INVALID_NAMESPACE:
            raise
        reason = (exc.details or {}).get("errmsg") or str(exc)
        raise InvalidArgument(
            f"MongoDB rejects the queue's database or collection name: {reason}; "
            "choose another name (not 'system.*', at most 255 bytes with the database's)"
        ) from exc
    except pymongo.errors.ConnectionFailure as exc:
        raise QueueUnavailable(
            f"could not reach MongoDB ({type(exc).__name__}: {exc}); check the URI and that "
            "the server is running. A claim whose reply was lost comes back when its "
            "lease expires."
        ) from exc
