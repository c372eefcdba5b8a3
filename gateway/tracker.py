"""The tracker: turns reads, receipts and replies into status, and status into answers.

Every path that learns a guardian read a message (the parent app, a read link,
an SMS answer) goes through :func:`record_read`, so what follows a read (reached,
stopping escalation, webhooks) happens in one place. The HTTP layer only
authenticates and calls in: a read link's page through :func:`link_opened` and
:func:`link_read`, a provider's status callback through :func:`provider_status`,
an inbound reply through :func:`record_reply`.

**Reached** is defined per message and category:

* absence and emergency: per child. A child is reached as soon as any recipient
  with rights to that child (a recipient whose deliveries name the child) has read
  the message; an adult pupil or learner is their own recipient and child.
* general, reminder, confidential: per recipient. A guardian (or a staff member,
  or an adult pupil) is reached when they have read it.

The first time a read reaches a subject, a :class:`gateway.models.Reached` row is
stored (``ReachStore.add_reached``). :func:`reach` computes the whole picture of one
message from its deliveries and reads, for the status API and for escalation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from gateway import sms_status
from gateway.constants import ESCALATION_KEY, PER_CHILD, SUPPRESSED_CHANNEL
from gateway.metrics import REACHED
from gateway.models import (
    PROGRESS,
    TERMINAL_FAILURES,
    Category,
    Delivery,
    DeliveryStatus,
    Message,
    Reached,
    ReadRecord,
    Reply,
    Role,
    can_transition,
    derive_id,
)
from gateway.sms_status import CallbackStore, StatusReport
from gateway.store.ports import (
    DeliveryStore,
    InboxStore,
    MessageStore,
    ProviderLookup,
    ReachStore,
    ReplyStore,
)

log = logging.getLogger(__name__)

# Categories that ask for a read receipt (and so escalate) whatever the event says.
ALWAYS_RECEIPT = frozenset({Category.absence, Category.emergency})

_RANK = {status: rank for rank, status in enumerate(PROGRESS)}
_NOT_SENT = frozenset({DeliveryStatus.planned, DeliveryStatus.queued})


class ReadStore(InboxStore, MessageStore, DeliveryStore, ReachStore, Protocol):
    """What recording a read needs: the inbox's read, the message, its deliveries, reach."""


def asks_receipt(message: Message) -> bool:
    """Whether unread recipients of this message are followed up (escalation)."""
    return message.read_receipt or message.category in ALWAYS_RECEIPT


def status_rank(status: DeliveryStatus) -> int:
    """The forward ranking (planned < ... < read); every terminal failure ranks below."""
    return -1 if status in TERMINAL_FAILURES else _RANK[status]


def best_status(statuses: Iterable[DeliveryStatus]) -> DeliveryStatus | None:
    return max(statuses, key=status_rank, default=None)


@dataclass
class RecipientReach:
    """One recipient of a message: their channels' best statuses and their read."""

    recipient_id: str
    role: Role
    child_ids: list[str] = field(default_factory=list)
    channels: dict[str, DeliveryStatus] = field(default_factory=dict)
    read_at: datetime | None = None
    via: str | None = None

    @property
    def best_status(self) -> DeliveryStatus:
        """``read`` once they read (also via a link), else the best status of any channel."""
        if self.read_at is not None:
            return DeliveryStatus.read
        return best_status(self.channels.values()) or DeliveryStatus.planned


# Why nobody could be told about a child (ChildReach.reason).
NO_RECIPIENT = "no_recipient"  # nobody is related to the child at all
ALL_SUPPRESSED = "all_suppressed"  # everyone related was left out (blocked, no rights, ...)
ALL_FAILED = "all_failed"  # every send about the child failed for good


