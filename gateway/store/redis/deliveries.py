"""Deliveries in the Redis backend, with the indexes the status API and the providers need.

Under the tenant's hash tag: ``P:{t}:d:<id>`` (a hash: the delivery as JSON, its
moving fields and its status history ``hn``, ``h1`` … ``hn``; older versions kept the
history in a list ``h:<id>``), ``mr:<message>`` (deliveries per
recipient), ``mc:<message>`` (counts per status), ``stats`` (counts per channel and
status), ``la:<hash>`` (latest delivery per address). Lookups without a tenant are
single global keys: ``P:did:<id>`` (the delivery's tenant), ``P:pid:<hash>`` (a provider
id's delivery), ``P:adt:<hash>`` (the tenants that sent to an address, by their latest
delivery's time; ``P:addr:<hash>``, the latest delivery, in older versions). A status move is
one tenant script (lua/transition.lua) that keeps the forward-only rule.
"""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from gateway.constants import LOOKUP_CHANNELS
from gateway.models import Delivery, DeliveryStatus, Job, Role, StatusChange
from gateway.store import SendOutcome
from gateway.store.encoding import dumps, from_us, from_us_opt, us, us_opt
from gateway.store.redis import keys as K
from gateway.store.redis import scripts as lua
from gateway.store.redis.base import RedisFeature, RedisHandle, digest, opt
from gateway.store.redis.jobs import RedisJobs
from gateway.store.redis.scripts import Lua, read

# Seconds a follow-up job of a move waits past its due time (see apply_moves).
FOLLOWUP_GRACE = 2.0
_WHERE_CACHE = 50_000
# Delivery id -> tenant is kept in this many hashes ``P:didb:<n>``: planning costs one
# HSET per bucket and call, not a SET per delivery. The entries leave with the purge of
# their deliveries; the daily purge also renews the buckets' expiry (``renew``), so the
# buckets of a deployment that stopped expire like every other key.
_BUCKETS = 64

_TRANSITION = Lua(lua.TRANSITION)
_ADD_DELIVERIES = Lua(lua.ADD_DELIVERIES)
# KEYS: delivery hash. ARGV: at (µs), detail. A history row for a failed attempt.
_NOTE_ATTEMPT = Lua(read("note_attempt"))


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


def _history(delivery_id: str, entry: str) -> StatusChange:
    parts = entry.split("\x1f", 2)
    return StatusChange.model_construct(
        delivery_id=delivery_id,
        status=DeliveryStatus(parts[0]),
        at=from_us(parts[1]),
        detail=parts[2] if len(parts) == 3 else None,
    )


def _history_rows(h: dict[str, str]) -> list[str]:
    """The history rows kept in a delivery's hash (``hn`` of them: ``h1`` … ``hn``).
    Deliveries of older versions kept them in a list ``h:<id>``, read before these."""
    return [h[f"h{n}"] for n in range(1, int(h.get("hn", 0)) + 1)]


def _address_key(d: Delivery) -> str | None:
    """The hashed address under which replies to this delivery are looked up (``la:``,
    ``adt:``), or None: no address, or a channel not in LOOKUP_CHANNELS."""
    if d.address and d.channel in LOOKUP_CHANNELS:
        return digest(d.channel, d.address)
    return None


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
            _address_key(d) or "",
        )
    )


def _bucket(delivery_id: str) -> str:
    return str(zlib.crc32(delivery_id.encode()) % _BUCKETS)


