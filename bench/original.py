"""The original mongoqueue 0.7.2 from PyPI, run unmodified on pymongo 4 through an adapter.

The package is downloaded at run time (``pip download mongoqueue==0.7.2 --no-deps``
into ``bench/.work/``, which is not committed) and its ``mongoqueue/mongoqueue.py``
is loaded from the sdist as the module ``mongoqueue_072``. Its source is not
edited. Two things stop it from running as shipped on Python 3 and pymongo 4:

* its ``__init__.py`` uses Python 2 implicit relative imports (``from mongoqueue
  import ...``, ``from lock import ...``), so we load ``mongoqueue.py`` by path
  instead of importing the package (``lock.py``, which the queue does not use, is
  left out);
* it calls collection methods that pymongo 4 removed. :class:`LegacyCollection`
  wraps a pymongo 4 collection and maps each one to its pymongo 4 equivalent,
  with the same round trips (one command each) and the same filter, update and
  sort:

  ========================================  ==========================================
  0.7.2 calls (pymongo 2)                   adapter sends (pymongo 4)
  ========================================  ==========================================
  ``find_and_modify(q, update, sort, new)`` ``find_one_and_update(q, update, sort=,
                                            return_document=AFTER if new else BEFORE)``
  ``find_and_modify(q, remove=True)``       ``find_one_and_delete(q)``
  ``insert(doc)``                           ``insert_one(doc).inserted_id``
  ``count()``                               ``estimated_document_count()`` (pymongo 2's
                                            ``count()`` with no filter read the same
                                            collection metadata count)
  ``database.eval(js)`` (in ``stats()``)    raises ``NotImplementedError``: server-side
                                            JavaScript was removed in MongoDB 4.2, and
                                            the benchmark does not call ``stats()``
  ========================================  ==========================================

  Everything else (``drop``, ``find``, ``name``) is passed through unchanged. The
  ``limit=1`` keyword that ``next()`` passes to ``find_and_modify`` is dropped:
  findAndModify always acts on one document.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection

VERSION = "0.7.2"
WORK_DIR = Path(__file__).resolve().parent / ".work"


class LegacyDatabase:
    def __init__(self, database: Any) -> None:
        self._database = database

    def eval(self, code: str) -> Any:
        raise NotImplementedError(
            "db.eval (server-side JavaScript) was removed in MongoDB 4.2; "
            "mongoqueue 0.7.2's stats() cannot run on a current server"
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._database, name)


class LegacyCollection:
    """The pymongo 2 collection methods mongoqueue 0.7.2 calls, on a pymongo 4 collection."""

    def __init__(self, collection: Collection[Any]) -> None:
        self._collection = collection
        self.database = LegacyDatabase(collection.database)

    def find_and_modify(
        self,
        query: dict[str, Any] | None = None,
        update: dict[str, Any] | None = None,
        *,
        sort: Any = None,
        new: Any = False,
        remove: bool = False,
        limit: int | None = None,
    ) -> Any:
        query = query or {}
        if remove:
            return self._collection.find_one_and_delete(query, sort=sort)
        if update is None:
            raise ValueError("find_and_modify needs update or remove=True")
        return self._collection.find_one_and_update(
            query,
            update,
            sort=sort,
            return_document=ReturnDocument.AFTER if new else ReturnDocument.BEFORE,
        )

    def insert(self, document: dict[str, Any]) -> Any:
        return self._collection.insert_one(document).inserted_id

    def count(self) -> int:
        return self._collection.estimated_document_count()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)


def download(python: str = sys.executable) -> Path:
    """The sdist's ``mongoqueue.py``, downloaded into bench/.work/ on first use."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    source = WORK_DIR / f"mongoqueue-{VERSION}" / "mongoqueue" / "mongoqueue.py"
    if source.exists():
        return source
    sdists = list(WORK_DIR.glob(f"mongoqueue-{VERSION}.*"))
    if not sdists:
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "download",
                f"mongoqueue=={VERSION}",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--disable-pip-version-check",
                "--quiet",
                "-d",
                str(WORK_DIR),
            ],
            check=True,
        )
        sdists = list(WORK_DIR.glob(f"mongoqueue-{VERSION}.*"))
    sdist = next(p for p in sdists if p.name.endswith(".tar.gz"))
    with tarfile.open(sdist) as tar:
        member = tar.extractfile(f"mongoqueue-{VERSION}/mongoqueue/mongoqueue.py")
        assert member is not None
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(member.read())
    return source


@functools.cache
def load() -> ModuleType:
    """mongoqueue 0.7.2's queue module, unmodified, as ``mongoqueue_072``."""
    source = download()
    spec = importlib.util.spec_from_file_location("mongoqueue_072", source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def original_queue(collection: Collection[Any], consumer_id: str) -> Any:
    """``mongoqueue_072.MongoQueue`` on ``collection`` through the adapter."""
    return load().MongoQueue(LegacyCollection(collection), consumer_id)


def original_job_document(payload: dict[str, Any], priority: int = 0) -> dict[str, Any]:
    """The document 0.7.2's ``put()`` inserts (its DEFAULT_INSERT plus the payload)."""
    module = load()
    job = dict(module.DEFAULT_INSERT)
    job["priority"] = priority
    job["payload"] = payload
    return job
