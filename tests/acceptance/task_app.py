"""A task app for the CLI tests: ``mongoqueue worker tests.acceptance.task_app:app``.

Its database comes from the environment (``TASK_APP_URI``, ``TASK_APP_DB``), as a
user's app module would configure itself.
"""

from __future__ import annotations

import os
from typing import Any

from pymongo import MongoClient

from mongoqueue import NO_BACKOFF, App

client: MongoClient[dict[str, Any]] = MongoClient(os.environ["TASK_APP_URI"])
app = App(client[os.environ["TASK_APP_DB"]], retry=NO_BACKOFF, timeout=30)


@app.task(queue="high")
def urgent(n: int) -> dict[str, Any]:
    app.db["runs"].insert_one({"task": "urgent", "n": n})
    return {"urgent": n}


@app.task
def normal(n: int) -> int:
    app.db["runs"].insert_one({"task": "normal", "n": n})
    return n * 10
