"""Deliveries in the SQLite backend: the ``DeliveryStore``, ``ProviderLookup`` and
``DeliveryReport`` ports, and the status rule's SQL (:func:`apply_moves`), which the
send ledger (``jobs.py``) and reads (``inbox.py``) use inside their own transactions.

A delivery's every status is kept in ``status_history``; a new row there enters the
webhook feed by a trigger (``webhooks.py``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar

import aiosqlite

from gateway.constants import LOOKUP_CHANNELS
from gateway.models import Delivery, DeliveryStatus, Job, Role, StatusChange, can_transition
from gateway.store import SendOutcome
from gateway.store.encoding import dumps, from_us, loads, us, us_opt
from gateway.store.sqlite.base import IDS, SqliteFeature, id_list, insert_jobs
from gateway.store.trusted import assembler

_DELIVERY_COLUMNS = (
    "id, tenant_id, message_id, recipient_id, recipient_role, channel, target, address, "
    "language, child_ids, context, status, reason, provider_id, segments, attempts, "
    "not_before, created_at, updated_at"
)


# Provider callbacks and inbound SMS look deliveries up on LOOKUP_CHANNELS alone, so
# only their rows are indexed by provider id and address: a delivery on another channel
# (push, email: most of a broadcast) updates neither index when planned or sent (issue
# 18). A query reaches these partial indexes only if its WHERE holds this same term.
_LOOKUP = "channel IN ({})".format(", ".join(f"'{c}'" for c in sorted(LOOKUP_CHANNELS)))
# The channels are in the names, so a different set builds new indexes on open and
# drop_unused_lookup_indexes removes the old ones.
_LOOKUP_SUFFIX = "_".join(sorted(LOOKUP_CHANNELS))
_PROVIDER_ID_INDEX = f"deliveries_by_provider_id_{_LOOKUP_SUFFIX}"
_ADDRESS_INDEX = f"deliveries_by_address_{_LOOKUP_SUFFIX}"

_new_delivery = assembler(Delivery)
# Text -> member: a dict lookup, where calling the enum is two Python calls per value.
_ROLES = {role.value: role for role in Role}
_STATUSES = {status.value: status for status in DeliveryStatus}
# Member -> text, for the rows a plan writes (``.value`` is a Python-level property).
_TEXT: dict[str, str] = {member: member.value for member in (*Role, *DeliveryStatus)}


def _delivery(row: Any) -> Delivery:
    # Rows were validated on the way in: built without validation (gateway/store/trusted).
    # A claim reads a few hundred at a time, one per send of a broadcast (issue 18).
    return _new_delivery(
        {
            "id": row[0],
            "tenant_id": row[1],
            "message_id": row[2],
            "recipient_id": row[3],
            "recipient_role": _ROLES[row[4]],
            "channel": row[5],
            "target": row[6],
            "address": row[7],
            "language": row[8],
            "child_ids": loads(row[9]),
            "context": loads(row[10]),
            "status": _STATUSES[row[11]],
            "reason": row[12],
            "provider_id": row[13],
            "segments": row[14],
            "attempts": row[15],
            "not_before": None if row[16] is None else from_us(row[16]),
            "created_at": from_us(row[17]),
            "updated_at": from_us(row[18]),
        }
    )


def _delivery_row(d: Delivery) -> tuple[Any, ...]:
    return (
        d.id,
        d.tenant_id,
        d.message_id,
        d.recipient_id,
        _TEXT[d.recipient_role],
        d.channel,
        d.target,
        d.address,
        d.language,
        dumps(d.child_ids),
        dumps(d.context),
        _TEXT[d.status],
        d.reason,
        d.provider_id,
        d.segments,
        d.attempts,
        us_opt(d.not_before),
        us(d.created_at),
        us(d.updated_at),
    )


class SqliteDeliveries(SqliteFeature):
    """Deliveries, their status moves and history, and the lookups of provider callbacks."""

    SCHEMA: ClassVar[str] = f"""
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, message_id TEXT NOT NULL,
    recipient_id TEXT NOT NULL, recipient_role TEXT NOT NULL, channel TEXT NOT NULL,
    target TEXT NOT NULL, address TEXT, language TEXT NOT NULL,
    child_ids TEXT NOT NULL, context TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT, provider_id TEXT, segments INTEGER, attempts INTEGER NOT NULL,
    not_before INTEGER, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_message ON deliveries (tenant_id, message_id);
CREATE INDEX IF NOT EXISTS deliveries_by_recipient
    ON deliveries (tenant_id, recipient_id, channel);
