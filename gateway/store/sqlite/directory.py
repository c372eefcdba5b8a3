"""The school directory in the SQLite backend: the ``DirectoryStore`` (imports,
deletions, manual relation flags, protection levels with their history) and
``AudienceReader`` ports (one consistent snapshot of an audience).

The checks and their messages are backend-neutral (``store/directory_checks.py``);
this module gathers the facts they need and writes the rows. Manual relation flags
live apart from the imported relation: imports never touch them."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime
from functools import partial
from typing import Any, ClassVar

import aiosqlite

from gateway.errors import NotFound
from gateway.models import (
    Audience,
    DirectoryBatch,
    DirectoryDeletion,
    DirectorySnapshot,
    Group,
    GroupKind,
    Person,
    Protection,
    RelationFlags,
    RelationRecord,
    Role,
    Unit,
    UnitKind,
)
from gateway.protection import (
    ProtectionHistoryEntry,
    import_raise,
    merge_imported,
    raised_by_import,
)
from gateway.store import FlagHistoryEntry
from gateway.store.audience import Members, People, Places, expand, staff
from gateway.store.directory_apply import (
    CHUNK_ROWS,
    ChunkHook,
    DirectoryLocks,
    applied_counts,
    write_in_chunks,
)
from gateway.store.directory_checks import (
    DeletionFacts,
    Known,
    audience_ids,
    batch_refs,
    check_batch,
    check_deletion,
    check_relation_flag,
)
from gateway.store.encoding import dumps, from_us, from_us_opt, us
from gateway.store.sqlite.base import IDS, SqliteFeature, SqliteHandle, id_list
from gateway.store.sqlite.guardians import load_devices, load_failed, load_preferences
from gateway.store.trusted import builder

_FLAG_COLUMNS = {
    "information_granted": "information_reason",
    "blocked": "blocked_reason",
}
_PERSON_COLUMNS = (
    "id, role, given_name, family_name, birth_date, protection, email, phone, language, "
    "consent_guardians"
)
# The table of each kind of directory row (directory_checks.AUDIENCE_CHECKS).
_TABLES = {"person": "persons", "group": "unit_groups", "unit": "units"}


# Rows were validated on the way in: built without validation (gateway/store/trusted).
_new_person = builder(Person)
_new_flags = builder(RelationFlags)
_new_relation = builder(RelationRecord)


# Text -> member: a dict lookup, where calling the enum is two Python calls per person.
_ROLES = {role.value: role for role in Role}
_PROTECTIONS = {level.value: level for level in Protection}


def _person(row: Any, unit_ids: list[str], group_ids: list[str]) -> Person:
    return _new_person(
        id=row[0],
        role=_ROLES[row[1]],
        given_name=row[2],
        family_name=row[3],
        birth_date=None if row[4] is None else date.fromisoformat(row[4]),
        protection=_PROTECTIONS[row[5]],
        email=row[6],
        phone=row[7],
        language=row[8],
        unit_ids=unit_ids,
        group_ids=group_ids,
        consent_guardians=bool(row[9]),
    )


def _flags(row: Any) -> RelationFlags:
    """Flags from the six flag columns (information_granted ... updated_at), NULLs as unset."""
    return _new_flags(
        information_granted=bool(row[0]),
        information_reason=row[1],
        blocked=bool(row[2]),
        blocked_reason=row[3],
        updated_by=row[4],
        updated_at=from_us_opt(row[5]),
    )


class SqliteDirectory(SqliteFeature):
    """Units, groups, persons and relations: written by imports, read as audiences."""

    SCHEMA: ClassVar[str] = """
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

-- A tenant's directory writer (store/directory_apply.py): one batch or deletion at a
-- time, across processes. A holder that dies leaves it to expire (seconds since 1970).
CREATE TABLE IF NOT EXISTS directory_locks (
    tenant_id TEXT NOT NULL PRIMARY KEY, token TEXT NOT NULL, expires_at REAL NOT NULL
) WITHOUT ROWID;

