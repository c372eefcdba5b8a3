"""SQLite tables and queries of absence: records, claimed event ids, explanations.

``absences`` holds one row per alert or report (by its message id), and
``absence_days`` a row per day it is for (an alert's one day is fixed by its key, a
report's days by its event: neither changes after the insert);
``absence_events`` maps every event id claimed for an absence (the first mark and the
repeated marks folded into it) to its record and the body hash it came with, so a
replayed event gets the same answer. ``staff_members`` reads the directory, so
sqlite/directory.py answers it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

import aiosqlite

from gateway.constants import WEBHOOK_ABSENCE_EXPLAINED, WEBHOOK_ABSENCE_UNROUTED
from gateway.models import AbsenceClaim, AbsenceExplanation, AbsenceKind, AbsenceRecord
from gateway.store.encoding import dumps, from_us, from_us_opt, us, us_opt
from gateway.store.sqlite.base import SqliteFeature, feed_change

_COLUMNS = (
    "tenant_id, message_id, event_id, kind, child_id, key, data, marks, created_at, "
    "updated_at, cancelled_at, cancel_event_id"
)
_EXPLANATION_COLUMNS = "id, tenant_id, message_id, child_id, person_id, kind, text, via, at"


def _record(row: Any) -> AbsenceRecord:
    return AbsenceRecord(
        tenant_id=row[0],
        message_id=row[1],
        event_id=row[2],
        kind=row[3],
        child_id=row[4],
        key=row[5],
        data=json.loads(row[6]),
        marks=json.loads(row[7]),
        created_at=from_us(row[8]),
        updated_at=from_us(row[9]),
        cancelled_at=from_us_opt(row[10]),
        cancel_event_id=row[11],
    )


def _explanation(row: Any) -> AbsenceExplanation:
    return AbsenceExplanation(
        id=row[0],
        tenant_id=row[1],
        message_id=row[2],
        child_id=row[3],
        person_id=row[4],
        kind=AbsenceKind(row[5]),
        text=row[6],
        via=row[7],
        at=from_us(row[8]),
    )


async def _one(db: aiosqlite.Connection, where: str, params: Sequence[Any]) -> AbsenceRecord | None:
    rows = list(await db.execute_fetchall(f"SELECT {_COLUMNS} FROM absences WHERE {where}", params))
    return _record(rows[0]) if rows else None


async def _merge(
    db: aiosqlite.Connection, first: AbsenceRecord, record: AbsenceRecord
) -> AbsenceRecord:
    """Fold a repeated mark into the first record of its window; the merged record."""
    merged = first.model_copy(
        update={
            "data": record.data,
            "marks": [*first.marks, record.event_id],
            "updated_at": record.updated_at,
        }
    )
    await db.execute(
        "UPDATE absences SET data = ?, marks = ?, updated_at = ? "
        "WHERE tenant_id = ? AND message_id = ?",
        (
            dumps(merged.data),
            dumps(merged.marks),
            us(merged.updated_at),
            merged.tenant_id,
            merged.message_id,
        ),
    )
    return merged


async def _insert(db: aiosqlite.Connection, record: AbsenceRecord) -> None:
    await db.executemany(
        "INSERT OR IGNORE INTO absence_days (tenant_id, day, message_id) VALUES (?, ?, ?)",
        [(record.tenant_id, day, record.message_id) for day in record.days()],
    )
    await db.execute(
        f"INSERT OR IGNORE INTO absences ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.tenant_id,
            record.message_id,
            record.event_id,
            record.kind,
            record.child_id,
            record.key,
            dumps(record.data),
            dumps(record.marks),
            us(record.created_at),
            us(record.updated_at),
            us_opt(record.cancelled_at),
            record.cancel_event_id,
        ),
    )


async def purge_absences(db: aiosqlite.Connection, before: int) -> None:
    """Retention (inside the caller's write transaction): records created before ``before``
    (microseconds) with their claimed event ids and explanations, and explanations given
    before it."""
    await db.execute(
        "DELETE FROM absence_explanations WHERE at < ? OR (tenant_id, message_id) IN "
        "(SELECT tenant_id, message_id FROM absences WHERE created_at < ?)",
        (before, before),
    )
    await db.execute(
        "DELETE FROM absence_events WHERE (tenant_id, message_id) IN "
        "(SELECT tenant_id, message_id FROM absences WHERE created_at < ?)",
        (before,),
    )
    await db.execute(
        "DELETE FROM absence_days WHERE (tenant_id, message_id) IN "
        "(SELECT tenant_id, message_id FROM absences WHERE created_at < ?)",
        (before,),
    )
    await db.execute("DELETE FROM absences WHERE created_at < ?", (before,))


async def index_absence_days(db: aiosqlite.Connection) -> None:
    """Give every record without day rows its days (at each open, in the schema's
    transaction): those of a database from before ``absence_days``, and those an older
    version wrote beside this one (a rolling upgrade, a downgrade and back). The days
    are :meth:`AbsenceRecord.days`' rule in SQL: ``days`` when not empty, else ``date``."""
    await db.execute(
        "INSERT OR IGNORE INTO absence_days (tenant_id, day, message_id) "
        "SELECT a.tenant_id, d.value, a.message_id FROM absences AS a, json_each("
        "CASE WHEN json_type(a.data, '$.days') = 'array' "
        "AND json_array_length(a.data, '$.days') > 0 THEN json_extract(a.data, '$.days') "
        "ELSE json_array(json_extract(a.data, '$.date')) END) AS d "
        "WHERE d.value IS NOT NULL AND NOT EXISTS (SELECT 1 FROM absence_days AS x "
        "WHERE x.tenant_id = a.tenant_id AND x.message_id = a.message_id)"
    )


class SqliteAbsence(SqliteFeature):
    """Absence records, the event ids claimed for them, and explanations (the
    ``AbsenceStore`` port; its alert phones are ``alert_phones.py``)."""

    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS absences (
        tenant_id TEXT NOT NULL, message_id TEXT NOT NULL, event_id TEXT NOT NULL,
        kind TEXT NOT NULL, child_id TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
        marks TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
        cancelled_at INTEGER, cancel_event_id TEXT,
        PRIMARY KEY (tenant_id, message_id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS absences_by_key ON absences (tenant_id, key, created_at)
        WHERE key != '';
    CREATE INDEX IF NOT EXISTS absences_by_created ON absences (created_at);
    CREATE TABLE IF NOT EXISTS absence_days (
        tenant_id TEXT NOT NULL, day TEXT NOT NULL, message_id TEXT NOT NULL,
        PRIMARY KEY (tenant_id, day, message_id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS absence_days_by_message ON absence_days (tenant_id, message_id);
    CREATE TABLE IF NOT EXISTS absence_events (
        tenant_id TEXT NOT NULL, event_id TEXT NOT NULL, message_id TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        PRIMARY KEY (tenant_id, event_id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS absence_explanations (
        id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, message_id TEXT NOT NULL,
        child_id TEXT NOT NULL, person_id TEXT NOT NULL, kind TEXT NOT NULL,
        text TEXT NOT NULL, via TEXT NOT NULL, at INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS absence_explanations_by_message
        ON absence_explanations (tenant_id, message_id, at);
    CREATE INDEX IF NOT EXISTS absence_explanations_by_at ON absence_explanations (at)
    """

    async def claim_absence(
        self,
        record: AbsenceRecord,
        body_hash: str,
        window_start: datetime,
        *,
        unrouted: dict[str, Any] | None = None,
    ) -> AbsenceClaim:
        tenant_id = record.tenant_id
        async with self._db.write() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT message_id, body_hash FROM absence_events "
                    "WHERE tenant_id = ? AND event_id = ?",
                    (tenant_id, record.event_id),
                )
            )
            if rows:
                known = await _one(db, "tenant_id = ? AND message_id = ?", (tenant_id, rows[0][0]))
                if known is not None:
                    return AbsenceClaim(outcome="known", record=known, body_hash=rows[0][1])
            first = None
            if record.key:
                first = await _one(
                    db,
                    "tenant_id = ? AND key = ? AND created_at >= ? AND cancelled_at IS NULL "
                    "ORDER BY created_at DESC LIMIT 1",
                    (tenant_id, record.key, us(window_start)),
                )
            if first is not None:
                merged = await _merge(db, first, record)
                claim = AbsenceClaim(outcome="merged", record=merged, body_hash=body_hash)
            else:
                await _insert(db, record)
                claim = AbsenceClaim(outcome="new", record=record, body_hash=body_hash)
                if unrouted is not None:
                    await feed_change(
                        db, tenant_id, WEBHOOK_ABSENCE_UNROUTED, unrouted, record.created_at
                    )
            await db.execute(
                "INSERT OR REPLACE INTO absence_events (tenant_id, event_id, message_id, "
                "body_hash) VALUES (?, ?, ?, ?)",
                (tenant_id, record.event_id, claim.record.message_id, body_hash),
            )
        return claim

    async def get_absence(self, tenant_id: str, message_id: str) -> AbsenceRecord | None:
        async with self._db.read() as db:
            return await _one(db, "tenant_id = ? AND message_id = ?", (tenant_id, message_id))

    async def find_absence(
        self, tenant_id: str, *, event_id: str | None = None, key: str | None = None
    ) -> AbsenceRecord | None:
        async with self._db.read(snapshot=True) as db:
            if event_id is not None:
                return await _one(
                    db,
                    "tenant_id = ? AND message_id = (SELECT message_id FROM absence_events "
                    "WHERE tenant_id = ? AND event_id = ?)",
                    (tenant_id, tenant_id, event_id),
                )
            if key:
                return await _one(
                    db,
                    "tenant_id = ? AND key = ? ORDER BY created_at DESC LIMIT 1",
                    (tenant_id, key),
                )
        return None

    async def cancel_absence(
        self, tenant_id: str, message_id: str, event_id: str, at: datetime
    ) -> AbsenceRecord | None:
        async with self._db.write() as db:
            await db.execute(
                "UPDATE absences SET cancelled_at = ?, cancel_event_id = ?, updated_at = ? "
                "WHERE tenant_id = ? AND message_id = ? AND cancelled_at IS NULL",
                (us(at), event_id, us(at), tenant_id, message_id),
            )
            found = await _one(db, "tenant_id = ? AND message_id = ?", (tenant_id, message_id))
            if found is not None:
                await db.execute(
                    "INSERT OR IGNORE INTO absence_events (tenant_id, event_id, message_id, "
                    "body_hash) VALUES (?, ?, ?, '')",
                    (tenant_id, event_id, message_id),
                )
            return found

    async def add_absence_explanation(
        self, explanation: AbsenceExplanation, *, change: dict[str, Any] | None = None
    ) -> bool:
        async with self._db.write() as db:
            cursor = await db.execute(
                f"INSERT OR IGNORE INTO absence_explanations ({_EXPLANATION_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    explanation.id,
                    explanation.tenant_id,
                    explanation.message_id,
                    explanation.child_id,
                    explanation.person_id,
                    explanation.kind.value,
                    explanation.text,
                    explanation.via,
                    us(explanation.at),
                ),
            )
            new = cursor.rowcount == 1
            if new and change is not None:
                await feed_change(
                    db, explanation.tenant_id, WEBHOOK_ABSENCE_EXPLAINED, change, explanation.at
                )
            return new

    async def absences_on(self, tenant_id: str, days: Sequence[str]) -> list[AbsenceRecord]:
        if not days:
            return []
        marks = ", ".join("?" * len(days))
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM absences WHERE tenant_id = ? AND message_id IN "
                f"(SELECT message_id FROM absence_days WHERE tenant_id = ? AND day IN ({marks})) "
                "ORDER BY created_at DESC, message_id",
                (tenant_id, tenant_id, *days),
            )
        return [_record(row) for row in rows]

    async def list_absence_explanations(
        self, tenant_id: str, message_id: str
    ) -> list[AbsenceExplanation]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_EXPLANATION_COLUMNS} FROM absence_explanations "
                "WHERE tenant_id = ? AND message_id = ? ORDER BY at, id",
                (tenant_id, message_id),
            )
        return [_explanation(row) for row in rows]
