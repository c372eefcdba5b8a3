"""Per-tenant policy overrides in the SQLite backend (the ``PolicyStore`` port): the
escalation settings and the absence settings a tenant changed, each one JSON document
(None: the deployment's defaults apply)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from gateway.store.encoding import dumps
from gateway.store.sqlite.base import SqliteFeature

# The table of each kind of override; both are (tenant_id, data) rows.
_TABLES = {"escalation": "escalation_overrides", "absence": "absence_settings"}


class SqlitePolicy(SqliteFeature):
    """Escalation and absence settings per tenant."""

    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS escalation_overrides (
        tenant_id TEXT PRIMARY KEY, data TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS absence_settings (
        tenant_id TEXT PRIMARY KEY, data TEXT NOT NULL
    ) WITHOUT ROWID
    """

    async def get_escalation_override(self, tenant_id: str) -> dict[str, Any] | None:
        return await self._get("escalation", tenant_id)

    async def set_escalation_override(
        self, tenant_id: str, override: dict[str, Any] | None
    ) -> None:
        await self._set("escalation", tenant_id, override)

    async def get_absence_settings(self, tenant_id: str) -> dict[str, Any] | None:
        return await self._get("absence", tenant_id)

    async def set_absence_settings(self, tenant_id: str, override: dict[str, Any] | None) -> None:
        await self._set("absence", tenant_id, override)

    async def _get(self, kind: str, tenant_id: str) -> dict[str, Any] | None:
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT data FROM {_TABLES[kind]} WHERE tenant_id = ?", (tenant_id,)
                )
            )
        if not rows:
            return None
        data: dict[str, Any] = json.loads(rows[0][0])
        return data

    async def _set(self, kind: str, tenant_id: str, override: dict[str, Any] | None) -> None:
        async with self._db.write() as db:
            if override is None:
                await db.execute(f"DELETE FROM {_TABLES[kind]} WHERE tenant_id = ?", (tenant_id,))
            else:
                await db.execute(
                    f"INSERT OR REPLACE INTO {_TABLES[kind]} (tenant_id, data) VALUES (?, ?)",
                    (tenant_id, dumps(override)),
                )
