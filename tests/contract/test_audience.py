"""Store contract: the directory's read port (AudienceReader): missing ids and load_audience.

These tests speak only the ports: nothing here may know which backend runs.
"""

from __future__ import annotations

from typing import Any

from gateway.models import (
    Audience,
    Device,
    DirectoryBatch,
    Preferences,
)
from gateway.store import Store

from .builders import T0, A, child, group, guardian, rel, school_batch, unit


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
