"""Retention in the SQLite backend: the daily purge job removes what is older than the
tenant's retention (Redis lets such keys expire and purges the same way): messages with
everything recorded about them, absence records and explanations, and the webhook
outbox's finished messages with their attempts (their bodies carry reply texts)."""

from __future__ import annotations

from datetime import datetime

import aiosqlite

from gateway.store.encoding import us
from gateway.store.sqlite.absence import purge_absences
from gateway.store.sqlite.base import IDS, SqliteFeature, id_list
from gateway.store.sqlite.webhooks import purge_webhook_messages

PURGE_BATCH = 200  # messages per transaction, so a large purge never holds the writer long
WEBHOOK_PURGE_BATCH = 2000  # outbox messages per transaction (smaller rows, no fan-out)


class SqliteRetention(SqliteFeature):
    """``purge_before`` of :class:`gateway.store.Store` on SQLite."""

    async def purge_before(self, cutoff: datetime) -> int:
        stamp = us(cutoff)
        removed = 0
        while True:
            async with self._db.write() as db:
                gone = await _purge_messages(db, stamp)
            if gone is None:
                break
            removed += gone
        async with self._db.write() as db:
            await db.execute("DELETE FROM replies WHERE received_at < ?", (stamp,))
            # Message and reply translations (translations.py; Redis: their TTL).
            await db.execute("DELETE FROM translations WHERE at < ?", (stamp,))
            await purge_absences(db, stamp)
        while True:
            async with self._db.write() as db:
                gone = await purge_webhook_messages(db, stamp, WEBHOOK_PURGE_BATCH)
            if gone < WEBHOOK_PURGE_BATCH:
                break
        return removed


async def _purge_messages(db: aiosqlite.Connection, stamp: int) -> int | None:
    """One batch of messages created before ``stamp`` with everything recorded about
    them; how many deliveries went, or None when no message was left to purge."""
    rows = list(
        await db.execute_fetchall(
            "SELECT tenant_id, id FROM messages WHERE created_at < ? LIMIT ?",
            (stamp, PURGE_BATCH),
        )
    )
    if not rows:
        return None
    removed = 0
    ids = id_list(row[1] for row in rows)
    # deliveries_by_message is (tenant_id, message_id): one tenant at a time.
    for tenant_id in {row[0] for row in rows}:
        params = (tenant_id, ids)
        await db.execute(
            "DELETE FROM status_history WHERE delivery_id IN (SELECT id FROM "
            f"deliveries WHERE tenant_id = ? AND message_id IN {IDS})",
            params,
        )
        cursor = await db.execute(
            f"DELETE FROM deliveries WHERE tenant_id = ? AND message_id IN {IDS}", params
        )
        removed += cursor.rowcount
        for table in ("reads", "reached", "replies", "schedules", "digest_entries"):
            await db.execute(
                f"DELETE FROM {table} WHERE tenant_id = ? AND message_id IN {IDS}", params
            )
    await db.execute(f"DELETE FROM messages WHERE id IN {IDS}", (ids,))
    return removed
