"""Contract: purge_before removes messages, deliveries, history, reads and replies older
than the retention cutoff, and nothing newer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.models import (
    Audience,
    Category,
    Delivery,
    DeliveryStatus,
    Job,
    Message,
    Reply,
    Role,
    derive_id,
)
from gateway.store import Store

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
A = "tenant-a"
DAY = 86_400


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def message(event: str, created: datetime) -> Message:
    return Message(
        id=derive_id(A, event),
        tenant_id=A,
        event_id=event,
        event_type="message.created",
        body_hash="h",
        category=Category.general,
        subject="Subject",
        body="Body",
        audience=Audience(groups=["g1"]),
        created_at=created,
    )


def delivery(msg: Message, recipient: str, channel: str, address: str | None = None) -> Delivery:
    return Delivery(
        id=Delivery.make_id(A, msg.event_id, recipient, channel),
        tenant_id=A,
        message_id=msg.id,
        recipient_id=recipient,
        recipient_role=Role.guardian,
        channel=channel,
        address=address,
        language="nb",
        created_at=msg.created_at,
        updated_at=msg.created_at,
    )


def reply(rid: str, msg: Message | None, received: datetime) -> Reply:
    return Reply(
        id=rid,
        tenant_id=A,
        channel="sms",
        message_id=None if msg is None else msg.id,
        person_id="p1",
        body="Ja",
        received_at=received,
    )


async def accept(store: Store, msg: Message) -> None:
    await store.accept_message(
        msg, Job(id=f"plan:{msg.id}", tenant_id=A, kind="plan", ref=msg.id, due_at=T0)
    )


async def test_purge_removes_only_what_is_older_than_the_cutoff(store: Store) -> None:
    old, new = message("old", T0), message("new", at(400 * DAY))
    await accept(store, old)
    await accept(store, new)
    old_inapp = delivery(old, "p1", "inapp")
    old_sms = delivery(old, "p1", "sms", "+4791234567")
    new_inapp = delivery(new, "p1", "inapp")
    await store.add_deliveries([old_inapp, old_sms, new_inapp], [])
    assert await store.transition(old_sms.id, DeliveryStatus.sent, at(1), provider_id="SM-old")
    assert await store.mark_read(A, "p1", old.id, at(2), "inapp")
    assert await store.mark_read(A, "p1", new.id, at(400 * DAY + 2), "inapp")
    assert await store.add_reply(reply("r-old", old, at(3)))
    assert await store.add_reply(reply("r-loose", None, at(4)))
    assert await store.add_reply(reply("r-new", new, at(400 * DAY + 3)))

    assert await store.purge_before(at(396 * DAY)) == 2

    assert await store.get_message(A, old.id) is None
    assert await store.get_deliveries([old_inapp.id, old_sms.id]) == {}
    assert await store.history([old_sms.id]) == {old_sms.id: []}
    assert await store.list_deliveries(A, old.id) == []
    assert await store.count_by_status(A, old.id) == {}
    assert await store.list_replies(A, old.id) == []
    assert await store.list_reads(A, old.id) == []
    assert await store.delivery_by_provider_id("sms", "SM-old") is None
    inbox = await store.list_inbox(A, "p1", now=at(401 * DAY))
    assert [i.message_id for i in inbox] == [new.id]
    # what is newer stays, counters included
    assert await store.get_message(A, new.id) is not None
    assert await store.get_delivery(new_inapp.id) is not None
    assert [r.id for r in await store.list_replies(A, new.id)] == ["r-new"]
    assert [r.person_id for r in await store.list_reads(A, new.id)] == ["p1"]
    assert await store.delivery_stats() == {("inapp", "read"): 1}
    assert await store.purge_before(at(396 * DAY)) == 0
    # a later cutoff takes the rest
    assert await store.purge_before(at(800 * DAY)) == 1
    assert await store.get_message(A, new.id) is None
    assert await store.delivery_stats() == {}