-- Every change of a person's protection level (gateway/protection.py), kept for audit.
CREATE TABLE IF NOT EXISTS protection_history (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL, person_id TEXT NOT NULL,
    level TEXT NOT NULL, previous TEXT NOT NULL, reason TEXT NOT NULL,
    actor TEXT NOT NULL, at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS protection_history_by_person
    ON protection_history (tenant_id, person_id, id);
"""

    def __init__(self, db: SqliteHandle) -> None:
        super().__init__(db)
        self._locks = DirectoryLocks(self)

    async def apply_directory(
        self,
        tenant_id: str,
        batch: DirectoryBatch,
        at: datetime | None = None,
        *,
        chunk_rows: int = CHUNK_ROWS,
        on_chunk: ChunkHook | None = None,
    ) -> dict[str, int]:
        at = at or datetime.now(UTC)
        async with self._locks.hold(tenant_id) as lease:
            known = await self._known_for(tenant_id, batch)
            await asyncio.to_thread(check_batch, batch, known)  # 100,000s of rows
            applied = await write_in_chunks(
                batch,
                partial(self._write_chunk, tenant_id, at),
                lease,
                rows=chunk_rows,
                on_chunk=on_chunk,
            )
        return applied_counts(batch, applied)

    async def _write_chunk(self, tenant_id: str, at: datetime, chunk: DirectoryBatch) -> int:
        """Write one chunk of a checked batch in one transaction; the preferences written."""
        async with self._db.write() as db:
            await self._upsert_directory(db, tenant_id, chunk, at)
            return await _upsert_preferences(db, tenant_id, chunk)

    async def try_lock(self, tenant_id: str, token: str, ttl: float) -> bool:
        now = time.time()
        async with self._db.write() as db:
            cursor = await db.execute(
                "INSERT INTO directory_locks (tenant_id, token, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant_id) DO UPDATE SET token = excluded.token, "
                "expires_at = excluded.expires_at WHERE directory_locks.expires_at < ?",
                (tenant_id, token, now + ttl, now),
            )
            return cursor.rowcount == 1

    async def renew_lock(self, tenant_id: str, token: str, ttl: float) -> bool:
        async with self._db.write() as db:
            cursor = await db.execute(
                "UPDATE directory_locks SET expires_at = ? WHERE tenant_id = ? AND token = ?",
                (time.time() + ttl, tenant_id, token),
            )
            return cursor.rowcount == 1

    async def unlock(self, tenant_id: str, token: str) -> None:
        async with self._db.write() as db:
            await db.execute(
                "DELETE FROM directory_locks WHERE tenant_id = ? AND token = ?",
                (tenant_id, token),
            )

    async def _known_for(self, tenant_id: str, batch: DirectoryBatch) -> Known:
        refs = await asyncio.to_thread(batch_refs, batch)  # not holding the reader
        units, groups, roles = refs.known
        async with self._db.read() as db:
            units |= await _existing(db, "units", tenant_id, refs.wanted_units)
            groups |= await _existing(db, "unit_groups", tenant_id, refs.wanted_groups)
            if refs.wanted_persons:
                rows = await db.execute_fetchall(
                    f"SELECT id, role FROM persons WHERE tenant_id = ? AND id IN {IDS}",
                    (tenant_id, id_list(refs.wanted_persons)),
                )
                roles.update({row[0]: row[1] for row in rows})
        return Known(units, groups, roles)

    async def _upsert_directory(
        self, db: aiosqlite.Connection, tenant_id: str, batch: DirectoryBatch, at: datetime
    ) -> None:
        # Rows are lists built here (a chunk has a few hundred): the writer's thread then
        # runs SQLite's C code, which lets the loop have the GIL while it writes.
        await _upsert_units_and_groups(db, tenant_id, batch)
        await _upsert_persons(db, tenant_id, batch, at)
        if batch.persons:
            await _replace_memberships(db, tenant_id, batch)
        await _upsert_relations(db, tenant_id, batch)

    async def delete_directory(self, tenant_id: str, deletion: DirectoryDeletion) -> dict[str, int]:
        async with self._locks.hold(tenant_id), self._db.write() as db:
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
                ids = id_list(deletion.groups)
                await db.execute(
                    f"DELETE FROM person_groups WHERE tenant_id = ? AND group_id IN {IDS}",
                    (tenant_id, ids),
                )
                cursor = await db.execute(
                    f"DELETE FROM unit_groups WHERE tenant_id = ? AND id IN {IDS}",
                    (tenant_id, ids),
                )
                counts["groups"] = cursor.rowcount
            if deletion.units:
                ids = id_list(deletion.units)
                await db.execute(
                    f"DELETE FROM person_units WHERE tenant_id = ? AND unit_id IN {IDS}",
                    (tenant_id, ids),
                )
                cursor = await db.execute(
                    f"DELETE FROM units WHERE tenant_id = ? AND id IN {IDS}", (tenant_id, ids)
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
                (tenant_id, dumps([[r.child_id, r.guardian_id] for r in deletion.relations])),
            )
            pairs = {(row[0], row[1]) for row in rows}
        unit_groups: dict[str, set[str]] = {}
        if deletion.units:
            rows = await db.execute_fetchall(
                f"SELECT id, unit_id FROM unit_groups WHERE tenant_id = ? AND unit_id IN {IDS}",
                (tenant_id, id_list(deletion.units)),
            )
            for row in rows:
                unit_groups.setdefault(row[1], set()).add(row[0])
        return DeletionFacts(found[0], found[1], found[2], pairs, unit_groups)

    @staticmethod
    async def _delete_persons(db: aiosqlite.Connection, tenant_id: str, ids: list[str]) -> int:
        """Delete persons with their memberships, relations, devices, preferences and
        contact failures; manual relation flags stay."""
        params = (tenant_id, id_list(ids))
        for table in (
            "person_units",
            "person_groups",
            "devices",
            "preferences",
            "contact_failures",
        ):
            await db.execute(
                f"DELETE FROM {table} WHERE tenant_id = ? AND person_id IN {IDS}", params
            )
        await db.execute(f"DELETE FROM relations WHERE tenant_id = ? AND child_id IN {IDS}", params)
        await db.execute(
            f"DELETE FROM relations WHERE tenant_id = ? AND guardian_id IN {IDS}", params
        )
        cursor = await db.execute(
            f"DELETE FROM persons WHERE tenant_id = ? AND id IN {IDS}", params
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
        async with self._db.write() as db:
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
                (*key, int(value), reason, actor, us(at)),
            )
            await db.execute(
                "INSERT INTO relation_flag_history (tenant_id, child_id, guardian_id, flag, "
                "value, reason, actor, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, flag, int(value), reason, actor, us(at)),
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
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT flag, value, reason, actor, at FROM relation_flag_history "
                "WHERE tenant_id = ? AND child_id = ? AND guardian_id = ? ORDER BY id",
                (tenant_id, child_id, guardian_id),
            )
        return [
            FlagHistoryEntry(flag=r[0], value=bool(r[1]), reason=r[2], actor=r[3], at=from_us(r[4]))
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
        async with self._db.write() as db:
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
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT level, previous, reason, actor, at FROM protection_history "
                "WHERE tenant_id = ? AND person_id = ? ORDER BY id",
                (tenant_id, person_id),
            )
        return [
            ProtectionHistoryEntry(Protection(r[0]), Protection(r[1]), r[2], r[3], from_us(r[4]))
            for r in rows
        ]

    async def get_person(self, tenant_id: str, person_id: str) -> Person | None:
        async with self._db.read(snapshot=True) as db:
            persons = await _load_persons(db, tenant_id, [person_id])
        return persons.get(person_id)

    async def missing_ids(self, tenant_id: str, audience: Audience) -> list[tuple[str, str]]:
        missing: list[tuple[str, str]] = []
        async with self._db.read(snapshot=True) as db:
            for field, kind, roles, ids in audience_ids(audience):
                if not ids:
                    continue
                found = await _existing(db, _TABLES[kind], tenant_id, set(ids), roles=roles)
                missing.extend((field, i) for i in ids if i not in found)
        return missing

    async def load_audience(self, tenant_id: str, audience: Audience) -> DirectorySnapshot:
        async with self._db.read(snapshot=True) as db:
            return await expand(_SqliteRead(db, tenant_id), audience)

    async def staff_members(
        self, tenant_id: str, *, group_ids: Sequence[str] = (), unit_ids: Sequence[str] = ()
    ) -> list[str]:
        """Staff placed directly in these groups or units (``AbsenceStore.staff_members``)."""
        async with self._db.read(snapshot=True) as db:
            return await staff(_SqliteRead(db, tenant_id), group_ids, unit_ids)

    async def protected_persons(self, tenant_id: str, person_ids: Sequence[str]) -> set[str]:
        if not person_ids:
            return set()
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT id FROM persons WHERE tenant_id = ? "
                "AND id IN (SELECT value FROM json_each(?)) AND protection != ?",
                (tenant_id, id_list(set(person_ids)), Protection.none.value),
            )
        return {row[0] for row in rows}


async def _upsert_preferences(
    db: aiosqlite.Connection, tenant_id: str, batch: DirectoryBatch
) -> int:
    """The batch's preferences of guardians who have not set their own; how many."""
    if not batch.preferences:
        return 0
    cursor = await db.executemany(
        "INSERT INTO preferences (tenant_id, person_id, source, data) "
        "VALUES (?, ?, 'import', ?) ON CONFLICT (tenant_id, person_id) "
        "DO UPDATE SET data = excluded.data WHERE preferences.source = 'import'",
        [
            (tenant_id, person_id, prefs.model_dump_json())
            for person_id, prefs in batch.preferences.items()
        ],
    )
    return cursor.rowcount


async def _upsert_units_and_groups(
    db: aiosqlite.Connection, tenant_id: str, batch: DirectoryBatch
) -> None:
    await db.executemany(
        "INSERT INTO units (tenant_id, id, kind, name, time_zone, sender_name, sms_sender) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, id) DO UPDATE SET "
        "kind = excluded.kind, name = excluded.name, time_zone = excluded.time_zone, "
        "sender_name = excluded.sender_name, sms_sender = excluded.sms_sender",
        [
            (tenant_id, u.id, u.kind.value, u.name, u.time_zone, u.sender_name, u.sms_sender)
            for u in batch.units
        ],
    )
    await db.executemany(
        "INSERT INTO unit_groups (tenant_id, id, unit_id, kind, name) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (tenant_id, id) DO UPDATE SET unit_id = excluded.unit_id, "
        "kind = excluded.kind, name = excluded.name",
        [(tenant_id, g.id, g.unit_id, g.kind.value, g.name) for g in batch.groups],
    )


async def _upsert_persons(
    db: aiosqlite.Connection, tenant_id: str, batch: DirectoryBatch, at: datetime
) -> None:
    """Merge each imported person with the stored one (an import never lowers a
    protection level; a raise is written to the history)."""
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
        [
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
        ],
    )


