"""Transient and permanent server errors, injected into real replies by the proxy.

The proxy (``tests/reliability/proxy.py``) rewrites the server's replies to the
heartbeats and acknowledgements of running jobs into error replies mongod
sends: a shutdown or step-down (codes 91, 11600, 10107, 189 with the
``RetryableWriteError`` label), an operation time limit (50, 262), a write
concern timeout (64, ``errInfo.wtimeout``, merged into a reply whose write was
applied) and a permanent refusal (13, Unauthorized). pymongo raises its own
errors from them (and retries some once by itself); the queue classifies
them, and the workers must keep beating, enforce the hard limit, and run
each job once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from pymongo import uri_parser

from mongoqueue import MongoQueue
from mongoqueue.worker import EXIT_OK
from tests.helpers import wait_for
from tests.reliability.proxy import ChaosProxy

RETRYABLE = ["RetryableWriteError"]

#: (name, reply, forwarded to the server first, times: 2 when pymongo retries once itself)
Error = tuple[str, dict[str, Any], bool, int]


def _failure(name: str, code: int, labels: list[str] | None = None, times: int = 1) -> Error:
    reply: dict[str, Any] = {"ok": 0, "code": code, "codeName": name, "errmsg": name}
    if labels:
        reply["errorLabels"] = labels
    return (name, reply, False, times)


#: A failover or shutdown: pymongo forgets the server and finds it again (rediscovery).
FAILOVER: list[Error] = [
    _failure("ShutdownInProgress", 91, RETRYABLE, times=2),
    _failure("NotWritablePrimary", 10107, RETRYABLE, times=2),
    _failure("InterruptedAtShutdown", 11600, RETRYABLE, times=2),
    _failure("PrimarySteppedDown", 189, RETRYABLE, times=2),
]

#: Time limits, a write concern timeout, a transient label, and a permanent refusal.
TIMEOUTS: list[Error] = [
    _failure("MaxTimeMSExpired", 50),
    (
        "WriteConcernFailed",
        {
            "writeConcernError": {
                "code": 64,
                "codeName": "WriteConcernFailed",
                "errmsg": "waiting for replication timed out",
                "errInfo": {"wtimeout": True},
            }
        },
        True,
        1,
    ),
    _failure("Unauthorized", 13),
    _failure("ExceededTimeLimit", 262),
    _failure("WriteConflict", 112, ["TransientTransactionError"]),
]

#: (errors, lease, heartbeat, handler seconds, pause between two injections)
CASES = {
    "failover": (FAILOVER, 4.0, 0.5, 7.0, 1.8),
    "timeouts": (TIMEOUTS, 1.5, 0.3, 4.0, 0.4),
}


def _job_write(body: Mapping[str, Any]) -> bool:
    """A write to one held job (heartbeat, error, release): fenced by its token."""
    query = body.get("query") or {}
    return "lease_token" in query and "_id" in query


# A not-primary or shutdown error makes pymongo forget the server until its monitor
# checks it again: after heartbeatFrequencyMS (10 s by default), longer than these
# leases. The workers' clients check every 0.5 s (see RELIABILITY.md).


@pytest.fixture
def proxy(mongodb_uri: str) -> Iterator[ChaosProxy]:
    """Requested before ``workers``, so the workers' clients close while it still runs."""
    ((host, port),) = uri_parser.parse_uri(mongodb_uri)["nodelist"]
    if host not in ("127.0.0.1", "localhost"):
        pytest.fail(f"the proxy forwards to 127.0.0.1 only, got {host}")
    with ChaosProxy(port) as chaos:
        yield chaos


class Injector:
    """Injects the errors one after another into the writes of held jobs, one success
    between two, until stopped."""

    def __init__(
        self, proxy: ChaosProxy, errors: list[Error] = FAILOVER + TIMEOUTS, pause: float = 0.8
    ) -> None:
        self.proxy = proxy
        self.errors = errors
        self.pause = pause
        self.kinds: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Injector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.proxy.clear_injections()

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            name, reply, forward, times = self.errors[index % len(self.errors)]
            before = self.proxy.injected
            self.proxy.inject("findAndModify", reply, times=times, forward=forward, when=_job_write)
            while self.proxy.injected < before + times and not self._stop.wait(0.01):
                pass
            if self.proxy.injected >= before + times:
                self.kinds.append(name)
            index += 1
            self._stop.wait(self.pause)  # let each job have a heartbeat through


def _figures(**figures: Any) -> None:
    line = json.dumps({"scenario": "transient server errors", **figures})
    print(line)
    path = os.environ.get("RELIABILITY_FIGURES")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")


