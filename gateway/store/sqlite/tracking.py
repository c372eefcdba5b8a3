"""SQLite tables and queries of delivery tracking: reached, reads, escalation, key scopes.

``reached`` keeps the first moment each subject (a child, or a recipient) of a
message was reached; its ``seq`` orders rows as they were recorded. The
``reads`` table itself belongs to the core store (``mark_read`` writes it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from gateway.constants import DEFAULT_SCOPES, WEBHOOK_MESSAGE_REACHED
from gateway.models import Delivery, Protection, Reached, ReadRecord, reached_data
from gateway.store.encoding import dumps, from_us, us
from gateway.store.sqlite.base import SqliteParts, feed_change, id_list

_REACHED_COLUMNS = "tenant_id, message_id, subject_kind, subject_id, by_id, at"


def _reached(row: Any) -> Reached:
    return Reached(
        tenant_id=row[0],
        message_id=row[1],
        subject_kind=row[2],
        subject_id=row[3],
        by_id=row[4],
        at=from_us(row[5]),
    )


class TrackingMixin(SqliteParts):
    """The tracking part of :class:`gateway.store.Store` on SQLite."""

    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS reached (
        seq INTEGER PRIMARY KEY,
        tenant_id TEXT NOT NULL, message_id TEXT NOT NULL,
        subject_kind TEXT NOT NULL, subject_id TEXT NOT NULL,
        by_id TEXT NOT NULL, at INTEGER NOT NULL,
        UNIQUE (tenant_id, message_id, subject_kind, subject_id)
    );
    CREATE TABLE IF NOT EXISTS escalation_overrides (
        tenant_id TEXT PRIMARY KEY, data TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS tenant_scopes (
        tenant_id TEXT PRIMARY KEY, scopes TEXT NOT NULL
    ) WITHOUT ROWID
    """

    if TYPE_CHECKING:  # provided by SqliteStore

        async def get_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, Delivery]: ...

    async def add_reached(self, rows: Sequence[Reached]) -> list[Reached]:
        new: list[Reached] = []
        async with self._write() as db:
            for row in rows:
                cursor = await db.execute(
                    f"INSERT OR IGNORE INTO reached ({_REACHED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        row.tenant_id,
                        row.message_id,
                        row.subject_kind,
                        row.subject_id,
                        row.by_id,
                        us(row.at),
                    ),
                )
                if cursor.rowcount == 1:
                    new.append(row)
                    await feed_change(
                        db, row.tenant_id, WEBHOOK_MESSAGE_REACHED, reached_data(row), row.at
                    )
        return new

    async def list_reached(self, tenant_id: str, message_id: str) -> list[Reached]:
        async with self._read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_REACHED_COLUMNS} FROM reached WHERE tenant_id = ? AND message_id = ? "
                "ORDER BY seq",
                (tenant_id, message_id),
            )
        return [_reached(row) for row in rows]

    async def list_reads(self, tenant_id: str, message_id: str) -> list[ReadRecord]:
        async with self._read() as db:
            rows = await db.execute_fetchall(
                "SELECT person_id, at, via FROM reads WHERE tenant_id = ? AND message_id = ? "
                "ORDER BY at, person_id",
                (tenant_id, message_id),
            )
        return [ReadRecord(person_id=row[0], at=from_us(row[1]), via=row[2]) for row in rows]

    async def recipient_deliveries(
        self, tenant_id: str, message_id: str, recipient_id: str
    ) -> list[Delivery]:
        async with self._read() as db:
            rows = await db.execute_fetchall(
                "SELECT id FROM deliveries WHERE tenant_id = ? AND recipient_id = ? "
                "AND message_id = ? ORDER BY channel, target",
                (tenant_id, recipient_id, message_id),
            )
        ids = [row[0] for row in rows]
        found = await self.get_deliveries(ids)
        return [found[i] for i in ids if i in found]

    async def get_escalation_override(self, tenant_id: str) -> dict[str, Any] | None:
        async with self._read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT data FROM escalation_overrides WHERE tenant_id = ?", (tenant_id,)
                )
            )
        if not rows:
            return None
        data: dict[str, Any] = json.loads(rows[0][0])
        return data

    async def set_escalation_override(
        self, tenant_id: str, override: dict[str, Any] | None
    ) -> None:
        async with self._write() as db:
            if override is None:
                await db.execute(
                    "DELETE FROM escalation_overrides WHERE tenant_id = ?", (tenant_id,)
                )
            else:
                await db.execute(
                    "INSERT OR REPLACE INTO escalation_overrides (tenant_id, data) VALUES (?, ?)",
                    (tenant_id, dumps(override)),
                )

    async def get_tenant_scopes(self, tenant_id: str) -> list[str]:
        async with self._read() as db:
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
        async with self._write() as db:
            await db.execute(
                "INSERT OR REPLACE INTO tenant_scopes (tenant_id, scopes) VALUES (?, ?)",
                (tenant_id, dumps(sorted(set(scopes)))),
            )

    async def protected_persons(self, tenant_id: str, person_ids: Sequence[str]) -> set[str]:
        if not person_ids:
            return set()
        async with self._read() as db:
            rows = await db.execute_fetchall(
                "SELECT id FROM persons WHERE tenant_id = ? "
                "AND id IN (SELECT value FROM json_each(?)) AND protection != ?",
                (tenant_id, id_list(set(person_ids)), Protection.none.value),
            )
        return {row[0] for row in rows}
