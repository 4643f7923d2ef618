"""The original mongoqueue 0.7.2's own test module, fetched from PyPI at test time.

``original_test_module(dest)`` downloads the 0.7.2 sdist once (``pip download
mongoqueue==0.7.2 --no-deps --no-binary :all:``) into ``~/.cache/mongoqueue/``
(``MONGOQUEUE_CACHE`` to change it), takes ``mongoqueue/test.py`` out of it and
writes it to ``dest/original_test.py`` with exactly these edits, each checked to
apply exactly as many times as listed (a different file fails loudly):

* pymongo 2's ``Connection``, removed in pymongo 3, becomes ``MongoClient``;
* ``cursor.count()``, removed in pymongo 4, becomes ``count_documents({})``;
* the Python 2 implicit relative import ``from lock import`` becomes
  ``from mongoqueue.lock import``.

Nothing else changes: the test cases, their data and their assertions are the
original's. (The module is renamed so it does not shadow the standard library's
``test`` package.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

VERSION = "0.7.2"

#: (0.7.2's text, its replacement, how many times it occurs in test.py)
EDITS = (
    (
        'pymongo.Connection(os.environ.get("TEST_MONGODB"))',
        'pymongo.MongoClient(os.environ.get("TEST_MONGODB"))',
        2,
    ),
    ("self.collection.find().count()", "self.collection.count_documents({})", 1),
    ("from lock import MongoLock, lock", "from mongoqueue.lock import MongoLock, lock", 1),
)


def cache_dir() -> Path:
    root = os.environ.get("MONGOQUEUE_CACHE") or Path.home() / ".cache" / "mongoqueue"
    return Path(root) / f"mongoqueue-{VERSION}-sdist"


def sdist() -> Path:
    """The 0.7.2 sdist, downloaded with pip on first use."""
    folder = cache_dir()
    found = sorted(folder.glob(f"mongoqueue-{VERSION}.tar.gz"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"mongoqueue=={VERSION}",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--disable-pip-version-check",
                "--quiet",
                "-d",
                str(folder),
            ],
            check=True,
        )
        found = sorted(folder.glob(f"mongoqueue-{VERSION}.tar.gz"))
    if not found:
        raise RuntimeError(f"pip did not download mongoqueue-{VERSION}.tar.gz into {folder}")
    return found[0]


def original_source(name: str) -> str:
    """A file of the 0.7.2 package (``test.py``, ``mongoqueue.py``...), as shipped."""
    with tarfile.open(sdist()) as tar:
        member = tar.extractfile(f"mongoqueue-{VERSION}/mongoqueue/{name}")
        if member is None:
            raise RuntimeError(f"no mongoqueue/{name} in the {VERSION} sdist")
        return member.read().decode()


def ported(source: str) -> str:
    """0.7.2's test.py with only the pymongo 2 / Python 2 calls replaced (see ``EDITS``)."""
    for old, new, times in EDITS:
        found = source.count(old)
        if found != times:
            raise RuntimeError(f"expected {times} x {old!r} in 0.7.2's test.py, found {found}")
        source = source.replace(old, new)
    return source


def original_test_module(dest: Path) -> Path:
    """Write the ported test module into ``dest``; returns its path."""
    path = dest / "original_test.py"
    path.write_text(ported(original_source("test.py")))
    return path
