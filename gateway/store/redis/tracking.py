"""Redis keys and queries of delivery tracking: reached, reads, escalation, key scopes.

``P:{t}:rch:<message>`` holds each subject reached first (HSETNX) and
``P:{t}:rchl:<message>`` their order; both expire with the message. Reads belong
to the core (``mark_read`` writes ``P:{t}:rd:<message>``). Per-tenant settings
live in the hash ``P:{t}:settings``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from gateway.constants import DEFAULT_SCOPES
from gateway.models import Delivery, Protection, Reached, ReadRecord, reached_data
from gateway.store.encoding import dumps, from_us, us
from gateway.store.redis.base import Lua, RedisParts
from gateway.store.redis.scripts import read, tenant_script

# KEYS[1] tenant anchor. ARGV: tp ttl, then 5 per row: message field row_json
# webhook_data_json at_us. Returns 0/1s. A new row feeds its message.reached change.
_ADD_REACHED = Lua(tenant_script(read("tracking_add_reached")))


class TrackingMixin(RedisParts):
    """The tracking part of :class:`gateway.store.Store` on Redis."""

    SCRIPTS: ClassVar[Sequence[Lua]] = (_ADD_REACHED,)

    if TYPE_CHECKING:  # provided by RedisStore

        async def _load_deliveries(
            self, refs: Sequence[tuple[str, str]]
        ) -> dict[str, Delivery]: ...

    async def add_reached(self, rows: Sequence[Reached]) -> list[Reached]:
        by_tenant: dict[str, list[Reached]] = {}
        for row in rows:
            by_tenant.setdefault(row.tenant_id, []).append(row)
        new: list[Reached] = []
        for tenant_id, group in by_tenant.items():
            tp = self._tp(tenant_id)
            args: list[Any] = [tp, self._ttl]
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
            flags = await self._eval(self._redis, _ADD_REACHED, [tp + "stats"], args)
            new.extend(row for row, flag in zip(group, flags, strict=True) if flag)
        return new

    async def list_reached(self, tenant_id: str, message_id: str) -> list[Reached]:
        t = self._tk(tenant_id)
        fields = await self._redis.lrange(t("rchl", message_id), 0, -1)
        if not fields:
            return []
        docs = await self._redis.hmget(t("rch", message_id), fields)
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
        rows = await self._redis.hgetall(self._t(tenant_id, "rd", message_id))
        reads = []
        for person_id, value in rows.items():
            at, via = value.split("\x1f", 1)
            reads.append((int(at), person_id, via))
        return [ReadRecord(person_id=p, at=from_us(at), via=via) for at, p, via in sorted(reads)]

    async def recipient_deliveries(
        self, tenant_id: str, message_id: str, recipient_id: str
    ) -> list[Delivery]:
        ids = await self._redis.hget(self._t(tenant_id, "mr", message_id), recipient_id)
        if not ids:
            return []
        found = await self._load_deliveries([(tenant_id, i) for i in ids.split()])
        return sorted(found.values(), key=lambda d: (d.channel, d.target))

    async def get_escalation_override(self, tenant_id: str) -> dict[str, Any] | None:
        doc = await self._redis.hget(self._t(tenant_id, "settings"), "escalation")
        if doc is None:
            return None
        data: dict[str, Any] = json.loads(doc)
        return data

    async def set_escalation_override(
        self, tenant_id: str, override: dict[str, Any] | None
    ) -> None:
        key = self._t(tenant_id, "settings")
        if override is None:
            await self._redis.hdel(key, "escalation")
        else:
            await self._redis.hset(key, "escalation", dumps(override))

    async def get_tenant_scopes(self, tenant_id: str) -> list[str]:
        doc = await self._redis.hget(self._t(tenant_id, "settings"), "scopes")
        if doc is None:
            return list(DEFAULT_SCOPES)
        scopes: list[str] = json.loads(doc)
        return scopes

    async def set_tenant_scopes(self, tenant_id: str, scopes: Sequence[str]) -> None:
        await self._redis.hset(self._t(tenant_id, "settings"), "scopes", dumps(sorted(set(scopes))))

    async def protected_persons(self, tenant_id: str, person_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(person_ids))
        if not ids:
            return set()
        docs = await self._redis.hmget(self._t(tenant_id, "persons"), ids)
        return {
            p
            for p, doc in zip(ids, docs, strict=True)
            if doc is not None and json.loads(doc)[4] != Protection.none.value
        }
