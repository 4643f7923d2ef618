"""Documents exactly as mongoqueue 0.7.2 wrote them, made with pymongo.

Each function is the body of the original's method (``mongoqueue/mongoqueue.py``
of the 0.7.2 release) with its pymongo 2 calls replaced by their pymongo 4
equivalents: ``insert`` -> ``insert_one``, ``find_and_modify`` ->
``find_one_and_update``. Times are the local wall clock, as 0.7.2 wrote them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import DESCENDING, ReturnDocument
from pymongo.collection import Collection

DEFAULT_INSERT = {
    "priority": 0,
    "attempts": 0,
    "locked_by": None,
    "locked_at": None,
    "last_error": None,
}


def put(collection: Collection[Any], payload: Any, priority: int = 0) -> Any:
    job = dict(DEFAULT_INSERT)
    job["priority"] = priority
    job["payload"] = payload
    return collection.insert_one(job).inserted_id


def next_job(
    collection: Collection[Any], consumer_id: Any, max_attempts: int = 3
) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = collection.find_one_and_update(
        {"locked_by": None, "locked_at": None, "attempts": {"$lt": max_attempts}},
        {"$set": {"attempts": 1, "locked_by": consumer_id, "locked_at": datetime.now()}},
        sort=[("priority", DESCENDING)],
        return_document=ReturnDocument.AFTER,
    )
    return doc


def error(collection: Collection[Any], job_id: Any, consumer_id: Any, message: str) -> None:
    collection.find_one_and_update(
        {"_id": job_id, "locked_by": consumer_id},
        {
            "$set": {"locked_by": None, "locked_at": None, "last_error": message},
            "$inc": {"attempts": 1},
        },
    )


def progress(collection: Collection[Any], job_id: Any, consumer_id: Any, count: int) -> None:
    collection.find_one_and_update(
        {"_id": job_id, "locked_by": consumer_id},
        {"$set": {"progress": count, "locked_at": datetime.now()}},
    )


def release(collection: Collection[Any], job_id: Any, consumer_id: Any) -> None:
    collection.find_one_and_update(
        {"_id": job_id, "locked_by": consumer_id},
        {"$set": {"locked_by": None, "locked_at": None}, "$inc": {"attempts": 1}},
    )
