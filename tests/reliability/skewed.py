"""A consumer process whose wall clock is off by ``$MONGOQUEUE_TEST_SKEW`` seconds.

Before anything else is imported, ``time.time``, ``time.time_ns`` and
``datetime.datetime.now/utcnow/today`` are shifted by the skew (the monotonic
clock is left alone: it is not a wall clock). The queue must not care: it reads
the server's ``hello.localTime`` and advances it with ``time.monotonic``.

``python -m tests.reliability.skewed URI DB COLLECTION NAME LEASE WAIT``
    prints ``{"skew": seen}`` (this process's wall clock minus the server's), then
    claims one job (waiting up to WAIT seconds; ``{"job": null}`` if none) and
    prints ``{"job", "attempts", "start"}``
    with the monotonic time after the claim returned, then waits for a line on
    stdin, holding the job without heartbeats, and tries ``complete()``: prints
    ``{"end", "outcome"}`` (``completed`` or ``lease-lost: <message>``).
"""

from __future__ import annotations

import datetime as _datetime
import os
import time as _time
from typing import Any

SKEW = float(os.environ.get("MONGOQUEUE_TEST_SKEW", "0"))
_real_time, _real_time_ns = _time.time, _time.time_ns
_Real = _datetime.datetime
_SHIFT = _datetime.timedelta(seconds=SKEW)


def _time_skewed() -> float:
    return _real_time() + SKEW


def _time_ns_skewed() -> int:
    return _real_time_ns() + int(SKEW * 1e9)


class _SameClass(type):
    # Real datetimes (from bson, from arithmetic) still pass isinstance checks.
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, _Real)

    def __subclasscheck__(cls, sub: Any) -> bool:
        return issubclass(sub, _Real)


class _SkewedDatetime(_Real, metaclass=_SameClass):
    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return _Real.now(tz) + _SHIFT

    @classmethod
    def utcnow(cls) -> Any:
        return _Real.now(_datetime.timezone.utc).replace(tzinfo=None) + _SHIFT

    @classmethod
    def today(cls) -> Any:
        return _Real.now() + _SHIFT


_time.time, _time.time_ns = _time_skewed, _time_ns_skewed
_datetime.datetime = _SkewedDatetime  # type: ignore[misc]

import json  # noqa: E402
import sys  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

from pymongo import MongoClient  # noqa: E402

from mongoqueue import NO_BACKOFF, LeaseLost, MongoQueue  # noqa: E402


def _say(**record: Any) -> None:
    print(json.dumps(record), flush=True)


def main(uri: str, db: str, coll: str, name: str, lease: str, wait: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    server_time = client.admin.command("hello")["localTime"].replace(tzinfo=timezone.utc)
    _say(skew=(datetime.now(timezone.utc) - server_time).total_seconds(), time=_time.time())
    queue = MongoQueue(client[db][coll], name, timeout=float(lease), retry=NO_BACKOFF)
    job = queue.next(wait=float(wait))
    if job is None:
        _say(job=None)
        return
    _say(job=str(job.id), attempts=job.attempts, start=_time.monotonic())
    sys.stdin.readline()  # hold the job, without heartbeats, until told
    end = _time.monotonic()
    try:
        job.complete()
        _say(end=end, outcome="completed")
    except LeaseLost as exc:
        _say(end=end, outcome=f"lease-lost: {exc}")
    client.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
