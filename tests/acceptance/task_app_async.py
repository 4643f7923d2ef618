"""An AsyncApp for the CLI tests: ``mongoqueue worker tests.acceptance.task_app_async:app``."""

from __future__ import annotations

import os
from typing import Any

from pymongo import AsyncMongoClient

from mongoqueue import NO_BACKOFF, AsyncApp

client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(os.environ["TASK_APP_URI"])
app = AsyncApp(client[os.environ["TASK_APP_DB"]], retry=NO_BACKOFF, timeout=30)


@app.task
async def square(n: int) -> int:
    await app.db["runs"].insert_one({"task": "square", "n": n})
    return n * n


@app.task(queue="high")
def shout(text: str) -> str:
    return text.upper()
