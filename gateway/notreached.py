"""Why a child a message concerns has not been reached yet, as one code per child.

The staff pages say it in plain words (templates/pages/staff.toml); the rule of
which reason wins lives only here. In order:

* ``all_suppressed``: nobody may be told about the child (every guardian was left
  out: no parental responsibility, blocked, an adult pupil without consent, ...).
* ``all_failed``: every contact point outside the app failed for good (a bounced
  email, an unknown number, a phone off too long) and nobody has read it in the app;
  each failure's own reason in words is :func:`failure_kind`.
* ``quiet_hours``: a delivery waits for a guardian's quiet hours to end (``at``: until).
* ``escalated``: it went out again on another channel because nobody read it
  (``at``: when, ``channel``: which).
* ``not_read``: it reached the guardians' phones or mailboxes, but nobody has read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from channels.sms import DEAD_NUMBER_CODES
from gateway.constants import ESCALATION_KEY, SUPPRESSED_CHANNEL
from gateway.models import TERMINAL_FAILURES, ChannelName, Delivery, DeliveryStatus
from gateway.tracker import Reach

ALL_SUPPRESSED = "all_suppressed"
ALL_FAILED = "all_failed"
QUIET_HOURS = "quiet_hours"
ESCALATED = "escalated"
NOT_READ = "not_read"

# Failures of a contact point, as opposed to a delivery left out or called off.
FAILED = TERMINAL_FAILURES - {DeliveryStatus.suppressed, DeliveryStatus.cancelled}
_WAITING = frozenset({DeliveryStatus.planned, DeliveryStatus.queued})


@dataclass(frozen=True)
class Why:
    code: str
    at: datetime | None = None
    channel: str | None = None


def why_not_reached(view: Reach, deliveries: Sequence[Delivery], now: datetime) -> dict[str, Why]:
    """Per child not reached (by id): why. Reached children are left out."""
    by_child: dict[str, list[Delivery]] = {}
    for d in deliveries:
        for child_id in d.child_ids:
            by_child.setdefault(child_id, []).append(d)
    found: dict[str, Why] = {}
    for child_id, child in view.children.items():
        if not child.reached:
            found[child_id] = _why(by_child.get(child_id, []), now)
    return found


def _why(deliveries: list[Delivery], now: datetime) -> Why:
    sent = [d for d in deliveries if d.channel != SUPPRESSED_CHANNEL]
    if not sent:
        return Why(ALL_SUPPRESSED)
    outside_app = [d for d in sent if d.channel != ChannelName.inapp]
    if outside_app and all(d.status in FAILED for d in outside_app):
        return Why(ALL_FAILED)
    waiting = [
        d.not_before
        for d in sent
        if d.status in _WAITING and d.not_before is not None and d.not_before > now
    ]
    if waiting:
        return Why(QUIET_HOURS, min(waiting))
    escalated = sorted(
        (d for d in sent if ESCALATION_KEY in d.context and d.status not in TERMINAL_FAILURES),
        key=lambda d: d.created_at,
    )
    if escalated:
        return Why(ESCALATED, escalated[0].created_at, escalated[0].channel)
    return Why(NOT_READ)


# Why one send failed, for the teacher in plain words (templates/pages/staff.toml,
# [failure]): from the reason a failed delivery keeps (the provider's code).
OPTED_OUT = 21610  # the guardian answered STOP: the number works
UNREACHABLE = frozenset({30003, 30008})  # the phone was off or out of coverage


def failure_kind(reason: str | None) -> str:
    """What a failed send's ``reason`` means for the teacher: ``number`` (unknown or
    not a mobile), ``opted_out`` (answered STOP), ``unreachable`` (phone off),
    ``email_address`` (not an address), ``app_gone`` (the app was removed),
    ``gave_up`` (tried many times), else ``other`` (no words beyond "failed")."""
    code = reason or ""
    if code.startswith("gave_up:"):
        return "gave_up"
    provider, _, detail = code.partition("_")
    if provider == "twilio" and detail.isdigit():
        number = int(detail)
        if number == OPTED_OUT:
            return "opted_out"
        if number in UNREACHABLE:
            return "unreachable"
        if number in DEAD_NUMBER_CODES:
            return "number"
    if code == "invalid_address":
        return "email_address"
    if code == "fcm_UNREGISTERED":
        return "app_gone"
    return "other"
