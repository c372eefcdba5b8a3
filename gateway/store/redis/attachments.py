"""Attachment metadata in the Redis backend (gateway/store/attachments.py).

Keys: ``P:{<tenant>}:att:<id>`` (the attachment as JSON) and ``P:{<tenant>}:attmsg:<message>``
(a sorted set of a message's attachment ids by position) live in the tenant's slot, so a
claim is one script. Two sorted sets without a tenant, ``P:att:unused`` (by upload time)
and ``P:att:used`` (by the time a message took it), of ``[tenant, id]``, are what the
retention purge reads; they are updated after the claim (another slot on a Cluster), and
the purge moves an entry a crash left behind in the wrong set.
"""

from __future__ import annotations

import json
from datetime import datetime

from gateway.models import Attachment
from gateway.store.encoding import dumps, from_us, from_us_opt, us
from gateway.store.redis import keys as K
from gateway.store.redis.base import RedisFeature
from gateway.store.redis.scripts import read

# KEYS: the message's set, then one hash per id. ARGV: message id, time (us), ttl (s).
# Returns {} or a flat list: position (1-based), problem, position, problem, ...
_CLAIM = read("attachments_claim")


def _fields(a: Attachment) -> dict[str, str | int]:
    return {
        "tenant_id": a.tenant_id,
        "id": a.id,
        "name": a.name,
        "content_type": a.content_type,
        "size": a.size,
        "sha256": a.sha256,
        "created_at": us(a.created_at),
        "message_id": a.message_id or "",
        "used_at": "" if a.used_at is None else us(a.used_at),
        "position": a.position,
    }


def _attachment(f: dict[str, str]) -> Attachment:
    return Attachment(
        tenant_id=f["tenant_id"],
        id=f["id"],
        name=f["name"],
        content_type=f["content_type"],
        size=int(f["size"]),
        sha256=f["sha256"],
        created_at=from_us(f["created_at"]),
        message_id=f["message_id"] or None,
        used_at=from_us_opt(f["used_at"]),
        position=int(f["position"]),
    )


def _pair(member: str) -> tuple[str, str]:
    tenant_id, attachment_id = json.loads(member)
    return str(tenant_id), str(attachment_id)


class RedisAttachments(RedisFeature):
    """:class:`gateway.store.attachments.AttachmentStore` on the Redis store's handle."""

    def _key(self, tenant_id: str, attachment_id: str) -> str:
        return self._db.t(tenant_id, K.ATTACHMENT, attachment_id)

    def _index(self, which: str) -> str:
        return self._db.g(K.ATTACHMENTS_BY_TIME, which)

    async def add(self, attachment: Attachment) -> None:
        redis = self._redis
        member = dumps([attachment.tenant_id, attachment.id])
        # The index first: an entry without its key is harmless, a key without one is kept.
        await redis.zadd(self._index("unused"), {member: us(attachment.created_at)}, nx=True)
        key = self._key(attachment.tenant_id, attachment.id)
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=_fields(attachment))
            pipe.expire(key, self._db.ttl)
            await pipe.execute()

    async def get(self, tenant_id: str, ids: list[str]) -> list[Attachment]:
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(self._key(tenant_id, i))
            rows: list[dict[str, str]] = await pipe.execute()
        return [_attachment(row) for row in rows if row]

    async def claim(
        self, tenant_id: str, ids: list[str], message_id: str, at: datetime
    ) -> dict[str, str]:
        if not ids:
            return {}
        keys = [self._db.t(tenant_id, K.MESSAGE_ATTACHMENTS, message_id)]
        keys += [self._key(tenant_id, i) for i in ids]
        answer = await self._redis.eval(_CLAIM, len(keys), *keys, message_id, us(at), self._db.ttl)
        if answer:
            return {ids[int(answer[n]) - 1]: str(answer[n + 1]) for n in range(0, len(answer), 2)}
        members = [dumps([tenant_id, i]) for i in ids]
        await self._redis.zadd(self._index("used"), dict.fromkeys(members, us(at)))
        await self._redis.zrem(self._index("unused"), *members)
        return {}

    async def for_message(self, tenant_id: str, message_id: str) -> list[Attachment]:
        redis = self._redis
        ids: list[str] = await redis.zrange(
            self._db.t(tenant_id, K.MESSAGE_ATTACHMENTS, message_id), 0, -1
        )
        if not ids:
            return []
        found = await self.get(tenant_id, ids)
        return [a for a in found if a.message_id == message_id]

    async def expired(
        self, used_before: datetime, unused_before: datetime, limit: int
    ) -> list[tuple[str, str]]:
        redis = self._redis
        used = await redis.zrangebyscore(
            self._index("used"), "-inf", f"({us(used_before)}", start=0, num=limit
        )
        due = [_pair(m) for m in used]
        unused = await redis.zrangebyscore(
            self._index("unused"), "-inf", f"({us(unused_before)}", start=0, num=limit
        )
        for member in unused:
            tenant_id, attachment_id = _pair(member)
            row = await redis.hgetall(self._key(tenant_id, attachment_id))
            doc = _attachment(row) if row else None
            if doc is not None and doc.message_id is not None and doc.used_at is not None:
                # Claimed, but a crash kept it from moving to the used set: move it now.
                await redis.zadd(self._index("used"), {member: us(doc.used_at)})
                await redis.zrem(self._index("unused"), member)
                continue
            due.append((tenant_id, attachment_id))
        return due[:limit]

    async def remove(self, pairs: list[tuple[str, str]]) -> None:
        redis = self._redis
        for tenant_id, attachment_id in pairs:
            key = self._key(tenant_id, attachment_id)
            owner = await redis.hget(key, "message_id")
            if owner:
                await redis.zrem(self._db.t(tenant_id, K.MESSAGE_ATTACHMENTS, owner), attachment_id)
            await redis.delete(key)
            member = dumps([tenant_id, attachment_id])
            await redis.zrem(self._index("used"), member)
            await redis.zrem(self._index("unused"), member)