@dataclass
class ChildReach:
    """One child the message concerns: who with rights to the child has read it, and
    whether anybody could be told at all."""

    child_id: str
    reached_by: list[str] = field(default_factory=list)  # recipient ids, first reader first
    reached_at: datetime | None = None
    sends: list[DeliveryStatus] = field(default_factory=list)  # of deliveries naming the child
    left_out: list[str] = field(default_factory=list)  # reasons of suppression records

    @property
    def reached(self) -> bool:
        return bool(self.reached_by)

    @property
    def reason(self) -> str | None:
        """Why nobody was told about this child, or None while somebody was (or may be)."""
        if self.reached:
            return None
        if not self.sends:
            return NO_RECIPIENT if set(self.left_out) <= {NO_RECIPIENT} else ALL_SUPPRESSED
        if all(status in TERMINAL_FAILURES for status in self.sends):
            return ALL_FAILED
        return None


@dataclass
class Reach:
    """Who a message reached: per recipient and per child."""

    category: Category
    recipients: dict[str, RecipientReach]
    children: dict[str, ChildReach]

    def is_reached(self, recipient_id: str) -> bool:
        """Whether following this recipient up is pointless: they read it, or (absence,
        emergency) every child it concerns them for has been reached by someone."""
        recipient = self.recipients.get(recipient_id)
        if recipient is None or recipient.read_at is not None:
            return True
        if self.category in PER_CHILD and recipient.child_ids:
            return all(self.children[c].reached for c in recipient.child_ids)
        return False

    def unreached(self) -> list[str]:
        """Recipients still to be followed up, sorted by id."""
        return [r for r in sorted(self.recipients) if not self.is_reached(r)]


def reach(message: Message, deliveries: Sequence[Delivery], reads: Sequence[ReadRecord]) -> Reach:
    """The reach of a message from its deliveries and its reads.

    Children are those any delivery names, suppression records included: a child
    whose every guardian was left out shows as not reached, and a child nobody is
    related to has a ``no_recipient`` record of its own (gateway/resolver.py), so
    every child of the audience appears.
    """
    read = {r.person_id: r for r in reads}
    recipients: dict[str, RecipientReach] = {}
    children: dict[str, ChildReach] = {}
    for d in deliveries:
        suppressed = d.channel == SUPPRESSED_CHANNEL
        for child_id in d.child_ids:
            child = children.setdefault(child_id, ChildReach(child_id))
            if suppressed:
                child.left_out.append(d.reason or "")
            else:
                child.sends.append(d.status)
        if suppressed:
            continue
        recipient = recipients.get(d.recipient_id)
        if recipient is None:
            recipient = recipients[d.recipient_id] = RecipientReach(
                d.recipient_id, d.recipient_role
            )
            first = read.get(d.recipient_id)
            if first is not None:
                recipient.read_at, recipient.via = first.at, first.via
        for child_id in d.child_ids:
            if child_id not in recipient.child_ids:
                recipient.child_ids.append(child_id)
        known = recipient.channels.get(d.channel)
        if known is None or status_rank(d.status) > status_rank(known):
            recipient.channels[d.channel] = d.status
    readers = sorted(
        (r for r in recipients.values() if r.read_at is not None),
        key=lambda r: (r.read_at, r.recipient_id),
    )
    for reader in readers:
        for child_id in reader.child_ids:
            child = children[child_id]
            child.reached_by.append(reader.recipient_id)
            child.reached_at = child.reached_at or reader.read_at
    for recipient in recipients.values():
        recipient.child_ids.sort()
    return Reach(message.category, recipients, children)


def reached_rows(
    message: Message, person_id: str, deliveries: Sequence[Delivery], at: datetime
) -> list[Reached]:
    """The subjects a read by ``person_id`` reaches (``deliveries``: theirs, of this message)."""
    child_ids = sorted(
        {c for d in deliveries if d.channel != SUPPRESSED_CHANNEL for c in d.child_ids}
    )
    if message.category in PER_CHILD and child_ids:
        subjects = [("child", c) for c in child_ids]
    else:
        subjects = [("guardian", person_id)]
    return [
        Reached(
            tenant_id=message.tenant_id,
            message_id=message.id,
            subject_kind=kind,
            subject_id=subject,
            by_id=person_id,
            at=at,
        )
        for kind, subject in subjects
    ]


