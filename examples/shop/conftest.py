"""The shop's tests use mongoqueue's pytest plugin: a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.database import Database

from mongoqueue import App

pytest_plugins = ["mongoqueue.testing"]


@pytest.fixture
def app(mongoqueue_db: Database[dict[str, Any]]) -> Iterator[App]:
    from tasks import app

    with app.bound_to(mongoqueue_db):
        yield app
