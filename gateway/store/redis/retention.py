"""Retention in the Redis backend: per-message keys expire a day after the retention
(the guarantee); the daily purge job removes them first and keeps the counters right:
messages with their deliveries, history, reads and replies (lua/purge.lua), absence
records, and the webhook outbox's finished messages. It also sweeps the change feeds
for changes a crash left unmarked (redis/webhooks.py) and renews the expiry of the
delivery → tenant hashes (redis/deliveries.py)."""

from __future__ import annotations

from datetime import datetime

from gateway.store.encoding import us
from gateway.store.redis import scripts as lua
from gateway.store.redis.absence import RedisAbsence
from gateway.store.redis.base import RedisFeature, RedisHandle
from gateway.store.redis.deliveries import DeliveryOwners
from gateway.store.redis.scripts import Lua
from gateway.store.redis.tenants import RedisTenants
from gateway.store.redis.webhooks import RedisWebhooks

_PURGE = Lua(lua.PURGE)


class RedisRetention(RedisFeature):
    """:class:`gateway.store.ports.RetentionStore` on Redis, over the features whose keys
    it purges."""

    SCRIPTS = (_PURGE,)

    def __init__(
        self,
        db: RedisHandle,
        *,
        tenants: RedisTenants,
        absence: RedisAbsence,
        webhooks: RedisWebhooks,
        owners: DeliveryOwners,
    ) -> None:
        super().__init__(db)
        self._tenants = tenants
        self._absence = absence
        self._webhooks = webhooks
        self._owners = owners

    async def purge_before(self, cutoff: datetime) -> int:
        """Remove messages created before ``cutoff`` with their deliveries, history, reads
        and replies, and replies received before it; the same for absence records and
        finished webhook messages; return how many deliveries went."""
        removed = 0
        active = await self._redis.smembers(self._db.active)
        tenants = sorted(active | {t.id for t in await self._tenants.list_tenants()})
        for tenant_id in tenants:
            await self._absence.purge(tenant_id, cutoff)
            await self._webhooks.purge_messages(tenant_id, cutoff)
        await self._webhooks.sweep_feeds()
        for tenant_id in sorted(active):
            tp = self._db.tp(tenant_id)
            more = True
            while more:
                out = await self._db.eval(
                    self._redis, _PURGE, [self._db.anchor(tenant_id)], [tp, us(cutoff), 2000]
                )
                removed += int(out[0])
                more = bool(out[1])
                ids = out[2:]
                if ids:
                    await self._owners.forget(ids)
        await self._owners.renew()
        return removed
