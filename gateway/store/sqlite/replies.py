"""Replies in the SQLite backend (the ``ReplyStore`` port). A new row enters the
webhook feed by a trigger (``webhooks.py``)."""

from __future__ import annotations

from typing import ClassVar

from gateway.models import Reply
from gateway.store.encoding import from_us, us
from gateway.store.sqlite.base import SqliteFeature


class SqliteReplies(SqliteFeature):
    """Replies received by SMS, e-mail or in the app, per message."""

    SCHEMA: ClassVar[str] = """
CREATE TABLE IF NOT EXISTS replies (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, channel TEXT NOT NULL,
    message_id TEXT, person_id TEXT, body TEXT NOT NULL, provider_id TEXT,
    received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS replies_by_message ON replies (tenant_id, message_id, received_at);
"""

    async def add_reply(self, reply: Reply) -> bool:
        async with self._db.write() as db:
            cursor = await db.execute(
                "INSERT OR IGNORE INTO replies (id, tenant_id, channel, message_id, person_id, "
                "body, provider_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    reply.id,
                    reply.tenant_id,
                    reply.channel,
                    reply.message_id,
                    reply.person_id,
                    reply.body,
                    reply.provider_id,
                    us(reply.received_at),
                ),
            )
            return cursor.rowcount == 1

    async def list_replies(self, tenant_id: str, message_id: str) -> list[Reply]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT id, tenant_id, channel, message_id, person_id, body, provider_id, "
                "received_at FROM replies WHERE tenant_id = ? AND message_id = ? "
                "ORDER BY received_at, id",
                (tenant_id, message_id),
            )
        return [
            Reply(
                id=r[0],
                tenant_id=r[1],
                channel=r[2],
                message_id=r[3],
                person_id=r[4],
                body=r[5],
                provider_id=r[6],
                received_at=from_us(r[7]),
            )
            for r in rows
        ]
