"""The scale-out store backend (Redis, Redis Cluster); see :mod:`gateway.store.redis.store`."""

from gateway.store.redis.store import DEFAULT_RETENTION_DAYS, RedisStore

__all__ = ["DEFAULT_RETENTION_DAYS", "RedisStore"]
