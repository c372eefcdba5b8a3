"""Webhooks in the SQLite backend: endpoints, the change feed and the outbox.

The change feed is filled by triggers on ``status_history``, ``reads`` and
``replies``, so a change enters the feed in the very transaction that makes it,
in commit order (one writer at a time), and no other module has to know. A
trigger records a change only for a tenant with an enabled endpoint, and the
triggers are created with the first endpoint, so a database without webhooks
pays nothing on the hot path. Recording a change also inserts the fan-out job
if it is missing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

import aiosqlite

from gateway.constants import (
    JOB_WEBHOOK_FANOUT,
    JOB_WEBHOOK_SEND,
    WEBHOOK_DELIVERY_UPDATED,
    WEBHOOK_MESSAGE_READ,
    WEBHOOK_REPLY_RECEIVED,
)
from gateway.errors import Conflict
from gateway.models import (
    Change,
    Job,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    WebhookStatus,
)
from gateway.store.encoding import dumps, from_us, from_us_opt, us, us_opt
from gateway.store.sqlite.base import SqliteFeature, feed_change

CURSOR_KEY = "feed_cursor"
# Where a change's time goes in its data (default "at").
_TIME_FIELD = {WEBHOOK_REPLY_RECEIVED: "received_at"}

_ENDPOINT_COLUMNS = (
    "id, tenant_id, url, event_types, description, enabled, disabled_reason, secret, "
    "previous_secret, previous_secret_until, created_at, updated_at"
)
_MESSAGE_COLUMNS = (
    "id, tenant_id, endpoint_id, event_type, body, status, attempts, next_attempt_at, "
    "reason, last_status_code, created_at, updated_at"
)

# The fan-out job, inserted by every recorded change unless it exists (NEW.at: due then).
_ENSURE_FANOUT = (
    "INSERT OR IGNORE INTO jobs (id, tenant_id, kind, ref, due_at, visible_at, "
    f"leased_until, attempts, last_error) VALUES ('{JOB_WEBHOOK_FANOUT}', '', "
    f"'{JOB_WEBHOOK_FANOUT}', '', NEW.at, NEW.at, NULL, 0, NULL);"
)

# One statement each (their bodies hold ";"), so they are run one by one, not via SCHEMA.
_TRIGGERS = (
    f"""
CREATE TRIGGER IF NOT EXISTS webhook_feed_status AFTER INSERT ON status_history
WHEN NEW.status NOT IN ('planned', 'queued', 'sending')
    AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled = 1)
    AND EXISTS (
        SELECT 1 FROM deliveries AS d JOIN webhook_endpoints AS e
            ON e.tenant_id = d.tenant_id AND e.enabled = 1
        WHERE d.id = NEW.delivery_id
    )
BEGIN
    INSERT INTO webhook_feed (tenant_id, type, data, at)
    SELECT d.tenant_id, '{WEBHOOK_DELIVERY_UPDATED}', json_object(
        'message_id', d.message_id, 'delivery_id', d.id, 'recipient_id', d.recipient_id,
        'channel', d.channel, 'status', NEW.status, 'reason', d.reason
    ), NEW.at
    FROM deliveries AS d WHERE d.id = NEW.delivery_id;
    {_ENSURE_FANOUT}
END
""",
    f"""
CREATE TRIGGER IF NOT EXISTS webhook_feed_read AFTER INSERT ON reads
WHEN EXISTS (
    SELECT 1 FROM webhook_endpoints WHERE tenant_id = NEW.tenant_id AND enabled = 1
)
BEGIN
    INSERT INTO webhook_feed (tenant_id, type, data, at)
    VALUES (NEW.tenant_id, '{WEBHOOK_MESSAGE_READ}', json_object(
        'message_id', NEW.message_id, 'recipient_id', NEW.person_id, 'via', NEW.via
    ), NEW.at);
    {_ENSURE_FANOUT}
END
""",
    f"""
CREATE TRIGGER IF NOT EXISTS webhook_feed_reply AFTER INSERT ON replies
WHEN EXISTS (
    SELECT 1 FROM webhook_endpoints WHERE tenant_id = NEW.tenant_id AND enabled = 1
)
BEGIN
    INSERT INTO webhook_feed (tenant_id, type, data, at)
    VALUES (NEW.tenant_id, '{WEBHOOK_REPLY_RECEIVED}', json_object(
        'reply_id', NEW.id, 'message_id', NEW.message_id, 'recipient_id', NEW.person_id,
        'channel', NEW.channel, 'body', NEW.body
    ), NEW.received_at);
    {_ENSURE_FANOUT.replace("NEW.at", "NEW.received_at")}
