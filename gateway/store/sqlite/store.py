"""The embedded store backend: SQLite in WAL mode through aiosqlite.

One writer connection carries every write, serialised by an asyncio lock and
wrapped in ``BEGIN IMMEDIATE ... COMMIT``; a second connection serves reads,
which WAL lets run beside a write. Datetimes are stored as integer
microseconds since the epoch (exact, and compared cheaply), JSON columns as
text. Sets of ids are passed as one JSON array and expanded with
``json_each``, so no query grows with the size of an audience.

Features: each has the same file name in ``store/sqlite/`` and ``store/redis/``
(absence, alert_phones, api_keys, ratelimit, tracking, webhooks; SQLite also postpone
and retention, which Redis keeps in this module). A composed feature (rate limits;
on Redis also the change-feed marks, ``feed.FeedMarks``) gets what it needs of the
store by constructor injection (the write transaction) and the store delegates its
Protocol method to it in one line: explicit delegation keeps the class checked
against the Store Protocol by mypy strict, which ``__getattr__`` forwarding would
not. The older features are still mixins on
:class:`~gateway.store.sqlite.base.SqliteParts`, which gives them the connection and nothing
else; error mapping is installed on every public coroutine
by that base (:mod:`gateway.store.mapping`), so no feature can miss it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.constants import SUPPRESSED_CHANNEL
from gateway.errors import Conflict, NotFound, StoreError
from gateway.models import (
    ApiKey,
    Audience,
    Category,
    Delivery,
    DeliveryStatus,
    Device,
    DirectoryBatch,
    DirectoryDeletion,
    DirectorySnapshot,
    Group,
    GroupKind,
    InboxItem,
    Job,
    Message,
    Person,
    Preferences,
    Protection,
    RelationFlags,
    RelationRecord,
    Reply,
    Role,
    StatusChange,
    Tenant,
    Unit,
    UnitKind,
    Urgency,
    can_transition,
    first_api_key,
)
from gateway.protection import (
    ProtectionHistoryEntry,
    import_raise,
    merge_imported,
    raised_by_import,
)
from gateway.store import FlagHistoryEntry, SendOutcome, lanes
from gateway.store.digests import Digests
from gateway.store.directory_checks import (
    DeletionFacts,
    Known,
    audience_ids,
    batch_refs,
    check_batch,
    check_contact_kind,
    check_deletion,
    check_relation_flag,
)
from gateway.store.encoding import dumps, from_us, from_us_opt, us, us_opt
from gateway.store.schedules import Schedules
from gateway.store.sqlite.absence import AbsenceMixin
from gateway.store.sqlite.alert_phones import AlertPhonesMixin
from gateway.store.sqlite.api_keys import KeysMixin, insert_api_key, migrate_api_keys
from gateway.store.sqlite.attachments import SqliteAttachments
from gateway.store.sqlite.base import SqliteParts, id_list
from gateway.store.sqlite.digests import SCHEMA as DIGESTS_SCHEMA
from gateway.store.sqlite.digests import SqliteDigests
from gateway.store.sqlite.postpone import PostponeMixin
from gateway.store.sqlite.ratelimit import RateLimits
from gateway.store.sqlite.retention import RetentionMixin
from gateway.store.sqlite.schedules import SCHEMA as SCHEDULES_SCHEMA
from gateway.store.sqlite.schedules import SqliteSchedules
from gateway.store.sqlite.tracking import TrackingMixin
from gateway.store.sqlite.webhooks import WebhookMixin

SCHEMA_VERSION = 1

_FLAG_COLUMNS = {
    "information_granted": "information_reason",
    "blocked": "blocked_reason",
}
_NOT_IN_INBOX = (DeliveryStatus.suppressed.value, DeliveryStatus.cancelled.value)
_IDS = "(SELECT value FROM json_each(?))"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);

CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    api_key_hash TEXT NOT NULL UNIQUE,
    webhook_secret TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS units (
    tenant_id TEXT NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    time_zone TEXT NOT NULL, sender_name TEXT, sms_sender TEXT,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS unit_groups (
    tenant_id TEXT NOT NULL, id TEXT NOT NULL, unit_id TEXT NOT NULL,
    kind TEXT NOT NULL, name TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS unit_groups_by_unit ON unit_groups (tenant_id, unit_id);

CREATE TABLE IF NOT EXISTS persons (
    tenant_id TEXT NOT NULL, id TEXT NOT NULL, role TEXT NOT NULL,
    given_name TEXT NOT NULL, family_name TEXT NOT NULL, birth_date TEXT,
    protection TEXT NOT NULL, email TEXT, phone TEXT, language TEXT,
    consent_guardians INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS person_units (
    tenant_id TEXT NOT NULL, unit_id TEXT NOT NULL, person_id TEXT NOT NULL,
    pos INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, unit_id, person_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS person_units_by_person ON person_units (tenant_id, person_id);

CREATE TABLE IF NOT EXISTS person_groups (
    tenant_id TEXT NOT NULL, group_id TEXT NOT NULL, person_id TEXT NOT NULL,
    pos INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, group_id, person_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS person_groups_by_person ON person_groups (tenant_id, person_id);

CREATE TABLE IF NOT EXISTS relations (
    tenant_id TEXT NOT NULL, child_id TEXT NOT NULL, guardian_id TEXT NOT NULL,
    parental_responsibility INTEGER NOT NULL, daily_care INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, child_id, guardian_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS relations_by_guardian ON relations (tenant_id, guardian_id);

-- Manual flags live apart from the imported relation: imports never touch this table.
CREATE TABLE IF NOT EXISTS relation_flags (
    tenant_id TEXT NOT NULL, child_id TEXT NOT NULL, guardian_id TEXT NOT NULL,
    information_granted INTEGER NOT NULL DEFAULT 0, information_reason TEXT,
    blocked INTEGER NOT NULL DEFAULT 0, blocked_reason TEXT,
    updated_by TEXT, updated_at INTEGER,
    PRIMARY KEY (tenant_id, child_id, guardian_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS relation_flag_history (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL, child_id TEXT NOT NULL, guardian_id TEXT NOT NULL,
    flag TEXT NOT NULL, value INTEGER NOT NULL, reason TEXT NOT NULL,
    actor TEXT NOT NULL, at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS relation_flag_history_by_relation
    ON relation_flag_history (tenant_id, child_id, guardian_id, id);

-- Every change of a person's protection level (gateway/protection.py), kept for audit.
CREATE TABLE IF NOT EXISTS protection_history (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL, person_id TEXT NOT NULL,
    level TEXT NOT NULL, previous TEXT NOT NULL, reason TEXT NOT NULL,
    actor TEXT NOT NULL, at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS protection_history_by_person
    ON protection_history (tenant_id, person_id, id);

CREATE TABLE IF NOT EXISTS preferences (
    tenant_id TEXT NOT NULL, person_id TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('import', 'guardian')),
    data TEXT NOT NULL,
    PRIMARY KEY (tenant_id, person_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS devices (
    tenant_id TEXT NOT NULL, person_id TEXT NOT NULL, id TEXT NOT NULL,
    token TEXT, fid TEXT, platform TEXT NOT NULL, app_version TEXT, last_seen INTEGER,
    PRIMARY KEY (tenant_id, person_id, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS devices_by_token ON devices (tenant_id, token)
    WHERE token IS NOT NULL;
CREATE INDEX IF NOT EXISTS devices_by_fid ON devices (tenant_id, fid) WHERE fid IS NOT NULL;

CREATE TABLE IF NOT EXISTS contact_failures (
    tenant_id TEXT NOT NULL, person_id TEXT NOT NULL, kind TEXT NOT NULL,
    address TEXT NOT NULL, code TEXT NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, person_id, kind)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, event_id TEXT NOT NULL,
    event_type TEXT NOT NULL, body_hash TEXT NOT NULL, category TEXT NOT NULL,
    subject TEXT NOT NULL, body TEXT NOT NULL, urgency TEXT NOT NULL,
    read_receipt INTEGER NOT NULL, sender_id TEXT, sender_name TEXT,
    audience TEXT NOT NULL, created_at INTEGER NOT NULL, planned_at INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_tenant_created ON messages (tenant_id, created_at);

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
CREATE INDEX IF NOT EXISTS deliveries_by_provider_id ON deliveries (channel, provider_id)
    WHERE provider_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_by_address ON deliveries (channel, address, created_at)
    WHERE address IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_by_status ON deliveries (channel, status);

CREATE TABLE IF NOT EXISTS status_history (
    id INTEGER PRIMARY KEY, delivery_id TEXT NOT NULL, status TEXT NOT NULL,
    at INTEGER NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS status_history_by_delivery ON status_history (delivery_id, id);

-- visible_at is when a claimer may take the job: due_at, or the end of its lease.
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, kind TEXT NOT NULL, ref TEXT NOT NULL,
    due_at INTEGER NOT NULL, visible_at INTEGER NOT NULL, leased_until INTEGER,
    attempts INTEGER NOT NULL, last_error TEXT, urgent INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS replies (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, channel TEXT NOT NULL,
    message_id TEXT, person_id TEXT, body TEXT NOT NULL, provider_id TEXT,
    received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS replies_by_message ON replies (tenant_id, message_id, received_at);

CREATE TABLE IF NOT EXISTS reads (
    tenant_id TEXT NOT NULL, message_id TEXT NOT NULL, person_id TEXT NOT NULL,
    at INTEGER NOT NULL, via TEXT NOT NULL,
    PRIMARY KEY (tenant_id, message_id, person_id)
) WITHOUT ROWID;
"""

