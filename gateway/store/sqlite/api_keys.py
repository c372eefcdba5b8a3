"""SQLite table and queries of tenant API keys (several per tenant, each with scopes).

Only the sha256 of a key is stored. A tenant made before keys had ids and scopes
has just ``tenants.api_key_hash``; opening the store gives that key its row
(``migrate_api_keys``), with every scope but ``protected`` unless the tenant's old
scopes had it, so old keys keep working exactly as before.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any, ClassVar

import aiosqlite

from gateway.constants import SCOPE_PROTECTED
from gateway.errors import Conflict
from gateway.models import ApiKey, Tenant, first_api_key
from gateway.store.encoding import dumps, from_us, from_us_opt, us, us_opt
from gateway.store.sqlite.base import SqliteFeature

_COLUMNS = "id, tenant_id, key_hash, name, scopes, created_at, expires_at, revoked_at"


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row[0],
        tenant_id=row[1],
        key_hash=row[2],
        name=row[3],
        scopes=json.loads(row[4]),
        created_at=from_us(row[5]),
        expires_at=from_us_opt(row[6]),
        revoked_at=from_us_opt(row[7]),
    )


async def insert_api_key(db: aiosqlite.Connection, key: ApiKey) -> None:
    """Insert a key row inside the caller's write transaction; Conflict if it exists."""
    try:
        await db.execute(
            f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key.id,
                key.tenant_id,
                key.key_hash,
                key.name,
                dumps(sorted(key.scopes)),
                us(key.created_at),
                us_opt(key.expires_at),
                us_opt(key.revoked_at),
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise Conflict("an API key with this id or key exists already") from exc


async def migrate_api_keys(db: aiosqlite.Connection) -> None:
    """Give every tenant's original key (``tenants.api_key_hash``) its key row, once."""
    rows = await db.execute_fetchall(
        "SELECT t.id, t.name, t.api_key_hash, t.webhook_secret, t.created_at, s.scopes "
        "FROM tenants t LEFT JOIN tenant_scopes s ON s.tenant_id = t.id "
        "WHERE NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.key_hash = t.api_key_hash)"
    )
    for row in rows:
        tenant = Tenant(
            id=row[0],
            name=row[1],
            api_key_hash=row[2],
            webhook_secret=row[3],
            created_at=from_us(row[4]),
        )
        legacy_scopes = json.loads(row[5]) if row[5] else []
        await insert_api_key(db, first_api_key(tenant, protected=SCOPE_PROTECTED in legacy_scopes))


class SqliteApiKeys(SqliteFeature):
    """The API-key part of :class:`gateway.store.Store` on SQLite."""

    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER
    );
    CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant_id, created_at)
    """

    async def add_api_key(self, key: ApiKey) -> None:
        async with self._db.write() as db:
            await insert_api_key(db, key)

    async def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,)
                )
            )
        return _key(rows[0]) if rows else None

    async def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id",
                (tenant_id,),
            )
        return [_key(row) for row in rows]

    async def revoke_api_key(self, tenant_id: str, key_id: str, at: datetime) -> ApiKey | None:
        async with self._db.write() as db:
            await db.execute(
                "UPDATE api_keys SET revoked_at = ? "
                "WHERE tenant_id = ? AND id = ? AND revoked_at IS NULL",
                (us(at), tenant_id, key_id),
            )
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_COLUMNS} FROM api_keys WHERE tenant_id = ? AND id = ?",
                    (tenant_id, key_id),
                )
            )
        return _key(rows[0]) if rows else None
