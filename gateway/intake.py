"""Intake: an accepted message enters the flow with its planning job, once.

The events API validates and authenticates; what a new message becomes in the store
(the message and the ``plan`` job the dispatcher claims, urgent for absence and
emergency) is decided here, so the API holds no flow of its own.
"""

from __future__ import annotations

from gateway.constants import JOB_PLAN
from gateway.models import Job, Message
from gateway.planner import urgent_work
from gateway.store.ports import MessageStore


def plan_job(message: Message) -> Job:
    """The dispatcher's job that plans the deliveries of ``message``."""
    return Job(
        id=f"{JOB_PLAN}:{message.id}",
        tenant_id=message.tenant_id,
        kind=JOB_PLAN,
        ref=message.id,
        due_at=message.created_at,
        urgent=urgent_work(message.category),
    )


async def accept(store: MessageStore, message: Message) -> tuple[Message, bool]:
    """Store a message with its planning job, or find the one stored before:
    (the stored message, whether it was there already)."""
    existing = await store.get_message(message.tenant_id, message.id)
    if existing is not None:
        return existing, True
    stored = await store.accept_message(message, plan_job(message))
    # Two identical events racing past get_message: the loser gets the winner's row.
    return stored, stored != message
