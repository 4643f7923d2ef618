"""The original's module path: ``from mongoqueue.mongoqueue import MongoQueue, Job``.

mongoqueue 0.7.2 defined its queue in ``mongoqueue/mongoqueue.py``; code that
imported it from there keeps working. New code imports from ``mongoqueue``.
"""

from __future__ import annotations

from .job import Job
from .queue import MongoQueue

__all__ = ["Job", "MongoQueue"]
