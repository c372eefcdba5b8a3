"""Shared pieces of the Redis backend, so features can live in their own mixin modules.

``RedisStore`` (in ``redis.py``) owns the client. A feature adds its keys and
methods in a module of its own as a mixin subclassing :class:`RedisParts`.

Key layout (``P`` is the key prefix, ``bb`` unless configured):

* ``P:{<tenant>}:...`` — everything a tenant owns (directory, messages,
  deliveries, history, indexes, reads, replies, feature data). The hash tag
  keeps a tenant in one Cluster slot, so a tenant's multi-key scripts are legal.
* ``P:{q}:...`` — the work queue (streams, delayed sets, job hashes), one slot.
* ``P:{tenants}:...`` — tenants and their API key hashes.
* ``P:did:<id>``, ``P:pid:<hash>``, ``P:addr:<hash>``, ``P:rl:<key>``, ``P:active`` —
  single-key lookups without a tenant (delivery id -> tenant, provider id ->
  delivery, address -> latest tenant), rate limits, and the set of tenants with data.

Addresses and provider ids appear in key names only hashed. Times are integer
microseconds since the epoch, on the caller's clock.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, ParamSpec, TypeVar

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, RedisError

from gateway.errors import BudbringerError, StoreError
from gateway.store.mapping import map_public
from gateway.store.redis_lua import FED

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def us(value: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _US


def us_opt(value: datetime | None) -> int | None:
    return None if value is None else us(value)


def from_us(value: int | str) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


def from_us_opt(value: int | str | None) -> datetime | None:
    return None if value is None or value == "" else from_us(value)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def opt(value: object | None) -> str:
    """An optional script argument: "" for None, "+value" otherwise (see redis_lua)."""
    return "" if value is None else f"+{value}"


def digest(*parts: str) -> str:
    """A short stable hash for key names that would otherwise carry personal data."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


class Lua:
    """A script loaded once per connection pool and run by its SHA1."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def _mapped(fn: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
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
                # step of recording a change, see redis_webhooks) before the call returns.
                if store._fed and store._client is not None:
                    await store._mark_fed()
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
    # Tenants whose change feed got entries and are not marked pending yet -> the earliest
    # change time (us); filled by the EVALSHA response callback, emptied by _mark_fed.
    _fed: dict[str, int]

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
        return f"{self._prefix}:{{{tenant_id}}}:"

    def _t(self, tenant_id: str, *parts: str) -> str:
        return self._tp(tenant_id) + ":".join(parts)

    def _tk(self, tenant_id: str) -> Callable[..., str]:
        """``t = self._tk(tenant)``; ``t("persons")`` is the key ``P:{tenant}:persons``."""
        prefix = self._tp(tenant_id)

        def key(*parts: str) -> str:
            return prefix + ":".join(parts)

        return key

    def _g(self, *parts: str) -> str:
        """A global key (no hash tag: spread over the cluster)."""
        return f"{self._prefix}:" + ":".join(parts)

    @property
    def _qp(self) -> str:
        return f"{self._prefix}:{{q}}:"

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

    def _unwrap_fed(self, response: Any, **options: Any) -> Any:
        """The EVALSHA response callback: a tenant script that fed its change feed
        answers ``[FED, tenant, earliest change time, result]`` (redis_lua.tenant_script);
        note the tenant and give the caller the result."""
        if isinstance(response, list) and len(response) >= 3 and response[0] == FED:
            tenant, at = str(response[1]), int(response[2])
            known = self._fed.get(tenant)
            self._fed[tenant] = at if known is None else min(known, at)
            return response[3] if len(response) > 3 else None
        return response

    async def _mark_fed(self) -> None:
        """Mark the tenants in ``_fed`` pending for the fan-out (WebhookMixin)."""
        self._fed.clear()

    def _eval(self, target: Any, lua: Lua, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA on the client (awaitable) or queued on a pipeline. Through
        execute_command: a cluster pipeline blocks its ``evalsha`` method, yet routes the
        command by its keys (every script's keys share one hash tag)."""
        return target.execute_command("EVALSHA", lua.sha, len(keys), *keys, *args)
