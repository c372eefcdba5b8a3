"""An audience read again while the directory versions have not moved costs one command
(gateway/store/redis/snapshots.py): a broadcast read by its intake and again by its
plan (issue 18: the second read was ≈ 1.3 commands per delivery of the mixed run at
2,000 children). A write in any process, of any part the snapshot holds, makes the next
read a new one; a caller's changes to its copy are not seen by the next."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.bench.redis_stats import snapshot
from gateway.models import (
    Audience,
    Device,
    DirectoryBatch,
    DirectorySnapshot,
    Preferences,
    Unit,
    UnitKind,
)
from gateway.store.redis import RedisStore
from gateway.store.redis.snapshots import MAX_AGE, SnapshotCache
from tests.contract.builders import T0, A, child, school_batch
from tests.test_redis_commands import url  # noqa: F401

CLASS_5A = Audience(groups=["g5a"])


async def _store(redis_url: str) -> RedisStore:
    store = RedisStore(redis_url, prefix="bbsnap")
    await store.open()
    return store


@pytest.fixture
async def stores(url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:  # noqa: F811
    """Two stores on one Redis: two gateway processes."""
    first, second = await _store(url), await _store(url)
    await first.apply_directory(A, school_batch())
    yield first, second
    await first.close()
    await second.close()


async def test_a_second_read_of_an_unchanged_audience_costs_one_command(
    stores: tuple[RedisStore, RedisStore],
    url: str,  # noqa: F811
) -> None:
    store, _ = stores
    before = await snapshot(url)
    first = await store.load_audience(A, CLASS_5A)
    read = await snapshot(url) - before
    again = await store.load_audience(A, CLASS_5A)
    second = await snapshot(url) - before - read

    assert again == first
    assert read.total >= 10, read.calls  # the read itself: members, persons, relations ...
    # the MGET of the versions (HELLO: the counting client's own connection)
    assert {k: v for k, v in second.calls.items() if k != "hello"} == {"mget": 1}


async def test_a_write_in_another_process_makes_the_next_read_a_new_one(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    store, other = stores
    first = await store.load_audience(A, CLASS_5A)
    assert not first.relations[0].flags.blocked

    # each part of the snapshot has its version: directory, devices, preferences
    await other.set_relation_flag(A, "c1", "p1", "blocked", True, "court order", "s1", T0)
    blocked = await store.load_audience(A, CLASS_5A)
    assert {(r.child_id, r.guardian_id) for r in blocked.relations if r.flags.blocked} == {
        ("c1", "p1")
    }

    await other.upsert_device(A, "p1", Device(id="d1", token="tok-1", platform="android"))
    with_device = await store.load_audience(A, CLASS_5A)
    assert [d.id for d in with_device.devices["p1"]] == ["d1"]

    await other.set_preferences(A, "p1", Preferences(language="en"))
    assert (await store.load_audience(A, CLASS_5A)).preferences["p1"].language == "en"


async def test_a_callers_changes_to_its_snapshot_are_not_kept(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """The planner adds the sender's units and the escalation pins preferences in the
    snapshot it got (gateway/sender_unit.py, gateway/escalation.py)."""
    store, _ = stores
    mine = await store.load_audience(A, CLASS_5A)
    mine.units["elsewhere"] = Unit(id="elsewhere", kind=UnitKind.school, name="Elsewhere")
    mine.sender_units.append("elsewhere")
    mine.preferences["p1"] = Preferences(language="en")
    mine.relations.clear()

    again = await store.load_audience(A, CLASS_5A)
    assert "elsewhere" not in again.units and again.sender_units == []
    assert "p1" not in again.preferences
    assert again.relations


async def test_only_the_owners_of_devices_have_their_devices_read(
    stores: tuple[RedisStore, RedisStore],
    url: str,  # noqa: F811
) -> None:
    """The tenant's token and FID indexes name every device's owner: with fewer devices
    than persons in the audience, only owners' device hashes are read (HGETALL)."""
    store, other = stores
    # ten more children in u1, none with a guardian: the first read of persons is large
    await other.apply_directory(
        A, DirectoryBatch(persons=[child(f"c{n}", units=("u1",)) for n in range(10, 20)])
    )
    await other.upsert_device(A, "p1", Device(id="d1", token="tok-1", platform="android"))
    await other.upsert_device(A, "p2", Device(id="d2", fid="fid-2", platform="ios"))
    # the token moves to p4's device: p1's device with it is gone (one device per token)
    await other.upsert_device(A, "p4", Device(id="d4", token="tok-1", platform="web"))

    before = await snapshot(url)
    school = await store.load_audience(A, Audience(units=["u1", "u2"]))
    used = await snapshot(url) - before

    assert {p: [d.id for d in ds] for p, ds in school.devices.items()} == {
        "p2": ["d2"],
        "p4": ["d4"],
    }
    # the children's relations (rc:, one each), then devices: none for the 15 children
    # and the staff member read first (through the indexes), one each for the four
    # guardians read after them (too few to ask the indexes)
    assert len(school.audience_children) == 15
    assert used.calls["hgetall"] == 15 + 4, used.calls
    assert used.calls["hvals"] == 2, used.calls


async def test_a_write_after_a_failover_that_lost_the_last_one_is_seen(
    stores: tuple[RedisStore, RedisStore],
    url: str,  # noqa: F811
) -> None:
    """A failover (or a restart) may lose the last writes, the version's bump with them.
    A later write must still move the version to one no snapshot was kept at: with +1
    it came back to the very number the lost write had given, and the snapshot kept
    then, without the block, was taken for current."""
    store, other = stores
    client = Redis.from_url(url, decode_responses=True)
    try:
        (version_key,) = [k async for k in client.scan_iter("*bbsnap*dirv*")]
        before = await client.get(version_key)
        await other.apply_directory(A, DirectoryBatch(persons=[child("c9", units=("u1",))]))
        kept = await store.load_audience(A, CLASS_5A)  # kept at the version after that write
        assert not any(r.flags.blocked for r in kept.relations)

        await client.set(version_key, before)  # the write's bump lost with the primary
        await other.set_relation_flag(A, "c1", "p1", "blocked", True, "court order", "s1", T0)

        now = await store.load_audience(A, CLASS_5A)
    finally:
        await client.aclose()
    assert {(r.child_id, r.guardian_id) for r in now.relations if r.flags.blocked} == {("c1", "p1")}


def test_a_snapshot_past_its_age_goes_whichever_audience_is_read() -> None:
    """A large audience's persons are not held by a process that reads nothing else."""
    now = [0.0]
    cache = SnapshotCache(clock=lambda: now[0])
    school = DirectorySnapshot.model_construct(
        units={}, groups={}, persons={}, audience_children=[], sender_units=[],
        relations=[], preferences={}, devices={}, failing={},
    )  # fmt: skip
    cache.keep(("t", "school"), ("1", "1", "1"), school)
    now[0] = MAX_AGE + 1
    assert cache.versions_of(("t", "a class")) is None
    assert len(cache) == 0
