"""Redis keys of the phone numbers absence alerts went to (SMS answers are matched against
them across tenants): ``P:aph:<digest of the number>``, a sorted set of
``[tenant, message, person]`` by time (µs), living two days (an answer counts for 24 h)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from gateway.models import AlertPhone
from gateway.store.encoding import dumps, from_us, us
from gateway.store.redis import keys as K
from gateway.store.redis.base import RedisFeature, digest
from gateway.store.redis.scripts import Lua, read

KEEP = timedelta(days=2)
_ADD = Lua(read("alert_phone_add"))


class RedisAlertPhones(RedisFeature):
    """The alert phones of :class:`gateway.store.ports.AbsenceStore` on Redis."""

    SCRIPTS = (_ADD,)

    def _aph(self, phone: str) -> str:
        return self._db.g(K.ALERT_PHONE, digest("alert-phone", phone))

    async def add_alert_phones(self, rows: Sequence[AlertPhone]) -> None:
        by_phone: dict[str, list[AlertPhone]] = defaultdict(list)
        for row in rows:
            by_phone[row.phone].append(row)
        if not by_phone:
            return
        # One script per number (one key: no cross-slot command on a cluster), all of an
        # alert's numbers in one round trip.
        async with self._redis.pipeline(transaction=False) as pipe:
            for phone, mine in by_phone.items():
                newest = max(r.at for r in mine)
                members: list[Any] = []
                for r in mine:
                    members += [us(r.at), dumps([r.tenant_id, r.message_id, r.person_id])]
                self._db.eval(
                    pipe,
                    _ADD,
                    [self._aph(phone)],
                    [us(newest - KEEP), int(KEEP.total_seconds()), *members],
                )
            await pipe.execute()

    async def alert_phones(self, phone: str, since: datetime) -> list[AlertPhone]:
        found = await self._redis.zrangebyscore(
            self._aph(phone), us(since), "+inf", withscores=True
        )
        rows = []
        for member, score in found:
            tenant_id, message_id, person_id = json.loads(member)
            rows.append(
                AlertPhone(
                    phone=phone,
                    tenant_id=tenant_id,
                    message_id=message_id,
                    person_id=person_id,
                    at=from_us(int(score)),
                )
            )
        return sorted(rows, key=lambda r: (r.at, r.tenant_id, r.message_id, r.person_id))
