"""SQLite table of message translations (gateway/store/translations.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from gateway.models import Translation, TranslationOrigin
from gateway.store.encoding import from_us, us
from gateway.store.sqlite.base import SqliteFeature

_COLUMNS = "tenant_id, message_id, language, origin, subject, body, provider, reason, at"


class SqliteTranslations(SqliteFeature):
    """:class:`gateway.store.translations.TranslationStore` on the store's handle."""

    SCHEMA: ClassVar[str] = """
CREATE TABLE IF NOT EXISTS translations (
    tenant_id TEXT NOT NULL, message_id TEXT NOT NULL, language TEXT NOT NULL,
    origin TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL,
    provider TEXT, reason TEXT, at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, message_id, language)
) WITHOUT ROWID
"""

    async def add(self, rows: Sequence[Translation]) -> list[Translation]:
        if not rows:
            return []
        async with self._db.write() as db:
            await db.executemany(
                f"INSERT OR IGNORE INTO translations ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        r.tenant_id,
                        r.message_id,
                        r.language,
                        r.origin.value,
                        r.subject,
                        r.body,
                        r.provider,
                        r.reason,
                        us(r.at),
                    )
                    for r in rows
                ],
            )
        stored: dict[tuple[str, str], dict[str, Translation]] = {}
        out = []
        for row in rows:
            key = (row.tenant_id, row.message_id)
            if key not in stored:
                stored[key] = await self.of_message(*key)
            out.append(stored[key].get(row.language, row))
        return out

    async def of_message(self, tenant_id: str, message_id: str) -> dict[str, Translation]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM translations WHERE tenant_id = ? AND message_id = ?",
                (tenant_id, message_id),
            )
        return {
            r[2]: Translation(
                tenant_id=r[0],
                message_id=r[1],
                language=r[2],
                origin=TranslationOrigin(r[3]),
                subject=r[4],
                body=r[5],
                provider=r[6],
                reason=r[7],
                at=from_us(r[8]),
            )
            for r in rows
        }
