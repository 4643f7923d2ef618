"""The I/O-free worker core shared by Worker and AsyncWorker (no server needed)."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient

from mongoqueue import (
    AsyncMongoQueue,
    AsyncWorker,
    InvalidArgument,
    InvalidArgumentType,
    LeaseLost,
    MongoQueue,
    OperationFailed,
    QueueUnavailable,
    Worker,
)
from mongoqueue._worker_core import (
    EXIT_ERROR,
    EXIT_OK,
    MAX_RECONNECT_SECONDS,
    RunningState,
    WorkerCore,
    handle_outcome,
    is_async_handler,
)
from mongoqueue.job import JobData


async def async_handler(job: Any) -> None:
    pass


def sync_handler(job: Any) -> None:
    pass


class AsyncCallable:
    async def __call__(self, job: Any) -> None:
        pass


class SyncCallable:
    def __call__(self, job: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (async_handler, True),
        (functools.partial(async_handler), True),
        (AsyncCallable(), True),
        (functools.partial(AsyncCallable()), True),
        (sync_handler, False),
        (lambda job: async_handler(job), False),  # returns a coroutine, but cannot be told
        (SyncCallable(), False),
        (print, False),
        (AsyncCallable, False),  # the class: calling it makes an instance
        ("async_handler", False),
    ],
)
def test_which_handlers_are_async(handler: object, expected: bool) -> None:
    assert is_async_handler(handler) is expected


def _core(**options: Any) -> WorkerCore:
    settings: dict[str, Any] = {
        "concurrency": 1,
        "heartbeat": None,
        "hard_limit": None,
        "grace": 30.0,
        "burst": False,
        "idle_wait": 1.0,
        "handle_signals": False,
        "observer": None,
    }
    return WorkerCore(9.0, **{**settings, **options})


def test_settings_defaults_and_limits() -> None:
    core = _core()
    assert core.heartbeat == pytest.approx(3.0)  # a third of the timeout
    assert core._tick == 0.5  # hard limits are checked at least twice a second
    assert _core(heartbeat=0.2)._tick == 0.2
    assert core.counts == dict.fromkeys(
        ("completed", "retried", "failed", "released", "lost", "abandoned"), 0
    )
    with pytest.raises(InvalidArgument, match=r"heartbeat .* shorter than the queue's timeout"):
        _core(heartbeat=9)
    with pytest.raises(InvalidArgument, match="hard_limit"):
        _core(hard_limit=0)
    with pytest.raises(InvalidArgumentType, match="concurrency"):
        _core(concurrency="2")
    with pytest.raises(InvalidArgumentType, match=r"observer\(job, outcome, seconds\)"):
        _core(observer="metrics")


def test_grace_applies_only_after_a_requested_stop() -> None:
    core = _core(grace=12)
    assert core._shutdown_grace(EXIT_OK) == 12
    assert core._shutdown_grace(EXIT_ERROR) == 0


def test_reconnect_pauses_double_up_to_a_maximum() -> None:
    pauses = []
    pause = 0.0
    for _ in range(10):
        pause = WorkerCore._reconnect_pause(pause)
        pauses.append(pause)
    assert pauses[:4] == [0.5, 1.0, 2.0, 4.0]
    assert pauses[-1] == MAX_RECONNECT_SECONDS
    assert max(pauses) == MAX_RECONNECT_SECONDS


def test_a_second_signal_exits_with_128_plus_its_number(monkeypatch, caplog) -> None:
    shutdowns: list[bool] = []
    monkeypatch.setattr(logging, "shutdown", lambda: shutdowns.append(True))
    core = _core(grace=7)
    with caplog.at_level(logging.INFO, logger="mongoqueue.worker"):
        assert core._on_signal(signal.SIGTERM, stopping=False) is None
        assert "SIGTERM: stopping; running jobs have 7.0s to finish" in caplog.text
        assert not shutdowns
        assert core._on_signal(signal.SIGINT, stopping=True) == 130
        assert core._on_signal(signal.SIGTERM, stopping=True) == 143
    assert "second SIGINT: exiting now" in caplog.text
    assert shutdowns == [True, True]  # logs are flushed before the hard exit


def _running(now: float) -> RunningState[JobData]:
    running = RunningState(JobData({"_id": 1, "payload": {}, "lease_token": "t"}), lease=3.0)
    running.started = running.last_beat = now
    return running


def test_what_a_running_job_is_due() -> None:
    running = _running(100.0)
    assert running.due(100.5, interval=1.0, hard_limit=None) is None
    assert running.due(101.0, interval=1.0, hard_limit=None) == "beat"
    running.last_beat = 101.0
    assert running.due(101.5, interval=1.0, hard_limit=None) is None
    assert running.due(101.5, interval=1.0, hard_limit=1.5) == "abandon"  # before any beat
    assert running.due(500.0, interval=1.0, hard_limit=None) == "beat"  # no limit: never


def test_a_job_is_settled_once_and_a_failed_settlement_counts_as_lost(caplog) -> None:
    running = _running(0.0)
    assert running.claim("completed")
    assert not running.claim("abandoned")
    assert running.settled == "completed"
    with caplog.at_level(logging.WARNING, logger="mongoqueue.worker"):
        running.settle_failed(LeaseLost("job 1: the lease was lost"))
        assert running.settled == "lost"
        assert "delivery is at least once" in caplog.text
        running.settle_failed(QueueUnavailable("no server"))
        assert "it comes back when its lease expires" in caplog.text


def test_a_settled_job_is_beaten_until_acknowledged_and_never_abandoned() -> None:
    running = _running(100.0)
    assert running.claim("completed")
    assert running.due(200.0, interval=1.0, hard_limit=1.5) == "beat"  # not "abandon"
    running.acked()
    assert running.due(200.0, interval=1.0, hard_limit=1.5) is None


def test_a_transient_acknowledgement_failure_is_retried_while_the_lease_lasts(caplog) -> None:
    running = _running(time.monotonic())  # lease 3 s from now
    running.claim("completed")
    pauses = [running.ack_failed(QueueUnavailable("down"), retry=True) for _ in range(5)]
    assert pauses == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert running.ambiguous
    assert not running.done
    assert "trying again in 0.25s" in caplog.text
    running.last_beat -= 3.0  # the lease has run out: give up, the job comes back
    assert running.ack_failed(QueueUnavailable("down"), retry=True) is None
    assert (running.settled, running.done) == ("lost", True)


def test_permanent_failures_and_release_are_not_retried() -> None:
    running = _running(time.monotonic())
    running.claim("completed")
    assert running.ack_failed(OperationFailed("refused"), retry=True) is None
    assert running.settled == "lost"
    released = _running(time.monotonic())
    released.claim("released")
    assert released.ack_failed(QueueUnavailable("down"), retry=False) is None


def _let_go(let_go: str | None) -> JobData:
    job = JobData({"_id": 1, "payload": {}})  # no token: the handle let go
    job._let_go = let_go  # type: ignore[assignment]
    return job


@pytest.mark.parametrize(
    ("let_go", "intended", "ambiguous", "outcome"),
    [
        (None, "completed", False, "completed"),  # the handler called complete()
        ("failed", "completed", False, "failed"),  # the handler called error()
        ("released", "completed", False, "released"),  # the handler called release()
        ("lost", "completed", False, "lost"),  # another consumer holds it
        ("gone", "completed", False, "lost"),  # completed by another consumer
        ("free", "failed", False, "lost"),
        ("gone", "completed", True, "completed"),  # our earlier, unanswered complete
        ("free", "abandoned", True, "abandoned"),  # our earlier, unanswered error
        ("lost", "completed", True, "lost"),
        ("gone", "failed", True, "lost"),
    ],
)
def test_what_became_of_a_job_the_handle_let_go(let_go, intended, ambiguous, outcome) -> None:
    assert handle_outcome(_let_go(let_go), intended, ambiguous) == outcome


def test_a_job_the_handler_settled_itself_needs_no_acknowledgement() -> None:
    running = RunningState(_let_go("released"), lease=3.0)
    running.claim("completed")
    assert not running.needs_ack()
    assert (running.settled, running.done) == ("released", True)


# ------------------------------------------------------------------ the two workers' arguments


@pytest.fixture
def queues() -> Iterator[tuple[MongoQueue, AsyncMongoQueue]]:
    client: MongoClient[dict[str, Any]] = MongoClient(connect=False)
    aclient: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(connect=False)
    yield MongoQueue(client.db.jobs, "w", timeout=9), AsyncMongoQueue(aclient.db.jobs, "w", 9)
    client.close()
    asyncio.run(aclient.close())


def test_each_worker_takes_its_own_queue_and_handler_kind(queues) -> None:
    queue, aqueue = queues
    assert AsyncWorker(aqueue, async_handler).heartbeat == pytest.approx(3.0)
    assert AsyncWorker(aqueue, AsyncCallable(), concurrency=50).concurrency == 50
    with pytest.raises(InvalidArgumentType, match="AsyncMongoQueue, got MongoQueue; run a"):
        AsyncWorker(queue, async_handler)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType, match=r"coroutine function \(async def\)"):
        AsyncWorker(aqueue, sync_handler)
    with pytest.raises(InvalidArgumentType, match="MongoQueue, got AsyncMongoQueue"):
        Worker(aqueue, sync_handler)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType, match="run it with AsyncWorker"):
        Worker(queue, async_handler)
    with pytest.raises(InvalidArgument, match="heartbeat"):
        AsyncWorker(aqueue, async_handler, heartbeat=9)
    assert repr(AsyncWorker(aqueue, async_handler)) == (
        "<AsyncWorker db.jobs consumer='w' concurrency=1>"
    )
