"""Opens the backend a store URL names.

Apart from the ports (gateway/store/__init__.py, ports.py) so that the backends, which
import the ports, are not imported back by them: the store package has no import loop.
"""

from __future__ import annotations

from gateway.store import Store


def open_store(
    url: str, *, retention_days: int | None = None, concurrency: int | None = None
) -> Store:
    """The backend for a store URL (``sqlite:///path`` or ``redis://...``; a Redis URL
    may carry ``?prefix=name`` to keep several deployments apart on one Redis).
    ``retention_days`` is how long Redis keeps per-message keys (default 396);
    ``concurrency`` (the dispatcher's) sizes the Redis connection pool above it."""
    if url.startswith("sqlite:"):
        from gateway.store.sqlite import SqliteStore

        path = url.removeprefix("sqlite:///").removeprefix("sqlite://") or "budbringer.db"
        return SqliteStore(path)
    if url.startswith(("redis:", "rediss:")):
        from gateway.store.redis import DEFAULT_RETENTION_DAYS, RedisStore

        return RedisStore(
            url,
            retention_days=retention_days if retention_days is not None else DEFAULT_RETENTION_DAYS,
            max_connections=max(128, (concurrency or 0) + 64),
        )
    raise ValueError("unsupported store URL scheme")
