"""Fixtures: one real MongoDB-compatible server per test session, over TCP.

With ``MONGODB_URI`` set, the suite runs against that server. Otherwise it
starts SecantusDB on a free port of 127.0.0.1: the Rust server ``secantusd-rs``
when installed (``scripts/test`` installs it), else the Python server from the
``embedded`` extra. ``MONGOQUEUE_TEST_SERVER=python`` forces the Python one.
Each test gets a fresh collection.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.collection import Collection

from mongoqueue import NO_BACKOFF, MongoQueue
from mongoqueue.embedded import EmbeddedServer
from tests.twins import AsyncAPI, SyncAPI
from tests.worker_twins import AsyncWorkers, SyncWorkers

TEST_DB = "mongoqueue_tests"


def _server_choice() -> str:
    if os.environ.get("MONGODB_URI"):
        return "MONGODB_URI"
    return os.environ.get("MONGOQUEUE_TEST_SERVER", "auto")


def pytest_report_header(config: pytest.Config) -> str:
    return f"mongoqueue test server: {_server_choice()}"


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    server = EmbeddedServer(
        tmp_path_factory.mktemp("server"), prefer_rust=_server_choice() != "python"
    )
    server.start()
    print(f"\nstarted the embedded {server.kind} server at {server.uri}")
    try:
        yield server.uri
    finally:
        server.close()


@pytest.fixture(scope="session")
def client(mongodb_uri: str) -> Iterator[MongoClient[dict[str, Any]]]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri)
    yield client
    client.close()


def _now_in_expr_works(client: MongoClient[dict[str, Any]]) -> bool:
    """Whether ``$expr`` comparisons with ``$$NOW`` in a query filter are right here.

    The queue decides lease expiry on the server's clock with them. SecantusDB's
    Python server answers every such comparison with true (README, "The test
    server"): the check is inert there, and the tests that prove it are expected
    to fail on it.
    """
    probe = client[TEST_DB][f"now_probe_{uuid.uuid4().hex[:8]}"]
    try:
        now = client.admin.command("hello")["localTime"]
        probe.insert_many([{"at": now + timedelta(hours=h)} for h in (-1, 1)])
        past = probe.count_documents({"$expr": {"$lte": ["$at", "$$NOW"]}})
        future = probe.count_documents({"$expr": {"$gt": ["$at", "$$NOW"]}})
        return (past, future) == (1, 1)
    finally:
        probe.drop()


@pytest.fixture(scope="session")
def now_in_expr_works(client: MongoClient[dict[str, Any]]) -> bool:
    return _now_in_expr_works(client)


@pytest.fixture
def server_clock_checks(request: pytest.FixtureRequest, now_in_expr_works: bool) -> None:
    """For tests of the server-side expiry check: expected to fail where ``$$NOW`` is broken."""
    if not now_in_expr_works:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="this server answers $expr comparisons with $$NOW wrongly "
                "(SecantusDB's Python server; see the README's test server notes)",
            )
        )


@pytest.fixture
def collection(client: MongoClient[dict[str, Any]]) -> Iterator[Collection[dict[str, Any]]]:
    name = f"jobs_{uuid.uuid4().hex[:12]}"
    yield client[TEST_DB][name]
    client[TEST_DB].drop_collection(name)


@pytest.fixture
def queue(collection: Collection[dict[str, Any]]) -> MongoQueue:
    """A queue with no retry backoff, so a failed job is claimable again at once."""
    return MongoQueue(collection, "consumer-1", timeout=30, max_attempts=3, retry=NO_BACKOFF)


@pytest.fixture(params=["sync", "async"])
def api(
    request: pytest.FixtureRequest, collection: Collection[dict[str, Any]], mongodb_uri: str
) -> Iterator[SyncAPI]:
    """Either twin, so one behavioural test runs against MongoQueue and AsyncMongoQueue.

    ``api.queue(consumer_id, timeout, max_attempts, retry=)`` builds a queue on the
    test's collection; the async one is driven through ``tests.twins.Blocking``.
    """
    twin = SyncAPI(collection) if request.param == "sync" else AsyncAPI(collection, mongodb_uri)
    yield twin
    twin.close()


@pytest.fixture(params=["sync", "async"])
def workers(
    request: pytest.FixtureRequest, collection: Collection[dict[str, Any]], mongodb_uri: str
) -> Iterator[SyncWorkers]:
    """Either worker, so one behavioural test runs against Worker and AsyncWorker.

    See ``tests.worker_twins``: ``workers.worker(handler, **options)``, ``workers.run()``,
    ``workers.start()``, and handler pairs (``handler``, ``pick``, ``waiting``, ``sleeping``).
    """
    cls = SyncWorkers if request.param == "sync" else AsyncWorkers
    twin = cls(collection, mongodb_uri)
    yield twin
    twin.close()
