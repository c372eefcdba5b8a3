"""Follow-ups of a failed send, stored as durable jobs WITH the outcome that causes them.

A send that fails for good (the dispatcher's outcome, or a Twilio ``failed`` /
``undelivered`` callback) has follow-ups: the recipient fails over to the next
channel (an ``escalate`` job), and a dead address is dealt with (a push device
pruned, a phone number or email address marked failing: a ``contact_failing``
job). They used to run as a second step after the outcome's commit, so a crash
in between lost them. Now the caller hands the jobs to the store together with
the outcome (:attr:`gateway.store.SendOutcome.jobs`, ``DeliveryStore.transition(jobs=)``):
SQLite stores them in the outcome's transaction; Redis queues them in the same
round trip, due a moment later (see ``RedisDeliveries.apply_moves``). Their handlers check the state
they act on, so a job stored with a refused move, or run twice, does no harm.

Job ids are deterministic, so the same follow-up queued twice is one job.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Protocol

from gateway.constants import JOB_CONTACT_FAILING, JOB_ESCALATE, SUPPRESSED_CHANNEL
from gateway.models import ChannelName, Delivery, Job
from gateway.store.ports import DeliveryStore, GuardianStore, JobQueue

log = logging.getLogger(__name__)

FAILOVER = "failover"  # the kind of an escalate job's ref (see gateway/escalation.py)
# Channels without failover: in-app is the fallback of everything, suppression tells nobody.
QUIET_CHANNELS = frozenset({ChannelName.inapp.value, SUPPRESSED_CHANNEL})
# The contact kind a channel's address is, for DeliveryStore.mark_contact_failing.
CONTACT_KIND = {"sms": "phone", "email": "email"}


class ContactStore(DeliveryStore, GuardianStore, JobQueue, Protocol):
    """What a contact job needs: the delivery, the failing mark, the device to drop."""


def failover_job(delivery: Delivery, at: datetime, *, urgent: bool) -> Job | None:
    """The escalate job that moves the recipient on from this failed delivery's channel
    (in the urgent lane with ``urgent``: the message is an emergency or absence)."""
    if delivery.channel in QUIET_CHANNELS:
        return None
    return Job(
        id=f"{JOB_ESCALATE}:{delivery.message_id}:{delivery.recipient_id}"
        f":{FAILOVER}:{delivery.channel}",
        tenant_id=delivery.tenant_id,
        kind=JOB_ESCALATE,
        ref=f"{delivery.message_id}:{FAILOVER}:{delivery.channel}:{delivery.recipient_id}",
        due_at=at,
        urgent=urgent,
    )


def contact_job(delivery: Delivery, reason: str, at: datetime) -> Job | None:
    """The job that prunes the push device or marks the address failing (dead address)."""
    if delivery.channel == "push" and not delivery.target:
        return None
    if delivery.channel in CONTACT_KIND and not delivery.address:
        return None
    if delivery.channel != "push" and delivery.channel not in CONTACT_KIND:
        return None
    return Job(
        id=f"{JOB_CONTACT_FAILING}:{delivery.id}",
        tenant_id=delivery.tenant_id,
        kind=JOB_CONTACT_FAILING,
        ref=f"{delivery.id}:{reason}",
        due_at=at,
    )


def after_failure(
    delivery: Delivery, at: datetime, *, urgent: bool, dead_reason: str | None = None
) -> list[Job]:
    """Every follow-up of a delivery that failed for good (``dead_reason``: the address is
    dead, with this code; ``urgent``: its message is an emergency or absence)."""
    jobs = [failover_job(delivery, at, urgent=urgent)]
    if dead_reason is not None:
        jobs.append(contact_job(delivery, dead_reason, at))
    return [job for job in jobs if job is not None]


async def run_contact_job(store: ContactStore, job: Job) -> None:
    """Do a ``contact_failing`` job: prune the device or mark the address, then end it."""
    delivery_id, _, reason = job.ref.partition(":")
    delivery = await store.get_delivery(delivery_id)
    if delivery is not None:
        if delivery.channel == "push" and delivery.target:
            await store.remove_device(delivery.tenant_id, delivery.recipient_id, delivery.target)
            log.info("pruned a dead push device", extra={"reason": reason})
        kind = CONTACT_KIND.get(delivery.channel)
        if kind is not None and delivery.address:
            now = job.due_at
            await store.mark_contact_failing(
                delivery.tenant_id, delivery.recipient_id, kind, delivery.address, reason, now
            )
    await store.finish_job(job.id)
