"""``mongoqueue worker --metrics-port``: a real worker process serving Prometheus metrics."""

from __future__ import annotations

import signal
import socket
import urllib.request

import pytest

from mongoqueue import MongoQueue
from tests.helpers import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _scrape(port: int) -> dict[str, float]:
    """``name{labels}`` → value, or {} while the server is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


@pytest.mark.parametrize(
    ("record", "depth"),
    [("record", False), ("arecord", False), ("record", True), ("arecord", True)],
)
def test_worker_serves_its_metrics(record, depth, start_worker, collection, log) -> None:
    queue = MongoQueue(collection, "producer")
    queue.put_many([{"n": i} for i in range(3)])
    port = _free_port()
    flags = ["--metrics-depth"] if depth else []
    worker = start_worker(record, "--metrics-port", str(port), "--timeout", "10", *flags)
    q = f'queue="{collection.full_name}"'

    def done() -> dict[str, float]:
        samples = _scrape(port)
        if samples.get(f"mongoqueue_jobs_completed_total{{{q}}}") == 3:
            return samples
        return {}

    samples = wait_for(done, timeout=60, interval=0.2)
    assert samples[f'mongoqueue_job_duration_seconds_count{{outcome="completed",{q}}}'] == 3
    if depth:
        assert samples[f'mongoqueue_jobs{{{q},state="waiting"}}'] == 0
    else:  # depth is exported from one place (the dashboard), not from every worker
        assert not [name for name in samples if name.startswith("mongoqueue_jobs{")]
    assert samples[f"mongoqueue_jobs_failed_total{{{q}}}"] == 0
    assert samples[f"mongoqueue_jobs_put_total{{{q}}}"] == 0  # the worker put none
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.text
    assert "metrics at http://127.0.0.1:" in worker.text
