"""Fixtures of the store contract suite: every test runs once per backend.

A backend is a factory ``location -> async context manager yielding an open
Store``. Opening the same location twice must reach the same data (that is
how the durability and multi-instance tests work). To add a backend, write
its factory and add one line to ``BACKENDS``; e.g. a Redis factory would
derive a key prefix (or a database number) from ``location``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.store import Store
from gateway.store.redis import RedisStore
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


# Redis runs on 127.0.0.1:6379 (CI starts redis-server); each test gets a key prefix of
# its own derived from its tmp_path, and its keys are deleted afterwards: never FLUSHDB.
REDIS_URL = os.environ.get("BUDBRINGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_prefix(location: Path) -> str:
    return "bbtest-" + hashlib.blake2b(str(location).encode(), digest_size=8).hexdigest()


@asynccontextmanager
async def redis_backend(location: Path) -> AsyncIterator[Store]:
    store = RedisStore(REDIS_URL, prefix=redis_prefix(location))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


BACKENDS: dict[str, StoreFactory] = {
    "sqlite": sqlite_backend,
    "redis": redis_backend,
}


def forget_keys(prefix: str) -> None:
    """Delete every key of a test's prefix (never FLUSHDB: the Redis may be shared)."""
    import redis

    with redis.Redis.from_url(REDIS_URL) as client:
        batch = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(batch), 1000):
            client.unlink(*batch[i : i + 1000])


def require_redis() -> None:
    """Skip without Redis on a developer machine; fail in CI (CI=true), never skip there."""
    import redis

    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:  # connection refused, timeout, ...
        reason = f"Redis is not reachable at {REDIS_URL}: {type(exc).__name__}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI must run the Redis half of the contract suite)")
        pytest.skip(reason)


@dataclass(frozen=True)
class Backend:
    """One backend at one location; ``open()`` may be called more than once."""

    name: str
    location: Path

    def open(self) -> AbstractAsyncContextManager[Store]:
        return BACKENDS[self.name](self.location)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "redis":
        require_redis()
    yield Backend(name=request.param, location=tmp_path)
    if request.param == "redis":
        forget_keys(redis_prefix(tmp_path))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    async with backend.open() as opened:
        yield opened
