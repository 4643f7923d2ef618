"""One SIGTERM/SIGINT handler per process, for every worker running in it.

Workers register with :data:`registry` while they run. The first registration
made from the main thread installs the handler (only the main thread may);
the last worker to leave restores the handlers that were there before (when it
leaves from another thread, the handler stays and passes signals on to the
previous one). The
first signal asks every registered worker to stop (each lets its running jobs
finish within its grace period); a second one exits the process at once
(``128 + signal``), the leases of its jobs expiring so they are delivered again.

A worker that runs in another thread while no handler is installed cannot be
stopped by a signal: it says so in the log, and is stopped with ``stop()``
(or by a signal once a worker in the main thread has installed the handler).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from ._worker_core import log

__all__ = ["SIGNALS", "SignalRegistry", "attach", "registry"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: ``on_signal(signum, stopping)``: logs and returns the exit code for an immediate exit
#: (second signal), or None (see ``WorkerCore._on_signal``).
OnSignal = Callable[[int, bool], "int | None"]


class SignalRegistry:
    """The process's workers that signals stop (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._workers: dict[int, tuple[Callable[[], object], OnSignal]] = {}
        self._previous: dict[int, Any] | None = None
        self._stopping = False

    @property
    def installed(self) -> bool:
        return self._previous is not None

    def register(self, key: int, stop: Callable[[], object], on_signal: OnSignal) -> bool:
        """Add a worker; True when signals will stop it (the handler is installed)."""
        with self._lock:
            main = threading.current_thread() is threading.main_thread()
            if (
                main
                and self._previous is not None
                and not self._workers
                and any(signal.getsignal(sig) != self._handle for sig in SIGNALS)
            ):
                self._previous = None  # replaced by someone since: install afresh
            if self._previous is None:
                if not main:
                    return False
                self._previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
                for sig in SIGNALS:
                    signal.signal(sig, self._handle)
                self._stopping = False
            self._workers[key] = (stop, on_signal)
            return True

    def unregister(self, key: int) -> None:
        """Remove a worker; the last one out restores the previous handlers (main thread)."""
        with self._lock:
            self._workers.pop(key, None)
            if not self._workers:
                self._stopping = False  # the next workers start afresh
            self.restore_if_idle()

    def restore_if_idle(self) -> None:
        """Put the previous handlers back if no worker is registered (main thread only).

        When the last worker ends in another thread, the handler stays installed but
        passes each signal on to the previous handler, until the main thread calls this.
        """
        with self._lock:
            if self._workers or self._previous is None:
                return
            if threading.current_thread() is not threading.main_thread():
                return
            for sig, handler in self._previous.items():
                if signal.getsignal(sig) == self._handle:  # else someone replaced ours
                    signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            self._previous = None
            self._stopping = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            workers = list(self._workers.values())
            stopping = self._stopping
            self._stopping = bool(workers)
            previous = (self._previous or {}).get(signum)
        if not workers:
            self._pass_on(signum, frame, previous)
            return
        if stopping:
            code = workers[0][1](signum, True)
            os._exit(code if code is not None else 128 + signum)
        for stop, on_signal in workers:
            on_signal(signum, False)
            stop()

    @staticmethod
    def _pass_on(signum: int, frame: FrameType | None, previous: Any) -> None:
        """No worker left: do what the handler before ours did."""
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


registry = SignalRegistry()


def attach(
    key: int, stop: Callable[[], object], on_signal: OnSignal, name: str
) -> Callable[[], None]:
    """Register a running worker; returns the function that unregisters it."""
    if not registry.register(key, stop, on_signal):
        log.warning(
            "%s runs in thread %r, not the main thread, so it cannot install signal "
            "handlers: stop it with its stop() method (a SIGTERM/SIGINT reaches it only "
            "while a worker in the main thread handles signals)",
            name,
            threading.current_thread().name,
        )
        return lambda: None
    return lambda: registry.unregister(key)
