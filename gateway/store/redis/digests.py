"""Redis part of the daily digest's entries (gateway/store/digests.py).

One sorted set per digest in the tenant's slot (``P:{tenant}:digest:<digest id>``):
members ``<delivery id>:<message id>`` scored by a counter, so they come back in the
order they were added; it expires three days after the last entry (a digest is due
within a day).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.store.digests import DigestEntry
from gateway.store.redis import keys as K
from gateway.store.redis.base import RedisFeature

TTL = 3 * 86_400


class RedisDigests(RedisFeature):
    """:class:`gateway.store.digests.Digests` on the store's handle."""

    def _key(self, tenant_id: str, digest_id: str) -> str:
        return self._db.t(tenant_id, K.DIGEST, digest_id)

    async def add_digest_entries(self, entries: Sequence[DigestEntry]) -> None:
        by_key: dict[str, list[DigestEntry]] = {}
        for entry in entries:
            by_key.setdefault(self._key(entry.tenant_id, entry.digest_id), []).append(entry)
        for key, rows in by_key.items():
            # One slot per key: a counter member keeps the order across calls.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incrby(key + ":n", len(rows))
                pipe.expire(key + ":n", TTL)
                (top, _) = await pipe.execute()
            first = int(top) - len(rows)
            members = {f"{e.delivery_id}:{e.message_id}": first + i for i, e in enumerate(rows)}
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(key, members, nx=True)
                pipe.expire(key, TTL)
                await pipe.execute()

    async def digest_entries(self, tenant_id: str, digest_id: str) -> list[DigestEntry]:
        members = await self._redis.zrange(self._key(tenant_id, digest_id), 0, -1)
        out = []
        for member in members:
            delivery_id, _, message_id = str(member).partition(":")
            out.append(DigestEntry(tenant_id, digest_id, message_id, delivery_id))
        return out

    async def drop_digest_entries(
        self, tenant_id: str, digest_id: str, delivery_ids: Sequence[str]
    ) -> None:
        if not delivery_ids:
            return
        key = self._key(tenant_id, digest_id)
        members = await self._redis.zrange(key, 0, -1)
        gone = [m for m in members if str(m).partition(":")[0] in set(delivery_ids)]
        if gone:
            await self._redis.zrem(key, *gone)
