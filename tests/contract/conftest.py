"""Fixtures of the store contract suite: every test runs once per backend.

A backend is a factory ``location -> async context manager yielding an open
Store``. Opening the same location twice must reach the same data (that is
how the durability and multi-instance tests work). To add a backend, write
its factory and add one line to ``BACKENDS``; e.g. a Redis factory would
derive a key prefix (or a database number) from ``location``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.store import Store
from gateway.store.sqlite import SqliteStore

StoreFactory = Callable[[Path], AbstractAsyncContextManager[Store]]


@asynccontextmanager
async def sqlite_backend(location: Path) -> AsyncIterator[Store]:
    store = SqliteStore(location / "budbringer.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


BACKENDS: dict[str, StoreFactory] = {
    "sqlite": sqlite_backend,
}


@dataclass(frozen=True)
class Backend:
    """One backend at one location; ``open()`` may be called more than once."""

    name: str
    location: Path

    def open(self) -> AbstractAsyncContextManager[Store]:
        return BACKENDS[self.name](self.location)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(name=request.param, location=tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    async with backend.open() as opened:
        yield opened
