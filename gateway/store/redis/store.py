"""The scale-out store backend: Redis through redis-py's asyncio client.

Any number of ``budbringer serve`` and ``budbringer worker`` processes share one
Redis. The key layout is in :mod:`gateway.store.redis.keys`, the atomic
scripts in ``redis/lua/*.lua`` (composed by :mod:`gateway.store.redis.scripts`), the
deployment notes in docs/redis.md.

* Work: one Redis Stream per job kind with the consumer group ``workers``; each
  process is one consumer. Waiting jobs sit in a sorted set by due time and are
  moved into the stream when due, by whichever claimer gets there first, in the
  claim script itself (ZRANGEBYSCORE + ZREM + XADD + XREADGROUP, exactly once).
  A crashed worker's entries are taken over with XAUTOCLAIM when their lease
  ends; the dispatcher checks the delivery before sending, so a job that was
  in fact finished is dropped.
* Deliveries and messages are hashes under the tenant's hash tag, with the
  indexes the status API needs: deliveries per message and recipient, counts
  per status, latest delivery per address, the in-app inbox per recipient (a
  sorted set), reads and replies.
* Directory writes are optimistic transactions (WATCH on the tenant's directory
  version, MULTI/EXEC); directory reads are checked against that version, so
  ``load_audience`` returns a consistent snapshot.
* Per-message keys expire after the retention (``EXPIRE``); ``purge_before``
  removes them earlier and keeps the counters right.

Features: each has the same file name in ``store/sqlite/`` and ``store/redis/``
(absence, alert_phones, api_keys, ratelimit, tracking, webhooks; SQLite also postpone
and retention, which Redis keeps in this module). A composed feature (rate limits;
on Redis also the change-feed marks, ``feed.FeedMarks``) gets what it needs of the
store by constructor injection (the client, key names) and the store delegates its
Protocol method to it in one line: explicit delegation keeps the class checked
against the Store Protocol by mypy strict, which ``__getattr__`` forwarding would
not. The older features are still mixins on
:class:`~gateway.store.redis.base.RedisParts`, which gives them the connection and nothing
else; error mapping is installed on every public coroutine
by that base (:mod:`gateway.store.mapping`), so no feature can miss it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.exceptions import WatchError

from gateway.constants import JOB_SEND
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
    CHILD_ROLES,
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
from gateway.store.redis import keys, ratelimit
from gateway.store.redis import scripts as lua
from gateway.store.redis.absence import AbsenceMixin
from gateway.store.redis.alert_phones import AlertPhonesMixin
from gateway.store.redis.api_keys import KeysMixin
from gateway.store.redis.attachments import RedisAttachments
from gateway.store.redis.base import Lua, RedisParts, digest, opt
from gateway.store.redis.digests import RedisDigests
from gateway.store.redis.feed import FeedMarks
from gateway.store.redis.schedules import RedisSchedules
from gateway.store.redis.scripts import read
from gateway.store.redis.tracking import TrackingMixin
from gateway.store.redis.webhooks import WebhookMixin
from gateway.store.schedules import Schedules

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "bb"
DEFAULT_RETENTION_DAYS = 396
# Seconds a follow-up job of a move waits past its due time (see _apply_moves).
FOLLOWUP_GRACE = 2.0
# Keys live a day longer than the retention: the daily purge job normally removes them
# first (and keeps the counters right); the expiry is the guarantee.
_TTL_MARGIN = 86_400
_FLAG_REASONS = {"information_granted": "ir", "blocked": "br"}
_FLAG_VALUES = {"information_granted": "ig", "blocked": "b"}
_WHERE_CACHE = 50_000

_TRANSITION = Lua(lua.TRANSITION)
_ACCEPT = Lua(lua.ACCEPT_MESSAGE)
_ADD_DELIVERIES = Lua(lua.ADD_DELIVERIES)
_KEEP_GREATEST = Lua(lua.KEEP_GREATEST)
_MARK_READ = Lua(lua.MARK_READ)
_ADD_REPLY = Lua(lua.ADD_REPLY)
_INBOX = Lua(lua.INBOX)
_PURGE = Lua(lua.PURGE)
_CREATE_TENANT = Lua(lua.CREATE_TENANT)
_ADD_JOBS = Lua(lua.ADD_JOBS)
_CLAIM = Lua(lua.CLAIM)
_FINISH_JOBS = Lua(lua.FINISH_JOBS)
_RETRY_JOB = Lua(lua.RETRY_JOB)
_QUEUE_STATS = Lua(lua.QUEUE_STATS)
_FORGET_CONSUMERS = Lua(lua.FORGET_CONSUMERS)
_UPSERT_DEVICE = Lua(lua.UPSERT_DEVICE)
_REMOVE_DEVICE = Lua(lua.REMOVE_DEVICE)
# KEYS: delivery hash, its history. ARGV: at (µs), detail. A row for a failed attempt.
_NOTE_ATTEMPT = Lua(read("note_attempt"))
_HSET_IF_EXISTS = Lua(read("hset_if_exists"))

_T = TypeVar("_T")


# How often load_audience reads before it gives up on a directory that keeps changing.
_SNAPSHOT_TRIES = 10


def split_url(url: str) -> tuple[str, str | None, bool]:
    """The Redis URL without our own query parameters, the ``prefix`` it names, and
    whether ``cluster`` (``?cluster=1``: the URL names any node of a Redis Cluster)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), None)
    cluster = next((v for k, v in query if k == "cluster"), "").lower() in ("1", "true", "yes")
    rest = urlencode([(k, v) for k, v in query if k not in ("prefix", "cluster")])
    return urlunsplit(parts._replace(query=rest)), prefix, cluster


# --------------------------------------------------------------------------- conversions


def _tenant_doc(t: Tenant) -> str:
    return dumps(
        {
            "id": t.id,
            "name": t.name,
            "api_key_hash": t.api_key_hash,
            "webhook_secret": t.webhook_secret,
            "created_at": us(t.created_at),
        }
    )


def _tenant(doc: str) -> Tenant:
    d = json.loads(doc)
    d["created_at"] = from_us(d["created_at"])
    return Tenant.model_construct(**d)


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


def _device_doc(d: Device) -> str:
    return dumps([d.token, d.fid, d.platform, d.app_version, us_opt(d.last_seen)])


def _device(device_id: str, doc: str) -> Device:
    f = json.loads(doc)
    return Device.model_construct(
        id=device_id,
        token=f[0],
        fid=f[1],
        platform=f[2],
        app_version=f[3],
        last_seen=from_us_opt(f[4]),
    )


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


def _delivery_doc(d: Delivery) -> str:
    return dumps(
        [
            d.tenant_id,
            d.message_id,
            d.recipient_id,
            d.recipient_role.value,
            d.channel,
            d.target,
            d.address,
            d.language,
            d.child_ids,
            d.context,
            d.attempts,
            us_opt(d.not_before),
            us(d.created_at),
        ]
    )


