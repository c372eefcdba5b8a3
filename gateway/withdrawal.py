"""Access already given is withdrawn when the right to it ends (issue 10).

Resolution decides who is told when a message is planned; the recheck
(gateway/recheck.py) stops late sends. What was already delivered stayed open: a
parent blocked by a court order could still open their earlier read links and see
every message about the child in their app. Now every surface that shows a
delivered message to its recipient (the read-link page, the app inbox) asks
:func:`withdrawn` first. Access to a message about a child ends when

* the recipient's relation to that child is now blocked, or their right to
  information is revoked (the resolver, run again on a fresh snapshot, no longer
  lets them be told about the child) — ``blocked``, ``information_revoked``, ...;
* a co-guardian of that child, or the child, was raised to strictly confidential
  protection after the message was sent (``protection_raised``): the message may
  name the unit, group and staff that the protected person's safety now hides.
  The protected persons themselves keep their access.

The answer is computed at each request, from the same facts on every backend, so
nothing needs to be rewritten when a flag changes; the change itself is recorded
where it is made (the flag history, the protection history).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from gateway.models import Delivery, DeliveryStatus, InboxItem, Message, Protection, Role
from gateway.planner import local_time
from gateway.recheck import allowed_children, recheck_audience
from gateway.resolver import resolve
from gateway.store.ports import (
    AudienceReader,
    DeliveryStore,
    DirectoryStore,
    InboxStore,
    MessageStore,
)

log = logging.getLogger(__name__)

PROTECTION_RAISED = "protection_raised"
# Statuses after which a link no longer shows its message.
LINK_GONE = frozenset({DeliveryStatus.cancelled, DeliveryStatus.suppressed})


class RightsStore(AudienceReader, DirectoryStore, Protocol):
    """The audience as it is now and the protection history."""


class WithdrawalStore(RightsStore, MessageStore, InboxStore, Protocol):
    """Rights plus the inbox items and their messages."""


class LinkStore(RightsStore, MessageStore, DeliveryStore, Protocol):
    """Rights plus the delivery a personal link names and its message."""


async def withdrawn(
    store: RightsStore,
    message: Message,
    person_id: str,
    role: Role,
    child_ids: Sequence[str],
    now: datetime,
) -> str | None:
    """Why ``person_id`` may no longer see ``message`` (about ``child_ids``), or None."""
    if role is not Role.guardian or not child_ids:
        return None  # staff are told by role, adult pupils about themselves
    audience = recheck_audience(message, [(person_id, role, child_ids)])
    snapshot = await store.load_audience(message.tenant_id, audience)
    on = local_time(snapshot, now).date()
    resolution = resolve(snapshot, audience, message.category, on)
    _, reason = allowed_children(resolution, person_id, child_ids)
    if reason is not None:
        return reason
    viewer = snapshot.persons.get(person_id)
    if viewer is not None and viewer.protection is Protection.strictly_confidential:
        return None
    concerned = set(child_ids)
    others = {r.guardian_id for r in snapshot.relations if r.child_id in concerned}
    others |= concerned
    others.discard(person_id)
    for other in sorted(others):
        person = snapshot.persons.get(other)
        if person is None or person.protection is not Protection.strictly_confidential:
            continue
        for change in await store.protection_history(message.tenant_id, other):
            if change.level is Protection.strictly_confidential and change.at > message.created_at:
                return PROTECTION_RAISED
    return None


async def visible_items(
    store: WithdrawalStore,
    tenant_id: str,
    person_id: str,
    items: Sequence[InboxItem],
    now: datetime,
) -> list[InboxItem]:
    """The inbox items ``person_id`` may still see (see :func:`withdrawn`)."""
    if not any(item.child_ids for item in items):
        return list(items)
    person = await store.get_person(tenant_id, person_id)
    if person is None:
        return []
    kept: list[InboxItem] = []
    verdicts: dict[tuple[str, tuple[str, ...]], str | None] = {}
    for item in items:
        if item.child_ids:
            message = await store.get_message(tenant_id, item.message_id)
            if message is None:
                continue
            key = (message.id, tuple(item.child_ids))
            if key not in verdicts:
                verdicts[key] = await withdrawn(
                    store, message, person_id, person.role, item.child_ids, now
                )
            if verdicts[key] is not None:
                continue
        kept.append(item)
    return kept


async def visible_item(
    store: WithdrawalStore,
    tenant_id: str,
    person_id: str,
    message_id: str,
    now: datetime,
    *,
    hide_deferred: bool = False,
) -> InboxItem | None:
    """One inbox item, unless it is gone or access to it was withdrawn (and, with
    ``hide_deferred``, unless it waits for quiet hours to end)."""
    item = await store.inbox_item(
        tenant_id, person_id, message_id, now=now if hide_deferred else None
    )
    if item is None:
        return None
    visible = await visible_items(store, tenant_id, person_id, [item], now)
    return visible[0] if visible else None


async def linked_delivery(
    store: LinkStore, delivery_id: str, now: datetime
) -> tuple[Delivery, Message] | None:
    """The delivery a personal link names and its message, or None when either is gone
    (or the delivery was cancelled or suppressed), the recipient has been removed from
    the directory since, or their access was withdrawn (:func:`withdrawn`)."""
    delivery = await store.get_delivery(delivery_id)
    if delivery is None or delivery.status in LINK_GONE:
        return None
    message = await store.get_message(delivery.tenant_id, delivery.message_id)
    if message is None:
        return None
    if await store.get_person(delivery.tenant_id, delivery.recipient_id) is None:
        return None
    why = await withdrawn(
        store, message, delivery.recipient_id, delivery.recipient_role, delivery.child_ids, now
    )
    if why is not None:
        # A block, a revoked grant or a raised protection ended this access (issue 10).
        log.info("read link withdrawn", extra={"delivery_id": delivery.id, "reason": why})
        return None
    return delivery, message
