"""Shared pieces of the Redis backend, so features can live in their own mixin modules.

``RedisStore`` (in ``redis/store.py``) owns the client. A feature adds its keys and
methods in a module of its own as a mixin subclassing :class:`RedisParts`.

The key layout is in :mod:`gateway.store.redis.keys`; times are integer microseconds since
the epoch (:mod:`gateway.store.encoding`), on the caller's clock.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, RedisError

from gateway.errors import BudbringerError, StoreError
from gateway.store.mapping import map_public
from gateway.store.redis import keys

if TYPE_CHECKING:
    from gateway.store.redis.feed import FeedMarks

_P = ParamSpec("_P")
_R = TypeVar("_R")


def opt(value: object | None) -> str:
    """An optional script argument: "" for None, "+value" otherwise (see redis/scripts.py)."""
    return "" if value is None else f"+{value}"


def digest(*parts: str) -> str:
    """A short stable hash for key names that would otherwise carry personal data."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


class Lua:
    """A script loaded once per connection pool and run by its SHA1."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def _mapped(
    fn: Callable[_P, Coroutine[Any, Any, _R]],
) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """Map Redis errors into the exception tree; reload scripts once if Redis lost them
    (a restart or failover) and run the call again (nothing ran: NOSCRIPT is checked
    before a script starts)."""

    @functools.wraps(fn)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        store: Any = args[0]
        try:
            try:
                return await fn(*args, **kwargs)
            except NoScriptError:
                await store._load_scripts()
                return await fn(*args, **kwargs)
            finally:
                # A tenant script fed its change feed: mark the tenant pending (the second
                # step of recording a change, see redis/webhooks.py) before the call returns.
                if store._feed.pending and store._client is not None:
                    await store._feed.flush(store._client)
        except BudbringerError:
            raise
        except RedisError as exc:
            raise StoreError("the Redis store failed") from exc

    return wrapper


class RedisParts:
    """Base of RedisStore's feature mixins: the client, key names and scripts."""

    # Scripts a mixin uses; all are loaded in open().
    SCRIPTS: ClassVar[Sequence[Lua]] = ()

    _client: Redis | RedisCluster | None
    _prefix: str
    _ttl: int  # seconds that per-message keys live (the retention)
    # The tenants whose change feed got entries, to be marked pending (redis/feed.py).
    _feed: FeedMarks

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every public coroutine method of the backend maps Redis errors to StoreError.
        super().__init_subclass__(**kwargs)
        map_public(cls, _mapped)

    @property
    def _redis(self) -> Any:
        # redis-py types every reply as bytes | str whatever decode_responses says; ours
        # decodes (str), so the client is used untyped and replies are typed where read.
        if self._client is None:
            raise StoreError("the store is not open")
        return self._client

    # ------------------------------------------------------------------ key names

    def _tp(self, tenant_id: str) -> str:
        """The key prefix of a tenant (hash-tagged)."""
        return keys.tenant_prefix(self._prefix, tenant_id)

    def _t(self, tenant_id: str, *parts: str) -> str:
        return keys.tenant_key(self._prefix, tenant_id, *parts)

    def _tk(self, tenant_id: str) -> Callable[..., str]:
        """``t = self._tk(tenant)``; ``t("persons")`` is the key ``P:{tenant}:persons``."""
        return keys.tenant_keys(self._prefix, tenant_id)

    def _g(self, *parts: str) -> str:
        """A global key (no hash tag: spread over the cluster)."""
        return keys.global_key(self._prefix, *parts)

    @property
    def _qp(self) -> str:
        return keys.queue_prefix(self._prefix)

    # ------------------------------------------------------------------ scripts

    @classmethod
    def all_scripts(cls) -> list[Lua]:
        seen: dict[str, Lua] = {}
        for klass in reversed(cls.__mro__):
            for lua in klass.__dict__.get("SCRIPTS", ()):
                seen[lua.sha] = lua
        return list(seen.values())

    async def _load_scripts(self) -> None:
        if isinstance(self._client, RedisCluster):
            # SCRIPT LOAD goes to every primary; a cluster pipeline needs keys to route.
            for lua in self.all_scripts():
                await self._redis.script_load(lua.source)
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for lua in self.all_scripts():
                pipe.script_load(lua.source)
            await pipe.execute()

    def _eval(self, target: Any, lua: Lua, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA on the client (awaitable) or queued on a pipeline. Through
        execute_command: a cluster pipeline blocks its ``evalsha`` method, yet routes the
        command by its keys (every script's keys share one hash tag)."""
        return target.execute_command("EVALSHA", lua.sha, len(keys), *keys, *args)
