"""Redis keys and queries of tenant API keys (several per tenant, each with scopes).

Keys (all in the ``{tenants}`` hash tag, so one script may touch them together):

* ``P:{tenants}:apikeys`` — hash: sha256 of a key -> the key's JSON (never the key);
* ``P:{tenants}:apikey-ids`` — hash: key id -> sha256;
* ``P:{tenants}:apikey-revoked`` — hash: key id -> revocation time (µs), set once;
* ``P:{tenants}:tkeys:<tenant>`` — set of the tenant's key ids.

A tenant made before keys had ids and scopes has only its hash in
``P:{tenants}:keys``; ``open()`` gives that key its row
(:meth:`~gateway.store.redis.tenants.RedisTenants.migrate_api_keys`) with every scope
but ``protected`` unless the tenant's old scopes had it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from gateway.errors import Conflict
from gateway.models import ApiKey
from gateway.store.encoding import dumps, from_us, from_us_opt, us, us_opt
from gateway.store.redis import keys as K
from gateway.store.redis.base import RedisFeature
from gateway.store.redis.scripts import Lua, read

# KEYS[1] docs by hash, KEYS[2] hash by id, KEYS[3] the tenant's id set. ARGV: hash id doc
_ADD_KEY = Lua(read("api_keys_add_key"))


def _doc(key: ApiKey) -> str:
    return dumps(
        {
            "id": key.id,
            "tenant_id": key.tenant_id,
            "key_hash": key.key_hash,
            "name": key.name,
            "scopes": sorted(key.scopes),
            "created_at": us(key.created_at),
            "expires_at": us_opt(key.expires_at),
        }
    )


def _key(doc: str, revoked: str | None) -> ApiKey:
    d = json.loads(doc)
    return ApiKey(
        id=d["id"],
        tenant_id=d["tenant_id"],
        key_hash=d["key_hash"],
        name=d["name"],
        scopes=d["scopes"],
        created_at=from_us(d["created_at"]),
        expires_at=from_us_opt(d["expires_at"]),
        revoked_at=from_us_opt(revoked),
    )


class RedisApiKeys(RedisFeature):
    """:class:`gateway.store.ports.KeyStore` on Redis."""

    SCRIPTS = (_ADD_KEY,)

    def _kk(self, *parts: str) -> str:
        return self._db.g(K.TENANTS_TAG, *parts)

    async def insert(self, key: ApiKey) -> bool:
        """Store a key's row; False (nothing written) if its id or hash is taken."""
        added = await self._db.eval(
            self._redis,
            _ADD_KEY,
            [self._kk(K.API_KEYS), self._kk(K.API_KEY_IDS), self._kk(K.TENANT_KEYS, key.tenant_id)],
            [key.key_hash, key.id, _doc(key)],
        )
        return bool(added)

    async def known_hashes(self, key_hashes: Sequence[str]) -> list[bool]:
        """Whether each of these key hashes has its row."""
        found = await self._redis.hmget(self._kk(K.API_KEYS), list(key_hashes))
        return [doc is not None for doc in found]

    async def add_api_key(self, key: ApiKey) -> None:
        if not await self.insert(key):
            raise Conflict("an API key with this id or key exists already")

    async def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        doc = await self._redis.hget(self._kk(K.API_KEYS), key_hash)
        if doc is None:
            return None
        key_id = json.loads(doc)["id"]
        return _key(doc, await self._redis.hget(self._kk(K.API_KEY_REVOKED), key_id))

    async def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        ids = sorted(await self._redis.smembers(self._kk(K.TENANT_KEYS, tenant_id)))
        if not ids:
            return []
        hashes = await self._redis.hmget(self._kk(K.API_KEY_IDS), ids)
        docs = await self._redis.hmget(self._kk(K.API_KEYS), hashes)
        revoked = await self._redis.hmget(self._kk(K.API_KEY_REVOKED), ids)
        keys = [_key(doc, r) for doc, r in zip(docs, revoked, strict=True) if doc is not None]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def revoke_api_key(self, tenant_id: str, key_id: str, at: datetime) -> ApiKey | None:
        if not await self._redis.sismember(self._kk(K.TENANT_KEYS, tenant_id), key_id):
            return None
        # Key ids never move between tenants, so checking first and setting after is safe.
        await self._redis.hsetnx(self._kk(K.API_KEY_REVOKED), key_id, us(at))
        key_hash = await self._redis.hget(self._kk(K.API_KEY_IDS), key_id)
        return await self.api_key_by_hash(key_hash)