def _delivery(delivery_id: str, h: dict[str, str]) -> Delivery:
    f = json.loads(h["j"])
    segments = h.get("n")
    return Delivery.model_construct(
        id=delivery_id,
        tenant_id=f[0],
        message_id=f[1],
        recipient_id=f[2],
        recipient_role=Role(f[3]),
        channel=f[4],
        target=f[5],
        address=f[6],
        language=f[7],
        child_ids=f[8],
        context=f[9],
        status=DeliveryStatus(h["s"]),
        reason=h.get("r"),
        provider_id=h.get("p"),
        segments=None if segments is None else int(segments),
        attempts=f[10],
        not_before=from_us_opt(f[11]),
        created_at=from_us(f[12]),
        updated_at=from_us(h["u"]),
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _message_doc(m: Message) -> str:
    return m.model_dump_json(exclude={"planned_at"})


def _message(doc: str, planned: str | None) -> Message:
    message = Message.model_validate_json(doc)
    message.planned_at = from_us_opt(planned)
    return message


def _history(delivery_id: str, entry: str) -> StatusChange:
    parts = entry.split("\x1f", 2)
    return StatusChange.model_construct(
        delivery_id=delivery_id,
        status=DeliveryStatus(parts[0]),
        at=from_us(parts[1]),
        detail=parts[2] if len(parts) == 3 else None,
    )


def _inbox_item(status: str, ddoc: str, mdoc: str, read: str) -> InboxItem:
    d = json.loads(ddoc)
    m = json.loads(mdoc)
    return InboxItem.model_construct(
        message_id=m["id"],
        subject=m["subject"],
        body=m["body"],
        category=Category(m["category"]),
        sender_name=m["sender_name"],
        child_ids=d[8],
        context=d[9],
        status=DeliveryStatus(status),
        created_at=datetime.fromisoformat(m["created_at"]).astimezone(UTC),
        read_at=from_us(read.split("\x1f", 1)[0]) if read else None,
    )


def _job(f: list[Any]) -> Job:
    return Job.model_construct(
        id=f[0],
        tenant_id=f[1],
        kind=f[2],
        ref=f[3],
        due_at=from_us(f[4]),
        attempts=int(f[5]),
        last_error=f[6] or None,
        urgent=f[7] == "1",
    )


# --------------------------------------------------------------------------- the store


# The hash of each kind of directory row (directory_checks.AUDIENCE_CHECKS).
_HASHES = {"person": "roles", "group": "groups", "unit": "units"}


class RedisStore(
    TrackingMixin, WebhookMixin, AbsenceMixin, KeysMixin, AlertPhonesMixin, RedisParts
):
    """The :class:`gateway.store.Store` on Redis. ``url`` is a redis:// or rediss:// URL
    (``?cluster=1``: of any node of a Redis Cluster, through redis-py's RedisCluster);
    a ``prefix`` query parameter (or the keyword) names the keyspace, ``bb`` by default.
    ``retention_days`` is how long per-message keys live; ``consumer`` names this
    process in the queue's consumer group (default: host, pid and a random tag)."""

    SCRIPTS = (
        _TRANSITION,
        _NOTE_ATTEMPT,
        _ACCEPT,
        _ADD_DELIVERIES,
        _KEEP_GREATEST,
        _MARK_READ,
        _ADD_REPLY,
        _INBOX,
        _PURGE,
        _CREATE_TENANT,
        _ADD_JOBS,
        _CLAIM,
        _FINISH_JOBS,
        _RETRY_JOB,
        _QUEUE_STATS,
        _FORGET_CONSUMERS,
        ratelimit.ACQUIRE_RATE,
        _HSET_IF_EXISTS,
        _UPSERT_DEVICE,
        _REMOVE_DEVICE,
    )

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        consumer: str | None = None,
        max_connections: int = 128,
    ) -> None:
        self._url, url_prefix, self._cluster = split_url(url)
        # A pool that is exhausted must make callers wait, never fail: a failed outcome
        # commit means the job is retried and the message sent twice.
        self._max_connections = max_connections
        self._prefix = prefix or url_prefix or DEFAULT_PREFIX
        self._feed = FeedMarks(keys.queue_prefix(self._prefix))
        # Composed features: each gets what it needs of the store, nothing more.
        self._rates = ratelimit.RateLimits(lambda: self._redis, lambda k: self._g("rl", k))
        self._ttl = retention_days * 86_400 + _TTL_MARGIN
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._client = None
        # delivery id -> tenant: ids never move, so this cache is never wrong.
        self._where: OrderedDict[str, str] = OrderedDict()
        self._clamp_warned = False
        self.schedules: Schedules = RedisSchedules(self)
        self.digests: Digests = RedisDigests(self)
        self.attachments = RedisAttachments(self)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Connect, check Redis answers and load the scripts."""
        if self._client is not None:
            return
        if self._cluster:
            # RedisCluster fails a call when a node's pool is exhausted (it has no blocking
            # pool), so its limit is set far above any real concurrency.
            self._client = RedisCluster.from_url(
                self._url,
                max_connections=max(self._max_connections, 10_000),
                decode_responses=True,
                socket_connect_timeout=10,
                health_check_interval=30,
            )
        else:
            pool = BlockingConnectionPool.from_url(
                self._url,
                max_connections=self._max_connections,
                timeout=30,
                decode_responses=True,
                socket_connect_timeout=10,
                health_check_interval=30,
            )
            self._client = Redis.from_pool(pool)  # closing the client closes the pool
        self._client.set_response_callback("EVALSHA", self._feed.unwrap)
        try:
            await self._client.ping()
            await self._load_scripts()
            await self._sweep_feeds()
            await self._migrate_api_keys()
        except BaseException:
            await self._client.aclose()
            self._client = None
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await client.evalsha(
                _FORGET_CONSUMERS.sha, 1, self._qp + "kinds", self._qp, self.consumer
            )
        except Exception:  # tidying the consumer group is a courtesy, closing matters more
            log.debug("could not tidy the consumer group", exc_info=True)
        finally:
            await client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    # ------------------------------------------------------------------ helpers

    async def _directory_write(
        self,
        tenant_id: str,
        body: Callable[[Any], Awaitable[_T]],
        *,
        watch: Sequence[str] = ("dirv",),
    ) -> _T:
        """An optimistic directory transaction: ``body`` reads (with the client or the
        pipeline), then calls ``pipe.multi()`` and queues writes; it runs again if any
        other write of what it read committed meanwhile.

        Each part of the directory has a version: ``dirv`` (units, groups, persons,
        relations, flags), ``prefv`` (preferences), ``devv`` (devices, failing contacts).
        A write bumps the version of its part; ``watch`` names the parts ``body`` reads,
        so a device registered meanwhile never makes an import start over."""
        versions = [self._t(tenant_id, v) for v in watch]
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*versions)
                    result = await body(pipe)
                    pipe.incr(versions[0])
                    await pipe.execute()
                    return result
                except WatchError:
                    continue

    async def _tenants_of(self, ids: Sequence[str]) -> dict[str, str]:
        where = {i: self._where[i] for i in ids if i in self._where}
        missing = [i for i in dict.fromkeys(ids) if i not in where]
        if missing:
            async with self._redis.pipeline(transaction=False) as pipe:
                for i in missing:
                    pipe.get(self._g("did", i))
                found = await pipe.execute()
            for i, tenant in zip(missing, found, strict=True):
                if tenant is not None:
                    where[i] = tenant
                    self._remember(i, tenant)
        return where

    def _remember(self, delivery_id: str, tenant_id: str) -> None:
        self._where[delivery_id] = tenant_id
        if len(self._where) > _WHERE_CACHE:
            self._where.popitem(last=False)

    # ------------------------------------------------------------------ tenants

    async def create_tenant(self, tenant: Tenant, first_key: ApiKey | None = None) -> None:
        created = await self._eval(
            self._redis,
            _CREATE_TENANT,
            [self._g("{tenants}", "all"), self._g("{tenants}", "keys")],
            [tenant.id, tenant.api_key_hash, _tenant_doc(tenant)],
        )
        if not created:
            raise Conflict("a tenant with this id or key exists already")
        # A crash between the two leaves the key without its row: the next open() adds it.
        await self.add_api_key(first_key or first_api_key(tenant))

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        doc = await self._redis.hget(self._g("{tenants}", "all"), tenant_id)
        return None if doc is None else _tenant(doc)

    async def list_tenants(self) -> list[Tenant]:
        docs = await self._redis.hgetall(self._g("{tenants}", "all"))
        return [_tenant(docs[k]) for k in sorted(docs)]

    # ------------------------------------------------------------------ directory

    async def apply_directory(
        self, tenant_id: str, batch: DirectoryBatch, at: datetime | None = None
    ) -> dict[str, int]:
        when = at or datetime.now(UTC)

        async def body(pipe: Any) -> int:
            known = await self._known_for(tenant_id, batch)
            # 100,000s of rows: checked and queued in a thread, so the loop keeps serving.
            await asyncio.to_thread(check_batch, batch, known)
            persons = list({p.id: p for p in batch.persons}.values())
            groups = list({g.id: g for g in batch.groups}.values())
            async with self._redis.pipeline(transaction=False) as read:
                read.hmget(self._t(tenant_id, "persons"), [p.id for p in persons] or ["-"])
                read.hmget(self._t(tenant_id, "groups"), [g.id for g in groups] or ["-"])
                read.hmget(self._t(tenant_id, "prefs"), list(batch.preferences) or ["-"])
                old_persons, old_groups, prefs = await read.execute()
            # Every row merges with what is stored (or with its own earlier row).
            current = {
                p.id: None if old is None else _person(p.id, old)
                for p, old in zip(persons, old_persons, strict=False)  # ["-"] when empty
            }
            raises: list[tuple[str, ProtectionHistoryEntry]] = []
            for imported in batch.persons:
                before = current[imported.id]
                current[imported.id] = merged = merge_imported(before, imported)
                if raised_by_import(before, merged):
                    raises.append((imported.id, import_raise(before, merged, when)))
            persons = [merged for merged in current.values() if merged is not None]
            pipe.multi()
            await asyncio.to_thread(
                self._queue_upserts,
                pipe,
                tenant_id,
                batch,
                persons,
                groups,
                old_persons,
                old_groups,
            )
            for person_id, entry in raises:
                pipe.rpush(self._t(tenant_id, "ph", person_id), _protection_doc(entry))
            applied = 0
            for (person_id, p), cur in zip(batch.preferences.items(), prefs, strict=False):
                if cur is None or cur.startswith("i"):  # "g": the guardian's own, kept
                    pipe.hset(self._t(tenant_id, "prefs"), person_id, "i" + p.model_dump_json())
                    applied += 1
            return applied

        watch = ("dirv", "prefv") if batch.preferences else ("dirv",)
        applied = await self._directory_write(tenant_id, body, watch=watch)
        return {
            "units": len(batch.units),
            "groups": len(batch.groups),
            "persons": len(batch.persons),
            "relations": len(batch.relations),
            "preferences": applied,
        }

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
        t = self._tk(tenant_id)
        if batch.units:
            pipe.hset(
                t("units"),
                mapping={
                    u.id: dumps([u.kind.value, u.name, u.time_zone, u.sender_name, u.sms_sender])
                    for u in batch.units
                },
            )
        for g, old in zip(groups, old_groups, strict=False):
            if old is not None and json.loads(old)[0] != g.unit_id:
                pipe.srem(t("ug", json.loads(old)[0]), g.id)
            pipe.sadd(t("ug", g.unit_id), g.id)
        if groups:
            pipe.hset(
                t("groups"),
                mapping={g.id: dumps([g.unit_id, g.kind.value, g.name]) for g in groups},
            )
        for p, old in zip(persons, old_persons, strict=False):
            if old is not None:
                before = _person(p.id, old)
                for unit_id in set(before.unit_ids) - set(p.unit_ids):
                    pipe.srem(t("um", unit_id), p.id)
                for group_id in set(before.group_ids) - set(p.group_ids):
                    pipe.srem(t("gm", group_id), p.id)
            for unit_id in p.unit_ids:
                pipe.sadd(t("um", unit_id), p.id)
            for group_id in p.group_ids:
                pipe.sadd(t("gm", group_id), p.id)
        if persons:
            pipe.hset(t("persons"), mapping={p.id: _person_doc(p) for p in persons})
            pipe.hset(t("roles"), mapping={p.id: p.role.value for p in persons})
        for r in batch.relations:
            pipe.hset(
                t("rc", r.child_id),
                r.guardian_id,
                f"{int(r.parental_responsibility)}{int(r.daily_care)}",
            )
            pipe.sadd(t("rg", r.guardian_id), r.child_id)

    async def _known_for(self, tenant_id: str, batch: DirectoryBatch) -> Known:
        refs = batch_refs(batch)
        units, groups, roles = refs.known
        more_units = sorted(refs.wanted_units)
        more_groups = sorted(refs.wanted_groups)
        more_persons = sorted(refs.wanted_persons)
        async with self._redis.pipeline(transaction=False) as read:
            read.hmget(self._t(tenant_id, "units"), more_units or ["-"])
            read.hmget(self._t(tenant_id, "groups"), more_groups or ["-"])
            read.hmget(self._t(tenant_id, "roles"), more_persons or ["-"])
            found_units, found_groups, found_roles = await read.execute()
        units.update(u for u, v in zip(more_units, found_units, strict=False) if v is not None)
        groups.update(g for g, v in zip(more_groups, found_groups, strict=False) if v is not None)
        roles.update(
            {p: v for p, v in zip(more_persons, found_roles, strict=False) if v is not None}
        )
        return Known(units, groups, roles)

    async def delete_directory(self, tenant_id: str, deletion: DirectoryDeletion) -> dict[str, int]:
        t = self._tk(tenant_id)

        async def body(pipe: Any) -> dict[str, int]:
            r = self._redis
            units = await r.hmget(t("units"), deletion.units or ["-"])
            groups = await r.hmget(t("groups"), deletion.groups or ["-"])
            persons = await r.hmget(t("persons"), deletion.persons or ["-"])
            pairs = [(k.child_id, k.guardian_id) for k in deletion.relations]
            related: list[str | None] = []
            if pairs:
                async with r.pipeline(transaction=False) as read:
                    for child_id, guardian_id in pairs:
                        read.hget(t("rc", child_id), guardian_id)
                    related = await read.execute()
            facts = DeletionFacts(
                {u for u, v in zip(deletion.units, units, strict=False) if v is not None},
                {g for g, v in zip(deletion.groups, groups, strict=False) if v is not None},
                {p for p, v in zip(deletion.persons, persons, strict=False) if v is not None},
                {pair for pair, v in zip(pairs, related, strict=False) if v is not None},
                {u: set(await r.smembers(t("ug", u))) for u in dict.fromkeys(deletion.units)},
            )
            check_deletion(deletion, facts)
            plan = await self._deletion_plan(tenant_id, deletion)
            pipe.multi()
            for child_id, guardian_id in set(pairs):
                pipe.hdel(t("rc", child_id), guardian_id)
                pipe.srem(t("rg", guardian_id), child_id)
            plan(pipe)
            return {
                "units": len(set(deletion.units)),
                "groups": len(set(deletion.groups)),
                "persons": len(set(deletion.persons)),
                "relations": len(set(pairs)),
            }

        return await self._directory_write(tenant_id, body, watch=("dirv", "devv", "prefv"))

    async def _deletion_plan(
        self, tenant_id: str, deletion: DirectoryDeletion
    ) -> Callable[[Any], None]:
        """Read what deleting persons, groups and units touches; return the writes."""
        t = self._tk(tenant_id)
        r = self._redis
        person_ids = list(dict.fromkeys(deletion.persons))
        group_ids = list(dict.fromkeys(deletion.groups))
        unit_ids = list(dict.fromkeys(deletion.units))
        async with r.pipeline(transaction=False) as read:
            read.hmget(t("persons"), person_ids or ["-"])
            for p in person_ids:
                read.hgetall(t("dev", p))
                read.hkeys(t("rc", p))
                read.smembers(t("rg", p))
            for g in group_ids:
                read.smembers(t("gm", g))
                read.hget(t("groups"), g)
            for u in unit_ids:
                read.smembers(t("um", u))
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
                    pipe.srem(t("rg", guardian_id), p)
                for child_id in as_guardian[p]:
                    pipe.hdel(t("rc", child_id), p)
            for g in group_ids:
                pipe.delete(t("gm", g))
                pipe.srem(t("ug", group_units[g]), g)
                pipe.hdel(t("groups"), g)
            for u in unit_ids:
                pipe.delete(t("um", u), t("ug", u))
                pipe.hdel(t("units"), u)
            if rewritten:
                pipe.hset(t("persons"), mapping=rewritten)

        return writes

    async def _without(
        self, tenant_id: str, person_ids: list[str], groups: set[str], units: set[str]
    ) -> dict[str, str]:
        """The documents of these persons without the groups and units that go."""
        if not person_ids:
            return {}
        docs = await self._redis.hmget(self._t(tenant_id, "persons"), person_ids)
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
        t = self._tk(tenant_id)
        field = f"{child_id}\x1f{guardian_id}"

        async def body(pipe: Any) -> RelationFlags:
            roles = await self._redis.hmget(t("roles"), [child_id, guardian_id])
            if None in roles:
                raise NotFound("unknown person")
            current = await self._redis.hget(t("flags"), field)
            doc: dict[str, Any] = json.loads(current) if current else {}
            doc[_FLAG_VALUES[flag]] = value
            doc[_FLAG_REASONS[flag]] = reason
            doc["by"] = actor
            doc["at"] = us(at)
            pipe.multi()
            pipe.hset(t("flags"), field, dumps(doc))
            pipe.rpush(t("fh", field), dumps([flag, value, reason, actor, us(at)]))
            return _flags(dumps(doc))

        return await self._directory_write(tenant_id, body)

    async def flag_history(
        self, tenant_id: str, child_id: str, guardian_id: str
    ) -> list[FlagHistoryEntry]:
        rows = await self._redis.lrange(
            self._t(tenant_id, "fh", f"{child_id}\x1f{guardian_id}"), 0, -1
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
        t = self._tk(tenant_id)

        async def body(pipe: Any) -> ProtectionHistoryEntry:
            doc = await self._redis.hget(t("persons"), person_id)
            if doc is None:
                raise NotFound("unknown person")
            person = _person(person_id, doc)
            entry = ProtectionHistoryEntry(level, person.protection, reason, actor, at)
            pipe.multi()
            pipe.hset(
                t("persons"),
                person_id,
                _person_doc(person.model_copy(update={"protection": level})),
            )
            pipe.rpush(t("ph", person_id), _protection_doc(entry))
            return entry

        return await self._directory_write(tenant_id, body)

    async def protection_history(
        self, tenant_id: str, person_id: str
    ) -> list[ProtectionHistoryEntry]:
        rows = await self._redis.lrange(self._t(tenant_id, "ph", person_id), 0, -1)
        return [
            ProtectionHistoryEntry(Protection(f[0]), Protection(f[1]), f[2], f[3], from_us(f[4]))
            for f in map(json.loads, rows)
        ]

    async def get_person(self, tenant_id: str, person_id: str) -> Person | None:
        doc = await self._redis.hget(self._t(tenant_id, "persons"), person_id)
        return None if doc is None else _person(person_id, doc)

    async def missing_ids(self, tenant_id: str, audience: Audience) -> list[tuple[str, str]]:
        checks = audience_ids(audience)
        missing: list[tuple[str, str]] = []
        async with self._redis.pipeline(transaction=False) as read:
            for _, kind, _roles, ids in checks:
                read.hmget(self._t(tenant_id, _HASHES[kind]), ids or ["-"])
            found = await read.execute()
        for (field, _, roles, ids), values in zip(checks, found, strict=True):
            for i, value in zip(ids, values, strict=False):
                if value is None or (roles and value not in roles):
                    missing.append((field, i))
        return missing

    async def load_audience(self, tenant_id: str, audience: Audience) -> DirectorySnapshot:
        """Several reads, checked against the directory versions: a snapshot is returned
        only when no directory write landed in between; under writes that never pause it
        gives up with a (transient) StoreError rather than answer with a torn one."""
        versions = [self._t(tenant_id, v) for v in ("dirv", "prefv", "devv")]
        for attempt in range(_SNAPSHOT_TRIES):
            before = await self._redis.mget(versions)
            snapshot = await self._load_audience(tenant_id, audience)
            if await self._redis.mget(versions) == before:
                return snapshot  # no directory write in between: a consistent snapshot
            await asyncio.sleep(0.001 * 2**attempt)  # let the writers pass
        raise StoreError("the directory kept changing while it was read; try again")

    async def _load_audience(self, tenant_id: str, audience: Audience) -> DirectorySnapshot:
        t = self._tk(tenant_id)
        r = self._redis
        async with r.pipeline(transaction=False) as read:
            for g in audience.groups:
                read.smembers(t("gm", g))
            for u in audience.units:
                read.smembers(t("um", u))
                read.smembers(t("ug", u))
            got = await read.execute()
        candidates = set(audience.children)
        unit_groups: set[str] = set()
        for members in got[: len(audience.groups)]:
            candidates |= members
        rest = got[len(audience.groups) :]
        for i in range(0, len(rest), 2):
            candidates |= rest[i]
            unit_groups |= rest[i + 1]
        async with r.pipeline(transaction=False) as read:
            for g in sorted(unit_groups):
                read.smembers(t("gm", g))
            ordered = sorted(candidates)
            read.hmget(t("roles"), ordered or ["-"])
            got = await read.execute()
        for members in got[:-1]:
            candidates |= members
        roles = dict(zip(ordered, got[-1], strict=False))
        more = sorted(candidates - roles.keys())
        if more:
            roles.update(zip(more, await r.hmget(t("roles"), more), strict=True))
        children = sorted(c for c in candidates if roles.get(c) in CHILD_ROLES)
        relations = await self._load_relations(tenant_id, children, audience.guardians)
        wanted = dict.fromkeys(children)
        for relation in relations:
            wanted[relation.child_id] = None
            wanted[relation.guardian_id] = None
        wanted.update(dict.fromkeys(audience.guardians))
        wanted.update(dict.fromkeys(audience.staff))
        persons, preferences, devices, failing = await self._load_persons(tenant_id, list(wanted))
        group_ids = dict.fromkeys(audience.groups)
        unit_ids = dict.fromkeys(audience.units)
        for person in persons.values():
            group_ids.update(dict.fromkeys(person.group_ids))
            unit_ids.update(dict.fromkeys(person.unit_ids))
        gids = list(group_ids)
        groups = {
            g: _group(g, doc)
            for g, doc in zip(gids, await r.hmget(t("groups"), gids or ["-"]), strict=False)
            if doc is not None
        }
        unit_ids.update(dict.fromkeys(g.unit_id for g in groups.values()))
        uids = list(unit_ids)
        units = {
            u: _unit(u, doc)
            for u, doc in zip(uids, await r.hmget(t("units"), uids or ["-"]), strict=False)
            if doc is not None
        }
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

    async def _load_relations(
        self, tenant_id: str, children: list[str], guardians: list[str]
    ) -> list[RelationRecord]:
        t = self._tk(tenant_id)
        async with self._redis.pipeline(transaction=False) as read:
            for c in children:
                read.hgetall(t("rc", c))
            for g in guardians:
                read.smembers(t("rg", g))
            got = await read.execute()
        found: dict[tuple[str, str], str] = {}
        for c, row in zip(children, got, strict=False):
            for g, value in row.items():
                found[(c, g)] = value
        extra = [
            (c, g)
            for g, kids in zip(guardians, got[len(children) :], strict=True)
            for c in kids
            if (c, g) not in found
        ]
        keys = sorted(set(found) | set(extra))
        async with self._redis.pipeline(transaction=False) as read:
            for c, g in extra:
                read.hget(t("rc", c), g)
            read.hmget(t("flags"), [f"{c}\x1f{g}" for c, g in keys] or ["-"])
            got = await read.execute()
        for pair, value in zip(extra, got[:-1], strict=True):
            if value is not None:
                found[pair] = value
        flags = dict(zip(keys, got[-1], strict=False))
        return [
            RelationRecord.model_construct(
                child_id=c,
                guardian_id=g,
                parental_responsibility=found[(c, g)][0] == "1",
                daily_care=found[(c, g)][1] == "1",
                flags=_flags(flags.get((c, g))),
            )
            for c, g in keys
            if (c, g) in found
        ]

    async def _load_persons(
        self, tenant_id: str, ids: list[str]
    ) -> tuple[
        dict[str, Person], dict[str, Preferences], dict[str, list[Device]], dict[str, list[str]]
    ]:
        t = self._tk(tenant_id)
        if not ids:
            return {}, {}, {}, {}
        async with self._redis.pipeline(transaction=False) as read:
            read.hmget(t("persons"), ids)
            read.hmget(t("prefs"), ids)
            read.hmget(t("fail"), [f"{p}\x1f{k}" for p in ids for k in ("email", "phone")])
            for p in ids:
                read.hgetall(t("dev", p))
            got = await read.execute()
        persons = {p: _person(p, doc) for p, doc in zip(ids, got[0], strict=True) if doc}
        preferences = {
            p: Preferences.model_validate_json(doc[1:])
            for p, doc in zip(ids, got[1], strict=True)
            if doc is not None and p in persons
        }
        failing: dict[str, list[str]] = {}
        for i, p in enumerate(ids):
            person = persons.get(p)
            if person is None:
                continue
            for j, (kind, current) in enumerate((("email", person.email), ("phone", person.phone))):
                doc = got[2][2 * i + j]
                if doc is not None and current is not None and json.loads(doc)[0] == current:
                    failing.setdefault(p, []).append(kind)
        devices = {
            p: [_device(d, rows[d]) for d in sorted(rows)]
            for p, rows in zip(ids, got[3:], strict=True)
            if rows and p in persons
        }
        return persons, preferences, devices, failing

    # ------------------------------------------------------------------ guardian self-service

    async def set_preferences(self, tenant_id: str, guardian_id: str, prefs: Preferences) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._t(tenant_id, "prefs"), guardian_id, "g" + prefs.model_dump_json())
            pipe.incr(self._t(tenant_id, "prefv"))
            await pipe.execute()

    async def get_preferences(self, tenant_id: str, guardian_id: str) -> Preferences | None:
        doc = await self._redis.hget(self._t(tenant_id, "prefs"), guardian_id)
        return None if doc is None else Preferences.model_validate_json(doc[1:])

    async def upsert_device(self, tenant_id: str, guardian_id: str, device: Device) -> None:
        tp = self._tp(tenant_id)
        await self._eval(
            self._redis,
            _UPSERT_DEVICE,
            [tp + "devv"],
            [tp, guardian_id, device.id, _device_doc(device), opt(device.token), opt(device.fid)],
        )

    async def remove_device(self, tenant_id: str, guardian_id: str, device_id: str) -> bool:
        tp = self._tp(tenant_id)
        removed = await self._eval(
            self._redis, _REMOVE_DEVICE, [tp + "devv"], [tp, guardian_id, device_id]
        )
        return bool(removed)

    async def list_devices(self, tenant_id: str, guardian_id: str) -> list[Device]:
        rows = await self._redis.hgetall(self._t(tenant_id, "dev", guardian_id))
        return [_device(d, rows[d]) for d in sorted(rows)]

    # ------------------------------------------------------------------ events and messages

    async def accept_message(self, message: Message, job: Job) -> Message:
        tp = self._tp(message.tenant_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self._g("active"), message.tenant_id)
            self._eval(
                pipe,
                _ACCEPT,
                [tp + "m:" + message.id],
                [tp, self._ttl, message.id, _message_doc(message), us(message.created_at)],
            )
            _, result = await pipe.execute()
        if result[0] == 1:
            stored, planned = message, False
        else:
            stored = _message(result[1], result[2] or None)
            planned = stored.planned_at is not None
        if not planned:
            # Also for a stored message not planned yet: a crash between storing it and
            # queueing its plan job must not lose it (inserting an existing job is a no-op).
            async with self._redis.pipeline(transaction=False) as pipe:
                self._queue_jobs(pipe, [job])
                await pipe.execute()
        return stored

    async def get_message(self, tenant_id: str, message_id: str) -> Message | None:
        doc, planned = await self._redis.hmget(self._t(tenant_id, "m", message_id), ["j", "p"])
        return None if doc is None else _message(doc, planned)

    async def list_messages(
        self,
        tenant_id: str,
        *,
        limit: int = 50,
        before: datetime | None = None,
        before_id: str | None = None,
    ) -> list[Message]:
        # msgs: the tenant's message ids scored by created_at (us), kept by accept/purge;
        # equal scores come in id order, so the ties of the last page continue first.
        key = self._t(tenant_id, "msgs")
        ids: list[Any] = []
        if before is not None and before_id is not None:
            ties = await self._redis.zrevrangebyscore(key, us(before), us(before))
            ids = [i for i in ties if _text(i) < before_id][:limit]
        top = f"({us(before)}" if before is not None else "+inf"
        if len(ids) < limit:
            ids += await self._redis.zrevrangebyscore(
                key, top, "-inf", start=0, num=limit - len(ids)
            )
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.hmget(self._t(tenant_id, "m", message_id), ["j", "p"])
            found = await pipe.execute()
        messages = [_message(doc, planned) for doc, planned in found if doc is not None]
        # equal times: the same order as SQLite (newest first, then id descending)
        return sorted(messages, key=lambda m: (m.created_at, m.id), reverse=True)

    async def mark_planned(self, tenant_id: str, message_id: str, at: datetime) -> None:
        await self._eval(
            self._redis, _HSET_IF_EXISTS, [self._t(tenant_id, "m", message_id)], ["p", us(at)]
        )

    # ------------------------------------------------------------------ deliveries

    async def add_deliveries(self, deliveries: Sequence[Delivery], jobs: Sequence[Job]) -> int:
        by_tenant: defaultdict[str, list[Delivery]] = defaultdict(list)
        for d in {d.id: d for d in reversed(deliveries)}.values():
            by_tenant[d.tenant_id].append(d)
        new = 0
        if by_tenant:
            # Deliveries first, then their jobs: a job never runs before its delivery
            # exists; a crash in between leaves the plan job, whose rerun adds the jobs.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.sadd(self._g("active"), *by_tenant)
                for tenant_id, rows in by_tenant.items():
                    for d in rows:
                        pipe.set(self._g("did", d.id), tenant_id, ex=self._ttl, nx=True)
                    tp = self._tp(tenant_id)
                    args: list[Any] = [tp, self._ttl]
                    for d in reversed(rows):
                        args.append(_delivery_meta(d))
                        args.append(_delivery_doc(d))
                    self._eval(pipe, _ADD_DELIVERIES, [tp + "stats"], args)
                results = await pipe.execute()
            n_scripts = len(by_tenant)
            new = sum(int(x) for x in results[-n_scripts:])
            for tenant_id, rows in by_tenant.items():
                for d in rows:
                    self._remember(d.id, tenant_id)
        addressed = [d for rows in by_tenant.values() for d in rows if d.address]
        async with self._redis.pipeline(transaction=False) as pipe:
            for d in addressed:
                assert d.address is not None
                self._eval(
                    pipe,
                    _KEEP_GREATEST,
                    [self._g("addr", digest(d.channel, d.address))],
                    [f"{us(d.created_at):020d}\x1f{d.id}\x1f{d.tenant_id}", self._ttl],
                )
            self._queue_jobs(pipe, jobs)
            await pipe.execute()
        return new

    def _queue_jobs(self, pipe: Any, jobs: Sequence[Job]) -> None:
        """Queue the insertion of jobs (existing ids are left untouched) on a pipeline."""
        if not jobs:
            return
        args: list[Any] = [self._qp]
        for j in jobs:
            args.extend(
                (
                    j.id,
                    j.tenant_id,
                    j.kind,
                    j.ref,
                    us(j.due_at),
                    j.attempts,
                    opt(j.last_error),
                    "1" if j.urgent else "0",
                )
            )
        self._eval(pipe, _ADD_JOBS, [self._qp + "kinds"], args)

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        found = await self.get_deliveries([delivery_id])
        return found.get(delivery_id)

    async def get_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, Delivery]:
        if not delivery_ids:
            return {}
        where = await self._tenants_of(delivery_ids)
        ids = [i for i in dict.fromkeys(delivery_ids) if i in where]
        return await self._load_deliveries([(where[i], i) for i in ids])

    async def _load_deliveries(self, refs: Sequence[tuple[str, str]]) -> dict[str, Delivery]:
        if not refs:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant_id, delivery_id in refs:
                pipe.hgetall(self._t(tenant_id, "d", delivery_id))
            rows = await pipe.execute()
        return {i: _delivery(i, h) for (_, i), h in zip(refs, rows, strict=True) if h}

    async def list_deliveries(self, tenant_id: str, message_id: str) -> list[Delivery]:
        rows = await self._redis.hvals(self._t(tenant_id, "mr", message_id))
        ids = [i for row in rows for i in row.split()]
        found = await self._load_deliveries([(tenant_id, i) for i in ids])
        return sorted(found.values(), key=lambda d: (d.created_at, d.id))

    async def history(self, delivery_ids: Sequence[str]) -> dict[str, list[StatusChange]]:
        result: dict[str, list[StatusChange]] = {i: [] for i in delivery_ids}
        if not result:
            return result
        where = await self._tenants_of(list(result))
        ids = [i for i in result if i in where]
        async with self._redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.lrange(self._t(where[i], "h", i), 0, -1)
            rows = await pipe.execute()
        for i, entries in zip(ids, rows, strict=True):
            result[i] = [_history(i, e) for e in entries]
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
        moved = await self._apply_moves([move], [], jobs)
        return moved[0]

    async def _apply_moves(
        self,
        moves: Sequence[SendOutcome],
        finished_jobs: Sequence[str],
        followups: Sequence[Job] = (),
    ) -> list[bool]:
        """Apply status moves in order (one script per tenant) and then end the jobs, in
        one round trip. A move of an unknown delivery is refused.

        Follow-up jobs go first, due ``FOLLOWUP_GRACE`` later: the move is in another slot
        (no script spans both), so a crash after them leaves jobs whose handlers find the
        state unchanged and do nothing, while a crash before them leaves the send job (the
        dispatcher re-queues the failover of a failed delivery it finds) — and the grace
        keeps a follow-up from running before its move is committed."""
        where = await self._tenants_of([m.delivery_id for m in moves])
        by_tenant: dict[str, list[int]] = {}
        for n, m in enumerate(moves):
            tenant_id = where.get(m.delivery_id)
            if tenant_id is not None:
                by_tenant.setdefault(tenant_id, []).append(n)
        async with self._redis.pipeline(transaction=False) as pipe:
            grace = timedelta(seconds=FOLLOWUP_GRACE)
            self._queue_jobs(
                pipe, [job.model_copy(update={"due_at": job.due_at + grace}) for job in followups]
            )
            for m in moves:
                if m.provider_id is not None and m.delivery_id in where:
                    pipe.set(
                        self._g("pid", digest(m.provider_id)),
                        f"{where[m.delivery_id]}\x1f{m.delivery_id}",
                        ex=self._ttl,
                    )
            scripts = 0
            for tenant_id, indexes in by_tenant.items():
                tp = self._tp(tenant_id)
                args: list[Any] = [tp]
                for n in indexes:
                    m = moves[n]
                    args.extend(
                        (
                            m.delivery_id,
                            m.status.value,
                            us(m.at),
                            opt(m.detail),
                            opt(m.reason),
                            opt(m.provider_id),
                            opt(m.segments),
                        )
                    )
                self._eval(pipe, _TRANSITION, [tp + "stats"], args)
                scripts += 1
            if finished_jobs:
                self._eval(pipe, _FINISH_JOBS, [self._qp + "kinds"], [self._qp, *finished_jobs])
            results = await pipe.execute()
        if finished_jobs:
            results = results[:-1]
        moved = [False] * len(moves)
        for indexes, flags in zip(
            by_tenant.values(), results[len(results) - scripts :], strict=True
        ):
            for n, flag in zip(indexes, flags, strict=True):
                moved[n] = bool(flag)
        return moved

    async def note_attempt(self, delivery_id: str, at: datetime, detail: str) -> bool:
        tenant_id = (await self._tenants_of([delivery_id])).get(delivery_id)
        if tenant_id is None:
            return False
        keys = [self._t(tenant_id, "d", delivery_id), self._t(tenant_id, "h", delivery_id)]
        return bool(await self._eval(self._redis, _NOTE_ATTEMPT, keys, [us(at), detail]))

    async def delivery_by_provider_id(self, channel: str, provider_id: str) -> Delivery | None:
        ref = await self._redis.get(self._g("pid", digest(provider_id)))
        if ref is None:
            return None
        tenant_id, delivery_id = ref.split("\x1f", 1)
        found = (await self._load_deliveries([(tenant_id, delivery_id)])).get(delivery_id)
        if found is None or found.channel != channel or found.provider_id != provider_id:
            return None
        return found

    async def count_by_status(self, tenant_id: str, message_id: str) -> dict[str, int]:
        counts = await self._redis.hgetall(self._t(tenant_id, "mc", message_id))
        return {k: int(v) for k, v in counts.items() if int(v) > 0}

    async def delivery_stats(self) -> dict[tuple[str, str], int]:
        tenants = sorted(await self._redis.smembers(self._g("active")))
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant_id in tenants:
                pipe.hgetall(self._t(tenant_id, "stats"))
            rows = await pipe.execute()
        stats: defaultdict[tuple[str, str], int] = defaultdict(int)
        for row in rows:
            for key, value in row.items():
                channel, status = key.split("\x1f", 1)
                stats[(channel, status)] += int(value)
        return {k: v for k, v in stats.items() if v > 0}

    async def latest_delivery_to(
        self, tenant_id: str, channel: str, address: str
    ) -> Delivery | None:
        ref = await self._redis.get(self._t(tenant_id, "la", digest(channel, address)))
        if ref is None:
            return None
        delivery_id = ref.split("\x1f", 1)[1]
        return (await self._load_deliveries([(tenant_id, delivery_id)])).get(delivery_id)

    async def tenant_for_address(self, channel: str, address: str) -> str | None:
        ref = await self._redis.get(self._g("addr", digest(channel, address)))
        return None if ref is None else ref.split("\x1f", 2)[2]

    async def mark_contact_failing(
        self, tenant_id: str, person_id: str, kind: str, address: str, code: str, at: datetime
    ) -> None:
        check_contact_kind(kind)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._t(tenant_id, "fail"), f"{person_id}\x1f{kind}", dumps([address, code, us(at)])
            )
            pipe.incr(self._t(tenant_id, "devv"))
            await pipe.execute()

    # ------------------------------------------------------------------ replies

    async def add_reply(self, reply: Reply) -> bool:
        tp = self._tp(reply.tenant_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self._g("active"), reply.tenant_id)
            self._eval(
                pipe,
                _ADD_REPLY,
                [tp + "r:" + reply.id],
                [
                    tp,
                    self._ttl,
                    reply.id,
                    reply.model_dump_json(),
                    opt(reply.message_id),
                    us(reply.received_at),
                    opt(reply.person_id),
                    reply.channel,
                    reply.body,
                ],
            )
            _, added = await pipe.execute()
        return bool(added)

    async def list_replies(self, tenant_id: str, message_id: str) -> list[Reply]:
        ids = await self._redis.zrange(self._t(tenant_id, "mrep", message_id), 0, -1)
        if not ids:
            return []
        docs = await self._redis.mget([self._t(tenant_id, "r", i) for i in ids])
        return [Reply.model_validate_json(doc) for doc in docs if doc is not None]

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
        if limit <= 0:
            return []
        top = "+inf" if before is None else f"({us(before)}"
        if before is not None and before_id is not None:
            top = str(us(before))  # that instant too, past before_id (ids descending)
        rows = await self._eval(
            self._redis,
            _INBOX,
            [self._t(tenant_id, "ib", guardian_id)],
            [
                self._tp(tenant_id),
                guardian_id,
                top,
                us(now or datetime.now(UTC)),
                limit,
                "",
                before_id if before is not None and before_id is not None else "",
            ],
        )
        return [_inbox_item(*rows[i : i + 4]) for i in range(0, len(rows), 4)]

    async def inbox_item(
        self, tenant_id: str, guardian_id: str, message_id: str, *, now: datetime | None = None
    ) -> InboxItem | None:
        rows = await self._eval(
            self._redis,
            _INBOX,
            [self._t(tenant_id, "ib", guardian_id)],
            [
                self._tp(tenant_id),
                guardian_id,
                "+inf",
                us(now or datetime.now(UTC)),
                1,
                message_id,
            ],
        )
        return _inbox_item(*rows[:4]) if rows else None

    async def mark_read(
        self, tenant_id: str, guardian_id: str, message_id: str, at: datetime, via: str
    ) -> bool:
        tp = self._tp(tenant_id)
        found = await self._eval(
            self._redis,
            _MARK_READ,
            [tp + "stats"],
            [tp, self._ttl, message_id, guardian_id, us(at), via],
        )
        return bool(found)

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
        stamp = us(now)
        out = await self._eval(
            self._redis,
            _CLAIM,
            [self._qp + "clock"],
            [
                self._qp,
                stamp // 1000,
                stamp,
                max(1, round(lease_seconds * 1000)),
                limit,
                self.consumer,
                split.normal_reserved,
                *dict.fromkeys(kinds),
            ],
        )
        if out[-1] and not self._clamp_warned:
            self._clamp_warned = True
            log.warning("this worker's clock is ahead of Redis's: leases are checked on ours")
        jobs = [_job(out[i : i + 8]) for i in range(0, len(out) - 1, 8)]
        for job in jobs:
            if job.kind == JOB_SEND:
                self._remember(job.ref, job.tenant_id)
        jobs.sort(key=lambda job: (not job.urgent, job.due_at, job.id))
        return jobs

    async def finish_job(self, job_id: str) -> None:
        await self._eval(self._redis, _FINISH_JOBS, [self._qp + "kinds"], [self._qp, job_id])

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
        # The move first, then the end of the job: a crash in between leaves the job,
        # which the dispatcher then drops because the delivery is final.
        move = SendOutcome("", delivery_id, status, at, detail, reason, provider_id, segments)
        return (await self._apply_moves([move], [job_id]))[0]

    async def finish_sends(self, outcomes: Sequence[SendOutcome]) -> int:
        if not outcomes:
            return 0
        moves = outcomes  # a send outcome is a status move with the end of its job
        finished = list(dict.fromkeys(o.job_id for o in outcomes))
        moved = await self._apply_moves(moves, finished, [j for o in outcomes for j in o.jobs])
        return sum(moved)

    async def retry_job(self, job_id: str, due_at: datetime, error: str) -> None:
        await self._eval(
            self._redis,
            _RETRY_JOB,
            [self._qp + "kinds"],
            [self._qp, job_id, us(due_at), error, "0"],
        )

    # ---- postpone

    async def postpone_job(self, job_id: str, due_at: datetime, reason: str) -> None:
        await self._eval(
            self._redis,
            _RETRY_JOB,
            [self._qp + "kinds"],
            [self._qp, job_id, us(due_at), reason, "1"],
        )

    async def get_jobs(self, job_ids: Sequence[str]) -> dict[str, Job]:
        if not job_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self._qp + "j:" + job_id, "t", "k", "r", "d", "a", "e", "p")
            rows = await pipe.execute()
        return {
            job_id: _job([job_id, *row])
            for job_id, row in zip(job_ids, rows, strict=True)
            if row[1] is not None
        }

    async def queue_stats(self, now: datetime) -> dict[str, tuple[int, float]]:
        stamp = us(now)
        out = await self._eval(self._redis, _QUEUE_STATS, [self._qp + "kinds"], [self._qp, stamp])
        stats: dict[str, tuple[int, float]] = {}
        for i in range(0, len(out), 3):
            oldest = out[i + 2]
            age = 0.0 if oldest == "" else max(0.0, (stamp - int(oldest)) / 1e6)
            stats[out[i]] = (int(out[i + 1]), age)
        return stats

    # ---- rate limits

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

    # ---- retention

    async def purge_before(self, cutoff: datetime) -> int:
        """Remove messages created before ``cutoff`` with their deliveries, history, reads
        and replies, and replies received before it; the same for absence records and
        finished webhook messages; return how many deliveries went."""
        removed = 0
        active = await self._redis.smembers(self._g("active"))
        tenants = sorted(active | {t.id for t in await self.list_tenants()})
        for tenant_id in tenants:
            await self._purge_absences(tenant_id, cutoff)
            await self._purge_webhook_messages(tenant_id, cutoff)
        await self._sweep_feeds()
        for tenant_id in sorted(active):
            tp = self._tp(tenant_id)
            more = True
            while more:
                out = await self._eval(self._redis, _PURGE, [tp + "msgs"], [tp, us(cutoff), 2000])
                removed += int(out[0])
                more = bool(out[1])
                ids = out[2:]
                if ids:
                    await self._redis.unlink(*(self._g("did", i) for i in ids))
                    for i in ids:
                        self._where.pop(i, None)
        return removed


def _queue_person_deletion(
    pipe: Any, t: Callable[..., str], p: str, doc: str | None, devices: dict[str, str]
) -> None:
    """Queue the removal of a person with memberships, devices, preferences, failures."""
    if doc is not None:
        person = _person(p, doc)
        for u in person.unit_ids:
            pipe.srem(t("um", u), p)
        for g in person.group_ids:
            pipe.srem(t("gm", g), p)
    for device_id, ddoc in devices.items():
        device = _device(device_id, ddoc)
        if device.token is not None:
            pipe.hdel(t("tok"), device.token)
        if device.fid is not None:
            pipe.hdel(t("fid"), device.fid)
    pipe.delete(t("dev", p), t("rc", p), t("rg", p))
    pipe.hdel(t("persons"), p)
    pipe.hdel(t("roles"), p)
    pipe.hdel(t("prefs"), p)
    pipe.hdel(t("fail"), f"{p}\x1femail", f"{p}\x1fphone")


def _delivery_meta(d: Delivery) -> str:
    return "\x1f".join(
        (
            d.id,
            d.message_id,
            d.recipient_id,
            d.channel,
            d.status.value,
            f"{us(d.created_at):020d}",
            str(us(d.updated_at)),
            "" if d.not_before is None else str(us(d.not_before)),
            opt(d.reason),
            opt(d.provider_id),
            opt(d.segments),
            digest(d.channel, d.address) if d.address else "",
        )
    )
