"""Contract of the absence part of the Store: claiming marks (de-duplication and replays),
cancelling, explanations, finding records by day, staff lookups and the settings
override. Speaks only the Protocol, except where a test takes the day index away to make
data as an older version left it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.models import (
    AbsenceExplanation,
    AbsenceKind,
    AbsenceRecord,
    DirectoryBatch,
    Person,
    Role,
)
from gateway.store import Store

from .builders import A, B, at, group, school_batch, tenant, unit
from .conftest import Backend, take_away

KEY = "c1|2026-11-27|n2"
WINDOW = timedelta(hours=2)


def record(
    event: str,
    seconds: float = 0,
    *,
    key: str = KEY,
    tenant: str = A,
    data: dict[str, Any] | None = None,
) -> AbsenceRecord:
    return AbsenceRecord(
        tenant_id=tenant,
        message_id=f"m-{event}",
        event_id=event,
        kind="recorded",
        child_id="c1",
        key=key,
        data=data or {"child_id": "c1", "lesson": {"number": 2}},
        marks=[event],
        created_at=at(seconds),
        updated_at=at(seconds),
    )


async def claim(store: Store, rec: AbsenceRecord, body: str = "h") -> tuple[str, AbsenceRecord]:
    window_start = rec.created_at - WINDOW
    result = await store.claim_absence(rec, body, window_start)
    return result.outcome, result.record


async def test_a_repeated_mark_in_the_window_is_merged_into_the_first(store: Store) -> None:
    assert await claim(store, record("e1")) == ("new", record("e1"))
    later = record("e2", 600, data={"child_id": "c1", "lesson": {"number": 2, "name": "Norsk"}})
    outcome, merged = await claim(store, later, "h2")
    assert outcome == "merged"
    assert merged.message_id == "m-e1"
    assert merged.event_id == "e1"
    assert merged.marks == ["e1", "e2"]
    assert merged.data == later.data  # the later mark updates the first
    assert merged.created_at == at(0)
    assert merged.updated_at == at(600)
    assert await store.get_absence(A, "m-e1") == merged
    assert await store.get_absence(A, "m-e2") is None


async def test_a_claimed_event_id_is_known_with_its_own_body_hash(store: Store) -> None:
    await claim(store, record("e1"), "h1")
    await claim(store, record("e2", 60), "h2")
    again = await store.claim_absence(record("e2", 120), "other", at(0))
    assert (again.outcome, again.record.message_id, again.body_hash) == ("known", "m-e1", "h2")
    first = await store.claim_absence(record("e1", 130), "h1", at(0))
    assert (first.outcome, first.body_hash) == ("known", "h1")
    stored = await store.get_absence(A, "m-e1")
    assert stored is not None
    assert stored.marks == ["e1", "e2"]  # a replay changes nothing


async def test_marks_outside_the_window_or_of_another_key_make_new_records(store: Store) -> None:
    await claim(store, record("e1"))
    outcome, _ = await claim(store, record("e2", 2 * 3600 + 1))
    assert outcome == "new"
    # another lesson, and the same key in another tenant
    assert (await claim(store, record("e3", 2 * 3600 + 2, key="c1|2026-11-27|n3")))[0] == "new"
    assert (await claim(store, record("e4", 2 * 3600 + 3, tenant=B)))[0] == "new"
    # the next repeat goes into the latest record of the key
    outcome, merged = await claim(store, record("e5", 2 * 3600 + 60))
    assert (outcome, merged.message_id) == ("merged", "m-e2")
    found = await store.find_absence(A, key=KEY)
    assert found is not None and found.message_id == "m-e2"
    assert (await store.find_absence(A, event_id="e5")) == merged
    assert await store.find_absence(B, event_id="e5") is None
    assert await store.find_absence(A, event_id="nope") is None


async def test_reports_without_a_key_are_never_merged(store: Store) -> None:
    assert (await claim(store, record("r1", key="")))[0] == "new"
    assert (await claim(store, record("r2", 1, key="")))[0] == "new"
    assert await store.find_absence(A, key="") is None


async def test_concurrent_marks_make_one_record(store: Store) -> None:
    results = await asyncio.gather(*(claim(store, record(f"e{i}", i)) for i in range(8)))
    outcomes = sorted(outcome for outcome, _ in results)
    assert outcomes == ["merged"] * 7 + ["new"]
    (first,) = {r.message_id for _, r in results}
    stored = await store.get_absence(A, first)
    assert stored is not None
    assert sorted(stored.marks) == sorted(f"e{i}" for i in range(8))


async def test_cancel_keeps_the_first_cancellation_and_stops_merging(store: Store) -> None:
    await claim(store, record("e1"))
    assert await store.cancel_absence(A, "nope", "x1", at(10)) is None
    assert await store.cancel_absence(B, "m-e1", "x1", at(10)) is None
    cancelled = await store.cancel_absence(A, "m-e1", "x1", at(10))
    assert cancelled is not None
    assert (cancelled.cancelled_at, cancelled.cancel_event_id) == (at(10), "x1")
    again = await store.cancel_absence(A, "m-e1", "x2", at(20))
    assert again is not None and again.cancel_event_id == "x1"
    # both cancellations lead to the record they cancel
    for event in ("x1", "x2"):
        found = await store.find_absence(A, event_id=event)
        assert found is not None and found.message_id == "m-e1"
    # a mark after the cancellation is a new alert
    outcome, fresh = await claim(store, record("e2", 30))
    assert (outcome, fresh.message_id) == ("new", "m-e2")


async def test_records_survive_reopen(backend: Backend) -> None:
    async with backend.open() as store:
        await claim(store, record("e1"))
        await claim(store, record("e2", 5))
    async with backend.open() as store:
        stored = await store.get_absence(A, "m-e1")
        assert stored is not None and stored.marks == ["e1", "e2"]


def alert_on(event: str, seconds: float, day: str, *, tenant: str = A) -> AbsenceRecord:
    data = {"child_id": "c1", "date": day, "lesson": {"number": 2}}
    return record(event, seconds, key=f"c1|{day}|n2", tenant=tenant, data=data)


def report_on(event: str, seconds: float, *days: str) -> AbsenceRecord:
    data = {"child_id": "c1", "guardian_id": "p1", "date": None, "days": list(days)}
    return record(event, seconds, key="", data=data).model_copy(update={"kind": "reported"})


async def test_records_are_found_by_the_days_they_are_for(store: Store) -> None:
    """A report made days ahead is found on each of its days, an alert on its date; a
    repeated mark adds no second record; cancelled records are found too (the caller
    decides); another tenant's and other days' are not."""
    await claim(store, alert_on("e1", 0, "2026-11-27"))
    await claim(store, alert_on("e2", 60, "2026-11-27"))  # a repeat: merged into e1
    await claim(store, report_on("r1", 120, "2026-11-26", "2026-11-27", "2026-11-30"))
    await claim(store, alert_on("e3", 180, "2026-11-26"))
    await claim(store, alert_on("e4", 240, "2026-11-27", tenant=B))
    await claim(store, alert_on("e5", 9 * 3600, "2026-11-27"))  # outside the window: new
    assert await store.cancel_absence(A, "m-e5", "x5", at(9 * 3600 + 5)) is not None

    def ids(records: list[AbsenceRecord]) -> list[str]:
        return [r.message_id for r in records]

    assert ids(await store.absences_on(A, ["2026-11-27"])) == ["m-e5", "m-r1", "m-e1"]
    on_27 = await store.absences_on(A, ["2026-11-27"])
    assert on_27[0].cancelled_at == at(9 * 3600 + 5)
    assert on_27[2].marks == ["e1", "e2"]
    assert ids(await store.absences_on(A, ["2026-11-26", "2026-11-30"])) == ["m-e3", "m-r1"]
    assert ids(await store.absences_on(A, ["2026-11-30"])) == ["m-r1"]
    assert await store.absences_on(A, ["2026-11-28"]) == []
    assert await store.absences_on(A, []) == []
    assert ids(await store.absences_on(B, ["2026-11-27"])) == ["m-e4"]


async def test_records_from_before_the_day_index_are_found_after_reopening(
    backend: Backend,
) -> None:
    """Records an older version stored (no day index) get their days when the store
    opens, once."""
    async with backend.open() as store:
        await store.create_tenant(tenant(A))
        await claim(store, alert_on("e1", 0, "2026-11-27"))
        await claim(store, report_on("r1", 60, "2026-11-27", "2026-11-28"))
    forget_absence_days(backend)
    async with backend.open() as store:
        found = await store.absences_on(A, ["2026-11-27"])
        assert [r.message_id for r in found] == ["m-r1", "m-e1"]
        assert [r.message_id for r in await store.absences_on(A, ["2026-11-28"])] == ["m-r1"]
        await claim(store, alert_on("e2", 9 * 3600, "2026-11-28"))
    async with backend.open() as store:  # opening again adds nothing twice
        on_28 = await store.absences_on(A, ["2026-11-28"])
        assert [r.message_id for r in on_28] == ["m-e2", "m-r1"]


async def test_a_record_an_older_version_wrote_beside_this_one_is_found_at_the_next_open(
    backend: Backend,
) -> None:
    """A rolling upgrade: this version opened the store (and indexed what was there),
    then an old process stored a record without day rows. The next open finds it."""
    now = datetime.now(UTC)
    async with backend.open() as store:
        await store.create_tenant(tenant(A))
        await claim(store, alert_on("e0", 0, "2026-12-23"))  # indexed as it is stored
    async with backend.open() as store:
        late = alert_on("e1", 0, "2026-12-24").model_copy(
            update={"created_at": now, "updated_at": now}
        )
        await store.claim_absence(late, "h", now - WINDOW)
    # e1 as the old process left it: no day rows (e0's and the marker stay)
    take_away(
        backend,
        "DELETE FROM absence_days WHERE message_id = 'm-e1'",
        (f"{{{A}}}:absday:2026-12-24",),
    )
    async with backend.open() as store:
        assert [r.message_id for r in await store.absences_on(A, ["2026-12-24"])] == ["m-e1"]
        assert [r.message_id for r in await store.absences_on(A, ["2026-12-23"])] == ["m-e0"]


def forget_absence_days(backend: Backend) -> None:
    """Take the day index away, as data written before it existed looked."""
    take_away(backend, "DELETE FROM absence_days", (f"{{{A}}}:absday:*", f"{{{A}}}:absdayv"))


def explanation(eid: str, seconds: float, *, text: str = "feber") -> AbsenceExplanation:
    return AbsenceExplanation(
        id=eid,
        tenant_id=A,
        message_id="m1",
        child_id="c1",
        person_id="p1",
        kind=AbsenceKind.sick,
        text=text,
        via="sms",
        at=at(seconds),
    )


async def test_explanations_are_stored_once_in_order(store: Store) -> None:
    assert await store.add_absence_explanation(explanation("x2", 20))
    assert await store.add_absence_explanation(explanation("x1", 10, text="Syk, æøå"))
    assert not await store.add_absence_explanation(explanation("x1", 30, text="again"))
    rows = await store.list_absence_explanations(A, "m1")
    assert [(r.id, r.text, r.at) for r in rows] == [
        ("x1", "Syk, æøå", at(10)),
        ("x2", "feber", at(20)),
    ]
    assert rows[0] == explanation("x1", 10, text="Syk, æøå")
    assert await store.list_absence_explanations(B, "m1") == []
    assert await store.list_absence_explanations(A, "m2") == []


async def test_staff_members_by_group_or_unit(store: Store) -> None:
    batch = school_batch()
    batch = DirectoryBatch(
        units=[*batch.units, unit("u3")],
        groups=[*batch.groups, group("g7c", "u3")],
        persons=[
            *batch.persons,
            Person(id="t5a", role=Role.staff, given_name="T", group_ids=["g5a"], unit_ids=["u1"]),
            Person(id="t7c", role=Role.staff, given_name="T", group_ids=["g7c"]),
        ],
        relations=batch.relations,
    )
    await store.apply_directory(A, batch)
    assert await store.staff_members(A, group_ids=["g5a"]) == ["t5a"]
    # a child in 5A is a member too, but not staff
    assert await store.staff_members(A, unit_ids=["u1"]) == ["s1", "t5a"]
    assert await store.staff_members(A, group_ids=["g6b"]) == []
    assert await store.staff_members(A, group_ids=["g7c"], unit_ids=["u1"]) == ["s1", "t5a", "t7c"]
    assert await store.staff_members(A) == []
    assert await store.staff_members(B, unit_ids=["u1"]) == []


async def test_settings_override_round_trip(store: Store) -> None:
    assert await store.get_absence_settings(A) is None
    await store.set_absence_settings(A, {"dedup_window_minutes": 30})
    assert await store.get_absence_settings(A) == {"dedup_window_minutes": 30}
    assert await store.get_absence_settings(B) is None
    await store.set_absence_settings(A, None)
    assert await store.get_absence_settings(A) is None
