"""The ``mongoqueue`` command's parsing: payloads, handler specs, job ids (no I/O).

Split from :mod:`mongoqueue.cli` to keep that module about the commands; the
names are re-exported there.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import click
from bson import ObjectId, json_util
from bson.errors import InvalidId

__all__ = [
    "JSON_OPTIONS",
    "load_handler",
    "parse_handler_spec",
    "parse_job_id",
    "parse_payloads",
    "redact",
]

JSON_OPTIONS = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True)


def parse_payloads(text: str) -> list[dict[str, Any]]:
    """One JSON object, or JSON Lines (one object per line); Extended JSON is accepted."""
    text = text.strip()
    if not text:
        raise click.BadParameter("no payload: give a JSON object as an argument or on stdin")
    try:
        docs = [json_util.loads(text, json_options=JSON_OPTIONS)]
    except ValueError:
        docs = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(json_util.loads(line, json_options=JSON_OPTIONS))
            except ValueError as exc:
                raise click.BadParameter(f"line {number} is not valid JSON: {exc}") from exc
    for number, doc in enumerate(docs, 1):
        if not isinstance(doc, dict):
            where = "" if len(docs) == 1 else f" (item {number})"
            raise click.BadParameter(
                f"a payload must be a JSON object like '{{\"n\": 1}}'{where}, "
                f"got {type(doc).__name__}"
            )
    return docs


def parse_handler_spec(spec: str) -> tuple[str, str]:
    """``package.module:function`` into its two parts."""
    module, sep, attr = spec.partition(":")
    pattern = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
    if not sep or not re.fullmatch(pattern, module) or not re.fullmatch(pattern, attr):
        raise click.BadParameter(
            f"expected module:function (for example myapp.tasks:handle), got {spec!r}"
        )
    return module, attr


def is_app(target: object) -> bool:
    """True for a task application (``mongoqueue.App`` or ``AsyncApp``)."""
    from .tasks.app import AppCore

    return isinstance(target, AppCore)


def load_handler(spec: str) -> Callable[..., Any]:
    """Import the handler named by ``module:function`` (the current directory is importable)."""
    module_name, attr = parse_handler_spec(spec)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise click.BadParameter(f"{module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target) and not is_app(target):
        raise click.BadParameter(f"{spec} is not callable (nor a mongoqueue App)")
    handler: Callable[..., Any] = target
    return handler


def parse_job_id(text: str) -> Any:
    """A job id from the command line: an ObjectId when it looks like one, else the string."""
    try:
        return ObjectId(text)
    except (InvalidId, TypeError):
        return text


def redact(uri: str) -> str:
    """The URI without its password."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", uri)
