"""The original mongoqueue 0.7.2's own test suite, run against this package.

Its ``test.py`` is fetched from PyPI and ported with only the edits listed in
:mod:`tests.compat.original` (pymongo 2 calls that no longer exist, a Python 2
import); then ``python -m unittest`` runs each of its test classes, in a child
process, on the test server. Every test of it must pass: ``MongoQueueTest``
(the queue) and ``MongoLockTest`` (``mongoqueue.lock``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compat.original import EDITS, original_source, original_test_module, ported

ROOT = Path(__file__).resolve().parents[2]

#: The test classes of 0.7.2's test.py, and the tests each holds.
CLASSES = {
    "MongoQueueTest": {
        "test_put_next",
        "test_get_empty_queue",
        "test_priority",
        "test_complete",
        "test_release",
        "test_error",
        "test_progress",
        "test_stats",
        "test_context_manager_error",
        "test_context_manager_complete",
    },
    "MongoLockTest": {
        "test_lock_acquire_release_context_manager",
        "test_auto_expires_old",
    },
}


@pytest.fixture(scope="module")
def original_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("original")
    original_test_module(folder)
    return folder


def test_the_port_changes_only_the_removed_calls() -> None:
    source = original_source("test.py")
    port = ported(source)
    changed = [
        (old, new)
        for old, new in zip(source.splitlines(), port.splitlines(), strict=True)
        if old != new
    ]
    assert len(changed) == sum(times for *_, times in EDITS)
    for old_line, new_line in changed:
        assert any(old in old_line and new in new_line for old, new, _ in EDITS)
    # The test classes and their tests are the ones this harness runs.
    for cls, tests in CLASSES.items():
        assert f"class {cls}(TestCase):" in port
        body = port.split(f"class {cls}(TestCase):")[1].split("\nclass ")[0]
        assert set(re.findall(r"def (test_\w+)\(self\)", body)) == tests


@pytest.mark.parametrize("test_class", sorted(CLASSES))
def test_the_original_suite_passes(original_dir: Path, mongodb_uri: str, test_class: str) -> None:
    env = {
        **os.environ,
        "TEST_MONGODB": mongodb_uri,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(original_dir)]),
        "PYTHONWARNINGS": "error::DeprecationWarning:mongoqueue",
    }
    result = subprocess.run(
        [sys.executable, "-m", "unittest", "-v", f"original_test.{test_class}"],
        cwd=original_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    # "test_x (original_test.Class.test_x) ... ok" (Python 3.11+) or "(original_test.Class)".
    passed = re.findall(
        r"^(test_\w+) \(original_test\.\w+(?:\.test_\w+)?\) \.\.\. ok$", report, re.M
    )
    assert set(passed) == CLASSES[test_class], report
    assert re.search(rf"Ran {len(CLASSES[test_class])} tests? in", report), report
    assert "\nOK" in report, report
