"""The I/O-free core shared by :class:`MongoLock` and :class:`AsyncMongoLock`.

Settings, the handle's state (its fencing token and the local bound of its
lease), argument checks and the reading of replies. The documents come from
:mod:`mongoqueue.lock_operations`; the two lock classes only add the server
calls and the sleeping.

``locked`` is decided locally and conservatively: the server sets the lease end
to ``$$NOW + lease`` when it applies the acquire (or renew), which is after the
request was sent; the handle counts ``lease`` seconds on its *monotonic* clock
from just before it sent the request. So while ``locked`` is True the lease has
surely not ended on the server (as long as the server's clock does not jump
forward), and no other handle can have taken the lock over. It costs no round
trip, and it does not notice a lock document deleted by hand. The bound ends
slightly early (0.1% of the lease plus a millisecond, see ``RATE_MARGIN``) to
cover the server's millisecond truncation of ``$$NOW`` and a server clock that
runs a little faster than ours.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from bson import ObjectId

from .errors import InvalidArgument, InvalidArgumentType, LockNotAcquired
from .validation import check_seconds

__all__ = ["LockCore"]

#: The local bound of a lease ends this much before ``lease`` seconds: the server
#: truncates ``$$NOW`` to the millisecond, and its clock may run slightly faster
#: than ours (NTP slews clocks by at most 0.05%).
TRUNCATION_SECONDS = 0.001
RATE_MARGIN = 0.001

#: The original's defaults.
DEFAULT_LEASE = 120
DEFAULT_POLL_PERIOD = 5


def check_lock_name(name: object) -> str | int | ObjectId:
    if isinstance(name, bool) or not isinstance(name, (str, int, ObjectId)):
        raise InvalidArgumentType(
            f"lock_name must be a str (or an int or ObjectId), got {type(name).__name__}"
        )
    if isinstance(name, str) and not name:
        raise InvalidArgument("lock_name must be a non-empty string")
    return name


def check_lock_collection(collection: object, expected: type, twin: type, cls_name: str) -> None:
    """Refuse anything but the collection class the lock drives (naming the twin)."""
    if isinstance(collection, expected):
        return
    hint = ""
    if isinstance(collection, twin):
        other = "AsyncMongoLock" if cls_name == "MongoLock" else "MongoLock"
        hint = f"; pass a {twin.__name__} to {other} instead"
    raise InvalidArgumentType(
        f"collection must be a pymongo {expected.__name__}, got {type(collection).__name__}{hint}"
    )


class LockCore:
    """A handle on one named lock: its settings and what it knows of its lease."""

    def __init__(
        self, lock_name: object, lease: object, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.lock_name = check_lock_name(lock_name)
        self._lease_time = check_seconds("lease", lease, allow_zero=False)
        self._client_id = uuid.uuid4().hex
        self._monotonic = monotonic
        self._token: str | None = None
        #: Monotonic time until which the lease surely holds (when ``_token`` is set).
        self._bound = 0.0

    @property
    def client_id(self) -> str:
        """This handle's id, stored in the lock document while it holds the lock."""
        return self._client_id

    @property
    def lease(self) -> float:
        """The lease in seconds: how long an acquire or a renew holds the lock."""
        return self._lease_time

    @property
    def locked(self) -> bool:
        """True while this handle surely holds the lock (see the module docstring)."""
        return self._token is not None and self._monotonic() < self._bound

    @property
    def remaining(self) -> float:
        """Seconds left on this handle's lease (0.0 when it does not hold the lock)."""
        if self._token is None:
            return 0.0
        return max(0.0, self._bound - self._monotonic())

    def _describe(self, full_name: str) -> str:
        state = "locked" if self.locked else "unlocked"
        return (
            f"<{type(self).__name__} {self.lock_name!r} in {full_name} {state} "
            f"lease={self._lease_time}s client_id={self._client_id}>"
        )

    # ------------------------------------------------------------------ requests

    @property
    def _lease_ms(self) -> int:
        return max(1, round(self._lease_time * 1000))

    @staticmethod
    def _new_token() -> str:
        return str(ObjectId())

    def _clock(self) -> float:
        return self._monotonic()

    @staticmethod
    def _wait_seconds(wait: object) -> float:
        """``acquire(wait=)``: None, False or 0 mean one attempt; else seconds (or timedelta)."""
        if wait is None or wait is False:
            return 0.0
        return check_seconds("wait", wait, allow_zero=True)

    @staticmethod
    def _poll_seconds(poll_period: object) -> float:
        return check_seconds("poll_period", poll_period, allow_zero=False)

    # ------------------------------------------------------------------ replies

    def _took(self, reply: Mapping[str, Any] | None, token: str, sent_at: float) -> bool:
        """Read an acquire's reply: did ``token`` take the lock?"""
        if reply is None or reply.get("token") != token:
            return False
        self._token = token
        self._bound = self._bound_from(sent_at)
        return True

    def _renewed(self, reply: Mapping[str, Any] | None, sent_at: float) -> bool:
        """Read a renew's reply: None means the lock was taken over (or released)."""
        if reply is None:
            self._forget()
            return False
        self._bound = self._bound_from(sent_at)
        return True

    def _bound_from(self, sent_at: float) -> float:
        """The lease's local end, for a request sent at monotonic time ``sent_at``."""
        return sent_at + self._lease_time * (1 - RATE_MARGIN) - TRUNCATION_SECONDS

    def _forget(self) -> None:
        self._token = None
        self._bound = 0.0

    def _not_acquired(self, wait: object, full_name: str) -> LockNotAcquired:
        return LockNotAcquired(
            f"could not acquire the lock {self.lock_name!r} in {full_name} within "
            f"{wait} seconds: another holder has it. Wait longer, or try again later."
        )
