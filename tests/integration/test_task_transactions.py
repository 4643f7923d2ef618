"""Transactional enqueue (outbox without an outbox) and transactional tasks."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from mongoqueue import NO_BACKOFF, App, MongoQueue


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
        with pytest.raises(Boom):
            with session.start_transaction():
                db.users.insert_one({"_id": "ada"}, session=session)
                rolled_back = welcome.configure(session=session).enqueue("ada")
                raise Boom
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
        with pytest.raises(Boom):
            with session.start_transaction():
                queue.put({"n": 1}, session=session)
                raise Boom
        assert queue.size() == 0
        with session.start_transaction():
            job_id = queue.put({"n": 2}, session=session)
        assert queue.status(job_id) == "waiting"
