"""Testing helpers for apps that use mongoqueue: a pytest plugin with a fresh database.

Enable it in your ``conftest.py``::

    pytest_plugins = ["mongoqueue.testing"]

Fixtures:

``mongoqueue_uri``     (session) ``MONGODB_URI`` when set, else an embedded
                       server started for the session (extra ``embedded``)
``mongoqueue_client``  (session) a ``MongoClient`` on it
``mongoqueue_db``      a fresh database per test, dropped afterwards

Run your tasks in the test's process with :meth:`mongoqueue.App.run_until_empty`
(no worker process), after pointing your app at the test's database::

    @pytest.fixture
    def app(mongoqueue_db):
        from myapp.tasks import app
        with app.bound_to(mongoqueue_db):
            yield app

    def test_welcome_email(app):
        handle = send_welcome.enqueue("ada@example.com")
        assert app.run_until_empty() == 1
        assert handle.result(timeout=5) == {"sent": True}

The embedded server keeps its data in a temporary directory and stops at the
end of the session. It is SecantusDB, a MongoDB-compatible server for tests;
point ``MONGODB_URI`` at a real MongoDB (a replica set, for transactions and
change streams) to test against it instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from .embedded import EmbeddedServer, find_rust_server

__all__ = ["mongoqueue_client", "mongoqueue_db", "mongoqueue_uri"]


@pytest.fixture(scope="session")
def mongoqueue_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``MONGODB_URI``, or the URI of an embedded server started for this session."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    server = EmbeddedServer(
        tmp_path_factory.mktemp("mongoqueue-server"), prefer_rust=find_rust_server() is not None
    )
    server.start()
    try:
        yield server.uri
    finally:
        server.close()


@pytest.fixture(scope="session")
def mongoqueue_client(mongoqueue_uri: str) -> Iterator[MongoClient[dict[str, Any]]]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongoqueue_uri)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def mongoqueue_db(
    mongoqueue_client: MongoClient[dict[str, Any]],
) -> Iterator[Database[dict[str, Any]]]:
    """A database of its own for this test (``test_<random>``), dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    try:
        yield mongoqueue_client[name]
    finally:
        mongoqueue_client.drop_database(name)
