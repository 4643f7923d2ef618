"""Who may look and who may act: basic auth, a trusted proxy, CSRF, mounting under a path."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
from base64 import b64encode
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from mongoqueue import NO_BACKOFF, MongoQueue
from mongoqueue.dashboard import create_app, run
from mongoqueue.httpauth import AuthenticationRequired, BasicAuth, PortInUse, TrustedProxy
from mongoqueue.metrics import serve

PASSWORD = "correct horse battery staple"
GOOD = {"Authorization": "Basic " + b64encode(f"mongoqueue:{PASSWORD}".encode()).decode()}
WRONG = {"Authorization": "Basic " + b64encode(b"mongoqueue:guess").decode()}


@pytest.fixture
def failed(collection) -> Any:
    queue = MongoQueue(collection, "w", max_attempts=1, retry=NO_BACKOFF)
    job_id = queue.put({"n": 1})
    job = queue.next()
    assert job is not None
    job.error("boom")
    return job_id


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no CSRF field on the page"
    return match.group(1)


def test_basic_auth_guards_every_page(collection, failed) -> None:
    app = create_app(collection.database, sample_interval=60, auth=BasicAuth(PASSWORD))
    client = TestClient(app, follow_redirects=False)
    for path in ("/", f"/queues/{collection.name}", "/metrics"):
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"].startswith('Basic realm="mongoqueue"')
        assert client.get(path, headers=WRONG).status_code == 401
        assert client.get(path, headers=GOOD).status_code == 200


def test_actions_need_credentials_and_the_csrf_token(collection, failed) -> None:
    app = create_app(
        collection.database, sample_interval=60, allow_actions=True, auth=BasicAuth(PASSWORD)
    )
    client = TestClient(app, follow_redirects=False)
    action = f"/queues/{collection.name}/requeue-failed"
    assert client.get(action).status_code == 401  # the confirmation page too
    page = client.get(action, headers=GOOD)  # "Requeue 1 failed job?"
    token = csrf_of(page.text)
    # Without credentials: 401, even with the token.
    assert client.post(action, data={"csrf": token}).status_code == 401
    # Good credentials, wrong token: 403.
    refused = client.post(action, data={"csrf": "not-the-token"}, headers=GOOD)
    assert refused.status_code == 403
    assert collection.count_documents({"state": "failed"}) == 1
    # Both: done.
    done = client.post(action, data={"csrf": token}, headers=GOOD)
    assert done.status_code == 303
    assert collection.count_documents({"state": "failed"}) == 0
    assert collection.find_one({"_id": failed})["attempts"] == 0
    flash = client.get(done.headers["location"], headers=GOOD).text
    assert re.search(r'id="flash"[^>]*>requeued 1 failed job</p>', flash)  # not "1 failed jobs"


def test_trusted_proxy_mode(collection) -> None:
    auth = TrustedProxy(("10.1.2.3",))
    app = create_app(collection.database, sample_interval=60, auth=auth)
    via_proxy = TestClient(app, client=("10.1.2.3", 40000))
    assert via_proxy.get("/", headers={"X-Forwarded-User": "ada"}).status_code == 200
    assert via_proxy.get("/").status_code == 401  # the proxy did not authenticate anyone
    # Anyone else is refused, whatever header they forge.
    direct = TestClient(app, client=("10.9.9.9", 40000))
    assert direct.get("/", headers={"X-Forwarded-User": "ada"}).status_code == 403


def test_mounted_under_a_path(collection, failed) -> None:
    parent = Starlette(
        routes=[
            Mount(
                "/admin/queues",
                app=create_app(collection.database, sample_interval=60, allow_actions=True),
            )
        ]
    )
    with TestClient(parent, follow_redirects=False) as client:
        index = client.get("/admin/queues/")
        assert index.status_code == 200
        link = f'href="/admin/queues/queues/{collection.name}"'
        assert link in index.text
        assert 'href="/admin/queues/"' in index.text  # the header's home link
        page = client.get(f"/admin/queues/queues/{collection.name}")
        assert page.status_code == 200
        assert f'href="/admin/queues/queues/{collection.name}/requeue-failed?' in page.text
        confirm = client.get(f"/admin/queues/queues/{collection.name}/requeue-failed")
        assert f'action="/admin/queues/queues/{collection.name}/requeue-failed"' in confirm.text
        listing = client.get(f"/admin/queues/queues/{collection.name}/jobs?state=failed")
        assert f'href="/admin/queues/queues/{collection.name}/jobs/{failed}"' in listing.text
        done = client.post(
            f"/admin/queues/queues/{collection.name}/requeue-failed",
            data={"csrf": csrf_of(confirm.text)},
        )
        assert done.status_code == 303
        assert done.headers["location"] == f"/admin/queues/queues/{collection.name}"
        assert collection.count_documents({"state": "failed"}) == 0
        missing = client.get("/admin/queues/queues/no_such_queue")
        assert missing.status_code == 404
        assert 'href="/admin/queues/"' in missing.text


def test_refuses_to_start_beyond_loopback_without_auth(collection) -> None:
    for host in ("0.0.0.0", "::", ""):
        with pytest.raises(AuthenticationRequired, match="without authentication"):
            run(collection.database, host=host, port=0)


def test_port_in_use(collection) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} on 127.0.0.1 is already in use"):
            run(collection.database, host="127.0.0.1", port=port)


def test_metrics_server_with_basic_auth() -> None:
    registry = CollectorRegistry()
    Counter("mq_test_scrapes", "a test counter", registry=registry).inc()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = serve(registry, port, "127.0.0.1", auth=BasicAuth(PASSWORD))
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401
        refused.value.close()
        with urllib.request.urlopen(urllib.request.Request(url, headers=GOOD), timeout=10) as r:
            assert "mq_test_scrapes_total 1.0" in r.read().decode()
        with pytest.raises(PortInUse):
            serve(registry, port, "127.0.0.1")
        with pytest.raises(AuthenticationRequired, match=r"metrics on 0\.0\.0\.0"):
            serve(registry, port, "0.0.0.0")
    finally:
        stop()
