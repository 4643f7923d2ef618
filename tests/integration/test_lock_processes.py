"""MongoLock across real OS processes: at most one holder at any instant.

Racing processes acquire one lock over and over; two more acquire it and are
SIGKILLed while holding it. Every hold is a window on ``time.monotonic()``,
which all processes of the machine share: from just after ``acquire()``
returned to just before ``release()`` was sent, cut at the end of the lease as
the handle counts it (``locked`` is False after that). A SIGKILLed holder's
window runs to the end of its lease. No two windows may overlap, and the lock
of every killed holder must be taken over once its lease ends.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LEASE = "1.0"
ROUNDS = 12


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.lockers", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _read_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no line from process {proc.pid} within {timeout}s")
    record: dict[str, Any] = json.loads(proc.stdout.readline())
    return record


def test_racing_and_killed_holders_never_overlap(mongodb_uri, collection) -> None:
    where = (mongodb_uri, collection.database.name, collection.name)
    racers = [_spawn("race", *where, f"racer-{i}", str(ROUNDS), LEASE, str(i)) for i in range(3)]
    doomed = [_spawn("hold", *where, f"doomed-{i}", LEASE) for i in range(2)]
    killed = []
    try:
        for proc in doomed:
            record = _read_line(proc, timeout=120)
            os.kill(proc.pid, signal.SIGKILL)  # dies holding the lock
            killed.append(record)
        holds = []
        for proc in racers:
            out, _ = proc.communicate(timeout=240)
            assert proc.returncode == 0, out
            holds += [json.loads(line) for line in out.splitlines()]
    finally:
        for proc in racers + doomed:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
    assert all(proc.returncode == -signal.SIGKILL for proc in doomed)
    assert len(holds) == 3 * ROUNDS  # every racer got the lock every time: nothing stuck

    windows = [(h["start"], min(h["end"], h["bound"]), h["name"]) for h in holds]
    windows += [(k["start"], k["bound"], k["name"]) for k in killed]
    windows.sort()
    latest_end, latest = windows[0][1], windows[0]
    for window in windows[1:]:
        assert window[0] >= latest_end, ("two holders at once", latest, window)
        if window[1] > latest_end:
            latest_end, latest = window[1], window
    for k in killed:  # each dead holder's lock was taken over once its lease ended
        assert any(h["start"] >= k["bound"] for h in holds), k
    assert sum(h["locked"] for h in holds) > 0  # holders knew they held the lock
