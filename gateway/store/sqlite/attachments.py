"""Attachment metadata in the SQLite backend (gateway/store/attachments.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from gateway.models import Attachment
from gateway.store.attachments import UNKNOWN, USED
from gateway.store.encoding import from_us, from_us_opt, us
from gateway.store.sqlite.base import SqliteFeature, id_list

_COLUMNS = (
    "tenant_id, id, name, content_type, size, sha256, created_at, message_id, used_at, position"
)


def _row(row: Any) -> Attachment:
    return Attachment(
        tenant_id=row[0],
        id=row[1],
        name=row[2],
        content_type=row[3],
        size=row[4],
        sha256=row[5],
        created_at=from_us(row[6]),
        message_id=row[7],
        used_at=from_us_opt(row[8]),
        position=row[9],
    )


class SqliteAttachments(SqliteFeature):
    """:class:`gateway.store.attachments.AttachmentStore` on the SQLite store's handle."""

    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS attachments (
        tenant_id TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
        content_type TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
        created_at INTEGER NOT NULL, message_id TEXT, used_at INTEGER,
        position INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant_id, id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS attachments_by_message ON attachments (tenant_id, message_id);
    CREATE INDEX IF NOT EXISTS attachments_unused ON attachments (created_at)
        WHERE message_id IS NULL;
    CREATE INDEX IF NOT EXISTS attachments_used ON attachments (used_at)
        WHERE message_id IS NOT NULL
    """

    async def add(self, attachment: Attachment) -> None:
        a = attachment
        async with self._db.write() as db:
            await db.execute(
                f"INSERT OR IGNORE INTO attachments ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (a.tenant_id, a.id, a.name, a.content_type, a.size, a.sha256,
                 us(a.created_at), a.message_id, None if a.used_at is None else us(a.used_at),
                 a.position),
            )  # fmt: skip

    async def get(self, tenant_id: str, ids: list[str]) -> list[Attachment]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM attachments WHERE tenant_id = ? "
                "AND id IN (SELECT value FROM json_each(?))",
                (tenant_id, id_list(ids)),
            )
        return [_row(row) for row in rows]

    async def claim(
        self, tenant_id: str, ids: list[str], message_id: str, at: datetime
    ) -> dict[str, str]:
        if not ids:
            return {}
        async with self._db.write() as db:
            rows = await db.execute_fetchall(
                "SELECT id, message_id FROM attachments WHERE tenant_id = ? "
                "AND id IN (SELECT value FROM json_each(?))",
                (tenant_id, id_list(ids)),
            )
            owner = {row[0]: row[1] for row in rows}
            problems = {
                i: UNKNOWN if i not in owner else USED
                for i in ids
                if i not in owner or owner[i] not in (None, message_id)
            }
            if problems:
                return problems
            await db.executemany(
                "UPDATE attachments SET message_id = ?, used_at = ?, position = ? "
                "WHERE tenant_id = ? AND id = ? AND message_id IS NULL",
                [(message_id, us(at), n, tenant_id, i) for n, i in enumerate(ids)],
            )
        return {}

    async def for_message(self, tenant_id: str, message_id: str) -> list[Attachment]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM attachments WHERE tenant_id = ? AND message_id = ? "
                "ORDER BY position, id",
                (tenant_id, message_id),
            )
        return [_row(row) for row in rows]

    async def expired(
        self, used_before: datetime, unused_before: datetime, limit: int
    ) -> list[tuple[str, str]]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT tenant_id, id FROM attachments WHERE message_id IS NOT NULL "
                "AND used_at < ? UNION ALL SELECT tenant_id, id FROM attachments "
                "WHERE message_id IS NULL AND created_at < ? LIMIT ?",
                (us(used_before), us(unused_before), limit),
            )
        return [(row[0], row[1]) for row in rows]

    async def remove(self, pairs: list[tuple[str, str]]) -> None:
        if not pairs:
            return
        async with self._db.write() as db:
            await db.executemany("DELETE FROM attachments WHERE tenant_id = ? AND id = ?", pairs)
