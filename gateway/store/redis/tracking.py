"""Redis keys and queries of delivery tracking: who was reached, and the reads.

``P:{t}:rch:<message>`` holds each subject reached first (HSETNX) and
``P:{t}:rchl:<message>`` their order; both expire with the message. Reads are written
by the inbox (``mark_read`` writes ``P:{t}:rd:<message>``, redis/inbox.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.models import Reached, ReadRecord, reached_data
from gateway.store.encoding import dumps, from_us, us
from gateway.store.redis import keys as K
from gateway.store.redis.base import RedisFeature
from gateway.store.redis.scripts import Lua, read, tenant_script

# KEYS[1] tenant anchor. ARGV: tp ttl, then 5 per row: message field row_json
# webhook_data_json at_us. Returns 0/1s. A new row feeds its message.reached change.
_ADD_REACHED = Lua(tenant_script(read("tracking_add_reached")))


class RedisTracking(RedisFeature):
    """:class:`gateway.store.ports.ReachStore` on Redis."""

    SCRIPTS = (_ADD_REACHED,)

    async def add_reached(self, rows: Sequence[Reached]) -> list[Reached]:
        by_tenant: dict[str, list[Reached]] = {}
        for row in rows:
            by_tenant.setdefault(row.tenant_id, []).append(row)
        new: list[Reached] = []
        for tenant_id, group in by_tenant.items():
            tp = self._db.tp(tenant_id)
            args: list[Any] = [tp, self._db.ttl]
            for row in group:
                args.extend(
                    (
                        row.message_id,
                        f"{row.subject_kind}\x1f{row.subject_id}",
                        dumps([row.subject_kind, row.subject_id, row.by_id, us(row.at)]),
                        dumps(reached_data(row)),
                        us(row.at),
                    )
                )
            flags = await self._db.eval(
                self._redis, _ADD_REACHED, [self._db.anchor(tenant_id)], args
            )
            new.extend(row for row, flag in zip(group, flags, strict=True) if flag)
        return new

    async def list_reached(self, tenant_id: str, message_id: str) -> list[Reached]:
        t = self._db.tk(tenant_id)
        fields = await self._redis.lrange(t(K.REACHED_LIST, message_id), 0, -1)
        if not fields:
            return []
        docs = await self._redis.hmget(t(K.REACHED, message_id), fields)
        out: list[Reached] = []
        for doc in docs:
            if doc is None:
                continue
            kind, subject, by, at = json.loads(doc)
            out.append(
                Reached(
                    tenant_id=tenant_id,
                    message_id=message_id,
                    subject_kind=kind,
                    subject_id=subject,
                    by_id=by,
                    at=from_us(at),
                )
            )
        return out

    async def list_reads(self, tenant_id: str, message_id: str) -> list[ReadRecord]:
        rows = await self._redis.hgetall(self._db.t(tenant_id, K.READS, message_id))
        reads = []
        for person_id, value in rows.items():
            at, via = value.split("\x1f", 1)
            reads.append((int(at), person_id, via))
        return [ReadRecord(person_id=p, at=from_us(at), via=via) for at, p, via in sorted(reads)]
