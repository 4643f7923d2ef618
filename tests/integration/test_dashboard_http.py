"""The dashboard over HTTP (Starlette's TestClient): pages, escaping, CSRF, POST-only actions."""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from bson import ObjectId
from starlette.testclient import TestClient

from mongoqueue import NO_BACKOFF, MongoQueue, Worker
from mongoqueue.activity import ActivityBuffer
from mongoqueue.dashboard import create_app
from mongoqueue.presence import WorkerPresence
from mongoqueue.registry import WORKERS_COLLECTION
from tests.helpers import wait_for

XSS = "<script>alert('x')</script>"


@pytest.fixture
def queue(collection) -> MongoQueue:
    return MongoQueue(collection, "worker-1", timeout=30, max_attempts=1, retry=NO_BACKOFF)


@pytest.fixture
def make_client(collection) -> Callable[..., TestClient]:
    def make(**options: Any) -> TestClient:
        app = create_app(collection.database, sample_interval=60, **options)
        return TestClient(app, follow_redirects=False)

    return make


def failed_job(queue: MongoQueue, payload: dict[str, Any] | None = None, priority: int = 10) -> Any:
    job_id = queue.put(payload or {"n": 1}, priority=priority)  # claimed before the others
    job = queue.next()
    assert job is not None
    assert job.id == job_id
    job.error(f"Traceback (most recent call last):\nValueError: {XSS}")
    return job_id


def csrf(client: TestClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, "no CSRF field on the page"
    return match.group(1)


def test_pages_show_counts_and_jobs(make_client, queue, collection) -> None:
    queue.put_many([{"n": i} for i in range(3)])
    queue.put({"n": 9}, delay=600)
    queue.next()
    client = make_client()
    name = collection.name
    index = client.get("/")
    assert index.status_code == 200
    row = re.search(rf'<tr data-queue="{name}">(.*?)</tr>', index.text, re.S).group(1)
    assert re.findall(r'data-state="(\w+)">(\d+)<', row) == [
        ("waiting", "2"), ("delayed", "1"), ("running", "1"), ("lease_expired", "0"),
        ("failed", "0"), ("total", "4"),
    ]  # fmt: skip
    page = client.get(f"/queues/{name}")
    assert 'data-state="running">1<' in page.text
    assert "Requeue all failed" not in page.text  # actions are off
    listing = client.get(f"/queues/{name}/jobs", params={"state": "running"})
    assert listing.text.count("<tr data-job=") == 1
    assert "worker-1" in listing.text


def test_job_page_shows_everything_escaped(make_client, queue, collection) -> None:
    job_id = failed_job(queue, {"html": XSS, "img": '<img src=x onerror="alert(1)">'})
    page = make_client().get(f"/queues/{collection.name}/jobs/{job_id}")
    assert page.status_code == 200
    assert "<script>alert" not in page.text
    assert "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text  # payload and error
    assert "ValueError:" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]


def test_paging_and_filters(make_client, queue, collection) -> None:
    queue.put_many([{"n": i} for i in range(30)])
    queue.put({"n": "keyed"}, priority=5, key="the-key")
    client = make_client()
    base = f"/queues/{collection.name}/jobs"
    first = client.get(base, params={"state": "waiting"})
    assert first.text.count("<tr data-job=") == 25
    assert 'id="first"' not in first.text
    next_url = re.search(r'href="(\?[^"]+)" id="next"', first.text)
    assert next_url, "no link to the next page"
    keyed = client.get(base, params={"state": "all", "key": "the-key"})
    assert keyed.text.count("<tr data-job=") == 1
    assert "keyed" in keyed.text
    assert client.get(base, params={"priority": 5}).text.count("<tr data-job=") == 1
    # Keyset paging: the next page starts after the last job shown, even if the
    # jobs of the first page are gone meanwhile.
    for job_id in re.findall(r'<tr data-job="([0-9a-f]{24})"', first.text):
        assert queue.cancel(ObjectId(job_id))
    second = client.get(base + html.unescape(next_url.group(1)))
    assert second.text.count("<tr data-job=") == 6
    assert 'id="next"' not in second.text
    assert 'id="first"' in second.text
    assert client.get(base, params={"state": "available"}).text.count("<tr data-job=") == 6
    assert client.get(base, params={"after": "nonsense"}).status_code == 400
    assert client.get(base, params={"state": "done"}).status_code == 400
    assert client.get(base, params={"priority": "x"}).status_code == 400


def test_unknown_queue_and_job_are_404(make_client, queue, collection) -> None:
    queue.put({"n": 1})
    client = make_client()
    assert client.get("/queues/no_such_collection").status_code == 404
    missing = client.get(f"/queues/{collection.name}/jobs/000000000000000000000000")
    assert missing.status_code == 404


