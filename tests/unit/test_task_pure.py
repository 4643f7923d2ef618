"""Pure parts of the task layer: documents, status, argument checks (no server)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import ObjectId

from mongoqueue import InvalidArgument, InvalidArgumentType, InvalidPayload
from mongoqueue import operations as ops
from mongoqueue._core import QueueCore
from mongoqueue.status import job_status
from mongoqueue.tasks.operations import queues_wake_pipeline, read_call, task_payload
from mongoqueue.tasks.registry import TaskDef

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def _task(func: Any, **options: Any) -> TaskDef:
    settings: dict[str, Any] = {
        "name": None,
        "queue": "default",
        "max_attempts": None,
        "retry": None,
        "timeout": None,
        "priority": 0,
        "keep_result": 60,
        "transactional": False,
    }
    settings.update(options)
    return TaskDef(func, **settings)


def test_complete_update_is_one_stage_to_completed_with_server_time_expiry() -> None:
    update = ops.complete_update({"$weird": "value"}, 5000)
    first = update[0]["$set"]
    assert first["state"] == "completed"
    assert first["result"] == {"$literal": {"$weird": "value"}}  # never read as operators
    assert first["finished_at"] == "$$NOW"
    assert first["expire_at"] == {"$toDate": {"$add": [{"$toLong": "$$NOW"}, 5000]}}
    assert first["lease_token"] is None
    assert update[1] == {"$unset": ["cancel_requested"]}


def test_complete_update_choice_keep_and_result() -> None:
    assert QueueCore._complete_update(None, None) is None  # plain complete(): delete
    assert QueueCore._complete_update(42, 0) is None  # keep=0: delete
    with pytest.raises(InvalidArgument, match="keep=SECONDS"):
        QueueCore._complete_update(42, None)
    with pytest.raises(InvalidPayload, match="the result"):
        QueueCore._complete_update({1, 2}, 10)
    assert QueueCore._complete_update(1, timedelta(seconds=2)) == ops.complete_update(1, 2000)


def test_pass_update_fails_at_max_passes_with_message() -> None:
    update = ops.pass_update(3, "$no worker", 1000)
    assert update[0] == {"$set": {"passes": {"$add": [{"$ifNull": ["$passes", 0]}, 1]}}}
    second = update[1]["$set"]
    assert second["state"] == {"$cond": [{"$gte": ["$passes", 3]}, "failed", "ready"]}
    assert second["last_error"]["$cond"][1] == {"$literal": "$no worker"}


def test_expire_index_is_a_partial_ttl_index() -> None:
    spec = ops.EXPIRE_INDEX.document
    assert spec["expireAfterSeconds"] == 0
    assert spec["partialFilterExpression"] == {"expire_at": {"$type": "date"}}
    assert ops.EXPIRE_INDEX in ops.INDEXES


@pytest.mark.parametrize(
    ("doc", "state"),
    [
        (None, "unknown"),
        ({"state": "ready", "lease_token": None, "visible_at": NOW}, "waiting"),
        ({"state": "ready", "lease_token": None, "visible_at": NOW + timedelta(1)}, "delayed"),
        ({"state": "ready", "lease_token": "t", "visible_at": NOW}, "running"),
        ({"state": "failed"}, "failed"),
        ({"state": "completed", "result": 1}, "completed"),
        ({"state": "cancelled"}, "cancelled"),
    ],
)
def test_job_status_states(doc: dict[str, Any] | None, state: str) -> None:
    status = job_status(1, doc, NOW)
    assert status == state
    assert status.state == state
    assert status.final == (state in ("completed", "failed", "cancelled", "unknown"))


def test_job_status_details_and_naive_dates() -> None:
    naive = datetime(2026, 1, 1, 11, 0)
    doc = {
        "state": "ready",
        "lease_token": "t",
        "lease_expires_at": naive,
        "locked_by": "w1",
        "attempts": 2,
        "payload": {"task": "send", "args": [], "kwargs": {}},
    }
    status = job_status("id", doc, NOW)
    assert status.lease_expired
    assert status.task == "send"
    assert status.attempts == 2
    assert status.as_dict()["state"] == "running"
    assert status["state"] == "running"
    assert status["attempts"] == 2
    assert status[:3] == "run"


def test_encode_call_binds_and_names_bad_arguments() -> None:
    def send(to: str, *, template: str = "welcome") -> None:
        return None

    task = _task(send)
    assert task.encode_call(("a@b",), {"template": "x"}) == task_payload(
        "send", ["a@b"], {"template": "x"}
    )
    with pytest.raises(InvalidArgumentType, match="missing a required argument: 'to'"):
        task.encode_call((), {})
    with pytest.raises(InvalidPayload, match="argument 'to' of task send"):
        task.encode_call((object(),), {})
    with pytest.raises(InvalidPayload, match="argument 'template'"):
        task.encode_call(("x",), {"template": {"$bad": 1}})


def test_transactional_task_session_parameter() -> None:
    def pay(amount: int, *, session: Any) -> None:
        return None

    task = _task(pay, transactional=True)
    assert "session" not in task.signature.parameters
    with pytest.raises(InvalidArgument, match="session"):
        task.encode_call((1,), {"session": None})
    with pytest.raises(InvalidArgument, match="'session'"):
        _task(lambda amount: None, transactional=True)


def test_read_call_of_task_and_raw_payloads() -> None:
    oid = ObjectId()
    assert read_call({"task": "t", "args": [oid], "kwargs": {"a": 1}}) == ("t", [oid], {"a": 1})
    assert read_call({"n": 1}) == (None, [], {})
    assert read_call({"task": 3}) == (None, [], {})


def test_queues_wake_pipeline_limits_to_collections() -> None:
    pipeline = queues_wake_pipeline(["high", "low"])
    assert pipeline[0] == {"$match": {"ns.coll": {"$in": ["high", "low"]}}}
    assert pipeline[1:] == ops.wake_pipeline()


def _apps() -> tuple[Any, Any]:
    from pymongo import AsyncMongoClient, MongoClient

    from mongoqueue import App, AsyncApp

    # No server is contacted: clients connect lazily, and registering tasks is local.
    sync_client: MongoClient[dict[str, Any]] = MongoClient("mongodb://127.0.0.1:9", connect=False)
    async_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        "mongodb://127.0.0.1:9", connect=False
    )
    return App(sync_client.db), AsyncApp(async_client.db)


def test_transactional_task_kind_must_match_the_app() -> None:
    app, aapp = _apps()

    async def coro(*, session: Any) -> None:
        return None

    def plain(*, session: Any) -> None:
        return None

    with pytest.raises(InvalidArgument, match="register it on an AsyncApp"):
        app.task(transactional=True)(coro)
    with pytest.raises(InvalidArgument, match="register it on an App"):
        aapp.task(transactional=True)(plain)
    assert app.task(transactional=True)(plain).name == "plain"


def test_default_queue_order_is_registration_order_and_options_checked() -> None:
    app, _ = _apps()
    app.task(queue="zeta")(lambda: None)
    app.task(queue="alpha", name="other")(lambda: None)
    assert app.served_queues(None) == ["zeta", "alpha"]
    assert app.served_queues(["alpha"]) == ["alpha"]
    with pytest.raises(InvalidArgumentType, match="not a str"):
        app.served_queues("alpha")
    with pytest.raises(InvalidArgumentType, match="unknown task option"):
        app.task(queues="x")
    with pytest.raises(InvalidArgument, match="already registered"):
        app.task(name="other")(lambda: None)
