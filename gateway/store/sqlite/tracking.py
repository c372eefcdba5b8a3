"""Delivery tracking in the SQLite backend (the ``ReachStore`` port): reached and reads.

``reached`` keeps the first moment each subject (a child, or a recipient) of a
message was reached; its ``seq`` orders rows as they were recorded. The
``reads`` table belongs to the inbox (``inbox.py``: ``mark_read`` writes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from gateway.constants import WEBHOOK_MESSAGE_REACHED
from gateway.models import Reached, ReadRecord, reached_data
from gateway.store.encoding import from_us, us
from gateway.store.sqlite.base import SqliteFeature, feed_change

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


class SqliteTracking(SqliteFeature):
    """Who of a message's subjects was reached, when and by whom; and who read it."""

    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS reached (
        seq INTEGER PRIMARY KEY,
        tenant_id TEXT NOT NULL, message_id TEXT NOT NULL,
        subject_kind TEXT NOT NULL, subject_id TEXT NOT NULL,
        by_id TEXT NOT NULL, at INTEGER NOT NULL,
        UNIQUE (tenant_id, message_id, subject_kind, subject_id)
    )
    """

    async def add_reached(self, rows: Sequence[Reached]) -> list[Reached]:
        new: list[Reached] = []
        async with self._db.write() as db:
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
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_REACHED_COLUMNS} FROM reached WHERE tenant_id = ? AND message_id = ? "
                "ORDER BY seq",
                (tenant_id, message_id),
            )
        return [_reached(row) for row in rows]

    async def list_reads(self, tenant_id: str, message_id: str) -> list[ReadRecord]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT person_id, at, via FROM reads WHERE tenant_id = ? AND message_id = ? "
                "ORDER BY at, person_id",
                (tenant_id, message_id),
            )
        return [ReadRecord(person_id=row[0], at=from_us(row[1]), via=row[2]) for row in rows]
