"""Redis part of scheduled messages (gateway/store/schedules.py).

The schedule is a hash in the tenant's slot (``P:{tenant}:sched:<message id>``: ``s``
send_at, ``c`` cancelled_at, in microseconds), kept as long as the message. A cancel
first takes the planning job out of the queue (its slot, one script: only a job never
claimed), then marks the schedule; a crash in between leaves a message that is never
planned and a schedule without its mark, which the status reads as cancelled too
(no planning job, never planned).
"""

from __future__ import annotations

from datetime import datetime

from gateway.store.encoding import from_us, from_us_opt, us
from gateway.store.redis import keys as K
from gateway.store.redis.base import RedisFeature, RedisHandle
from gateway.store.redis.jobs import RedisJobs
from gateway.store.redis.messages import RedisMessages
from gateway.store.schedules import CancelResult, Schedule


class RedisSchedules(RedisFeature):
    """:class:`gateway.store.schedules.Schedules` on the store's handle; the planning job
    and the message are read through their own features."""

    def __init__(self, db: RedisHandle, messages: RedisMessages, jobs: RedisJobs) -> None:
        super().__init__(db)
        self._messages = messages
        self._jobs = jobs

    def _key(self, tenant_id: str, message_id: str) -> str:
        return self._db.t(tenant_id, K.SCHEDULE, message_id)

    async def add_schedule(self, schedule: Schedule) -> None:
        key = self._key(schedule.tenant_id, schedule.message_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hsetnx(key, "s", us(schedule.send_at))
            pipe.expire(key, self._db.ttl)
            await pipe.execute()

    async def get_schedule(self, tenant_id: str, message_id: str) -> Schedule | None:
        send_at, cancelled = await self._redis.hmget(self._key(tenant_id, message_id), ["s", "c"])
        if send_at is None:
            return None
        return Schedule(tenant_id, message_id, from_us(send_at), from_us_opt(cancelled))

    async def cancel_scheduled(
        self, tenant_id: str, message_id: str, plan_job_id: str, at: datetime
    ) -> CancelResult:
        schedule = await self.get_schedule(tenant_id, message_id)
        if schedule is None:
            return CancelResult.unknown
        if schedule.cancelled_at is not None:
            return CancelResult.cancelled
        taken = await self._jobs.take_unstarted(plan_job_id)
        # 0: no job: planned, or a cancel that crashed after taking it, before the mark.
        if taken == -1 or (taken == 0 and await self._planned(tenant_id, message_id)):
            return CancelResult.started
        await self._redis.hsetnx(self._key(tenant_id, message_id), "c", us(at))
        return CancelResult.cancelled

    async def _planned(self, tenant_id: str, message_id: str) -> bool:
        message = await self._messages.get_message(tenant_id, message_id)
        return message is not None and message.planned_at is not None
