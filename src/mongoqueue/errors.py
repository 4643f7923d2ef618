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
    ├── QueueUnavailable                       transient: try again later (see below)
    ├── OperationFailed                        permanent: the server refused the operation
    ├── httpauth.PortInUse                     a dashboard or metrics port is already taken
    ├── LockNotAcquired                        ``lock(..., required=True)`` timed out
    ├── OldFormatDocuments                     jobs written by mongoqueue 0.7: migrate first
    └── MigrationError                         the 0.7 migration could not finish
        └── MigrationRefused                   documents it cannot classify; nothing written

Every error of the driver (pymongo) that reaches a queue call is re-raised as
one of ours with ``raise ... from exc`` (the driver's error stays in
``__cause__``), chosen by :func:`classify`:

* **transient** (:class:`QueueUnavailable`): the same call may succeed later
  without anyone changing anything. Connection failures and network timeouts
  (``AutoReconnect``, ``NetworkTimeout``, ``ServerSelectionTimeoutError``,
  ``WaitQueueTimeoutError``), any error the driver marks as a timeout
  (``exc.timeout``: ``ExecutionTimeout``/MaxTimeMSExpired, CSOT), any error
  carrying the labels ``RetryableWriteError``, ``TransientTransactionError``,
  ``RetryableError`` or ``SystemOverloadedError``, the "not primary" and "node
  is recovering/shutting down" codes of the server discovery spec
  (NotWritablePrimary 10107, NotPrimaryNoSecondaryOk 13435,
  NotPrimaryOrSecondary 13436, InterruptedAtShutdown 11600,
  InterruptedDueToReplStateChange 11602, ShutdownInProgress 91,
  PrimarySteppedDown 189, LegacyNotPrimary 10058), the retryable-writes codes
  (HostNotFound 7, HostUnreachable 6, NetworkTimeout 89, SocketException 9001,
  ExceededTimeLimit 262, ReadConcernMajorityNotAvailableYet 134), MaxTimeMSExpired
  50, and a write concern error that timed out (WriteConcernFailed 64,
  ``errInfo.wtimeout``). A transient error on a write is *ambiguous*: the write
  may have been applied (a write concern timeout always means it was, on the
  primary). Every single-job write of the queue is fenced by its claim token,
  so trying again is safe.
* **permanent** (:class:`OperationFailed`): everything else (authorization,
  a bad command, a write error, an unsatisfiable write concern, ...). Trying
  again gives the same answer until someone changes something.