_PERSON_COLUMNS = (
    "id, role, given_name, family_name, birth_date, protection, email, phone, language, "
    "consent_guardians"
)
_DELIVERY_COLUMNS = (
    "id, tenant_id, message_id, recipient_id, recipient_role, channel, target, address, "
    "language, child_ids, context, status, reason, provider_id, segments, attempts, "
    "not_before, created_at, updated_at"
)
_MESSAGE_COLUMNS = (
    "id, tenant_id, event_id, event_type, body_hash, category, subject, body, urgency, "
    "read_receipt, sender_id, sender_name, audience, created_at, planned_at"
)
_JOB_COLUMNS = "id, tenant_id, kind, ref, due_at, attempts, last_error, urgent"
_INBOX_QUERY = """
SELECT m.id, m.subject, m.body, m.category, m.sender_name, d.child_ids, d.context,
       d.status, m.created_at, r.at
FROM deliveries AS d
JOIN messages AS m ON m.id = d.message_id AND m.tenant_id = d.tenant_id
LEFT JOIN reads AS r
    ON r.tenant_id = d.tenant_id AND r.message_id = d.message_id AND r.person_id = d.recipient_id
WHERE d.tenant_id = ? AND d.recipient_id = ? AND d.channel = 'inapp'
  AND d.status NOT IN (?, ?) AND (d.not_before IS NULL OR d.not_before <= ?)
"""


# --------------------------------------------------------------------------- conversions


_ts = us
_ts_opt = us_opt
_dt = from_us
_dt_opt = from_us_opt
_json = dumps
_id_list = id_list


def _tenant(row: Any) -> Tenant:
    return Tenant(
        id=row[0],
        name=row[1],
        api_key_hash=row[2],
        webhook_secret=row[3],
        created_at=_dt(row[4]),
    )


def _delivery(row: Any) -> Delivery:
    # Rows were validated on the way in; model_construct keeps the hot path cheap.
    return Delivery.model_construct(
        id=row[0],
        tenant_id=row[1],
        message_id=row[2],
        recipient_id=row[3],
        recipient_role=Role(row[4]),
        channel=row[5],
        target=row[6],
        address=row[7],
        language=row[8],
        child_ids=json.loads(row[9]),
        context=json.loads(row[10]),
        status=DeliveryStatus(row[11]),
        reason=row[12],
        provider_id=row[13],
        segments=row[14],
        attempts=row[15],
        not_before=_dt_opt(row[16]),
        created_at=_dt(row[17]),
        updated_at=_dt(row[18]),
    )


def _delivery_row(d: Delivery) -> tuple[Any, ...]:
    return (
        d.id,
        d.tenant_id,
        d.message_id,
        d.recipient_id,
        d.recipient_role.value,
        d.channel,
        d.target,
        d.address,
        d.language,
        _json(d.child_ids),
        _json(d.context),
        d.status.value,
        d.reason,
        d.provider_id,
        d.segments,
        d.attempts,
        _ts_opt(d.not_before),
        _ts(d.created_at),
        _ts(d.updated_at),
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
        created_at=_dt(row[13]),
        planned_at=_dt_opt(row[14]),
    )


def _job(row: Any) -> Job:
    return Job.model_construct(
        id=row[0],
        tenant_id=row[1],
        kind=row[2],
        ref=row[3],
        due_at=_dt(row[4]),
        attempts=row[5],
        last_error=row[6],
        urgent=bool(row[7]),
    )


def _person(row: Any, unit_ids: list[str], group_ids: list[str]) -> Person:
    return Person.model_construct(
        id=row[0],
        role=Role(row[1]),
        given_name=row[2],
        family_name=row[3],
        birth_date=None if row[4] is None else date.fromisoformat(row[4]),
        protection=Protection(row[5]),
        email=row[6],
        phone=row[7],
        language=row[8],
        unit_ids=unit_ids,
        group_ids=group_ids,
        consent_guardians=bool(row[9]),
    )


def _flags(row: Any) -> RelationFlags:
    """Flags from the six flag columns (information_granted ... updated_at), NULLs as unset."""
    return RelationFlags.model_construct(
        information_granted=bool(row[0]),
        information_reason=row[1],
        blocked=bool(row[2]),
        blocked_reason=row[3],
        updated_by=row[4],
        updated_at=_dt_opt(row[5]),
    )


def _device(row: Any) -> Device:
    return Device.model_construct(
        id=row[0],
        token=row[1],
        fid=row[2],
        platform=row[3],
        app_version=row[4],
        last_seen=_dt_opt(row[5]),
    )


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
        created_at=_dt(row[8]),
        read_at=_dt_opt(row[9]),
    )


# --------------------------------------------------------------------------- the store


# The table of each kind of directory row (directory_checks.AUDIENCE_CHECKS).
_TABLES = {"person": "persons", "group": "unit_groups", "unit": "units"}


