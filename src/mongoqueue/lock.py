"""MongoLock and lock: the original mongoqueue's distributed lock, made correct.

``MongoLock(collection, lock_name, lease=120)`` is a handle on one named lock
kept as one document in ``collection``; ``lock(collection, key, wait=30,
poll_period=5, lease_period=30)`` acquires one for a ``with`` block. The names,
signatures and return values are those of mongoqueue 0.7. What changed:

* Leases are on the server's clock (``$$NOW``), never a client's.
* Taking over an expired lock is one atomic operation: two contenders cannot
  both take it (:mod:`mongoqueue.lock_operations`).
* ``release()`` is fenced by the handle's own token: a handle whose lease ran out
  and was taken over leaves the new owner's lock alone (and still returns True,
  as before, because the handle did hold the lock).
* ``acquire(wait=)`` waits ``wait`` *seconds*, polling every ``poll_period``
  seconds until a deadline on the monotonic clock (0.7 computed days and never
  looped).
* ``renew()`` extends the lease; ``locked`` is a conservative local bound of the
  lease (see :mod:`mongoqueue._lock_core`); ``remaining`` says how much is left.

:mod:`mongoqueue.aio_lock` has the asyncio twins, ``AsyncMongoLock`` and
``async_lock``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pymongo.errors
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection

from . import lock_operations as ops
from ._lock_core import DEFAULT_LEASE, DEFAULT_POLL_PERIOD, LockCore, check_lock_collection
from .errors import driver_errors
from .waiting import Deadline

__all__ = ["MongoLock", "lock"]


class MongoLock(LockCore):
    """A lock held by at most one handle at a time, across processes and machines.

    ``MongoLock(collection, lock_name, lease=120)``: ``lease`` is how long, in
    seconds, an acquire (or a renew) holds the lock; after that another handle
    may take it over, so renew before it runs out when the work takes longer.
    Each handle has its own ``client_id``; one handle holds the lock at most once.
    """

    def __init__(
        self, collection: Collection[Any], lock_name: Any, lease: float = DEFAULT_LEASE
    ) -> None:
        check_lock_collection(collection, Collection, AsyncCollection, "MongoLock")
        super().__init__(lock_name, lease)
        self.collection = collection

    def __repr__(self) -> str:
        return self._describe(self.collection.full_name)

    def acquire(
        self, wait: float | timedelta | None = None, poll_period: float = DEFAULT_POLL_PERIOD
    ) -> bool:
        """Take the lock; True if taken, False if another handle holds it.

        With ``wait`` (seconds), tries again every ``poll_period`` seconds until
        ``wait`` seconds have passed. A handle that already holds the lock renews
        its lease and returns True.
        """
        seconds = self._wait_seconds(wait)
        period = self._poll_seconds(poll_period)
        deadline = Deadline(seconds)
        while True:
            if self._try_acquire():
                return True
            if deadline.expired():
                return False
            time.sleep(min(period, deadline.remaining()))

    def _try_acquire(self) -> bool:
        if self._token is not None and self.renew():
            return True
        token = self._new_token()
        sent_at = self._clock()
        with driver_errors():
            try:
                reply = self.collection.find_one_and_update(
                    ops.acquire_filter(self.lock_name),
                    ops.acquire_update(token, self.client_id, self._lease_ms),
                    projection=ops.FIELDS,
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except pymongo.errors.DuplicateKeyError:
                return False  # a racing acquire created the lock first: it is held
        return self._took(reply, token, sent_at)

    def renew(self) -> bool:
        """Extend the lease by ``lease`` seconds from now; False if no longer held.

        Succeeds while nobody else took the lock over, even after the lease ran
        out; returns False (and the handle lets go) once another handle took it,
        or when this handle does not hold it.
        """
        token = self._token
        if token is None:
            return False
        sent_at = self._clock()
        with driver_errors():
            reply = self.collection.find_one_and_update(
                ops.held_filter(self.lock_name, token),
                ops.renew_update(self._lease_ms),
                projection=ops.FIELDS,
                return_document=ReturnDocument.AFTER,
            )
        return self._renewed(reply, sent_at)

    def release(self) -> bool:
        """Let the lock go. True if this handle had acquired it, else False.

        Deletes the lock only while this handle's acquisition still holds it: a
        handle whose lease ran out and was taken over returns True (as in 0.7)
        but leaves the new owner's lock alone.
        """
        token = self._token
        if token is None:
            return False
        with driver_errors():
            self.collection.delete_one(ops.held_filter(self.lock_name, token))
        self._forget()
        return True


@contextmanager
def lock(
    collection: Collection[Any],
    key: Any,
    wait: float | timedelta | None = 30,
    poll_period: float = DEFAULT_POLL_PERIOD,
    lease_period: float = 30,
    *,
    required: bool = False,
) -> Iterator[MongoLock]:
    """``with lock(collection, key) as handle:`` holds the lock ``key`` for the block.

    Waits up to ``wait`` seconds for it. As in mongoqueue 0.7, when the lock
    could not be acquired the block still runs with a handle whose ``locked``
    is False (check it); ``required=True`` raises ``LockNotAcquired`` instead.
    The lock is released when the block ends (fenced: a lease that ran out and
    was taken over is left alone). ``lease_period`` should outlast the block, or
    call ``handle.renew()``.
    """
    handle = MongoLock(collection, key, lease_period)
    acquired = handle.acquire(wait=wait, poll_period=poll_period)
    if not acquired and required:
        raise handle._not_acquired(wait, collection.full_name)
    try:
        yield handle
    finally:
        handle.release()
