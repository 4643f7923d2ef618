"""The storage contract of a task job: pure documents, no I/O.

A task job is a normal job (see :mod:`mongoqueue.operations`) whose payload is::

    task     str       the registered task name
    args     array     positional arguments (BSON values)
    kwargs   document  keyword arguments (BSON values)

A completed task job keeps its return value in ``result`` (state ``completed``,
removed by the TTL index after ``expire_at``): see ``complete_update``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import operations as ops

__all__ = ["job_watch_pipeline", "queues_wake_pipeline", "read_call", "task_payload"]

Doc = dict[str, Any]


def task_payload(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Doc:
    return {"task": name, "args": list(args), "kwargs": dict(kwargs)}


def read_call(payload: Any) -> tuple[str | None, list[Any], dict[str, Any]]:
    """``(task name, args, kwargs)`` of a job's payload; name None for a non-task job."""
    if not isinstance(payload, Mapping):
        return None, [], {}
    name = payload.get("task")
    args = payload.get("args", [])
    kwargs = payload.get("kwargs", {})
    if not isinstance(name, str) or not isinstance(args, list) or not isinstance(kwargs, Mapping):
        return None, [], {}
    return name, list(args), dict(kwargs)


def job_watch_pipeline(job_id: Any) -> list[Doc]:
    """Change stream filter: any change of one job (``result()`` waits on it)."""
    return [{"$match": {"documentKey._id": job_id}}, {"$project": {"operationType": 1}}]


def queues_wake_pipeline(collections: Sequence[str]) -> list[Doc]:
    """Database change stream filter for a worker of several queues: the queue's
    own wake-up filter, limited to those collections."""
    wake = ops.wake_pipeline()
    return [{"$match": {"ns.coll": {"$in": list(collections)}}}, *wake]
