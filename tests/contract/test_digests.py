"""Contract: the daily digest's entries are kept once, in order, per tenant and digest."""

from __future__ import annotations

from gateway.store import Store
from gateway.store.digests import DigestEntry


def entry(digest: str, n: int, tenant: str = "t1") -> DigestEntry:
    return DigestEntry(tenant, digest, f"m{n}", f"d{n}")


async def test_entries_are_kept_once_in_the_order_they_came(store: Store) -> None:
    await store.digests.add_digest_entries([entry("digest:a", 1), entry("digest:a", 2)])
    await store.digests.add_digest_entries([entry("digest:a", 2), entry("digest:a", 3)])
    await store.digests.add_digest_entries([entry("digest:b", 4), entry("digest:a", 5, "t2")])
    found = await store.digests.digest_entries("t1", "digest:a")
    assert found == [entry("digest:a", 1), entry("digest:a", 2), entry("digest:a", 3)]
    assert await store.digests.digest_entries("t1", "digest:b") == [entry("digest:b", 4)]
    assert await store.digests.digest_entries("t2", "digest:a") == [entry("digest:a", 5, "t2")]
    assert await store.digests.digest_entries("t3", "digest:a") == []


async def test_dropped_entries_are_gone_and_others_stay(store: Store) -> None:
    await store.digests.add_digest_entries([entry("digest:a", n) for n in (1, 2, 3)])
    await store.digests.drop_digest_entries("t1", "digest:a", ["d1", "d3", "unknown"])
    assert await store.digests.digest_entries("t1", "digest:a") == [entry("digest:a", 2)]
    await store.digests.drop_digest_entries("t1", "digest:a", [])
    await store.digests.drop_digest_entries("t1", "digest:a", ["d2"])
    assert await store.digests.digest_entries("t1", "digest:a") == []
    await store.digests.add_digest_entries([])
