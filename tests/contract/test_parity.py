"""Contract: the places where the backends used to differ behave the same everywhere.

* ``load_audience`` reads one consistent directory state or raises StoreError, also
  while other processes keep writing the directory (Redis used to give up after ten
  tries and return a possibly torn snapshot).
* ``acquire_rate`` is shared by every store instance on the same data, as the Protocol
  promises (SQLite used to keep it in process memory).
* Every call maps the backend's own failures into the error tree (SQLite used to map
  only what failed inside a read or write block, so a value SQLite cannot hold escaped
  as OverflowError).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.errors import StoreError
from gateway.models import Audience, DirectoryBatch, DirectorySnapshot
from gateway.store import Store

from .builders import child, group, guardian, rel, unit
from .conftest import Backend

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
A = "tenant-a"


def _consistent(snapshot: DirectorySnapshot) -> bool:
    """c1 is in the audience (class g1) exactly when the record read with it says g1,
    and then it comes with both its guardians."""
    person = snapshot.persons.get("c1")
    if person is None:
        return "c1" not in snapshot.audience_children
    in_g1 = "g1" in person.group_ids
    if in_g1 != ("c1" in snapshot.audience_children):
        return False
    if not in_g1:
        return True
    guardians = {r.guardian_id for r in snapshot.relations if r.child_id == "c1"}
    return guardians == {"p1", "p2"}


async def test_load_audience_is_consistent_or_fails_under_writes(backend: Backend) -> None:
    base = DirectoryBatch(
        units=[unit("u1")],
        groups=[group("g1", "u1"), group("g2", "u1")],
        persons=[child("c1", groups=("g1",), units=("u1",)), guardian("p1"), guardian("p2")],
        relations=[rel("c1", "p1"), rel("c1", "p2")],
    )
    async with backend.open() as reader, backend.open() as writer:
        await writer.apply_directory(A, base)
        stop = asyncio.Event()

        async def keep_moving() -> None:
            # c1 moves between g1 and g2, one committed write after the other
            i = 0
            while not stop.is_set():
                i += 1
                target = "g1" if i % 2 else "g2"
                moved = child("c1", groups=(target,), units=("u1",))
                await writer.apply_directory(A, DirectoryBatch(persons=[moved]))
                await asyncio.sleep(0)

        task = asyncio.create_task(keep_moving())
        try:
            torn: list[DirectorySnapshot] = []
            for _ in range(30):
                try:
                    snapshot = await reader.load_audience(A, Audience(groups=["g1"]))
                except StoreError:
                    continue  # contended: refusing is allowed, a torn answer is not
                if not _consistent(snapshot):
                    torn.append(snapshot)
            assert not torn, f"{len(torn)} torn snapshots"
        finally:
            stop.set()
            await task
        # quiet again: the read succeeds
        snapshot = await reader.load_audience(A, Audience(groups=["g1"]))
        assert _consistent(snapshot)


async def test_rate_limit_is_shared_between_instances(backend: Backend) -> None:
    async with backend.open() as one, backend.open() as two:
        assert await one.acquire_rate("sms:sender", 1.0, 1, T0) == 0.0
        # the other instance sees the slot taken
        assert await two.acquire_rate("sms:sender", 1.0, 1, T0) == pytest.approx(1.0)
        assert await one.acquire_rate("sms:sender", 1.0, 1, T0) == pytest.approx(2.0)
    async with backend.open() as reopened:  # and it outlives the instances
        assert await reopened.acquire_rate("sms:sender", 1.0, 1, T0) == pytest.approx(3.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.list_messages(A, limit=2**63),
        lambda s: s.list_inbox(A, "p1", limit=2**63),
        lambda s: s.claim_jobs(["send"], 2**63, T0, 30.0),
        lambda s: s.attachments.expired(T0, T0, 2**63),
    ],
    ids=["list_messages", "list_inbox", "claim_jobs", "attachments"],
)
async def test_a_value_the_backend_cannot_hold_is_a_store_error(store: Store, call: Any) -> None:
    with pytest.raises(StoreError):
        await call(store)
