"""Fixtures of the store contract suite: every test runs once per backend.

A backend is a factory ``location -> async context manager yielding an open
Store``. Opening the same location twice must reach the same data (that is
how the durability and multi-instance tests work). To add a backend, write
its factory and add one line to ``BACKENDS``; the Redis factories derive a key
prefix from ``location``. ``redis-cluster`` runs the suite on a three-node Redis
Cluster the session starts (skipped without redis-server, failing in CI).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.store import Store
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore
from tests.contract.builders import A, school_batch
from tests.peers import redis_cluster as cluster_peer
from tests.peers.redis_cluster import ClusterPeer

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


# A three-node Redis Cluster started once per session (tests/peers/redis_cluster.py).
_cluster: list[ClusterPeer] = []


@asynccontextmanager
async def redis_cluster_backend(location: Path) -> AsyncIterator[Store]:
    store = RedisStore(_cluster[0].url, prefix=redis_prefix(location))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


BACKENDS: dict[str, StoreFactory] = {
    "sqlite": sqlite_backend,
    "redis": redis_backend,
    "redis-cluster": redis_cluster_backend,
}


def take_away(backend: Backend, sql: str, patterns: Sequence[str]) -> None:
    """Delete stored data behind the store's back, as an older version's data lacked it:
    ``sql`` on SQLite, the keys matching ``patterns`` (after the test's prefix) on Redis."""
    import redis

    if backend.name == "sqlite":
        with sqlite3.connect(backend.location / "budbringer.db") as db:
            db.execute(sql)
        return
    prefix = redis_prefix(backend.location)
    clients = (
        [redis.Redis.from_url(REDIS_URL)]
        if backend.name == "redis"
        else [redis.Redis(port=port) for port in _cluster[0].ports]
    )
    for client in clients:
        with client:
            for pattern in patterns:
                for name in client.scan_iter(match=f"{prefix}:{pattern}"):
                    client.unlink(name)


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
        _skip_or_fail(f"Redis is not reachable at {REDIS_URL}: {type(exc).__name__}")


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must run the Redis half of the contract suite)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPeer | None]:
    """The session's Redis Cluster, started on first use; None without redis-server."""
    if not cluster_peer.available():
        yield None
        return
    with ClusterPeer(tmp_path_factory.mktemp("redis-cluster")) as peer:
        _cluster.append(peer)
        try:
            yield peer
        finally:
            _cluster.remove(peer)


@dataclass(frozen=True)
class Backend:
    """One backend at one location; ``open()`` may be called more than once."""

    name: str
    location: Path

    def open(self) -> AbstractAsyncContextManager[Store]:
        return BACKENDS[self.name](self.location)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    cluster: ClusterPeer | None = None
    if request.param == "redis":
        require_redis()
    elif request.param == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")
        if cluster is None:
            _skip_or_fail("redis-server is not installed: no Redis Cluster")
    yield Backend(name=request.param, location=tmp_path)
    if request.param == "redis":
        forget_keys(redis_prefix(tmp_path))
    elif cluster is not None:
        cluster.forget_keys(redis_prefix(tmp_path))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    async with backend.open() as opened:
        yield opened


@pytest.fixture
async def school(store: Store) -> Store:
    """A store holding the school directory of :func:`builders.school_batch` for tenant A."""
    await store.apply_directory(A, school_batch())
    return store
