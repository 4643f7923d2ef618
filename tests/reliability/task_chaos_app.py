"""Task app of the transactional chaos test (``tests/reliability/test_task_chaos.py``).

Each job adds one to a counter document and appends one ledger entry naming its
job, then stays busy a little, so SIGKILLs land after the writes and before the
completion. ``bump_tx`` does it in the job's transaction; ``bump_plain`` does not.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from pymongo import MongoClient

from mongoqueue import App, RetryPolicy
from mongoqueue.tasks import current_job

client: MongoClient[dict[str, Any]] = MongoClient(os.environ["CHAOS_URI"])
db = client[os.environ["CHAOS_DB"]]
app = App(
    db,
    timeout=float(os.environ.get("CHAOS_LEASE", "2")),
    max_attempts=50,
    retry=RetryPolicy(initial=0.05, maximum=0.5),
)


def _bump(counter: str, session: Any = None) -> None:
    job = current_job()
    db.counters.update_one({"_id": counter}, {"$inc": {"n": 1}}, upsert=True, session=session)
    db.ledger.insert_one({"counter": counter, "job": job.id, "pid": os.getpid()}, session=session)
    time.sleep(random.uniform(0.2, 0.5))


@app.task(queue="tx", transactional=True)
def bump_tx(counter: str, *, session: Any) -> str:
    _bump(counter, session)
    return counter


@app.task(queue="plain")
def bump_plain(counter: str) -> str:
    _bump(counter)
    return counter
