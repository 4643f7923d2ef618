"""The dashboard over HTTP (Starlette's TestClient): pages, escaping, CSRF, POST-only actions."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from bson import ObjectId
from starlette.testclient import TestClient

from mongoqueue import NO_BACKOFF, MongoQueue, Worker
from mongoqueue import operations as ops
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
    assert re.findall(r'data-state="(\w+)">(?:<a [^>]*>)?(\d+)<', row) == [
        ("waiting", "2"), ("delayed", "1"), ("running", "1"), ("lease_expired", "0"),
        ("failed", "0"), ("completed", "0"), ("total", "4"),
    ]  # fmt: skip
    page = client.get(f"/queues/{name}")
    assert 'data-state="running">1<' in page.text
    assert "Requeue all failed" not in page.text  # actions are off
    assert client.get(f"/queues/{name}/purge-failed").status_code == 403
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


def job_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-job="([^"]+)">', page)


def follow(client: TestClient, page: str, link: str) -> str:
    match = re.search(rf'<a href="([^"]+)" id="{link}">', page)
    assert match, f"no {link} link"
    return client.get(match.group(1).replace("&amp;", "&"), params=None).text


def test_keyset_paging_walks_the_claim_order_once(make_client, queue, collection) -> None:
    queue.put_many([{"n": i} for i in range(30)])
    queue.put({"n": "urgent"}, priority=5, key="the-key")
    client = make_client()
    base = f"/queues/{collection.name}/jobs"
    first = client.get(base, params={"state": "waiting"}).text
    assert 'id="total">31 jobs; first page' in first
    assert 'id="prev"' not in first
    second = client.get(base + "?" + re.search(r'href="\?([^"]+)" id="next"', first).group(1)
                        .replace("&amp;", "&")).text  # fmt: skip
    assert 'id="next"' not in second
    expected = [str(d["_id"]) for d in collection.find(sort=ops.CLAIM_SORT)]
    assert job_ids(first) + job_ids(second) == expected  # each job once, in claim order
    # A job put while paging sorts after the last one shown: the next page stays stable.
    back = client.get(base + "?" + re.search(r'href="\?([^"]+)" id="prev"', second).group(1)
                      .replace("&amp;", "&")).text  # fmt: skip
    assert job_ids(back) == job_ids(first)
    assert 'id="prev"' not in back
    # The cursor names a position, not an offset: deleting jobs before it moves nothing.
    collection.delete_many({"_id": {"$in": [d["_id"] for d in collection.find().limit(3)]}})
    assert job_ids(client.get(base + "?" + re.search(r'href="\?([^"]+)" id="next"', first)
                              .group(1).replace("&amp;", "&")).text) == job_ids(second)  # fmt: skip
    bad = client.get(base, params={"state": "waiting", "after": "not-a-cursor"})
    assert bad.status_code == 400
    assert "cursor" in bad.text


def test_filters_by_state_task_key_error_and_priority(make_client, queue, collection) -> None:
    queue.put_many([{"task": "send_email", "n": i} for i in range(3)])
    queue.put({"task": "resize", "n": 9}, priority=5, key="the-key")
    failed_job(queue, {"task": "send_email", "n": "bad"}, priority=20)
    boom = queue.put({"task": "charge", "n": 1}, priority=30)
    job = queue.next()
    assert job.id == boom
    job.error("Traceback...\nCardDeclined: insufficient funds (code 51)")
    client = make_client()
    base = f"/queues/{collection.name}/jobs"

    def ids(**params: Any) -> set[str]:
        page = client.get(base, params=params)
        assert page.status_code == 200, page.text
        return set(job_ids(page.text))

    assert len(ids(state="all", task="send_email")) == 4
    assert len(ids(state="waiting", task="send_email")) == 3
    assert ids(state="available", task="send_email") == ids(state="waiting", task="send_email")
    assert ids(key="the-key") == {str(collection.find_one({"key": "the-key"})["_id"])}
    assert ids(priority=5) == ids(key="the-key")
    assert ids(state="failed", error="CARDDECLINED") == {str(boom)}  # any case
    assert ids(error="(code 51)") == {str(boom)}  # a substring, not a pattern
    assert ids(error="alert(") != set()  # the failed job's XSS text, as plain text
    assert ids(error=".*") == set()
    page = client.get(base, params={"state": "all", "task": "send_email"}).text
    assert 'id="total">4 matching jobs' in page
    assert client.get(base, params={"state": "done"}).status_code == 400
    assert client.get(base, params={"priority": "x"}).status_code == 400
    assert client.get(base, params={"error": "x" * 201}).status_code == 400


def test_unknown_queue_and_job_are_404(make_client, queue, collection) -> None:
    queue.put({"n": 1})
    collection.database["not_a_queue"].insert_one({"a": 1})
    client = make_client(allow_actions=True)
    for name in ("no_such_collection", "not_a_queue", "bad$name", "system.views"):
        for path in ("", "/jobs", "/purge-failed"):
            missing = client.get(f"/queues/{name}{path}")
            assert missing.status_code == 404, (name, path, missing.text)
            assert "no queue named" in missing.text
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
    assert client.get(path).status_code == 405  # requeueing one job needs no confirmation
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
    assert (
        'class="flash" id="flash" role="status">requeued job' in client.get(f"/queues/{name}").text
    )


def test_each_action_changes_only_its_state(make_client, queue, collection) -> None:
    failed_ids = [failed_job(queue, {"n": n}) for n in range(2)]
    waiting = queue.put({"n": "waiting"})
    running_id = queue.put({"n": "running"}, priority=1)
    running = queue.next()
    assert running.id == running_id
    client = make_client(allow_actions=True)
    name = collection.name
    token = csrf(client, f"/queues/{name}/purge-failed")

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
    # A refused action is shown as an error.
    assert (
        'class="flash error" id="flash" role="alert">not cancelled'
        in client.get(f"/queues/{name}").text
    )
    post(f"/jobs/{waiting}/cancel")
    assert collection.find_one({"_id": waiting}) is None
    post(f"/jobs/{failed_ids[0]}/requeue")
    post("/purge-failed")  # deletes the one still failed
    assert {d["_id"] for d in collection.find()} == {failed_ids[0], running_id}
    failed_job_id = failed_job(queue, {"n": "again"}, priority=20)
    post("/requeue-failed")
    assert collection.find_one({"_id": failed_job_id})["state"] == "ready"
    running.complete()


def test_destructive_actions_ask_first_then_return_to_the_page(
    make_client, queue, collection
) -> None:
    for n in range(20):
        failed_job(queue, {"n": n})
    waiting = queue.put({"n": "waiting"})
    client = make_client(allow_actions=True)
    name = collection.name
    listing = f"/queues/{name}/jobs?state=failed&task=x"
    queue_page = client.get(f"/queues/{name}").text
    # The queue page links to a confirmation; nothing there deletes anything by itself.
    assert f'href="/queues/{name}/purge-failed?back=/queues/{name}"' in queue_page
    ask = client.get(f"/queues/{name}/purge-failed", params={"back": listing})
    assert ask.status_code == 200
    assert "<h1>Purge 20 failed jobs?</h1>" in ask.text
    assert "cannot be undone" in ask.text
    assert f'action="/queues/{name}/purge-failed"' in ask.text
    assert f'<a href="{listing.replace("&", "&amp;")}" id="confirm-cancel">' in ask.text
    assert collection.count_documents({"state": "failed"}) == 20  # asking changed nothing
    done = client.post(
        f"/queues/{name}/purge-failed",
        data={"csrf": csrf(client, f"/queues/{name}/purge-failed"), "back": listing},
    )
    assert done.status_code == 303
    assert done.headers["location"] == listing  # back where the user was
    assert collection.count_documents({"state": "failed"}) == 0
    assert "deleted 20 failed jobs" in client.get(listing).text
    # Cancelling one job asks too; a hostile "back" falls back to the queue page.
    one = client.get(f"/queues/{name}/jobs/{waiting}/cancel", params={"back": "//evil.example"})
    assert f"Cancel job {waiting}?" in one.text
    assert f'<a href="/queues/{name}" id="confirm-cancel">' in one.text
    assert collection.find_one({"_id": waiting}) is not None
    ask_requeue = client.get(f"/queues/{name}/requeue-failed")
    assert "<h1>Requeue 0 failed jobs?</h1>" in ask_requeue.text


def test_server_down_page_is_one_sentence(collection) -> None:
    from pymongo import MongoClient

    # A port nothing listens on (bound, never accepting) and a short server selection timeout.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        client = MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=300)
        try:
            app = create_app(client["db"], sample_interval=60)
            with TestClient(app) as http:
                for path in ("/", "/queues/jobs", "/queues/jobs/jobs"):
                    down = http.get(path)
                    assert down.status_code == 503
                    detail = re.search(r'<p id="detail" class="error">([^<]*)</p>', down.text)
                    assert detail.group(1) == (
                        f"The dashboard cannot reach MongoDB at 127.0.0.1:{port}: check that "
                        "the server is running, then reload this page."
                    )
                    assert "Topology" not in down.text
        finally:
            client.close()


def test_throughput_counts_what_workers_did_not_the_counts(make_client, collection) -> None:
    """A purge of 12 jobs shows no completions; N jobs completed by a worker show N."""
    producer = MongoQueue(collection, "producer")
    client = make_client()
    dash = client.app.state.dashboard
    producer.put_many([{"n": i} for i in range(12)])
    dash.sampler.sample_once()
    producer.clear()  # drops the 12 jobs (clear() returns None, as the original's did)
    assert collection.count_documents({}) == 0
    dash.sampler.sample_once()
    page = client.get(f"/queues/{collection.name}").text
    assert 'data-completed="0"' in page
    assert "<rect" not in page
    assert "Counted by the workers as it happened" in page
    assert re.search(r"data-rate>0\.0<", client.get("/").text)  # the purge is no rate either

    producer.put_many([{"ok": True}] * 5 + [{"ok": False}])

    def handler(job) -> None:
        if not job.payload["ok"]:
            raise ValueError("no")

    queue = MongoQueue(collection, "w", timeout=30, max_attempts=1, retry=NO_BACKOFF)
    assert Worker(queue, handler, burst=True, handle_signals=False).run() == 0
    dash.sampler.sample_once()
    page = client.get(f"/queues/{collection.name}").text
    assert 'data-completed="5"' in page
    assert 'data-failed="1"' in page
    throughput = re.search(r'<svg id="throughput".*?</svg>', page, re.S).group(0)
    labels = re.findall(r"<title>(\d\d:\d\d UTC: \d+ completed)</title>", throughput)
    per_minute = [int(re.search(r"(\d+) completed", label).group(1)) for label in labels]
    assert sum(per_minute) == 5
    # Drawn with axes: a value axis 0, 1, ... up to the busiest minute, and UTC clock times.
    assert re.findall(r'class="tick">(\d+)<', throughput) == [
        str(n) for n in range(max(per_minute) + 1)
    ]
    assert len(re.findall(r'class="tick">\d\d:\d\d<', throughput)) >= 3  # a time axis
    depth = re.search(r'<svg id="depth".*?</svg>', page, re.S).group(0)
    assert depth.count("<polyline") == 4
    assert re.search(r"data-rate>\d+\.\d<", client.get("/").text)


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


def test_job_page_shows_the_attempt_history(make_client, collection) -> None:
    queue = MongoQueue(collection, "worker-7", timeout=30, max_attempts=3, retry=NO_BACKOFF)
    job_id = queue.put({"task": "charge"})
    for n in range(3):
        job = queue.next()
        assert job is not None
        job.error(f"Traceback...\nCardDeclined: try {n} {XSS}")
    page = make_client().get(f"/queues/{collection.name}/jobs/{job_id}").text
    assert 'id="job-state">failed<' in page
    assert 'id="job-task">charge<' in page
    table = re.search(r'<table id="attempts">.*?</table>', page, re.S).group(0)
    rows = re.findall(r'<tr><td class="num">(\d)</td><td>([\d: -]+)</td><td>([^<]+)</td>', table)
    assert [(a, w) for a, _, w in rows] == [("3", "worker-7"), ("2", "worker-7"), ("1", "worker-7")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", at) for _, at, _ in rows)
    assert "CardDeclined: try 2 &lt;script&gt;" in table
    assert XSS not in page


def test_job_page_shows_a_kept_result(make_client, queue, collection) -> None:
    # A job the task layer kept after it completed: state, result and expiry date.
    expire = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    job_id = queue.put({"task": "add"})
    collection.update_one(
        {"_id": job_id},
        {"$set": {"state": "completed", "result": {"sum": 42}, "expire_at": expire}},
    )
    page = make_client().get(f"/queues/{collection.name}/jobs/{job_id}").text
    assert 'id="job-state">completed<' in page
    assert re.search(r"<pre id=\"result\">\{\s*&#34;sum&#34;: 42\s*\}</pre>", page)
    assert 'id="job-expire">2030-01-02 03:04:05<' in page
    assert 'id="no-attempts">No failed delivery.' in page
    listing = make_client().get(f"/queues/{collection.name}/jobs", params={"state": "completed"})
    assert job_ids(listing.text) == [str(job_id)]
    assert 'data-state="completed">1<' in make_client().get(f"/queues/{collection.name}").text