@pytest.mark.parametrize("case", CASES)
def test_heartbeats_survive_server_errors_and_no_job_runs_twice(
    proxy, workers, collection, caplog, case
) -> None:
    """Jobs longer than their lease, heartbeats answered with server errors in turn
    (a 4 s job on a 1.5 s lease for the time limits; 7 s on 4 s for failovers, each of
    which costs about a second of pymongo's rediscovery): each job runs once, and a
    rival consumer never gets one."""
    errors, lease, beat, seconds, pause = CASES[case]
    producer = MongoQueue(collection, "producer")
    ids = producer.put_many([{"n": n} for n in range(2)])
    runs: list[Any] = []

    def body(job: Any) -> None:
        runs.append(job.id)

    rival = MongoQueue(collection, "rival", timeout=lease)
    stolen: list[Any] = []
    stop_rival = threading.Event()

    def compete() -> None:
        while not stop_rival.wait(0.1):
            job = rival.next()
            if job is not None:
                stolen.append(job.id)

    handler = workers.pick(
        lambda job: (body(job), time.sleep(seconds)), _async_sleeper(body, seconds)
    )
    worker = workers.worker(
        handler,
        timeout=lease,
        heartbeat=beat,
        concurrency=2,
        uri=proxy.uri(heartbeatFrequencyMS="500"),
        burst=True,
    )
    competitor = threading.Thread(target=compete, daemon=True)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mongoqueue.worker"):
        runner = workers.start(worker)
        wait_for(lambda: len(runs) == 2, timeout=20)
        competitor.start()
        with Injector(proxy, errors, pause) as injector:
            code = runner.join(timeout=60)
    stop_rival.set()
    competitor.join(5)
    assert code == EXIT_OK
    assert stolen == []
    assert sorted(runs) == sorted(ids)  # each job ran once
    assert worker.counts["completed"] == 2
    assert collection.count_documents({}) == 0
    failed_beats = caplog.text.count("heartbeat for job")
    assert failed_beats >= 3, caplog.text
    assert len(set(injector.kinds)) >= 3, injector.kinds
    _figures(
        case=case,
        lease=lease,
        worker=workers.kind,
        jobs=2,
        injections=proxy.injected,
        kinds=sorted(set(injector.kinds)),
        failed_heartbeats=failed_beats,
        runs=len(runs),
        lost=0,
        double_holds=len(stolen),
        seconds=round(time.monotonic() - started, 1),
    )


def test_the_hard_limit_is_enforced_while_server_errors_go_on(
    proxy, workers, collection, caplog
) -> None:
    producer = MongoQueue(collection, "producer")
    job_id = producer.put({"n": 1})
    handler = workers.pick(lambda job: time.sleep(4), _async_sleeper(lambda job: None, 4))
    worker = workers.worker(
        handler,
        timeout=3,
        heartbeat=0.5,
        hard_limit=2.0,
        uri=proxy.uri(heartbeatFrequencyMS="500"),
        burst=True,
    )
    with Injector(proxy), caplog.at_level(logging.WARNING, logger="mongoqueue.worker"):
        code = workers.run(worker)
    assert code == EXIT_OK
    assert worker.counts["abandoned"] == 1
    doc = collection.find_one({"_id": job_id})
    assert doc["state"] == "failed"  # max_attempts 1: the abandoned attempt was recorded
    assert doc["attempts"] == 1
    assert "hard limit" in doc["last_error"]


def _async_sleeper(body: Any, seconds: float) -> Any:
    import asyncio

    async def handle(job: Any) -> None:
        body(job)
        await asyncio.sleep(seconds)

    return handle


def test_a_job_finished_during_an_outage_is_completed_when_the_server_returns(
    proxy, workers, collection, caplog
) -> None:
    """The handler returns during an 8 s outage; the worker keeps trying to complete the
    job while its lease lasts, and completes it when the server is back: it runs once."""
    producer = MongoQueue(collection, "producer")
    job_id = producer.put({"n": 1})
    release = threading.Event()
    runs: list[Any] = []

    def record(job: Any) -> None:
        runs.append(job.id)

    handler = workers.pick(
        lambda job: (record(job), release.wait(30)), _async_waiter(record, release)
    )
    worker = workers.worker(
        handler,
        timeout=20,
        max_attempts=1,
        uri=proxy.uri(serverSelectionTimeoutMS="1000", heartbeatFrequencyMS="500"),
    )
    with caplog.at_level(logging.WARNING, logger="mongoqueue.worker"):
        runner = workers.start(worker)
        try:
            wait_for(lambda: runs)
            proxy.refuse = True
            proxy.cut()
            release.set()  # the handler returns while the server cannot be reached
            down = time.monotonic()
            wait_for(lambda: "could not record it as completed" in caplog.text, timeout=15)
            time.sleep(max(0.0, 8.0 - (time.monotonic() - down)))  # the outage lasts 8 s
            proxy.refuse = False
            wait_for(lambda: worker.counts["completed"] == 1, timeout=20)
        finally:
            release.set()
            proxy.refuse = False
            worker.stop()
            runner.join(timeout=30)
    assert runs == [job_id]
    assert collection.count_documents({}) == 0
    assert worker.counts["lost"] == 0


def _async_waiter(body: Any, event: threading.Event) -> Any:
    import asyncio

    async def handle(job: Any) -> None:
        body(job)
        while not event.is_set():
            await asyncio.sleep(0.02)

    return handle
