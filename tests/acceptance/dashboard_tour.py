"""A walk through every page of the dashboard in a browser, checking each one.

Used by the browser test (``test_dashboard_browser.py``) and by ``scripts/screenshots``,
which saves a screenshot of each page into ``docs/img/``. ``populate`` makes a
queue with jobs in every state (a failed one with three attempts, a kept result);
``ids["workers"]``, when the caller registered workers, lists those the Workers
page must show alive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from playwright.sync_api import Page
from pymongo.collection import Collection

from mongoqueue import NO_BACKOFF, MongoQueue

#: Every page the tour visits, in order (the screenshot names, docs/img/dashboard-NAME.png).
PAGES = (
    "overview",
    "queue",
    "jobs",
    "jobs-filtered",
    "job",
    "workers",
    "confirm",
    "after-action",
    "not-found",
)


def populate(collection: Collection[Any], *, waiting: int = 40) -> dict[str, Any]:
    """Jobs in every state in ``collection``; returns the ids the tour looks at."""
    queue = MongoQueue(collection, "worker-a1", timeout=300, max_attempts=3, retry=NO_BACKOFF)
    tasks = ("send_email", "resize_image", "charge_card")
    queue.put_many(
        [{"task": tasks[n % 3], "args": [n], "kwargs": {}} for n in range(waiting)],
    )
    queue.put({"task": "send_report", "args": ["weekly"]}, delay=3600, key="weekly-report")
    failing = queue.put({"task": "charge_card", "args": [9001]}, priority=9)
    for n in range(3):
        job = queue.next()
        assert job is not None
        assert job.id == failing, "the priority-9 job is claimed first"
        job.error(
            "Traceback (most recent call last):\n"
            '  File "billing.py", line 42, in charge_card\n'
            "    gateway.charge(customer, amount)\n"
            f"CardDeclined: insufficient funds (attempt {n + 1})"
        )
    other = MongoQueue(collection, "worker-b2", timeout=300, max_attempts=1, retry=NO_BACKOFF)
    timeout_job = other.put({"task": "resize_image", "args": ["huge.tiff"]}, priority=8)
    job = other.next()
    assert job is not None
    assert job.id == timeout_job
    job.error("TimeoutError: resize took longer than 30 s")
    running = other.put({"task": "send_email", "args": ["ada@example.com"]}, priority=7)
    held = other.next()
    assert held is not None
    assert held.id == running
    held.progress(40)
    kept = queue.put({"task": "add", "args": [2, 3]})
    collection.update_one(
        {"_id": kept},
        {
            "$set": {
                "state": "completed",
                "result": 5,
                "expire_at": datetime.now(timezone.utc) + timedelta(days=7),
            }
        },
    )
    return {"failed": failing, "failed_2": timeout_job, "running": running, "kept": kept}


def tour(
    page: Page,
    url: str,
    name: str,
    ids: dict[str, Any],
    shoot: Callable[[str], None] = lambda _: None,
) -> None:
    """Visit every page of ``name`` (actions on), checking it, calling ``shoot(page name)``."""
    page.goto(url + "/")
    row = page.locator(f'#queues [data-queue="{name}"]')
    assert row.locator("[data-state=failed]").inner_text() == "2"
    assert row.locator("[data-state=running]").inner_text() == "1"
    assert row.locator("[data-oldest]").inner_text() != "—"
    shoot("overview")

    page.click(f'#queues a[href$="/queues/{name}"]')
    assert page.locator("#counts [data-state=waiting]").inner_text() != "0"
    # Both charts have a time axis and a value axis with labels.
    for chart in ("#throughput", "#depth"):
        ticks = page.locator(f"{chart} text.tick").all_text_contents()
        assert any(re.fullmatch(r"\d\d:\d\d", t) for t in ticks), ticks
        assert "0" in ticks, ticks
    shoot("queue")

    page.click("#counts a[href$='state=waiting']")
    assert page.locator("#jobs tr[data-job]").count() == 25
    first = page.locator("#jobs tr[data-job]").first.get_attribute("data-job")
    page.click("#next")
    assert page.locator("#jobs tr[data-job]").count() > 0
    assert page.locator("#jobs tr[data-job]").first.get_attribute("data-job") != first
    page.click("#prev")
    assert page.locator("#jobs tr[data-job]").first.get_attribute("data-job") == first
    shoot("jobs")

    page.goto(f"{url}/queues/{name}/jobs?state=failed")
    page.fill("input[name=error]", "carddeclined")
    page.click("#filters button[type=submit]")
    assert page.locator("#jobs tr[data-job]").count() == 1
    shoot("jobs-filtered")

    page.click(f"a[href$='/jobs/{ids['failed']}']")
    assert page.locator("#job-state").inner_text() == "failed"
    assert page.locator("#attempts tr").count() == 4  # a header and three attempts
    assert "worker-a1" in page.locator("#attempts").inner_text()
    shoot("job")

    page.click("#nav-workers")
    assert page.locator("h1").inner_text().startswith("Workers in ")
    for worker in ids.get("workers", ()):  # the workers the caller registered, all alive
        row = page.locator(f'#workers tr[data-worker="{worker}"]')
        assert row.locator("[data-state]").inner_text() == "alive"
    shoot("workers")

    page.goto(f"{url}/queues/{name}/jobs?state=failed")
    listing = page.url
    page.goto(f"{url}/queues/{name}/purge-failed?back=" + listing.split(url, 1)[1])
    assert page.locator("h1").inner_text() == "Purge 2 failed jobs?"
    shoot("confirm")
    page.click("#confirm-button")
    page.wait_for_selector("#flash")
    assert page.url == listing  # back where the user was
    assert page.locator("#flash").inner_text() == "deleted 2 failed jobs"
    assert page.locator("#no-jobs").count() == 1
    shoot("after-action")

    missing = page.goto(f"{url}/queues/no_such_queue")
    assert missing is not None
    assert missing.status == 404
    assert "no queue named 'no_such_queue'" in page.locator("#detail").inner_text()
    shoot("not-found")
