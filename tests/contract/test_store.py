"""Behavioural contract of gateway.store.Store, run against every backend.

These tests speak only the Protocol: nothing here may know which backend runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from gateway.errors import Conflict, NotFound, ValidationFailed
from gateway.models import (
    Audience,
    Category,
    ChannelName,
    Delivery,
    DeliveryStatus,
    Device,
    DirectoryBatch,
    DirectoryDeletion,
    Group,
    GroupKind,
    Job,
    Message,
    Person,
    Preferences,
    Protection,
    Relation,
    RelationKey,
    Reply,
    Role,
    Tenant,
    Unit,
    UnitKind,
    derive_id,
)
from gateway.store import SendOutcome, Store

from .conftest import Backend

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
A = "tenant-a"
B = "tenant-b"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --------------------------------------------------------------------------- builders


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


@pytest.fixture
async def school(store: Store) -> Store:
    await store.apply_directory(A, school_batch())
    return store


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


# --------------------------------------------------------------------------- lifecycle, tenants


async def test_ping(store: Store) -> None:
    assert await store.ping() is True


async def test_tenants_round_trip_and_conflict(store: Store) -> None:
    tenant = Tenant(
        id=A, name="Asker", api_key_hash="hash-a", webhook_secret="whsec_x", created_at=T0
    )
    await store.create_tenant(tenant)
    assert await store.get_tenant(A) == tenant
    key = await store.api_key_by_hash("hash-a")
    assert key is not None and key.tenant_id == A
    assert await store.api_key_by_hash("hash-b") is None
    assert await store.get_tenant(B) is None
    with pytest.raises(Conflict):
        await store.create_tenant(tenant.model_copy(update={"api_key_hash": "other"}))
    await store.create_tenant(tenant.model_copy(update={"id": B, "api_key_hash": "hash-b"}))
    assert [t.id for t in await store.list_tenants()] == [A, B]


async def test_data_survives_close_and_reopen(backend: Backend) -> None:
    msg = message()
    d = delivery(msg, "p1")
    async with backend.open() as store:
        await store.apply_directory(A, school_batch())
        await store.set_relation_flag(A, "c1", "p1", "blocked", True, "court order", "staff-1", T0)
        await accepted(store, msg)
        await store.add_deliveries([d], [job(f"send:{d.id}")])
        assert await store.transition(d.id, DeliveryStatus.queued, at(1))
    async with backend.open() as store:
        assert await store.get_person(A, "c1") == school_batch().persons[0]
        assert await store.get_message(A, msg.id) == msg
        stored = await store.get_delivery(d.id)
        assert stored is not None and stored.status is DeliveryStatus.queued
        snapshot = await store.load_audience(A, Audience(children=["c1"]))
        flags = {(r.child_id, r.guardian_id): r.flags for r in snapshot.relations}
        assert flags[("c1", "p1")].blocked is True
        claimed = await store.claim_jobs(["send"], 10, at(2), 30)
        assert [j.id for j in claimed] == [f"send:{d.id}"]


# --------------------------------------------------------------------------- directory


async def test_apply_directory_round_trips_persons(store: Store) -> None:
    batch = school_batch()
    counts = await store.apply_directory(A, batch)
    assert counts["units"] == 2
    assert counts["groups"] == 3
    assert counts["persons"] == len(batch.persons)
    assert counts["relations"] == 6
    for person in batch.persons:
        assert await store.get_person(A, person.id) == person
    assert await store.get_person(A, "nobody") is None


async def test_rows_may_refer_to_stored_rows(school: Store) -> None:
    batch = DirectoryBatch(
        groups=[group("g7c", "u1")],
        persons=[child("c9", groups=("g7c", "g5a"), units=("u1",)), guardian("p9")],
        relations=[rel("c9", "p9"), rel("c1", "p9")],
    )
    await school.apply_directory(A, batch)
    snapshot = await school.load_audience(A, Audience(groups=["g7c"]))
    assert snapshot.audience_children == ["c9"]


@pytest.mark.parametrize(
    ("broken", "loc", "kind"),
    [
        (
            {"groups": [group("g1", "u1"), group("g2", "nope"), group("g3", "u1")]},
            ["groups", 1, "unit_id"],
            "unknown_reference",
        ),
        (
            {"persons": [guardian("p1"), child("c1", groups=("g1", "nope")), guardian("p2")]},
            ["persons", 1, "group_ids", 1],
            "unknown_reference",
        ),
        (
            {"persons": [guardian("p1"), child("c1", units=("nope",))]},
            ["persons", 1, "unit_ids", 0],
            "unknown_reference",
        ),
        (
            {"relations": [rel("c1", "p1"), rel("c1", "p2"), rel("c1", "p1"), rel("c1", "px")]},
            ["relations", 3, "guardian_id"],
            "unknown_reference",
        ),
        (
            {"relations": [rel("c1", "p1"), rel("p2", "p1")]},
            ["relations", 1, "child_id"],
            "wrong_role",
        ),
        (
            {"relations": [rel("c1", "c1")]},
            ["relations", 0, "guardian_id"],
            "wrong_role",
        ),
        (
            {"preferences": {"p1": Preferences(language="en"), "ghost": Preferences()}},
            ["preferences", "ghost"],
            "unknown_reference",
        ),
    ],
)
async def test_apply_directory_is_all_or_nothing(
    store: Store, broken: dict[str, Any], loc: list[Any], kind: str
) -> None:
    base: dict[str, Any] = {
        "units": [unit("u1")],
        "groups": [group("g1", "u1")],
        "persons": [child("c1", groups=("g1",)), guardian("p1"), guardian("p2")],
        "relations": [rel("c1", "p1")],
    }
    batch = DirectoryBatch(**(base | broken))
    with pytest.raises(ValidationFailed) as exc:
        await store.apply_directory(A, batch)
    errors = errors_of(exc)
    assert [e["loc"] for e in errors] == [loc]
    assert errors[0]["type"] == kind
    # no personal data: messages never repeat a name, an address or an id
    said = json.dumps([e["message"] for e in errors] + [exc.value.message])
    for secret in ("Child", "Guardian", "example.no", "ghost", "nope", "px"):
        assert secret not in said
    for row in batch.persons:
        assert await store.get_person(A, row.id) is None
    assert await store.missing_ids(A, Audience(units=["u1"], groups=["g1"])) == [
        ("groups", "g1"),
        ("units", "u1"),
    ]


async def test_upsert_replaces_memberships_and_fields(school: Store) -> None:
    moved = child("c1", groups=("g6b",), units=("u1",)).model_copy(
        update={"given_name": "Renamed", "protection": Protection.strictly_confidential}
    )
    await school.apply_directory(A, DirectoryBatch(persons=[moved]))
    assert await school.get_person(A, "c1") == moved
    in_5a = await school.load_audience(A, Audience(groups=["g5a"]))
    assert in_5a.audience_children == ["c3"]
    in_6b = await school.load_audience(A, Audience(groups=["g6b"]))
    assert in_6b.audience_children == ["c1", "c2"]


async def test_delete_directory_unknown_id_deletes_nothing(school: Store) -> None:
    deletion = DirectoryDeletion(
        persons=["c1", "ghost"],
        relations=[RelationKey(child_id="c2", guardian_id="p2")],
    )
    with pytest.raises(ValidationFailed) as exc:
        await school.delete_directory(A, deletion)
    assert [e["loc"] for e in errors_of(exc)] == [["persons", 1]]
    assert await school.get_person(A, "c1") is not None
    snapshot = await school.load_audience(A, Audience(children=["c2"]))
    assert ("c2", "p2") in {(r.child_id, r.guardian_id) for r in snapshot.relations}


async def test_delete_person_removes_relations_devices_preferences(school: Store) -> None:
    await school.set_preferences(A, "p1", Preferences(language="en"))
    await school.upsert_device(
        A, "p1", Device(id="d1", token="tok-1", platform="android", last_seen=T0)
    )
    counts = await school.delete_directory(A, DirectoryDeletion(persons=["p1"]))
    assert counts["persons"] == 1
    assert await school.get_person(A, "p1") is None
    assert await school.get_preferences(A, "p1") is None
    assert await school.list_devices(A, "p1") == []
    snapshot = await school.load_audience(A, Audience(groups=["g5a"]))
    assert {r.guardian_id for r in snapshot.relations} == {"p2"}
    assert "p1" not in snapshot.persons


async def test_delete_groups_units_and_relations(school: Store) -> None:
    # A unit that still has groups cannot go alone ...
    with pytest.raises(ValidationFailed) as exc:
        await school.delete_directory(A, DirectoryDeletion(units=["u2"]))
    assert errors_of(exc)[0]["loc"] == ["units", 0]
    # ... but together with its groups it can.
    counts = await school.delete_directory(
        A,
        DirectoryDeletion(
            units=["u2"],
            groups=["gk"],
            relations=[RelationKey(child_id="c2", guardian_id="p3")],
        ),
    )
    assert counts == {"units": 1, "groups": 1, "persons": 0, "relations": 1}
    assert await school.missing_ids(A, Audience(units=["u2"], groups=["gk"])) == [
        ("groups", "gk"),
        ("units", "u2"),
    ]
    person = await school.get_person(A, "c4")
    assert person is not None and person.group_ids == [] and person.unit_ids == []
    snapshot = await school.load_audience(A, Audience(children=["c2"]))
    assert {r.guardian_id for r in snapshot.relations} == {"p2"}


async def test_missing_ids_checks_existence_and_role(school: Store) -> None:
    audience = Audience(
        children=["c1", "p1", "ghost", "c1"],
        groups=["g5a", "gx"],
        units=["u1", "ux"],
        guardians=["p1", "c2"],
        staff=["s1", "p2"],
    )
    assert await school.missing_ids(A, audience) == [
        ("children", "p1"),
        ("children", "ghost"),
        ("groups", "gx"),
        ("units", "ux"),
        ("guardians", "c2"),
        ("staff", "p2"),
    ]


# --------------------------------------------------------------------------- manual flags


async def test_flags_exist_before_import_and_survive_reimport(store: Store) -> None:
    await store.apply_directory(A, DirectoryBatch(persons=[child("c1"), guardian("p1")]))
    flags = await store.set_relation_flag(
        A, "c1", "p1", "information_granted", True, "§ 47 request", "staff-1", at(5)
    )
    assert flags.information_granted is True
    assert flags.information_reason == "§ 47 request"
    assert flags.updated_by == "staff-1"
    assert flags.updated_at == at(5)
    # the relation arrives later, and is imported again and again
    for _ in range(2):
        await store.apply_directory(
            A,
            DirectoryBatch(
                persons=[child("c1"), guardian("p1")],
                relations=[rel("c1", "p1", responsibility=False)],
            ),
        )
    snapshot = await store.load_audience(A, Audience(children=["c1"]))
    (record,) = snapshot.relations
    assert record.parental_responsibility is False
    assert record.flags.information_granted is True
    assert record.flags.information_reason == "§ 47 request"


async def test_flags_survive_relation_deletion(school: Store) -> None:
    await school.set_relation_flag(A, "c2", "p3", "blocked", True, "court order", "s1", T0)
    key = RelationKey(child_id="c2", guardian_id="p3")
    await school.delete_directory(A, DirectoryDeletion(relations=[key]))
    snapshot = await school.load_audience(A, Audience(children=["c2"]))
    assert "p3" not in {r.guardian_id for r in snapshot.relations}
    await school.apply_directory(A, DirectoryBatch(relations=[rel("c2", "p3")]))
    snapshot = await school.load_audience(A, Audience(children=["c2"]))
    record = next(r for r in snapshot.relations if r.guardian_id == "p3")
    assert record.flags.blocked is True
    assert record.flags.blocked_reason == "court order"


async def test_revoking_keeps_the_reason_and_history(school: Store) -> None:
    await school.set_relation_flag(
        A, "c2", "p3", "information_granted", True, "asked in writing", "s1", at(1)
    )
    flags = await school.set_relation_flag(
        A, "c2", "p3", "information_granted", False, "revoked by court", "s2", at(2)
    )
    assert flags.information_granted is False
    assert flags.information_reason == "revoked by court"
    assert flags.updated_by == "s2"
    assert flags.blocked is False
    flags = await school.set_relation_flag(A, "c2", "p3", "blocked", True, "cps", "s3", at(3))
    assert flags.information_granted is False  # setting one flag leaves the other alone
    assert flags.blocked is True
    history = await school.flag_history(A, "c2", "p3")
    assert [(h.flag, h.value, h.reason, h.actor, h.at) for h in history] == [
        ("information_granted", True, "asked in writing", "s1", at(1)),
        ("information_granted", False, "revoked by court", "s2", at(2)),
        ("blocked", True, "cps", "s3", at(3)),
    ]
    assert await school.flag_history(B, "c2", "p3") == []


async def test_flag_on_unknown_person_is_not_found(school: Store) -> None:
    with pytest.raises(NotFound):
        await school.set_relation_flag(A, "c1", "ghost", "blocked", True, "why", "s1", T0)
    with pytest.raises(NotFound):
        await school.set_relation_flag(B, "c1", "p1", "blocked", True, "why", "s1", T0)


# --------------------------------------------------------------------------- preferences, devices


async def test_guardian_preferences_survive_import(school: Store) -> None:
    mine = Preferences(
        language="en",
        channels={Category.general: [ChannelName.push], Category.emergency: [ChannelName.sms]},
        quiet_start="21:00",
        quiet_end="07:00",
    )
    await school.set_preferences(A, "p1", mine)
    imported = {"p1": Preferences(language="nn"), "p2": Preferences(language="nn")}
    counts = await school.apply_directory(A, DirectoryBatch(preferences=imported))
    assert counts["preferences"] == 1
    assert await school.get_preferences(A, "p1") == mine
    assert await school.get_preferences(A, "p2") == Preferences(language="nn")
    # a later import replaces an imported row, never a guardian's
    await school.apply_directory(A, DirectoryBatch(preferences={"p2": Preferences(language="en")}))
    assert await school.get_preferences(A, "p2") == Preferences(language="en")
    # and the guardian may take over an imported row
    await school.set_preferences(A, "p2", mine)
    await school.apply_directory(A, DirectoryBatch(preferences={"p2": Preferences(language="nn")}))
    assert await school.get_preferences(A, "p2") == mine
    assert await school.get_preferences(B, "p2") is None


async def test_devices(school: Store) -> None:
    phone = Device(id="d1", token="tok-1", platform="android", app_version="1.2", last_seen=T0)
    tablet = Device(id="d2", fid="fid-2", platform="ios")
    await school.upsert_device(A, "p1", phone)
    await school.upsert_device(A, "p1", tablet)
    assert await school.list_devices(A, "p1") == [phone, tablet]
    newer = phone.model_copy(update={"token": "tok-1b", "last_seen": at(60)})
    await school.upsert_device(A, "p1", newer)
    assert await school.list_devices(A, "p1") == [newer, tablet]
    assert await school.list_devices(B, "p1") == []
    assert await school.remove_device(B, "p1", "d1") is False
    assert await school.remove_device(A, "p1", "d1") is True
    assert await school.remove_device(A, "p1", "d1") is False
    assert await school.list_devices(A, "p1") == [tablet]


async def test_a_token_belongs_to_one_device(school: Store) -> None:
    await school.upsert_device(A, "p1", Device(id="d1", token="shared", platform="android"))
    handed_on = Device(id="d9", token="shared", platform="android")
    await school.upsert_device(A, "p2", handed_on)
    assert await school.list_devices(A, "p1") == []
    assert await school.list_devices(A, "p2") == [handed_on]


# --------------------------------------------------------------------------- load_audience


def pairs(snapshot: Any) -> set[tuple[str, str]]:
    return {(r.child_id, r.guardian_id) for r in snapshot.relations}


async def test_audience_from_a_group_with_siblings(school: Store) -> None:
    snapshot = await school.load_audience(A, Audience(groups=["g5a"]))
    assert snapshot.audience_children == ["c1", "c3"]
    assert pairs(snapshot) == {("c1", "p1"), ("c3", "p1"), ("c1", "p2")}
    assert set(snapshot.persons) == {"c1", "c3", "p1", "p2"}
    assert set(snapshot.groups) == {"g5a"}
    assert set(snapshot.units) == {"u1"}
    assert snapshot.persons["p1"] == school_batch().persons[5]


async def test_guardian_of_two_children_in_two_classes(school: Store) -> None:
    snapshot = await school.load_audience(A, Audience(groups=["g5a", "g6b"]))
    assert snapshot.audience_children == ["c1", "c2", "c3"]
    assert {p for c, p in pairs(snapshot) if c in ("c1", "c2")} >= {"p2"}
    assert [r.child_id for r in snapshot.relations if r.guardian_id == "p2"] == ["c1", "c2"]
    assert set(snapshot.persons) == {"c1", "c2", "c3", "p1", "p2", "p3"}
    assert set(snapshot.groups) == {"g5a", "g6b"}


async def test_audience_from_units_includes_children_without_a_class(school: Store) -> None:
    snapshot = await school.load_audience(A, Audience(units=["u1"]))
    assert snapshot.audience_children == ["c1", "c2", "c3", "c5"]
    assert "s1" not in snapshot.persons  # staff are members of the unit, not its children
    kindergarten = await school.load_audience(A, Audience(units=["u2"]))
    assert kindergarten.audience_children == ["c4"]
    assert set(kindergarten.units) == {"u2"}


async def test_unit_reaches_children_through_its_groups(store: Store) -> None:
    # a child placed in a class but not listed in the unit itself
    await store.apply_directory(
        A,
        DirectoryBatch(
            units=[unit("u1")], groups=[group("g1", "u1")], persons=[child("c1", groups=("g1",))]
        ),
    )
    snapshot = await store.load_audience(A, Audience(units=["u1"]))
    assert snapshot.audience_children == ["c1"]


async def test_audience_keeps_unfit_relations_for_the_resolver(school: Store) -> None:
    await school.set_relation_flag(A, "c2", "p3", "blocked", True, "court order", "s1", T0)
    snapshot = await school.load_audience(A, Audience(children=["c2", "ghost"]))
    assert snapshot.audience_children == ["c2"]
    records = {r.guardian_id: r for r in snapshot.relations}
    assert set(records) == {"p2", "p3"}
    assert records["p3"].parental_responsibility is False
    assert records["p3"].flags.blocked is True
    assert records["p2"].flags.blocked is False


async def test_listed_guardians_and_staff(school: Store) -> None:
    snapshot = await school.load_audience(A, Audience(guardians=["p2"], staff=["s1"]))
    assert snapshot.audience_children == []
    assert pairs(snapshot) == {("c1", "p2"), ("c2", "p2")}
    assert set(snapshot.persons) == {"p2", "c1", "c2", "s1"}
    assert "u1" in snapshot.units


async def test_audience_carries_preferences_devices_and_failing(school: Store) -> None:
    await school.set_preferences(A, "p1", Preferences(language="en"))
    await school.apply_directory(
        A, DirectoryBatch(preferences={"p1": Preferences(language="nn"), "p2": Preferences()})
    )
    phone = Device(id="d1", token="tok", platform="ios")
    await school.upsert_device(A, "p2", phone)
    await school.upsert_device(A, "p4", Device(id="d4", token="tok4", platform="ios"))
    await school.mark_contact_failing(A, "p1", "phone", "+4791234567", "21614", T0)
    snapshot = await school.load_audience(A, Audience(groups=["g5a"]))
    assert snapshot.preferences == {"p1": Preferences(language="en"), "p2": Preferences()}
    assert snapshot.devices == {"p2": [phone]}
    assert snapshot.failing == {"p1": ["phone"]}


async def test_failing_contact_is_cleared_by_a_new_address(school: Store) -> None:
    await school.mark_contact_failing(A, "p2", "email", "p2@example.no", "550", T0)
    snapshot = await school.load_audience(A, Audience(children=["c1"]))
    assert snapshot.failing == {"p2": ["email"]}
    await school.apply_directory(A, DirectoryBatch(persons=[guardian("p2", email="new@ex.no")]))
    snapshot = await school.load_audience(A, Audience(children=["c1"]))
    assert snapshot.failing == {}
    # the same address coming back is failing again until told otherwise
    await school.apply_directory(A, DirectoryBatch(persons=[guardian("p2")]))
    snapshot = await school.load_audience(A, Audience(children=["c1"]))
    assert snapshot.failing == {"p2": ["email"]}


async def test_load_audience_of_a_large_unit_is_complete(store: Store) -> None:
    # Its speed (no query per row) is measured by `make bench`, not asserted here.
    classes = 40
    batch = DirectoryBatch(
        units=[unit("u1")],
        groups=[group(f"g{i}", "u1") for i in range(classes)],
        persons=[child(f"c{i}", groups=(f"g{i % classes}",)) for i in range(2_000)]
        + [guardian(f"p{i}") for i in range(3_400)],
        relations=[rel(f"c{i}", f"p{i}") for i in range(2_000)]
        + [rel(f"c{i}", f"p{2_000 + i % 1_400}") for i in range(2_000)],
    )
    await store.apply_directory(A, batch)
    snapshot = await store.load_audience(A, Audience(units=["u1"]))
    assert len(snapshot.audience_children) == 2_000
    assert len(snapshot.relations) == 4_000
    assert len(snapshot.persons) == 5_400


# --------------------------------------------------------------------------- messages, deliveries


async def test_accept_message_is_idempotent(store: Store) -> None:
    msg = message()
    assert await accepted(store, msg) == msg
    again = msg.model_copy(update={"body_hash": "other", "subject": "Changed"})
    stored = await store.accept_message(again, plan_job(again))
    assert stored == msg  # the caller compares body_hash and answers 409
    jobs = await store.claim_jobs(["plan"], 10, T0, 30)
    assert [j.id for j in jobs] == [f"plan:{msg.id}"]
    assert await store.get_message(B, msg.id) is None
    await store.mark_planned(A, msg.id, at(3))
    planned = await store.get_message(A, msg.id)
    assert planned is not None and planned.planned_at == at(3)


async def test_add_deliveries_is_idempotent(store: Store) -> None:
    msg = await accepted(store, message())
    first = delivery(msg, "p1")
    second = delivery(msg, "p2", ChannelName.email.value, address="p2@example.no")
    jobs = [job(f"send:{first.id}"), job(f"send:{second.id}")]
    assert await store.add_deliveries([first, second, first], jobs) == 2
    changed = first.model_copy(update={"language": "en", "status": DeliveryStatus.queued})
    assert await store.add_deliveries([changed], [job(f"send:{first.id}", due=at(99))]) == 0
    assert await store.list_deliveries(A, msg.id) == [first, second]
    assert await store.get_delivery(first.id) == first
    assert await store.get_deliveries([first.id, "nope", second.id]) == {
        first.id: first,
        second.id: second,
    }
    history = await store.history([first.id, second.id, "unknown"])
    assert history["unknown"] == []
    assert [(h.status, h.at) for h in history[first.id]] == [(DeliveryStatus.planned, T0)]
    claimed = await store.claim_jobs(["send"], 10, T0, 30)
    assert sorted(j.id for j in claimed) == sorted(j.id for j in jobs)
    assert await store.list_deliveries(B, msg.id) == []


async def test_suppression_records_keep_their_reason(store: Store) -> None:
    msg = await accepted(store, message())
    record = delivery(msg, "p3", "none", status=DeliveryStatus.suppressed, reason="no_rights")
    assert await store.add_deliveries([record], []) == 1
    stored = await store.get_delivery(record.id)
    assert stored is not None and stored.reason == "no_rights"
    assert stored.status is DeliveryStatus.suppressed
    assert await store.count_by_status(A, msg.id) == {"suppressed": 1}


async def test_transitions_are_forward_only(store: Store) -> None:
    msg = await accepted(store, message())
    d = delivery(msg, "p1", ChannelName.sms.value, address="+4791234567")
    await store.add_deliveries([d], [])
    assert await store.transition(d.id, DeliveryStatus.queued, at(1))
    assert await store.transition(d.id, DeliveryStatus.sending, at(2))
    # the provider's "delivered" callback overtakes our own "sent"
    assert await store.transition(d.id, DeliveryStatus.delivered, at(3), detail="cb")
    assert not await store.transition(
        d.id, DeliveryStatus.sent, at(4), provider_id="SM1", segments=2, reason="late"
    )
    assert not await store.transition(d.id, DeliveryStatus.failed, at(5), reason="30003")
    assert not await store.transition(d.id, DeliveryStatus.delivered, at(6))
    stored = await store.get_delivery(d.id)
    assert stored is not None
    assert stored.status is DeliveryStatus.delivered
    assert stored.provider_id == "SM1"  # stored though the status did not move
    assert stored.segments == 2
    assert stored.reason is None
    assert stored.updated_at == at(3)
    history = (await store.history([d.id]))[d.id]
    assert [(h.status, h.at, h.detail) for h in history] == [
        (DeliveryStatus.planned, T0, None),
        (DeliveryStatus.queued, at(1), None),
        (DeliveryStatus.sending, at(2), None),
        (DeliveryStatus.delivered, at(3), "cb"),
    ]
    assert await store.delivery_by_provider_id("sms", "SM1") == stored
    assert await store.delivery_by_provider_id("email", "SM1") is None
    assert not await store.transition("unknown", DeliveryStatus.sent, at(7))


async def test_terminal_failures_are_final(store: Store) -> None:
    msg = await accepted(store, message())
    d = delivery(msg, "p1", ChannelName.email.value, address="p1@example.no")
    await store.add_deliveries([d], [])
    assert await store.transition(d.id, DeliveryStatus.sent, at(1), provider_id="m1")
    assert await store.transition(d.id, DeliveryStatus.bounced, at(2), reason="550")
    assert not await store.transition(d.id, DeliveryStatus.delivered, at(3))
    assert not await store.transition(d.id, DeliveryStatus.read, at(4))
    stored = await store.get_delivery(d.id)
    assert stored is not None
    assert (stored.status, stored.reason) == (DeliveryStatus.bounced, "550")


@pytest.mark.parametrize("yields", [0, 1, 2, 4, 8, 16])
async def test_a_cancelled_write_is_all_or_nothing(store: Store, yields: int) -> None:
    msg = await accepted(store, message())
    ds = [delivery(msg, f"p{i}") for i in range(2_000)]
    task = asyncio.create_task(store.add_deliveries(ds, [job(f"send:{d.id}") for d in ds]))
    for _ in range(yields):
        await asyncio.sleep(0)  # let the write get this far, then cancel it
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    stored = sum((await store.count_by_status(A, msg.id)).values())
    assert stored in (0, 2_000)
    assert await store.add_deliveries(ds, []) == 2_000 - stored
    assert await store.ping()


async def test_stats(store: Store) -> None:
    m1 = await accepted(store, message(A, "e1"))
    m2 = await accepted(store, message(B, "e2"))
    d1 = delivery(m1, "p1")
    d2 = delivery(m1, "p2")
    d3 = delivery(m2, "p1", ChannelName.sms.value, address="+4791234567")
    await store.add_deliveries([d1, d2, d3], [])
    await store.transition(d1.id, DeliveryStatus.sent, at(1))
    assert await store.count_by_status(A, m1.id) == {"sent": 1, "planned": 1}
    assert await store.count_by_status(B, m1.id) == {}
    assert await store.delivery_stats() == {
        ("inapp", "sent"): 1,
        ("inapp", "planned"): 1,
        ("sms", "planned"): 1,
    }


async def test_latest_delivery_to_an_address(store: Store) -> None:
    number = "+4791234567"
    m1 = await accepted(store, message(A, "e1"))
    m2 = await accepted(store, message(A, "e2", created=at(60)))
    m3 = await accepted(store, message(B, "e3", created=at(120)))
    await store.add_deliveries(
        [
            delivery(m1, "p1", "sms", address=number),
            delivery(m2, "p1", "sms", address=number),
            delivery(m2, "p1", "email", address="p1@example.no"),
        ],
        [],
    )
    latest = await store.latest_delivery_to(A, "sms", number)
    assert latest is not None and latest.message_id == m2.id
    assert await store.latest_delivery_to(A, "sms", "+4700000000") is None
    assert await store.latest_delivery_to(B, "sms", number) is None
    assert await store.tenant_for_address("sms", number) == A
    await store.add_deliveries([delivery(m3, "q1", "sms", address=number)], [])
    assert await store.tenant_for_address("sms", number) == B
    latest_b = await store.latest_delivery_to(B, "sms", number)
    assert latest_b is not None and latest_b.message_id == m3.id
    assert await store.tenant_for_address("push", number) is None


async def test_replies_are_idempotent(store: Store) -> None:
    msg = await accepted(store, message())
    reply = Reply(
        id="r1",
        tenant_id=A,
        channel="sms",
        message_id=msg.id,
        person_id="p1",
        body="Ja, vi kommer",
        provider_id="SM9",
        received_at=at(30),
    )
    assert await store.add_reply(reply) is True
    assert await store.add_reply(reply.model_copy(update={"body": "changed"})) is False
    later = reply.model_copy(update={"id": "r2", "received_at": at(40)})
    assert await store.add_reply(later) is True
    assert await store.list_replies(A, msg.id) == [reply, later]
    assert await store.list_replies(B, msg.id) == []


# --------------------------------------------------------------------------- inbox


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


# --------------------------------------------------------------------------- work queue


async def test_claim_leases_a_job_until_the_lease_ends(store: Store) -> None:
    await store.add_deliveries([], [job("send:1", due=at(0)), job("send:2", due=at(10))])
    (first,) = await store.claim_jobs(["send"], 10, at(5), lease_seconds=30)
    assert (first.id, first.attempts, first.due_at) == ("send:1", 1, at(0))
    assert [j.id for j in await store.claim_jobs(["send"], 10, at(20), 30)] == ["send:2"]
    assert await store.claim_jobs(["send"], 10, at(34), 30) == []
    (again,) = await store.claim_jobs(["send"], 10, at(35), 30)
    assert (again.id, again.attempts) == ("send:1", 2)


async def test_claim_takes_oldest_due_first_and_only_given_kinds(store: Store) -> None:
    jobs = [job(f"send:{i}", due=at(10 - i)) for i in range(5)] + [job("plan:x", kind="plan")]
    await store.add_deliveries([], jobs)
    claimed = await store.claim_jobs(["send"], 2, at(100), 30)
    assert [j.id for j in claimed] == ["send:4", "send:3"]
    both = await store.claim_jobs(["send", "plan"], 10, at(100), 30)
    assert {j.id for j in both} == {"send:0", "send:1", "send:2", "plan:x"}
    assert await store.claim_jobs([], 10, at(100), 30) == []
    assert await store.claim_jobs(["send"], 0, at(1000), 30) == []


async def test_concurrent_claimers_never_share_a_job(store: Store) -> None:
    await store.add_deliveries([], [job(f"send:{i:03}") for i in range(60)])
    batches = await asyncio.gather(*(store.claim_jobs(["send"], 7, T0, 30) for _ in range(12)))
    ids = [j.id for batch in batches for j in batch]
    assert len(ids) == len(set(ids)) == 60


async def test_two_store_instances_never_share_a_job(backend: Backend) -> None:
    async with backend.open() as one, backend.open() as two:
        await one.add_deliveries([], [job(f"send:{i:03}") for i in range(40)])
        batches = await asyncio.gather(
            *(s.claim_jobs(["send"], 3, T0, 30) for s in (one, two) * 10)
        )
    ids = [j.id for batch in batches for j in batch]
    assert len(ids) == len(set(ids)) == 40


async def test_retry_job_makes_it_due_later(store: Store) -> None:
    await store.add_deliveries([], [job("send:1")])
    (claimed,) = await store.claim_jobs(["send"], 1, T0, 300)
    await store.retry_job(claimed.id, at(60), "timeout")
    assert await store.claim_jobs(["send"], 1, at(59), 300) == []
    (again,) = await store.claim_jobs(["send"], 1, at(60), 300)
    assert (again.attempts, again.last_error, again.due_at) == (2, "timeout", at(60))
    # a retry moves a job earlier, too (Retry-After shorter than the lease)
    await store.retry_job(again.id, at(61), "429")
    (third,) = await store.claim_jobs(["send"], 1, at(61), 300)
    assert third.attempts == 3


async def test_finish_job_removes_it(store: Store) -> None:
    await store.add_deliveries([], [job("plan:1", kind="plan")])
    (claimed,) = await store.claim_jobs(["plan"], 1, T0, 1)
    await store.finish_job(claimed.id)
    assert await store.claim_jobs(["plan"], 1, at(3600), 1) == []
    await store.finish_job("plan:unknown")  # finishing twice is harmless


async def test_finish_send(store: Store) -> None:
    msg = await accepted(store, message())
    d = delivery(msg, "p1", "sms", address="+4791234567")
    await store.add_deliveries([d], [job(f"send:{d.id}")])
    (claimed,) = await store.claim_jobs(["send"], 1, T0, 30)
    assert await store.finish_send(
        claimed.id, d.id, DeliveryStatus.sent, at(1), provider_id="SM1", segments=1
    )
    stored = await store.get_delivery(d.id)
    assert stored is not None
    assert (stored.status, stored.provider_id, stored.segments) == (DeliveryStatus.sent, "SM1", 1)
    assert await store.claim_jobs(["send"], 1, at(3600), 30) == []
    # a refused move still ends the job
    await store.add_deliveries([], [job("send:again")])
    assert not await store.finish_send("send:again", d.id, DeliveryStatus.queued, at(2))
    assert await store.claim_jobs(["send"], 1, at(3600), 30) == []


async def test_finish_sends_in_one_batch(store: Store) -> None:
    msg = await accepted(store, message())
    ds = [delivery(msg, f"p{i}") for i in range(5)]
    await store.add_deliveries(ds, [job(f"send:{d.id}") for d in ds])
    await store.transition(ds[4].id, DeliveryStatus.failed, at(1), reason="dead")
    claimed = await store.claim_jobs(["send"], 10, at(2), 30)
    assert len(claimed) == 5
    outcomes = [
        SendOutcome(f"send:{ds[0].id}", ds[0].id, DeliveryStatus.sent, at(3), provider_id="x0"),
        SendOutcome(f"send:{ds[1].id}", ds[1].id, DeliveryStatus.sent, at(3)),
        SendOutcome(f"send:{ds[2].id}", ds[2].id, DeliveryStatus.failed, at(3), reason="400"),
        SendOutcome(f"send:{ds[3].id}", ds[3].id, DeliveryStatus.delivered, at(3)),
        SendOutcome(f"send:{ds[3].id}", ds[3].id, DeliveryStatus.sent, at(4)),  # behind
        SendOutcome(f"send:{ds[4].id}", ds[4].id, DeliveryStatus.sent, at(3)),  # final already
    ]
    assert await store.finish_sends(outcomes) == 4
    stored = await store.get_deliveries([d.id for d in ds])
    assert [stored[d.id].status for d in ds] == [
        DeliveryStatus.sent,
        DeliveryStatus.sent,
        DeliveryStatus.failed,
        DeliveryStatus.delivered,
        DeliveryStatus.failed,
    ]
    assert stored[ds[0].id].provider_id == "x0"
    assert stored[ds[2].id].reason == "400"
    assert await store.claim_jobs(["send"], 10, at(3600), 30) == []
    assert await store.finish_sends([]) == 0


async def test_queue_stats(store: Store) -> None:
    await store.add_deliveries(
        [],
        [
            job("send:1", due=at(0)),
            job("send:2", due=at(50)),
            job("send:3", due=at(500)),
            job("plan:1", kind="plan", due=at(90)),
        ],
    )
    await store.claim_jobs(["send"], 1, at(60), 600)  # send:1 is leased
    stats = await store.queue_stats(at(100))
    assert stats["send"] == (2, 50.0)
    assert stats["plan"] == (1, 10.0)
    quiet = await store.queue_stats(at(30))
    assert quiet["send"] == (2, 0.0)  # send:2 and send:3 wait, none of them is due yet


# --------------------------------------------------------------------------- tenant isolation


async def test_tenant_b_reads_nothing_of_tenant_a(school: Store) -> None:
    msg = await accepted(school, message())
    await school.add_deliveries([delivery(msg, "p1", "sms", address="+4791234567")], [])
    await school.add_deliveries([delivery(msg, "p1")], [])
    await school.set_preferences(A, "p1", Preferences(language="en"))
    await school.upsert_device(A, "p1", Device(id="d1", token="t", platform="web"))
    everyone = Audience(
        children=["c1"], groups=["g5a"], units=["u1"], guardians=["p1"], staff=["s1"]
    )
    snapshot = await school.load_audience(B, everyone)
    assert snapshot.audience_children == []
    assert snapshot.persons == {} and snapshot.relations == []
    assert snapshot.units == {} and snapshot.groups == {}
    assert len(await school.missing_ids(B, everyone)) == 5
    assert await school.get_person(B, "c1") is None
    assert await school.get_message(B, msg.id) is None
    assert await school.list_deliveries(B, msg.id) == []
    assert await school.count_by_status(B, msg.id) == {}
    assert await school.list_inbox(B, "p1", now=at(60)) == []
    assert await school.inbox_item(B, "p1", msg.id, now=at(60)) is None
    assert await school.get_preferences(B, "p1") is None
    assert await school.list_devices(B, "p1") == []
    assert await school.latest_delivery_to(B, "sms", "+4791234567") is None
    # and B's own directory with the same ids stays apart from A's
    await school.apply_directory(B, DirectoryBatch(persons=[guardian("p1", email="b@b.no")]))
    a_p1 = await school.get_person(A, "p1")
    b_p1 = await school.get_person(B, "p1")
    assert a_p1 is not None and b_p1 is not None
    assert (a_p1.email, b_p1.email) == ("p1@example.no", "b@b.no")
