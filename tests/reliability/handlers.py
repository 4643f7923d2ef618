"""The handler that the reliability suite's worker processes run.

``tests.reliability.handlers:ledger`` appends two JSON lines per delivery to
``$RELIABILITY_LEDGER_DIR/<pid>.jsonl``: ``start`` when the handler begins (after
the claim returned) and ``end`` when it is about to return or raise (before the
worker completes or errors the job). Times are ``time.monotonic()``, which on
Linux is one clock for every process of the machine, so windows of different
processes can be compared. A process killed mid-job leaves a ``start`` alone.

The payload steers it: ``sleep`` (seconds of "work") and ``fail`` (raise, so the
job fails by policy after ``max_attempts``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from mongoqueue import Job


def _write(record: dict[str, Any]) -> None:
    path = os.path.join(os.environ["RELIABILITY_LEDGER_DIR"], f"{os.getpid()}.jsonl")
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write of a short line: never torn by a SIGKILL
    finally:
        os.close(fd)


def ledger(job: Job) -> None:
    base = {
        "job": str(job.id),
        "n": job.payload["n"],
        "pid": os.getpid(),
        "worker": job.queue.consumer_id,
        "attempts": job.attempts,
    }
    _write({"ev": "start", "t": time.monotonic(), **base})
    time.sleep(float(job.payload.get("sleep", 0.0)))
    if job.payload.get("fail"):
        _write({"ev": "end", "t": time.monotonic(), "outcome": "raised", **base})
        raise RuntimeError(f"job {job.payload['n']} fails by policy")
    _write({"ev": "end", "t": time.monotonic(), "outcome": "returned", **base})


async def noop_async(job: Job) -> None:
    """A coroutine handler (the CLI runs it with AsyncWorker); does nothing."""
