"""The task layer on a real server: App, enqueue/configure, arguments, results, status."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from bson import Decimal128, ObjectId
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure

import mongoqueue
from mongoqueue import NO_BACKOFF, App, InvalidPayload, MongoQueue
from mongoqueue.embedded import EmbeddedServer
from mongoqueue.tasks import ResultTimeout, ResultUnavailable, TaskCancelled, TaskFailed


@pytest.fixture
def db(client: MongoClient[dict[str, Any]]) -> Iterator[Database[dict[str, Any]]]:
    name = f"tasks_{uuid.uuid4().hex[:12]}"
    yield client[name]
    client.drop_database(name)


@pytest.fixture
def app(db: Database[dict[str, Any]]) -> App:
    return App(db, consumer_id="test-worker", retry=NO_BACKOFF)


def test_bare_and_configured_task_enqueue_run_and_result(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="emails.send", queue="emails", max_attempts=5, priority=3)
    def send_email(to: str, template: str = "welcome") -> dict[str, Any]:
        return {"to": to, "template": template}

    h1 = add.enqueue(2, 3)
    h2 = send_email.enqueue("ada@example.com", template="reset")
    assert isinstance(h1.id, ObjectId)
    assert h1.status() == "waiting"
    assert h1.status().state == "waiting"
    assert app.run_until_empty() == 2
    assert h1.result(timeout=5) == 5
    assert h2.result(timeout=5) == {"to": "ada@example.com", "template": "reset"}
    status = h2.status()
    assert status == "completed"
    assert status.result == {"to": "ada@example.com", "template": "reset"}
    assert status.task == "emails.send"
    assert status.finished_at is not None
    assert status.expire_at is not None
    # A queue is a collection of the app's db; the job is a normal job there.
    doc = app.db["emails"].find_one({"_id": h2.id})
    assert doc is not None
    assert doc["payload"]["task"] == "emails.send"
    assert doc["priority"] == 3
    assert doc["max_attempts"] == 5
    assert "mongoqueue_expire" in app.db["emails"].index_information()


def test_configure_options_never_collide_with_task_kwargs(app: App) -> None:
    @app.task
    def echo(delay: int = 0, key: str = "", priority: int = 0) -> list[Any]:
        return [delay, key, priority]

    later = echo.configure(delay=3600).enqueue(delay=7, key="mine", priority=9)
    assert later.status() == "delayed"
    assert app.run_until_empty() == 0
    keyed = echo.configure(key="k1").enqueue(1)
    assert echo.configure(key="k1").enqueue(2).id == keyed.id
    other = echo.configure(queue="other", priority=5).enqueue(3)
    assert other.queue.collection.name == "other"
    assert app.run_until_empty(["default", "other"]) == 2
    assert keyed.result(timeout=5) == [1, "", 0]
    assert other.result(timeout=5) == [3, "", 0]
    doc = app.db["default"].find_one({"_id": later.id})
    assert doc is not None
    assert doc["payload"]["kwargs"] == {"delay": 7, "key": "mine", "priority": 9}


def test_bson_arguments_and_results_round_trip_exactly(app: App) -> None:
    @app.task
    def same(*values: Any, **named: Any) -> dict[str, Any]:
        return {"values": list(values), "named": named}

    when = dt.datetime(2024, 5, 17, 12, 30, 45, 123000, tzinfo=dt.timezone.utc)
    oid = ObjectId()
    money = Decimal128("12.345")
    blob = b"\x00\x01binary\xff"
    handle = same.enqueue(when, oid, blob, money, nested={"when": when, "list": [oid, blob]})
    app.run_until_empty()
    value = handle.result(timeout=5)
    assert value["values"] == [when, oid, blob, money]
    assert value["named"] == {"nested": {"when": when, "list": [oid, blob]}}
    assert type(value["values"][2]) is bytes
    assert type(value["values"][3]) is Decimal128


def test_non_bson_argument_is_refused_naming_it(app: App) -> None:
    @app.task
    def report(title: str, rows: Any = None) -> None:
        return None

    with pytest.raises(InvalidPayload, match="argument 'rows' of task report"):
        report.enqueue("x", rows={1, 2})
    with pytest.raises(InvalidPayload, match="argument 'title' of task report"):
        report.enqueue(Decimal("1.5"))
    with pytest.raises(TypeError, match="argument 'rows'"):  # NotBSON is also a TypeError
        report.enqueue("x", rows=object())
    with pytest.raises(mongoqueue.InvalidArgumentType, match=r"report\.enqueue"):
        report.enqueue("x", unknown=1)
    assert app.queue().size() == 0


def test_failed_task_raises_with_remote_traceback(app: App) -> None:
    @app.task(max_attempts=2)
    def boom(n: int) -> None:
        raise ValueError(f"bad value {n}")

    handle = boom.enqueue(42)
    app.run_until_empty()
    with pytest.raises(TaskFailed) as info:
        handle.result(timeout=5)
    assert info.value.error == "ValueError: bad value 42"
    assert "Traceback" in info.value.remote_traceback
    assert info.value.attempts == 2
    assert handle.status() == "failed"
    # The raw queue sees it as a normal failed job: requeue works on it.
    queue = app.queue()
    assert [job.id for job in queue.failed()] == [handle.id]
    assert queue.requeue(handle.id) == 1
    assert handle.status() == "waiting"


def test_result_timeout_names_state_and_unknown_job(app: App) -> None:
    @app.task
    def slow() -> None:
        return None

    handle = slow.configure(delay=3600).enqueue()
    with pytest.raises(ResultTimeout, match="is delayed"):
        handle.result(timeout=0.3)
    with pytest.raises(TimeoutError):
        handle.result(timeout=0)
    with pytest.raises(ResultUnavailable):
        app.handle(ObjectId()).result(timeout=0.2)
    assert app.status(ObjectId()) == "unknown"


def test_result_is_woken_when_a_worker_completes_the_job(app: App) -> None:
    @app.task
    def double(x: int) -> int:
        return 2 * x

    handle = double.enqueue(21)
    worker = app.worker(concurrency=1, idle_wait=0.2, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert handle.result(timeout=20) == 42
    finally:
        worker.stop()
        thread.join(30)


def test_keep_result_zero_deletes_like_the_raw_queue(app: App) -> None:
    @app.task(keep_result=0)
    def fire() -> str:
        return "gone"

    handle = fire.enqueue()
    app.run_until_empty()
    assert handle.status() == "unknown"
    assert app.db["default"].count_documents({}) == 0


def test_status_of_raw_jobs(app: App, db: Database[dict[str, Any]]) -> None:
    queue = MongoQueue(db["raw"], "c1", timeout=30, retry=NO_BACKOFF, max_attempts=1)
    waiting = queue.put({"n": 1})
    delayed = queue.put({"n": 2}, delay=3600)
    running = queue.put({"n": 3}, priority=-1)
    job = queue.next()
    assert job is not None
    assert job.id == waiting
    job.error("nope")
    held = queue.next()
    assert held is not None
    assert held.id == running
    assert queue.status(waiting) == "failed"
    assert queue.status(waiting).last_error == "nope"
    assert queue.status(delayed) == "delayed"
    status = queue.status(running)
    assert status == "running"
    assert status.locked_by == "c1"
    assert not status.lease_expired
    assert status.started_at is not None
    assert status.started_at.tzinfo is not None
    held.complete()
    assert queue.status(running) == "unknown"


def test_cancel_waiting_task_keeps_it_cancelled(app: App) -> None:
    @app.task
    def never() -> None:
        return None

    handle = never.configure(delay=60).enqueue()
    assert handle.cancel() == "cancelled"
    assert handle.status() == "cancelled"
    with pytest.raises(TaskCancelled):
        handle.result(timeout=1)
    assert app.run_until_empty() == 0


@pytest.fixture(scope="module")
def fast_ttl_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of this module's own whose TTL monitor runs every second (mongod's
    ``ttlMonitorSleepSecs``; 60 s by default), so expiry is seen in a test."""
    if os.environ.get("MONGODB_URI"):
        pytest.skip("changes a server parameter: runs on a server of its own")
    server = EmbeddedServer(
        tmp_path_factory.mktemp("ttl"),
        prefer_rust=os.environ.get("MONGOQUEUE_TEST_SERVER", "auto") != "python",
    )
    server.start()
    try:
        with MongoClient(server.uri) as admin:
            try:
                admin.admin.command("setParameter", 1, ttlMonitorSleepSecs=1)
            except OperationFailure as exc:
                pytest.skip(f"this server has no ttlMonitorSleepSecs: {exc}")
        yield server.uri
    finally:
        server.close()


def test_kept_results_are_removed_by_the_ttl_index(fast_ttl_uri: str) -> None:
    with MongoClient(fast_ttl_uri) as ttl_client:
        app = App(ttl_client["ttl_tasks"], retry=NO_BACKOFF)

        @app.task(keep_result=1)
        def short_lived() -> str:
            return "soon gone"

        @app.task(keep_result=3600)
        def long_lived() -> str:
            return "kept"

        gone, kept = short_lived.enqueue(), long_lived.enqueue()
        assert app.run_until_empty() == 2
        assert gone.status() == "completed"
        deadline = time.monotonic() + 30
        while gone.status() != "unknown":
            assert time.monotonic() < deadline, "the TTL index did not remove the job"
            time.sleep(0.2)
        assert kept.result(timeout=1) == "kept"
        with pytest.raises(ResultUnavailable):
            gone.result(timeout=1)
