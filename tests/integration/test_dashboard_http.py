"""The dashboard over HTTP (Starlette's TestClient): pages, escaping, CSRF, POST-only actions."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from starlette.testclient import TestClient

from mongoqueue import NO_BACKOFF, MongoQueue
from mongoqueue.dashboard import create_app

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
    expected = [str(d["_id"]) for d in collection.find(sort=[("priority", -1), ("scheduled_at", 1),
                                                             ("_id", 1)])]  # fmt: skip
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
    post(f"/jobs/{running_id}/cancel")  # held: unchanged
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


def test_throughput_chart_from_samples(make_client, queue, collection) -> None:
    client = make_client()
    dash = client.app.state.dashboard
    queue.put_many([{"n": i} for i in range(4)])
    dash.sampler.sample_once()
    for _ in range(3):
        queue.next().complete()
    dash.sampler.sample_once()
    page = client.get(f"/queues/{collection.name}").text
    throughput = re.search(r'<svg id="throughput".*?</svg>', page, re.S).group(0)
    assert re.search(r"<title>\d\d:\d\d UTC: 3 completed</title>", throughput)
    assert re.findall(r'class="tick">([^<]+)<', throughput)[:4] == ["0", "1", "2", "3"]
    assert len(re.findall(r'class="tick">\d\d:\d\d<', throughput)) >= 3  # a time axis
    depth = re.search(r'<svg id="depth".*?</svg>', page, re.S).group(0)
    assert depth.count("<polyline") == 4
    overview = client.get("/").text
    assert re.search(r"data-rate>\d+\.\d<", overview)


def test_metrics_endpoint(make_client, queue, collection) -> None:
    queue.put({"n": 1})
    text = make_client().get("/metrics").text
    full = collection.full_name
    assert f'mongoqueue_jobs{{queue="{full}",state="available"}} 1.0' in text


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
