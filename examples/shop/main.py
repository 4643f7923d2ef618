"""Enqueue the shop's tasks, run a worker in this process, print the results.

    MONGODB_URI=mongodb://localhost:27017 python main.py

Without MONGODB_URI it starts the embedded test server (pip install
'mongoqueue[embedded]').
"""

from __future__ import annotations

import os
import sys
import threading
from datetime import datetime, timezone

if not os.environ.get("MONGODB_URI"):
    from mongoqueue.embedded import EmbeddedServer

    server = EmbeddedServer()
    os.environ["MONGODB_URI"] = server.start()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tasks import app, daily_report, send_welcome, ship_order


def main() -> None:
    day = datetime(2026, 11, 30, tzinfo=timezone.utc)
    app.db.orders.insert_many([{"_id": "o1", "day": day}, {"_id": "o2", "day": day}])
    welcome = send_welcome.enqueue("ada@example.com")
    report = daily_report.configure(priority=10).enqueue(day)
    shipped = ship_order.enqueue("o1")

    worker = app.worker(["emails", "default"], concurrency=4, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        print("welcome:", welcome.result(timeout=30))
        print("report:", report.result(timeout=30))
        print("shipped:", shipped.result(timeout=30))
    finally:
        worker.stop()
        thread.join()
    app.db.client.drop_database(app.db.name)


if __name__ == "__main__":
    main()
