"""Store contract: a directory batch is checked whole and written in chunks under the
tenant's directory lock (gateway/store/directory_apply.py).

A batch written in chunks of a few rows ends with exactly the directory the same batch
written a whole kind per transaction gives; a batch with one bad row writes nothing;
a deletion that arrives at a chunk boundary waits for the batch, in this process and
from another store on the same backend (another process's view).
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import pytest

from gateway.errors import ValidationFailed
from gateway.models import (
    Audience,
    DirectoryBatch,
    DirectoryDeletion,
    Person,
    Preferences,
    Protection,
    Role,
)
from gateway.store import Store

from .builders import A, B, at, child, group, guardian, rel, staff, unit
from .conftest import Backend

CHILDREN = 120
WHOLE = 1_000_000  # rows per chunk: each kind in one transaction, as before chunks


def families(*, moved: bool = False) -> DirectoryBatch:
    """Two units, twelve classes, 120 children with two guardians each (some with a
    protected address), staff and preferences. ``moved``: the next school year —
    classes changed, more protection, other relations and preferences."""
    shift = 1 if moved else 0
    persons: list[Person] = []
    relations = []
    for i in range(CHILDREN):
        g = f"g{(i + shift) % 12}"
        persons.append(child(f"c{i}", groups=(g,), units=(f"u{(i + shift) % 2}",)))
        persons.append(guardian(f"p{i}", phone=f"+479{i:07d}"))
        relations.append(rel(f"c{i}", f"p{i}"))
        relations.append(rel(f"c{i}", f"p{(i + 1 + shift) % CHILDREN}", responsibility=i % 3 > 0))
    for i in range(0, CHILDREN, 7 - 2 * shift):
        level = Protection.strictly_confidential if i % 2 else Protection.confidential
        persons[2 * i] = persons[2 * i].model_copy(update={"protection": level})
    persons += [staff(f"s{i}", units=(f"u{i % 2}",)) for i in range(6)]
    return DirectoryBatch(
        units=[unit("u0"), unit("u1")],
        groups=[group(f"g{i}", f"u{i % 2}") for i in range(12)],
        persons=persons,
        relations=relations,
        preferences={
            f"p{i}": Preferences(language="nn" if moved else "en")
            for i in range(0, CHILDREN, 4 + shift)
        },
    )


async def directory(store: Store, tenant: str) -> dict[str, Any]:
    """Everything stored of the tenant's directory, as comparable data."""
    snapshot = await store.load_audience(
        tenant,
        Audience(
            units=["u0", "u1"],
            guardians=[f"p{i}" for i in range(CHILDREN)],
            staff=[f"s{i}" for i in range(6)],
        ),
    )
    histories = {
        p: [(h.level, h.previous, h.at) for h in await store.protection_history(tenant, p)]
        for p in snapshot.persons
    }
    return {"snapshot": snapshot.model_dump(), "protection_history": histories}


async def test_a_batch_in_chunks_ends_as_one_written_whole(store: Store) -> None:
    for tenant, rows in ((A, 7), (B, WHOLE)):
        first = await store.apply_directory(tenant, families(), at(1), chunk_rows=rows)
        second = await store.apply_directory(tenant, families(moved=True), at(2), chunk_rows=rows)
        assert first["persons"] == second["persons"] == 2 * CHILDREN + 6
    chunked, whole = await directory(store, A), await directory(store, B)
    assert chunked == whole
    snapshot = chunked["snapshot"]
    assert len(snapshot["audience_children"]) == CHILDREN
    assert len(snapshot["relations"]) == 3 * CHILDREN  # upserts: the first batch's stay
    assert snapshot["persons"]["c1"]["group_ids"] == ["g2"]  # moved on by the second batch
    assert snapshot["preferences"]["p0"]["language"] == "nn"
    raised = [p for p, history in chunked["protection_history"].items() if history]
    assert raised and all(snapshot["persons"][p]["protection"] != "none" for p in raised)


async def test_a_bad_last_row_writes_nothing_of_a_chunked_batch(store: Store) -> None:
    batch = families()
    batch.relations.append(rel("c0", "nobody"))
    with pytest.raises(ValidationFailed) as caught:
        await store.apply_directory(A, batch, at(1), chunk_rows=5)
    assert [e["loc"] for e in caught.value.errors] == [["relations", 2 * CHILDREN, "guardian_id"]]
    assert await store.get_person(A, "c0") is None
    snapshot = await store.load_audience(A, Audience(units=["u0", "u1"]))
    assert snapshot.units == {} and snapshot.audience_children == []