async def _replace_memberships(
    db: aiosqlite.Connection, tenant_id: str, batch: DirectoryBatch
) -> None:
    """An upserted person's memberships are exactly those of the batch."""
    person_ids = id_list(p.id for p in batch.persons)
    for table in ("person_units", "person_groups"):
        await db.execute(
            f"DELETE FROM {table} WHERE tenant_id = ? AND person_id IN {IDS}",
            (tenant_id, person_ids),
        )
    await db.executemany(
        "INSERT OR IGNORE INTO person_units (tenant_id, unit_id, person_id, pos) "
        "VALUES (?, ?, ?, ?)",
        [
            (tenant_id, unit_id, p.id, pos)
            for p in batch.persons
            for pos, unit_id in enumerate(p.unit_ids)
        ],
    )
    await db.executemany(
        "INSERT OR IGNORE INTO person_groups (tenant_id, group_id, person_id, pos) "
        "VALUES (?, ?, ?, ?)",
        [
            (tenant_id, group_id, p.id, pos)
            for p in batch.persons
            for pos, group_id in enumerate(p.group_ids)
        ],
    )


async def _upsert_relations(
    db: aiosqlite.Connection, tenant_id: str, batch: DirectoryBatch
) -> None:
    await db.executemany(
        "INSERT INTO relations (tenant_id, child_id, guardian_id, parental_responsibility, "
        "daily_care) VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, child_id, guardian_id) "
        "DO UPDATE SET parental_responsibility = excluded.parental_responsibility, "
        "daily_care = excluded.daily_care",
        [
            (
                tenant_id,
                r.child_id,
                r.guardian_id,
                int(r.parental_responsibility),
                int(r.daily_care),
            )
            for r in batch.relations
        ],
    )


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
    sql = f"SELECT id FROM {table} WHERE tenant_id = ? AND id IN {IDS}"
    params: list[Any] = [tenant_id, id_list(ids)]
    if roles:
        sql += f" AND role IN ({', '.join('?' for _ in roles)})"
        params.extend(roles)
    rows = await db.execute_fetchall(sql, params)
    return {row[0] for row in rows}


