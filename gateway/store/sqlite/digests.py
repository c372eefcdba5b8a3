"""SQLite part of the daily digest's entries (gateway/store/digests.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from gateway.store.digests import DigestEntry
from gateway.store.sqlite.base import SqliteFeature, id_list


class SqliteDigests(SqliteFeature):
    """:class:`gateway.store.digests.Digests` on the store's handle."""

    SCHEMA: ClassVar[str] = """
CREATE TABLE IF NOT EXISTS digest_entries (
    pos INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, digest_id TEXT NOT NULL,
    message_id TEXT NOT NULL, delivery_id TEXT NOT NULL,
    UNIQUE (tenant_id, digest_id, delivery_id)
)
"""

    async def add_digest_entries(self, entries: Sequence[DigestEntry]) -> None:
        if not entries:
            return
        async with self._db.write() as db:
            await db.executemany(
                "INSERT OR IGNORE INTO digest_entries "
                "(tenant_id, digest_id, message_id, delivery_id) VALUES (?, ?, ?, ?)",
                [(e.tenant_id, e.digest_id, e.message_id, e.delivery_id) for e in entries],
            )

    async def digest_entries(self, tenant_id: str, digest_id: str) -> list[DigestEntry]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT message_id, delivery_id FROM digest_entries "
                "WHERE tenant_id = ? AND digest_id = ? ORDER BY pos",
                (tenant_id, digest_id),
            )
        return [DigestEntry(tenant_id, digest_id, row[0], row[1]) for row in rows]

    async def drop_digest_entries(
        self, tenant_id: str, digest_id: str, delivery_ids: Sequence[str]
    ) -> None:
        async with self._db.write() as db:
            await db.execute(
                "DELETE FROM digest_entries WHERE tenant_id = ? AND digest_id = ? "
                "AND delivery_id IN (SELECT value FROM json_each(?))",
                (tenant_id, digest_id, id_list(delivery_ids)),
            )
