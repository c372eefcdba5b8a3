"""The handle every feature of the Redis backend is built with, and the features' base.

``RedisStore`` (in ``redis/store.py``) makes one :class:`RedisHandle` and builds each
feature with it: the client, key names (:mod:`gateway.store.redis.keys`), the scripts
and the retention; nothing else of the store. A feature subclasses
:class:`RedisFeature`, which registers its scripts with the handle and maps Redis
errors on every public coroutine (:mod:`gateway.store.mapping`), so no feature can
miss it. Times are integer microseconds since the epoch
(:mod:`gateway.store.encoding`), on the caller's clock.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ClassVar, ParamSpec, TypeVar

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, RedisError

from gateway.errors import BudbringerError, StoreError
from gateway.store.mapping import map_public
from gateway.store.redis import keys
from gateway.store.redis.feed import FeedMarks
from gateway.store.redis.scripts import Lua

_P = ParamSpec("_P")
_R = TypeVar("_R")


def opt(value: object | None) -> str:
    """An optional script argument: "" for None, "+value" otherwise (see redis/scripts.py)."""
    return "" if value is None else f"+{value}"


def digest(*parts: str) -> str:
    """A short stable hash for key names that would otherwise carry personal data."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


class RedisHandle:
    """The connection the features share. ``feed`` collects the tenants whose change feed
    a script fed (redis/feed.py); :meth:`settle` marks them before a store call returns."""

    def __init__(self, prefix: str, ttl: int, feed: FeedMarks) -> None:
        self.prefix = prefix
        self.ttl = ttl  # seconds that per-message keys live (the retention)
        self.feed = feed
        self.client: Redis | RedisCluster | None = None
        self._scripts: dict[str, Lua] = {}

    @property
    def redis(self) -> Any:
        # redis-py types every reply as bytes | str whatever decode_responses says; ours
        # decodes (str), so the client is used untyped and replies are typed where read.
        if self.client is None:
            raise StoreError("the store is not open")
        return self.client

    # ------------------------------------------------------------------ key names

    def tp(self, tenant_id: str) -> str:
        """The key prefix of a tenant (hash-tagged)."""
        return keys.tenant_prefix(self.prefix, tenant_id)

    def t(self, tenant_id: str, *parts: str) -> str:
        return keys.tenant_key(self.prefix, tenant_id, *parts)

    def tk(self, tenant_id: str) -> Callable[..., str]:
        """``t = db.tk(tenant)``; ``t("persons")`` is the key ``P:{tenant}:persons``."""
        return keys.tenant_keys(self.prefix, tenant_id)

    def g(self, *parts: str) -> str:
        """A global key (no hash tag: spread over the cluster)."""
        return keys.global_key(self.prefix, *parts)

    @property
    def qp(self) -> str:
        return keys.queue_prefix(self.prefix)

    def anchor(self, tenant_id: str) -> str:
        """``KEYS[1]`` of a tenant script that builds its keys from ``tp``: any key of the
        tenant's slot routes the call (on Cluster); the counts per status are used."""
        return keys.tenant_key(self.prefix, tenant_id, keys.STATS)

    @property
    def active(self) -> str:
        """``P:active``: the tenants that have messages, deliveries or replies (for the
        purge and the delivery stats); every feature that adds such data adds its tenant."""
        return keys.global_key(self.prefix, keys.ACTIVE)

    def q(self, *parts: str) -> str:
        """A key of the queue's slot: ``q(K.JOB, job_id)`` is ``P:{q}:j:<job id>``."""
        return keys.queue_key(self.prefix, *parts)

    # ------------------------------------------------------------------ scripts

    def add_scripts(self, scripts: Sequence[Lua]) -> None:
        """Scripts to load in :meth:`load_scripts` (each feature's, once)."""
        for lua in scripts:
            self._scripts[lua.sha] = lua

    async def load_scripts(self) -> None:
        if isinstance(self.client, RedisCluster):
            # SCRIPT LOAD goes to every primary; a cluster pipeline needs keys to route.
            for lua in self._scripts.values():
                await self.redis.script_load(lua.source)
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for lua in self._scripts.values():
                pipe.script_load(lua.source)
            await pipe.execute()

    def eval(self, target: Any, lua: Lua, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA on the client (awaitable) or queued on a pipeline. Through
        execute_command: a cluster pipeline blocks its ``evalsha`` method, yet routes the
        command by its keys (every script's keys share one hash tag)."""
        return target.execute_command("EVALSHA", lua.sha, len(keys), *keys, *args)

    async def settle(self) -> None:
        """A tenant script fed its change feed: mark the tenant pending (the second step
        of recording a change, see redis/webhooks.py)."""
        if self.feed.pending and self.client is not None:
            await self.feed.flush(self.client)


def _mapped(
    fn: Callable[_P, Coroutine[Any, Any, _R]],
) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """Map Redis errors into the exception tree; reload scripts once if Redis lost them
    (a restart or failover) and run the call again (nothing ran: NOSCRIPT is checked
    before a script starts); settle the feed marks before the call returns."""

    @functools.wraps(fn)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        feature: Any = args[0]
        db: RedisHandle = feature._db
        try:
            try:
                return await fn(*args, **kwargs)
            except NoScriptError:
                await db.load_scripts()
                return await fn(*args, **kwargs)
            finally:
                await db.settle()
        except BudbringerError:
            raise
        except RedisError as exc:
            raise StoreError("the Redis store failed") from exc

    return wrapper


class RedisFeature:
    """Base of a feature: built with the handle, its ``SCRIPTS`` loaded with the rest."""

    SCRIPTS: ClassVar[Sequence[Lua]] = ()

    def __init__(self, db: RedisHandle) -> None:
        self._db = db
        db.add_scripts(self.SCRIPTS)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every public coroutine method of a feature maps Redis errors to StoreError.
        super().__init_subclass__(**kwargs)
        map_public(cls, _mapped)

    @property
    def _redis(self) -> Any:
        return self._db.redis
