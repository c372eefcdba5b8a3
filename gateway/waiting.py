"""Why a delivery that is not out yet is waiting, in one line for the status API.

``quiet_hours until 2026-11-27T07:00:00+00:00`` (held by the recipient's quiet hours),
``channel_stopped: sms`` / ``channel_degraded: email`` (the channel's circuit breaker,
gateway/channel_health), or the last retry the dispatcher noted, ``retry at …,
attempt 3: smtp_connection``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.channel_health import ChannelHealth, ChannelState
from gateway.models import Delivery, DeliveryStatus, StatusChange

RETRY_PREFIX = "retry at "
_WAITING = (DeliveryStatus.planned, DeliveryStatus.queued, DeliveryStatus.sending)


def waiting_for(
    delivery: Delivery,
    history: Sequence[StatusChange],
    health: ChannelHealth | None,
    now: datetime,
) -> str | None:
    """The reason ``delivery`` is still waiting, or None (out already, or due now)."""
    if delivery.status not in _WAITING:
        return None
    if delivery.not_before is not None and delivery.not_before > now:
        return f"quiet_hours until {delivery.not_before.isoformat(timespec='seconds')}"
    if health is not None:
        state = health.state(delivery.channel)
        if state is not ChannelState.ok:
            return f"channel_{state.value}: {delivery.channel}"
    for change in reversed(history):
        if change.detail and change.detail.startswith(RETRY_PREFIX):
            return change.detail
    return None