async def record_read(
    store: ReadStore, tenant_id: str, person_id: str, message_id: str, at: datetime, via: str
) -> bool:
    """Record that ``person_id`` read ``message_id`` (via "inapp", "link", ...).

    Stores the subjects this read reaches for the first time (the store records a
    ``message.reached`` webhook for each in the same transaction) and cancels the
    reader's escalation deliveries still waiting for quiet hours to end.
    Returns False when that person has no delivery of the message.
    """
    if not await store.mark_read(tenant_id, person_id, message_id, at, via):
        return False
    message = await store.get_message(tenant_id, message_id)
    if message is None:
        return True
    theirs = await store.recipient_deliveries(tenant_id, message_id, person_id)
    REACHED.inc(len(await store.add_reached(reached_rows(message, person_id, theirs, at))))
    for d in theirs:
        waiting = d.not_before is not None and d.not_before > at
        if ESCALATION_KEY in d.context and waiting and d.status in _NOT_SENT:
            await store.transition(d.id, DeliveryStatus.cancelled, at, detail="reached")
    return True


async def link_opened(store: DeliveryStore, delivery: Delivery, at: datetime) -> None:
    """A read link's page was shown: ``opened`` at most (a link scanner fetches pages on
    its own, so showing one never counts as a read)."""
    if can_transition(delivery.status, DeliveryStatus.opened):
        await store.transition(delivery.id, DeliveryStatus.opened, at, detail="link opened")


async def link_read(store: ReadStore, delivery: Delivery, at: datetime) -> None:
    """A read link's confirm button: the recipient read the message (:func:`record_read`,
    which moves their in-app delivery) and the linked delivery itself moves to ``read``."""
    await record_read(
        store, delivery.tenant_id, delivery.recipient_id, delivery.message_id, at, via="link"
    )
    if can_transition(delivery.status, DeliveryStatus.read):
        await store.transition(delivery.id, DeliveryStatus.read, at, detail="link")


async def provider_status(
    store: CallbackStore, report: StatusReport, delivery_id: str | None, wake: asyncio.Event
) -> None:
    """A provider's status callback (Twilio's, gateway/sms_status.py) applied to its
    delivery: the one ``delivery_id`` names (our signed callback URL), else the one with
    its SID; a SID not known yet is parked as a durable job until it is. A status we do
    not map (inbound-only or unknown) changes nothing. Follow-ups of a failure (the
    failover, the failing mark of a dead number) are committed with the move."""
    if report.status is None:
        if report.raw_status not in sms_status.TWILIO_STATUS:
            log.info(
                "twilio status callback ignored", extra={"twilio_status": report.raw_status[:32]}
            )
        return
    delivery = await sms_status.delivery_for(store, delivery_id, report.sid)
    if delivery is not None:
        await sms_status.apply(store, delivery, report, report.received_at, wake)
    elif delivery_id:
        # Named in our own signed URL but gone: removed by retention (or another store).
        log.warning(
            "twilio status callback for a delivery not stored", extra={"provider_id": report.sid}
        )
    else:
        await sms_status.park(store, report)
        wake.set()


async def reply_target(
    store: ProviderLookup, channel: str, address: str
) -> tuple[str, Delivery | None] | None:
    """The tenant an inbound message from ``address`` belongs to and the latest delivery
    to that address (the one a reply answers); None when we never sent to it."""
    tenant_id = await store.tenant_for_address(channel, address)
    if tenant_id is None:
        return None
    return tenant_id, await store.latest_delivery_to(tenant_id, channel, address)


async def record_reply(
    store: ReplyStore,
    tenant_id: str,
    channel: str,
    delivery: Delivery | None,
    body: str,
    provider_id: str,
    at: datetime,
) -> Reply:
    """Store an inbound reply linked to the delivery it answers (idempotent by the
    provider's id); the store records its ``reply.received`` change with it."""
    reply = Reply(
        id=derive_id("twilio", provider_id),
        tenant_id=tenant_id,
        channel=channel,
        message_id=delivery.message_id if delivery else None,
        person_id=delivery.recipient_id if delivery else None,
        body=body,
        provider_id=provider_id,
        received_at=at,
    )
    added = await store.add_reply(reply)
    log.info(
        "inbound sms stored" if added else "inbound sms already stored",
        extra={"tenant_id": tenant_id, "reply_id": reply.id, "message_id": reply.message_id},
    )
    return reply
