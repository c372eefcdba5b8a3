"""Why a delivery that is not out yet is waiting, in one line for the status API.

``quiet_hours until 2026-11-27T11:00:00+00:00`` (held by the recipient's quiet hours),
``digest at 2026-11-27T17:00:00+00:00`` (held for the recipient's daily digest),
``channel_stopped: sms`` / ``channel_degraded: email`` (the channel's circuit breaker,
gateway/channel_health), or the send job's next try: ``retry at …, attempt 3:
smtp_connection`` (the attempts made so far and the last error).
"""

from __future__ import annotations

from datetime import datetime

from gateway.channel_health import REASON_PREFIX, ChannelHealth, ChannelState, state_in_reason
from gateway.digest_plan import DIGEST_KEY
from gateway.models import Delivery, DeliveryStatus, Job
from gateway.planner import send_job_id

RETRY_PREFIX = "retry at "
WAITING = (DeliveryStatus.planned, DeliveryStatus.queued, DeliveryStatus.sending)


def job_of(delivery: Delivery) -> str:
    """The id of the job that sends ``delivery``: its daily digest's, else its own."""
    digest = delivery.context.get(DIGEST_KEY)
    return digest if isinstance(digest, str) else send_job_id(delivery.id)


def retry_note(due: datetime, attempts: int, error: str) -> str:
    """``retry at 2026-11-27T09:00:04+00:00, attempt 3: smtp_connection``."""
    return f"{RETRY_PREFIX}{due.isoformat(timespec='seconds')}, attempt {attempts}: {error}"


def channel_down(
    delivery: Delivery, job: Job | None, health: ChannelHealth | None, now: datetime
) -> str | None:
    """The state of the channel ``delivery`` waits for (``degraded``, ``stopped``), or None
    (it is not waiting for its channel). From this process's breaker where it has one,
    else from the job the breaker put off (an API process sends nothing itself)."""
    if delivery.status not in WAITING:
        return None
    if delivery.not_before is not None and delivery.not_before > now:
        return None  # quiet hours or a digest hold it first
    if health is not None:
        state = health.state(delivery.channel)
        return None if state is ChannelState.ok else state.value
    error = job.last_error if job is not None and job.due_at > now else None
    return state_in_reason(error, delivery.channel)


def waiting_for(
    delivery: Delivery, job: Job | None, health: ChannelHealth | None, now: datetime
) -> str | None:
    """The reason ``delivery`` is still waiting, or None (out already, or due now).

    ``job`` is the job that sends it (:func:`job_of`) as stored now (None once done)."""
    if delivery.status not in WAITING:
        return None
    if delivery.not_before is not None and delivery.not_before > now:
        if DIGEST_KEY in delivery.context:  # held for the guardian's daily digest
            return f"digest at {delivery.not_before.isoformat(timespec='seconds')}"
        return f"quiet_hours until {delivery.not_before.isoformat(timespec='seconds')}"
    down = channel_down(delivery, job, health, now)
    if down is not None:
        return f"{REASON_PREFIX}{down}: {delivery.channel}"
    if job is not None and job.due_at > now and job.last_error:
        if job.attempts == 0:  # put off before any try (a paused channel, a rate limit)
            return f"waiting until {job.due_at.isoformat(timespec='seconds')}: {job.last_error}"
        return retry_note(job.due_at, job.attempts, job.last_error)
    return None
