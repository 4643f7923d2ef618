"""AsyncMongoLock and async_lock: the asyncio twins of MongoLock and lock.

Line for line the same as :mod:`mongoqueue.lock` but for ``await`` and
``asyncio.sleep``; the decisions come from :mod:`mongoqueue._lock_core` and the
documents from :mod:`mongoqueue.lock_operations`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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

__all__ = ["AsyncMongoLock", "async_lock"]


class AsyncMongoLock(LockCore):
    """A lock held by at most one handle at a time, for asyncio (see :class:`MongoLock`)."""

    def __init__(
        self, collection: AsyncCollection[Any], lock_name: Any, lease: float = DEFAULT_LEASE
    ) -> None:
        check_lock_collection(collection, AsyncCollection, Collection, "AsyncMongoLock")
        super().__init__(lock_name, lease)
        self.collection = collection

    def __repr__(self) -> str:
        return self._describe(self.collection.full_name)

    async def acquire(
        self, wait: float | timedelta | None = None, poll_period: float = DEFAULT_POLL_PERIOD
    ) -> bool:
        """Take the lock; True if taken (see :meth:`MongoLock.acquire`)."""
        seconds = self._wait_seconds(wait)
        period = self._poll_seconds(poll_period)
        deadline = Deadline(seconds)
        while True:
            if await self._try_acquire():
                return True
            if deadline.expired():
                return False
            await asyncio.sleep(min(period, deadline.remaining()))

    async def _try_acquire(self) -> bool:
        if self._token is not None and await self.renew():
            return True
        token = self._new_token()
        sent_at = self._clock()
        with driver_errors():
            try:
                reply = await self.collection.find_one_and_update(
                    ops.acquire_filter(self.lock_name),
                    ops.acquire_update(token, self.client_id, self._lease_ms),
                    projection=ops.FIELDS,
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except pymongo.errors.DuplicateKeyError:
                return False  # a racing acquire created the lock first: it is held
        return self._took(reply, token, sent_at)

    async def renew(self) -> bool:
        """Extend the lease by ``lease`` seconds from now (see :meth:`MongoLock.renew`)."""
        token = self._token
        if token is None:
            return False
        sent_at = self._clock()
        with driver_errors():
            reply = await self.collection.find_one_and_update(
                ops.held_filter(self.lock_name, token),
                ops.renew_update(self._lease_ms),
                projection=ops.FIELDS,
                return_document=ReturnDocument.AFTER,
            )
        return self._renewed(reply, sent_at)

    async def release(self) -> bool:
        """Let the lock go (see :meth:`MongoLock.release`)."""
        token = self._token
        if token is None:
            return False
        with driver_errors():
            await self.collection.delete_one(ops.held_filter(self.lock_name, token))
        self._forget()
        return True


@asynccontextmanager
async def async_lock(
    collection: AsyncCollection[Any],
    key: Any,
    wait: float | timedelta | None = 30,
    poll_period: float = DEFAULT_POLL_PERIOD,
    lease_period: float = 30,
    *,
    required: bool = False,
) -> AsyncIterator[AsyncMongoLock]:
    """``async with async_lock(collection, key) as handle:`` (see :func:`mongoqueue.lock.lock`)."""
    handle = AsyncMongoLock(collection, key, lease_period)
    acquired = await handle.acquire(wait=wait, poll_period=poll_period)
    if not acquired and required:
        raise handle._not_acquired(wait, collection.full_name)
    try:
        yield handle
    finally:
        await handle.release()
