"""Store contract: messages and deliveries (ports MessageStore, DeliveryStore,
ProviderLookup, DeliveryReport).

These tests speak only the ports: nothing here may know which backend runs.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from gateway.models import (
    ChannelName,
    DeliveryStatus,
)
from gateway.store import Store

from .builders import T0, A, B, accepted, at, delivery, job, message, plan_job


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


async def test_only_sms_is_looked_up_by_address_or_provider_id(store: Store) -> None:
    """Replies and provider callbacks are looked up for LOOKUP_CHANNELS (SMS) alone: an
    email's address or provider id finds nothing, on every backend (Redis indexes them
    for SMS only, saving two to three commands per delivery)."""
    m = await accepted(store, message(A, "e1"))
    email = delivery(m, "p1", "email", address="p1@example.no")
    await store.add_deliveries([email], [])
    assert await store.transition(email.id, DeliveryStatus.sent, at(1), provider_id="<m1@x>")
    assert await store.latest_delivery_to(A, "email", "p1@example.no") is None
    assert await store.tenant_for_address("email", "p1@example.no") is None
    assert await store.delivery_by_provider_id("email", "<m1@x>") is None
    stored = await store.get_delivery(email.id)
    assert stored is not None and stored.provider_id == "<m1@x>"
