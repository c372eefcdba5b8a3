"""Rate limits in the SQLite backend: in-process, since the embedded store serves one
process. The same GCRA as the Redis script (see redis_lua.ACQUIRE_RATE)."""

from __future__ import annotations

from datetime import datetime

from gateway.store.sqlite_base import SqliteParts, ts


class RateLimitMixin(SqliteParts):
    """``acquire_rate`` of :class:`gateway.store.Store` for the embedded backend."""

    async def acquire_rate(
        self,
        key: str,
        rate_per_second: float,
        burst: int,
        now: datetime,
        *,
        max_wait: float | None = None,
    ) -> float:
        # key -> theoretical arrival time of the next slot (µs); created on first use
        tats: dict[str, int] = self.__dict__.setdefault("_rate_tats", {})
        stamp = ts(now)
        interval = max(1, round(1e6 / rate_per_second))
        tat = max(tats.get(key, 0), stamp)
        wait = max(0, tat - stamp - (max(1, burst) - 1) * interval)
        if max_wait is not None and wait > max_wait * 1e6:
            return wait / 1e6
        tats[key] = tat + interval
        return wait / 1e6
