"""Retry policy: how long a job waits before it is delivered again after a failure.

The delay after the n-th failed delivery is exponential with full jitter::

    cap   = min(maximum, initial * multiplier ** (n - 1))
    delay = max(minimum, jitter * cap)      # jitter drawn uniformly from [0, 1)

(``jitter=False`` uses ``delay = max(minimum, cap)``.) The same policy applies to
``Job.error()`` and to a lease that expired. The formula is evaluated by the
server inside the update that records the failure (see
:func:`mongoqueue.operations.backoff_ms`), so it reads the job's attempt count
in the same atomic operation that changes it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from .errors import InvalidArgument
from .validation import check_seconds

__all__ = ["NO_BACKOFF", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between deliveries of a failed job (times in seconds)."""

    initial: float = 1.0
    maximum: float = 300.0
    minimum: float = 0.0
    multiplier: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        for name in ("initial", "maximum", "minimum"):
            seconds = check_seconds(name, getattr(self, name), allow_zero=True)
            object.__setattr__(self, name, seconds)
        mult = check_seconds("multiplier", self.multiplier, allow_zero=False)
        if mult < 1:
            raise InvalidArgument(f"multiplier must be >= 1, got {mult!r}")
        object.__setattr__(self, "multiplier", mult)
        if self.minimum > self.maximum:
            raise InvalidArgument(
                f"minimum ({self.minimum}s) must not exceed maximum ({self.maximum}s)"
            )

    def draw_jitter(self) -> float:
        """The jitter factor for one failure: uniform in [0, 1), or 1.0 without jitter."""
        return random.random() if self.jitter else 1.0

    def delay(self, failures: int, jitter: float) -> timedelta:
        """The delay after the ``failures``-th failure, for documentation and tests.

        The queue does not call this: the server evaluates the same formula
        (:func:`mongoqueue.operations.backoff_ms`) inside the failing update.
        """
        cap = min(self.maximum, self.initial * self.multiplier ** max(failures - 1, 0))
        return timedelta(seconds=max(self.minimum, jitter * cap))


NO_BACKOFF = RetryPolicy(initial=0.0, maximum=0.0, minimum=0.0, jitter=False)
"""A failed job is deliverable again at once (the original mongoqueue's behaviour)."""
