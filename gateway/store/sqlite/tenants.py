"""Tenants and their scopes in the SQLite backend (the ``TenantStore`` port)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, ClassVar

from gateway.constants import DEFAULT_SCOPES
from gateway.errors import Conflict
from gateway.models import ApiKey, Tenant, first_api_key
from gateway.store.encoding import dumps, from_us, us
from gateway.store.sqlite.api_keys import insert_api_key
from gateway.store.sqlite.base import SqliteFeature


def _tenant(row: Any) -> Tenant:
    return Tenant(
        id=row[0],
        name=row[1],
        api_key_hash=row[2],
        webhook_secret=row[3],
        created_at=from_us(row[4]),
    )


class SqliteTenants(SqliteFeature):
    """Tenants (with the first API key each is made with) and their scopes."""

    SCHEMA: ClassVar[str] = """
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    api_key_hash TEXT NOT NULL UNIQUE,
    webhook_secret TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tenant_scopes (
    tenant_id TEXT PRIMARY KEY, scopes TEXT NOT NULL
) WITHOUT ROWID
"""

    async def create_tenant(self, tenant: Tenant, first_key: ApiKey | None = None) -> None:
        async with self._db.write() as db:
            try:
                await db.execute(
                    "INSERT INTO tenants (id, name, api_key_hash, webhook_secret, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        tenant.id,
                        tenant.name,
                        tenant.api_key_hash,
                        tenant.webhook_secret,
                        us(tenant.created_at),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict("a tenant with this id or key exists already") from exc
            await insert_api_key(db, first_key or first_api_key(tenant))

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return await self._one_tenant("id", tenant_id)

    async def _one_tenant(self, column: str, value: str) -> Tenant | None:
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT id, name, api_key_hash, webhook_secret, created_at FROM tenants "
                    f"WHERE {column} = ?",
                    (value,),
                )
            )
        return _tenant(rows[0]) if rows else None

    async def list_tenants(self) -> list[Tenant]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT id, name, api_key_hash, webhook_secret, created_at FROM tenants ORDER BY id"
            )
        return [_tenant(row) for row in rows]

    async def get_tenant_scopes(self, tenant_id: str) -> list[str]:
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT scopes FROM tenant_scopes WHERE tenant_id = ?", (tenant_id,)
                )
            )
        if not rows:
            return list(DEFAULT_SCOPES)
        scopes: list[str] = json.loads(rows[0][0])
        return scopes

    async def set_tenant_scopes(self, tenant_id: str, scopes: Sequence[str]) -> None:
        async with self._db.write() as db:
            await db.execute(
                "INSERT OR REPLACE INTO tenant_scopes (tenant_id, scopes) VALUES (?, ?)",
                (tenant_id, dumps(sorted(set(scopes)))),
            )