class DeliveryOwners(RedisFeature):
    """Which tenant a delivery id belongs to (field ``<id>`` of the hash ``P:didb:<n>``,
    ``n`` from the id; ``P:did:<id>`` in older versions, still read), with a bounded
    cache: ids never move, so the cache is never wrong. Shared by the deliveries, the
    queue (which learns a send job's tenant when it claims it) and the purge (which
    forgets)."""

    def __init__(self, db: RedisHandle) -> None:
        super().__init__(db)
        self._where: OrderedDict[str, str] = OrderedDict()

    def queue_add(self, pipe: Any, deliveries: Sequence[Delivery]) -> None:
        """Queue the owners of new deliveries on a pipeline: one HSET per bucket."""
        buckets: defaultdict[str, dict[str, str]] = defaultdict(dict)
        for d in deliveries:
            buckets[_bucket(d.id)][d.id] = d.tenant_id
        for bucket, owners in buckets.items():
            pipe.hset(self._db.g(K.DELIVERY_TENANTS, bucket), mapping=owners)

    async def renew(self) -> None:
        """Every bucket expires a retention (and a day) from now (the daily purge)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for n in range(_BUCKETS):
                pipe.expire(self._db.g(K.DELIVERY_TENANTS, str(n)), self._db.ttl)
            await pipe.execute()

    async def of(self, ids: Sequence[str]) -> dict[str, str]:
        where = {i: self._where[i] for i in ids if i in self._where}
        missing = [i for i in dict.fromkeys(ids) if i not in where]
        if missing:
            async with self._redis.pipeline(transaction=False) as pipe:
                for i in missing:
                    pipe.hget(self._db.g(K.DELIVERY_TENANTS, _bucket(i)), i)
                    pipe.get(self._db.g(K.DELIVERY_TENANT, i))  # as older versions kept it
                found = await pipe.execute()
            for n, i in enumerate(missing):
                tenant = found[2 * n] or found[2 * n + 1]
                if tenant is not None:
                    where[i] = tenant
                    self.remember(i, tenant)
        return where

    def remember(self, delivery_id: str, tenant_id: str) -> None:
        self._where[delivery_id] = tenant_id
        if len(self._where) > _WHERE_CACHE:
            self._where.popitem(last=False)

    async def forget(self, delivery_ids: Sequence[str]) -> None:
        """Purged deliveries: their owner entries (and ``did`` keys) and cached owners go."""
        buckets: defaultdict[str, list[str]] = defaultdict(list)
        for i in delivery_ids:
            buckets[_bucket(i)].append(i)
        async with self._redis.pipeline(transaction=False) as pipe:
            for bucket, ids in buckets.items():
                pipe.hdel(self._db.g(K.DELIVERY_TENANTS, bucket), *ids)
            await pipe.execute()
        await self._redis.unlink(*(self._db.g(K.DELIVERY_TENANT, i) for i in delivery_ids))
        for i in delivery_ids:
            self._where.pop(i, None)


class RedisDeliveries(RedisFeature):
    """:class:`gateway.store.ports.DeliveryStore`, ``ProviderLookup`` and
    ``DeliveryReport`` on Redis. A delivery's jobs, and the jobs a move ends or
    follows with, go through the queue (``jobs``) in the same round trip."""

    SCRIPTS = (_TRANSITION, _ADD_DELIVERIES, _NOTE_ATTEMPT)

    def __init__(self, db: RedisHandle, owners: DeliveryOwners, jobs: RedisJobs) -> None:
        super().__init__(db)
        self._owners = owners
        self._jobs = jobs
        # The channel of deliveries added or read here: a provider id is indexed
        # (``pid:``) only for LOOKUP_CHANNELS, and when the channel is not known.
        self._channels: OrderedDict[str, str] = OrderedDict()

    def _note_channel(self, delivery_id: str, channel: str) -> None:
        self._channels[delivery_id] = channel
        if len(self._channels) > _WHERE_CACHE:
            self._channels.popitem(last=False)

    def _indexes_provider_id(self, delivery_id: str) -> bool:
        channel = self._channels.get(delivery_id)
        return channel is None or channel in LOOKUP_CHANNELS

    async def add_deliveries(self, deliveries: Sequence[Delivery], jobs: Sequence[Job]) -> int:
        by_tenant: defaultdict[str, list[Delivery]] = defaultdict(list)
        for d in {d.id: d for d in reversed(deliveries)}.values():
            by_tenant[d.tenant_id].append(d)
        new = 0
        if by_tenant:
            # Deliveries first, then their jobs: a job never runs before its delivery
            # exists; a crash in between leaves the plan job, whose rerun adds the jobs.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.sadd(self._db.active, *by_tenant)
                self._owners.queue_add(pipe, [d for rows in by_tenant.values() for d in rows])
                for tenant_id, rows in by_tenant.items():
                    tp = self._db.tp(tenant_id)
                    args: list[Any] = [tp, self._db.ttl]
                    for d in reversed(rows):
                        args.append(_delivery_meta(d))
                        args.append(_delivery_doc(d))
                    self._db.eval(pipe, _ADD_DELIVERIES, [self._db.anchor(tenant_id)], args)
                results = await pipe.execute()
            n_scripts = len(by_tenant)
            new = sum(int(x) for x in results[-n_scripts:])
            for tenant_id, rows in by_tenant.items():
                for d in rows:
                    self._owners.remember(d.id, tenant_id)
                    self._note_channel(d.id, d.channel)
        async with self._redis.pipeline(transaction=False) as pipe:
            self._note_addresses(pipe, [d for rows in by_tenant.values() for d in rows])
            self._jobs.queue(pipe, jobs)
            await pipe.execute()
        return new

    def _note_addresses(self, pipe: Any, deliveries: Sequence[Delivery]) -> None:
        """Per address a sorted set ``P:adt:<hash>`` of the tenants that sent to it, by
        their latest delivery's creation time: ZADD GT keeps the latest without a read
        (two commands per address, no script)."""
        latest: dict[str, dict[str, int]] = {}
        for d in deliveries:
            if (address := _address_key(d)) is not None:
                tenants = latest.setdefault(self._db.g(K.ADDRESS_TENANTS, address), {})
                tenants[d.tenant_id] = max(tenants.get(d.tenant_id, 0), us(d.created_at))
        for key, tenants in latest.items():
            pipe.zadd(key, tenants, gt=True)
            pipe.expire(key, self._db.ttl)

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        found = await self.get_deliveries([delivery_id])
        return found.get(delivery_id)

    async def get_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, Delivery]:
        if not delivery_ids:
            return {}
        where = await self._owners.of(delivery_ids)
        ids = [i for i in dict.fromkeys(delivery_ids) if i in where]
        return await self.load([(where[i], i) for i in ids])

    async def load(self, refs: Sequence[tuple[str, str]]) -> dict[str, Delivery]:
        if not refs:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant_id, delivery_id in refs:
                pipe.hgetall(self._db.t(tenant_id, K.DELIVERY, delivery_id))
            rows = await pipe.execute()
        found = {i: _delivery(i, h) for (_, i), h in zip(refs, rows, strict=True) if h}
        for i, d in found.items():
            self._note_channel(i, d.channel)
        return found

    async def list_deliveries(self, tenant_id: str, message_id: str) -> list[Delivery]:
        rows = await self._redis.hvals(self._db.t(tenant_id, K.RECIPIENTS, message_id))
        ids = [i for row in rows for i in row.split()]
        found = await self.load([(tenant_id, i) for i in ids])
        return sorted(found.values(), key=lambda d: (d.created_at, d.id))

    async def history(self, delivery_ids: Sequence[str]) -> dict[str, list[StatusChange]]:
        result: dict[str, list[StatusChange]] = {i: [] for i in delivery_ids}
        if not result:
            return result
        where = await self._owners.of(list(result))
        ids = [i for i in result if i in where]
        async with self._redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.lrange(self._db.t(where[i], K.HISTORY, i), 0, -1)
                pipe.hgetall(self._db.t(where[i], K.DELIVERY, i))
            rows = await pipe.execute()
        for n, i in enumerate(ids):
            entries = rows[2 * n] + _history_rows(rows[2 * n + 1])
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
        moved = await self.apply_moves([move], [], jobs)
        return moved[0]

    async def apply_moves(
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
        where = await self._owners.of([m.delivery_id for m in moves])
        by_tenant: dict[str, list[int]] = {}
        for n, m in enumerate(moves):
            tenant_id = where.get(m.delivery_id)
            if tenant_id is not None:
                by_tenant.setdefault(tenant_id, []).append(n)
        async with self._redis.pipeline(transaction=False) as pipe:
            grace = timedelta(seconds=FOLLOWUP_GRACE)
            self._jobs.queue(
                pipe, [job.model_copy(update={"due_at": job.due_at + grace}) for job in followups]
            )
            for m in moves:
                if (
                    m.provider_id is not None
                    and m.delivery_id in where
                    and self._indexes_provider_id(m.delivery_id)
                ):
                    pipe.set(
                        self._db.g(K.PROVIDER_ID, digest(m.provider_id)),
                        f"{where[m.delivery_id]}\x1f{m.delivery_id}",
                        ex=self._db.ttl,
                    )
            scripts = 0
            for tenant_id, indexes in by_tenant.items():
                tp = self._db.tp(tenant_id)
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
                self._db.eval(pipe, _TRANSITION, [self._db.anchor(tenant_id)], args)
                scripts += 1
            if finished_jobs:
                self._jobs.queue_finish(pipe, finished_jobs)
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
        tenant_id = (await self._owners.of([delivery_id])).get(delivery_id)
        if tenant_id is None:
            return False
        keys = [self._db.t(tenant_id, K.DELIVERY, delivery_id)]
        return bool(await self._db.eval(self._redis, _NOTE_ATTEMPT, keys, [us(at), detail]))

    async def delivery_by_provider_id(self, channel: str, provider_id: str) -> Delivery | None:
        if channel not in LOOKUP_CHANNELS:
            return None
        ref = await self._redis.get(self._db.g(K.PROVIDER_ID, digest(provider_id)))
        if ref is None:
            return None
        tenant_id, delivery_id = ref.split("\x1f", 1)
        found = (await self.load([(tenant_id, delivery_id)])).get(delivery_id)
        if found is None or found.channel != channel or found.provider_id != provider_id:
            return None
        return found

    async def count_by_status(self, tenant_id: str, message_id: str) -> dict[str, int]:
        counts = await self._redis.hgetall(self._db.t(tenant_id, K.COUNTS, message_id))
        return {k: int(v) for k, v in counts.items() if int(v) > 0}

    async def delivery_stats(self) -> dict[tuple[str, str], int]:
        tenants = sorted(await self._redis.smembers(self._db.active))
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant_id in tenants:
                pipe.hgetall(self._db.t(tenant_id, K.STATS))
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
        if channel not in LOOKUP_CHANNELS:
            return None
        ref = await self._redis.get(self._db.t(tenant_id, K.LATEST, digest(channel, address)))
        if ref is None:
            return None
        delivery_id = ref.split("\x1f", 1)[1]
        return (await self.load([(tenant_id, delivery_id)])).get(delivery_id)

    async def tenant_for_address(self, channel: str, address: str) -> str | None:
        if channel not in LOOKUP_CHANNELS:
            return None
        key = digest(channel, address)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(self._db.g(K.ADDRESS_TENANTS, key), 0, 0, withscores=True)
            pipe.get(self._db.g(K.ADDRESS, key))  # kept by older versions: "created20\x1fid\x1ft"
            top, ref = await pipe.execute()
        found = [(int(score), tenant) for tenant, score in top]
        if ref is not None:
            created, _, tenant = ref.split("\x1f", 2)
            found.append((int(created), tenant))
        return max(found)[1] if found else None

    async def recipient_deliveries(
        self, tenant_id: str, message_id: str, recipient_id: str
    ) -> list[Delivery]:
        ids = await self._redis.hget(self._db.t(tenant_id, K.RECIPIENTS, message_id), recipient_id)
        if not ids:
            return []
        found = await self.load([(tenant_id, i) for i in ids.split()])
        return sorted(found.values(), key=lambda d: (d.channel, d.target))
