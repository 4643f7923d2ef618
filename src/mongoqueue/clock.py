"""The server's clock, as seen from this process.

Leases and delays are stored as times on the *server's* clock. Updates compute
them on the server (``$$NOW`` in update pipelines). Query filters need a
literal "now", and that is where this estimate is used: it is anchored to the
``localTime`` the server reports in ``hello`` and advanced with this process's
*monotonic* clock. So whether a lease has expired never depends on the
consumers' wall clocks agreeing with each other or with the server; only the
rate of the local monotonic clock matters, and the anchor is refreshed every
``refresh`` seconds.

The estimate is an upper bound of the server's time: the anchor is advanced from
the moment the ``hello`` was *sent* (the server read its clock later than that),
plus the millisecond ``localTime`` is truncated to. So a time the server wrote
with ``$$NOW`` (a release, a put, an error without backoff) is never in the
future of a later estimate, and a job released is claimable at once. The price
is that a lease may be seen as expired up to one round trip before its end on
the server; that is safe, because a lease only decides *when* a job may be
claimed again, while who may change it is decided by the claim token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

__all__ = ["ServerClock"]

#: ``localTime`` is a BSON date: milliseconds, truncated.
_TRUNCATION = timedelta(milliseconds=1)


class ServerClock:
    """An estimate of the server's current time, from one ``hello`` round trip."""

    def __init__(
        self, refresh: float = 60.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._refresh = refresh
        self._monotonic = monotonic
        self._anchor: datetime | None = None
        self._anchored_at = 0.0
        self._spread = _TRUNCATION

    def needs_sync(self) -> bool:
        return self._anchor is None or self._monotonic() - self._anchored_at >= self._refresh

    def record(
        self, server_time: datetime, sent_at: float, received_at: float | None = None
    ) -> None:
        """Anchor to ``server_time`` (``hello.localTime``) of a request sent at ``sent_at``.

        ``sent_at`` is a reading of the monotonic clock taken right before the request
        was sent, ``received_at`` right after the reply came (it bounds how far
        :meth:`now` may be ahead of the server, see :attr:`spread`). A naive
        ``server_time`` is taken as UTC (pymongo returns naive datetimes unless the
        client was made with ``tz_aware=True``).
        """
        if server_time.tzinfo is None:
            server_time = server_time.replace(tzinfo=timezone.utc)
        self._anchor = server_time.astimezone(timezone.utc) + _TRUNCATION
        self._anchored_at = sent_at
        if received_at is not None:
            self._spread = timedelta(seconds=max(0.0, received_at - sent_at)) + _TRUNCATION

    @property
    def spread(self) -> timedelta:
        """How far :meth:`now` may be ahead of the server: the anchoring round trip plus 1 ms.

        ``now() - spread`` is a *lower* bound of the server's time: a job put as
        due at that time is due for every consumer at once, whatever their own
        estimates' errors.
        """
        return self._spread

    def now(self) -> datetime:
        """The estimated server time (an upper bound). Call :meth:`record` first."""
        if self._anchor is None:
            raise RuntimeError("ServerClock.now() called before the first record()")
        return self._anchor + timedelta(seconds=self._monotonic() - self._anchored_at)