class _SqliteRead:
    """:class:`gateway.store.audience.DirectoryRead` inside the caller's read transaction."""

    def __init__(self, db: aiosqlite.Connection, tenant_id: str) -> None:
        self._db = db
        self._tenant_id = tenant_id

    async def members(self, groups: Sequence[str], units: Sequence[str]) -> Members:
        params = (self._tenant_id, id_list(groups), self._tenant_id, id_list(units))
        persons = await self._db.execute_fetchall(
            f"SELECT person_id FROM person_groups WHERE tenant_id = ? AND group_id IN {IDS} "
            f"UNION SELECT person_id FROM person_units WHERE tenant_id = ? AND unit_id IN {IDS}",
            params,
        )
        unit_groups = await self._db.execute_fetchall(
            f"SELECT id FROM unit_groups WHERE tenant_id = ? AND unit_id IN {IDS}", params[2:]
        )
        return Members({row[0] for row in persons}, {row[0] for row in unit_groups})

    async def people(self, ids: Sequence[str]) -> People:
        persons = await _load_persons(self._db, self._tenant_id, ids)
        if not persons:
            return People()
        found = id_list(persons)
        return People(
            persons,
            await load_preferences(self._db, self._tenant_id, found),
            await load_devices(self._db, self._tenant_id, found),
            await load_failed(self._db, self._tenant_id, found),
        )

    async def relations(
        self, children: Sequence[str], guardians: Sequence[str]
    ) -> list[RelationRecord]:
        return await _load_relations(self._db, self._tenant_id, children, guardians)

    async def places(self, groups: Sequence[str], units: Sequence[str]) -> Places:
        return Places(
            await _load_groups(self._db, self._tenant_id, groups),
            await _load_units(self._db, self._tenant_id, units),
        )