class SqliteStore(
    TrackingMixin,
    WebhookMixin,
    PostponeMixin,
    RetentionMixin,
    AbsenceMixin,
    KeysMixin,
    AlertPhonesMixin,
    SqliteParts,
):
    """The :class:`gateway.store.Store` on one SQLite file (WAL, one writer connection)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self._path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        # Composed features: each gets what it needs of the store, nothing more.
        self._rates = RateLimits(self._write)
        self.schedules: Schedules = SqliteSchedules(self)
        self.digests: Digests = SqliteDigests(self)
        self.attachments = SqliteAttachments(self)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Open both connections, switch to WAL and create the schema if missing."""
        if self._writer is not None:
            return
        memory = self._path == ":memory:"
        if not memory:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        try:
            writer = await self._connect()
            self._writer = writer
            await writer.execute("PRAGMA journal_mode = WAL")
            await self._create_schema(writer)
            if memory:
                # Two connections would see two databases: share one, and its lock.
                self._reader = writer
                self._read_lock = self._write_lock
            else:
                self._reader = await self._connect()
                await self._reader.execute("PRAGMA query_only = ON")
        except BaseException as exc:
            await self.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError("cannot open the SQLite store") from exc
            raise

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: no implicit transactions, we say BEGIN ourselves.
        db = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA temp_store = MEMORY")
            await db.execute("PRAGMA cache_size = -32000")
            await db.execute("PRAGMA foreign_keys = OFF")  # apply_directory checks references
        except BaseException:
            await db.close()
            raise
        return db

    async def _create_schema(self, db: aiosqlite.Connection) -> None:
        await db.execute("BEGIN IMMEDIATE")
        try:
            for schema in (
                _SCHEMA,
                *self.feature_schemas(),
                RateLimits.SCHEMA,
                SqliteAttachments.SCHEMA,
                SCHEDULES_SCHEMA,
                DIGESTS_SCHEMA,
            ):
                for statement in schema.split(";"):
                    if statement.strip():
                        await db.execute(statement)
            await _add_job_lanes(db)
            await migrate_api_keys(db)
            rows = list(await db.execute_fetchall("SELECT version FROM schema_version"))
            if not rows:
                await db.execute(
                    "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,)
                )
            elif rows[0][0] > SCHEMA_VERSION:
                raise StoreError("the database was written by a newer Budbringer")
            await db.execute("COMMIT")
        except BaseException:
            await _settle(db)
            raise

    async def close(self) -> None:
        """Wait for the running read and write, then close both connections."""
        async with self._write_lock:
            writer, reader = self._writer, self._reader
            self._writer = self._reader = None
            if reader is not None and reader is not writer:
                async with self._read_lock:
                    await reader.close()
            if writer is not None:
                try:
                    await writer.execute("PRAGMA optimize")
                except sqlite3.Error:
                    pass  # only a hint for the query planner; closing matters more
                finally:
                    await writer.close()

    async def ping(self) -> bool:
        try:
            async with self._read() as db:
                rows = list(await db.execute_fetchall("SELECT 1"))
        except StoreError:
            return False
        return rows == [(1,)]

    # ------------------------------------------------------------------ composed features

    async def acquire_rate(
        self,
        key: str,
        rate_per_second: float,
        burst: int,
        now: datetime,
        *,
        max_wait: float | None = None,
    ) -> float:
        return await self._rates.acquire_rate(key, rate_per_second, burst, now, max_wait=max_wait)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction on the writer connection; rolled back on any error."""
        async with self._write_lock:
            db = self._writer
            if db is None:
                raise StoreError("the store is not open")
            try:
                await db.execute("BEGIN IMMEDIATE")
                yield db
                await db.execute("COMMIT")
            except BaseException as exc:
                await _settle(db)
                if isinstance(exc, sqlite3.Error):
                    raise StoreError("store write failed") from exc
                raise

    @asynccontextmanager
    async def _read(self, *, snapshot: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """The read connection; ``snapshot`` wraps several reads in one transaction."""
        async with self._read_lock:
            db = self._reader
            if db is None:
                raise StoreError("the store is not open")
            try:
                if snapshot:
                    await db.execute("BEGIN")
                yield db
            except sqlite3.Error as exc:
                raise StoreError("store read failed") from exc
            finally:
                if snapshot:
                    await _settle(db)

    # ------------------------------------------------------------------ tenants

    async def create_tenant(self, tenant: Tenant, first_key: ApiKey | None = None) -> None:
        async with self._write() as db:
            try:
                await db.execute(
                    "INSERT INTO tenants (id, name, api_key_hash, webhook_secret, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        tenant.id,
                        tenant.name,
                        tenant.api_key_hash,
                        tenant.webhook_secret,
                        _ts(tenant.created_at),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict("a tenant with this id or key exists already") from exc
            await insert_api_key(db, first_key or first_api_key(tenant))

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return await self._one_tenant("id", tenant_id)

    async def _one_tenant(self, column: str, value: str) -> Tenant | None:
        async with self._read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT id, name, api_key_hash, webhook_secret, created_at FROM tenants "
                    f"WHERE {column} = ?",
                    (value,),
                )
            )
        return _tenant(rows[0]) if rows else None

    async def list_tenants(self) -> list[Tenant]:
        async with self._read() as db:
            rows = await db.execute_fetchall(
                "SELECT id, name, api_key_hash, webhook_secret, created_at FROM tenants ORDER BY id"
            )
        return [_tenant(row) for row in rows]

    # ------------------------------------------------------------------ directory

    async def apply_directory(
        self, tenant_id: str, batch: DirectoryBatch, at: datetime | None = None
    ) -> dict[str, int]:
        at = at or datetime.now(UTC)
        async with self._write() as db:
            known = await self._known_for(db, tenant_id, batch)
            await asyncio.to_thread(check_batch, batch, known)  # 100,000s of rows
            await self._upsert_directory(db, tenant_id, batch, at)
            applied = 0
            if batch.preferences:
                cursor = await db.executemany(
                    "INSERT INTO preferences (tenant_id, person_id, source, data) "
                    "VALUES (?, ?, 'import', ?) ON CONFLICT (tenant_id, person_id) "
                    "DO UPDATE SET data = excluded.data WHERE preferences.source = 'import'",
                    [
                        (tenant_id, person_id, prefs.model_dump_json())
                        for person_id, prefs in batch.preferences.items()
                    ],
                )
                applied = cursor.rowcount
        return {
            "units": len(batch.units),
            "groups": len(batch.groups),
            "persons": len(batch.persons),
            "relations": len(batch.relations),
            "preferences": applied,
        }

    async def _known_for(
        self, db: aiosqlite.Connection, tenant_id: str, batch: DirectoryBatch
    ) -> Known:
        refs = await asyncio.to_thread(batch_refs, batch)
        units, groups, roles = refs.known
        units |= await _existing(db, "units", tenant_id, refs.wanted_units)
        groups |= await _existing(db, "unit_groups", tenant_id, refs.wanted_groups)
        missing = refs.wanted_persons
        if missing:
            rows = await db.execute_fetchall(
                f"SELECT id, role FROM persons WHERE tenant_id = ? AND id IN {_IDS}",
                (tenant_id, _id_list(missing)),
            )
            roles.update({row[0]: row[1] for row in rows})
        return Known(units, groups, roles)

    async def _upsert_directory(
        self, db: aiosqlite.Connection, tenant_id: str, batch: DirectoryBatch, at: datetime
    ) -> None:
        # Rows are generators: aiosqlite's thread builds them as it inserts, so a batch of
        # 100,000 persons never holds the event loop.
        await db.executemany(
            "INSERT INTO units (tenant_id, id, kind, name, time_zone, sender_name, sms_sender) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, id) DO UPDATE SET "
            "kind = excluded.kind, name = excluded.name, time_zone = excluded.time_zone, "
            "sender_name = excluded.sender_name, sms_sender = excluded.sms_sender",
            (
                (tenant_id, u.id, u.kind.value, u.name, u.time_zone, u.sender_name, u.sms_sender)
                for u in batch.units
            ),
        )
        await db.executemany(
            "INSERT INTO unit_groups (tenant_id, id, unit_id, kind, name) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (tenant_id, id) DO UPDATE SET unit_id = excluded.unit_id, "
            "kind = excluded.kind, name = excluded.name",
            ((tenant_id, g.id, g.unit_id, g.kind.value, g.name) for g in batch.groups),
        )
        stored = await _load_persons(db, tenant_id, [p.id for p in batch.persons])
        persons = []
        for imported in batch.persons:
            before = stored.get(imported.id)
            written = merge_imported(before, imported)
            if raised_by_import(before, written):
                entry = import_raise(before, written, at)
                await _write_protection_history(db, tenant_id, written.id, entry)
            stored[written.id] = written  # a repeated row merges with the one before
            persons.append(written)
        await db.executemany(
            f"INSERT INTO persons (tenant_id, {_PERSON_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, id) DO UPDATE SET "
            "role = excluded.role, given_name = excluded.given_name, "
            "family_name = excluded.family_name, birth_date = excluded.birth_date, "
            "protection = excluded.protection, email = excluded.email, phone = excluded.phone, "
            "language = excluded.language, consent_guardians = excluded.consent_guardians",
            (
                (
                    tenant_id,
                    p.id,
                    p.role.value,
                    p.given_name,
                    p.family_name,
                    None if p.birth_date is None else p.birth_date.isoformat(),
                    p.protection.value,
                    p.email,
                    p.phone,
                    p.language,
                    int(p.consent_guardians),
                )
                for p in persons
            ),
        )
        if batch.persons:
            # An upserted person's memberships are exactly those of the batch.
            person_ids = _id_list(p.id for p in batch.persons)
            for table in ("person_units", "person_groups"):
                await db.execute(
                    f"DELETE FROM {table} WHERE tenant_id = ? AND person_id IN {_IDS}",
                    (tenant_id, person_ids),
                )
            await db.executemany(
                "INSERT OR IGNORE INTO person_units (tenant_id, unit_id, person_id, pos) "
                "VALUES (?, ?, ?, ?)",
                (
                    (tenant_id, unit_id, p.id, pos)
                    for p in batch.persons
                    for pos, unit_id in enumerate(p.unit_ids)
                ),
            )
            await db.executemany(
                "INSERT OR IGNORE INTO person_groups (tenant_id, group_id, person_id, pos) "
                "VALUES (?, ?, ?, ?)",
                (
                    (tenant_id, group_id, p.id, pos)
                    for p in batch.persons
                    for pos, group_id in enumerate(p.group_ids)
                ),
            )
        await db.executemany(
            "INSERT INTO relations (tenant_id, child_id, guardian_id, parental_responsibility, "
            "daily_care) VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, child_id, guardian_id) "
            "DO UPDATE SET parental_responsibility = excluded.parental_responsibility, "
            "daily_care = excluded.daily_care",
            (
                (
                    tenant_id,
                    r.child_id,
                    r.guardian_id,
                    int(r.parental_responsibility),
                    int(r.daily_care),
                )
                for r in batch.relations
            ),
        )

    async def delete_directory(self, tenant_id: str, deletion: DirectoryDeletion) -> dict[str, int]:
        async with self._write() as db:
            check_deletion(deletion, await self._deletion_facts(db, tenant_id, deletion))
            counts = {"units": 0, "groups": 0, "persons": 0, "relations": 0}
            if deletion.relations:
                cursor = await db.executemany(
                    "DELETE FROM relations "
                    "WHERE tenant_id = ? AND child_id = ? AND guardian_id = ?",
                    [(tenant_id, r.child_id, r.guardian_id) for r in deletion.relations],
                )
                counts["relations"] = cursor.rowcount
            if deletion.persons:
                counts["persons"] = await self._delete_persons(db, tenant_id, deletion.persons)
            if deletion.groups:
                ids = _id_list(deletion.groups)
                await db.execute(
                    f"DELETE FROM person_groups WHERE tenant_id = ? AND group_id IN {_IDS}",
                    (tenant_id, ids),
                )
                cursor = await db.execute(
                    f"DELETE FROM unit_groups WHERE tenant_id = ? AND id IN {_IDS}",
                    (tenant_id, ids),
                )
                counts["groups"] = cursor.rowcount
            if deletion.units:
                ids = _id_list(deletion.units)
                await db.execute(
                    f"DELETE FROM person_units WHERE tenant_id = ? AND unit_id IN {_IDS}",
                    (tenant_id, ids),
                )
                cursor = await db.execute(
                    f"DELETE FROM units WHERE tenant_id = ? AND id IN {_IDS}", (tenant_id, ids)
                )
                counts["units"] = cursor.rowcount
        return counts

    async def _deletion_facts(
        self, db: aiosqlite.Connection, tenant_id: str, deletion: DirectoryDeletion
    ) -> DeletionFacts:
        found = [
            await _existing(db, table, tenant_id, set(ids))
            for table, ids in (
                ("units", deletion.units),
                ("unit_groups", deletion.groups),
                ("persons", deletion.persons),
            )
        ]
        pairs: set[tuple[str, str]] = set()
        if deletion.relations:
            rows = await db.execute_fetchall(
                "SELECT child_id, guardian_id FROM relations WHERE tenant_id = ? AND "
                "(child_id, guardian_id) IN (SELECT json_extract(value, '$[0]'), "
                "json_extract(value, '$[1]') FROM json_each(?))",
                (tenant_id, _json([[r.child_id, r.guardian_id] for r in deletion.relations])),
            )
            pairs = {(row[0], row[1]) for row in rows}
        unit_groups: dict[str, set[str]] = {}
        if deletion.units:
            rows = await db.execute_fetchall(
                f"SELECT id, unit_id FROM unit_groups WHERE tenant_id = ? AND unit_id IN {_IDS}",
                (tenant_id, _id_list(deletion.units)),
            )
            for row in rows:
                unit_groups.setdefault(row[1], set()).add(row[0])
        return DeletionFacts(found[0], found[1], found[2], pairs, unit_groups)

    @staticmethod
    async def _delete_persons(db: aiosqlite.Connection, tenant_id: str, ids: list[str]) -> int:
        """Delete persons with their memberships, relations, devices, preferences and
        contact failures; manual relation flags stay."""
        params = (tenant_id, _id_list(ids))
        for table in (
            "person_units",
            "person_groups",
            "devices",
            "preferences",
            "contact_failures",
        ):
            await db.execute(
                f"DELETE FROM {table} WHERE tenant_id = ? AND person_id IN {_IDS}", params
            )
        await db.execute(
            f"DELETE FROM relations WHERE tenant_id = ? AND child_id IN {_IDS}", params
        )
        await db.execute(
            f"DELETE FROM relations WHERE tenant_id = ? AND guardian_id IN {_IDS}", params
        )
        cursor = await db.execute(
            f"DELETE FROM persons WHERE tenant_id = ? AND id IN {_IDS}", params
        )
        return cursor.rowcount

    async def set_relation_flag(
        self,
        tenant_id: str,
        child_id: str,
        guardian_id: str,
        flag: str,
        value: bool,
        reason: str,
        actor: str,
        at: datetime,
    ) -> RelationFlags:
        check_relation_flag(flag)
        reason_column = _FLAG_COLUMNS[flag]
        async with self._write() as db:
            found = await _existing(db, "persons", tenant_id, {child_id, guardian_id})
            if found != {child_id, guardian_id}:
                raise NotFound("unknown person")
            key = (tenant_id, child_id, guardian_id)
            # flag and reason_column come from _FLAG_COLUMNS, never from the caller.
            await db.execute(
                f"INSERT INTO relation_flags (tenant_id, child_id, guardian_id, {flag}, "
                f"{reason_column}, updated_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                f"ON CONFLICT (tenant_id, child_id, guardian_id) DO UPDATE SET "
                f"{flag} = excluded.{flag}, {reason_column} = excluded.{reason_column}, "
                "updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                (*key, int(value), reason, actor, _ts(at)),
            )
            await db.execute(
                "INSERT INTO relation_flag_history (tenant_id, child_id, guardian_id, flag, "
                "value, reason, actor, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, flag, int(value), reason, actor, _ts(at)),
            )
            rows = list(
                await db.execute_fetchall(
                    "SELECT information_granted, information_reason, blocked, blocked_reason, "
                    "updated_by, updated_at FROM relation_flags "
                    "WHERE tenant_id = ? AND child_id = ? AND guardian_id = ?",
                    key,
                )
            )
        return _flags(rows[0])

    async def flag_history(
        self, tenant_id: str, child_id: str, guardian_id: str
    ) -> list[FlagHistoryEntry]:
        async with self._read() as db:
            rows = await db.execute_fetchall(
                "SELECT flag, value, reason, actor, at FROM relation_flag_history "
                "WHERE tenant_id = ? AND child_id = ? AND guardian_id = ? ORDER BY id",
                (tenant_id, child_id, guardian_id),
            )
        return [
            FlagHistoryEntry(flag=r[0], value=bool(r[1]), reason=r[2], actor=r[3], at=_dt(r[4]))
            for r in rows
        ]

    async def set_protection(
        self,
        tenant_id: str,
        person_id: str,
        level: Protection,
        reason: str,
        actor: str,
        at: datetime,
    ) -> ProtectionHistoryEntry:
        async with self._write() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT protection FROM persons WHERE tenant_id = ? AND id = ?",
                    (tenant_id, person_id),
                )
            )
            if not rows:
                raise NotFound("unknown person")
            previous = Protection(rows[0][0])
            await db.execute(
                "UPDATE persons SET protection = ? WHERE tenant_id = ? AND id = ?",
                (level.value, tenant_id, person_id),
            )
            entry = ProtectionHistoryEntry(level, previous, reason, actor, at)
            await _write_protection_history(db, tenant_id, person_id, entry)
        return entry

    async def protection_history(
        self, tenant_id: str, person_id: str
    ) -> list[ProtectionHistoryEntry]:
        async with self._read() as db:
            rows = await db.execute_fetchall(
                "SELECT level, previous, reason, actor, at FROM protection_history "
                "WHERE tenant_id = ? AND person_id = ? ORDER BY id",
                (tenant_id, person_id),
            )
        return [
            ProtectionHistoryEntry(Protection(r[0]), Protection(r[1]), r[2], r[3], _dt(r[4]))
            for r in rows
        ]

    async def get_person(self, tenant_id: str, person_id: str) -> Person | None:
        async with self._read(snapshot=True) as db:
            persons = await _load_persons(db, tenant_id, [person_id])
        return persons.get(person_id)

    async def missing_ids(self, tenant_id: str, audience: Audience) -> list[tuple[str, str]]:
        missing: list[tuple[str, str]] = []
        async with self._read(snapshot=True) as db:
            for field, kind, roles, ids in audience_ids(audience):
                if not ids:
                    continue
                found = await _existing(db, _TABLES[kind], tenant_id, set(ids), roles=roles)
                missing.extend((field, i) for i in ids if i not in found)
        return missing

    async def load_audience(self, tenant_id: str, audience: Audience) -> DirectorySnapshot:
        async with self._read(snapshot=True) as db:
            children = await _audience_children(db, tenant_id, audience)
            relations = await _load_relations(db, tenant_id, children, audience.guardians)
            wanted = dict.fromkeys(children)
            for relation in relations:
                wanted[relation.child_id] = None
                wanted[relation.guardian_id] = None
            wanted.update(dict.fromkeys(audience.guardians))
            wanted.update(dict.fromkeys(audience.staff))
            person_ids = list(wanted)
            persons = await _load_persons(db, tenant_id, person_ids)
            group_ids = dict.fromkeys(audience.groups)
            unit_ids = dict.fromkeys(audience.units)
            for person in persons.values():
                group_ids.update(dict.fromkeys(person.group_ids))
                unit_ids.update(dict.fromkeys(person.unit_ids))
            groups = await _load_groups(db, tenant_id, list(group_ids))
            unit_ids.update(dict.fromkeys(g.unit_id for g in groups.values()))
            units = await _load_units(db, tenant_id, list(unit_ids))
            ids_json = _id_list(persons)
            preferences = await _load_preferences(db, tenant_id, ids_json)
            devices = await _load_devices(db, tenant_id, ids_json)
            failing = await _load_failing(db, tenant_id, ids_json)
        return DirectorySnapshot.model_construct(
            units=units,
            groups=groups,
            persons=persons,
            audience_children=children,
            relations=relations,
            preferences=preferences,
            devices=devices,
            failing=failing,
        )

    # ------------------------------------------------------------------ guardian self-service

    async def set_preferences(self, tenant_id: str, guardian_id: str, prefs: Preferences) -> None:
        async with self._write() as db:
            await db.execute(
                "INSERT INTO preferences (tenant_id, person_id, source, data) "
                "VALUES (?, ?, 'guardian', ?) ON CONFLICT (tenant_id, person_id) "
                "DO UPDATE SET source = 'guardian', data = excluded.data",
                (tenant_id, guardian_id, prefs.model_dump_json()),
            )

    async def get_preferences(self, tenant_id: str, guardian_id: str) -> Preferences | None:
        async with self._read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT data FROM preferences WHERE tenant_id = ? AND person_id = ?",
                    (tenant_id, guardian_id),
                )
            )
        return Preferences.model_validate_json(rows[0][0]) if rows else None

    async def upsert_device(self, tenant_id: str, guardian_id: str, device: Device) -> None:
        async with self._write() as db:
            if device.token is not None:
                await db.execute(
                    "DELETE FROM devices WHERE tenant_id = ? AND token = ? "
                    "AND NOT (person_id = ? AND id = ?)",
                    (tenant_id, device.token, guardian_id, device.id),
                )
            if device.fid is not None:
                await db.execute(
                    "DELETE FROM devices WHERE tenant_id = ? AND fid = ? "
                    "AND NOT (person_id = ? AND id = ?)",
                    (tenant_id, device.fid, guardian_id, device.id),
                )
            await db.execute(
                "INSERT OR REPLACE INTO devices (tenant_id, person_id, id, token, fid, platform, "
                "app_version, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tenant_id,
                    guardian_id,
                    device.id,
                    device.token,
                    device.fid,
                    device.platform,
                    device.app_version,
                    _ts_opt(device.last_seen),
                ),
            )

    async def remove_device(self, tenant_id: str, guardian_id: str, device_id: str) -> bool:
        async with self._write() as db:
            cursor = await db.execute(
                "DELETE FROM devices WHERE tenant_id = ? AND person_id = ? AND id = ?",
                (tenant_id, guardian_id, device_id),
            )
            return cursor.rowcount > 0

    async def list_devices(self, tenant_id: str, guardian_id: str) -> list[Device]:
        async with self._read() as db:
            devices = await _load_devices(db, tenant_id, _id_list([guardian_id]))
        return devices.get(guardian_id, [])

    # ------------------------------------------------------------------ events and messages

    async def accept_message(self, message: Message, job: Job) -> Message:
        async with self._write() as db:
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
                    _ts(message.created_at),
                    _ts_opt(message.planned_at),
                ),
            )
            if cursor.rowcount == 1:
                await _insert_jobs(db, [job])
                return message
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message.id,)
                )
            )
        return _message(rows[0])

    async def get_message(self, tenant_id: str, message_id: str) -> Message | None:
        async with self._read() as db:
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
            args.extend((_ts(before), _ts(before), before_id))
        elif before is not None:
            sql += " AND created_at < ?"
            args.append(_ts(before))
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(limit)
        async with self._read() as db:
            rows = list(await db.execute_fetchall(sql, args))
        return [_message(row) for row in rows]

    async def mark_planned(self, tenant_id: str, message_id: str, at: datetime) -> None:
        async with self._write() as db:
            await db.execute(
                "UPDATE messages SET planned_at = ? WHERE id = ? AND tenant_id = ?",
                (_ts(at), message_id, tenant_id),
            )

    # ------------------------------------------------------------------ deliveries

    async def add_deliveries(self, deliveries: Sequence[Delivery], jobs: Sequence[Job]) -> int:
        unique = {d.id: d for d in reversed(deliveries)}  # the first of a repeated id wins
        async with self._write() as db:
            new: list[Delivery] = list(unique.values())
            if unique:
                rows = await db.execute_fetchall(
                    f"SELECT id FROM deliveries WHERE id IN {_IDS}", (_id_list(unique),)
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
                    [(d.id, d.status.value, _ts(d.created_at), d.reason) for d in new],
                )
            await _insert_jobs(db, jobs)
        return len(new)

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        async with self._read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)
                )
            )
        return _delivery(rows[0]) if rows else None

    async def get_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, Delivery]:
        if not delivery_ids:
            return {}
        async with self._read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id IN {_IDS}",
                (_id_list(delivery_ids),),
            )
        return {row[0]: _delivery(row) for row in rows}

    async def list_deliveries(self, tenant_id: str, message_id: str) -> list[Delivery]:
        async with self._read() as db:
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
        async with self._read() as db:
            rows = await db.execute_fetchall(
                "SELECT delivery_id, status, at, detail FROM status_history "
                f"WHERE delivery_id IN {_IDS} ORDER BY delivery_id, id",
                (_id_list(result),),
            )
        for row in rows:
            result[row[0]].append(
                StatusChange.model_construct(
                    delivery_id=row[0],
                    status=DeliveryStatus(row[1]),
                    at=_dt(row[2]),
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
        async with self._write() as db:
            moved = await _apply_moves(db, [move])
            await _insert_jobs(db, jobs)
        return moved[0]

    async def note_attempt(self, delivery_id: str, at: datetime, detail: str) -> bool:
        async with self._write() as db:
            cursor = await db.execute(
                "INSERT INTO status_history (delivery_id, status, at, detail) "
                "SELECT id, status, ?, ? FROM deliveries WHERE id = ? AND status = 'sending'",
                (_ts(at), detail, delivery_id),
            )
        return cursor.rowcount == 1

    async def delivery_by_provider_id(self, channel: str, provider_id: str) -> Delivery | None:
        async with self._read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_DELIVERY_COLUMNS} FROM deliveries "
                    "WHERE channel = ? AND provider_id = ? ORDER BY created_at DESC LIMIT 1",
                    (channel, provider_id),
                )
            )
        return _delivery(rows[0]) if rows else None

    async def count_by_status(self, tenant_id: str, message_id: str) -> dict[str, int]:
        async with self._read() as db:
            rows = await db.execute_fetchall(
                "SELECT status, COUNT(*) FROM deliveries WHERE tenant_id = ? AND message_id = ? "
                "GROUP BY status",
                (tenant_id, message_id),
            )
        return {row[0]: row[1] for row in rows}

    async def delivery_stats(self) -> dict[tuple[str, str], int]:
        async with self._read() as db:
            rows = await db.execute_fetchall(
                "SELECT channel, status, COUNT(*) FROM deliveries GROUP BY channel, status"
            )
        return {(row[0], row[1]): row[2] for row in rows}

    async def latest_delivery_to(
        self, tenant_id: str, channel: str, address: str
    ) -> Delivery | None:
        async with self._read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE channel = ? "
                    "AND address = ? AND tenant_id = ? ORDER BY created_at DESC, id DESC LIMIT 1",
                    (channel, address, tenant_id),
                )
            )
        return _delivery(rows[0]) if rows else None

    async def tenant_for_address(self, channel: str, address: str) -> str | None:
        async with self._read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT tenant_id FROM deliveries WHERE channel = ? AND address = ? "
                    "ORDER BY created_at DESC, id DESC LIMIT 1",
                    (channel, address),
                )
            )
        return rows[0][0] if rows else None

    async def mark_contact_failing(
        self, tenant_id: str, person_id: str, kind: str, address: str, code: str, at: datetime
    ) -> None:
        check_contact_kind(kind)
        async with self._write() as db:
            await db.execute(
                "INSERT OR REPLACE INTO contact_failures (tenant_id, person_id, kind, address, "
                "code, at) VALUES (?, ?, ?, ?, ?, ?)",
                (tenant_id, person_id, kind, address, code, _ts(at)),
            )

    # ------------------------------------------------------------------ replies

    async def add_reply(self, reply: Reply) -> bool:
        async with self._write() as db:
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
                    _ts(reply.received_at),
                ),
            )
            return cursor.rowcount == 1

    async def list_replies(self, tenant_id: str, message_id: str) -> list[Reply]:
        async with self._read() as db:
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
                received_at=_dt(r[7]),
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ inbox (in-app)

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
        params: list[Any] = [tenant_id, guardian_id, *_NOT_IN_INBOX, _ts(now or datetime.now(UTC))]
        query = _INBOX_QUERY
        if before is not None and before_id is not None:
            query += " AND (m.created_at < ? OR (m.created_at = ? AND m.id < ?))"
            params.extend((_ts(before), _ts(before), before_id))
        elif before is not None:
            query += " AND m.created_at < ?"
            params.append(_ts(before))
        query += " ORDER BY m.created_at DESC, m.id DESC LIMIT ?"
        params.append(max(0, limit))
        async with self._read() as db:
            rows = await db.execute_fetchall(query, params)
        return [_inbox_item(row) for row in rows]

    async def inbox_item(
        self, tenant_id: str, guardian_id: str, message_id: str, *, now: datetime | None = None
    ) -> InboxItem | None:
        params = (
            tenant_id,
            guardian_id,
            *_NOT_IN_INBOX,
            _ts(now or datetime.now(UTC)),
            message_id,
        )
        async with self._read() as db:
            rows = list(await db.execute_fetchall(_INBOX_QUERY + " AND d.message_id = ?", params))
        return _inbox_item(rows[0]) if rows else None

    async def mark_read(
        self, tenant_id: str, guardian_id: str, message_id: str, at: datetime, via: str
    ) -> bool:
        async with self._write() as db:
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
                (tenant_id, message_id, guardian_id, _ts(at), via),
            )
            moves = [
                SendOutcome("", row[0], DeliveryStatus.read, at, detail=via)
                for row in rows
                if row[1] == "inapp"
            ]
            if moves:
                await _apply_moves(db, moves)
        return True

    # ------------------------------------------------------------------ work queue

    async def claim_jobs(
        self,
        kinds: Sequence[str],
        limit: int,
        now: datetime,
        lease_seconds: float,
        *,
        normal_share: float = lanes.DEFAULT_NORMAL_SHARE,
    ) -> list[Job]:
        if not kinds or limit <= 0:
            return []
        split = lanes.split(limit, normal_share)
        lease_end = _ts(now + timedelta(seconds=lease_seconds))
        stamp = _ts(now)
        # One index-ordered, limited arm per kind and lane: no sort over every due job.
        arm = (
            "SELECT * FROM (SELECT id, urgent, visible_at FROM jobs WHERE kind = ? "
            "AND urgent = ? AND visible_at <= ? ORDER BY visible_at, id LIMIT ?)"
        )
        wanted = list(dict.fromkeys(kinds))
        async with self._write() as db:
            # Inside one write transaction: the claim is atomic even against another process.
            due: dict[int, list[str]] = {}
            for lane in (1, 0):
                params: list[Any] = []
                for kind in wanted:
                    params.extend((kind, lane, stamp, limit))
                rows = await db.execute_fetchall(
                    f"SELECT id FROM ({' UNION ALL '.join(arm for _ in wanted)}) "
                    "ORDER BY visible_at, id LIMIT ?",
                    [*params, limit],
                )
                due[lane] = [row[0] for row in rows]
            urgent, normal = lanes.take(split, len(due[1]), len(due[0]))
            chosen = due[1][:urgent] + due[0][:normal]
            if not chosen:
                return []
            rows = await db.execute_fetchall(
                "UPDATE jobs SET visible_at = ?, leased_until = ?, attempts = attempts + 1 "
                f"WHERE id IN {_IDS} RETURNING {_JOB_COLUMNS}",
                [lease_end, lease_end, _id_list(chosen)],
            )
        jobs = [_job(row) for row in rows]
        jobs.sort(key=lambda job: (not job.urgent, job.due_at, job.id))
        return jobs

    async def finish_job(self, job_id: str) -> None:
        async with self._write() as db:
            await db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    async def finish_send(
        self,
        job_id: str,
        delivery_id: str,
        status: DeliveryStatus,
        at: datetime,
        *,
        detail: str | None = None,
        reason: str | None = None,
        provider_id: str | None = None,
        segments: int | None = None,
    ) -> bool:
        move = SendOutcome("", delivery_id, status, at, detail, reason, provider_id, segments)
        async with self._write() as db:
            moved = await _apply_moves(db, [move])
            await db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return moved[0]

    async def finish_sends(self, outcomes: Sequence[SendOutcome]) -> int:
        if not outcomes:
            return 0
        moves = outcomes  # a send outcome is a status move with the end of its job
        async with self._write() as db:
            moved = await _apply_moves(db, moves)
            await db.executemany("DELETE FROM jobs WHERE id = ?", [(o.job_id,) for o in outcomes])
            await _insert_jobs(db, [job for o in outcomes for job in o.jobs])
        return sum(moved)

    async def retry_job(self, job_id: str, due_at: datetime, error: str) -> None:
        due = _ts(due_at)
        async with self._write() as db:
            await db.execute(
                "UPDATE jobs SET due_at = ?, visible_at = ?, leased_until = NULL, last_error = ? "
                "WHERE id = ?",
                (due, due, error, job_id),
            )

    async def queue_stats(self, now: datetime) -> dict[str, tuple[int, float]]:
        stamp = _ts(now)
        async with self._read() as db:
            rows = await db.execute_fetchall(
                "SELECT kind, "
                "SUM(leased_until IS NULL OR leased_until <= :now), "
                "MIN(CASE WHEN (leased_until IS NULL OR leased_until <= :now) "
                "AND visible_at <= :now THEN due_at END) "
                "FROM jobs GROUP BY kind",
                {"now": stamp},
            )
        return {
            row[0]: (int(row[1]), 0.0 if row[2] is None else max(0.0, (stamp - row[2]) / 1e6))
            for row in rows
        }


# --------------------------------------------------------------------------- query helpers


async def _rollback(db: aiosqlite.Connection) -> None:
    # Unconditional: the connection's worker runs calls in order, so this comes after
    # any statement of a cancelled caller. "No transaction is active" is fine too.
    with contextlib.suppress(sqlite3.Error):
        await db.execute("ROLLBACK")


async def _settle(db: aiosqlite.Connection) -> None:
    """Roll back and wait for it, even through repeated cancellation, so the lock is
    never released over an open transaction; a cancellation is passed on afterwards."""
    rollback = asyncio.ensure_future(_rollback(db))
    cancelled = False
    while not rollback.done():
        try:
            await asyncio.shield(rollback)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


async def _existing(
    db: aiosqlite.Connection,
    table: str,
    tenant_id: str,
    ids: set[str],
    *,
    roles: tuple[str, ...] = (),
) -> set[str]:
    """The ids of ``ids`` stored in ``table`` (a constant of ours) for this tenant."""
    if not ids:
        return set()
    sql = f"SELECT id FROM {table} WHERE tenant_id = ? AND id IN {_IDS}"
    params: list[Any] = [tenant_id, _id_list(ids)]
    if roles:
        sql += f" AND role IN ({', '.join('?' for _ in roles)})"
        params.extend(roles)
    rows = await db.execute_fetchall(sql, params)
    return {row[0] for row in rows}


async def _add_job_lanes(db: aiosqlite.Connection) -> None:
    """Give a jobs table of an older version its lane column (the jobs queued there are
    normal work) and the index claims read each lane through."""
    columns = {row[1] for row in await db.execute_fetchall("PRAGMA table_info(jobs)")}
    if "urgent" not in columns:
        await db.execute("ALTER TABLE jobs ADD COLUMN urgent INTEGER NOT NULL DEFAULT 0")
    await db.execute("DROP INDEX IF EXISTS jobs_by_kind_visible")
    # id in the index lets a claim read a lane in (visible_at, id) order without sorting.
    await db.execute(
        "CREATE INDEX IF NOT EXISTS jobs_by_lane_visible ON jobs (kind, urgent, visible_at, id)"
    )


async def _insert_jobs(db: aiosqlite.Connection, jobs: Sequence[Job]) -> None:
    if not jobs:
        return
    await db.executemany(
        "INSERT OR IGNORE INTO jobs (id, tenant_id, kind, ref, due_at, visible_at, leased_until, "
        "attempts, last_error, urgent) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
        [
            (
                j.id,
                j.tenant_id,
                j.kind,
                j.ref,
                _ts(j.due_at),
                _ts(j.due_at),
                j.attempts,
                j.last_error,
                int(j.urgent),
            )
            for j in jobs
        ],
    )


async def _apply_moves(db: aiosqlite.Connection, moves: Sequence[SendOutcome]) -> list[bool]:
    """Apply status moves in order inside the caller's write transaction.

    Reads the current statuses once, decides each move with can_transition, and
    writes updates and history with one executemany each.
    """
    rows = await db.execute_fetchall(
        f"SELECT id, status FROM deliveries WHERE id IN {_IDS}",
        (_id_list({m.delivery_id for m in moves}),),
    )
    current = {row[0]: DeliveryStatus(row[1]) for row in rows}
    updates: list[tuple[Any, ...]] = []
    history: list[tuple[Any, ...]] = []
    moved: list[bool] = []
    for move in moves:
        old = current.get(move.delivery_id)
        if old is not None and can_transition(old, move.status):
            current[move.delivery_id] = move.status
            at = _ts(move.at)
            updates.append(
                (
                    move.status.value,
                    at,
                    move.reason,
                    move.provider_id,
                    move.segments,
                    move.delivery_id,
                )
            )
            history.append((move.delivery_id, move.status.value, at, move.detail))
            moved.append(True)
            continue
        if old is not None and (move.provider_id is not None or move.segments is not None):
            updates.append(
                (old.value, None, None, move.provider_id, move.segments, move.delivery_id)
            )
        moved.append(False)
    if updates:
        await db.executemany(
            "UPDATE deliveries SET status = ?, updated_at = COALESCE(?, updated_at), "
            "reason = COALESCE(?, reason), provider_id = COALESCE(?, provider_id), "
            "segments = COALESCE(?, segments) WHERE id = ?",
            updates,
        )
    if history:
        await db.executemany(
            "INSERT INTO status_history (delivery_id, status, at, detail) VALUES (?, ?, ?, ?)",
            history,
        )
    return moved


async def _audience_children(
    db: aiosqlite.Connection, tenant_id: str, audience: Audience
) -> list[str]:
    """Children and learners listed, in the listed groups, or in the listed units
    (directly or through one of the unit's groups); sorted, without repeats."""
    rows = await db.execute_fetchall(
        """
        WITH wanted(id) AS (
            SELECT value FROM json_each(:children)
            UNION SELECT person_id FROM person_groups
                WHERE tenant_id = :t AND group_id IN (SELECT value FROM json_each(:groups))
            UNION SELECT person_id FROM person_units
                WHERE tenant_id = :t AND unit_id IN (SELECT value FROM json_each(:units))
            UNION SELECT pg.person_id FROM unit_groups AS g
                JOIN person_groups AS pg ON pg.tenant_id = g.tenant_id AND pg.group_id = g.id
                WHERE g.tenant_id = :t AND g.unit_id IN (SELECT value FROM json_each(:units))
        )
        SELECT p.id FROM wanted JOIN persons AS p ON p.tenant_id = :t AND p.id = wanted.id
        WHERE p.role IN ('child', 'learner') ORDER BY p.id
        """,
        {
            "t": tenant_id,
            "children": _id_list(audience.children),
            "groups": _id_list(audience.groups),
            "units": _id_list(audience.units),
        },
    )
    return [row[0] for row in rows]


async def _load_relations(
    db: aiosqlite.Connection, tenant_id: str, child_ids: list[str], guardian_ids: list[str]
) -> list[RelationRecord]:
    rows = await db.execute_fetchall(
        """
        WITH keys(child_id, guardian_id) AS (
            SELECT child_id, guardian_id FROM relations
                WHERE tenant_id = :t AND child_id IN (SELECT value FROM json_each(:children))
            UNION SELECT child_id, guardian_id FROM relations
                WHERE tenant_id = :t AND guardian_id IN (SELECT value FROM json_each(:guardians))
        )
        SELECT r.child_id, r.guardian_id, r.parental_responsibility, r.daily_care,
               f.information_granted, f.information_reason, f.blocked, f.blocked_reason,
               f.updated_by, f.updated_at
        FROM keys
        JOIN relations AS r ON r.tenant_id = :t AND r.child_id = keys.child_id
            AND r.guardian_id = keys.guardian_id
        LEFT JOIN relation_flags AS f ON f.tenant_id = r.tenant_id AND f.child_id = r.child_id
            AND f.guardian_id = r.guardian_id
        ORDER BY r.child_id, r.guardian_id
        """,
        {"t": tenant_id, "children": _id_list(child_ids), "guardians": _id_list(guardian_ids)},
    )
    return [
        RelationRecord.model_construct(
            child_id=row[0],
            guardian_id=row[1],
            parental_responsibility=bool(row[2]),
            daily_care=bool(row[3]),
            flags=_flags(row[4:10]),
        )
        for row in rows
    ]


async def _write_protection_history(
    db: aiosqlite.Connection, tenant_id: str, person_id: str, entry: ProtectionHistoryEntry
) -> None:
    await db.execute(
        "INSERT INTO protection_history (tenant_id, person_id, level, previous, reason, actor, "
        "at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            tenant_id,
            person_id,
            entry.level.value,
            entry.previous.value,
            entry.reason,
            entry.actor,
            _ts(entry.at),
        ),
    )


