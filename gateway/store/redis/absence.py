"""Redis keys and queries of absence: records, claimed event ids, explanations.

Under the tenant's hash tag: ``P:{t}:abs:<message>`` (a record's JSON),
``P:{t}:absev:<event>`` ("<message>\\x1f<body hash>" for every event id claimed),
``P:{t}:abskey:<key>`` (the message id of the key's latest record),
``P:{t}:absx:<message>`` / ``absxl:<message>`` (explanations by id, and their order),
``P:{t}:absidx`` (message ids by creation time, for the purge),
``P:{t}:absday:<day>`` (the message ids of the records for that day, an ISO date;
``absdayv``: when the last indexing of records not in those sets began, at an open).
All of them expire with the retention, like the messages they belong to, and
``purge_before`` removes them earlier (:meth:`RedisAbsence.purge`). A claim is
one WATCHed transaction over the event's and the key's keys, so two racing marks never
make two alerts. The settings override is in redis/policy.py; ``staff_members`` reads
the directory, so redis/directory.py answers it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.exceptions import WatchError

from gateway.constants import WEBHOOK_ABSENCE_UNROUTED
from gateway.models import AbsenceClaim, AbsenceExplanation, AbsenceRecord
from gateway.store.encoding import dumps, from_us, us
from gateway.store.redis import keys as K
from gateway.store.redis.base import RedisFeature
from gateway.store.redis.feed import queue_change
from gateway.store.redis.scripts import Lua, read, tenant_script

_SEP = "\x1f"
_CLOCK_SLACK = 86_400.0  # seconds: index_days looks this far before its last start
PURGE_BATCH = 500  # records per script call, so a large purge never blocks Redis long

# KEYS[1] the tenant's absence index. ARGV: tp cutoff limit. Removes up to ``limit`` records
# created before the cutoff with their explanations, the event ids claimed into them and
# the key's pointer if it still points at them; returns how many index entries it took.
# KEYS[1] tenant anchor. ARGV: tp ttl message_id explanation_id doc at_us [change_json].
# 1 when new (stored, and its absence.explained change fed with it), else 0.
_ADD_EXPLANATION = Lua(tenant_script(read("absence_add_explanation")))

_PURGE = Lua(read("absence_purge"))


def _record_doc(record: AbsenceRecord) -> str:
    return record.model_dump_json()


def _record(doc: str) -> AbsenceRecord:
    return AbsenceRecord.model_validate_json(doc)


class RedisAbsence(RedisFeature):
    """:class:`gateway.store.ports.AbsenceStore` on Redis, but for the alert phones
    (redis/alert_phones.py)."""

    SCRIPTS = (_PURGE, _ADD_EXPLANATION)

    async def claim_absence(
        self,
        record: AbsenceRecord,
        body_hash: str,
        window_start: datetime,
        *,
        unrouted: dict[str, Any] | None = None,
    ) -> AbsenceClaim:
        t = self._db.tk(record.tenant_id)
        event_key = t(K.ABSENCE_EVENT, record.event_id)
        key_key = t(K.ABSENCE_KEY, record.key) if record.key else None
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(event_key, *([key_key] if key_key else []))
                    known = await pipe.get(event_key)
                    if known is not None:
                        message_id, _, stored_hash = known.partition(_SEP)
                        doc = await pipe.get(t(K.ABSENCE, message_id))
                        if doc is not None:
                            await pipe.unwatch()
                            return AbsenceClaim(
                                outcome="known", record=_record(doc), body_hash=stored_hash
                            )
                        # The record expired (retention): the event is claimed afresh.
                    first: AbsenceRecord | None = None
                    if key_key is not None:
                        latest = await pipe.get(key_key)
                        if latest is not None:
                            await pipe.watch(t(K.ABSENCE, latest))
                            doc = await pipe.get(t(K.ABSENCE, latest))
                            candidate = None if doc is None else _record(doc)
                            if (
                                candidate is not None
                                and candidate.cancelled_at is None
                                and candidate.created_at >= window_start
                            ):
                                first = candidate
                    if first is not None:
                        claim = AbsenceClaim(
                            outcome="merged",
                            record=first.model_copy(
                                update={
                                    "data": record.data,
                                    "marks": [*first.marks, record.event_id],
                                    "updated_at": record.updated_at,
                                }
                            ),
                            body_hash=body_hash,
                        )
                    else:
                        claim = AbsenceClaim(outcome="new", record=record, body_hash=body_hash)
                    stored = claim.record
                    pipe.multi()
                    pipe.set(t(K.ABSENCE, stored.message_id), _record_doc(stored), ex=self._db.ttl)
                    pipe.set(event_key, f"{stored.message_id}{_SEP}{body_hash}", ex=self._db.ttl)
                    if key_key is not None and claim.outcome == "new":
                        pipe.set(key_key, stored.message_id, ex=self._db.ttl)
                    # NX: a merge keeps the record's creation time (records from before
                    # the index existed join it here, or simply expire).
                    pipe.zadd(
                        t(K.ABSENCE_INDEX), {stored.message_id: us(stored.created_at)}, nx=True
                    )
                    pipe.expire(t(K.ABSENCE_INDEX), self._db.ttl)
                    for day in stored.days():
                        pipe.sadd(t(K.ABSENCE_DAY, day), stored.message_id)
                        pipe.expire(t(K.ABSENCE_DAY, day), self._db.ttl)
                    feeds = claim.outcome == "new" and unrouted is not None
                    if feeds:
                        queue_change(
                            pipe,
                            self._db.tp(record.tenant_id),
                            WEBHOOK_ABSENCE_UNROUTED,
                            dumps(unrouted),
                            us(record.created_at),
                        )
                    results = await pipe.execute()
                    if feeds:
                        self._db.feed.unwrap(results[-1])  # the tenant is marked pending next
                    return claim
                except WatchError:
                    continue

    async def get_absence(self, tenant_id: str, message_id: str) -> AbsenceRecord | None:
        doc = await self._redis.get(self._db.t(tenant_id, K.ABSENCE, message_id))
        return None if doc is None else _record(doc)

    async def find_absence(
        self, tenant_id: str, *, event_id: str | None = None, key: str | None = None
    ) -> AbsenceRecord | None:
        t = self._db.tk(tenant_id)
        message_id: str | None = None
        if event_id is not None:
            known = await self._redis.get(t(K.ABSENCE_EVENT, event_id))
            message_id = None if known is None else known.partition(_SEP)[0]
        elif key:
            message_id = await self._redis.get(t(K.ABSENCE_KEY, key))
        if message_id is None:
            return None
        return await self.get_absence(tenant_id, message_id)

    async def cancel_absence(
        self, tenant_id: str, message_id: str, event_id: str, at: datetime
    ) -> AbsenceRecord | None:
        key = self._db.t(tenant_id, K.ABSENCE, message_id)
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    doc = await pipe.get(key)
                    if doc is None:
                        await pipe.unwatch()
                        return None
                    record = _record(doc)
                    first = record.cancelled_at is None
                    if first:
                        record = record.model_copy(
                            update={
                                "cancelled_at": at,
                                "cancel_event_id": event_id,
                                "updated_at": at,
                            }
                        )
                    pipe.multi()
                    if first:
                        pipe.set(key, _record_doc(record), keepttl=True)
                    pipe.set(
                        self._db.t(tenant_id, K.ABSENCE_EVENT, event_id),
                        f"{message_id}{_SEP}",
                        nx=True,
                        ex=self._db.ttl,
                    )
                    await pipe.execute()
                    return record
                except WatchError:
                    continue

    async def add_absence_explanation(
        self, explanation: AbsenceExplanation, *, change: dict[str, Any] | None = None
    ) -> bool:
        tp = self._db.tp(explanation.tenant_id)
        doc = dumps(
            [
                explanation.child_id,
                explanation.person_id,
                explanation.kind.value,
                explanation.text,
                explanation.via,
                us(explanation.at),
            ]
        )
        args = [tp, self._db.ttl, explanation.message_id, explanation.id, doc, us(explanation.at)]
        if change is not None:
            args.append(dumps(change))
        added = await self._db.eval(
            self._redis, _ADD_EXPLANATION, [self._db.anchor(explanation.tenant_id)], args
        )
        return bool(added)

    async def absences_on(self, tenant_id: str, days: Sequence[str]) -> list[AbsenceRecord]:
        t = self._db.tk(tenant_id)
        ids: set[str] = set()
        for day in days:
            ids.update(await self._redis.smembers(t(K.ABSENCE_DAY, day)))
        ordered = sorted(ids)
        docs = await self._redis.mget([t(K.ABSENCE, i) for i in ordered]) if ordered else []
        # A member whose record the retention took is skipped (its set expires after it).
        found = [_record(doc) for doc in docs if doc is not None]
        return sorted(found, key=lambda r: (-r.created_at.timestamp(), r.message_id))

    async def index_days(self, tenant_ids: Sequence[str]) -> None:
        """Put the records into the ``absday`` sets that are not there yet (at each open;
        idempotent, any process): those from before the sets, and those an older version
        wrote beside this one since the last open (a rolling upgrade). ``absdayv`` holds
        when the last indexing began; records created since then, less a day for clocks
        apart, are looked at again."""
        started = time.time()
        for tenant_id in tenant_ids:
            t = self._db.tk(tenant_id)
            last = await self._redis.get(t(K.ABSENCE_DAYS_INDEXED))
            since = "-inf" if last is None else str(int((float(last) - _CLOCK_SLACK) * 1e6))
            ids: list[str] = await self._redis.zrangebyscore(t(K.ABSENCE_INDEX), since, "+inf")
            for start in range(0, len(ids), PURGE_BATCH):
                chunk = ids[start : start + PURGE_BATCH]
                docs = await self._redis.mget([t(K.ABSENCE, i) for i in chunk])
                async with self._redis.pipeline(transaction=False) as pipe:
                    for doc in docs:
                        if doc is None:
                            continue
                        record = _record(doc)
                        for day in record.days():
                            pipe.sadd(t(K.ABSENCE_DAY, day), record.message_id)
                            pipe.expire(t(K.ABSENCE_DAY, day), self._db.ttl)
                    await pipe.execute()
            await self._redis.set(t(K.ABSENCE_DAYS_INDEXED), str(started), ex=self._db.ttl)

    async def list_absence_explanations(
        self, tenant_id: str, message_id: str
    ) -> list[AbsenceExplanation]:
        t = self._db.tk(tenant_id)
        ids: list[str] = await self._redis.lrange(t(K.EXPLANATION_LIST, message_id), 0, -1)
        if not ids:
            return []
        docs = await self._redis.hmget(t(K.EXPLANATIONS, message_id), ids)
        out = []
        for explanation_id, doc in zip(ids, docs, strict=True):
            if doc is None:
                continue
            child_id, person_id, kind, text, via, at = json.loads(doc)
            out.append(
                AbsenceExplanation(
                    id=explanation_id,
                    tenant_id=tenant_id,
                    message_id=message_id,
                    child_id=child_id,
                    person_id=person_id,
                    kind=kind,
                    text=text,
                    via=via,
                    at=from_us(at),
                )
            )
        return sorted(out, key=lambda e: (e.at, e.id))

    async def purge(self, tenant_id: str, cutoff: datetime) -> None:
        """Retention: remove the tenant's records created before ``cutoff`` with their
        explanations and claimed event ids (called by ``purge_before``, redis/retention.py)."""
        index = self._db.t(tenant_id, K.ABSENCE_INDEX)
        while True:
            taken = await self._db.eval(
                self._redis, _PURGE, [index], [self._db.tp(tenant_id), us(cutoff), PURGE_BATCH]
            )
            if int(taken) < PURGE_BATCH:
                return
