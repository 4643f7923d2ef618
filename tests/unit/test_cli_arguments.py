"""Argument parsing of the ``mongoqueue`` command (no server needed)."""

from __future__ import annotations

from datetime import datetime

import click
import pytest
from bson import ObjectId
from pymongo import MongoClient

from mongoqueue import InvalidArgument, InvalidArgumentType, MongoQueue
from mongoqueue.cli import (
    load_handler,
    main,
    parse_handler_spec,
    parse_job_id,
    parse_payloads,
    redact,
)
from mongoqueue.worker import Worker


def test_one_payload_or_json_lines() -> None:
    assert parse_payloads('{"n": 1}') == [{"n": 1}]
    assert parse_payloads('{"a": {"b": [1, 2]}}\n') == [{"a": {"b": [1, 2]}}]
    assert parse_payloads('{"n": 1}\n\n{"n": 2}\n') == [{"n": 1}, {"n": 2}]


def test_extended_json_values() -> None:
    (doc,) = parse_payloads('{"at": {"$date": "2030-01-01T00:00:00Z"}}')
    assert isinstance(doc["at"], datetime)
    assert doc["at"].tzinfo is not None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "no payload"),
        ("   \n", "no payload"),
        ("{not json", "line 1 is not valid JSON"),
        ('{"n": 1}\n{oops', "line 2 is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"text"', "must be a JSON object"),
        ('{"n": 1}\n3', "item 2"),
    ],
)
def test_bad_payloads(text: str, words: str) -> None:
    with pytest.raises(click.BadParameter, match=words):
        parse_payloads(text)


def test_handler_spec() -> None:
    assert parse_handler_spec("myapp.tasks:handle") == ("myapp.tasks", "handle")
    assert parse_handler_spec("m:Class.method") == ("m", "Class.method")
    for bad in ("myapp.tasks", "myapp.tasks:", ":handle", "my-app:handle", "a:b:c", "a..b:c"):
        with pytest.raises(click.BadParameter, match="module:function"):
            parse_handler_spec(bad)


def test_load_handler() -> None:
    assert load_handler("tests.acceptance.handlers:record").__name__ == "record"
    with pytest.raises(click.BadParameter, match="cannot import"):
        load_handler("tests.no_such_module:record")
    with pytest.raises(click.BadParameter, match="no attribute"):
        load_handler("tests.acceptance.handlers:no_such_function")
    with pytest.raises(click.BadParameter, match="not callable"):
        load_handler("tests.acceptance.handlers:__doc__")


def test_job_ids() -> None:
    oid = ObjectId()
    assert parse_job_id(str(oid)) == oid
    assert parse_job_id("custom-id") == "custom-id"


def test_redact_hides_the_password() -> None:
    assert (
        redact("mongodb://app:s3cret@db.example:27017/x") == "mongodb://app:***@db.example:27017/x"
    )
    assert redact("mongodb://localhost") == "mongodb://localhost"


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["put", "{nope"], 2, "not valid JSON"),
        (["stats", "--bogus"], 2, "No such option"),
        (["nonsense"], 2, "No such command"),
        (["list", "--limit", "0"], 2, "--limit"),
        (["requeue", "abc", "--all"], 2, "not both"),
        (["worker", "nocolon"], 2, "module:function"),
        (["worker", "m:f", "--concurrency", "0"], 2, "--concurrency"),
        (["demo", "--workers", "1"], 2, "--workers"),
        (["--uri", "http://nope", "stats"], 2, "invalid MongoDB URI"),
        (["--uri", "mongodb://h:99999", "stats"], 2, "invalid connection settings"),
        (["--server-timeout", "0", "stats"], 2, "--server-timeout"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, code, words, capsys) -> None:
    assert main(argv) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("mongoqueue: error:")
    assert words in lines[0]


def test_help_exits_0(capsys) -> None:
    assert main(["--help"]) == 0
    assert "worker" in capsys.readouterr().out


def test_worker_arguments_are_checked() -> None:
    client: MongoClient[dict[str, object]] = MongoClient(connect=False)
    try:
        queue = MongoQueue(client.db.jobs, "w", timeout=10)
        with pytest.raises(InvalidArgument, match="heartbeat"):
            Worker(queue, print, heartbeat=10)
        with pytest.raises(InvalidArgument, match="concurrency"):
            Worker(queue, print, concurrency=0)
        with pytest.raises(InvalidArgumentType, match="callable"):
            Worker(queue, "print")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentType, match="MongoQueue"):
            Worker(client.db.jobs, print)  # type: ignore[arg-type]
        assert Worker(queue, print).heartbeat == pytest.approx(10 / 3)
    finally:
        client.close()
