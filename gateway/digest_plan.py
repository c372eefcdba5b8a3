"""When a guardian's daily digest goes, and the job that sends it (pure, no I/O).

A guardian may take ``general`` and ``reminder`` messages as a daily digest at "HH:MM"
(``Preferences.digest``) in the unit's time zone. Such a message's in-app delivery is
delivered at once; its push, SMS and email deliveries are held (``queued``, with
``context["digest"]`` naming the digest job and ``not_before`` its time) and sent by
one ``digest`` job per guardian and digest time. The job's id is derived from both,
so every message of the day joins the same job, and two processes planning at once
still make one. A message is never held longer than a day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.constants import JOB_DIGEST
from gateway.models import Category, Delivery, Job, Preferences
from gateway.store.digests import DigestEntry
from gateway.wallclock import hhmm, wall_clock_to_utc

DIGEST_KEY = "digest"  # Delivery.context: the id of the digest job that sends it
DIGEST_CATEGORIES = frozenset({Category.general, Category.reminder})
LONGEST_HOLD = timedelta(days=1)


def digest_time(
    prefs: Preferences | None, time_zone: str, category: Category, now: datetime
) -> datetime | None:
    """When the digest that takes a message of ``category`` planned ``now`` goes (UTC),
    or None to send it at once: the next time the clock in ``time_zone`` shows the
    chosen "HH:MM" (across a daylight-saving change too), at most a day away."""
    if prefs is None or category not in DIGEST_CATEGORIES:
        return None
    chosen = prefs.digest.get(category.value)  # type: ignore[call-overload]
    if not chosen:
        return None
    at = hhmm(chosen)
    zone = ZoneInfo(time_zone)
    today = now.astimezone(zone).date()
    when = wall_clock_to_utc(today, at, zone, now)
    if when <= now:
        when = wall_clock_to_utc(today + timedelta(days=1), at, zone, now)
    return min(when, now + LONGEST_HOLD)


def digest_job_id(tenant_id: str, person_id: str, at: datetime) -> str:
    """The digest job of one guardian at one time (seconds since the epoch)."""
    return f"{JOB_DIGEST}:{tenant_id}:{person_id}:{int(at.timestamp())}"


def digest_job(delivery: Delivery, *, urgent: bool = False) -> Job:
    """The digest job a held delivery belongs to (inserting it again is a no-op)."""
    assert delivery.not_before is not None
    return Job(
        id=delivery.context[DIGEST_KEY],
        tenant_id=delivery.tenant_id,
        kind=JOB_DIGEST,
        ref=delivery.recipient_id,
        due_at=delivery.not_before,
        urgent=urgent,
    )


def digest_entries(deliveries: Sequence[Delivery]) -> list[DigestEntry]:
    """The digest entries of the held deliveries among ``deliveries``."""
    return [
        DigestEntry(d.tenant_id, d.context[DIGEST_KEY], d.message_id, d.id)
        for d in deliveries
        if DIGEST_KEY in d.context
    ]
