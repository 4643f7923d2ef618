"""``mongoqueue dashboard`` and ``worker --metrics-port`` as processes: auth, refusals, ports."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode

import pytest

from mongoqueue import MongoQueue

from .conftest import ROOT, _env, cli_command
from .test_cli_messages import error_line

HANDLER = "tests.acceptance.handlers:record"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refuses_beyond_loopback_without_auth(run_cli) -> None:
    for host in ("0.0.0.0", "::"):
        code, _, err = run_cli("dashboard", "--host", host, "--port", str(free_port()))
        assert code == 4, err
        line = error_line(err)
        assert f"refusing to serve the dashboard on {host} without authentication" in line
        assert "--password-env" in line
    port = str(free_port())
    code, _, err = run_cli("worker", HANDLER, "--metrics-port", port, "--metrics-host", "0.0.0.0")
    assert code == 4, err
    assert "--metrics-no-auth" in error_line(err)


def test_port_in_use_has_its_own_exit_code(run_cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, _, err = run_cli("dashboard", "--port", port)
        assert code == 5, err
        assert f"port {port} on 127.0.0.1 is already in use" in error_line(err)
        code, _, err = run_cli("worker", HANDLER, "--burst", "--metrics-port", port)
        assert code == 5, err
        assert f"metrics port {port} on 127.0.0.1 is already in use" in error_line(err)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=5
        ) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


@pytest.mark.parametrize("source", ["env", "file"])
def test_dashboard_with_a_password(mongodb_uri, collection, tmp_path, source) -> None:
    MongoQueue(collection, "t").put({"n": 1})
    port = free_port()
    env = _env()
    if source == "env":
        env["MQ_DASHBOARD_PASSWORD"] = "pw-42"
        option = ["--password-env", "MQ_DASHBOARD_PASSWORD"]
    else:
        (tmp_path / "password").write_text("pw-42\n")
        option = ["--password-file", str(tmp_path / "password")]
    command = cli_command(mongodb_uri, collection, "dashboard", "--port", str(port), *option)
    output = tmp_path / "dashboard.log"
    with open(output, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        url = f"http://127.0.0.1:{port}/queues/{collection.name}"
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _ = _get(url)
                break
            except OSError:
                assert process.poll() is None, output.read_text()
                assert time.monotonic() < deadline, output.read_text()
                time.sleep(0.1)
        assert status == 401
        good = {"Authorization": "Basic " + b64encode(b"mongoqueue:pw-42").decode()}
        status, page = _get(url, good)
        assert status == 200
        assert 'data-state="total">1<' in page
        wrong = {"Authorization": "Basic " + b64encode(b"mongoqueue:pw-43").decode()}
        assert _get(url, wrong)[0] == 401
    finally:
        process.terminate()
        process.wait(30)
    assert "user mongoqueue" in output.read_text()