Three driver errors get a more precise error of ours: ``DocumentTooLarge``
(:class:`PayloadTooLarge`), a namespace the server rejects (code 73,
:class:`InvalidArgument`), and an index conflict (:class:`IndexConflict`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import pymongo.errors

__all__ = [
    "PERMANENT",
    "TRANSIENT",
    "TRANSIENT_CODES",
    "TRANSIENT_LABELS",
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
    "OperationFailed",
    "PayloadTooLarge",
    "QueueUnavailable",
    "classify",
    "driver_errors",
    "from_driver",
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


class _ServerErrorInfo:
    """The server's error code and labels, when a driver error had them."""

    #: The server's error code (``OperationFailure.code``), or None.
    code: int | None = None
    #: The driver's error labels (``RetryableWriteError``, ...), sorted.
    labels: tuple[str, ...] = ()


class QueueUnavailable(_ServerErrorInfo, MongoQueueError):
    """A transient failure: MongoDB could not be reached, or could not do the operation
    right now (network error or timeout, no primary, shutting down, a write concern
    timeout). The same call may succeed later; a write may or may not have been applied.
    """


class OperationFailed(_ServerErrorInfo, MongoQueueError):
    """A permanent failure: the server refused the operation (``code`` says why);
    trying again gives the same answer until something is changed."""


#: The server error codes after which the same operation may succeed later.
TRANSIENT_CODES: frozenset[int] = frozenset(
    {
        10107,  # NotWritablePrimary
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
        10058,  # LegacyNotPrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        91,  # ShutdownInProgress
        189,  # PrimarySteppedDown
        7,  # HostNotFound
        6,  # HostUnreachable
        89,  # NetworkTimeout
        9001,  # SocketException
        262,  # ExceededTimeLimit
        134,  # ReadConcernMajorityNotAvailableYet
        50,  # MaxTimeMSExpired
        64,  # WriteConcernFailed (wtimeout)
        24,  # LockTimeout
        133,  # FailedToSatisfyReadPreference
        234,  # RetryChangeStream
    }
)

#: The driver's and server's error labels that mean "try again".
TRANSIENT_LABELS: tuple[str, ...] = (
    "RetryableWriteError",
    "TransientTransactionError",
    "RetryableError",
    "SystemOverloadedError",
)

Classification = Literal["transient", "permanent"]
TRANSIENT: Classification = "transient"
PERMANENT: Classification = "permanent"


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


def _labels(exc: pymongo.errors.PyMongoError) -> tuple[str, ...]:
    return tuple(sorted(getattr(exc, "_error_labels", ()) or ()))


def classify(exc: BaseException) -> Classification | None:
    """Whether a driver error is transient or permanent; None for a non-driver error.

    A pure function of the exception object (its class, code, labels and
    details): see the module docstring for the rules.
    """
    if not isinstance(exc, pymongo.errors.PyMongoError):
        return None
    if isinstance(exc, pymongo.errors.ConnectionFailure) or exc.timeout:
        return TRANSIENT
    if any(exc.has_error_label(label) for label in TRANSIENT_LABELS):
        return TRANSIENT
    if isinstance(exc, pymongo.errors.OperationFailure):
        if exc.code in TRANSIENT_CODES:
            return TRANSIENT
        details = exc.details or {}
        info = details.get("errInfo") if isinstance(details, dict) else None
        if isinstance(info, dict) and info.get("wtimeout"):
            return TRANSIENT
    return PERMANENT


def from_driver(exc: pymongo.errors.PyMongoError) -> MongoQueueError:
    """Our error for a driver error (the caller raises it ``from exc``)."""
    if isinstance(exc, pymongo.errors.DocumentTooLarge):
        return PayloadTooLarge(
            f"the job document exceeds the server's maximum document size: {exc}"
        )
    if isinstance(exc, pymongo.errors.InvalidName):  # refused by pymongo before sending
        return InvalidArgument(f"invalid database or collection name: {exc}")
    code = exc.code if isinstance(exc, pymongo.errors.OperationFailure) else None
    if code == INVALID_NAMESPACE:
        details = getattr(exc, "details", None) or {}
        reason = details.get("errmsg") if isinstance(details, dict) else None
        return InvalidArgument(
            f"MongoDB rejects the queue's database or collection name: {reason or exc}; "
            "choose another name (not 'system.*', at most 255 bytes with the database's)"
        )
    error: QueueUnavailable | OperationFailed
    if isinstance(exc, pymongo.errors.ConnectionFailure) and not isinstance(
        exc, pymongo.errors.NotPrimaryError
    ):
        error = QueueUnavailable(
            f"could not reach MongoDB ({type(exc).__name__}: {exc}); check the URI and that "
            "the server is running. A claim whose reply was lost comes back when its "
            "lease expires."
        )
    elif classify(exc) == TRANSIENT:
        error = QueueUnavailable(
            f"MongoDB could not do this now ({_describe(exc)}); try again later. A write "
            "may have been applied: retrying a job's operation is safe (it is fenced by "
            "its claim token)"
        )
    else:
        error = OperationFailed(f"MongoDB refused the operation ({_describe(exc)})")
    error.code = code
    error.labels = _labels(exc)
    return error


def _describe(exc: pymongo.errors.PyMongoError) -> str:
    text = f"{type(exc).__name__}"
    if isinstance(exc, pymongo.errors.OperationFailure) and exc.code is not None:
        text += f", code {exc.code}"
    labels = _labels(exc)
    if labels:
        text += f", labels {', '.join(labels)}"
    message = str(exc)
    # The driver appends the whole reply ("full error: {...}"); keep the message short.
    message = message.split(", full error:", 1)[0]
    return f"{text}: {message}"


@contextmanager
def driver_errors() -> Iterator[None]:
    """Re-raise every driver error as ours (see :func:`classify`), ``from`` the original.

    Works around ``await`` too, so the sync and async queues share it.
    """
    try:
        yield
    except pymongo.errors.PyMongoError as exc:
        raise from_driver(exc) from exc
