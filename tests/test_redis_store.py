"""What the Redis backend adds beyond the contract suite: real consumer groups and
XAUTOCLAIM under a real clock, retention by EXPIRE, limits shared by processes, and
the store URL."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from gateway.models import (
    Audience,
    Category,
    Delivery,
    DeliveryStatus,
    Job,
    Message,
    Role,
    derive_id,
)
from gateway.store.backends import open_store
from gateway.store.encoding import us
from gateway.store.redis import RedisStore
from gateway.store.redis.base import digest
from tests.contract.conftest import REDIS_URL, forget_keys, require_redis

A = "tenant-a"
T = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def prefix() -> AsyncIterator[str]:
    require_redis()
    name = f"bbtest-{secrets.token_hex(6)}"
    yield name  # type: ignore[misc]
    forget_keys(name)


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


async def opened(prefix: str, **kwargs: object) -> RedisStore:
    store = RedisStore(REDIS_URL, prefix=prefix, **kwargs)  # type: ignore[arg-type]
    await store.open()
    return store


def job(jid: str, due: datetime) -> Job:
    return Job(id=jid, tenant_id=A, kind="send", ref=jid, due_at=due)


async def test_the_url_names_the_keyspace(prefix: str, redis: Redis) -> None:
    store = open_store(f"{REDIS_URL}?prefix={prefix}&socket_timeout=5", retention_days=2)
    assert isinstance(store, RedisStore)
    await store.open()
    try:
        assert await store.ping()
        await store.add_deliveries([], [job("send:1", datetime.now(UTC))])
    finally:
        await store.close()
    assert await redis.exists(f"{prefix}:{{q}}:j:send:1")


async def test_a_crashed_consumer_is_taken_over_after_the_lease(prefix: str, redis: Redis) -> None:
    one, two = await opened(prefix), await opened(prefix)
    try:
        now = datetime.now(UTC)  # a real clock: the leases line up with Redis's own idle time
        await one.add_deliveries([], [job("send:1", now)])
        await one.claim_jobs(["send"], 10, now, lease_seconds=30)
        stream = f"{prefix}:{{q}}:s:send"
        [entry] = await redis.xpending_range(stream, "workers", "-", "+", 10)
        assert entry["consumer"] == one.consumer
        assert entry["time_since_delivered"] < 5_000  # no offset for a real clock
        assert await redis.get(f"{prefix}:{{q}}:clock") == "0"
        # "one" dies holding the job; "two" gets it only when the lease has run out
        assert await two.claim_jobs(["send"], 10, now + timedelta(seconds=29), 30) == []
        (again,) = await two.claim_jobs(["send"], 10, now + timedelta(seconds=31), 30)
        assert (again.id, again.attempts) == ("send:1", 2)
        [entry] = await redis.xpending_range(stream, "workers", "-", "+", 10)
        assert entry["consumer"] == two.consumer
        assert entry["times_delivered"] == 2
        await two.finish_job("send:1")
        assert await redis.xlen(stream) == 0
        assert await redis.xpending(stream, "workers") == {
            "pending": 0,
            "min": None,
            "max": None,
            "consumers": [],
        }
    finally:
        await one.close()
        await two.close()
    # A consumer that holds nothing leaves the group when its process stops.
    assert await redis.xinfo_consumers(stream, "workers") == []


async def test_a_lease_scan_just_before_the_lease_ends_leaves_the_entry_with_its_holder(
    prefix: str, redis: Redis
) -> None:
    """A claim's XAUTOCLAIM looks a second early (the lease end in the job hash decides,
    on the caller's clock): an entry whose lease has not ended stays in its holder's
    pending list, so XPENDING names who holds what. It used to stay with the caller that
    looked: the multiprocess kill test, reading a killed worker's pending entries, then
    missed jobs it held and counted jobs others held."""
    one, two = await opened(prefix), await opened(prefix)
    try:
        now = datetime.now(UTC)
        await one.add_deliveries([], [job("send:1", now)])
        await one.claim_jobs(["send"], 10, now, lease_seconds=30)
        stream = f"{prefix}:{{q}}:s:send"
        assert await two.claim_jobs(["send"], 10, now + timedelta(seconds=29.5), 30) == []
        [entry] = await redis.xpending_range(stream, "workers", "-", "+", 10)
        assert (entry["consumer"], entry["times_delivered"]) == (one.consumer, 1)
        assert entry["time_since_delivered"] < 5_000  # its delivery time kept
        (again,) = await two.claim_jobs(["send"], 10, now + timedelta(seconds=31), 30)
        assert (again.id, again.attempts) == ("send:1", 2)
        [entry] = await redis.xpending_range(stream, "workers", "-", "+", 10)
        assert entry["consumer"] == two.consumer
    finally:
        await one.close()
        await two.close()


async def test_per_message_keys_expire_after_the_retention(prefix: str, redis: Redis) -> None:
    store = await opened(prefix, retention_days=2)
    try:
        now = datetime.now(UTC)
        msg, d = await one_sms(store, now)
    finally:
        await store.close()
    three_days = 3 * 86_400  # two days of retention and the day the purge job has first
    for key in (
        f"{prefix}:{{{A}}}:m:{msg.id}",
        f"{prefix}:{{{A}}}:d:{d.id}",
        f"{prefix}:{{{A}}}:mr:{msg.id}",
        f"{prefix}:{{{A}}}:mc:{msg.id}",
        *[k async for k in redis.scan_iter(match=f"{prefix}:adt:*")],
    ):
        assert three_days - 60 < await redis.ttl(key) <= three_days, key
    # the delivery -> tenant hashes: their expiry is renewed by the daily purge
    store = await opened(prefix, retention_days=2)
    try:
        await store.purge_before(now - timedelta(days=2))
    finally:
        await store.close()
    buckets = [k async for k in redis.scan_iter(match=f"{prefix}:didb:*")]
    assert buckets
    for key in buckets:
        assert three_days - 60 < await redis.ttl(key) <= three_days, key
    # no address or phone number in any key name
    assert not [k async for k in redis.scan_iter(match=f"{prefix}:*4791234567*")]


async def test_a_claim_reads_the_waiting_sets_its_hint_names_and_all_once_a_second(
    prefix: str, redis: Redis
) -> None:
    """Claims between two that scan read only the waiting sets whose hint (``next``) is
    due; every writer lowers it, and a job queued without it (an older version's) is
    found by the next claim that reads every set, a second later at most."""
    store = await opened(prefix)
    qp = f"{prefix}:{{q}}:"
    try:
        now = datetime.now(UTC)
        assert await store.claim_jobs(["send", "plan"], 10, now, 60) == []  # scans
        await store.add_deliveries([], [job("send:1", now)])
        # queued as an older version did: its waiting set, no hint
        await redis.hset(f"{qp}j:plan:1", mapping={"k": "plan", "t": A, "r": "1", "d": us(now)})
        await redis.zadd(f"{qp}z:plan", {"plan:1": us(now)})
        claimed = await store.claim_jobs(["send", "plan"], 10, now, 60)
        assert [j.id for j in claimed] == ["send:1"]
        later = now + timedelta(seconds=1)
        assert [j.id for j in await store.claim_jobs(["send", "plan"], 10, later, 60)] == ["plan:1"]
        assert await redis.zrange(f"{qp}next", 0, -1) == []  # nothing waits
    finally:
        await store.close()


async def test_a_rate_limit_is_shared_by_every_process(prefix: str) -> None:
    one, two = await opened(prefix), await opened(prefix)
    try:
        now = datetime.now(UTC)
        waits = [await s.acquire_rate("sms", 5.0, 1, now) for s in (one, two, one, two)]
        assert waits == pytest.approx([0.0, 0.2, 0.4, 0.6])
    finally:
        await one.close()
        await two.close()


async def test_an_exhausted_connection_pool_makes_callers_wait_not_fail(prefix: str) -> None:
    """More concurrent store calls than connections: each waits for one. Failing instead
    would make the dispatcher retry jobs whose sends already happened."""
    import asyncio

    store = await opened(prefix, max_connections=2)
    try:
        now = datetime.now(UTC)
        await store.add_deliveries([], [job(f"send:{n}", now) for n in range(40)])
        results = await asyncio.gather(*(store.ping() for _ in range(200)))
        assert all(results)
        claimed = await asyncio.gather(*(store.claim_jobs(["send"], 1, now, 60) for _ in range(40)))
        assert sorted(j.id for batch in claimed for j in batch) == sorted(
            f"send:{n}" for n in range(40)
        )
    finally:
        await store.close()


async def test_history_and_address_kept_by_an_older_version_are_still_read(
    prefix: str, redis: Redis
) -> None:
    """Before 2026-12-06 a delivery's history was a list ``h:<id>`` and the latest
    delivery to an address a string ``addr:<hash>``; data written so stays readable."""
    store = await opened(prefix)
    try:
        _, d = await one_sms(store, T)
        # as an older version left it: the first row in a list, none in the hash
        key = f"{prefix}:{{{A}}}:d:{d.id}"
        first = await redis.hget(key, "h1")
        await redis.hdel(key, "hn", "h1")
        await redis.rpush(f"{prefix}:{{{A}}}:h:{d.id}", first)
        assert await store.transition(d.id, DeliveryStatus.sent, T + timedelta(seconds=1))
        history = (await store.history([d.id]))[d.id]
        assert [h.status for h in history] == [DeliveryStatus.planned, DeliveryStatus.sent]
        # another tenant's later delivery to the number, recorded the older way
        later = f"{us(T + timedelta(days=1)):020d}\x1fd-b\x1ftenant-b"
        await redis.set(f"{prefix}:addr:{digest('sms', '+4791234567')}", later)
        assert await store.tenant_for_address("sms", "+4791234567") == "tenant-b"
    finally:
        await store.close()


async def test_a_delivery_tenant_kept_by_an_older_version_is_still_read(
    prefix: str, redis: Redis
) -> None:
    """Before 2026-12-07 a delivery's tenant was a string ``did:<id>``, not a field of
    one of the ``didb:`` hashes; a process that never saw the delivery still finds it."""
    store = await opened(prefix)
    try:
        _, d = await one_sms(store, T)
    finally:
        await store.close()
    removed = [await redis.hdel(k, d.id) async for k in redis.scan_iter(match=f"{prefix}:didb:*")]
    assert sum(removed) == 1
    await redis.set(f"{prefix}:did:{d.id}", A)
    other = await opened(prefix)
    try:
        found = await other.get_delivery(d.id)
        assert found is not None and found.tenant_id == A
    finally:
        await other.close()


async def one_sms(store: RedisStore, at: datetime) -> tuple[Message, Delivery]:
    """A stored message of tenant A with one planned SMS delivery."""
    msg = Message(
        id=derive_id(A, "ev1"),
        tenant_id=A,
        event_id="ev1",
        event_type="message.created",
        body_hash="h",
        category=Category.general,
        subject="S",
        body="B",
        audience=Audience(groups=["g1"]),
        created_at=at,
    )
    await store.accept_message(msg, job(f"plan:{msg.id}", at))
    d = Delivery(
        id=Delivery.make_id(A, "ev1", "p1", "sms"),
        tenant_id=A,
        message_id=msg.id,
        recipient_id="p1",
        recipient_role=Role.guardian,
        channel="sms",
        address="+4791234567",
        language="nb",
        created_at=at,
        updated_at=at,
    )
    await store.add_deliveries([d], [])
    return msg, d


def _absence(now: datetime) -> tuple[Message, Job]:
    msg = Message(
        id=derive_id(A, "ev-absence"),
        tenant_id=A,
        event_id="ev-absence",
        event_type="absence.recorded",
        body_hash="h",
        category=Category.absence,
        subject="S",
        body="B",
        audience=Audience(children=["c1"]),
        created_at=now,
    )
    plan = Job(
        id=f"absence_plan:{msg.id}",
        tenant_id=A,
        kind="absence_plan",
        ref=msg.id,
        due_at=now,
        urgent=True,
        rank=0,
    )
    return msg, plan


def _handed(plan: Job, now: datetime) -> Job:
    """``plan`` as gateway/urgent_handoff.py stores it: claimed now for a 60 s lease."""
    return plan.model_copy(
        update={"due_at": now + timedelta(seconds=60), "attempts": 1, "rank": None}
    )


async def test_a_repost_of_an_unplanned_message_queues_a_handed_job_due_when_the_first_lease_ends(
    prefix: str,
) -> None:
    # The message is stored before its plan job (two steps on Redis); a repost in between
    # brings a job stored as claimed (gateway/urgent_handoff.py). The process that stored
    # the message may still queue and hand its own, so the repost's job keeps its attempt
    # and is due when that process's lease would end (60 s after the message was stored),
    # not a lease after the repost: if that process died, the alert waits at most that.
    store = await opened(prefix)
    try:
        now = datetime.now(UTC)
        msg, plan = _absence(now)
        assert await store.accept_message(msg, plan) is msg
        (first,) = await store.claim_jobs(["absence_plan"], 1, now, 60)
        await store.finish_job(first.id)  # as if its job had never been queued
        later = now + timedelta(seconds=1)
        repost = msg.model_copy(update={"created_at": later})
        stored = await store.accept_message(repost, _handed(plan, later))
        assert stored is not repost and stored.created_at == now
        ends = now + timedelta(seconds=60)
        assert await store.claim_jobs(["absence_plan"], 1, ends - timedelta(seconds=1), 60) == []
        (again,) = await store.claim_jobs(["absence_plan"], 1, ends, 60)
        assert (again.id, again.attempts, again.urgent) == (plan.id, 2, True)
    finally:
        await store.close()


async def test_a_repost_between_the_two_steps_leaves_the_job_to_its_first_holder(
    prefix: str,
) -> None:
    # Two identical absence events race: A stores the message, B's repost queues the plan
    # job before A does, stored as claimed as A would have stored it (due when A's lease
    # ends), which B's process does not hand over; then A's own queueing is a no-op. A
    # holds the job (the store returns A's very message, so A hands it over) and no other
    # worker claims it before A's lease ends: one holder, never two.
    store = await opened(prefix)
    try:
        now = datetime.now(UTC)
        msg, plan = _absence(now)
        # B's step, between A's two: its repost queues the job as B's accept_message does
        # (stored as claimed, due when A's lease would end: A stored the message at now).
        await store.add_deliveries([], [_handed(plan, now)])
        assert await store.accept_message(msg, _handed(plan, now)) is msg
        assert await store.claim_jobs(["absence_plan"], 1, now + timedelta(seconds=59), 60) == []
        (job,) = await store.claim_jobs(["absence_plan"], 1, now + timedelta(seconds=60), 60)
        assert (job.id, job.attempts) == (plan.id, 2)
    finally:
        await store.close()


async def test_a_repost_queued_for_any_worker_is_not_handed_over_too(prefix: str) -> None:
    # The same race with B in a process without a dispatcher: its job is queued as it is,
    # due at once, for any worker; A must not hand it over as well (an equal copy of its
    # message comes back, not the message itself).
    store = await opened(prefix)
    try:
        now = datetime.now(UTC)
        msg, plan = _absence(now)
        await store.add_deliveries([], [plan])
        stored = await store.accept_message(msg, _handed(plan, now))
        assert stored is not msg and stored == msg
        (job,) = await store.claim_jobs(["absence_plan"], 1, now, 60)
        assert (job.id, job.attempts) == (plan.id, 1)
    finally:
        await store.close()
