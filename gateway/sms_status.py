"""Twilio status callbacks applied to deliveries; callbacks nobody can place yet wait.

A verified callback is applied to the delivery it names: our StatusCallback URL carries
the delivery id (``?d=``, covered by Twilio's signature; channels/sms.py), so a callback
that overtakes the commit of the send's outcome still lands. A callback without it (a
message sent before the URL named deliveries) is found by its SID; when no delivery has
that SID yet, the callback is PARKED as a durable job (``sms_status``) that looks again
every :data:`PARK_RETRY` seconds for up to :data:`PARK_LIMIT` and then gives up with a
warning; ``budbringer_callbacks_parked_total{outcome}`` counts parked, applied and
given-up callbacks. Nothing a verified callback says is thrown away on first sight.

The forward-only rule (gateway.models.can_transition) makes repeated and out-of-order
callbacks harmless. A ``failed``/``undelivered`` callback commits its follow-ups (the
failover, the failing mark of a dead number) with the move (gateway/followups.py).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from channels.sms import DEAD_NUMBER_CODES
from gateway.clock import Clock
from gateway.constants import JOB_SMS_STATUS
from gateway.followups import after_failure
from gateway.jobs import JobHandler
from gateway.metrics import CALLBACKS_PARKED
from gateway.models import TERMINAL_FAILURES, Delivery, DeliveryStatus, Job
from gateway.planner import urgent_work
from gateway.store.ports import DeliveryStore, JobQueue, MessageStore, ProviderLookup

log = logging.getLogger(__name__)

PARK_RETRY = timedelta(seconds=2)
PARK_LIMIT = timedelta(minutes=10)

# Twilio's MessageStatus -> our status. "receiving"/"received" belong to inbound
# messages and are ignored; an unknown value is ignored too (and logged).
TWILIO_STATUS: dict[str, DeliveryStatus | None] = {
    "accepted": DeliveryStatus.queued,
    "scheduled": DeliveryStatus.queued,
    "queued": DeliveryStatus.queued,
    "sending": DeliveryStatus.sending,
    "sent": DeliveryStatus.sent,
    "delivered": DeliveryStatus.delivered,
    "read": DeliveryStatus.read,
    "undelivered": DeliveryStatus.undelivered,
    "failed": DeliveryStatus.failed,
    "canceled": DeliveryStatus.cancelled,
    "receiving": None,
    "received": None,
}

# Callback outcomes that leave the recipient untold on this channel: escalation's failover.
FAILOVER_STATUSES = frozenset({DeliveryStatus.failed, DeliveryStatus.undelivered})

_SEP = "\x1f"


class CallbackStore(DeliveryStore, ProviderLookup, MessageStore, JobQueue, Protocol):
    """What applying and parking callbacks needs."""


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What one Twilio status callback says (nothing personal: no number, no body)."""

    sid: str
    raw_status: str  # Twilio's MessageStatus, lower case, a key of TWILIO_STATUS
    error_code: str | None
    received_at: datetime

    @property
    def status(self) -> DeliveryStatus | None:
        return TWILIO_STATUS.get(self.raw_status)


def _is_dead_number(error_code: str | None) -> bool:
    return bool(error_code and error_code.isdigit() and int(error_code) in DEAD_NUMBER_CODES)


async def apply(
    store: CallbackStore,
    delivery: Delivery,
    report: StatusReport,
    now: datetime,
    wake: asyncio.Event,
) -> bool:
    """Apply a report to its delivery, with its follow-ups; True when the status moved."""
    status = report.status
    if status is None:
        return False
    failed = status in TERMINAL_FAILURES
    reason = f"twilio_{report.error_code}" if report.error_code and failed else None
    jobs: list[Job] = []
    if status in FAILOVER_STATUSES:
        dead = reason if _is_dead_number(report.error_code) else None
        message = await store.get_message(delivery.tenant_id, delivery.message_id)
        urgent = message is not None and urgent_work(message.category)
        jobs = after_failure(delivery, now, dead_reason=dead, urgent=urgent)
    moved = await store.transition(
        delivery.id,
        status,
        now,
        detail=f"twilio:{report.raw_status}",
        reason=reason,
        provider_id=report.sid if delivery.provider_id is None else None,
        jobs=jobs,
    )
    if jobs:
        wake.set()
    log.info(
        "twilio status callback",
        extra={"delivery_id": delivery.id, "twilio_status": report.raw_status, "applied": moved},
    )
    return moved


async def delivery_for(store: CallbackStore, delivery_id: str | None, sid: str) -> Delivery | None:
    """The SMS delivery a callback is about: the one its URL names, else by SID."""
    if delivery_id:
        delivery = await store.get_delivery(delivery_id)
        return delivery if delivery is not None and delivery.channel == "sms" else None
    return await store.delivery_by_provider_id("sms", sid)


def park_job(report: StatusReport) -> Job:
    """The durable job that holds a callback whose SID is not known yet."""
    ref = _SEP.join(
        (report.sid, report.raw_status, report.error_code or "", report.received_at.isoformat())
    )
    return Job(
        id=f"{JOB_SMS_STATUS}:{report.sid}:{report.raw_status}",
        tenant_id="",
        kind=JOB_SMS_STATUS,
        ref=ref,
        due_at=report.received_at + PARK_RETRY,
    )


async def park(store: DeliveryStore, report: StatusReport) -> None:
    await store.add_deliveries([], [park_job(report)])
    CALLBACKS_PARKED.labels("parked").inc()
    log.info("twilio status callback parked: SID not known yet", extra={"provider_id": report.sid})


def _report(job: Job) -> StatusReport:
    sid, raw_status, error_code, received = job.ref.split(_SEP)
    return StatusReport(sid, raw_status, error_code or None, datetime.fromisoformat(received))


async def run_parked(store: CallbackStore, job: Job, now: datetime, wake: asyncio.Event) -> None:
    """Handler of ``sms_status`` jobs: apply the parked callback once its SID is known."""
    report = _report(job)
    delivery = await store.delivery_by_provider_id("sms", report.sid)
    if delivery is not None:
        await apply(store, delivery, report, now, wake)
        CALLBACKS_PARKED.labels("applied").inc()
        await store.finish_job(job.id)
        return
    if now - report.received_at >= PARK_LIMIT:
        CALLBACKS_PARKED.labels("given_up").inc()
        log.warning(
            "twilio status callback dropped: no message with its SID appeared",
            extra={"provider_id": report.sid, "twilio_status": report.raw_status},
        )
        await store.finish_job(job.id)
        return
    await store.postpone_job(job.id, now + PARK_RETRY, "sid_unknown")


def handlers(store: CallbackStore, clock: Clock, wake: asyncio.Event) -> dict[str, JobHandler]:
    """Parked callbacks, looked at again until their SID is known."""

    async def parked(job: Job) -> None:
        await run_parked(store, job, clock.now(), wake)

    return {JOB_SMS_STATUS: parked}
