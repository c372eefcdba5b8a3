"""Messages in the Redis backend: ``P:{t}:m:<id>`` (a hash: ``j`` the message as JSON,
``p`` when it was planned) and ``P:{t}:msgs`` (message ids by creation time, kept by
accept and the purge), living as long as the retention."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.models import Job, Message
from gateway.store.encoding import from_us_opt, us
from gateway.store.redis import keys as K
from gateway.store.redis import scripts as lua
from gateway.store.redis.base import RedisFeature, RedisHandle
from gateway.store.redis.jobs import RedisJobs
from gateway.store.redis.scripts import Lua, read

_ACCEPT = Lua(lua.ACCEPT_MESSAGE)
_HSET_IF_EXISTS = Lua(read("hset_if_exists"))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _message_doc(m: Message) -> str:
    return m.model_dump_json(exclude={"planned_at"})


def _message(doc: str, planned: str | None) -> Message:
    message = Message.model_validate_json(doc)
    message.planned_at = from_us_opt(planned)
    return message


class RedisMessages(RedisFeature):
    """:class:`gateway.store.ports.MessageStore` on Redis; an accepted message's plan job
    goes into the queue (``jobs``) after it."""

    SCRIPTS = (_ACCEPT, _HSET_IF_EXISTS)

    def __init__(self, db: RedisHandle, jobs: RedisJobs) -> None:
        super().__init__(db)
        self._jobs = jobs

    async def accept_message(self, message: Message, job: Job) -> Message:
        tp = self._db.tp(message.tenant_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self._db.active, message.tenant_id)
            self._db.eval(
                pipe,
                _ACCEPT,
                [self._db.t(message.tenant_id, K.MESSAGE, message.id)],
                [tp, self._db.ttl, message.id, _message_doc(message), us(message.created_at)],
            )
            _, result = await pipe.execute()
        if result[0] == 1:
            stored, planned = message, False
        else:
            stored = _message(result[1], result[2] or None)
            planned = stored.planned_at is not None
        if planned:
            return stored
        # Also for a stored message not planned yet: a crash between storing it and
        # queueing its plan job must not lose it (inserting an existing job is a no-op).
        if stored is not message and job.attempts:
            # A job stored as claimed by a repost (gateway/urgent_handoff.py) is not handed
            # (the message is not stored now); the process that stored the message may be
            # about to queue and hand its own: this one keeps the attempt and is due when
            # that process's lease would end, so no other worker claims it before.
            lease = job.due_at - message.created_at
            job = job.model_copy(update={"due_at": stored.created_at + lease})
        async with self._redis.pipeline(transaction=False) as pipe:
            self._jobs.queue(pipe, [job])
            (added,) = await pipe.execute()
        if stored is message and not added and not await self._same_job(job):
            # Stored now, but a repost queued another plan job between our two steps (due
            # at once: its process hands nothing over): not ours to hand over
            # (ports.MessageStore.accept_message).
            return message.model_copy()
        return stored

    async def _same_job(self, job: Job) -> bool:
        """Whether the stored job is ``job`` as the caller stores it as claimed: a repost
        queued it just so (same attempts, due when the caller's lease ends)."""
        found = (await self._jobs.get_jobs([job.id])).get(job.id)
        return (
            job.attempts > 0
            and found is not None
            and (found.attempts, found.due_at) == (job.attempts, job.due_at)
        )

    async def get_message(self, tenant_id: str, message_id: str) -> Message | None:
        doc, planned = await self._redis.hmget(
            self._db.t(tenant_id, K.MESSAGE, message_id), ["j", "p"]
        )
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
        key = self._db.t(tenant_id, K.MESSAGES)
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
                pipe.hmget(self._db.t(tenant_id, K.MESSAGE, message_id), ["j", "p"])
            found = await pipe.execute()
        messages = [_message(doc, planned) for doc, planned in found if doc is not None]
        # equal times: the same order as SQLite (newest first, then id descending)
        return sorted(messages, key=lambda m: (m.created_at, m.id), reverse=True)

    async def mark_planned(self, tenant_id: str, message_id: str, at: datetime) -> None:
        await self._db.eval(
            self._redis,
            _HSET_IF_EXISTS,
            [self._db.t(tenant_id, K.MESSAGE, message_id)],
            ["p", us(at)],
        )
