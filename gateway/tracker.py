"""The tracker: turns reads, receipts and replies into status, and status into answers.

Every path that learns a guardian read a message (the parent app, a read link)
goes through :func:`record_read`, so what follows a read (reached, stopping
escalation, webhooks) happens in one place.
"""

from __future__ import annotations

from datetime import datetime

from gateway.store import Store


async def record_read(
    store: Store, tenant_id: str, person_id: str, message_id: str, at: datetime, via: str
) -> bool:
    """Record that ``person_id`` read ``message_id`` (via "inapp", "link", ...).

    Returns False when that person has no delivery of the message.
    """
    return await store.mark_read(tenant_id, person_id, message_id, at, via)
