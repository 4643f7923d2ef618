"""The ``mongoqueue`` command, run as a real process against the test server."""

from __future__ import annotations

import json
import subprocess
import sys

from bson import ObjectId

from mongoqueue import MongoQueue
from tests.acceptance.conftest import ROOT, cli_command


def test_put_inspect_requeue_purge(run_cli, collection) -> None:
    code, out, _ = run_cli("put", '{"n": 1}', "--priority", "5")
    assert code == 0
    first = ObjectId(out.strip())
    code, out, err = run_cli("put", input='{"n": 2}\n{"n": 3}\n\n{"n": 4}\n')
    assert code == 0, err
    assert len(out.split()) == 3
    code, keyed, _ = run_cli("put", '{"n": 5}', "--key", "k-5", "--delay", "3600")
    code, again, _ = run_cli("put", '{"n": 6}', "--key", "k-5")
    assert code == 0
    assert keyed == again  # deduplicated: the existing job's id

    code, out, _ = run_cli("stats", "--json")
    assert code == 0
    counts = json.loads(out)
    assert counts == {"waiting": 4, "delayed": 1, "running": 0, "lease_expired": 0,
                      "failed": 0, "completed": 0, "cancelled": 0, "total": 5}  # fmt: skip
    code, out, _ = run_cli("stats")
    assert code == 0
    assert "lease_expired" in out
    assert "waiting" in out

    code, out, _ = run_cli("list", "--state", "waiting", "--json")
    listed = json.loads(out)
    assert [doc["payload"]["n"] for doc in listed] == [1, 2, 3, 4]  # claim order
    assert listed[0]["_id"] == {"$oid": str(first)}
    code, out, _ = run_cli("list", "--state", "available", "--json")  # the old name
    assert json.loads(out) == listed
    code, out, _ = run_cli("list")
    assert code == 0
    assert "k-5" in out
    code, out, _ = run_cli("peek")
    assert json.loads(out)["payload"] == {"n": 1}

    queue = MongoQueue(collection, "test", max_attempts=1)
    job = queue.next()
    job.error("Traceback ...\nValueError: bad input 42")
    code, out, _ = run_cli("failed")
    assert code == 0
    assert str(first) in out
    assert "ValueError: bad input 42" in out
    code, out, _ = run_cli("failed", "--json")
    assert json.loads(out)[0]["last_error"].endswith("bad input 42")

    code, out, _ = run_cli("requeue", str(first))
    assert code == 0
    assert queue.get(first).state == "waiting"
    assert queue.get(first).attempts == 0
    code, _, err = run_cli("requeue", str(first))  # no longer failed
    assert code == 1
    assert "not a failed job" in err

    code, out, _ = run_cli("purge", "--all", "--yes")
    assert code == 0
    assert "deleted 5 jobs" in out
    assert collection.count_documents({}) == 0


def test_requeue_of_a_job_whose_key_is_taken_fails_with_exit_1(run_cli, collection) -> None:
    queue = MongoQueue(collection, "test", max_attempts=1)
    failed = queue.put({"n": 1})
    queue.next().error("boom")
    queue.put({"n": 2}, key="k")
    # The failed job carries the same key (set directly: on the Rust test server a
    # keyed job that fails stays in the partial key index, see the README's notes).
    collection.update_one({"_id": failed}, {"$set": {"key": "k"}})
    code, _, err = run_cli("requeue", str(failed))
    assert code == 1  # the operation failed (a state conflict), not bad arguments (2)
    assert "cannot requeue job" in err
    assert "already has its key" in err
    assert queue.get(failed).state == "failed"


def test_errors_are_one_line_with_an_exit_code(run_cli) -> None:
    cases = [
        (["put", "{not json"], 2, "not valid JSON"),
        (["put", "[1, 2]"], 2, "must be a JSON object"),
        (["put", '{"$bad": 1}'], 2, "$bad"),
        (["put", '{"a": 1}', "--delay", "-5"], 2, "delay"),
        (["list", "--state", "sideways"], 2, "sideways"),
        (["requeue"], 2, "--all"),
        (["worker", "no_colon_here"], 2, "module:function"),
        (["worker", "tests.acceptance.nonexistent:f"], 2, "cannot import"),
        (["worker", "tests.acceptance.handlers:arecord", "--heartbeat", "99"], 2, "heartbeat"),
    ]
    for args, expected_code, words in cases:
        code, _out, err = run_cli(*args)
        assert code == expected_code, (args, err)
        assert "Traceback" not in err
        message = [line for line in err.splitlines() if line.startswith("mongoqueue: error")]
        assert len(message) == 1, err
        assert words in message[0], (args, err)


def test_unreachable_server(collection) -> None:
    command = cli_command("mongodb://127.0.0.1:1", collection, "--server-timeout", "0.3", "stats")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "mongoqueue: error: could not reach MongoDB at mongodb://127.0.0.1:1; check --uri "
        "or MONGODB_URI and that the server is running"
    ]


def test_python_dash_m_and_console_script_agree() -> None:
    helps = []
    for command in ([sys.executable, "-m", "mongoqueue", "--help"], [_script(), "--help"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        helps.append(done.stdout.replace(command[0], ""))
    assert "worker" in helps[0]
    assert helps[0] == helps[1]


def _script() -> str:
    from pathlib import Path

    script = Path(sys.executable).with_name("mongoqueue")
    assert script.exists(), "the console script is installed with the package"
    return str(script)


def test_demo_against_the_test_server(mongodb_uri: str) -> None:
    command = [sys.executable, "-m", "mongoqueue", "demo", "--jobs", "12", "--workers", "2",
               "--uri", mongodb_uri]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=110, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed exactly once" in done.stdout
    assert "12 of 12" in done.stdout
    assert "killed (SIGKILL)" in done.stdout
    assert "OK:" in done.stdout
