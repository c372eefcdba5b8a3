"""Redis keys of message translations (gateway/store/translations.py):
``P:{<tenant>}:tr:<message id>``, a hash language -> the translation as JSON, living as
long as the message's other keys."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.models import Translation
from gateway.store.redis import keys as K
from gateway.store.redis.base import RedisFeature


class RedisTranslations(RedisFeature):
    """Built with the store's handle; one hash per message, so no cross-slot command."""

    async def add(self, rows: Sequence[Translation]) -> list[Translation]:
        if not rows:
            return []
        for row in rows:
            key = self._db.t(row.tenant_id, K.TRANSLATIONS, row.message_id)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(key, row.language, row.model_dump_json())
                pipe.expire(key, self._db.ttl)
                await pipe.execute()
        out = []
        for row in rows:
            found = await self.of_message(row.tenant_id, row.message_id)
            out.append(found.get(row.language, row))
        return out

    async def of_message(self, tenant_id: str, message_id: str) -> dict[str, Translation]:
        raw = await self._redis.hgetall(self._db.t(tenant_id, K.TRANSLATIONS, message_id))
        rows = (Translation.model_validate_json(value) for value in raw.values())
        return {row.language: row for row in rows if row.tenant_id == tenant_id}
