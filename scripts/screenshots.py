"""Take the dashboard screenshots of the docs (see scripts/screenshots)."""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pymongo
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mongoqueue import NO_BACKOFF, MongoQueue  # noqa: E402
from mongoqueue.activity import ActivityBuffer  # noqa: E402
from mongoqueue.embedded import EmbeddedServer  # noqa: E402
from mongoqueue.presence import WorkerPresence  # noqa: E402
from tests.acceptance.dashboard_tour import populate, tour  # noqa: E402
from tests.acceptance.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.helpers import wait_for  # noqa: E402

PORT = 8089


def activity(
    queue: MongoQueue, seconds: float, backlog: int, buffer: ActivityBuffer, counts: Counter[str]
) -> None:
    """Jobs put and completed at a varying pace, never leaving fewer than ``backlog`` waiting.

    Each completion (and each first attempt that fails and is retried) is recorded in
    ``buffer`` as a worker records it, so the throughput chart has the workers' events.
    """
    rng = random.Random(7)
    tasks = ("send_email", "resize_image", "charge_card")
    name = queue.collection.name
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        puts = rng.randint(2, 9)
        queue.put_many([{"task": rng.choice(tasks), "args": [n + i]} for i in range(puts)])
        n += puts
        for _ in range(rng.randint(1, 9)):
            if queue.counts()["waiting"] <= backlog:
                break
            job = queue.next()
            if job is None:
                break
            if job.attempts == 0 and rng.random() < 0.1:
                job.error("ConnectionResetError: the mail server hung up")  # retried at once
                event = "retried"
            else:
                job.complete()
                event = "completed"
            buffer.add(name, event)
            counts[event] += 1
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with EmbeddedServer(prefer_rust=True) as server:
        db = pymongo.MongoClient(server.uri)["shop"]
        ids = populate(db["emails"])
        for name, jobs in (("reports", 3), ("webhooks", 12)):
            MongoQueue(db[name], "producer").put_many([{"task": name, "n": i} for i in range(jobs)])
        uri = server.uri + ("&" if "?" in server.uri else "?") + "serverSelectionTimeoutMS=1000"
        command = [sys.executable, "-m", "mongoqueue", "--uri", uri, "--db", "shop",
                   "dashboard", "--port", str(PORT), "--allow-actions",
                   "--sample-interval", "2", "--window", "5"]  # fmt: skip
        dashboard = subprocess.Popen(command, cwd=ROOT)
        url = f"http://127.0.0.1:{PORT}"
        try:

            def answers() -> bool:
                assert dashboard.poll() is None, "the dashboard stopped"
                try:
                    with urllib.request.urlopen(url + "/", timeout=2) as response:
                        return bool(response.status == 200)
                except OSError:
                    return False

            wait_for(answers, timeout=30, interval=0.2)
            # Two registered workers, as Worker registers itself: worker-a1 does the work
            # below; worker-b2 holds the running job populate() left.
            worker = MongoQueue(db["emails"], "worker-a1", timeout=60, retry=NO_BACKOFF)
            buffer, counts = ActivityBuffer(), Counter[str]()
            presences = [
                WorkerPresence(db, consumer, kind="Worker", queue="emails", concurrency=1,
                               interval=1.0, snapshot=snapshot, buffer=buffers)
                for consumer, snapshot, buffers in (
                    ("worker-a1", lambda: ([], dict(counts)), buffer),
                    ("worker-b2", lambda: ([ids["running"]], {}), ActivityBuffer()),
                )
            ]  # fmt: skip
            for presence in presences:
                presence.start()
            ids["workers"] = [presence.id for presence in presences]
            activity(worker, args.seconds, backlog=40, buffer=buffer, counts=counts)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1280, "height": 800})

                def shoot(name: str) -> None:
                    page.screenshot(path=str(args.out / f"dashboard-{name}.png"), full_page=True)
                    print(f"docs/img/dashboard-{name}.png")

                tour(page, url, "emails", ids, shoot)
                for presence in presences:
                    presence.stop()
                server.stop()
                page.goto(url + "/")
                shoot("server-down")
                browser.close()
        finally:
            dashboard.terminate()
            dashboard.wait(10)


if __name__ == "__main__":
    main()
