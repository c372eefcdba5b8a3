"""Jobs queued by a version without lanes are still claimed, as normal work, after an
upgrade: an SQLite file whose jobs table has no lane column, and Redis jobs written in
the old layout (no lane field, in the kind's sorted set)."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.models import Job
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore
from tests.contract.conftest import REDIS_URL, forget_keys, require_redis

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
A = "tenant-a"


def us(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000)


def alert() -> Job:
    return Job(
        id="send:alert",
        tenant_id=A,
        kind="send",
        ref="alert",
        due_at=T0 + timedelta(1),
        urgent=True,
    )


def make_pre_lane_database(path: Path) -> None:
    """A database as the previous version left it: its jobs table, its index, one job
    due and one leased (its worker crashed)."""
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX jobs_by_lane_visible")
        db.execute("ALTER TABLE jobs DROP COLUMN urgent")
        db.execute("CREATE INDEX jobs_by_kind_visible ON jobs (kind, visible_at, id)")
        db.executemany(
            "INSERT INTO jobs (id, tenant_id, kind, ref, due_at, visible_at, leased_until, "
            "attempts, last_error) VALUES (?, ?, 'send', ?, ?, ?, ?, ?, NULL)",
            [
                ("send:old1", A, "old1", us(T0), us(T0), None, 0),
                ("send:old2", A, "old2", us(T0), us(T0 + timedelta(seconds=60)), 1, 1),
            ],
        )


async def test_sqlite_jobs_of_the_previous_version_are_claimed(tmp_path: Path) -> None:
    path = tmp_path / "budbringer.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    make_pre_lane_database(path)
    store = SqliteStore(path)
    await store.open()
    try:
        await store.add_deliveries([], [alert()])
        later = T0 + timedelta(days=2)
        claimed = await store.claim_jobs(["send"], 10, later, 30)
        assert [(j.id, j.urgent) for j in claimed] == [
            ("send:alert", True),
            ("send:old1", False),
            ("send:old2", False),
        ]
        assert claimed[2].attempts == 2
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        indexes = {row[1] for row in db.execute("PRAGMA index_list(jobs)")}
    assert "jobs_by_lane_visible" in indexes and "jobs_by_kind_visible" not in indexes


@pytest.fixture
def prefix() -> AsyncIterator[str]:
    require_redis()
    name = f"bbtest-{secrets.token_hex(6)}"
    yield name  # type: ignore[misc]
    forget_keys(name)


async def test_redis_jobs_of_the_previous_version_are_claimed(prefix: str) -> None:
    # The previous version's ADD_JOBS: a hash without a lane field, in z:<kind>.
    qp = f"{prefix}:{{q}}:"
    async with Redis.from_url(REDIS_URL, decode_responses=True) as raw:
        for i in range(3):
            await raw.hset(
                f"{qp}j:send:old{i}",
                mapping={"k": "send", "t": A, "r": f"old{i}", "d": us(T0), "a": 0},
            )
            await raw.zadd(f"{qp}z:send", {f"send:old{i}": us(T0) + i})
        await raw.sadd(f"{qp}kinds", "send")
    store = RedisStore(REDIS_URL, prefix=prefix)
    await store.open()
    try:
        await store.add_deliveries([], [alert()])
        later = T0 + timedelta(days=2)
        assert (await store.queue_stats(later))["send"][0] == 4
        claimed = await store.claim_jobs(["send"], 10, later, 30)
        assert [(j.id, j.urgent) for j in claimed] == [
            ("send:alert", True),
            ("send:old0", False),
            ("send:old1", False),
            ("send:old2", False),
        ]
        for j in claimed:
            await store.finish_job(j.id)
        assert await store.queue_stats(later) == {}
    finally:
        await store.close()


async def test_redis_jobs_of_both_layouts_are_read_and_never_queued_twice(prefix: str) -> None:
    """Since 2026-12-07 a new job keeps kind, tenant, due, lane and ref packed in its
    field k (one HSETNX creates it); a job of the previous layout has k too, so queueing
    it again leaves it as it is, and both layouts read alike."""
    qp = f"{prefix}:{{q}}:"
    async with Redis.from_url(REDIS_URL, decode_responses=True) as raw:
        await raw.hset(
            f"{qp}j:send:old",
            mapping={"k": "send", "t": A, "r": "old", "d": us(T0), "a": 2, "e": "timeout"},
        )
        await raw.zadd(f"{qp}z:send", {"send:old": us(T0)})
        await raw.sadd(f"{qp}kinds", "send")
    store = RedisStore(REDIS_URL, prefix=prefix)
    await store.open()
    try:
        again = Job(id="send:old", tenant_id=A, kind="send", ref="old", due_at=T0, attempts=0)
        await store.add_deliveries([], [again, alert(), alert()])
        jobs = await store.get_jobs(["send:old", "send:alert"])
        old, new = jobs["send:old"], jobs["send:alert"]
        assert (old.ref, old.attempts, old.last_error, old.urgent) == ("old", 2, "timeout", False)
        assert (new.tenant_id, new.ref, new.due_at, new.attempts, new.urgent) == (
            A,
            "alert",
            T0 + timedelta(1),
            0,
            True,
        )
        later = T0 + timedelta(days=2)
        assert (await store.queue_stats(later))["send"][0] == 2
        # a retry's due time wins over the packed one
        await store.retry_job("send:alert", later + timedelta(hours=1), "busy")
        retried = (await store.get_jobs(["send:alert"]))["send:alert"]
        assert (retried.due_at, retried.last_error) == (later + timedelta(hours=1), "busy")
        claimed = await store.claim_jobs(["send"], 10, later + timedelta(hours=2), 30)
        assert [(j.id, j.ref, j.urgent, j.attempts) for j in claimed] == [
            ("send:alert", "alert", True, 1),
            ("send:old", "old", False, 3),
        ]
    finally:
        await store.close()
