"""The CLI's messages as a user meets them: one clear line, the right exit code, plurals."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from typing import Any

from bson import ObjectId

from mongoqueue import MongoQueue

from .conftest import ROOT, _env, cli_command


def error_line(err: str) -> str:
    """The one ``mongoqueue: error`` line of stderr (and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("mongoqueue: error")]
    assert len(lines) == 1, err
    return lines[0]


def run(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "mongoqueue", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=_env(),
    )
    return done.returncode, done.stdout, done.stderr


def test_log_level_in_any_case(run_cli) -> None:
    code, _, err = run_cli(
        "worker", "tests.acceptance.handlers:record", "--burst", "--log-level", "info"
    )
    assert code == 0, err
    assert "INFO" in err  # the worker logged at the level asked for
    # The dashboard parses its --log-level before refusing 0.0.0.0 without authentication.
    code, _, err = run_cli("dashboard", "--log-level", "WARNING", "--host", "0.0.0.0")
    assert code == 4, err
    assert "without authentication" in error_line(err)


def test_database_named_in_the_uri_is_used_without_db(mongodb_uri: str, client: Any) -> None:
    name = f"uri_db_{ObjectId()}"
    head, _, tail = mongodb_uri.partition("?")
    scheme, _, rest = head.partition("://")
    hosts = rest.split("/", 1)[0]  # any database already in the URI is replaced
    uri = f"{scheme}://{hosts}/{name}" + (f"?{tail}" if tail else "")
    try:
        code, out, err = run("--uri", uri, "--collection", "jobs", "put", '{"n": 1}')
        assert code == 0, err
        assert client[name]["jobs"].find_one({"_id": ObjectId(out.strip())}) is not None
        assert client["mongoqueue"]["jobs"].count_documents({"payload": {"n": 1}}) == 0
        code, out, err = run("--uri", uri, "--collection", "jobs", "stats", "--json")
        assert code == 0, err
        assert '"total": 1' in out
    finally:
        client.drop_database(name)


def test_a_uri_that_is_not_one_is_invalid() -> None:
    code, _, err = run("--uri", "notauri", "stats")
    assert code == 2
    line = error_line(err)
    assert "invalid MongoDB URI 'notauri'" in line
    assert "could not reach" not in line


def test_an_authentication_failure_is_one_clear_line(mongodb_uri: str, collection) -> None:
    rest = mongodb_uri.split("://", 1)[1].split("@")[-1]
    uri = f"mongodb://mq-nobody:wrong-password@{rest}"
    command = cli_command(uri, collection, "--server-timeout", "5", "stats")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    line = error_line(done.stderr)
    assert "authentication failed" in line
    assert "wrong-password" not in line  # redacted
    assert "full error" not in line
    assert "signature" not in line


def test_requeue_of_an_id_that_is_not_one(run_cli, queue: MongoQueue) -> None:
    queue.put({"n": 1})
    code, out, err = run_cli("requeue", "nothex")
    assert code == 2
    assert "invalid id 'nothex'" in error_line(err)
    assert out == ""


def test_requeue_of_a_string_id_that_exists_still_works(run_cli, collection) -> None:
    failing = MongoQueue(collection, "t", max_attempts=1)
    failing.put({"n": 1})
    job = failing.next()
    assert job is not None
    job.error("boom")
    # A job put by other code under a string id: found, so not an invalid id.
    doc = collection.find_one_and_delete({"_id": job.id})
    collection.insert_one({**doc, "_id": "order-17"})
    code, out, err = run_cli("requeue", "order-17")
    assert code == 0, err
    assert out.strip() == "requeued 1 job"


def test_plurals(run_cli, collection) -> None:
    queue = MongoQueue(collection, "t", max_attempts=1)
    code, _, err = run_cli("put", input='{"n": 1}\n{"n": 2}\n')
    assert code == 0, err
    assert "put 2 jobs" in err
    job = queue.next()
    assert job is not None
    job.error("boom")
    code, out, _ = run_cli("requeue", "--all")
    assert out.strip() == "requeued 1 job"
    job = queue.next()
    assert job is not None
    job.error("boom")
    code, out, _ = run_cli("purge")
    assert out.strip() == "deleted 1 job"
    code, out, _ = run_cli("requeue", "--all")
    assert out.strip() == "requeued 0 jobs"


def test_put_on_a_terminal_says_it_reads_json_lines(mongodb_uri: str, collection) -> None:
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        cli_command(mongodb_uri, collection, "put"),
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=_env(),
    )
    os.close(secondary)
    try:
        # Wait for the prompt before typing, as a person would.
        seen = b""
        deadline = time.monotonic() + 30
        assert process.stderr is not None
        while b"JSON" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stderr], [], [], 0.5)
            if ready:
                seen += os.read(process.stderr.fileno(), 4096)
        assert b"reading jobs from stdin: one JSON object per line" in seen, seen
        os.write(primary, b'{"n": 1}\n\x04')
        out, err = process.communicate(timeout=30)
    finally:
        os.close(primary)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert ObjectId(out.decode().strip())
    assert collection.count_documents({"payload": {"n": 1}}) == 1


def test_put_from_a_pipe_says_nothing_extra(run_cli) -> None:
    code, _, err = run_cli("put", input='{"n": 1}\n')
    assert code == 0
    assert "reading" not in err