END
""",
)


def _endpoint(row: Any) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row[0],
        tenant_id=row[1],
        url=row[2],
        event_types=json.loads(row[3]),
        description=row[4],
        enabled=bool(row[5]),
        disabled_reason=row[6],
        secret=row[7],
        previous_secret=row[8],
        previous_secret_until=from_us_opt(row[9]),
        created_at=from_us(row[10]),
        updated_at=from_us(row[11]),
    )


def _endpoint_row(e: WebhookEndpoint) -> tuple[Any, ...]:
    return (
        e.id,
        e.tenant_id,
        e.url,
        dumps(e.event_types),
        e.description,
        int(e.enabled),
        e.disabled_reason,
        e.secret,
        e.previous_secret,
        us_opt(e.previous_secret_until),
        us(e.created_at),
        us(e.updated_at),
    )


def _message(row: Any) -> WebhookMessage:
    return WebhookMessage(
        id=row[0],
        tenant_id=row[1],
        endpoint_id=row[2],
        event_type=row[3],
        body=row[4],
        status=WebhookStatus(row[5]),
        attempts=row[6],
        next_attempt_at=from_us_opt(row[7]),
        reason=row[8],
        last_status_code=row[9],
        created_at=from_us(row[10]),
        updated_at=from_us(row[11]),
    )


class SqliteWebhooks(SqliteFeature):
    """Webhook endpoints, the change feed and the outbox (see the module docstring)."""

    SCHEMA: ClassVar[str] = """
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, url TEXT NOT NULL,
    event_types TEXT NOT NULL, description TEXT NOT NULL, enabled INTEGER NOT NULL,
    disabled_reason TEXT, secret TEXT NOT NULL, previous_secret TEXT,
    previous_secret_until INTEGER, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_by_tenant
    ON webhook_endpoints (tenant_id, enabled);

-- AUTOINCREMENT: a seq is never reused, even after the feed was emptied.
CREATE TABLE IF NOT EXISTS webhook_feed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL, type TEXT NOT NULL,
    data TEXT NOT NULL, at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS webhook_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);

