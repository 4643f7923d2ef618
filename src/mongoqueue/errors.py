"""Every exception mongoqueue raises derives from :class:`MongoQueueError`.

Hierarchy::

    MongoQueueError
    ├── InvalidArgument (also a ValueError)    a value is out of range or malformed
    │   └── InvalidPayload                     a payload MongoDB cannot store as given
    │       └── PayloadTooLarge                over the server's document size limit
    ├── InvalidArgumentType (also a TypeError) an argument has the wrong type
    ├── DuplicateKeyConflict                   a state conflict: a waiting or running job
    │                                          already holds that deduplication key
    ├── LeaseLost                              this handle no longer holds its job
    ├── IndexConflict                          an index of ours exists with other options
    └── QueueUnavailable                       the server could not be reached

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
    "MongoQueueError",
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
