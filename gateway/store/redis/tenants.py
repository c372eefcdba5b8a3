"""Tenants in the Redis backend: ``P:{tenants}:all`` (id -> the tenant as JSON) and
``P:{tenants}:keys`` (the first API key's hash -> tenant), both in one slot so creating a
tenant is one script; a tenant's scopes are the field ``scopes`` of ``P:{t}:settings``."""

from __future__ import annotations

import json
from collections.abc import Sequence

from gateway.constants import DEFAULT_SCOPES, SCOPE_PROTECTED
from gateway.errors import Conflict
from gateway.models import ApiKey, Tenant, first_api_key
from gateway.store.encoding import dumps, from_us, us
from gateway.store.redis import keys as K
from gateway.store.redis import scripts as lua
from gateway.store.redis.api_keys import RedisApiKeys
from gateway.store.redis.base import RedisFeature, RedisHandle
from gateway.store.redis.scripts import Lua

_CREATE_TENANT = Lua(lua.CREATE_TENANT)


def _tenant_doc(t: Tenant) -> str:
    return dumps(
        {
            "id": t.id,
            "name": t.name,
            "api_key_hash": t.api_key_hash,
            "webhook_secret": t.webhook_secret,
            "created_at": us(t.created_at),
        }
    )


def _tenant(doc: str) -> Tenant:
    d = json.loads(doc)
    d["created_at"] = from_us(d["created_at"])
    return Tenant.model_construct(**d)


class RedisTenants(RedisFeature):
    """:class:`gateway.store.ports.TenantStore` on Redis; a new tenant's first key goes
    through the API-key feature."""

    SCRIPTS = (_CREATE_TENANT,)

    def __init__(self, db: RedisHandle, keys: RedisApiKeys) -> None:
        super().__init__(db)
        self._keys = keys

    async def create_tenant(self, tenant: Tenant, first_key: ApiKey | None = None) -> None:
        created = await self._db.eval(
            self._redis,
            _CREATE_TENANT,
            [self._db.g(K.TENANTS_TAG, K.TENANTS), self._db.g(K.TENANTS_TAG, K.TENANT_BY_KEY)],
            [tenant.id, tenant.api_key_hash, _tenant_doc(tenant)],
        )
        if not created:
            raise Conflict("a tenant with this id or key exists already")
        # A crash between the two leaves the key without its row: the next open() adds it.
        await self._keys.add_api_key(first_key or first_api_key(tenant))

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        doc = await self._redis.hget(self._db.g(K.TENANTS_TAG, K.TENANTS), tenant_id)
        return None if doc is None else _tenant(doc)

    async def list_tenants(self) -> list[Tenant]:
        docs = await self._redis.hgetall(self._db.g(K.TENANTS_TAG, K.TENANTS))
        return [_tenant(docs[k]) for k in sorted(docs)]

    async def get_tenant_scopes(self, tenant_id: str) -> list[str]:
        doc = await self._redis.hget(self._db.t(tenant_id, K.SETTINGS), "scopes")
        if doc is None:
            return list(DEFAULT_SCOPES)
        scopes: list[str] = json.loads(doc)
        return scopes

    async def set_tenant_scopes(self, tenant_id: str, scopes: Sequence[str]) -> None:
        await self._redis.hset(
            self._db.t(tenant_id, K.SETTINGS), "scopes", dumps(sorted(set(scopes)))
        )

    async def migrate_api_keys(self) -> None:
        """Give every tenant's original key its row, once (idempotent, any process)."""
        tenants = await self.list_tenants()
        if not tenants:
            return
        known = await self._keys.known_hashes([t.api_key_hash for t in tenants])
        for tenant, found in zip(tenants, known, strict=True):
            if not found:
                legacy = await self.get_tenant_scopes(tenant.id)
                await self._keys.insert(first_api_key(tenant, protected=SCOPE_PROTECTED in legacy))
