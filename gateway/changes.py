"""Facts no stored row records by itself, into the webhook change feed.

Most changes enter the feed with the row they report, in the same transaction (the
store's change capture: delivery.updated, message.read, reply.received, and
message.reached / absence.explained through their own store methods). What remains
(e.g. ``absence.unrouted``) is appended here. The HTTP side of webhooks (fan-out,
signing, sending) is gateway/webhooks.py and knows nothing of who emits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.store.ports import ChangeFeed


async def emit(
    store: ChangeFeed, tenant_id: str, event_type: str, data: dict[str, Any], at: datetime
) -> bool:
    """Queue a webhook event that no stored row records by itself.

    ``data`` is the event's ``data`` object, ``at`` the time of the change. Does nothing
    (returns False) when the tenant has no enabled endpoint.
    """
    return await store.append_change(tenant_id, event_type, data, at) is not None
