"""Transactional enqueue (outbox without an outbox) and transactional tasks."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from mongoqueue import NO_BACKOFF, App, MongoQueue, TransactionsUnsupported
from mongoqueue.embedded import EmbeddedServer


class Boom(Exception):
    pass


@pytest.fixture
def db(client: MongoClient[dict[str, Any]]) -> Iterator[Database[dict[str, Any]]]:
    name = f"taskt_{uuid.uuid4().hex[:12]}"
    yield client[name]
    client.drop_database(name)


@pytest.fixture
def app(db: Database[dict[str, Any]]) -> App:
    return App(db, retry=NO_BACKOFF, timeout=30)


def test_enqueue_in_a_transaction_exists_iff_it_commits(
    app: App, db: Database[dict[str, Any]], client: MongoClient[dict[str, Any]]
) -> None:
    @app.task
    def welcome(user: str) -> str:
        return f"hi {user}"

    app.queue().ensure_indexes()
    db.create_collection("users")
    with client.start_session() as session:
        handles = []

        def doomed() -> None:
            with session.start_transaction():
                db.users.insert_one({"_id": "ada"}, session=session)
                handles.append(welcome.configure(session=session).enqueue("ada"))
                raise Boom

        with pytest.raises(Boom):
            doomed()
        rolled_back = handles[0]
        assert rolled_back.status() == "unknown"
        assert db.users.count_documents({}) == 0
        assert app.queue().size() == 0

        with session.start_transaction():
            db.users.insert_one({"_id": "bob"}, session=session)
            committed = welcome.configure(session=session, key="welcome-bob").enqueue("bob")
            # Not visible outside the transaction before it commits.
            assert committed.status() == "unknown"
        assert committed.status() == "waiting"
    assert app.run_until_empty() == 1
    assert committed.result(timeout=5) == "hi bob"


def test_raw_put_with_session(db: Database[dict[str, Any]], client: MongoClient[Any]) -> None:
    queue = MongoQueue(db["raw"], "c", retry=NO_BACKOFF)
    queue.ensure_indexes()
    with client.start_session() as session:

        def doomed() -> None:
            with session.start_transaction():
                queue.put({"n": 1}, session=session)
                raise Boom

        with pytest.raises(Boom):
            doomed()
        assert queue.size() == 0
        with session.start_transaction():
            job_id = queue.put({"n": 2}, session=session)
        assert queue.status(job_id) == "waiting"


def test_transactional_task_writes_and_completion_commit_together(
    app: App, db: Database[dict[str, Any]]
) -> None:
    calls: list[int] = []

    @app.task(transactional=True, max_attempts=2)
    def credit(account: str, amount: int, *, session: Any) -> int:
        calls.append(amount)
        db.accounts.update_one(
            {"_id": account}, {"$inc": {"balance": amount}}, upsert=True, session=session
        )
        db.ledger.insert_one({"account": account, "amount": amount}, session=session)
        if amount < 0:
            raise ValueError("no debits")
        return amount

    for name in ("accounts", "ledger"):
        db.create_collection(name)
    ok = credit.enqueue("ada", 5)
    bad = credit.enqueue("ada", -3)
    with pytest.raises(Exception, match="session"):
        credit.enqueue("ada", 1, session=None)
    app.run_until_empty()
    app.run_until_empty()
    assert ok.result(timeout=5) == 5
    assert bad.status() == "failed"
    assert calls.count(-3) == 2  # both attempts ran, and both rolled back
    assert db.accounts.find_one({"_id": "ada"}) == {"_id": "ada", "balance": 5}
    assert list(db.ledger.find({}, {"_id": 0})) == [{"account": "ada", "amount": 5}]


def test_transactional_task_must_declare_session(app: App) -> None:
    with pytest.raises(ValueError, match="'session'"):

        @app.task(transactional=True)
        def forgot(x: int) -> None:
            return None


def _stale_holder_scenario(app: App, db: Database[dict[str, Any]], transactional: bool) -> int:
    """Worker 1 starts a job and stalls past its lease; worker 2 takes the job over
    and finishes it; then worker 1 wakes up and finishes too. Returns the counter."""
    go_on = threading.Event()
    inside = threading.Event()
    first_call = threading.Event()

    def body(session: Any = None) -> None:
        if not first_call.is_set():
            first_call.set()
            inside.set()
            assert go_on.wait(30)
        db.counters.update_one({"_id": "c"}, {"$inc": {"n": 1}}, upsert=True, session=session)

    if transactional:

        @app.task(name="bump", transactional=True)
        def bump_tx(*, session: Any) -> None:
            body(session)

    else:

        @app.task(name="bump")
        def bump_plain() -> None:
            body()

    db.create_collection("counters")
    handle = app.handle(app.queue().put({"task": "bump", "args": [], "kwargs": {}}))
    from mongoqueue.tasks.runner import TaskRunner

    stale = app.queue().next()
    assert stale is not None
    errors: list[BaseException] = []

    def run_stale() -> None:
        try:
            TaskRunner(app)(stale)
        except BaseException as exc:  # the stale holder's failure is expected
            errors.append(exc)

    thread = threading.Thread(target=run_stale)
    thread.start()
    assert inside.wait(30)
    # Its lease (1 s) expires; another worker claims the job and completes it.
    other = App(db, retry=NO_BACKOFF, timeout=1, consumer_id="worker-2")
    other.registry = app.registry
    deadline = time.monotonic() + 30
    while other.run_until_empty() == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert handle.status() == "completed"
    go_on.set()
    thread.join(30)
    doc = db.counters.find_one({"_id": "c"})
    return 0 if doc is None else int(doc["n"])


def test_stale_holder_transaction_aborts_on_its_completion_fence(
    db: Database[dict[str, Any]],
) -> None:
    app = App(db, retry=NO_BACKOFF, timeout=1)
    assert _stale_holder_scenario(app, db, transactional=True) == 1


def test_plain_task_stale_holder_writes_twice(db: Database[dict[str, Any]]) -> None:
    """Why transactional tasks exist: at-least-once delivery repeats a plain task's effects."""
    app = App(db, retry=NO_BACKOFF, timeout=1)
    assert _stale_holder_scenario(app, db, transactional=False) == 2


