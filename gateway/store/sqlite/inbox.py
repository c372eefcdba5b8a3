"""The in-app inbox in the SQLite backend (the ``InboxStore`` port): a guardian's
in-app deliveries joined with their messages, and reads (the ``reads`` table; a new
read enters the webhook feed by a trigger in ``webhooks.py``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, ClassVar

from gateway.constants import SUPPRESSED_CHANNEL
from gateway.models import Category, DeliveryStatus, InboxItem
from gateway.store import SendOutcome
from gateway.store.encoding import from_us, from_us_opt, us
from gateway.store.sqlite.base import SqliteFeature
from gateway.store.sqlite.deliveries import apply_moves

_NOT_IN_INBOX = (DeliveryStatus.suppressed.value, DeliveryStatus.cancelled.value)
_INBOX_QUERY = """
SELECT m.id, m.subject, m.body, m.category, m.sender_name, d.child_ids, d.context,
       d.status, m.created_at, r.at, d.language
FROM deliveries AS d
JOIN messages AS m ON m.id = d.message_id AND m.tenant_id = d.tenant_id
LEFT JOIN reads AS r
    ON r.tenant_id = d.tenant_id AND r.message_id = d.message_id AND r.person_id = d.recipient_id
WHERE d.tenant_id = ? AND d.recipient_id = ? AND d.channel = 'inapp'
  AND d.status NOT IN (?, ?) AND (d.not_before IS NULL OR d.not_before <= ?)
"""


def _inbox_item(row: Any) -> InboxItem:
    return InboxItem.model_construct(
        message_id=row[0],
        subject=row[1],
        body=row[2],
        category=Category(row[3]),
        sender_name=row[4],
        child_ids=json.loads(row[5]),
        context=json.loads(row[6]),
        status=DeliveryStatus(row[7]),
        created_at=from_us(row[8]),
        read_at=from_us_opt(row[9]),
        language=row[10],
    )


class SqliteInbox(SqliteFeature):
    """A guardian's inbox, one item of it, and marking a message read."""

    SCHEMA: ClassVar[str] = """
CREATE TABLE IF NOT EXISTS reads (
    tenant_id TEXT NOT NULL, message_id TEXT NOT NULL, person_id TEXT NOT NULL,
    at INTEGER NOT NULL, via TEXT NOT NULL,
    PRIMARY KEY (tenant_id, message_id, person_id)
) WITHOUT ROWID;
"""

    async def list_inbox(
        self,
        tenant_id: str,
        guardian_id: str,
        *,
        limit: int = 50,
        before: datetime | None = None,
        before_id: str | None = None,
        now: datetime | None = None,
    ) -> list[InboxItem]:
        params: list[Any] = [tenant_id, guardian_id, *_NOT_IN_INBOX, us(now or datetime.now(UTC))]
        query = _INBOX_QUERY
        if before is not None and before_id is not None:
            query += " AND (m.created_at < ? OR (m.created_at = ? AND m.id < ?))"
            params.extend((us(before), us(before), before_id))
        elif before is not None:
            query += " AND m.created_at < ?"
            params.append(us(before))
        query += " ORDER BY m.created_at DESC, m.id DESC LIMIT ?"
        params.append(max(0, limit))
        async with self._db.read() as db:
            rows = await db.execute_fetchall(query, params)
        return [_inbox_item(row) for row in rows]

    async def inbox_item(
        self, tenant_id: str, guardian_id: str, message_id: str, *, now: datetime | None = None
    ) -> InboxItem | None:
        params = (
            tenant_id,
            guardian_id,
            *_NOT_IN_INBOX,
            us(now or datetime.now(UTC)),
            message_id,
        )
        async with self._db.read() as db:
            rows = list(await db.execute_fetchall(_INBOX_QUERY + " AND d.message_id = ?", params))
        return _inbox_item(rows[0]) if rows else None

    async def mark_read(
        self, tenant_id: str, guardian_id: str, message_id: str, at: datetime, via: str
    ) -> bool:
        async with self._db.write() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT id, channel FROM deliveries WHERE tenant_id = ? AND message_id = ? "
                    "AND recipient_id = ? AND channel != ? AND status NOT IN (?, ?)",
                    (tenant_id, message_id, guardian_id, SUPPRESSED_CHANNEL, *_NOT_IN_INBOX),
                )
            )
            if not rows:
                return False
            await db.execute(
                "INSERT OR IGNORE INTO reads (tenant_id, message_id, person_id, at, via) "
                "VALUES (?, ?, ?, ?, ?)",
                (tenant_id, message_id, guardian_id, us(at), via),
            )
            moves = [
                SendOutcome("", row[0], DeliveryStatus.read, at, detail=via)
                for row in rows
                if row[1] == "inapp"
            ]
            if moves:
                await apply_moves(db, moves)
        return True
