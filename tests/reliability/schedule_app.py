"""Task app of the schedules reliability test (``tests/reliability/test_schedules_chaos.py``).

One schedule fires every second; each run records nothing but its job (the test
reads the jobs' ``payload.fire_time``). ``SCHED_GRACE``: how late a tick may fire.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from pymongo import MongoClient

from mongoqueue import App, RetryPolicy

client: MongoClient[dict[str, Any]] = MongoClient(os.environ["SCHED_URI"])
app = App(
    client[os.environ["SCHED_DB"]],
    timeout=2.0,
    retry=RetryPolicy(initial=0.05, maximum=0.5),
)


@app.periodic(every=1, grace=float(os.environ.get("SCHED_GRACE", "3")))
@app.task(queue="ticks")
def second(fire_time: datetime) -> str:
    return fire_time.isoformat()
