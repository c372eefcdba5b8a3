"""Store contract: tenants and lifecycle (ports Lifecycle, TenantStore), and tenant
isolation across every port.

These tests speak only the ports: nothing here may know which backend runs.
"""

from __future__ import annotations

import pytest

from gateway.errors import Conflict
from gateway.models import (
    Audience,
    DeliveryStatus,
    Device,
    DirectoryBatch,
    Preferences,
    Tenant,
)
from gateway.store import Store

from .builders import T0, A, B, accepted, at, delivery, guardian, job, message, school_batch
from .conftest import Backend


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