async def _load_persons(
    db: aiosqlite.Connection, tenant_id: str, person_ids: Sequence[str]
) -> dict[str, Person]:
    if not person_ids:
        return {}
    params = (tenant_id, _id_list(person_ids))
    rows = await db.execute_fetchall(
        f"SELECT {_PERSON_COLUMNS} FROM persons WHERE tenant_id = ? AND id IN {_IDS}", params
    )
    units: defaultdict[str, list[str]] = defaultdict(list)
    groups: defaultdict[str, list[str]] = defaultdict(list)
    for table, column, into in (
        ("person_units", "unit_id", units),
        ("person_groups", "group_id", groups),
    ):
        members = await db.execute_fetchall(
            f"SELECT person_id, {column} FROM {table} WHERE tenant_id = ? "
            f"AND person_id IN {_IDS} ORDER BY person_id, pos",
            params,
        )
        for member in members:
            into[member[0]].append(member[1])
    return {row[0]: _person(row, units.get(row[0], []), groups.get(row[0], [])) for row in rows}


async def _load_groups(
    db: aiosqlite.Connection, tenant_id: str, group_ids: list[str]
) -> dict[str, Group]:
    if not group_ids:
        return {}
    rows = await db.execute_fetchall(
        f"SELECT id, unit_id, kind, name FROM unit_groups WHERE tenant_id = ? AND id IN {_IDS}",
        (tenant_id, _id_list(group_ids)),
    )
    return {
        row[0]: Group.model_construct(
            id=row[0], unit_id=row[1], kind=GroupKind(row[2]), name=row[3]
        )
        for row in rows
    }


