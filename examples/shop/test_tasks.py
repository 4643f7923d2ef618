"""Testing the shop's tasks without a worker process: run them with run_until_empty()."""

from __future__ import annotations

from datetime import datetime, timezone

from tasks import daily_report, send_welcome, ship_order

from mongoqueue import App


def test_welcome_email(app: App) -> None:
    handle = send_welcome.enqueue("ada@example.com")
    assert handle.status() == "waiting"
    assert app.run_until_empty() == 1
    assert handle.result(timeout=5) == {"sent": True, "to": "ada@example.com"}
    assert app.db.outbox.count_documents({"to": "ada@example.com"}) == 1


def test_daily_report(app: App) -> None:
    day = datetime(2026, 11, 30, tzinfo=timezone.utc)
    app.db.orders.insert_many([{"day": day}, {"day": day}])
    handle = daily_report.enqueue(day)
    app.run_until_empty()
    assert handle.result(timeout=5) == {"day": day, "orders": 2}


def test_ship_order_commits_both_writes(app: App) -> None:
    app.db.orders.insert_one({"_id": "o1"})
    app.db.create_collection("shipments")
    handle = ship_order.enqueue("o1")
    app.run_until_empty()
    assert handle.result(timeout=5) == "o1"
    assert app.db.orders.find_one({"_id": "o1"}) == {"_id": "o1", "shipped": True}
    assert app.db.shipments.count_documents({"order": "o1"}) == 1
