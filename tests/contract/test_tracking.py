"""Contract of the tracking part of the Store: reached, reads, escalation overrides,
key scopes and protected persons. Speaks only the Protocol."""

from __future__ import annotations

from datetime import date

from gateway.models import (
    ChannelName,
    DeliveryStatus,
    DirectoryBatch,
    Person,
    Protection,
    Reached,
    Role,
)
from gateway.store import Store

from .builders import A, B, accepted, at, delivery, message
from .conftest import Backend


def reached(
    subject: str, by: str, seconds: float, *, kind: str = "child", msg: str = "m1"
) -> Reached:
    return Reached(
        tenant_id=A,
        message_id=msg,
        subject_kind=kind,  # type: ignore[arg-type]
        subject_id=subject,
        by_id=by,
        at=at(seconds),
    )


async def test_add_reached_keeps_the_first_row_per_subject(store: Store) -> None:
    first = [reached("c1", "p1", 10), reached("c2", "p1", 10)]
    assert await store.add_reached(first) == first
    # c1 again (a co-guardian read later), c3 new, and the same subject as a guardian kind
    later = [
        reached("c1", "p2", 20),
        reached("c3", "p2", 20),
        reached("p2", "p2", 20, kind="guardian"),
    ]
    assert await store.add_reached(later) == later[1:]
    assert await store.add_reached(later) == []
    rows = await store.list_reached(A, "m1")
    assert [(r.subject_kind, r.subject_id, r.by_id, r.at) for r in rows] == [
        ("child", "c1", "p1", at(10)),
        ("child", "c2", "p1", at(10)),
        ("child", "c3", "p2", at(20)),
        ("guardian", "p2", "p2", at(20)),
    ]
    assert await store.list_reached(B, "m1") == []
    assert await store.list_reached(A, "m2") == []


async def test_reached_survives_reopen(backend: Backend) -> None:
    async with backend.open() as store:
        await store.add_reached([reached("c1", "p1", 10)])
    async with backend.open() as store:
        assert [r.subject_id for r in await store.list_reached(A, "m1")] == ["c1"]
        assert await store.add_reached([reached("c1", "p2", 30)]) == []


async def test_list_reads_gives_each_first_read(store: Store) -> None:
    msg = await accepted(store, message())
    await store.add_deliveries([delivery(msg, "p1"), delivery(msg, "p2"), delivery(msg, "p3")], [])
    assert await store.list_reads(A, msg.id) == []
    assert await store.mark_read(A, "p2", msg.id, at(5), "link")
    assert await store.mark_read(A, "p1", msg.id, at(9), "inapp")
    assert await store.mark_read(A, "p2", msg.id, at(12), "inapp")
    reads = await store.list_reads(A, msg.id)
    assert [(r.person_id, r.at, r.via) for r in reads] == [
        ("p2", at(5), "link"),
        ("p1", at(9), "inapp"),
    ]
    assert await store.list_reads(B, msg.id) == []


async def test_recipient_deliveries_are_one_recipients_rows_of_one_message(store: Store) -> None:
    msg = await accepted(store, message())
    other = await accepted(store, message(event="ev2"))
    mine = [
        delivery(msg, "p1"),
        delivery(msg, "p1", ChannelName.sms.value, address="+4791234567"),
        delivery(msg, "p1", "none", status=DeliveryStatus.suppressed),
    ]
    await store.add_deliveries([*mine, delivery(msg, "p2"), delivery(other, "p1")], [])
    found = await store.recipient_deliveries(A, msg.id, "p1")
    assert [(d.channel, d.status) for d in found] == [
        ("inapp", DeliveryStatus.planned),
        ("none", DeliveryStatus.suppressed),
        ("sms", DeliveryStatus.planned),
    ]
    assert {d.id for d in found} == {d.id for d in mine}
    assert found[2].address == "+4791234567" and found[0].child_ids == ["c1"]
    assert await store.recipient_deliveries(B, msg.id, "p1") == []
    assert await store.recipient_deliveries(A, msg.id, "p9") == []


async def test_escalation_override_round_trip(store: Store) -> None:
    assert await store.get_escalation_override(A) is None
    override = {"after_minutes": {"general": 60}, "channels": ["sms", "email"]}
    await store.set_escalation_override(A, override)
    assert await store.get_escalation_override(A) == override
    assert await store.get_escalation_override(B) is None
    await store.set_escalation_override(A, {"enabled": False})
    assert await store.get_escalation_override(A) == {"enabled": False}
    await store.set_escalation_override(A, None)
    assert await store.get_escalation_override(A) is None


async def test_tenant_scopes_default_to_staff(store: Store) -> None:
    assert await store.get_tenant_scopes(A) == ["staff"]
    await store.set_tenant_scopes(A, ["staff", "protected", "staff"])
    assert await store.get_tenant_scopes(A) == ["protected", "staff"]
    assert await store.get_tenant_scopes(B) == ["staff"]
    await store.set_tenant_scopes(A, ["staff"])
    assert await store.get_tenant_scopes(A) == ["staff"]


def person(pid: str, role: Role, protection: Protection) -> Person:
    return Person(
        id=pid,
        role=role,
        given_name=f"Person {pid}",
        birth_date=date(2015, 1, 1) if role is Role.child else None,
        protection=protection,
    )


async def test_protected_persons(store: Store) -> None:
    batch = DirectoryBatch(
        persons=[
            person("c1", Role.child, Protection.strictly_confidential),
            person("c2", Role.child, Protection.none),
            person("p1", Role.guardian, Protection.confidential),
            person("p2", Role.guardian, Protection.none),
        ]
    )
    await store.apply_directory(A, batch)
    everyone = ["c1", "c2", "p1", "p2", "nobody"]
    assert await store.protected_persons(A, everyone) == {"c1", "p1"}
    assert await store.protected_persons(A, ["c2", "p2"]) == set()
    assert await store.protected_persons(A, []) == set()
    assert await store.protected_persons(B, everyone) == set()
