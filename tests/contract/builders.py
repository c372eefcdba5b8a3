"""Builders shared by the store contract suite (rows, messages, deliveries, jobs)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from gateway.errors import ValidationFailed
from gateway.models import (
    Audience,
    Category,
    ChannelName,
    Delivery,
    DeliveryStatus,
    DirectoryBatch,
    Group,
    GroupKind,
    Job,
    Message,
    Person,
    Relation,
    Role,
    Tenant,
    Unit,
    UnitKind,
    derive_id,
)
from gateway.store import Store

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
A = "tenant-a"
B = "tenant-b"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def tenant(tenant_id: str, created: datetime = T0) -> Tenant:
    return Tenant(
        id=tenant_id,
        name=tenant_id,
        api_key_hash="h-first-" + tenant_id,
        webhook_secret="whsec_x",
        created_at=created,
    )


def unit(uid: str, kind: UnitKind = UnitKind.school) -> Unit:
    return Unit(id=uid, kind=kind, name=f"Unit {uid}")


def group(gid: str, unit_id: str) -> Group:
    return Group(id=gid, unit_id=unit_id, kind=GroupKind.class_, name=f"Class {gid}")


def child(pid: str, *, groups: tuple[str, ...] = (), units: tuple[str, ...] = ()) -> Person:
    return Person(
        id=pid,
        role=Role.child,
        given_name=f"Child {pid}",
        family_name="Nordmann",
        birth_date=date(2015, 5, 1),
        group_ids=list(groups),
        unit_ids=list(units),
    )


def guardian(pid: str, *, email: str | None = None, phone: str | None = None) -> Person:
    return Person(
        id=pid,
        role=Role.guardian,
        given_name=f"Guardian {pid}",
        email=email or f"{pid}@example.no",
        phone=phone,
    )


def staff(pid: str, *, units: tuple[str, ...] = ()) -> Person:
    return Person(id=pid, role=Role.staff, given_name=f"Staff {pid}", unit_ids=list(units))


def rel(child_id: str, guardian_id: str, *, responsibility: bool = True) -> Relation:
    return Relation(
        child_id=child_id, guardian_id=guardian_id, parental_responsibility=responsibility
    )


def school_batch() -> DirectoryBatch:
    """Two units; c1 and c3 are siblings in 5A; p2 has children in 5A and 6B."""
    return DirectoryBatch(
        units=[unit("u1"), unit("u2", UnitKind.kindergarten)],
        groups=[group("g5a", "u1"), group("g6b", "u1"), group("gk", "u2")],
        persons=[
            child("c1", groups=("g5a",), units=("u1",)),
            child("c2", groups=("g6b",), units=("u1",)),
            child("c3", groups=("g5a",), units=("u1",)),
            child("c4", groups=("gk",), units=("u2",)),
            child("c5", units=("u1",)),  # no class yet: reached only through its unit
            guardian("p1", phone="+4791234567"),
            guardian("p2"),
            guardian("p3"),
            guardian("p4"),
            staff("s1", units=("u1",)),
        ],
        relations=[
            rel("c1", "p1"),
            rel("c3", "p1"),
            rel("c1", "p2"),
            rel("c2", "p2"),
            rel("c2", "p3", responsibility=False),
            rel("c4", "p4"),
        ],
    )


def message(tenant: str = A, event: str = "ev1", *, created: datetime = T0) -> Message:
    return Message(
        id=derive_id(tenant, event),
        tenant_id=tenant,
        event_id=event,
        event_type="message.created",
        body_hash="h-" + event,
        category=Category.general,
        subject=f"Subject {event}",
        body=f"Body {event}",
        sender_name="Rektor",
        audience=Audience(groups=["g5a"]),
        created_at=created,
    )


def delivery(
    msg: Message,
    recipient: str,
    channel: str = ChannelName.inapp.value,
    *,
    address: str | None = None,
    status: DeliveryStatus = DeliveryStatus.planned,
    created: datetime | None = None,
    not_before: datetime | None = None,
    reason: str | None = None,
) -> Delivery:
    when = created or msg.created_at
    return Delivery(
        id=Delivery.make_id(msg.tenant_id, msg.event_id, recipient, channel),
        tenant_id=msg.tenant_id,
        message_id=msg.id,
        recipient_id=recipient,
        recipient_role=Role.guardian,
        channel=channel,
        address=address,
        language="nb",
        child_ids=["c1"],
        context={"children": ["Child c1"], "unit": "Unit u1"},
        status=status,
        reason=reason,
        not_before=not_before,
        created_at=when,
        updated_at=when,
    )


def job(jid: str, *, kind: str = "send", due: datetime = T0, tenant: str = A) -> Job:
    return Job(id=jid, tenant_id=tenant, kind=kind, ref=jid.removeprefix(kind + ":"), due_at=due)


def plan_job(msg: Message) -> Job:
    return Job(id=f"plan:{msg.id}", tenant_id=msg.tenant_id, kind="plan", ref=msg.id, due_at=T0)


async def accepted(store: Store, msg: Message) -> Message:
    return await store.accept_message(msg, plan_job(msg))


def errors_of(exc: pytest.ExceptionInfo[ValidationFailed]) -> list[dict[str, Any]]:
    return exc.value.errors
