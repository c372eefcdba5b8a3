"""Messages in the SQLite backend (the ``MessageStore`` port): one row per accepted
event, its audience as JSON; accepting queues the planning job in the same transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from gateway.models import Audience, Category, Job, Message, Urgency
from gateway.store.encoding import from_us, from_us_opt, us, us_opt
from gateway.store.sqlite.base import SqliteFeature, insert_jobs

_MESSAGE_COLUMNS = (
    "id, tenant_id, event_id, event_type, body_hash, category, subject, body, urgency, "
    "read_receipt, sender_id, sender_name, audience, created_at, planned_at"
)


def _message(row: Any) -> Message:
    return Message.model_construct(
        id=row[0],
        tenant_id=row[1],
        event_id=row[2],
        event_type=row[3],
        body_hash=row[4],
        category=Category(row[5]),
        subject=row[6],
        body=row[7],
        urgency=Urgency(row[8]),
        read_receipt=bool(row[9]),
        sender_id=row[10],
        sender_name=row[11],
        audience=Audience.model_validate_json(row[12]),
        created_at=from_us(row[13]),
        planned_at=from_us_opt(row[14]),
    )


class SqliteMessages(SqliteFeature):
    """Accepted messages: read by id or in pages, marked once planned."""

    SCHEMA: ClassVar[str] = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, event_id TEXT NOT NULL,
    event_type TEXT NOT NULL, body_hash TEXT NOT NULL, category TEXT NOT NULL,
    subject TEXT NOT NULL, body TEXT NOT NULL, urgency TEXT NOT NULL,
    read_receipt INTEGER NOT NULL, sender_id TEXT, sender_name TEXT,
    audience TEXT NOT NULL, created_at INTEGER NOT NULL, planned_at INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_tenant_created ON messages (tenant_id, created_at);
"""

    async def accept_message(self, message: Message, job: Job) -> Message:
        async with self._db.write() as db:
            cursor = await db.execute(
                f"INSERT OR IGNORE INTO messages ({_MESSAGE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message.id,
                    message.tenant_id,
                    message.event_id,
                    message.event_type,
                    message.body_hash,
                    message.category.value,
                    message.subject,
                    message.body,
                    message.urgency.value,
                    int(message.read_receipt),
                    message.sender_id,
                    message.sender_name,
                    message.audience.model_dump_json(),
                    us(message.created_at),
                    us_opt(message.planned_at),
                ),
            )
            if cursor.rowcount == 1:
                await insert_jobs(db, [job])
                return message
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message.id,)
                )
            )
        return _message(rows[0])

    async def get_message(self, tenant_id: str, message_id: str) -> Message | None:
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ? AND tenant_id = ?",
                    (message_id, tenant_id),
                )
            )
        return _message(rows[0]) if rows else None

    async def list_messages(
        self,
        tenant_id: str,
        *,
        limit: int = 50,
        before: datetime | None = None,
        before_id: str | None = None,
    ) -> list[Message]:
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE tenant_id = ?"
        args: list[Any] = [tenant_id]
        if before is not None and before_id is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            args.extend((us(before), us(before), before_id))
        elif before is not None:
            sql += " AND created_at < ?"
            args.append(us(before))
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(limit)
        async with self._db.read() as db:
            rows = list(await db.execute_fetchall(sql, args))
        return [_message(row) for row in rows]

    async def mark_planned(self, tenant_id: str, message_id: str, at: datetime) -> None:
        async with self._db.write() as db:
            await db.execute(
                "UPDATE messages SET planned_at = ? WHERE id = ? AND tenant_id = ?",
                (us(at), message_id, tenant_id),
            )