CREATE TABLE IF NOT EXISTS webhook_messages (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, endpoint_id TEXT NOT NULL,
    event_type TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL, next_attempt_at INTEGER, reason TEXT, last_status_code INTEGER,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_messages_by_tenant
    ON webhook_messages (tenant_id, status, created_at);
CREATE INDEX IF NOT EXISTS webhook_messages_by_endpoint
    ON webhook_messages (endpoint_id, status);
-- Retention looks for finished messages by age.
CREATE INDEX IF NOT EXISTS webhook_messages_finished
    ON webhook_messages (created_at) WHERE status != 'pending';

CREATE TABLE IF NOT EXISTS webhook_attempts (
    id INTEGER PRIMARY KEY, message_id TEXT NOT NULL, at INTEGER NOT NULL,
    status_code INTEGER, duration_ms INTEGER NOT NULL, error TEXT, response TEXT
);
CREATE INDEX IF NOT EXISTS webhook_attempts_by_message ON webhook_attempts (message_id, id)
"""

    # ------------------------------------------------------------------ endpoints

    async def create_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        async with self._db.write() as db:
            for trigger in _TRIGGERS:
                await db.execute(trigger)
            try:
                await db.execute(
                    f"INSERT INTO webhook_endpoints ({_ENDPOINT_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _endpoint_row(endpoint),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict("an endpoint with this id exists already") from exc

    async def list_webhook_endpoints(self, tenant_id: str) -> list[WebhookEndpoint]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = ? "
                "ORDER BY created_at, id",
                (tenant_id,),
            )
        return [_endpoint(row) for row in rows]

    async def get_webhook_endpoint(
        self, tenant_id: str, endpoint_id: str
    ) -> WebhookEndpoint | None:
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints "
                    "WHERE tenant_id = ? AND id = ?",
                    (tenant_id, endpoint_id),
                )
            )
        return _endpoint(rows[0]) if rows else None

    async def update_webhook_endpoint(self, endpoint: WebhookEndpoint) -> bool:
        row = _endpoint_row(endpoint)
        async with self._db.write() as db:
            cursor = await db.execute(
                "UPDATE webhook_endpoints SET url = ?, event_types = ?, description = ?, "
                "enabled = ?, disabled_reason = ?, secret = ?, previous_secret = ?, "
                "previous_secret_until = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
                (*row[2:10], row[11], endpoint.tenant_id, endpoint.id),
            )
            return cursor.rowcount == 1

    async def delete_webhook_endpoint(self, tenant_id: str, endpoint_id: str) -> bool:
        async with self._db.write() as db:
            cursor = await db.execute(
                "DELETE FROM webhook_endpoints WHERE tenant_id = ? AND id = ?",
                (tenant_id, endpoint_id),
            )
            if cursor.rowcount != 1:
                return False
            ids = [
                row[0]
                for row in await db.execute_fetchall(
                    "SELECT id FROM webhook_messages WHERE endpoint_id = ?", (endpoint_id,)
                )
            ]
            await db.executemany(
                "DELETE FROM webhook_attempts WHERE message_id = ?", [(i,) for i in ids]
            )
            await db.executemany("DELETE FROM jobs WHERE id = ?", [(_send_job_id(i),) for i in ids])
            await db.execute("DELETE FROM webhook_messages WHERE endpoint_id = ?", (endpoint_id,))
        return True

    async def disable_webhook_endpoint(
        self, tenant_id: str, endpoint_id: str, reason: str, at: datetime
    ) -> int:
        stamp = us(at)
        async with self._db.write() as db:
            cursor = await db.execute(
                "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?, updated_at = ? "
                "WHERE tenant_id = ? AND id = ?",
                (reason, stamp, tenant_id, endpoint_id),
            )
            if cursor.rowcount != 1:
                return 0
            rows = await db.execute_fetchall(
                "UPDATE webhook_messages SET status = 'failed', reason = ?, "
                "next_attempt_at = NULL, updated_at = ? "
                "WHERE endpoint_id = ? AND status = 'pending' RETURNING id",
                (reason, stamp, endpoint_id),
            )
            failed = [row[0] for row in rows]
            await db.executemany(
                "DELETE FROM jobs WHERE id = ?", [(_send_job_id(i),) for i in failed]
            )
        return len(failed)

    # ------------------------------------------------------------------ change feed

    async def append_change(
        self, tenant_id: str, event_type: str, data: dict[str, Any], at: datetime
    ) -> int | None:
        async with self._db.write() as db:
            return await feed_change(db, tenant_id, event_type, data, at)

    async def changes_since(self, cursor: int, limit: int) -> tuple[list[Change], int]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT seq, tenant_id, type, data, at FROM webhook_feed WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (cursor, limit),
            )
        changes: list[Change] = []
        for seq, tenant_id, event_type, data, stamp in rows:
            at = from_us(stamp)
            payload: dict[str, Any] = json.loads(data)
            payload.setdefault(_TIME_FIELD.get(event_type, "at"), at.isoformat())
            changes.append(
                Change(seq=seq, tenant_id=tenant_id, type=event_type, at=at, data=payload)
            )
        return changes, (changes[-1].seq if changes else cursor)

    async def webhook_cursor(self) -> int:
        async with self._db.read() as db:
            return await _cursor(db)

    async def enqueue_webhooks(
        self,
        cursor: int,
        next_cursor: int,
        messages: Sequence[WebhookMessage],
        jobs: Sequence[Job],
        fanout_job_id: str,
    ) -> bool:
        async with self._db.write() as db:
            if await _cursor(db) != cursor:
                return True  # another fan-out did this batch: read the cursor again
            await db.executemany(
                f"INSERT OR IGNORE INTO webhook_messages ({_MESSAGE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        m.id,
                        m.tenant_id,
                        m.endpoint_id,
                        m.event_type,
                        m.body,
                        m.status.value,
                        m.attempts,
                        us_opt(m.next_attempt_at),
                        m.reason,
                        m.last_status_code,
                        us(m.created_at),
                        us(m.updated_at),
                    )
                    for m in messages
                ],
            )
            await db.executemany(
                "INSERT OR IGNORE INTO jobs (id, tenant_id, kind, ref, due_at, visible_at, "
                "leased_until, attempts, last_error) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                [
                    (j.id, j.tenant_id, j.kind, j.ref, us(j.due_at), us(j.due_at), j.attempts, None)
                    for j in jobs
                ],
            )
            await db.execute(
                "INSERT INTO webhook_state (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (CURSOR_KEY, next_cursor),
            )
            await db.execute("DELETE FROM webhook_feed WHERE seq <= ?", (next_cursor,))
            more = list(await db.execute_fetchall("SELECT 1 FROM webhook_feed LIMIT 1"))
            if not more:
                await db.execute("DELETE FROM jobs WHERE id = ?", (fanout_job_id,))
        return bool(more)

    # ------------------------------------------------------------------ outbox

    async def get_webhook_message(self, message_id: str) -> WebhookMessage | None:
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_MESSAGE_COLUMNS} FROM webhook_messages WHERE id = ?",
                    (message_id,),
                )
            )
        return _message(rows[0]) if rows else None

    async def list_webhook_messages(
        self,
        tenant_id: str,
        *,
        status: WebhookStatus | None = None,
        endpoint_id: str | None = None,
        limit: int = 100,
        before: datetime | None = None,
        before_id: str | None = None,
    ) -> list[WebhookMessage]:
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM webhook_messages WHERE tenant_id = ?"
        params: list[Any] = [tenant_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(status.value)
        if endpoint_id is not None:
            sql += " AND endpoint_id = ?"
            params.append(endpoint_id)
        if before is not None and before_id is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            params.extend((us(before), us(before), before_id))
        elif before is not None:
            sql += " AND created_at < ?"
            params.append(us(before))
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        params.append(limit)
        async with self._db.read() as db:
            rows = await db.execute_fetchall(sql, params)
        return [_message(row) for row in rows]

    async def webhook_attempts(self, message_id: str) -> list[WebhookAttempt]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT at, status_code, duration_ms, error, response FROM webhook_attempts "
                "WHERE message_id = ? ORDER BY id",
                (message_id,),
            )
        return [
            WebhookAttempt(
                at=from_us(row[0]),
                status_code=row[1],
                duration_ms=row[2],
                error=row[3],
                response=row[4],
            )
            for row in rows
        ]

    async def record_webhook_attempt(
        self,
        message_id: str,
        job_id: str,
        attempt: WebhookAttempt | None,
        status: WebhookStatus,
        *,
        next_attempt_at: datetime | None = None,
        reason: str | None = None,
        at: datetime,
    ) -> bool:
        pending = status is WebhookStatus.pending
        due = us_opt(next_attempt_at) if pending else None
        async with self._db.write() as db:
            cursor = await db.execute(
                "UPDATE webhook_messages SET status = ?, attempts = attempts + ?, "
                "next_attempt_at = ?, reason = ?, "
                "last_status_code = COALESCE(?, last_status_code), updated_at = ? "
                "WHERE id = ? AND status = 'pending'",
                (
                    status.value,
                    0 if attempt is None else 1,
                    due,
                    reason,
                    None if attempt is None else attempt.status_code,
                    us(at),
                    message_id,
                ),
            )
            if cursor.rowcount != 1:
                return False
            if attempt is not None:
                await db.execute(
                    "INSERT INTO webhook_attempts (message_id, at, status_code, duration_ms, "
                    "error, response) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        message_id,
                        us(attempt.at),
                        attempt.status_code,
                        attempt.duration_ms,
                        attempt.error,
                        None if attempt.response is None else attempt.response[:200],
                    ),
                )
            if pending and due is not None:
                await db.execute(
                    "UPDATE jobs SET due_at = ?, visible_at = ?, leased_until = NULL, "
                    "last_error = ? WHERE id = ?",
                    (due, due, reason, job_id),
                )
            else:
                await db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return True

    async def replay_webhook_message(
        self, tenant_id: str, message_id: str, at: datetime
    ) -> WebhookMessage | None:
        stamp = us(at)
        async with self._db.write() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT status, tenant_id FROM webhook_messages WHERE id = ? AND tenant_id = ?",
                    (message_id, tenant_id),
                )
            )
            if not rows:
                return None
            if rows[0][0] != WebhookStatus.failed.value:
                raise Conflict("only a failed message can be replayed")
            updated = list(
                await db.execute_fetchall(
                    "UPDATE webhook_messages SET status = 'pending', attempts = 0, "
                    "next_attempt_at = ?, updated_at = ? WHERE id = ? "
                    f"RETURNING {_MESSAGE_COLUMNS}",
                    (stamp, stamp, message_id),
                )
            )
            await db.execute(
                "INSERT OR REPLACE INTO jobs (id, tenant_id, kind, ref, due_at, visible_at, "
                "leased_until, attempts, last_error) VALUES (?, ?, ?, ?, ?, ?, NULL, 0, NULL)",
                (_send_job_id(message_id), tenant_id, JOB_WEBHOOK_SEND, message_id, stamp, stamp),
            )
        return _message(updated[0])


async def purge_webhook_messages(db: aiosqlite.Connection, before: int, limit: int) -> int:
    """Retention (inside the caller's write transaction): up to ``limit`` finished outbox
    messages (delivered or failed) created before ``before`` (microseconds), with their
    attempts; return how many went. Pending ones stay until they finish."""
    rows = await db.execute_fetchall(
        "SELECT id FROM webhook_messages WHERE status != 'pending' AND created_at < ? LIMIT ?",
        (before, limit),
    )
    ids = [(row[0],) for row in rows]
    await db.executemany("DELETE FROM webhook_attempts WHERE message_id = ?", ids)
    await db.executemany("DELETE FROM webhook_messages WHERE id = ?", ids)
    return len(ids)


def _send_job_id(message_id: str) -> str:
    return f"{JOB_WEBHOOK_SEND}:{message_id}"


async def _cursor(db: aiosqlite.Connection) -> int:
    rows = list(
        await db.execute_fetchall("SELECT value FROM webhook_state WHERE key = ?", (CURSOR_KEY,))
    )
    return int(rows[0][0]) if rows else 0