def test_actions_off_refuse_every_post(make_client, queue, collection) -> None:
    job_id = failed_job(queue)
    client = make_client()
    name = collection.name
    page = client.get(f"/queues/{name}/jobs/{job_id}")
    assert "<form" not in page.text.replace('<form method="get"', "")
    for path in (
        f"/queues/{name}/requeue-failed",
        f"/queues/{name}/purge-failed",
        f"/queues/{name}/jobs/{job_id}/requeue",
        f"/queues/{name}/jobs/{job_id}/cancel",
    ):
        refused = client.post(path, data={"csrf": "anything"})
        assert refused.status_code == 403, path
        assert "--allow-actions" in refused.text
    assert collection.find_one({"_id": job_id})["state"] == "failed"


def test_actions_are_post_only_and_need_the_session_token(make_client, queue, collection):
    job_id = failed_job(queue)
    client = make_client(allow_actions=True)
    name = collection.name
    path = f"/queues/{name}/jobs/{job_id}/requeue"
    token = csrf(client, f"/queues/{name}/jobs/{job_id}")
    assert client.get(path).status_code == 405
    assert client.post(path).status_code == 403  # no token
    assert client.post(path, data={"csrf": token + "x"}).status_code == 403
    other_session = make_client(allow_actions=True)
    assert other_session.post(path, data={"csrf": token}).status_code == 403
    cross = client.post(path, data={"csrf": token}, headers={"origin": "http://evil.example"})
    assert cross.status_code == 403
    assert collection.find_one({"_id": job_id})["state"] == "failed"  # nothing changed
    done = client.post(path, data={"csrf": token, "back": "https://evil.example/"})
    assert done.status_code == 303
    assert done.headers["location"] == f"/queues/{name}"  # not an open redirect
    assert collection.find_one({"_id": job_id})["state"] == "ready"
    assert "requeued job" in client.get(f"/queues/{name}").text  # the flash message


def test_each_action_changes_only_its_state(make_client, queue, collection) -> None:
    failed_ids = [failed_job(queue, {"n": n}) for n in range(2)]
    waiting = queue.put({"n": "waiting"})
    running_id = queue.put({"n": "running"}, priority=1)
    running = queue.next()
    assert running.id == running_id
    client = make_client(allow_actions=True)
    name = collection.name
    token = csrf(client, f"/queues/{name}")

    def post(path: str) -> None:
        assert client.post(f"/queues/{name}{path}", data={"csrf": token}).status_code == 303

    post(f"/jobs/{waiting}/requeue")  # not failed: unchanged
    post(f"/jobs/{running_id}/cancel")  # held: a cancel request for its worker
    assert "asked the worker running job" in client.get(f"/queues/{name}").text
    assert collection.find_one({"_id": running_id})["cancel_requested"] is True
    running.heartbeat()
    assert running.cancel_requested  # the worker sees it at its next heartbeat
    post(f"/jobs/{failed_ids[0]}/cancel")  # failed: unchanged
    assert collection.count_documents({}) == 4
    assert "not cancelled" in client.get(f"/queues/{name}").text
    post(f"/jobs/{waiting}/cancel")
    assert collection.find_one({"_id": waiting}) is None
    post(f"/jobs/{failed_ids[0]}/requeue")
    post("/purge-failed")  # deletes the one still failed
    assert {d["_id"] for d in collection.find()} == {failed_ids[0], running_id}
    failed_job_id = failed_job(queue, {"n": "again"}, priority=20)
    post("/requeue-failed")
    assert collection.find_one({"_id": failed_job_id})["state"] == "ready"
    running.complete()


def test_throughput_counts_what_workers_did_not_the_counts(make_client, collection) -> None:
    """A purge of 12 jobs shows no completions; N jobs completed by a worker show N."""
    producer = MongoQueue(collection, "producer")
    client = make_client()
    dash = client.app.state.dashboard
    producer.put_many([{"n": i} for i in range(12)])
    dash.sampler.sample_once()
    producer.clear()  # returns None, as 0.7.2's did
    assert producer.size() == 0
    dash.sampler.sample_once()
    page = client.get(f"/queues/{collection.name}").text
    assert 'data-completed="0"' in page
    assert "<rect" not in page
    assert "Counted by the workers as it happened" in page

    producer.put_many([{"ok": True}] * 5 + [{"ok": False}])

    def handler(job) -> None:
        if not job.payload["ok"]:
            raise ValueError("no")

    queue = MongoQueue(collection, "w", timeout=30, max_attempts=1, retry=NO_BACKOFF)
    assert Worker(queue, handler, burst=True, handle_signals=False).run() == 0
    page = client.get(f"/queues/{collection.name}").text
    assert 'data-completed="5"' in page
    assert 'data-failed="1"' in page
    labels = re.findall(r"<title>(\d\d:\d\d UTC: .*?)</title>", page)
    assert sum(int(re.search(r"(\d+) completed", label).group(1)) for label in set(labels)) == 5


