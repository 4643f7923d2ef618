"""The server's clock, as seen from this process.

Leases and delays are stored as times on the *server's* clock. Updates compute
them on the server (``$$NOW`` in update pipelines). Query filters need a
literal "now", and that is where this estimate is used: it is anchored to the
``localTime`` the server reports in ``hello`` and advanced with this process's
*monotonic* clock. So whether a lease has expired never depends on the
consumers' wall clocks agreeing with each other or with the server; only the
rate of the local monotonic clock matters, and the anchor is refreshed every
``refresh`` seconds.

The estimate is a lower bound of the server's time (the server stamped
``localTime`` some time before we received it, and truncated it to the
millisecond), so a consumer never treats a lease as expired before the server's
clock reaches its end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

__all__ = ["ServerClock"]


class ServerClock:
    """An estimate of the server's current time, from one ``hello`` round trip."""

    def __init__(
        self, refresh: float = 60.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._refresh = refresh
        self._monotonic = monotonic
        self._anchor: datetime | None = None
        self._anchored_at = 0.0

    def needs_sync(self) -> bool:
        return self._anchor is None or self._monotonic() - self._anchored_at >= self._refresh

    def record(self, server_time: datetime, received_at: float) -> None:
        """Anchor to ``server_time`` (``hello.localTime``), received at ``received_at``.

        ``received_at`` is a reading of the monotonic clock taken right after the reply
        arrived. A naive ``server_time`` is taken as UTC (pymongo returns naive
        datetimes unless the client was made with ``tz_aware=True``).
        """
        if server_time.tzinfo is None:
            server_time = server_time.replace(tzinfo=timezone.utc)
        self._anchor = server_time.astimezone(timezone.utc)
        self._anchored_at = received_at

    def now(self) -> datetime:
        """The estimated server time (a lower bound). Call :meth:`record` first."""
        if self._anchor is None:
            raise RuntimeError("ServerClock.now() called before the first record()")
        return self._anchor + timedelta(seconds=self._monotonic() - self._anchored_at)
