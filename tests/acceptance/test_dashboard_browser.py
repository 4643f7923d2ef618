"""The dashboard in a real browser: headless Debian Chromium driven by Playwright.

The dashboard runs as a ``mongoqueue dashboard`` process on a free port of
127.0.0.1 against the test server. Chromium comes from Debian's packages
(``scripts/install-browser``, which ``.ci/run`` calls when it is missing);
Playwright is pointed at it with ``executable_path`` because it cannot download
its own browsers here. Without the browser the tests fail, unless the developer
sets ``MONGOQUEUE_SKIP_BROWSER=1`` on purpose (CI never does).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from pymongo.collection import Collection
from pymongo.uri_parser import parse_uri

from mongoqueue import NO_BACKOFF, MongoQueue
from tests.acceptance.conftest import ROOT, _env, cli_command
from tests.acceptance.dashboard_tour import populate, tour
from tests.helpers import wait_for
from tests.reliability.proxy import ChaosProxy

CHROMIUM = "/usr/bin/chromium"
#: As root on a machine without internet: no sandbox, no GPU, no background requests.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
XSS = "<img src=x onerror=\"document.title='pwned'\">"


def require_chromium(path: str = CHROMIUM) -> None:
    """Fail when the browser is missing; skip only on the developer's explicit opt-out."""
    if os.access(path, os.X_OK):
        return
    if os.environ.get("MONGOQUEUE_SKIP_BROWSER") == "1":
        pytest.skip("MONGOQUEUE_SKIP_BROWSER=1: browser tests skipped on purpose")
    pytest.fail(
        f"Chromium not found at {path}: run scripts/install-browser (as root; .ci/run "
        "does), or set MONGOQUEUE_SKIP_BROWSER=1 to skip the browser tests on purpose"
    )