def test_workers_page_and_the_holder_of_a_running_job(make_client, collection) -> None:
    producer = MongoQueue(collection, "producer")
    job_id = producer.put({"n": 1})
    release = threading.Event()
    queue = MongoQueue(collection, "page-worker", timeout=30, retry=NO_BACKOFF)
    worker = Worker(queue, lambda job: release.wait(30), heartbeat=0.5, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    client = make_client()
    try:
        wait_for(lambda: collection.find_one({"lease_token": {"$type": "string"}}))
        pattern = rf'<tr data-worker="{re.escape(worker.worker_id)}">(.*?)</tr>'

        def listed() -> re.Match[str] | None:
            # The held jobs are written with the next heartbeat, not per job.
            row = re.search(pattern, client.get("/workers").text, re.S)
            return row if row and str(job_id) in row.group(1) else None

        row = wait_for(listed)
        assert 'data-state="alive"' in row.group(1)
        listing = client.get(f"/queues/{collection.name}/jobs", params={"state": "running"}).text
        assert 'data-holder="alive"' in listing
        job_page = client.get(f"/queues/{collection.name}/jobs/{job_id}").text
        assert worker.worker_id in job_page
        assert 'data-holder="alive"' in job_page
    finally:
        release.set()
        worker.stop()
        thread.join(30)
    assert worker.worker_id not in client.get("/workers").text  # it unregistered


def test_a_job_held_by_a_dead_worker_shows_it_before_its_lease_ends(
    make_client, collection
) -> None:
    """The worker's heartbeats stop (as after kill -9); its lease (30 s) has not run out."""
    queue = MongoQueue(collection, "killed-worker", timeout=30)
    job_id = queue.put({"n": 1})
    assert queue.next() is not None
    presence = WorkerPresence(
        collection.database, "killed-worker", kind="Worker", queue=collection.name,
        concurrency=1, interval=0.1, snapshot=lambda: ([job_id], {}), buffer=ActivityBuffer(),
    )  # fmt: skip
    presence.beat()
    client = make_client()
    try:
        page = wait_for(
            lambda: (
                text
                if 'data-holder="dead"'
                in (text := client.get(f"/queues/{collection.name}/jobs/{job_id}").text)
                else None
            )
        )
        assert "comes back when its lease expires" in page
        listing = client.get(f"/queues/{collection.name}/jobs", params={"state": "running"}).text
        assert 'data-holder="dead"' in listing
        assert collection.find_one({"_id": job_id})["lease_token"]  # still held
    finally:
        collection.database[WORKERS_COLLECTION].delete_one({"_id": presence.id})


def test_metrics_endpoint(make_client, queue, collection) -> None:
    queue.put({"n": 1})
    text = make_client().get("/metrics").text
    full = collection.full_name
    assert f'mongoqueue_jobs{{queue="{full}",state="waiting"}} 1.0' in text
    assert f'mongoqueue_jobs_lease_expired{{queue="{full}"}} 0.0' in text
    assert "mongoqueue_up 1.0" in text


def test_metrics_say_down_when_mongodb_is_down() -> None:
    """Not an empty 200: mongoqueue_up 0 (and no depth gauges)."""
    from pymongo import MongoClient

    down: MongoClient[dict[str, Any]] = MongoClient(
        "mongodb://127.0.0.1:1/", serverSelectionTimeoutMS=200
    )
    try:
        client = TestClient(create_app(down["mongoqueue"], sample_interval=60))
        response = client.get("/metrics")
        assert response.status_code == 200
        assert "mongoqueue_up 0.0" in response.text
    finally:
        down.close()


def test_queues_are_found_by_their_index_without_reading_documents(mongodb_uri, client) -> None:
    from pymongo import MongoClient, monitoring

    from mongoqueue.dashboard.app import find_queues

    class Names(monitoring.CommandListener):
        def __init__(self) -> None:
            self.names: list[str] = []

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            self.names.append(event.command_name)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    db = client[f"discover_{ObjectId()}"]
    try:
        MongoQueue(db.current, "p").put({"n": 1})
        db.older.create_index([("state", 1)], name="mongoqueue_claim")  # the previous index
        db.other.insert_one({"state": "ready", "visible_at": 1, "payload": {}})  # no index
        db.empty.insert_one({"x": 1})
        listener = Names()
        listened: MongoClient[Any] = MongoClient(mongodb_uri, event_listeners=[listener])
        try:
            assert find_queues(listened[db.name]) == ["current", "older"]
            assert set(listener.names) == {"listCollections", "listIndexes"}
        finally:
            listened.close()
    finally:
        client.drop_database(db.name)
