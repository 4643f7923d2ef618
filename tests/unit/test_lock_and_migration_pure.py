"""The pure documents of locks and of the 0.7 migration, and the lock twins' API."""

from __future__ import annotations

from datetime import datetime

import pytest
from bson import ObjectId

from mongoqueue import AsyncMongoLock, MongoLock, aio_migration, migration
from mongoqueue import lock_operations as lops
from mongoqueue import migration_operations as mops
from mongoqueue import operations as ops
from mongoqueue._lock_core import LockCore
from tests.twins import api_differences


def test_the_lock_twins_have_the_same_api() -> None:
    assert api_differences(MongoLock, AsyncMongoLock) == []


def test_acquire_takes_the_lock_only_when_free_on_the_servers_clock() -> None:
    (stage,) = lops.acquire_update("t1", "c1", 5000)
    for field in ("client_id", "token", "ttl", "acquired_at"):
        condition, _taken, kept = stage["$set"][field]["$cond"]
        assert kept == f"${field}"  # held: unchanged
        assert "$$NOW" in repr(condition)
    assert stage["$set"]["token"]["$cond"][1] == {"$literal": "t1"}
    assert lops.acquire_filter({"$ne": None}) == {"_id": {"$eq": {"$ne": None}}}
    assert lops.held_filter("name", "t1") == {"_id": {"$eq": "name"}, "token": "t1"}


def test_the_local_bound_of_a_lease_is_conservative() -> None:
    now = [100.0]
    core = LockCore("x", 10, monotonic=lambda: now[0])
    assert not core.locked
    assert core._took({"token": "mine"}, "mine", sent_at=100.0)
    assert core.locked
    assert 9.9 < core.remaining < 10
    now[0] = 109.99  # 10 s after sending, minus the margin
    assert not core.locked
    assert not core._took({"token": "theirs"}, "mine", sent_at=0)  # another holder's reply


def _old(**fields: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "_id": ObjectId(),
        "payload": "object",
        "priority": 0,
        "attempts": 0,
        "locked_by": None,
        "locked_at": None,
        "last_error": None,
    }
    doc.update(fields)
    return doc


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({}, "waiting"),
        ({"attempts": 2}, "waiting"),
        ({"attempts": 3, "last_error": "boom"}, "failed"),
        ({"attempts": 1, "locked_by": "c", "locked_at": datetime(2020, 1, 1)}, "running"),
        ({"locked_by": 7, "locked_at": datetime(2020, 1, 1), "progress": 3}, "running"),
    ],
)
def test_classify_07_documents(fields: dict[str, object], kind: str) -> None:
    assert mops.classify(_old(**fields), max_attempts=3) == (kind, None)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"payload": "string"}, "payload is string, not a document"),
        ({"priority": 1.5}, "priority 1.5 is not an integer"),
        ({"attempts": None}, "attempts None is not a count"),
        ({"locked_by": "c"}, "locked_at is not a date"),
        ({"locked_at": datetime(2020, 1, 1)}, "locked_at is set but locked_by is not"),
        ({"state": "ready"}, "'state' are not mongoqueue 0.7's"),
        ({"_id": "custom"}, "_id is not an ObjectId"),
        ({"last_error": 5}, "last_error is not a string"),
    ],
)
def test_classify_refuses_what_07_never_wrote(fields: dict[str, object], reason: str) -> None:
    kind, why = mops.classify(_old(**fields), max_attempts=3)
    assert kind == "unclassifiable"
    assert reason in str(why)


@pytest.mark.parametrize("kind", mops.KINDS)
def test_conversion_writes_every_field_of_the_current_format(kind: str) -> None:
    (stage,) = mops.convert_update(kind, 1000)
    written = set(stage["$set"]) | {"_id", "payload", "priority", "attempts"}
    job = ops.new_job(
        ObjectId(), {}, priority=0, created_at=datetime.now(), scheduled_at=datetime.now()
    )  # type: ignore[arg-type]
    assert written == set(job)
    assert stage["$set"]["state"] == ("failed" if kind == "failed" else "ready")
    assert (stage["$set"]["lease_token"] is None) == (kind != "running")


def test_the_conversion_filter_is_the_old_shape_as_read() -> None:
    doc = _old(attempts=1, locked_by="c", locked_at=datetime(2020, 1, 1))
    shape = mops.old_shape_filter(doc)
    assert shape["_id"] == {"$eq": doc["_id"]}
    assert shape["state"] == {"$exists": False}
    assert shape["locked_by"] == {"$eq": "c"}
    assert shape["attempts"] == {"$eq": 1}
    assert shape["progress"] == {"$eq": None}


def test_the_migration_twins_take_the_same_arguments() -> None:
    import inspect

    sync, async_ = inspect.signature(migration.migrate), inspect.signature(aio_migration.migrate)
    assert list(sync.parameters) == list(async_.parameters)
    assert [p.default for p in sync.parameters.values()] == [
        p.default for p in async_.parameters.values()
    ]