async def _delete_at_a_chunk_boundary(writer: Store, deleter: Store) -> dict[str, int]:
    """Apply a batch with ``writer``; at its first chunk boundary ``deleter`` starts
    deleting the batch's last person. The deletion's counts."""
    deletion: list[asyncio.Task[dict[str, int]]] = []

    async def boundary() -> None:
        if not deletion:
            deletion.append(
                asyncio.create_task(deleter.delete_directory(A, DirectoryDeletion(persons=["s5"])))
            )
        await asyncio.sleep(0.02)  # the deletion runs as far as it may
        assert not deletion[0].done()  # neither deleted nor refused in the middle

    await writer.apply_directory(A, families(), at(1), chunk_rows=50, on_chunk=boundary)
    return await deletion[0]


async def test_a_deletion_waits_for_the_batch_being_written(store: Store) -> None:
    # Without the lock the deletion would find no s5 (written last) and fail.
    assert (await _delete_at_a_chunk_boundary(store, store))["persons"] == 1
    assert await store.get_person(A, "s5") is None


async def test_a_deletion_from_another_process_waits_too(backend: Backend) -> None:
    async with backend.open() as writer, backend.open() as other:
        assert (await _delete_at_a_chunk_boundary(writer, other))["persons"] == 1
        assert await writer.get_person(A, "s5") is None


async def test_a_stored_person_keeps_their_place_in_a_relation_across_chunks(
    store: Store,
) -> None:
    # A relation in a later chunk than its persons, and one to a person stored before.
    await store.apply_directory(A, DirectoryBatch(persons=[guardian("old")]))
    batch = DirectoryBatch(
        persons=[child("k1"), child("k2"), Person(id="k3", role=Role.child,
                 given_name="K", birth_date=date(2015, 1, 1))],
        relations=[rel("k1", "old"), rel("k2", "old"), rel("k3", "old")],
    )  # fmt: skip
    await store.apply_directory(A, batch, chunk_rows=1)
    snapshot = await store.load_audience(A, Audience(guardians=["old"]))
    assert [(r.child_id, r.guardian_id) for r in snapshot.relations] == [
        ("k1", "old"),
        ("k2", "old"),
        ("k3", "old"),
    ]


async def test_a_read_from_another_process_is_answered_while_a_batch_is_written(
    backend: Backend,
) -> None:
    # Every chunk changes what a reader checks its snapshot against. Unless the batch
    # waits for reads under way in any process between chunks, a reader in another
    # process starts over at each chunk and gives up (a 503 for an emergency posted
    # during an import).
    async with backend.open() as writer, backend.open() as reader:
        await writer.apply_directory(A, families(), at(1))
        reads: list[asyncio.Task[Any]] = []

        async def boundary() -> None:
            if not reads:
                audience = Audience(units=["u0", "u1"])
                reads.append(asyncio.create_task(reader.load_audience(A, audience)))

        many = DirectoryBatch(persons=[guardian(f"g{i}") for i in range(600)])
        await writer.apply_directory(A, many, at(2), chunk_rows=1, on_chunk=boundary)
        snapshot = await reads[0]
        assert len(snapshot.audience_children) == CHILDREN


async def test_a_person_listed_twice_is_refused_and_nothing_is_written(store: Store) -> None:
    # SQLite added a repeat's memberships up, Redis kept the last row's, and written in
    # chunks a later row replaced an earlier one's: ambiguous input, refused on every
    # backend.
    places = DirectoryBatch(units=[unit("u0")], groups=[group("g1", "u0"), group("g2", "u0")])
    await store.apply_directory(A, places)
    batch = DirectoryBatch(
        persons=[child("k", groups=("g1",)), child("x1"), child("k", groups=("g2",))]
    )
    with pytest.raises(ValidationFailed) as caught:
        await store.apply_directory(A, batch, chunk_rows=2)
    assert [e["loc"] for e in caught.value.errors] == [["persons", 2, "id"]]
    assert await store.get_person(A, "k") is None
