"""Store contract: the directory's writes and manual flags (port DirectoryStore).

These tests speak only the ports: nothing here may know which backend runs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import NotFound, ValidationFailed
from gateway.models import (
    Audience,
    Device,
    DirectoryBatch,
    DirectoryDeletion,
    Preferences,
    Protection,
    RelationKey,
)
from gateway.store import Store

from .builders import T0, A, B, at, child, errors_of, group, guardian, rel, school_batch, unit


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
