"""How many Redis commands the send path costs, counted by a redis-server of the test's
own (``INFO commandstats`` counts a script's inner calls too): a batch of K sends is
stored, claimed and finished in a bounded number of commands per send and in a fixed
number of script calls, whatever K (issue 18: ≈ 50 commands per delivery before)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.bench import redis_server
from gateway.bench.redis_server import RedisServer
from gateway.bench.redis_stats import CommandCounts, snapshot
from gateway.models import DeliveryStatus
from gateway.store import SendOutcome
from gateway.store.redis import RedisStore
from tests.contract.builders import accepted, at, delivery, job, message
from tests.contract.conftest import _skip_or_fail as skip_or_fail

K = 60


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    if not redis_server.available():
        # As the contract suite: skipped on a developer machine, a failure in CI.
        skip_or_fail("redis-server is not on the PATH; `make test-deps` installs it")
    with (tmp_path / "redis-out.log").open("ab") as log:
        server = RedisServer(tmp_path, log)
        try:
            yield await server.start()
        finally:
            server.stop()


@pytest.fixture
async def store(url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(url, prefix="bbcount")
    await store.open()
    yield store
    await store.close()


async def test_a_batch_of_sends_costs_a_bounded_number_of_commands(
    store: RedisStore, url: str
) -> None:
    msg = await accepted(store, message())
    ds = [delivery(msg, f"p{i:03}", "sms", address=f"+479{i:07}") for i in range(K)]

    before = await snapshot(url)
    await store.add_deliveries(ds, [job(f"send:{d.id}") for d in ds])
    added = await snapshot(url) - before
    claimed = await store.claim_jobs(["send"], K, at(1), 30)
    claims = await snapshot(url) - before - added
    outcomes = [
        SendOutcome(f"send:{d.id}", d.id, DeliveryStatus.sent, at(2), provider_id=f"SM{n}")
        for n, d in enumerate(ds)
    ]
    moved = await store.finish_sends(outcomes)
    finished = await snapshot(url) - before - added - claims

    assert (len(claimed), moved) == (K, K)
    # per delivery: its hash + EXPIRE, the latest per address (SET; the global one ZADD
    # + EXPIRE), its job (HSETNX): 6, and the tenant lookup (one HSET per bucket: at
    # most 1), and a few per batch
    _assert_within(added, per_send=7, scripts=2)
    # per job: XADD, HMGET + HSET of the job
    _assert_within(claims, per_send=3, scripts=1)
    # per outcome: the move (HMGET + HSET), the provider id (SET); the jobs this process
    # claimed end without a read
    _assert_within(finished, per_send=3, scripts=2)


def _assert_within(used: CommandCounts, *, per_send: int, scripts: int) -> None:
    assert used.scripts <= scripts, used.calls
    assert used.total <= per_send * K + 25, used.calls


async def test_an_email_is_not_indexed_by_address_or_provider_id(
    store: RedisStore, url: str
) -> None:
    """Only SMS is looked up by address or provider id (gateway.constants.LOOKUP_CHANNELS):
    an email delivery costs its hash, its share of the tenant lookup and its job."""
    msg = await accepted(store, message())
    ds = [delivery(msg, f"p{i:03}", "email", address=f"p{i}@example.no") for i in range(K)]
    before = await snapshot(url)
    await store.add_deliveries(ds, [job(f"send:{d.id}") for d in ds])
    added = await snapshot(url) - before
    await store.claim_jobs(["send"], K, at(1), 30)
    claims = await snapshot(url) - before - added
    outcomes = [
        SendOutcome(f"send:{d.id}", d.id, DeliveryStatus.sent, at(2), provider_id=f"<{n}@x>")
        for n, d in enumerate(ds)
    ]
    assert await store.finish_sends(outcomes) == K
    finished = await snapshot(url) - before - added - claims
    _assert_within(added, per_send=4, scripts=2)
    _assert_within(finished, per_send=2, scripts=2)
    # no provider id (SET pid:) and no address (ZADD adt:, SET la:): the jobs' ZADD and
    # their waiting set's hint (P:{q}:next)
    assert "set" not in finished.calls and "set" not in added.calls
    assert added.calls["zadd"] == 2


async def test_an_outcome_batch_over_three_channels_writes_each_counter_key_in_two(
    store: RedisStore, url: str
) -> None:
    """Six channel counters change (queued -1, sent +1 per channel): one HMGET + HSET of
    the counters' hash instead of six HINCRBY, with the same counts."""
    msg = await accepted(store, message())
    channels = ("sms", "push", "email")
    ds = [delivery(msg, f"p{i:03}", channels[i % 3], address=f"+479{i:07}") for i in range(12)]
    await store.add_deliveries(ds, [job(f"send:{d.id}") for d in ds])
    await store.claim_jobs(["send"], 12, at(1), 30)
    outcomes = [SendOutcome(f"send:{d.id}", d.id, DeliveryStatus.sent, at(2)) for d in ds]

    before = await snapshot(url)
    assert await store.finish_sends(outcomes) == 12
    used = await snapshot(url) - before

    # the message's counters: two fields (HINCRBY each); the channel counters: HMGET + HSET
    assert used.calls.get("hincrby", 0) == 2, used.calls
    stats = await store.delivery_stats()
    assert {k: v for k, v in stats.items() if k[0] in channels} == {
        (c, "sent"): 4 for c in channels
    }
    counts = await store.count_by_status(msg.tenant_id, msg.id)
    assert {k: v for k, v in counts.items() if v} == {"sent": 12}


async def test_a_claim_of_one_job_reads_its_waiting_set_once(store: RedisStore, url: str) -> None:
    """A claim reads each waiting set it visits once (its first members by rank: the due
    ones, and the first one left is the set's new hint) and creates a stream's group
    only when XREADGROUP finds none (no EXISTS per kind and claim)."""
    msg = await accepted(store, message())
    ds = [delivery(msg, f"p{i}", "sms", address=f"+4790000{i:03}") for i in range(2)]
    await store.add_deliveries(ds[:1], [job(f"send:{ds[0].id}")])
    assert len(await store.claim_jobs(["send"], 10, at(1), 30)) == 1  # scans, makes the group
    await store.add_deliveries(ds[1:], [job(f"send:{ds[1].id}")])

    before = await snapshot(url)
    assert len(await store.claim_jobs(["send"], 10, at(1.1), 30)) == 1  # no scan: hint due
    used = await snapshot(url) - before

    assert "zrangebyscore" in used.calls  # the hints due
    assert used.calls.get("zrange") == 1, used.calls  # the one set the hint named
    assert "exists" not in used.calls, used.calls
    # EVALSHA, TIME, GET clock, the hints, the set, ZREM, its hint, XADD, XREADGROUP,
    # HMGET + HSET of the job, XCLAIM (and the counting client's HELLO)
    assert used.total <= 13, used.calls
