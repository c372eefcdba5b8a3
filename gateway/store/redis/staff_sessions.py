"""Staff sign-in links used once and staff sessions ended by a sign-out, in the Redis
backend (the ``StaffSessionStore`` port): a used link is the key ``P:{t}:signin:<id>``,
set only if absent and expiring with the link; the session generations are the hash
``P:{t}:staffgen`` (staff id → generation).

A composed feature: :class:`RedisStaffSessions` is built with the handle
(redis/base.py)."""

from __future__ import annotations

import math
import secrets
from datetime import datetime

from gateway.store.redis import keys as K
from gateway.store.redis.base import RedisFeature


class RedisStaffSessions(RedisFeature):
    """:class:`gateway.store.ports.StaffSessionStore` on Redis."""

    async def use_signin_link(
        self, tenant_id: str, link_id: str, now: datetime, expires_at: datetime
    ) -> bool:
        # SET NX is the atomic first use. The expiry is relative, from the caller's
        # clock (as the link's own expiry is checked), never Redis's wall clock.
        seconds = max(1, math.ceil((expires_at - now).total_seconds()))
        key = self._db.t(tenant_id, K.USED_SIGNIN_LINK, link_id)
        return bool(await self._redis.set(key, "1", nx=True, ex=seconds))

    async def staff_session_generation(self, tenant_id: str, staff_id: str) -> str:
        generation = await self._redis.hget(self._db.t(tenant_id, K.STAFF_GENERATIONS), staff_id)
        return str(generation) if generation is not None else ""

    async def end_staff_sessions(self, tenant_id: str, staff_id: str) -> str:
        generation = secrets.token_urlsafe(12)
        await self._redis.hset(self._db.t(tenant_id, K.STAFF_GENERATIONS), staff_id, generation)
        return generation