async def _load_relations(
    db: aiosqlite.Connection,
    tenant_id: str,
    child_ids: Sequence[str],
    guardian_ids: Sequence[str],
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
        {"t": tenant_id, "children": id_list(child_ids), "guardians": id_list(guardian_ids)},
    )
    return [
        _new_relation(
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
            us(entry.at),
        ),
    )


async def _load_persons(
    db: aiosqlite.Connection, tenant_id: str, person_ids: Sequence[str]
) -> dict[str, Person]:
    if not person_ids:
        return {}
    params = (tenant_id, id_list(person_ids))
    rows = await db.execute_fetchall(
        f"SELECT {_PERSON_COLUMNS} FROM persons WHERE tenant_id = ? AND id IN {IDS}", params
    )
    units: defaultdict[str, list[str]] = defaultdict(list)
    groups: defaultdict[str, list[str]] = defaultdict(list)
    for table, column, into in (
        ("person_units", "unit_id", units),
        ("person_groups", "group_id", groups),
    ):
        members = await db.execute_fetchall(
            f"SELECT person_id, {column} FROM {table} WHERE tenant_id = ? "
            f"AND person_id IN {IDS} ORDER BY person_id, pos",
            params,
        )
        for member in members:
            into[member[0]].append(member[1])
    return {row[0]: _person(row, units.get(row[0], []), groups.get(row[0], [])) for row in rows}


async def _load_groups(
    db: aiosqlite.Connection, tenant_id: str, group_ids: Sequence[str]
) -> dict[str, Group]:
    if not group_ids:
        return {}
    rows = await db.execute_fetchall(
        f"SELECT id, unit_id, kind, name FROM unit_groups WHERE tenant_id = ? AND id IN {IDS}",
        (tenant_id, id_list(group_ids)),
    )
    return {
        row[0]: Group.model_construct(
            id=row[0], unit_id=row[1], kind=GroupKind(row[2]), name=row[3]
        )
        for row in rows
    }


async def _load_units(
    db: aiosqlite.Connection, tenant_id: str, unit_ids: Sequence[str]
) -> dict[str, Unit]:
    if not unit_ids:
        return {}
    rows = await db.execute_fetchall(
        "SELECT id, kind, name, time_zone, sender_name, sms_sender FROM units "
        f"WHERE tenant_id = ? AND id IN {IDS}",
        (tenant_id, id_list(unit_ids)),
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
