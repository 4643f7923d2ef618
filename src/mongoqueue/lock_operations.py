"""The storage contract of a lock: every filter and update of :class:`MongoLock`.

Pure functions with no I/O: :mod:`mongoqueue.lock` and :mod:`mongoqueue.aio_lock`
send what these return, and unit tests check the documents without a server.

A lock is one document in a collection of the user's choice, keyed by its name::

    _id          any        the lock's name
    client_id    str        the holding handle's ``client_id`` (as in mongoqueue 0.7)
    token        str        fencing token of the current acquisition
    ttl          date       end of the lease, on the server's clock
    acquired_at  date       when the current acquisition was made (server's clock)

A lock is *free* when its document is missing, or when its ``ttl`` is missing or
the server's clock has reached it (an expired lease). Every change is one atomic
operation:

* **acquire** upserts the document by ``_id`` with an update pipeline that takes
  the lock (a fresh ``token``, ``ttl = $$NOW + lease``) only if it is free, and
  leaves it untouched otherwise; the reply's ``token`` tells the caller whether
  it won. Whether a lease has expired is decided by the server's ``$$NOW`` in
  that same operation, so two contenders can never both see a lock as expired
  and both take it, and no client's wall clock is ever read. Two upserts racing
  to create a missing lock both try to insert the same ``_id``: one gets a
  duplicate-key error, which means "held" (on MongoDB 4.2+ the server may retry
  it as an update instead, which also answers "held").
* **release** deletes the document only while it holds the handle's own
  ``token``; a handle whose lease was taken over deletes nothing.
* **renew** extends ``ttl`` to ``$$NOW + lease``, fenced by the token likewise.

Dates are compared as ``$toLong`` milliseconds rather than as dates: equally
valid on MongoDB, and the test server's comparison of a stored date with
``$$NOW`` is wrong (see the README's notes on the test server).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FIELDS",
    "acquire_filter",
    "acquire_update",
    "held_filter",
    "renew_update",
]

Doc = dict[str, Any]
Pipeline = list[Doc]

#: Fields a handle reads back from an acquire or renew reply.
FIELDS = {"client_id": 1, "token": 1, "ttl": 1}


def _after_ms(ms: int) -> Doc:
    """The server's now plus ``ms`` milliseconds, as a date (see ``operations._after_ms``)."""
    return {"$toDate": {"$add": [{"$toLong": "$$NOW"}, ms]}}


def _millis(field: str) -> Doc:
    """``$field`` as epoch milliseconds; null when missing or not a date (or a number)."""
    return {"$convert": {"input": field, "to": "long", "onError": None, "onNull": None}}


#: True when the lock's lease is over or it has none: a missing or non-date ``ttl``
#: converts to null, which sorts before every number.
_FREE = {"$not": [{"$gt": [_millis("$ttl"), {"$toLong": "$$NOW"}]}]}


def acquire_filter(name: Any) -> Doc:
    """The lock named ``name`` (``$eq``: a name is never read as query operators)."""
    return {"_id": {"$eq": name}}


def acquire_update(token: str, client_id: str, lease_ms: int) -> Pipeline:
    """Take the lock for ``token`` if it is free; otherwise change nothing.

    Sent with ``upsert=True``: a missing lock is created already taken.
    """
    take = {
        "client_id": {"$literal": client_id},
        "token": {"$literal": token},
        "ttl": _after_ms(lease_ms),
        "acquired_at": "$$NOW",
    }
    return [
        {"$set": {field: {"$cond": [_FREE, value, f"${field}"]} for field, value in take.items()}}
    ]


def held_filter(name: Any, token: str) -> Doc:
    """The lock, but only while ``token`` holds it (the fence of release and renew)."""
    return {"_id": {"$eq": name}, "token": token}


def renew_update(lease_ms: int) -> Pipeline:
    """Extend the lease to ``lease_ms`` from the server's now."""
    return [{"$set": {"ttl": _after_ms(lease_ms)}}]
