"""The sync and async twins, side by side for tests.

* :func:`api_differences` compares the public surface of a sync class and its
  async twin (names, parameters, defaults, kinds, annotations, coroutine-ness);
  the drift test asserts it finds nothing for MongoQueue/AsyncMongoQueue and
  Job/AsyncJob, and only a listed set of accepted differences for
  Worker/AsyncWorker.
* :class:`SyncAPI` and :class:`AsyncAPI` let one behavioural test drive either
  queue: the async one through :class:`Blocking`, which runs each coroutine to
  completion on the test's own event loop. (Only tests do this; the library
  has no async-to-sync wrapper.)
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Mapping
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.collection import Collection

from mongoqueue import AsyncJob, AsyncMongoQueue, Job, MongoQueue, RetryPolicy

# ------------------------------------------------------------------ drift check

#: Sync dunders and their async counterparts.
ASYNC_DUNDERS = {"__enter__": "__aenter__", "__exit__": "__aexit__"}
#: Private names compared too (the constructor is public API).
COMPARED_PRIVATE = ("__init__",)


def _public_names(cls: type, *, is_async: bool = False) -> set[str]:
    """Public names of ``cls``; async dunders are named by their sync counterparts."""
    names = {n for n in dir(cls) if not n.startswith("_")}
    names |= {n for n in COMPARED_PRIVATE if any(n in vars(base) for base in cls.mro()[:-1])}
    names |= {s for s, a in ASYNC_DUNDERS.items() if hasattr(cls, a if is_async else s)}
    return names


def _normalise(annotation: Any) -> str:
    """An annotation as text with the ``Async`` prefix of twin classes removed."""
    if annotation is inspect.Parameter.empty:
        return "<none>"
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return re.sub(r"\bAsync(?=[A-Z])", "", text)


def _kind(member: object) -> str:
    if isinstance(member, property):
        return "property"
    if isinstance(member, staticmethod):
        return "staticmethod"
    if isinstance(member, classmethod):
        return "classmethod"
    if inspect.isfunction(member):
        return "method"
    return "attribute"


def _signature_rows(func: Any) -> list[tuple[str, ...]]:
    signature = inspect.signature(func)
    return [
        (p.name, p.kind.name, repr(p.default), _normalise(p.annotation))
        for p in signature.parameters.values()
    ]


def api_differences(sync_cls: type, async_cls: type) -> list[str]:
    """Every way ``async_cls``'s public surface differs from ``sync_cls``'s.

    Compared: the set of public names (``__enter__``/``__exit__`` matched with
    ``__aenter__``/``__aexit__``; ``__init__`` included), what each is (method,
    property, attribute), each method's parameters in order with their kinds,
    defaults and annotations, the return annotation, and that every method of
    the async class except ``__init__`` is a coroutine function. Annotations are
    compared with the ``Async`` prefix of twin class names removed.
    """
    problems: list[str] = []
    sync_names = _public_names(sync_cls)
    async_names = _public_names(async_cls, is_async=True)
    for name in sorted(sync_names - async_names):
        problems.append(f"{async_cls.__name__} lacks {name} (present on {sync_cls.__name__})")
    for name in sorted(async_names - sync_names):
        problems.append(f"{sync_cls.__name__} lacks {name} (present on {async_cls.__name__})")
    for name in sorted(sync_names & async_names):
        async_name = ASYNC_DUNDERS.get(name, name)
        sync_member = inspect.getattr_static(sync_cls, name)
        async_member = inspect.getattr_static(async_cls, async_name)
        where = f"{sync_cls.__name__}.{name} / {async_cls.__name__}.{async_name}"
        if _kind(sync_member) != _kind(async_member):
            problems.append(f"{where}: {_kind(sync_member)} vs {_kind(async_member)}")
            continue
        if isinstance(sync_member, property):
            s_ret = _normalise(inspect.signature(sync_member.fget).return_annotation)  # type: ignore[arg-type]
            a_ret = _normalise(inspect.signature(async_member.fget).return_annotation)  # type: ignore[union-attr,arg-type]
            if s_ret != a_ret:
                problems.append(f"{where}: property type {s_ret} vs {a_ret}")
            continue
        if not inspect.isfunction(sync_member):
            continue
        s_rows, a_rows = _signature_rows(sync_member), _signature_rows(async_member)
        for index in range(max(len(s_rows), len(a_rows))):
            s_row = s_rows[index] if index < len(s_rows) else "(none)"
            a_row = a_rows[index] if index < len(a_rows) else "(none)"
            if s_row != a_row:
                problems.append(f"{where}: parameter {index}: {s_row} vs {a_row}")
                break
        s_ret = _normalise(inspect.signature(sync_member).return_annotation)
        a_ret = _normalise(inspect.signature(async_member).return_annotation)
        if s_ret != a_ret:
            problems.append(f"{where}: returns {s_ret} vs {a_ret}")
        if name != "__init__" and not inspect.iscoroutinefunction(async_member):
            problems.append(f"{where}: the async twin is not a coroutine function")
        if inspect.iscoroutinefunction(sync_member):
            problems.append(f"{where}: the sync one is a coroutine function")
    return problems


# ------------------------------------------------------------------ one test, both queues


def _unwrap(value: Any) -> Any:
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value._target if isinstance(value, Blocking) else value


class Blocking:
    """Drives an async queue or job from sync test code on one event loop."""

    __slots__ = ("_loop", "_target")

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, (AsyncJob, AsyncMongoQueue)):
            return Blocking(value, self._loop)
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        return value

    def _run(self, value: Any) -> Any:
        if inspect.isawaitable(value):
            value = self._loop.run_until_complete(value)
        return self._wrap(value)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if inspect.ismethod(value):
            return lambda *args, **kwargs: self._run(
                value(*map(_unwrap, args), **{k: _unwrap(v) for k, v in kwargs.items()})
            )
        return self._wrap(value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in Blocking.__slots__:
            object.__setattr__(self, name, value)
        else:
            setattr(self._target, name, value)

    def __enter__(self) -> Any:
        return self._run(self._target.__aenter__())

    def __exit__(self, *exc_info: Any) -> Any:
        return self._run(self._target.__aexit__(*exc_info))

    def __repr__(self) -> str:
        return f"Blocking({self._target!r})"


class SyncAPI:
    """Builds sync queues on the test's collection."""

    kind = "sync"
    module = "mongoqueue.queue"

    def __init__(self, collection: Collection[Any]) -> None:
        self.collection = collection

    def queue(
        self,
        consumer_id: str,
        timeout: float = 300,
        max_attempts: int = 3,
        *,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """A queue with the queue's own default retry unless ``retry`` is given."""
        options = {} if retry is None else {"retry": retry}
        return MongoQueue(self.collection, consumer_id, timeout, max_attempts, **options)

    def job(self, queue: Any, data: Mapping[str, Any]) -> Any:
        """A handle of ``queue`` on ``data`` (as a stale copy of a claim, say)."""
        return Job(queue, data)

    def is_job(self, value: object) -> bool:
        return isinstance(value, Job)

    def close(self) -> None:
        pass


class AsyncAPI(SyncAPI):
    """Builds async queues on the same collection, driven through :class:`Blocking`."""

    kind = "async"
    module = "mongoqueue.aio"

    def __init__(self, collection: Collection[Any], uri: str) -> None:
        super().__init__(collection)
        self.loop = asyncio.new_event_loop()
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        self.async_collection = self.client[collection.database.name][collection.name]

    def queue(
        self,
        consumer_id: str,
        timeout: float = 300,
        max_attempts: int = 3,
        *,
        retry: RetryPolicy | None = None,
    ) -> Any:
        options = {} if retry is None else {"retry": retry}
        queue = AsyncMongoQueue(
            self.async_collection, consumer_id, timeout, max_attempts, **options
        )
        return Blocking(queue, self.loop)

    def job(self, queue: Any, data: Mapping[str, Any]) -> Any:
        return Blocking(AsyncJob(queue._target, data), self.loop)

    def is_job(self, value: object) -> bool:
        return isinstance(value, Blocking) and isinstance(value._target, AsyncJob)

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.client.close())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
