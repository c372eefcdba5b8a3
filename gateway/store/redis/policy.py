"""Per-tenant policy overrides in the Redis backend: the fields ``escalation`` and
``absence`` of the hash ``P:{t}:settings`` (JSON; absent: the defaults)."""

from __future__ import annotations

import json
from typing import Any

from gateway.store.encoding import dumps
from gateway.store.redis import keys as K
from gateway.store.redis.base import RedisFeature


class RedisPolicy(RedisFeature):
    """:class:`gateway.store.ports.PolicyStore` on Redis."""

    async def _get(self, tenant_id: str, field: str) -> dict[str, Any] | None:
        doc = await self._redis.hget(self._db.t(tenant_id, K.SETTINGS), field)
        if doc is None:
            return None
        data: dict[str, Any] = json.loads(doc)
        return data

    async def _set(self, tenant_id: str, field: str, override: dict[str, Any] | None) -> None:
        key = self._db.t(tenant_id, K.SETTINGS)
        if override is None:
            await self._redis.hdel(key, field)
        else:
            await self._redis.hset(key, field, dumps(override))

    async def get_escalation_override(self, tenant_id: str) -> dict[str, Any] | None:
        return await self._get(tenant_id, "escalation")

    async def set_escalation_override(
        self, tenant_id: str, override: dict[str, Any] | None
    ) -> None:
        await self._set(tenant_id, "escalation", override)

    async def get_absence_settings(self, tenant_id: str) -> dict[str, Any] | None:
        return await self._get(tenant_id, "absence")

    async def set_absence_settings(self, tenant_id: str, override: dict[str, Any] | None) -> None:
        await self._set(tenant_id, "absence", override)