def test_a_missing_browser_fails_unless_skipped_on_purpose(monkeypatch) -> None:
    missing = "/nonexistent/chromium"
    monkeypatch.delenv("MONGOQUEUE_SKIP_BROWSER", raising=False)
    with pytest.raises(pytest.fail.Exception, match="scripts/install-browser"):
        require_chromium(missing)
    monkeypatch.setenv("MONGOQUEUE_SKIP_BROWSER", "1")
    with pytest.raises(pytest.skip.Exception):
        require_chromium(missing)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_chromium()
    # Playwright gives the browser a new empty profile directory of its own.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def start_dashboard(
    mongodb_uri: str, collection: Collection[Any], tmp_path: Path
) -> Iterator[Callable[..., str]]:
    """Start ``mongoqueue dashboard ARGS...``; returns its base URL once it answers."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str, uri: str = mongodb_uri) -> str:
        port = _free_port()
        command = cli_command(uri, collection, "dashboard", "--port", str(port), *args)
        log = open(tmp_path / f"dashboard-{port}.log", "wb")  # noqa: SIM115 - closed below
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env=_env())  # fmt: skip
        log.close()
        processes.append(process)
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert process.poll() is None, (tmp_path / f"dashboard-{port}.log").read_text()
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(answers, timeout=30, interval=0.1)
        return url

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def count(page: Page, table: str, state: str, row: str = "") -> str:
    return page.locator(f"{table} {row} [data-state={state}]").inner_text()


def forged_post(page: Page, path: str, fields: dict[str, str]) -> int:
    """Submit a form built in the page (as a malicious page or user could); the status."""
    with page.expect_navigation() as navigation:
        page.evaluate(
            """([path, fields]) => {
                const form = document.createElement("form");
                form.method = "post";
                form.action = path;
                for (const [name, value] of Object.entries(fields)) {
                    const input = document.createElement("input");
                    input.type = "hidden"; input.name = name; input.value = value;
                    form.appendChild(input);
                }
                document.body.appendChild(form);
                form.submit();
            }""",
            [path, fields],
        )
    response = navigation.value
    assert response is not None
    return response.status


def test_counts_throughput_job_page_and_requeue(page, start_dashboard, collection) -> None:
    queue = MongoQueue(collection, "browser-worker", timeout=30, max_attempts=1, retry=NO_BACKOFF)
    queue.put_many([{"n": i} for i in range(3)])
    bad = queue.put({"html": XSS}, priority=5)
    url = start_dashboard("--allow-actions", "--sample-interval", "0.3")
    name = collection.name

    page.goto(url + "/")
    row = f'[data-queue="{name}"]'
    assert count(page, "#queues", "waiting", row) == "4"
    assert count(page, "#queues", "failed", row) == "0"

    # The sampler has seen the four jobs before they are processed.
    def sampled_total(expected: str) -> bool:
        page.goto(f"{url}/queues/{name}")
        return page.locator("#depth-data").get_attribute("data-last-total") == expected

    wait_for(lambda: sampled_total("4"), timeout=30, interval=0.2)

    failing = queue.next()
    assert failing is not None
    assert failing.id == bad
    failing.error("Traceback (most recent call last):\nValueError: <b>not bold</b>")
    for _ in range(3):
        job = queue.next()
        assert job is not None
        job.complete()

    wait_for(lambda: sampled_total("1"), timeout=30, interval=0.2)
    assert count(page, "#counts", "waiting") == "0"
    assert count(page, "#counts", "failed") == "1"
    assert count(page, "#counts", "total") == "1"
    # The throughput chart counts what workers recorded; these jobs were completed by
    # hand (no worker), so it shows none rather than a figure derived from the counts.
    assert page.locator("#throughput-completed").inner_text() == "0"
    assert page.locator("#throughput rect").count() == 0
    assert "Counted by the workers" in page.locator("#throughput-source").inner_text()

    # The failed list, then the job page: payload and error shown as text, never as HTML.
    page.click("a[href$='state=failed']")
    assert page.locator("#jobs tr[data-job]").count() == 1
    page.click(f"a[href$='/jobs/{bad}']")
    assert page.locator("#job-state").inner_text() == "failed"
    assert page.locator("#job-attempts").inner_text().startswith("1")
    assert json.loads(page.locator("#payload").inner_text()) == {"html": XSS}
    assert page.locator("#payload img").count() == 0
    assert "<b>not bold</b>" in page.locator("#last-error").inner_text()
    assert page.locator("#last-error b").count() == 0
    assert page.title() != "pwned"

    # A forged POST without the session's token is refused and changes nothing.
    assert forged_post(page, f"/queues/{name}/jobs/{bad}/requeue", {"csrf": "forged"}) == 403
    assert "CSRF token" in page.locator("#detail").inner_text()
    assert collection.find_one({"_id": bad})["state"] == "failed"

    page.goto(f"{url}/queues/{name}/jobs/{bad}")
    page.click("#requeue")
    page.wait_for_selector("#flash")
    assert f"requeued job {bad}" in page.locator("#flash").inner_text()
    assert page.locator("#job-state").inner_text() == "waiting"
    doc = collection.find_one({"_id": bad})
    assert doc["state"] == "ready"
    assert doc["attempts"] == 0


def test_actions_off_hide_the_buttons_and_refuse_posts(page, start_dashboard, collection):
    queue = MongoQueue(collection, "browser-worker", timeout=30, max_attempts=1, retry=NO_BACKOFF)
    bad = queue.put({"n": 1})
    job = queue.next()
    assert job is not None
    job.error("boom")
    url = start_dashboard()
    name = collection.name

    page.goto(f"{url}/queues/{name}")
    assert count(page, "#counts", "failed") == "1"
    assert page.locator("form[method=post]").count() == 0
    page.goto(f"{url}/queues/{name}/jobs/{bad}")
    assert page.locator("#job-state").inner_text() == "failed"
    assert page.locator("form[method=post]").count() == 0
    assert page.locator("#requeue").count() == 0

    status = forged_post(page, f"/queues/{name}/jobs/{bad}/requeue", {"csrf": "x"})
    assert status == 403
    assert "actions are off" in page.locator("#detail").inner_text()
    assert forged_post(page, f"/queues/{name}/purge-failed", {}) == 403
    assert collection.find_one({"_id": bad})["state"] == "failed"


def test_workers_page_and_a_job_held_by_a_killed_worker(
    page, start_dashboard, start_worker, collection
) -> None:
    job_id = MongoQueue(collection, "producer").put({"sleep": 60})
    worker = start_worker("record", "--timeout", "30", "--heartbeat", "0.5")
    url = start_dashboard()

    def listed() -> bool:
        page.goto(url + "/workers")
        rows = page.locator("#workers tr[data-worker]")
        return rows.count() > 0 and page.locator(f"#workers a[href$='/jobs/{job_id}']").count() == 1

    wait_for(listed, timeout=30, interval=0.3)
    row = page.locator("#workers tr[data-worker]").filter(
        has=page.locator(f"a[href$='/jobs/{job_id}']")
    )
    assert row.locator("[data-state]").inner_text() == "alive"
    assert str(worker.process.pid) in row.inner_text()
    page.click(f"#workers a[href$='/jobs/{job_id}']")
    assert page.locator("#job-state").inner_text() == "running"
    assert page.locator("#job-holder [data-holder]").inner_text() == "alive"

    worker.process.kill()  # no goodbye: its entry stays and its heartbeat ages
    worker.process.wait()

    def shown_dead() -> bool:
        page.reload()
        return page.locator("#job-holder [data-holder]").inner_text() == "dead"

    wait_for(shown_dead, timeout=30, interval=0.3)
    assert "comes back when its lease expires" in page.locator("#job-holder").inner_text()
    page.goto(f"{url}/queues/{collection.name}/jobs?state=running")
    assert page.locator("#jobs [data-holder]").inner_text() == "(dead worker)"
    collection.database["mongoqueue_workers"].delete_many({"queues": collection.name})


def test_every_page(page, start_dashboard, collection) -> None:
    ids = populate(collection)
    url = start_dashboard("--allow-actions", "--sample-interval", "0.5")
    seen: list[str] = []
    tour(page, url, collection.name, ids, seen.append)
    from tests.acceptance.dashboard_tour import PAGES

    assert tuple(seen) == PAGES


def test_server_down_page(page, start_dashboard, mongodb_uri, collection) -> None:
    """MongoDB goes away under a running dashboard: one sentence, 503, then back."""
    target = parse_uri(mongodb_uri)["nodelist"][0][1]
    with ChaosProxy(target) as proxy:
        MongoQueue(collection, "w").put({"n": 1})
        url = start_dashboard(uri=proxy.uri(serverSelectionTimeoutMS="500"))
        proxy.refuse = True
        proxy.cut()
        response = page.goto(url + "/")
        assert response is not None
        assert response.status == 503
        assert page.locator("h1").inner_text() == "MongoDB is unreachable"
        assert page.locator("#detail").inner_text() == (
            f"The dashboard cannot reach MongoDB at 127.0.0.1:{proxy.port}: check that the "
            "server is running, then reload this page."
        )
        proxy.refuse = False
        wait_for(lambda: page.goto(url + "/").status == 200, timeout=30, interval=0.3)
