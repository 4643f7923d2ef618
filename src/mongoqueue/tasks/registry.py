"""Task definitions and the registry: pure, shared by :class:`App` and :class:`AsyncApp`.

A :class:`TaskDef` is a function plus its options. Calling ``enqueue`` checks
the arguments against the function's signature (a missing or unexpected
argument is an error at enqueue, not in the worker) and checks that each is a
BSON value, naming the bad one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from .._worker_core import is_async_handler
from ..errors import InvalidArgument, InvalidArgumentType
from ..retry import RetryPolicy
from ..validation import check_bson_value, check_key, check_positive_int, check_seconds
from .errors import UnknownTaskError
from .operations import task_payload

__all__ = ["CallOptions", "Registry", "TaskDef"]

#: The parameter through which a transactional task receives its session.
SESSION_PARAMETER = "session"


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentType(f"{what} must be a str, got {type(value).__name__}")
    if not value or value.startswith("$") or "\0" in value:
        raise InvalidArgument(f"{what} must be a non-empty name, got {value!r}")
    return value


class TaskDef:
    """A registered task: ``func`` and its options (see ``App.task``)."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None,
        queue: str,
        max_attempts: int | None,
        retry: RetryPolicy | None,
        timeout: float | None,
        priority: int,
        keep_result: float,
        transactional: bool,
    ) -> None:
        if not callable(func):
            raise InvalidArgumentType(f"a task must be a function, got {type(func).__name__}")
        self.func = func
        self.name = _check_name(name if name is not None else func.__name__, "name")
        self.queue = _check_name(queue, "queue")
        self.max_attempts = (
            None if max_attempts is None else check_positive_int("max_attempts", max_attempts)
        )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgumentType(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self.retry = retry
        self.timeout = (
            None if timeout is None else check_seconds("timeout", timeout, allow_zero=False)
        )
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidArgumentType(f"priority must be an int, got {type(priority).__name__}")
        self.priority = priority
        self.keep_result = check_seconds("keep_result", keep_result, allow_zero=True)
        self.transactional = bool(transactional)
        self.is_async = is_async_handler(func)
        signature = inspect.signature(func)
        params = dict(signature.parameters)
        if self.transactional:
            session = params.pop(SESSION_PARAMETER, None)
            if session is None or session.kind not in (
                inspect.Parameter.KEYWORD_ONLY,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
            ):
                raise InvalidArgument(
                    f"transactional task {self.name} must take a keyword parameter named "
                    f"'session' (the pymongo session of its transaction): "
                    f"def {func.__name__}(..., *, session)"
                )
        self.signature = signature.replace(parameters=list(params.values()))

    def __repr__(self) -> str:
        return f"<task {self.name} queue={self.queue!r}>"

    def encode_call(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The payload of one call, after checking it binds and is BSON."""
        if self.transactional and SESSION_PARAMETER in kwargs:
            raise InvalidArgument(
                f"do not pass session= to {self.name}.enqueue(): the worker gives a "
                "transactional task its own session (use configure(session=...) to "
                "enqueue inside your transaction)"
            )
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArgumentType(f"{self.name}.enqueue(): {exc}") from exc
        names = list(bound.signature.parameters)
        for index, value in enumerate(args):
            label = names[index] if index < len(names) else f"args[{index}]"
            check_bson_value(f"argument {label!r} of task {self.name}", value)
        for key, value in kwargs.items():
            check_bson_value(f"argument {key!r} of task {self.name}", value)
        return task_payload(self.name, args, kwargs)


class CallOptions:
    """Per-call options of ``task.configure(...)``, validated."""

    __slots__ = ("delay", "key", "priority", "queue", "run_at", "session")

    def __init__(
        self,
        *,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        key: str | None = None,
        priority: int | None = None,
        queue: str | None = None,
        session: Any = None,
    ) -> None:
        if delay is not None and run_at is not None:
            raise InvalidArgument("pass delay or run_at, not both")
        self.delay = delay
        self.run_at = run_at
        self.key = check_key(key)
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise InvalidArgumentType(f"priority must be an int, got {type(priority).__name__}")
        self.priority = priority
        self.queue = None if queue is None else _check_name(queue, "queue")
        self.session = session

    def merged(self, **changes: Any) -> CallOptions:
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return CallOptions(**values)


class Registry:
    """Tasks by name."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskDef] = {}

    def add(self, task: TaskDef) -> None:
        existing = self._tasks.get(task.name)
        if existing is not None and existing.func is not task.func:
            raise InvalidArgument(
                f"a task named {task.name!r} is already registered ({existing.func!r}); "
                "pass name= to tell them apart"
            )
        self._tasks[task.name] = task

    def get(self, name: str) -> TaskDef | None:
        return self._tasks.get(name)

    def __getitem__(self, name: str) -> TaskDef:
        task = self._tasks.get(name)
        if task is None:
            raise UnknownTaskError(
                f"no task named {name!r}; registered: {', '.join(sorted(self._tasks)) or 'none'}"
            )
        return task

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def queues(self) -> list[str]:
        """Queues with a task, in the order their first task was registered."""
        return list(dict.fromkeys(task.queue for task in self._tasks.values()))

    def values(self) -> list[TaskDef]:
        return list(self._tasks.values())

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)
