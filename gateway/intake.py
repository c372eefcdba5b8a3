"""Intake: an accepted message enters the flow with its planning job, once.

The events API validates and authenticates; what a new message becomes in the store
(the message and the ``plan`` job the dispatcher claims, urgent for absence and
emergency) is decided here, so the API holds no flow of its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from gateway.constants import JOB_PLAN
from gateway.models import Job, Message
from gateway.planner import urgent_work
from gateway.store.ports import MessageStore, ScheduleFiles
from gateway.store.schedules import Schedule


class IntakeStore(MessageStore, ScheduleFiles, Protocol):
    """What intake needs: messages, and the schedules of scheduled ones."""


def plan_job(message: Message, send_at: datetime | None = None) -> Job:
    """The dispatcher's job that plans the deliveries of ``message``: due now, or at
    ``send_at`` for a scheduled message (gateway/scheduling.py)."""
    return Job(
        id=f"{JOB_PLAN}:{message.id}",
        tenant_id=message.tenant_id,
        kind=JOB_PLAN,
        ref=message.id,
        due_at=send_at or message.created_at,
        urgent=urgent_work(message.category),
        rank=None if send_at else 0,  # the message's first work (gateway/store/lanes.py)
    )


async def accept(
    store: IntakeStore, message: Message, *, send_at: datetime | None = None
) -> tuple[Message, bool]:
    """Store a message with its planning job, or find the one stored before:
    (the stored message, whether it was there already). A scheduled message's
    ``send_at`` is kept first (a crash in between leaves a schedule no one reads)."""
    existing = await store.get_message(message.tenant_id, message.id)
    if existing is not None:
        return existing, True
    if send_at is not None:
        await store.schedules.add_schedule(Schedule(message.tenant_id, message.id, send_at))
    stored = await store.accept_message(message, plan_job(message, send_at))
    # Two identical events racing past get_message: the loser gets the winner's row.
    return stored, stored != message