def test_heartbeats_pause_while_a_long_transactional_task_commits(
    db: Database[dict[str, Any]],
) -> None:
    """A transactional task much longer than the heartbeat interval completes on its
    first run: heartbeats of its job pause while its transaction is open, so no
    heartbeat write conflicts with the transaction's completion of the job."""
    app = App(db, retry=NO_BACKOFF, timeout=6)
    runs: list[float] = []

    @app.task(transactional=True)
    def long_one(*, session: Any) -> str:
        runs.append(time.monotonic())
        db.effects.insert_one({"run": len(runs)}, session=session)
        time.sleep(1.5)  # several heartbeat intervals (0.2 s)
        return "done"

    db.create_collection("effects")
    handle = long_one.enqueue()
    worker = app.worker(heartbeat=0.2, idle_wait=0.5, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert handle.result(timeout=30) == "done"
    finally:
        worker.stop()
        thread.join(30)
    assert len(runs) == 1
    assert db.effects.count_documents({}) == 1


class _StandaloneServer(EmbeddedServer):
    """The test server without its replica-set advertisement (no transactions)."""

    def _command(self, port: int, data_dir: Path) -> list[str]:
        return [*super()._command(port, data_dir), "--standalone"]


@pytest.fixture(scope="module")
def standalone_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("MONGODB_URI"):
        pytest.skip("needs a standalone server; MONGODB_URI names another one")
    server = _StandaloneServer(
        tmp_path_factory.mktemp("standalone"),
        prefer_rust=os.environ.get("MONGOQUEUE_TEST_SERVER", "auto") != "python",
    )
    server.start()
    try:
        yield server.uri
    finally:
        server.close()


def test_transactional_task_on_standalone_fails_at_worker_start(standalone_uri: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(standalone_uri)
    try:
        assert "setName" not in client.admin.command("hello")
        app = App(client["standalone_tasks"])

        @app.task(transactional=True)
        def pay(*, session: Any) -> None:
            return None

        @app.task(queue="plain")
        def plain() -> str:
            return "fine"

        with pytest.raises(TransactionsUnsupported, match=r"pay.*replica set"):
            app.worker()
        with pytest.raises(TransactionsUnsupported):
            app.run_until_empty()
        # A worker of queues without transactional tasks starts; results poll.
        handle = plain.enqueue()
        assert app.run_until_empty(["plain"]) == 1
        assert handle.result(timeout=5) == "fine"
    finally:
        client.drop_database("standalone_tasks")
        client.close()


def test_next_holder_kills_a_dead_holders_open_transaction(
    db: Database[dict[str, Any]],
) -> None:
    """A worker dies after its task wrote in the transaction and before it committed:
    the transaction stays open on the server (60 s on mongod) and holds its writes'
    locks. The next holder of the job kills the recorded session first, so its own
    run does not conflict with the dead one's writes."""
    app = App(db, retry=NO_BACKOFF, timeout=1, max_attempts=5)
    wrote = threading.Event()
    never = threading.Event()
    calls: list[str] = []

    @app.task(transactional=True)
    def bump(*, session: Any) -> str:
        calls.append(threading.current_thread().name)
        db.counters.update_one({"_id": "c"}, {"$inc": {"n": 1}}, upsert=True, session=session)
        if len(calls) == 1:
            wrote.set()
            never.wait(60)  # "dead": its transaction stays open with its write
        return "ok"

    db.create_collection("counters")
    handle = bump.enqueue()
    from mongoqueue.tasks.runner import TaskRunner

    dead = app.queue().next()
    assert dead is not None
    failures: list[BaseException] = []

    def run_dead() -> None:
        try:
            TaskRunner(app)(dead)
        except BaseException as exc:  # it lost the job: expected once it wakes up
            failures.append(exc)

    thread = threading.Thread(target=run_dead, daemon=True, name="dead")
    thread.start()
    assert wrote.wait(30)
    other = App(db, retry=NO_BACKOFF, timeout=1, consumer_id="worker-2")
    other.registry = app.registry
    deadline = time.monotonic() + 30
    while other.run_until_empty() == 0:  # once the dead holder's lease has expired
        assert time.monotonic() < deadline
        time.sleep(0.1)
    try:
        # Its first run got through: no conflict with the dead holder's write.
        assert handle.status() == "completed"
        assert calls == ["dead", "MainThread"]
        assert db.counters.find_one({"_id": "c"}) == {"_id": "c", "n": 1}
    finally:
        never.set()
        thread.join(30)
    assert db.counters.find_one({"_id": "c"}) == {"_id": "c", "n": 1}
    # The dead holder's transaction was aborted under it (NoSuchTransaction past its
    # lease, or LeaseLost on a retry): it raised, and its write is gone.
    assert len(failures) == 1
