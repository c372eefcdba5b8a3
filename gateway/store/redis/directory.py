"""The school directory in the Redis backend: units, groups, persons, relations, flags.

Under the tenant's hash tag: ``P:{t}:units``, ``groups``, ``persons``, ``roles`` (rows
as JSON lists), ``um:<unit>``, ``gm:<group>``, ``ug:<unit>`` (members, groups of a
unit), ``rc:<child>`` / ``rg:<guardian>`` (relations both ways), ``flags`` and
``fh:<pair>`` (manual flags, their history), ``ph:<person>`` (protection history).
Writes are optimistic transactions (WATCH on the version of each part they read:
``dirv``, ``prefv``, ``devv``, then MULTI/EXEC); ``load_audience`` reads are checked
against the same versions, so it returns a consistent snapshot or a StoreError. The
rules every backend keeps are in :mod:`gateway.store.directory_checks` and (audience
expansion over this module's ``_RedisRead``) :mod:`gateway.store.audience`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from functools import partial
from typing import Any, TypeVar

from redis.exceptions import WatchError

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
from gateway.store.audience import Members, People, Places, checked, expand, staff
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
from gateway.store.redis import keys as K
from gateway.store.redis.base import RedisFeature, RedisHandle
from gateway.store.redis.guardians import (
    contacts_from,
    forget_contacts,
    import_preferences,
    queue_contacts,
    read_devices,
    read_preferences,
)
from gateway.store.redis.scripts import Lua, read
from gateway.store.redis.snapshots import SnapshotCache

_FLAG_REASONS = {"information_granted": "ir", "blocked": "br"}
_FLAG_VALUES = {"information_granted": "ig", "blocked": "b"}

# The hash of each kind of directory row (directory_checks.AUDIENCE_CHECKS).
# The versions a write bumps and a checked read compares: directory, preferences, devices.
_VERSIONS = (K.DIRECTORY_VERSION, K.PREFERENCES_VERSION, K.DEVICES_VERSION)

_HASHES = {"person": K.ROLES, "group": K.GROUPS, "unit": K.UNITS}

_T = TypeVar("_T")
_LOCK_RENEW = Lua(read("directory_lock_renew"))
_LOCK_RELEASE = Lua(read("directory_lock_release"))

# Between two chunks a directory batch waits for the snapshot reads (load_audience) under
# way in any process, each marked in the tenant's ``dirread`` sorted set until it expires.
_GIVE_WAY = 2.0  # seconds it waits at most
_READ_POLL = 0.005  # how often it looks again
_READ_MARK = 10.0  # seconds a read's mark lasts if its process dies before removing it


def _person_doc(p: Person) -> str:
    return dumps(
        [
            p.role.value,
            p.given_name,
            p.family_name,
            None if p.birth_date is None else p.birth_date.isoformat(),
            p.protection.value,
            p.email,
            p.phone,
            p.language,
            p.unit_ids,
            p.group_ids,
            p.consent_guardians,
        ]
    )


def _protection_doc(entry: ProtectionHistoryEntry) -> str:
    return dumps([entry.level.value, entry.previous.value, entry.reason, entry.actor, us(entry.at)])


def _person(person_id: str, doc: str) -> Person:
    f = json.loads(doc)
    return Person.model_construct(
        id=person_id,
        role=Role(f[0]),
        given_name=f[1],
        family_name=f[2],
        birth_date=None if f[3] is None else date.fromisoformat(f[3]),
        protection=Protection(f[4]),
        email=f[5],
        phone=f[6],
        language=f[7],
        unit_ids=f[8],
        group_ids=f[9],
        consent_guardians=f[10],
    )


def _unit(unit_id: str, doc: str) -> Unit:
    f = json.loads(doc)
    return Unit.model_construct(
        id=unit_id,
        kind=UnitKind(f[0]),
        name=f[1],
        time_zone=f[2],
        sender_name=f[3],
        sms_sender=f[4],
    )


def _group(group_id: str, doc: str) -> Group:
    f = json.loads(doc)
    return Group.model_construct(id=group_id, unit_id=f[0], kind=GroupKind(f[1]), name=f[2])


def _flags(doc: str | None) -> RelationFlags:
    if doc is None:
        return RelationFlags()
    f = json.loads(doc)
    return RelationFlags.model_construct(
        information_granted=f.get("ig", False),
        information_reason=f.get("ir"),
        blocked=f.get("b", False),
        blocked_reason=f.get("br"),
        updated_by=f.get("by"),
        updated_at=from_us_opt(f.get("at")),
    )


def _queue_person_deletion(
    pipe: Any, t: Callable[..., str], p: str, doc: str | None, devices: dict[str, str]
) -> None:
    """Queue the removal of a person with memberships, devices, preferences, failures."""
    if doc is not None:
        person = _person(p, doc)
        for u in person.unit_ids:
            pipe.srem(t(K.UNIT_MEMBERS, u), p)
        for g in person.group_ids:
            pipe.srem(t(K.GROUP_MEMBERS, g), p)
    forget_contacts(pipe, t, p, devices)
    pipe.delete(t(K.CHILD_RELATIONS, p), t(K.GUARDIAN_RELATIONS, p))
    pipe.hdel(t(K.PERSONS), p)
    pipe.hdel(t(K.ROLES), p)


def _set_changes(
    t: Callable[..., str],
    persons: list[Person],
    groups: list[Group],
    old_persons: list[str | None],
    old_groups: list[str | None],
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The members to remove from and add to each set key (groups of a unit, members
    of a unit or group) for these upserts."""
    removed: defaultdict[str, set[str]] = defaultdict(set)
    added: defaultdict[str, set[str]] = defaultdict(set)
    for g, old in zip(groups, old_groups, strict=False):
        if old is not None and json.loads(old)[0] != g.unit_id:
            removed[t(K.UNIT_GROUPS, json.loads(old)[0])].add(g.id)
        added[t(K.UNIT_GROUPS, g.unit_id)].add(g.id)
    for p, old in zip(persons, old_persons, strict=False):
        if old is not None:
            before = _person(p.id, old)
            for unit_id in set(before.unit_ids) - set(p.unit_ids):
                removed[t(K.UNIT_MEMBERS, unit_id)].add(p.id)
            for group_id in set(before.group_ids) - set(p.group_ids):
                removed[t(K.GROUP_MEMBERS, group_id)].add(p.id)
        for unit_id in p.unit_ids:
            added[t(K.UNIT_MEMBERS, unit_id)].add(p.id)
        for group_id in p.group_ids:
            added[t(K.GROUP_MEMBERS, group_id)].add(p.id)
    return removed, added


