"""The sync and async twins expose the same API: names, parameters, defaults, kinds.

``tests.twins.api_differences`` does the comparison; the first tests hold the
real classes to it (the queues, the job handles, the workers), the rest show
that it catches each kind of drift.
"""

from __future__ import annotations

import pytest

import mongoqueue
import mongoqueue.aio_worker
import mongoqueue.worker
from mongoqueue import AsyncJob, AsyncMongoQueue, AsyncWorker, Job, MongoQueue, Worker
from tests.twins import api_differences

#: Where AsyncWorker's API differs from Worker's on purpose. Listed exactly, so a
#: new difference fails the test and a fixed one has to be removed from here.
ACCEPTED_WORKER_DIFFERENCES = [
    # stop() only asks the worker to stop: a signal handler, another thread or sync
    # code calls it, so it is a plain method on both (AsyncWorker.run is a coroutine).
    "Worker.stop / AsyncWorker.stop: the async twin is not a coroutine function",
]


@pytest.mark.parametrize(
    ("sync_cls", "async_cls"), [(MongoQueue, AsyncMongoQueue), (Job, AsyncJob)]
)
def test_twins_have_the_same_api(sync_cls: type, async_cls: type) -> None:
    assert api_differences(sync_cls, async_cls) == []


def test_the_workers_have_the_same_api_but_the_accepted_differences() -> None:
    assert api_differences(Worker, AsyncWorker) == ACCEPTED_WORKER_DIFFERENCES


def test_the_worker_modules_share_their_exit_codes() -> None:
    codes = ("EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_UNAVAILABLE")
    for name in codes:
        assert name in mongoqueue.worker.__all__
        assert name in mongoqueue.aio_worker.__all__
        assert getattr(mongoqueue.worker, name) == getattr(mongoqueue.aio_worker, name)


def test_twins_are_exported() -> None:
    names = {"AsyncMongoQueue", "AsyncJob", "AsyncWorker", "MongoQueue", "Job", "Worker"}
    assert names <= set(mongoqueue.__all__)


def test_the_comparison_covers_the_whole_api() -> None:
    """It looks at every public method, the constructor and the context manager."""
    from tests.twins import _public_names

    names = _public_names(MongoQueue)
    assert {"put", "put_many", "next", "next_batch", "size", "stats", "get", "failed"} <= names
    assert {"requeue", "purge_failed", "drop_max_attempts", "clear", "repair"} <= names
    assert {"ensure_indexes", "consumer_id", "timeout", "max_attempts", "retry"} <= names
    assert "__init__" in names
    job_names = _public_names(Job)
    assert {"complete", "error", "progress", "release", "__enter__", "__exit__"} <= job_names
    assert {"__init__", "run", "stop", "running"} <= _public_names(Worker)


# ------------------------------------------------------------------ the helper can fail


class _Sync:
    def __init__(self, collection: object, name: str = "x") -> None:
        pass

    def put(self, payload: dict[str, int], priority: int = 0, *, delay: float = 0) -> _Sync:
        return self

    @property
    def name(self) -> str:
        return ""

    def __enter__(self) -> dict[str, int]:
        return {}

    def __exit__(self, *args: object) -> None:
        pass


class _Async:
    def __init__(self, collection: object, name: str = "x") -> None:
        pass

    async def put(self, payload: dict[str, int], priority: int = 0, *, delay: float = 0) -> _Sync:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return ""

    async def __aenter__(self) -> dict[str, int]:
        return {}

    async def __aexit__(self, *args: object) -> None:
        pass


_COPIED = ("__init__", "__aenter__", "__aexit__")


def _async_variant(**members: object) -> type:
    """``_Async`` with some members replaced (or removed, when given None)."""
    namespace = {k: v for k, v in vars(_Async).items() if not k.startswith("__") or k in _COPIED}
    for name, member in members.items():
        if member is None:
            namespace.pop(name)
        else:
            namespace[name] = member
    return type("_AsyncVariant", (), namespace)


def test_matching_small_twins_have_no_differences() -> None:
    assert api_differences(_Sync, _Async) == []
    assert api_differences(_Sync, _async_variant()) == []


async def _put_other_default(
    self, payload: dict[str, int], priority: int = 1, *, delay: float = 0
) -> _Sync:
    raise NotImplementedError


async def _put_extra_param(
    self, payload: dict[str, int], priority: int = 0, *, delay: float = 0, key: str = ""
) -> _Sync:
    raise NotImplementedError


async def _put_positional_delay(
    self, payload: dict[str, int], priority: int = 0, delay: float = 0
) -> _Sync:
    raise NotImplementedError


async def _put_other_type(
    self, payload: dict[str, str], priority: int = 0, *, delay: float = 0
) -> _Sync:
    raise NotImplementedError


def _put_not_async(self, payload: dict[str, int], priority: int = 0, *, delay: float = 0) -> _Sync:
    raise NotImplementedError


async def _extra(self) -> None:
    pass


def _init_other(self, collection: object, name: str = "y") -> None:
    pass


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ({"put": None}, "_AsyncVariant lacks put"),
        ({"flush": _extra}, "_Sync lacks flush"),
        ({"__aexit__": None}, "_AsyncVariant lacks __exit__"),
        ({"put": _put_other_default}, "'priority', 'POSITIONAL_OR_KEYWORD', '1'"),
        ({"put": _put_extra_param}, "'key', 'KEYWORD_ONLY'"),
        ({"put": _put_positional_delay}, "'delay', 'POSITIONAL_OR_KEYWORD'"),
        ({"put": _put_other_type}, "dict[str, str]"),
        ({"put": _put_not_async}, "not a coroutine function"),
        ({"name": _extra}, "property vs method"),
        ({"__init__": _init_other}, "'name', 'POSITIONAL_OR_KEYWORD', \"'y'\""),
    ],
    ids=[
        "missing-method",
        "extra-method",
        "missing-context-manager",
        "other-default",
        "extra-parameter",
        "other-kind",
        "other-annotation",
        "not-a-coroutine",
        "property-vs-method",
        "constructor-default",
    ],
)
def test_the_helper_reports_drift(members: dict[str, object], expected: str) -> None:
    problems = api_differences(_Sync, _async_variant(**members))
    assert len(problems) == 1, problems
    assert expected in problems[0]