CREATE INDEX IF NOT EXISTS {_PROVIDER_ID_INDEX} ON deliveries (channel, provider_id)
    WHERE {_LOOKUP} AND provider_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS {_ADDRESS_INDEX} ON deliveries (channel, address, created_at)
    WHERE {_LOOKUP} AND address IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_by_status ON deliveries (channel, status);

CREATE TABLE IF NOT EXISTS status_history (
    id INTEGER PRIMARY KEY, delivery_id TEXT NOT NULL, status TEXT NOT NULL,
    at INTEGER NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS status_history_by_delivery ON status_history (delivery_id, id);
"""

    async def add_deliveries(self, deliveries: Sequence[Delivery], jobs: Sequence[Job]) -> int:
        unique = {d.id: d for d in reversed(deliveries)}  # the first of a repeated id wins
        async with self._db.write() as db:
            new: list[Delivery] = list(unique.values())
            if unique:
                rows = await db.execute_fetchall(
                    f"SELECT id FROM deliveries WHERE id IN {IDS}", (id_list(unique),)
                )
                existing = {row[0] for row in rows}
                new = [d for d in unique.values() if d.id not in existing]
            if new:
                await db.executemany(
                    f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [_delivery_row(d) for d in new],
                )
                await db.executemany(
                    "INSERT INTO status_history (delivery_id, status, at, detail) "
                    "VALUES (?, ?, ?, ?)",
                    [(d.id, _TEXT[d.status], us(d.created_at), d.reason) for d in new],
                )
            await insert_jobs(db, jobs)
        return len(new)

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)
                )
            )
        return _delivery(rows[0]) if rows else None

    async def get_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, Delivery]:
        if not delivery_ids:
            return {}
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id IN {IDS}",
                (id_list(delivery_ids),),
            )
        return {row[0]: _delivery(row) for row in rows}

    async def list_deliveries(self, tenant_id: str, message_id: str) -> list[Delivery]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = ? "
                "AND message_id = ? ORDER BY created_at, id",
                (tenant_id, message_id),
            )
        return [_delivery(row) for row in rows]

    async def history(self, delivery_ids: Sequence[str]) -> dict[str, list[StatusChange]]:
        result: dict[str, list[StatusChange]] = {i: [] for i in delivery_ids}
        if not result:
            return result
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT delivery_id, status, at, detail FROM status_history "
                f"WHERE delivery_id IN {IDS} ORDER BY delivery_id, id",
                (id_list(result),),
            )
        for row in rows:
            result[row[0]].append(
                StatusChange.model_construct(
                    delivery_id=row[0],
                    status=DeliveryStatus(row[1]),
                    at=from_us(row[2]),
                    detail=row[3],
                )
            )
        return result

    async def transition(
        self,
        delivery_id: str,
        status: DeliveryStatus,
        at: datetime,
        *,
        detail: str | None = None,
        reason: str | None = None,
        provider_id: str | None = None,
        segments: int | None = None,
        jobs: Sequence[Job] = (),
    ) -> bool:
        move = SendOutcome("", delivery_id, status, at, detail, reason, provider_id, segments)
        async with self._db.write() as db:
            moved = await apply_moves(db, [move])
            await insert_jobs(db, jobs)
        return moved[0]

    async def note_attempt(self, delivery_id: str, at: datetime, detail: str) -> bool:
        async with self._db.write() as db:
            cursor = await db.execute(
                "INSERT INTO status_history (delivery_id, status, at, detail) "
                "SELECT id, status, ?, ? FROM deliveries WHERE id = ? AND status = 'sending'",
                (us(at), detail, delivery_id),
            )
        return cursor.rowcount == 1

    async def delivery_by_provider_id(self, channel: str, provider_id: str) -> Delivery | None:
        if channel not in LOOKUP_CHANNELS:
            return None
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE {_LOOKUP} "
                    "AND channel = ? AND provider_id = ? ORDER BY created_at DESC LIMIT 1",
                    (channel, provider_id),
                )
            )
        return _delivery(rows[0]) if rows else None

    async def count_by_status(self, tenant_id: str, message_id: str) -> dict[str, int]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT status, COUNT(*) FROM deliveries WHERE tenant_id = ? AND message_id = ? "
                "GROUP BY status",
                (tenant_id, message_id),
            )
        return {row[0]: row[1] for row in rows}

    async def delivery_stats(self) -> dict[tuple[str, str], int]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT channel, status, COUNT(*) FROM deliveries GROUP BY channel, status"
            )
        return {(row[0], row[1]): row[2] for row in rows}

    async def latest_delivery_to(
        self, tenant_id: str, channel: str, address: str
    ) -> Delivery | None:
        if channel not in LOOKUP_CHANNELS:
            return None
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE {_LOOKUP} "
                    "AND channel = ? AND address = ? AND tenant_id = ? "
                    "ORDER BY created_at DESC, id DESC LIMIT 1",
                    (channel, address, tenant_id),
                )
            )
        return _delivery(rows[0]) if rows else None

    async def tenant_for_address(self, channel: str, address: str) -> str | None:
        if channel not in LOOKUP_CHANNELS:
            return None
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT tenant_id FROM deliveries WHERE {_LOOKUP} AND channel = ? "
                    "AND address = ? ORDER BY created_at DESC, id DESC LIMIT 1",
                    (channel, address),
                )
            )
        return rows[0][0] if rows else None

    async def recipient_deliveries(
        self, tenant_id: str, message_id: str, recipient_id: str
    ) -> list[Delivery]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT id FROM deliveries WHERE tenant_id = ? AND recipient_id = ? "
                "AND message_id = ? ORDER BY channel, target",
                (tenant_id, recipient_id, message_id),
            )
        ids = [row[0] for row in rows]
        found = await self.get_deliveries(ids)
        return [found[i] for i in ids if i in found]


_CURRENT = f"SELECT id, status FROM deliveries WHERE id IN {IDS}"
_UPDATE = (
    "UPDATE deliveries SET status = ?, updated_at = COALESCE(?, updated_at), "
    "reason = COALESCE(?, reason), provider_id = COALESCE(?, provider_id), "
    "segments = COALESCE(?, segments) WHERE id = ?"
)
_HISTORY = "INSERT INTO status_history (delivery_id, status, at, detail) VALUES (?, ?, ?, ?)"


async def apply_moves(db: aiosqlite.Connection, moves: Sequence[SendOutcome]) -> list[bool]:
    """Apply status moves in order inside the caller's write transaction.

    Reads the current statuses once, decides each move with can_transition, and
    writes updates and history with one executemany each.
    """
    rows = await db.execute_fetchall(_CURRENT, (id_list({m.delivery_id for m in moves}),))
    updates, history, moved = _decide(rows, moves)
    if updates:
        await db.executemany(_UPDATE, updates)
    if history:
        await db.executemany(_HISTORY, history)
    return moved


def apply_moves_now(conn: sqlite3.Connection, moves: Sequence[SendOutcome]) -> list[bool]:
    """:func:`apply_moves` inside a :meth:`SqliteHandle.transact` transaction."""
    rows = conn.execute(_CURRENT, (id_list({m.delivery_id for m in moves}),)).fetchall()
    updates, history, moved = _decide(rows, moves)
    if updates:
        conn.executemany(_UPDATE, updates)
    if history:
        conn.executemany(_HISTORY, history)
    return moved


def _decide(
    rows: Iterable[Any], moves: Sequence[SendOutcome]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[bool]]:
    """The status rule on the current statuses (``rows``): the rows to update, the
    history to add, and whether each move was made."""
    current = {row[0]: _STATUSES[row[1]] for row in rows}
    updates: list[tuple[Any, ...]] = []
    history: list[tuple[Any, ...]] = []
    moved: list[bool] = []
    for move in moves:
        old = current.get(move.delivery_id)
        if old is not None and can_transition(old, move.status):
            current[move.delivery_id] = move.status
            at = us(move.at)
            status = _TEXT[move.status]
            updates.append(
                (status, at, move.reason, move.provider_id, move.segments, move.delivery_id)
            )
            history.append((move.delivery_id, status, at, move.detail))
            moved.append(True)
            continue
        if old is not None and (move.provider_id is not None or move.segments is not None):
            updates.append(
                (_TEXT[old], None, None, move.provider_id, move.segments, move.delivery_id)
            )
        moved.append(False)
    return updates, history, moved


async def drop_unused_lookup_indexes(db: aiosqlite.Connection) -> None:
    """Drop the provider id and address indexes of an older version (every channel's
    rows, or another set of LOOKUP_CHANNELS): the schema has built this version's."""
    rows = await db.execute_fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries' "
        "AND (name LIKE 'deliveries_by_provider_id%' OR name LIKE 'deliveries_by_address%')"
    )
    for (name,) in rows:
        if name not in (_PROVIDER_ID_INDEX, _ADDRESS_INDEX):
            await db.execute(f'DROP INDEX "{name}"')
