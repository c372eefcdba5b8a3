"""Why a child a message concerns has not been reached yet, as one code per child.

The staff pages say it in plain words (templates/pages/staff.toml); the rule of
which reason wins lives only here. In order:

* ``all_suppressed``: nobody may be told about the child (every guardian was left
  out: no parental responsibility, blocked, an adult pupil without consent, ...).
* ``all_failed``: every contact point outside the app failed for good (a bounced
  email, an unknown number) and nobody has read it in the app.
* ``quiet_hours``: a delivery waits for a guardian's quiet hours to end (``at``: until).
* ``escalated``: it went out again on another channel because nobody read it
  (``at``: when, ``channel``: which).
* ``not_read``: it reached the guardians' phones or mailboxes, but nobody has read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.constants import ESCALATION_KEY, SUPPRESSED_CHANNEL
from gateway.models import TERMINAL_FAILURES, ChannelName, Delivery, DeliveryStatus
from gateway.tracker import Reach

ALL_SUPPRESSED = "all_suppressed"
ALL_FAILED = "all_failed"
QUIET_HOURS = "quiet_hours"
ESCALATED = "escalated"
NOT_READ = "not_read"

# Failures of a contact point, as opposed to a delivery left out or called off.
_FAILED = TERMINAL_FAILURES - {DeliveryStatus.suppressed, DeliveryStatus.cancelled}
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
    if outside_app and all(d.status in _FAILED for d in outside_app):
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
