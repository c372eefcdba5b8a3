"""Reached per category: the pure view (tracker.reach) and what record_read stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.models import (
    Audience,
    Category,
    Delivery,
    DeliveryStatus,
    Job,
    Message,
    ReadRecord,
    Role,
    derive_id,
)
from gateway.store import Store
from gateway.tracker import ESCALATION_KEY, asks_receipt, reach, record_read

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
TENANT = "asker"


def msg(category: Category = Category.general, *, read_receipt: bool = False) -> Message:
    return Message(
        id=derive_id(TENANT, "ev-1"),
        tenant_id=TENANT,
        event_id="ev-1",
        event_type="message.created",
        body_hash="0" * 64,
        category=category,
        subject="Tur",
        body="Vi går på tur.",
        read_receipt=read_receipt,
        audience=Audience(groups=["g1"]),
        created_at=T0,
    )


def dlv(
    message: Message,
    recipient: str,
    channel: str,
    children: list[str],
    status: DeliveryStatus = DeliveryStatus.sent,
    *,
    role: Role = Role.guardian,
    target: str = "",
    **fields: Any,
) -> Delivery:
    return Delivery(
        id=Delivery.make_id(TENANT, message.event_id, recipient, channel, target),
        tenant_id=TENANT,
        message_id=message.id,
        recipient_id=recipient,
        recipient_role=role,
        channel=channel,
        target=target,
        language="nb",
        child_ids=children,
        status=status,
        created_at=T0,
        updated_at=T0,
        **fields,
    )


def read(person: str, minutes: int, via: str = "inapp") -> ReadRecord:
    return ReadRecord(person_id=person, at=T0 + timedelta(minutes=minutes), via=via)


def family(message: Message) -> list[Delivery]:
    """c1: p1 and p2; c2: p2 only; c3: p3 only; c4: p4 blocked (suppressed); a1: adult."""
    return [
        dlv(message, "p1", "inapp", ["c1"]),
        dlv(message, "p1", "push", ["c1"], DeliveryStatus.delivered, target="dev1"),
        dlv(message, "p1", "push", ["c1"], DeliveryStatus.failed, target="dev2"),
        dlv(message, "p2", "inapp", ["c1", "c2"]),
        dlv(message, "p2", "sms", ["c1", "c2"], DeliveryStatus.failed),
        dlv(message, "p3", "inapp", ["c3"]),
        dlv(message, "p3", "email", ["c3"], DeliveryStatus.queued),
        dlv(message, "p4", "none", ["c4"], DeliveryStatus.suppressed, target="c4"),
        dlv(message, "a1", "inapp", ["a1"], role=Role.child),
    ]


def test_per_child_categories_are_reached_by_any_guardian_with_rights() -> None:
    message = msg(Category.absence)
    view = reach(message, family(message), [read("p1", 5), read("a1", 7)])
    assert {c: (v.reached, v.reached_by) for c, v in view.children.items()} == {
        "c1": (True, ["p1"]),
        "c2": (False, []),
        "c3": (False, []),
        "c4": (False, []),  # its only guardian is blocked: nobody can be reached
        "a1": (True, ["a1"]),  # an adult pupil is their own recipient
    }
    assert view.children["c1"].reached_at == T0 + timedelta(minutes=5)
    # p2 still has c2 to reach; p1 read; p3 nobody read for c3
    assert view.unreached() == ["p2", "p3"]
    assert set(view.recipients) == {"p1", "p2", "p3", "a1"}  # p4 was never told


def test_per_child_recipient_is_done_when_all_its_children_are_reached() -> None:
    message = msg(Category.emergency)
    deliveries = [*family(message), dlv(message, "p5", "inapp", ["c2"])]
    view = reach(message, deliveries, [read("p1", 5), read("p5", 6)])
    # p2 read nothing, but c1 (p1) and c2 (p5) are reached: no follow-up for p2
    assert view.is_reached("p2")
    assert view.unreached() == ["a1", "p3"]


def test_general_is_reached_per_guardian() -> None:
    message = msg(Category.general, read_receipt=True)
    view = reach(message, family(message), [read("p1", 5)])
    assert view.children["c1"].reached  # shown, but it does not stop anyone's follow-up
    assert view.unreached() == ["a1", "p2", "p3"]


def test_best_status_across_channels() -> None:
    message = msg()
    view = reach(message, family(message), [read("p3", 9, "link")])
    p1, p2, p3 = (view.recipients[p] for p in ("p1", "p2", "p3"))
    assert p1.channels == {"inapp": DeliveryStatus.sent, "push": DeliveryStatus.delivered}
    assert p1.best_status is DeliveryStatus.delivered
    assert p2.channels["sms"] is DeliveryStatus.failed and p2.best_status is DeliveryStatus.sent
    # a link read: the in-app delivery never moved, the recipient read it all the same
    assert (p3.best_status, p3.via) == (DeliveryStatus.read, "link")
    failed_only = reach(message, [dlv(message, "p9", "sms", [], DeliveryStatus.bounced)], [])
    assert failed_only.recipients["p9"].best_status is DeliveryStatus.bounced


def test_which_messages_ask_for_a_read_receipt() -> None:
    assert not asks_receipt(msg(Category.general))
    assert asks_receipt(msg(Category.general, read_receipt=True))
    assert asks_receipt(msg(Category.emergency))
    assert asks_receipt(msg(Category.absence))


async def stored(store: Store, message: Message, deliveries: list[Delivery]) -> None:
    job = Job(id=f"plan:{message.id}", tenant_id=TENANT, kind="plan", ref=message.id, due_at=T0)
    await store.accept_message(message, job)
    await store.add_deliveries(deliveries, [])


async def test_record_read_stores_children_reached_once(store: Store) -> None:
    message = msg(Category.emergency)
    await stored(store, message, family(message))
    assert await record_read(store, TENANT, "p2", message.id, T0 + timedelta(minutes=3), "inapp")
    assert await record_read(store, TENANT, "p1", message.id, T0 + timedelta(minutes=4), "link")
    assert await record_read(store, TENANT, "a1", message.id, T0 + timedelta(minutes=5), "inapp")
    assert not await record_read(store, TENANT, "p4", message.id, T0, "inapp")  # suppressed
    rows = await store.list_reached(TENANT, message.id)
    assert [(r.subject_kind, r.subject_id, r.by_id) for r in rows] == [
        ("child", "c1", "p2"),
        ("child", "c2", "p2"),
        ("child", "a1", "a1"),
    ]


async def test_record_read_stores_the_guardian_for_general(store: Store) -> None:
    message = msg(Category.general)
    await stored(store, message, family(message))
    assert await record_read(store, TENANT, "p2", message.id, T0, "inapp")
    assert await record_read(store, TENANT, "p2", message.id, T0 + timedelta(hours=1), "link")
    rows = await store.list_reached(TENANT, message.id)
    assert [(r.subject_kind, r.subject_id, r.by_id, r.at) for r in rows] == [
        ("guardian", "p2", "p2", T0)
    ]


async def test_a_read_cancels_the_readers_deferred_escalation(store: Store) -> None:
    message = msg(Category.general, read_receipt=True)
    later = T0 + timedelta(hours=8)
    waiting = dlv(
        message,
        "p3",
        "sms",
        ["c3"],
        DeliveryStatus.queued,
        not_before=later,
        context={ESCALATION_KEY: "step:1"},
    )
    plain = dlv(message, "p3", "push", ["c3"], DeliveryStatus.queued, not_before=later)
    await stored(store, message, [*family(message), waiting, plain])
    assert await record_read(store, TENANT, "p3", message.id, T0 + timedelta(hours=1), "inapp")
    found = await store.get_deliveries([waiting.id, plain.id])
    assert found[waiting.id].status is DeliveryStatus.cancelled
    assert found[plain.id].status is DeliveryStatus.queued  # not escalation's to cancel
