"""Rate limits in the Redis backend: GCRA in one script (lua/acquire_rate.lua) on the
key ``P:rl:<key>``, shared by every process (see Store.acquire_rate).

A composed feature: :class:`RateLimits` gets the client and its key's name by
constructor injection and knows nothing else of the store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from gateway.store.encoding import us
from gateway.store.redis.base import Lua
from gateway.store.redis.scripts import read

# KEYS[1] the limit's key. ARGV: now_us interval_us burst max_wait_us (-1: none)
# Returns the µs to wait for the slot it took; a wait above max_wait takes nothing.
ACQUIRE_RATE = Lua(read("acquire_rate"))


class RateLimits:
    """``acquire_rate`` of :class:`gateway.store.Store` on Redis."""

    def __init__(self, client: Callable[[], Any], key: Callable[[str], str]) -> None:
        self._client = client  # the open client (raises StoreError when closed)
        self._key = key  # limit key -> its Redis key

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
        wait = await self._client().execute_command(
            "EVALSHA",
            ACQUIRE_RATE.sha,
            1,
            self._key(key),
            us(now),
            interval,
            max(1, burst),
            -1 if max_wait is None else round(max_wait * 1e6),
        )
        return float(wait) / 1e6
