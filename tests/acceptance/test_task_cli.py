"""``mongoqueue worker module:app --queue ...``, ``status``, ``result``, ``cancel`` as processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from mongoqueue import NO_BACKOFF, App
from tests.acceptance.conftest import ROOT


@pytest.fixture
def db(client: MongoClient[dict[str, Any]]) -> Iterator[Database[dict[str, Any]]]:
    name = f"taskcli_{uuid.uuid4().hex[:12]}"
    yield client[name]
    client.drop_database(name)


def _run(uri: str, db: Database[Any], *args: str, collection: str = "default") -> Any:
    env = dict(os.environ, TASK_APP_URI=uri, TASK_APP_DB=db.name, PYTHONUNBUFFERED="1")
    env.pop("MONGODB_URI", None)
    command = [
        sys.executable, "-m", "mongoqueue", "--uri", uri, "--db", db.name,
        "--collection", collection, *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=ROOT, env=env)


def test_app_worker_runs_every_task_high_queue_first(
    mongodb_uri: str, db: Database[dict[str, Any]]
) -> None:
    # Enqueue with an app of the same task names, as a web process would.
    producer = App(db, retry=NO_BACKOFF)

    @producer.task
    def normal(n: int) -> int:
        raise AssertionError("runs in the worker")

    @producer.task(queue="high")
    def urgent(n: int) -> None:
        raise AssertionError("runs in the worker")

    normals = [normal.enqueue(i) for i in range(3)]
    urgents = [urgent.enqueue(i) for i in range(3)]
    done = _run(
        mongodb_uri, db, "worker", "tests.acceptance.task_app:app",
        "--queue", "high", "--queue", "default", "--concurrency", "1", "--burst",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    order = [doc["task"] for doc in db["runs"].find().sort("_id", 1)]
    assert order == ["urgent"] * 3 + ["normal"] * 3
    assert [h.result(timeout=5) for h in normals] == [0, 10, 20]
    assert urgents[1].result(timeout=5) == {"urgent": 1}

    shown = _run(mongodb_uri, db, "status", str(normals[2].id))
    assert shown.returncode == 0, shown.stderr
    assert f"{normals[2].id}: completed" in shown.stdout
    assert "result: 20" in shown.stdout
    waited = _run(mongodb_uri, db, "result", str(urgents[0].id), "--wait", "5", collection="high")
    assert waited.returncode == 0, waited.stderr
    assert '"urgent": 0' in waited.stdout


def test_cli_result_reports_failure_timeout_and_cancel(
    mongodb_uri: str, db: Database[dict[str, Any]]
) -> None:
    producer = App(db, retry=NO_BACKOFF)

    @producer.task(max_attempts=1)
    def explode() -> None:
        raise RuntimeError("kaput")

    failing = explode.enqueue()
    producer.run_until_empty()
    done = _run(mongodb_uri, db, "result", str(failing.id), "--wait", "1")
    assert done.returncode == 1
    assert "RuntimeError: kaput" in done.stderr

    later = explode.configure(delay=3600).enqueue()
    done = _run(mongodb_uri, db, "result", str(later.id), "--wait", "0.5")
    assert done.returncode == 1
    assert "the job is delayed" in done.stderr
    done = _run(mongodb_uri, db, "cancel", str(later.id))
    assert done.returncode == 0, done.stderr
    assert later.status() == "unknown"  # the CLI deletes a waiting job (as cancel() does)
    done = _run(mongodb_uri, db, "status", str(later.id))
    assert "unknown" in done.stdout


def test_unknown_module_attribute_and_queue_for_function(
    mongodb_uri: str, db: Database[dict[str, Any]]
) -> None:
    done = _run(mongodb_uri, db, "worker", "tests.acceptance.handlers:record", "--queue", "x")
    assert done.returncode == 2
    assert "--queue is for a task app" in done.stderr


def test_async_app_worker_from_the_cli(mongodb_uri: str, db: Database[dict[str, Any]]) -> None:
    producer = App(db, retry=NO_BACKOFF)

    @producer.task
    def square(n: int) -> None:
        raise AssertionError("runs in the worker")

    @producer.task(queue="high")
    def shout(text: str) -> None:
        raise AssertionError("runs in the worker")

    squares = [square.enqueue(n) for n in range(3)]
    loud = shout.enqueue("hi")
    done = _run(
        mongodb_uri, db, "worker", "tests.acceptance.task_app_async:app",
        "--concurrency", "2", "--burst",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [h.result(timeout=5) for h in squares] == [0, 1, 4]
    assert loud.result(timeout=5) == "HI"
