"""Replies in the Redis backend: ``P:{t}:r:<id>`` (the reply as JSON), ``mrep:<message>``
(a message's replies) and ``reps`` (replies by time, for the purge); one script stores a
reply with its change (lua/add_reply.lua)."""

from __future__ import annotations

from gateway.models import Reply
from gateway.store.encoding import us
from gateway.store.redis import keys as K
from gateway.store.redis import scripts as lua
from gateway.store.redis.base import RedisFeature, opt
from gateway.store.redis.scripts import Lua

_ADD_REPLY = Lua(lua.ADD_REPLY)


class RedisReplies(RedisFeature):
    """:class:`gateway.store.ports.ReplyStore` on Redis."""

    SCRIPTS = (_ADD_REPLY,)

    async def add_reply(self, reply: Reply) -> bool:
        tp = self._db.tp(reply.tenant_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self._db.active, reply.tenant_id)
            self._db.eval(
                pipe,
                _ADD_REPLY,
                [self._db.t(reply.tenant_id, K.REPLY, reply.id)],
                [
                    tp,
                    self._db.ttl,
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
        ids = await self._redis.zrange(self._db.t(tenant_id, K.MESSAGE_REPLIES, message_id), 0, -1)
        if not ids:
            return []
        docs = await self._redis.mget([self._db.t(tenant_id, K.REPLY, i) for i in ids])
        return [Reply.model_validate_json(doc) for doc in docs if doc is not None]
