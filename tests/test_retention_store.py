"""What the backends do for retention beyond the contract suite: purges that take more
than one batch (pending webhook messages interleaved with finished ones), and on Redis
the expiry of finished webhook messages."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.models import (
    AbsenceRecord,
    Job,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    WebhookStatus,
)
from gateway.store import Store
from gateway.store.redis import RedisStore
from gateway.store.redis import absence as redis_absence
from gateway.store.redis import webhooks as redis_webhooks
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite import retention as sqlite_retention
from tests.contract.conftest import REDIS_URL, forget_keys, require_redis
from tests.contract.test_retention import accept, message

A = "tenant-a"
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
CUTOFF = T0 + timedelta(days=1)


@pytest.fixture(params=["sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Store]:
    # Tiny batches, so a purge of a few rows takes several rounds.
    monkeypatch.setattr(sqlite_retention, "WEBHOOK_PURGE_BATCH", 2)
    monkeypatch.setattr(redis_webhooks, "PURGE_BATCH", 2)
    monkeypatch.setattr(redis_absence, "PURGE_BATCH", 2)
    opened: Store
    if request.param == "sqlite":
        opened = SqliteStore(tmp_path / "budbringer.db")
        prefix = ""
    else:
        require_redis()
        prefix = f"bbtest-{secrets.token_hex(6)}"
        opened = RedisStore(REDIS_URL, prefix=prefix)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
        if prefix:
            forget_keys(prefix)


def outbox(mid: str, created: datetime) -> WebhookMessage:
    return WebhookMessage(
        id=mid,
        tenant_id=A,
        endpoint_id="ep1",
        event_type="message.read",
        body="{}",
        next_attempt_at=created,
        created_at=created,
        updated_at=created,
    )


async def enqueue(store: Store, rows: list[WebhookMessage]) -> None:
    jobs = [
        Job(id=f"webhook_send:{m.id}", tenant_id=A, kind="webhook_send", ref=m.id, due_at=T0)
        for m in rows
    ]
    cursor = await store.webhook_cursor()
    await store.enqueue_webhooks(cursor, cursor, rows, jobs, "webhook_fanout")


async def settle(store: Store, mid: str, status: WebhookStatus, when: datetime) -> None:
    attempt = WebhookAttempt(at=when, status_code=200, duration_ms=1)
    due = when + timedelta(minutes=1) if status is WebhookStatus.pending else None
    assert await store.record_webhook_attempt(
        mid, f"webhook_send:{mid}", attempt, status, next_attempt_at=due, at=when
    )


async def known_tenant(store: Store) -> None:
    """Make the tenant one the Redis purge visits (any accepted message does that)."""
    await accept(store, message("anchor", CUTOFF + timedelta(days=1)))


async def test_a_purge_of_many_batches_keeps_every_pending_message(store: Store) -> None:
    await known_tenant(store)
    rows = [outbox(f"w{i:02d}", T0 + timedelta(seconds=i)) for i in range(9)]
    await enqueue(store, rows)
    for i, row in enumerate(rows):
        # every third one is still being retried
        status = WebhookStatus.pending if i % 3 == 0 else WebhookStatus.delivered
        await settle(store, row.id, status, T0 + timedelta(seconds=30))

    await store.purge_before(CUTOFF)

    left = await store.list_webhook_messages(A)
    assert sorted(m.id for m in left) == ["w00", "w03", "w06"]
    assert all(m.status is WebhookStatus.pending for m in left)


async def test_a_purge_of_many_batches_takes_every_old_absence_record(store: Store) -> None:
    await known_tenant(store)
    for i in range(5):
        record = AbsenceRecord(
            tenant_id=A,
            message_id=f"m{i}",
            event_id=f"e{i}",
            kind="reported",
            child_id="c1",
            data={},
            marks=[f"e{i}"],
            created_at=T0 + timedelta(seconds=i),
            updated_at=T0 + timedelta(seconds=i),
        )
        await store.claim_absence(record, "h", T0)

    await store.purge_before(CUTOFF)

    for i in range(5):
        assert await store.get_absence(A, f"m{i}") is None
        assert await store.find_absence(A, event_id=f"e{i}") is None


# --------------------------------------------------------------------------- Redis expiry


@pytest.fixture
async def redis_store() -> AsyncIterator[tuple[RedisStore, Redis, str]]:
    require_redis()
    prefix = f"bbtest-{secrets.token_hex(6)}"
    store = RedisStore(REDIS_URL, prefix=prefix, retention_days=2)
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    await store.open()
    try:
        yield store, client, prefix
    finally:
        await store.close()
        await client.aclose()
        forget_keys(prefix)


async def test_finished_webhook_messages_expire_and_a_replay_keeps_them_again(
    redis_store: tuple[RedisStore, Redis, str],
) -> None:
    store, redis, prefix = redis_store
    ttl = 3 * 86_400  # the retention plus a day, like every per-message key
    await enqueue(store, [outbox("w1", T0), outbox("w2", T0)])
    key, attempts = f"{prefix}:{{q}}:wh:m:w1", f"{prefix}:{{q}}:wh:a:w1"
    await settle(store, "w1", WebhookStatus.pending, T0)
    assert await redis.ttl(key) == -1  # pending: kept until it finishes
    await settle(store, "w1", WebhookStatus.failed, T0 + timedelta(minutes=1))
    assert ttl - 5 <= await redis.ttl(key) <= ttl
    assert ttl - 5 <= await redis.ttl(attempts) <= ttl

    assert await store.replay_webhook_message(A, "w1", T0 + timedelta(minutes=2)) is not None
    assert await redis.ttl(key) == -1
    assert await redis.ttl(attempts) == -1

    # failing pending messages by disabling the endpoint sets the expiry too
    await store.create_webhook_endpoint(
        WebhookEndpoint(
            id="ep1",
            tenant_id=A,
            url="https://platform.example/hook",
            event_types=["message.read"],
            secret="whsec_" + "A" * 32,
            created_at=T0,
            updated_at=T0,
        )
    )
    assert await store.disable_webhook_endpoint(A, "ep1", "endpoint_gone", T0) == 2
    for mid in ("w1", "w2"):
        assert ttl - 5 <= await redis.ttl(f"{prefix}:{{q}}:wh:m:{mid}") <= ttl
