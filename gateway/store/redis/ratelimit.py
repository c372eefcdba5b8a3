"""Rate limits in the Redis backend: GCRA in one script (lua/acquire_rate.lua) on the
key ``P:rl:<key>``, shared by every process (see Store.acquire_rate).

A composed feature: :class:`RateLimits` is built with the handle (redis/base.py)."""

from __future__ import annotations

from datetime import datetime

from gateway.store.encoding import us
from gateway.store.redis import keys as K
from gateway.store.redis.base import RedisFeature
from gateway.store.redis.scripts import Lua, read

# KEYS[1] the limit's key. ARGV: now_us interval_us burst max_wait_us (-1: none)
# Returns the µs to wait for the slot it took; a wait above max_wait takes nothing.
ACQUIRE_RATE = Lua(read("acquire_rate"))


class RateLimits(RedisFeature):
    """:class:`gateway.store.ports.RateLimiter` on Redis."""

    SCRIPTS = (ACQUIRE_RATE,)

    async def acquire_rate(
        self,
        key: str,
        rate_per_second: float,
        burst: int,
        now: datetime,
        *,
        max_wait: float | None = None,
    ) -> float:
        interval = max(1, round(1e6 / rate_per_second))
        wait = await self._db.eval(
            self._redis,
            ACQUIRE_RATE,
            [self._db.g(K.RATE_LIMIT, key)],
            [us(now), interval, max(1, burst), -1 if max_wait is None else round(max_wait * 1e6)],
        )
        return float(wait) / 1e6
