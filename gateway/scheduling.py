"""Scheduled sending: a ``message.created`` with ``send_at`` goes at that time.

The message is stored at once, with its planning job due at ``send_at`` in the durable
queue (so it survives restarts on every backend). Nothing is resolved before then: who
may be told is decided when the job runs, so a block or a revoked right in between
holds. Until the job is first claimed the message can be cancelled
(``POST /v1/messages/{id}/cancel``); after that the answer is 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from gateway.constants import JOB_PLAN
from gateway.errors import Conflict, NotFound, ValidationFailed
from gateway.models import Message
from gateway.store.ports import JobQueue, MessageStore, ScheduleFiles
from gateway.store.schedules import CancelResult

SCHEDULED = "scheduled"  # waits for send_at
STARTED = "started"  # planning has begun (or is done): sent, or being sent
CANCELLED = "cancelled"


class ScheduleStore(ScheduleFiles, MessageStore, JobQueue, Protocol):
    """What scheduling needs: the schedules, their messages and plan jobs."""


def plan_job_id(message_id: str) -> str:
    """The id of a message's planning job (one per message)."""
    return f"{JOB_PLAN}:{message_id}"


def check_send_at(send_at: datetime | None, now: datetime, horizon_days: int) -> None:
    """Refuse (422 naming ``data.send_at``) a time not in the future or past the horizon."""
    if send_at is None:
        return
    problem = None
    if send_at <= now:
        problem = "must be in the future"
    elif send_at - now > timedelta(days=horizon_days):
        problem = f"must be at most {horizon_days} days ahead (schedule_horizon_days)"
    if problem is not None:
        raise ValidationFailed(
            "send_at is not valid",
            errors=[{"loc": ["data", "send_at"], "message": problem, "type": "send_at"}],
        )


def accepted_answer(send_at: datetime | None) -> dict[str, Any]:
    """Fields of the 202 of a scheduled message.created."""
    return {} if send_at is None else {"scheduled_for": send_at.isoformat()}


@dataclass(frozen=True, slots=True)
class ScheduleView:
    state: str  # SCHEDULED, STARTED or CANCELLED
    send_at: datetime
    cancelled_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "send_at": self.send_at.isoformat(),
            "cancelled_at": self.cancelled_at.isoformat() if self.cancelled_at else None,
        }


async def schedule_of(store: ScheduleStore, message: Message) -> ScheduleView | None:
    """Where a scheduled message stands; None for a message sent at once."""
    schedule = await store.schedules.get_schedule(message.tenant_id, message.id)
    if schedule is None:
        return None
    if schedule.cancelled_at is not None:
        return ScheduleView(CANCELLED, schedule.send_at, schedule.cancelled_at)
    if message.planned_at is not None:
        return ScheduleView(STARTED, schedule.send_at, None)
    job = (await store.get_jobs([plan_job_id(message.id)])).get(plan_job_id(message.id))
    if job is None:  # taken back by a cancel that did not get to write its mark
        return ScheduleView(CANCELLED, schedule.send_at, None)
    return ScheduleView(STARTED if job.attempts else SCHEDULED, schedule.send_at, None)


async def cancel(
    store: ScheduleStore, tenant_id: str, message_id: str, at: datetime
) -> ScheduleView:
    """Cancel a scheduled message that has not started; NotFound / Conflict otherwise."""
    message = await store.get_message(tenant_id, message_id)
    if message is None:
        raise NotFound("no such message")
    result = await store.schedules.cancel_scheduled(
        tenant_id, message_id, plan_job_id(message_id), at
    )
    if result is CancelResult.unknown:
        raise Conflict("the message was not scheduled: it is sent already")
    if result is CancelResult.started:
        raise Conflict("sending has started: the message can no longer be cancelled")
    view = await schedule_of(store, message)
    return view or ScheduleView(CANCELLED, at, at)