class RedisDirectory(RedisFeature):
    """:class:`gateway.store.ports.DirectoryStore` and ``AudienceReader`` on Redis."""

    SCRIPTS = (_LOCK_RENEW, _LOCK_RELEASE)

    def __init__(self, db: RedisHandle) -> None:
        super().__init__(db)
        self._locks = DirectoryLocks(self)
        self._snapshots = SnapshotCache()

    async def _directory_write(
        self,
        tenant_id: str,
        body: Callable[[Any], Awaitable[_T]],
        *,
        watch: Sequence[str] = (K.DIRECTORY_VERSION,),
    ) -> _T:
        """An optimistic directory transaction: ``body`` reads (with the client or the
        pipeline), then calls ``pipe.multi()`` and queues writes; it runs again if any
        other write of what it read committed meanwhile.

        Each part of the directory has a version: ``dirv`` (units, groups, persons,
        relations, flags), ``prefv`` (preferences), ``devv`` (devices, failing contacts).
        A write bumps the version of its part; ``watch`` names the parts ``body`` reads,
        so a device registered meanwhile never makes an import start over."""
        versions = [self._db.t(tenant_id, v) for v in watch]
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*versions)
                    result = await body(pipe)
                    pipe.incrby(versions[0], K.version_step())
                    await pipe.execute()
                    return result
                except WatchError:
                    continue

    # ------------------------------------------------------------------ directory

    async def apply_directory(
        self,
        tenant_id: str,
        batch: DirectoryBatch,
        at: datetime | None = None,
        *,
        chunk_rows: int = CHUNK_ROWS,
        on_chunk: ChunkHook | None = None,
    ) -> dict[str, int]:
        when = at or datetime.now(UTC)
        async with self._locks.hold(tenant_id) as lease:
            known = await self._known_for(tenant_id, batch)
            await asyncio.to_thread(check_batch, batch, known)  # 100,000s of rows
            applied = await write_in_chunks(
                batch,
                partial(self._write_chunk, tenant_id, when),
                lease,
                rows=chunk_rows,
                on_chunk=on_chunk,
                between=partial(self._give_way, tenant_id),
            )
        return applied_counts(batch, applied)

    async def _give_way(self, tenant_id: str) -> None:
        """Between two chunks: let the snapshot reads under way in any process finish
        (each chunk changes the version they check, so they would start over), for
        ``_GIVE_WAY`` at most, so a steady stream of reads cannot hold a batch up."""
        await asyncio.sleep(0)
        readers = self._db.t(tenant_id, K.DIRECTORY_READERS)
        deadline = time.monotonic() + _GIVE_WAY
        while time.monotonic() < deadline:
            now_ms = int(time.time() * 1000)
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(readers, "-inf", now_ms)
                pipe.zcard(readers)
                _, waiting = await pipe.execute()
            if not waiting:
                return
            await asyncio.sleep(_READ_POLL)

    async def _write_chunk(self, tenant_id: str, when: datetime, chunk: DirectoryBatch) -> int:
        """One chunk of a checked batch in one MULTI/EXEC; the preferences written."""
        watch = (
            (K.DIRECTORY_VERSION, K.PREFERENCES_VERSION)
            if chunk.preferences
            else (K.DIRECTORY_VERSION,)
        )
        return await self._directory_write(
            tenant_id, partial(self._queue_chunk, tenant_id, chunk, when), watch=watch
        )

    async def _queue_chunk(
        self, tenant_id: str, chunk: DirectoryBatch, when: datetime, pipe: Any
    ) -> int:
        """Queue one chunk on ``pipe``; the preferences it writes."""
        persons = list({p.id: p for p in chunk.persons}.values())
        groups = list({g.id: g for g in chunk.groups}.values())
        async with self._redis.pipeline(transaction=False) as read:
            read.hmget(self._db.t(tenant_id, K.PERSONS), [p.id for p in persons] or ["-"])
            read.hmget(self._db.t(tenant_id, K.GROUPS), [g.id for g in groups] or ["-"])
            read_preferences(read, self._db.tk(tenant_id), list(chunk.preferences))
            old_persons, old_groups, prefs = await read.execute()
        # Every row merges with what is stored (or with its own earlier row).
        current = {
            p.id: None if old is None else _person(p.id, old)
            for p, old in zip(persons, old_persons, strict=False)  # ["-"] when empty
        }
        raises: list[tuple[str, ProtectionHistoryEntry]] = []
        for imported in chunk.persons:
            before = current[imported.id]
            current[imported.id] = merged = merge_imported(before, imported)
            if raised_by_import(before, merged):
                raises.append((imported.id, import_raise(before, merged, when)))
        persons = [merged for merged in current.values() if merged is not None]
        pipe.multi()
        self._queue_upserts(pipe, tenant_id, chunk, persons, groups, old_persons, old_groups)
        for person_id, entry in raises:
            pipe.rpush(
                self._db.t(tenant_id, K.PROTECTION_HISTORY, person_id), _protection_doc(entry)
            )
        return import_preferences(pipe, self._db.tk(tenant_id), chunk.preferences, prefs)

    async def try_lock(self, tenant_id: str, token: str, ttl: float) -> bool:
        key = self._db.t(tenant_id, K.DIRECTORY_LOCK)
        return bool(await self._redis.set(key, token, nx=True, px=int(ttl * 1000)))

    async def renew_lock(self, tenant_id: str, token: str, ttl: float) -> bool:
        key = self._db.t(tenant_id, K.DIRECTORY_LOCK)
        return bool(await self._db.eval(self._redis, _LOCK_RENEW, [key], [token, int(ttl * 1000)]))

    async def unlock(self, tenant_id: str, token: str) -> None:
        key = self._db.t(tenant_id, K.DIRECTORY_LOCK)
        await self._db.eval(self._redis, _LOCK_RELEASE, [key], [token])

    def _queue_upserts(
        self,
        pipe: Any,
        tenant_id: str,
        batch: DirectoryBatch,
        persons: list[Person],
        groups: list[Group],
        old_persons: list[str | None],
        old_groups: list[str | None],
    ) -> None:
        """Queue the writes of a chunk: one command per key touched (a chunk of 250
        persons in one class is one SADD to the class, not 250)."""
        t = self._db.tk(tenant_id)
        if batch.units:
            pipe.hset(
                t(K.UNITS),
                mapping={
                    u.id: dumps([u.kind.value, u.name, u.time_zone, u.sender_name, u.sms_sender])
                    for u in batch.units
                },
            )
        if groups:
            pipe.hset(
                t(K.GROUPS),
                mapping={g.id: dumps([g.unit_id, g.kind.value, g.name]) for g in groups},
            )
        removed, added = _set_changes(t, persons, groups, old_persons, old_groups)
        for key, members in removed.items():
            pipe.srem(key, *members)
        for key, members in added.items():
            pipe.sadd(key, *members)
        if persons:
            pipe.hset(t(K.PERSONS), mapping={p.id: _person_doc(p) for p in persons})
            pipe.hset(t(K.ROLES), mapping={p.id: p.role.value for p in persons})
        by_child: defaultdict[str, dict[str, str]] = defaultdict(dict)
        by_guardian: defaultdict[str, set[str]] = defaultdict(set)
        for r in batch.relations:
            flags = f"{int(r.parental_responsibility)}{int(r.daily_care)}"
            by_child[r.child_id][r.guardian_id] = flags
            by_guardian[r.guardian_id].add(r.child_id)
        for child_id, row in by_child.items():
            pipe.hset(t(K.CHILD_RELATIONS, child_id), mapping=row)
        for guardian_id, children in by_guardian.items():
            pipe.sadd(t(K.GUARDIAN_RELATIONS, guardian_id), *children)

    async def _known_for(self, tenant_id: str, batch: DirectoryBatch) -> Known:
        refs = await asyncio.to_thread(batch_refs, batch)
        units, groups, roles = refs.known
        more_units = sorted(refs.wanted_units)
        more_groups = sorted(refs.wanted_groups)
        more_persons = sorted(refs.wanted_persons)
        async with self._redis.pipeline(transaction=False) as read:
            read.hmget(self._db.t(tenant_id, K.UNITS), more_units or ["-"])
            read.hmget(self._db.t(tenant_id, K.GROUPS), more_groups or ["-"])
            read.hmget(self._db.t(tenant_id, K.ROLES), more_persons or ["-"])
            found_units, found_groups, found_roles = await read.execute()
        units.update(u for u, v in zip(more_units, found_units, strict=False) if v is not None)
        groups.update(g for g, v in zip(more_groups, found_groups, strict=False) if v is not None)
        roles.update(
            {p: v for p, v in zip(more_persons, found_roles, strict=False) if v is not None}
        )
        return Known(units, groups, roles)

    async def delete_directory(self, tenant_id: str, deletion: DirectoryDeletion) -> dict[str, int]:
        async with self._locks.hold(tenant_id):
            return await self._delete_directory(tenant_id, deletion)

    async def _delete_directory(
        self, tenant_id: str, deletion: DirectoryDeletion
    ) -> dict[str, int]:
        t = self._db.tk(tenant_id)

        async def body(pipe: Any) -> dict[str, int]:
            r = self._redis
            units = await r.hmget(t(K.UNITS), deletion.units or ["-"])
            groups = await r.hmget(t(K.GROUPS), deletion.groups or ["-"])
            persons = await r.hmget(t(K.PERSONS), deletion.persons or ["-"])
            pairs = [(k.child_id, k.guardian_id) for k in deletion.relations]
            related: list[str | None] = []
            if pairs:
                async with r.pipeline(transaction=False) as read:
                    for child_id, guardian_id in pairs:
                        read.hget(t(K.CHILD_RELATIONS, child_id), guardian_id)
                    related = await read.execute()
            facts = DeletionFacts(
                {u for u, v in zip(deletion.units, units, strict=False) if v is not None},
                {g for g, v in zip(deletion.groups, groups, strict=False) if v is not None},
                {p for p, v in zip(deletion.persons, persons, strict=False) if v is not None},
                {pair for pair, v in zip(pairs, related, strict=False) if v is not None},
                {
                    u: set(await r.smembers(t(K.UNIT_GROUPS, u)))
                    for u in dict.fromkeys(deletion.units)
                },
            )
            check_deletion(deletion, facts)
            plan = await self._deletion_plan(tenant_id, deletion)
            pipe.multi()
            for child_id, guardian_id in set(pairs):
                pipe.hdel(t(K.CHILD_RELATIONS, child_id), guardian_id)
                pipe.srem(t(K.GUARDIAN_RELATIONS, guardian_id), child_id)
            plan(pipe)
            return {
                "units": len(set(deletion.units)),
                "groups": len(set(deletion.groups)),
                "persons": len(set(deletion.persons)),
                "relations": len(set(pairs)),
            }

        return await self._directory_write(tenant_id, body, watch=_VERSIONS)

    async def _deletion_plan(
        self, tenant_id: str, deletion: DirectoryDeletion
    ) -> Callable[[Any], None]:
        """Read what deleting persons, groups and units touches; return the writes."""
        t = self._db.tk(tenant_id)
        r = self._redis
        person_ids = list(dict.fromkeys(deletion.persons))
        group_ids = list(dict.fromkeys(deletion.groups))
        unit_ids = list(dict.fromkeys(deletion.units))
        async with r.pipeline(transaction=False) as read:
            read.hmget(t(K.PERSONS), person_ids or ["-"])
            for p in person_ids:
                read_devices(read, t, p)
                read.hkeys(t(K.CHILD_RELATIONS, p))
                read.smembers(t(K.GUARDIAN_RELATIONS, p))
            for g in group_ids:
                read.smembers(t(K.GROUP_MEMBERS, g))
                read.hget(t(K.GROUPS), g)
            for u in unit_ids:
                read.smembers(t(K.UNIT_MEMBERS, u))
            got = await read.execute()
        docs = dict(zip(person_ids, got[0], strict=False))
        at = 1
        devices: dict[str, dict[str, str]] = {}
        as_child: dict[str, list[str]] = {}
        as_guardian: dict[str, set[str]] = {}
        for p in person_ids:
            devices[p], as_child[p], as_guardian[p] = got[at], got[at + 1], got[at + 2]
            at += 3
        group_members: dict[str, set[str]] = {}
        group_units: dict[str, str] = {}
        for g in group_ids:
            group_members[g] = got[at]
            group_units[g] = json.loads(got[at + 1])[0]
            at += 2
        unit_members = {u: got[at + i] for i, u in enumerate(unit_ids)}
        # Persons who stay but lose a group or unit get their document rewritten.
        leaving = set(person_ids)
        touched = (set().union(*group_members.values(), *unit_members.values())) - leaving
        rewritten = await self._without(tenant_id, sorted(touched), set(group_ids), set(unit_ids))

        def writes(pipe: Any) -> None:
            for p in person_ids:
                _queue_person_deletion(pipe, t, p, docs.get(p), devices[p])
                for guardian_id in as_child[p]:
                    pipe.srem(t(K.GUARDIAN_RELATIONS, guardian_id), p)
                for child_id in as_guardian[p]:
                    pipe.hdel(t(K.CHILD_RELATIONS, child_id), p)
            for g in group_ids:
                pipe.delete(t(K.GROUP_MEMBERS, g))
                pipe.srem(t(K.UNIT_GROUPS, group_units[g]), g)
                pipe.hdel(t(K.GROUPS), g)
            for u in unit_ids:
                pipe.delete(t(K.UNIT_MEMBERS, u), t(K.UNIT_GROUPS, u))
                pipe.hdel(t(K.UNITS), u)
            if rewritten:
                pipe.hset(t(K.PERSONS), mapping=rewritten)

        return writes

    async def _without(
        self, tenant_id: str, person_ids: list[str], groups: set[str], units: set[str]
    ) -> dict[str, str]:
        """The documents of these persons without the groups and units that go."""
        if not person_ids:
            return {}
        docs = await self._redis.hmget(self._db.t(tenant_id, K.PERSONS), person_ids)
        rewritten: dict[str, str] = {}
        for p, doc in zip(person_ids, docs, strict=True):
            if doc is not None:
                person = _person(p, doc)
                person.group_ids = [g for g in person.group_ids if g not in groups]
                person.unit_ids = [u for u in person.unit_ids if u not in units]
                rewritten[p] = _person_doc(person)
        return rewritten

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
        t = self._db.tk(tenant_id)
        field = f"{child_id}\x1f{guardian_id}"

        async def body(pipe: Any) -> RelationFlags:
            roles = await self._redis.hmget(t(K.ROLES), [child_id, guardian_id])
            if None in roles:
                raise NotFound("unknown person")
            current = await self._redis.hget(t(K.FLAGS), field)
            doc: dict[str, Any] = json.loads(current) if current else {}
            doc[_FLAG_VALUES[flag]] = value
            doc[_FLAG_REASONS[flag]] = reason
            doc["by"] = actor
            doc["at"] = us(at)
            pipe.multi()
            pipe.hset(t(K.FLAGS), field, dumps(doc))
            pipe.rpush(t(K.FLAG_HISTORY, field), dumps([flag, value, reason, actor, us(at)]))
            return _flags(dumps(doc))

        return await self._directory_write(tenant_id, body)

    async def flag_history(
        self, tenant_id: str, child_id: str, guardian_id: str
    ) -> list[FlagHistoryEntry]:
        rows = await self._redis.lrange(
            self._db.t(tenant_id, K.FLAG_HISTORY, f"{child_id}\x1f{guardian_id}"), 0, -1
        )
        return [
            FlagHistoryEntry(flag=f[0], value=f[1], reason=f[2], actor=f[3], at=from_us(f[4]))
            for f in map(json.loads, rows)
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
        t = self._db.tk(tenant_id)

        async def body(pipe: Any) -> ProtectionHistoryEntry:
            doc = await self._redis.hget(t(K.PERSONS), person_id)
            if doc is None:
                raise NotFound("unknown person")
            person = _person(person_id, doc)
            entry = ProtectionHistoryEntry(level, person.protection, reason, actor, at)
            pipe.multi()
            pipe.hset(
                t(K.PERSONS),
                person_id,
                _person_doc(person.model_copy(update={"protection": level})),
            )
            pipe.rpush(t(K.PROTECTION_HISTORY, person_id), _protection_doc(entry))
            return entry

        return await self._directory_write(tenant_id, body)

    async def protection_history(
        self, tenant_id: str, person_id: str
    ) -> list[ProtectionHistoryEntry]:
        rows = await self._redis.lrange(
            self._db.t(tenant_id, K.PROTECTION_HISTORY, person_id), 0, -1
        )
        return [
            ProtectionHistoryEntry(Protection(f[0]), Protection(f[1]), f[2], f[3], from_us(f[4]))
            for f in map(json.loads, rows)
        ]

    async def get_person(self, tenant_id: str, person_id: str) -> Person | None:
        doc = await self._redis.hget(self._db.t(tenant_id, K.PERSONS), person_id)
        return None if doc is None else _person(person_id, doc)

    async def missing_ids(self, tenant_id: str, audience: Audience) -> list[tuple[str, str]]:
        # An empty field of the audience has nothing to look up (no command for it).
        checks = [c for c in audience_ids(audience) if c[3]]
        missing: list[tuple[str, str]] = []
        if not checks:
            return missing
        async with self._redis.pipeline(transaction=False) as read:
            for _, kind, _roles, ids in checks:
                read.hmget(self._db.t(tenant_id, _HASHES[kind]), ids)
            found = await read.execute()
        for (field, _, roles, ids), values in zip(checks, found, strict=True):
            for i, value in zip(ids, values, strict=False):
                if value is None or (roles and value not in roles):
                    missing.append((field, i))
        return missing

    async def load_audience(self, tenant_id: str, audience: Audience) -> DirectorySnapshot:
        """Several reads, checked against the directory versions: a snapshot is returned
        only when no directory write landed in between (store/audience.checked)."""
        versions = [self._db.t(tenant_id, v) for v in _VERSIONS]
        read = _RedisRead(self._redis, self._db.tk(tenant_id))
        # A snapshot this process read at the versions still current is what a new read
        # would give (redis/snapshots.py): one MGET instead of the read.
        key = self._snapshots.key(tenant_id, audience)
        first: list[str | None] | None = None
        if self._snapshots.versions_of(key) is not None:
            first = await self._redis.mget(versions)
            kept = self._snapshots.take(key, first)
            if kept is not None:
                return kept

        async def once() -> DirectorySnapshot | None:
            nonlocal first
            before, first = first or await self._redis.mget(versions), None
            snapshot = await expand(read, audience)
            if await self._redis.mget(versions) != before:
                return None
            return self._snapshots.keep(key, before, snapshot)

        # Marked as under way for a batch's writer in any process (``_give_way``); the
        # mark expires by itself should this process die mid-read.
        readers, token = self._db.t(tenant_id, K.DIRECTORY_READERS), secrets.token_hex(8)
        expires_ms = int(time.time() * 1000) + int(_READ_MARK * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(readers, {token: expires_ms})
            pipe.pexpire(readers, int(_READ_MARK * 1000))
            await pipe.execute()
        try:
            return await checked(once)
        finally:
            await self._redis.zrem(readers, token)

    async def staff_members(
        self, tenant_id: str, *, group_ids: Sequence[str] = (), unit_ids: Sequence[str] = ()
    ) -> list[str]:
        """Staff placed directly in these groups or units (``AbsenceStore.staff_members``)."""
        return await staff(_RedisRead(self._redis, self._db.tk(tenant_id)), group_ids, unit_ids)

    async def protected_persons(self, tenant_id: str, person_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(person_ids))
        if not ids:
            return set()
        docs = await self._redis.hmget(self._db.t(tenant_id, K.PERSONS), ids)
        return {
            p
            for p, doc in zip(ids, docs, strict=True)
            if doc is not None and json.loads(doc)[4] != Protection.none.value
        }


class _RedisRead:
    """:class:`gateway.store.audience.DirectoryRead` on a tenant's keys (``t``); its
    consistency is checked by the caller against the directory versions."""

    def __init__(self, redis: Any, t: Callable[..., str]) -> None:
        self._redis = redis
        self._t = t

    async def members(self, groups: Sequence[str], units: Sequence[str]) -> Members:
        t = self._t
        async with self._redis.pipeline(transaction=False) as read:
            for g in groups:
                read.smembers(t(K.GROUP_MEMBERS, g))
            for u in units:
                read.smembers(t(K.UNIT_MEMBERS, u))
            for u in units:
                read.smembers(t(K.UNIT_GROUPS, u))
            got: list[set[str]] = await read.execute()
        placed = len(groups) + len(units)
        return Members(set().union(*got[:placed]), set().union(*got[placed:]))

    async def people(self, ids: Sequence[str]) -> People:
        if not ids:
            return People()
        async with self._redis.pipeline(transaction=False) as read:
            read.hmget(self._t(K.PERSONS), ids)
            queue_contacts(read, self._t, ids)
            got = await read.execute()
        found = People({p: _person(p, doc) for p, doc in zip(ids, got[0], strict=True) if doc})
        await contacts_from(self._redis, self._t, ids, got[1:], found)
        return found

    async def relations(
        self, children: Sequence[str], guardians: Sequence[str]
    ) -> list[RelationRecord]:
        t = self._t
        async with self._redis.pipeline(transaction=False) as read:
            for c in children:
                read.hgetall(t(K.CHILD_RELATIONS, c))
            for g in guardians:
                read.smembers(t(K.GUARDIAN_RELATIONS, g))
            got = await read.execute()
        found = {(c, g): v for c, row in zip(children, got, strict=False) for g, v in row.items()}
        extra = [
            (c, g)
            for g, kids in zip(guardians, got[len(children) :], strict=True)
            for c in kids
            if (c, g) not in found
        ]
        pairs = sorted(set(found) | set(extra))
        async with self._redis.pipeline(transaction=False) as read:
            for c, g in extra:
                read.hget(t(K.CHILD_RELATIONS, c), g)
            read.hmget(t(K.FLAGS), [f"{c}\x1f{g}" for c, g in pairs] or ["-"])
            got = await read.execute()
        for pair, value in zip(extra, got[:-1], strict=True):
            if value is not None:
                found[pair] = value
        flags = dict(zip(pairs, got[-1], strict=False))
        kept = [p for p in pairs if p in found]
        return [_relation(c, g, found[c, g], flags.get((c, g))) for c, g in kept]

    async def places(self, groups: Sequence[str], units: Sequence[str]) -> Places:
        async with self._redis.pipeline(transaction=False) as read:
            read.hmget(self._t(K.GROUPS), list(groups) or ["-"])
            read.hmget(self._t(K.UNITS), list(units) or ["-"])
            got = await read.execute()
        return Places(
            {g: _group(g, doc) for g, doc in zip(groups, got[0], strict=False) if doc is not None},
            {u: _unit(u, doc) for u, doc in zip(units, got[1], strict=False) if doc is not None},
        )


def _relation(child_id: str, guardian_id: str, doc: str, flags: str | None) -> RelationRecord:
    return RelationRecord.model_construct(
        child_id=child_id,
        guardian_id=guardian_id,
        parental_responsibility=doc[0] == "1",
        daily_care=doc[1] == "1",
        flags=_flags(flags),
    )
