"""Store contract: the in-app inbox and reads (port InboxStore).

These tests speak only the ports: nothing here may know which backend runs.
"""

from __future__ import annotations

from gateway.models import DeliveryStatus
from gateway.store import Store

from .builders import A, B, accepted, at, delivery, message


async def test_inbox_lists_in_app_deliveries_newest_first(store: Store) -> None:
    old = await accepted(store, message(A, "old"))
    new = await accepted(store, message(A, "new", created=at(60)))
    deferred = await accepted(store, message(A, "deferred", created=at(90)))
    hidden = await accepted(store, message(A, "hidden", created=at(100)))
    cancelled = await accepted(store, message(A, "cancelled", created=at(110)))
    await store.add_deliveries(
        [
            delivery(old, "p1"),
            delivery(new, "p1"),
            delivery(new, "p1", "email", address="p1@example.no"),
            delivery(new, "p2"),
            delivery(deferred, "p1", not_before=at(3600)),
            delivery(hidden, "p1", status=DeliveryStatus.suppressed),
            delivery(cancelled, "p1", status=DeliveryStatus.cancelled),
        ],
        [],
    )
    inbox = await store.list_inbox(A, "p1", now=at(120))
    assert [i.message_id for i in inbox] == [new.id, old.id]
    item = inbox[0]
    assert (item.subject, item.body, item.category) == ("Subject new", "Body new", "general")
    assert item.sender_name == "Rektor"
    assert item.child_ids == ["c1"]
    assert item.context == {"children": ["Child c1"], "unit": "Unit u1"}
    assert item.created_at == at(60)
    assert item.read_at is None
    later = await store.list_inbox(A, "p1", now=at(3600))
    assert [i.message_id for i in later] == [deferred.id, new.id, old.id]
    assert [i.message_id for i in await store.list_inbox(A, "p1", limit=1, now=at(120))] == [new.id]
    paged = await store.list_inbox(A, "p1", before=at(60), now=at(120))
    assert [i.message_id for i in paged] == [old.id]
    assert await store.list_inbox(B, "p1", now=at(120)) == []
    assert await store.inbox_item(A, "p1", hidden.id, now=at(120)) is None
    assert await store.inbox_item(A, "p1", deferred.id, now=at(120)) is None
    assert await store.inbox_item(A, "p3", new.id, now=at(120)) is None
    found = await store.inbox_item(A, "p1", new.id, now=at(120))
    assert found == item


async def test_mark_read_first_read_wins(store: Store) -> None:
    msg = await accepted(store, message())
    inapp = delivery(msg, "p1")
    email = delivery(msg, "p1", "email", address="p1@example.no")
    await store.add_deliveries([inapp, email, delivery(msg, "p2")], [])
    await store.transition(inapp.id, DeliveryStatus.sent, at(1))
    assert await store.mark_read(A, "p1", msg.id, at(10), "link") is True
    assert await store.mark_read(A, "p1", msg.id, at(20), "inapp") is True
    item = await store.inbox_item(A, "p1", msg.id, now=at(30))
    assert item is not None
    assert item.read_at == at(10)
    assert item.status is DeliveryStatus.read
    history = (await store.history([inapp.id]))[inapp.id]
    assert [(h.status, h.at, h.detail) for h in history][-1] == (
        DeliveryStatus.read,
        at(10),
        "link",
    )
    assert sum(h.status is DeliveryStatus.read for h in history) == 1
    stored_email = await store.get_delivery(email.id)
    assert stored_email is not None and stored_email.status is DeliveryStatus.planned
    other = await store.inbox_item(A, "p2", msg.id, now=at(30))
    assert other is not None and other.read_at is None


async def test_mark_read_without_a_delivery(store: Store) -> None:
    msg = await accepted(store, message())
    await store.add_deliveries(
        [delivery(msg, "p1"), delivery(msg, "p3", "none", status=DeliveryStatus.suppressed)], []
    )
    assert await store.mark_read(A, "p2", msg.id, at(10), "inapp") is False
    assert await store.mark_read(A, "p3", msg.id, at(10), "inapp") is False
    assert await store.mark_read(B, "p1", msg.id, at(10), "inapp") is False
    assert await store.mark_read(A, "p1", "no-such-message", at(10), "inapp") is False
