"""Webhooks in the Redis backend: endpoints, the change feed and the outbox.

Endpoints are per tenant (``P:{t}:wh:ep``, a hash of endpoint JSON); the flag
``P:{t}:wh:on`` exists while the tenant has an enabled endpoint, and the
tenant scripts that record a status change, a read or a reply check it and
then append to the tenant's own feed in the same script (``feed()`` in
redis/scripts.py): ``P:{t}:wh:feed`` (sorted set by the tenant's ``wh:seq``). So a
change enters the feed atomically with the change itself, in commit order, and
every script stays in one slot (Redis Cluster).

Such a script reports that it fed the feed (``scripts.tenant_script``); the
store then marks the tenant pending in the queue's slot (``P:{q}:wh:pend``, tenant
-> a counter bumped per mark) and makes sure the fan-out job exists: a second step.
``changes_since`` first relays the pending tenants' feeds into the global feed
``P:{q}:wh:feed`` (giving each change its global seq once: ``wh:rel`` holds the last
tenant seq relayed per tenant), trims them, and unmarks a tenant only if its counter
did not move meanwhile. A crash between a change and its mark leaves the change in
the tenant's feed: tenants that ever had an endpoint (``P:{tenants}:wh``) are swept
for non-empty feeds when a store opens and by the daily purge.

The global feed, its cursor and the outbox live in the queue's slot beside their
jobs: ``P:{q}:wh:feed`` (sorted set by seq), ``wh:seq``, ``wh:cursor``,
``wh:m:<id>`` (a message), ``wh:a:<id>`` (its attempts), ``wh:t:<tenant>`` (the
tenant's outbox by creation time) and ``wh:e:<tenant>\\x1f<endpoint>`` (ids per
endpoint). So a fan-out step, an attempt or a replay is one script.

Retention: a finished (delivered or failed) message and its attempts expire with the
retention, counted from when it finished (a replay makes them persistent again), and
``purge_before`` removes finished messages created before its cutoff earlier.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.exceptions import WatchError

from gateway.constants import JOB_WEBHOOK_SEND, WEBHOOK_REPLY_RECEIVED
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
from gateway.store.redis import keys as K
from gateway.store.redis import scripts as lua
from gateway.store.redis.base import RedisFeature, opt
from gateway.store.redis.feed import MARK_FED
from gateway.store.redis.scripts import Lua, read

# Where a change's time goes in its data (default "at").
_TIME_FIELD = {WEBHOOK_REPLY_RECEIVED: "received_at"}

_MESSAGE_FIELDS = read("webhooks_message_fields")

# KEYS[1] the cursor. ARGV: qp cursor next_cursor fanout_job n_messages, 11 per message
# (id tenant endpoint doc status attempts next_at reason code created updated), then 6 per
# job (id tenant kind ref due attempts). Returns 1 when the fan-out should run again.
_ENQUEUE = Lua(lua.QUEUE_COMMON + _MESSAGE_FIELDS + read("webhooks_enqueue"))

# KEYS[1] the message. ARGV: qp id job_id attempt_json status counted next_at reason code at
# ttl (seconds a finished message is kept)
_ATTEMPT = Lua(lua.QUEUE_COMMON + _MESSAGE_FIELDS + read("webhooks_attempt"))

# KEYS[1] the message. ARGV: qp id tenant at send_kind. Returns 0 unknown, -1 not failed, 1.
_REPLAY = Lua(lua.QUEUE_COMMON + _MESSAGE_FIELDS + read("webhooks_replay"))

# KEYS[1] the endpoint's id set. ARGV: qp mode(delete|fail) reason at send_kind ttl
_ENDPOINT_MESSAGES = Lua(lua.QUEUE_COMMON + _MESSAGE_FIELDS + read("webhooks_endpoint_messages"))

# KEYS[1] the tenant's outbox index (wh:t:<tenant>). ARGV: qp cutoff offset limit. Looks at
# up to ``limit`` messages created before the cutoff, from rank ``offset``: removes the
# finished ones with their attempts, drops index entries whose message expired, keeps the
# pending ones. Returns {entries dropped from the index, entries looked at}.
_PURGE = Lua(read("webhooks_purge"))
PURGE_BATCH = 1000

_APPEND_CHANGE = Lua(lua.APPEND_CHANGE)

# KEYS[1] the last tenant seq relayed per tenant (wh:rel). ARGV: qp tenant, then 2 per
# change of the tenant's feed: tenant_seq "kind\31at\31data". Gives each change not relayed
# yet its global seq in the global feed; returns the last tenant seq relayed.
_RELAY = Lua(read("webhooks_relay"))

# KEYS[1] wh:pend. ARGV: tenant mark. Unmarks the tenant unless it was marked again.
_UNMARK = Lua(read("webhooks_unmark"))
RELAY_BATCH = 1000


def _endpoint(doc: str) -> WebhookEndpoint:
    return WebhookEndpoint.model_validate_json(doc)


def _message(message_id: str, h: dict[str, str]) -> WebhookMessage:
    doc = json.loads(h["j"])
    code = h.get("c")
    return WebhookMessage.model_construct(
        id=message_id,
        tenant_id=h["t"],
        endpoint_id=h["e"],
        event_type=doc[0],
        body=doc[1],
        status=WebhookStatus(h["s"]),
        attempts=int(h["a"]),
        next_attempt_at=from_us_opt(h.get("n")),
        reason=h.get("r"),
        last_status_code=None if code is None else int(code),
        created_at=from_us(doc[2]),
        updated_at=from_us(h["u"]),
    )


class RedisWebhooks(RedisFeature):
    """:class:`gateway.store.ports.ChangeFeed`, ``WebhookEndpoints`` and
    ``WebhookOutbox`` on Redis."""

    SCRIPTS = (
        _ENQUEUE,
        _ATTEMPT,
        _REPLAY,
        _ENDPOINT_MESSAGES,
        _APPEND_CHANGE,
        _PURGE,
        MARK_FED,
        _RELAY,
        _UNMARK,
    )

    # ------------------------------------------------------------------ endpoints

    async def _endpoints_write(
        self, tenant_id: str, endpoint_id: str, change: Any, *, delete: bool = False
    ) -> WebhookEndpoint | None:
        """Read-modify-write one endpoint (``change(old)`` returns the new one, or None to
        write nothing; ``delete`` removes it) and keep the tenant's "has an enabled
        endpoint" flag right, in one WATCHed transaction. Returns the endpoint as it was
        before, or None if there was none."""
        key = self._db.t(tenant_id, K.WEBHOOK_ENDPOINTS)
        flag = self._db.t(tenant_id, K.WEBHOOKS_ON)
        # First, so the sweep for stranded changes knows every tenant that may have some.
        await self._redis.sadd(self._db.g(K.TENANTS_TAG, K.WEBHOOK_TENANTS), tenant_id)
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    docs: dict[str, str] = await pipe.hgetall(key)
                    old = None if endpoint_id not in docs else _endpoint(docs[endpoint_id])
                    new: WebhookEndpoint | None = None if delete else change(old)
                    if new is None and (not delete or old is None):
                        await pipe.unwatch()
                        return old
                    endpoints = {k: _endpoint(v) for k, v in docs.items()}
                    if new is None:
                        endpoints.pop(endpoint_id, None)
                    else:
                        endpoints[endpoint_id] = new
                    pipe.multi()
                    if new is None:
                        pipe.hdel(key, endpoint_id)
                    else:
                        pipe.hset(key, endpoint_id, new.model_dump_json())
                    if any(e.enabled for e in endpoints.values()):
                        pipe.set(flag, "1")
                    else:
                        pipe.delete(flag)
                    await pipe.execute()
                    return old
                except WatchError:
                    continue

    async def create_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        def change(old: WebhookEndpoint | None) -> WebhookEndpoint:
            if old is not None:
                raise Conflict("an endpoint with this id exists already")
            return endpoint

        await self._endpoints_write(endpoint.tenant_id, endpoint.id, change)

    async def list_webhook_endpoints(self, tenant_id: str) -> list[WebhookEndpoint]:
        docs = await self._redis.hvals(self._db.t(tenant_id, K.WEBHOOK_ENDPOINTS))
        return sorted(map(_endpoint, docs), key=lambda e: (e.created_at, e.id))

    async def get_webhook_endpoint(
        self, tenant_id: str, endpoint_id: str
    ) -> WebhookEndpoint | None:
        doc = await self._redis.hget(self._db.t(tenant_id, K.WEBHOOK_ENDPOINTS), endpoint_id)
        return None if doc is None else _endpoint(doc)

    async def update_webhook_endpoint(self, endpoint: WebhookEndpoint) -> bool:
        def change(old: WebhookEndpoint | None) -> WebhookEndpoint | None:
            if old is None:
                return None
            return endpoint.model_copy(update={"created_at": old.created_at})

        return await self._endpoints_write(endpoint.tenant_id, endpoint.id, change) is not None

    async def delete_webhook_endpoint(self, tenant_id: str, endpoint_id: str) -> bool:
        old = await self._endpoints_write(tenant_id, endpoint_id, None, delete=True)
        if old is None:
            return False
        await self._endpoint_messages(tenant_id, endpoint_id, "delete", "", 0)
        return True

    async def disable_webhook_endpoint(
        self, tenant_id: str, endpoint_id: str, reason: str, at: datetime
    ) -> int:
        def change(old: WebhookEndpoint | None) -> WebhookEndpoint | None:
            if old is None:
                return None
            return old.model_copy(
                update={"enabled": False, "disabled_reason": reason, "updated_at": at}
            )

        if await self._endpoints_write(tenant_id, endpoint_id, change) is None:
            return 0
        return await self._endpoint_messages(tenant_id, endpoint_id, "fail", reason, us(at))

    async def _endpoint_messages(
        self, tenant_id: str, endpoint_id: str, mode: str, reason: str, at: int
    ) -> int:
        n = await self._db.eval(
            self._redis,
            _ENDPOINT_MESSAGES,
            [self._db.q(K.ENDPOINT_MESSAGES, f"{tenant_id}\x1f{endpoint_id}")],
            [self._db.qp, mode, reason, at, JOB_WEBHOOK_SEND, self._db.ttl],
        )
        return int(n)

    # ------------------------------------------------------------------ change feed

    async def append_change(
        self, tenant_id: str, event_type: str, data: dict[str, Any], at: datetime
    ) -> int | None:
        tp = self._db.tp(tenant_id)
        seq = await self._db.eval(
            self._redis, _APPEND_CHANGE, [tp + K.WEBHOOKS_ON], [tp, event_type, dumps(data), us(at)]
        )
        return None if seq is None else int(seq)

    async def sweep_feeds(self) -> None:
        """Mark pending every tenant whose feed holds changes: recovers the changes of a
        process that crashed between a change and its mark (run by ``open`` and the purge)."""
        tenants = sorted(await self._redis.smembers(self._db.g(K.TENANTS_TAG, K.WEBHOOK_TENANTS)))
        if not tenants:
            return
        pipe: Any
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant_id in tenants:
                pipe.zrange(self._db.t(tenant_id, K.TENANT_FEED), 0, 0)
            firsts = await pipe.execute()
        for tenant_id, first in zip(tenants, firsts, strict=True):
            if first:
                self._db.feed.note(tenant_id, int(first[0].split("\x1f", 3)[2]))
        await self._db.feed.flush(self._redis)

    async def _relay_feeds(self) -> None:
        """Move the pending tenants' changes into the global feed, in each tenant's commit
        order, and unmark the tenants that got nothing new meanwhile."""
        pending: dict[str, str] = await self._redis.hgetall(self._db.qp + K.PENDING)
        for tenant_id, mark in sorted(pending.items()):
            feed = self._db.t(tenant_id, K.TENANT_FEED)
            while True:
                rows = await self._redis.zrange(feed, 0, RELAY_BATCH - 1)
                if rows:
                    args: list[Any] = [self._db.qp, tenant_id]
                    for row in rows:
                        args.extend(row.split("\x1f", 1))
                    last = await self._db.eval(self._redis, _RELAY, [self._db.qp + K.RELAYED], args)
                    await self._redis.zremrangebyscore(feed, "-inf", int(last))
                if len(rows) < RELAY_BATCH:
                    break
            await self._db.eval(self._redis, _UNMARK, [self._db.qp + K.PENDING], [tenant_id, mark])

    async def changes_since(self, cursor: int, limit: int) -> tuple[list[Change], int]:
        await self._relay_feeds()
        rows = await self._redis.zrangebyscore(
            self._db.qp + K.FEED, f"({cursor}", "+inf", start=0, num=max(0, limit)
        )
        changes: list[Change] = []
        for row in rows:
            seq, tenant_id, event_type, stamp, data = row.split("\x1f", 4)
            at = from_us(stamp)
            payload: dict[str, Any] = json.loads(data)
            payload.setdefault(_TIME_FIELD.get(event_type, "at"), at.isoformat())
            changes.append(
                Change(seq=int(seq), tenant_id=tenant_id, type=event_type, at=at, data=payload)
            )
        return changes, (changes[-1].seq if changes else cursor)

    async def webhook_cursor(self) -> int:
        return int(await self._redis.get(self._db.qp + K.CURSOR) or 0)

    async def enqueue_webhooks(
        self,
        cursor: int,
        next_cursor: int,
        messages: Sequence[WebhookMessage],
        jobs: Sequence[Job],
        fanout_job_id: str,
    ) -> bool:
        args: list[Any] = [self._db.qp, cursor, next_cursor, fanout_job_id, len(messages)]
        for m in messages:
            args.extend(
                (
                    m.id,
                    m.tenant_id,
                    m.endpoint_id,
                    dumps([m.event_type, m.body, us(m.created_at)]),
                    m.status.value,
                    m.attempts,
                    "" if m.next_attempt_at is None else us(m.next_attempt_at),
                    opt(m.reason),
                    "" if m.last_status_code is None else m.last_status_code,
                    us(m.created_at),
                    us(m.updated_at),
                )
            )
        for j in jobs:
            args.extend((j.id, j.tenant_id, j.kind, j.ref, us(j.due_at), j.attempts))
        more = await self._db.eval(self._redis, _ENQUEUE, [self._db.qp + K.CURSOR], args)
        return bool(more)

    # ------------------------------------------------------------------ outbox

    async def get_webhook_message(self, message_id: str) -> WebhookMessage | None:
        h = await self._redis.hgetall(self._db.q(K.WEBHOOK_MESSAGE, message_id))
        return _message(message_id, h) if h else None

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
        index = self._db.q(K.TENANT_MESSAGES, tenant_id)
        top = "+inf" if before is None else f"({us(before)}"
        edge: int | None = None
        if before is not None and before_id is not None:
            edge = us(before)
            top = str(edge)  # that instant too, past before_id (ids descending)
        found: list[WebhookMessage] = []
        offset, page = 0, max(limit, 100)
        while len(found) < limit:
            scored = await self._redis.zrevrangebyscore(
                index, top, "-inf", start=offset, num=page, withscores=True
            )
            if not scored:
                break
            ids = [
                i
                for i, score in scored
                if edge is None or before_id is None or int(score) != edge or i < before_id
            ]
            rows = await self._load_webhook_messages(ids)
            for m in rows:
                if (status is None or m.status is status) and (
                    endpoint_id is None or m.endpoint_id == endpoint_id
                ):
                    found.append(m)
            offset += page
        return found[: max(0, limit)]

    async def _load_webhook_messages(self, ids: Sequence[str]) -> list[WebhookMessage]:
        pipe: Any
        async with self._redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(self._db.q(K.WEBHOOK_MESSAGE, i))
            rows = await pipe.execute()
        return [_message(i, h) for i, h in zip(ids, rows, strict=True) if h]

    async def webhook_attempts(self, message_id: str) -> list[WebhookAttempt]:
        rows = await self._redis.lrange(self._db.q(K.ATTEMPTS, message_id), 0, -1)
        return [
            WebhookAttempt(
                at=from_us(f[0]), status_code=f[1], duration_ms=f[2], error=f[3], response=f[4]
            )
            for f in map(json.loads, rows)
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
        attempt_doc = ""
        code: int | str = ""
        if attempt is not None:
            response = None if attempt.response is None else attempt.response[:200]
            attempt_doc = dumps(
                [us(attempt.at), attempt.status_code, attempt.duration_ms, attempt.error, response]
            )
            code = "" if attempt.status_code is None else attempt.status_code
        due = us_opt(next_attempt_at) if status is WebhookStatus.pending else None
        moved = await self._db.eval(
            self._redis,
            _ATTEMPT,
            [self._db.q(K.WEBHOOK_MESSAGE, message_id)],
            [
                self._db.qp,
                message_id,
                job_id,
                attempt_doc,
                status.value,
                0 if attempt is None else 1,
                "" if due is None else due,
                opt(reason),
                code,
                us(at),
                self._db.ttl,
            ],
        )
        return bool(moved)

    async def replay_webhook_message(
        self, tenant_id: str, message_id: str, at: datetime
    ) -> WebhookMessage | None:
        done = await self._db.eval(
            self._redis,
            _REPLAY,
            [self._db.q(K.WEBHOOK_MESSAGE, message_id)],
            [self._db.qp, message_id, tenant_id, us(at), JOB_WEBHOOK_SEND],
        )
        if done == 0:
            return None
        if done == -1:
            raise Conflict("only a failed message can be replayed")
        return await self.get_webhook_message(message_id)

    async def purge_messages(self, tenant_id: str, cutoff: datetime) -> None:
        """Retention: remove the tenant's finished outbox messages created before ``cutoff``
        with their attempts (called by ``purge_before``, redis/retention.py)."""
        index = self._db.q(K.TENANT_MESSAGES, tenant_id)
        offset = 0  # the pending messages kept so far sit before it in the index
        while True:
            dropped, seen = await self._db.eval(
                self._redis, _PURGE, [index], [self._db.qp, us(cutoff), offset, PURGE_BATCH]
            )
            offset += int(seen) - int(dropped)
            if int(seen) < PURGE_BATCH:
                return
