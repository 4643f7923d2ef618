"""Take the dashboard screenshots of the docs (see scripts/screenshots)."""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pymongo
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mongoqueue import NO_BACKOFF, MongoQueue  # noqa: E402
from mongoqueue.embedded import EmbeddedServer  # noqa: E402
from tests.acceptance.dashboard_tour import populate, tour  # noqa: E402
from tests.acceptance.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.helpers import wait_for  # noqa: E402

PORT = 8089


def activity(queue: MongoQueue, seconds: float, backlog: int) -> None:
    """Jobs put and completed at a varying pace, never leaving fewer than ``backlog`` waiting."""
    rng = random.Random(7)
    tasks = ("send_email", "resize_image", "charge_card")
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        puts = rng.randint(2, 9)
        queue.put_many([{"task": rng.choice(tasks), "args": [n + i]} for i in range(puts)])
        n += puts
        for _ in range(rng.randint(1, 9)):
            if queue.stats()["available"] <= backlog:
                break
            job = queue.next()
            if job is None:
                break
            job.complete()
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
            worker = MongoQueue(db["emails"], "worker-a1", timeout=60, retry=NO_BACKOFF)
            activity(worker, args.seconds, backlog=40)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1280, "height": 800})

                def shoot(name: str) -> None:
                    page.screenshot(path=str(args.out / f"dashboard-{name}.png"), full_page=True)
                    print(f"docs/img/dashboard-{name}.png")

                tour(page, url, "emails", ids, shoot)
                server.stop()
                page.goto(url + "/")
                shoot("server-down")
                browser.close()
        finally:
            dashboard.terminate()
            dashboard.wait(10)


if __name__ == "__main__":
    main()
