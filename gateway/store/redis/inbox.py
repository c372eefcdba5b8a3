"""The in-app inbox in the Redis backend: ``P:{t}:ib:<guardian>`` (message ids by the
message's time); one script reads a page with each item's delivery, message and read
(lua/inbox.lua), another records a read (``P:{t}:rd:<message>``) with its change."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from gateway.models import Category, DeliveryStatus, InboxItem
from gateway.store.encoding import from_us, us
from gateway.store.redis import keys as K
from gateway.store.redis import scripts as lua
from gateway.store.redis.base import RedisFeature
from gateway.store.redis.scripts import Lua

_INBOX = Lua(lua.INBOX)
_MARK_READ = Lua(lua.MARK_READ)


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
        language=d[7],
    )


class RedisInbox(RedisFeature):
    """:class:`gateway.store.ports.InboxStore` on Redis."""

    SCRIPTS = (_INBOX, _MARK_READ)

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
        rows = await self._db.eval(
            self._redis,
            _INBOX,
            [self._db.t(tenant_id, K.INBOX, guardian_id)],
            [
                self._db.tp(tenant_id),
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
        rows = await self._db.eval(
            self._redis,
            _INBOX,
            [self._db.t(tenant_id, K.INBOX, guardian_id)],
            [
                self._db.tp(tenant_id),
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
        tp = self._db.tp(tenant_id)
        found = await self._db.eval(
            self._redis,
            _MARK_READ,
            [self._db.anchor(tenant_id)],
            [tp, self._db.ttl, message_id, guardian_id, us(at), via],
        )
        return bool(found)
