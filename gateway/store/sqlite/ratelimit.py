"""Rate limits in the SQLite backend: the same GCRA as the Redis script
(redis/lua/acquire_rate.lua), its state in the database so every process and store
instance on the file shares one limit, as the Protocol promises. Each call is one
short write transaction (read the key's theoretical arrival time, move it on).

A composed feature: :class:`SqliteRateLimits` gets the store's handle by
constructor injection and knows nothing else of the store."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from gateway.store.encoding import us
from gateway.store.sqlite.base import SqliteFeature


class SqliteRateLimits(SqliteFeature):
    """The ``RateLimiter`` port for the embedded backend."""

    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS rate_limits (
        key TEXT PRIMARY KEY,
        tat INTEGER NOT NULL  -- theoretical arrival time of the next slot (us)
    ) WITHOUT ROWID
    """

    async def acquire_rate(
        self,
        key: str,
        rate_per_second: float,
        burst: int,
        now: datetime,
        *,
        max_wait: float | None = None,
    ) -> float:
        stamp = us(now)
        interval = max(1, round(1e6 / rate_per_second))
        async with self._db.write() as db:
            rows = list(
                await db.execute_fetchall("SELECT tat FROM rate_limits WHERE key = ?", (key,))
            )
            tat = max(int(rows[0][0]) if rows else 0, stamp)
            wait = max(0, tat - stamp - (max(1, burst) - 1) * interval)
            if max_wait is None or wait <= max_wait * 1e6:
                await db.execute(
                    "INSERT INTO rate_limits (key, tat) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
                    (key, tat + interval),
                )
        return wait / 1e6
