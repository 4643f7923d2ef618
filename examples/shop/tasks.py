"""A small shop's background work as mongoqueue tasks.

Run a worker for it:  mongoqueue worker tasks:app --queue emails --queue default
(from this directory, with MONGODB_URI pointing at MongoDB).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from pymongo import MongoClient

from mongoqueue import App

client: MongoClient[dict[str, Any]] = MongoClient(
    os.environ.get("MONGODB_URI", "mongodb://localhost:27017")
)
app = App(client.shop, keep_result=3600)


@app.task(queue="emails", max_attempts=5)
def send_welcome(email: str, *, template: str = "welcome") -> dict[str, Any]:
    """Pretend to send an email; record it."""
    app.db.outbox.insert_one({"to": email, "template": template})
    return {"sent": True, "to": email}


@app.task
def daily_report(day: datetime) -> dict[str, Any]:
    """Count the orders of a day."""
    orders = app.db.orders.count_documents({"day": day})
    return {"day": day, "orders": orders}


@app.task(transactional=True)
def ship_order(order_id: str, *, session: Any) -> str:
    """Mark an order shipped and add it to the shipments: both or neither, exactly once."""
    app.db.orders.update_one({"_id": order_id}, {"$set": {"shipped": True}}, session=session)
    app.db.shipments.insert_one({"order": order_id}, session=session)
    return order_id
