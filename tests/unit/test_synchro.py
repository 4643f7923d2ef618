"""The sync twins are generated from their asyncio source by ``scripts/synchro``.

The first test regenerates them in memory and compares with the checked-in files,
so ``scripts/test`` fails when someone edits ``aio.py`` without running the script
(or edits the generated ``queue.py`` by hand). The others hold the conversion rules.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_synchro() -> ModuleType:
    path = ROOT / "scripts" / "synchro"
    loader = importlib.machinery.SourceFileLoader("synchro", str(path))
    spec = importlib.util.spec_from_loader("synchro", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


synchro = _load_synchro()


@pytest.mark.parametrize("target", sorted(synchro.TARGETS))
def test_generated_files_are_up_to_date(target: str) -> None:
    checked_in = (ROOT / target).read_text(encoding="utf-8")
    assert synchro.generate(target) == checked_in, (
        f"{target} is stale: edit {synchro.TARGETS[target]}, then run "
        "`.venv/bin/python scripts/synchro`"
    )


def test_generated_files_say_so() -> None:
    for target, source in synchro.TARGETS.items():
        head = (ROOT / target).read_text(encoding="utf-8").splitlines()[0]
        assert head.startswith("# GENERATED FILE")
        assert source in head


SAMPLE = '''"""Async docstring."""

import asyncio


class AsyncThing:
    """Twin of :class:`~mongoqueue.AsyncJob`; ``async with`` an AsyncJob."""

    async def run(self, job: AsyncJob) -> AsyncMongoQueue:
        # A getMore's await time stays in this comment.
        async with job:
            rows = [row async for row in self.cursor]
            async for row in self.cursor:
                await asyncio.sleep(await self.delay())
        return await self.queue("AsyncMongoQueue")

    async def __aenter__(self) -> None:
        pass
'''

EXPECTED = '''"""Sync docstring."""



class AsyncThing:
    """Twin of :class:`~mongoqueue.AsyncJob`; ``with`` an Job."""

    def run(self, job: Job) -> MongoQueue:
        # A getMore's await time stays in this comment.
        with job:
            rows = [row for row in self.cursor]
            for row in self.cursor:
                time.sleep(self.delay())
        return self.queue("MongoQueue")

    def __enter__(self) -> None:
        pass
'''


def test_the_conversion_rules() -> None:
    assert synchro.unasync(SAMPLE, '"""Sync docstring."""') == EXPECTED


def test_a_name_left_async_is_an_error() -> None:
    """A construct with no rule (here ``asyncio.gather``, ``AsyncThing``) stops the script."""
    with pytest.raises(SystemExit, match="'asyncio' is left after conversion"):
        synchro._check_left_over("x.py", "import time\n\nasyncio.gather()\n")
    with pytest.raises(SystemExit, match="'AsyncThing' is left"):
        synchro._check_left_over("x.py", synchro.unasync(SAMPLE, '""""""'))