async def _load_units(
    db: aiosqlite.Connection, tenant_id: str, unit_ids: list[str]
) -> dict[str, Unit]:
    if not unit_ids:
        return {}
    rows = await db.execute_fetchall(
        "SELECT id, kind, name, time_zone, sender_name, sms_sender FROM units "
        f"WHERE tenant_id = ? AND id IN {_IDS}",
        (tenant_id, _id_list(unit_ids)),
    )
    return {
        row[0]: Unit.model_construct(
            id=row[0],
            kind=UnitKind(row[1]),
            name=row[2],
            time_zone=row[3],
            sender_name=row[4],
            sms_sender=row[5],
        )
        for row in rows
    }


async def _load_preferences(
    db: aiosqlite.Connection, tenant_id: str, ids_json: str
) -> dict[str, Preferences]:
    rows = await db.execute_fetchall(
        f"SELECT person_id, data FROM preferences WHERE tenant_id = ? AND person_id IN {_IDS}",
        (tenant_id, ids_json),
    )
    return {row[0]: Preferences.model_validate_json(row[1]) for row in rows}


async def _load_devices(
    db: aiosqlite.Connection, tenant_id: str, ids_json: str
) -> dict[str, list[Device]]:
    rows = await db.execute_fetchall(
        "SELECT person_id, id, token, fid, platform, app_version, last_seen FROM devices "
        f"WHERE tenant_id = ? AND person_id IN {_IDS} ORDER BY person_id, id",
        (tenant_id, ids_json),
    )
    devices: dict[str, list[Device]] = {}
    for row in rows:
        devices.setdefault(row[0], []).append(_device(row[1:]))
    return devices


async def _load_failing(
    db: aiosqlite.Connection, tenant_id: str, ids_json: str
) -> dict[str, list[str]]:
    # A failure counts only while the person's current address is the one that failed.
    rows = await db.execute_fetchall(
        "SELECT f.person_id, f.kind FROM contact_failures AS f "
        "JOIN persons AS p ON p.tenant_id = f.tenant_id AND p.id = f.person_id "
        f"WHERE f.tenant_id = ? AND f.person_id IN {_IDS} AND ("
        "(f.kind = 'email' AND p.email = f.address) OR (f.kind = 'phone' AND p.phone = f.address)"
        ") ORDER BY f.person_id, f.kind",
        (tenant_id, ids_json),
    )
    failing: dict[str, list[str]] = {}
    for row in rows:
        failing.setdefault(row[0], []).append(row[1])
    return failing
