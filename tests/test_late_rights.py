"""Rights and reach are checked again when a delivery goes out late (DESIGN.md rules 2, 3
and "escalation stops as soon as the message is reached"): quiet-hours deferrals and
escalation steps never reach a guardian blocked or revoked after planning, queued
escalation sends stop once the child is reached, and a Twilio failure callback moves
the recipient on to the next channel at once. Real peers, ManualClock, no sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.models import Delivery, DeliveryStatus, Preferences, Role
from gateway.recheck import withheld
from gateway.settings import Settings
from gateway.tracker import ESCALATION_KEY, record_read
from tests.harness import Gateway, running
from tests.peers.twilio import TwilioPeer
from tests.test_dispatcher import Rig, directory, family, peered_rig
from tests.test_escalation import absence, channels, event, setup_tenant
from tests.test_sms import ACCOUNT_SID, AUTH_TOKEN, twilio_settings

HOUR = 3600.0
PROJECT = "budbringer-test"


@pytest.fixture
async def rig(
    store: Any,
    clock: ManualClock,
    tenant: Any,
    settings: Settings,
    tmp_path: Any,
) -> AsyncIterator[Rig]:
    async with peered_rig(store, clock, tenant, settings, tmp_path) as built:
        yield built


QUIET = {"quiet_start": "08:00", "quiet_end": "12:00"}  # 09:00 UTC is 10:00 in Oslo


@pytest.mark.parametrize("change", ["blocked", "information_revoked"])
async def test_a_deferred_send_is_withheld_when_rights_end_during_quiet_hours(
    rig: Rig, change: str
) -> None:
    c1, p1, r1 = family(1, phone=True)
    c2, p2, r2 = family(2, phone=True)
    if change == "information_revoked":
        r1["parental_responsibility"] = False  # told only by a manual grant
    await rig.load(directory((c1, p1, r1), (c2, p2, r2), preferences={"p1": QUIET, "p2": QUIET}))
    store, now = rig.store, rig.clock.now()
    if change == "information_revoked":
        await store.set_relation_flag(
            rig.tenant_id, "c1", "p1", "information_granted", True, "bl § 47", "staff", now
        )
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    deferred = [d for d in await rig.deliveries(message) if d.channel in ("email", "sms")]
    assert {d.status for d in deferred} == {DeliveryStatus.queued}
    assert all(d.not_before is not None for d in deferred)

    flag, value = ("blocked", True) if change == "blocked" else ("information_granted", False)
    await store.set_relation_flag(rig.tenant_id, "c1", "p1", flag, value, "vedtak", "staff", now)
    await rig.advance(2 * HOUR)

    # p2 is still told after quiet hours; nothing at all reaches p1's address or number.
    assert [m.rcpt_tos for m in rig.smtp.received] == [["forelder2@example.no"]]
    assert [r.field("To") for r in rig.twilio.requests] == [p2["phone"]]
    for d in await rig.deliveries(message):
        if d.recipient_id == "p1" and d.channel in ("email", "sms"):
            assert (d.status, d.reason) == (DeliveryStatus.suppressed, change)


@pytest.fixture
async def gw(settings: Settings, clock: ManualClock) -> AsyncIterator[Gateway]:
    async with running(settings, clock) as gateway:
        yield gateway


async def test_no_escalation_step_to_a_guardian_blocked_after_planning(gw: Gateway) -> None:
    tenant_id, key = await setup_tenant(gw)
    message_id = await gw.post_event(key, event(read_receipt=True))
    await gw.run()
    before = await channels(gw, tenant_id, message_id)
    store = gw.service.store
    await store.set_relation_flag(
        tenant_id, "c2", "p2", "blocked", True, "court order", "staff", gw.clock.now()
    )
    gw.clock.advance(24 * HOUR)
    await gw.run()
    after = await channels(gw, tenant_id, message_id)
    assert after["p2"] == before["p2"]  # no SMS step for the blocked guardian
    assert after["p1"] == before["p1"] | {"sms"}  # the others escalate as before
    records = [
        d
        for d in await gw.deliveries(tenant_id, message_id)
        if d.recipient_id == "p2" and d.channel == "none"
    ]
    assert [(d.child_ids, d.reason) for d in records] == [(["c2"], "blocked")]
    # The next step does not try again either.
    gw.clock.advance(24 * HOUR)
    await gw.run()
    assert (await channels(gw, tenant_id, message_id))["p2"] == before["p2"]


async def test_a_queued_escalation_send_stops_when_a_co_guardian_reaches_the_child(
    gw: Gateway,
) -> None:
    tenant_id, _ = await setup_tenant(gw)
    message = await absence(gw, tenant_id, ["c5", "c6"])
    gw.clock.advance(10 * 60)
    # Only the escalation job: its SMS sends are queued, not yet sent.
    await gw.service.dispatcher.run_once(wait=True)
    queued = {
        d.recipient_id: d
        for d in await gw.deliveries(tenant_id, message.id)
        if ESCALATION_KEY in d.context
    }
    assert {p: d.status for p, d in queued.items()} == {
        p: DeliveryStatus.queued for p in ("p5a", "p5b", "p6")
    }
    # p5a reads in the app before the SMS goes: c5 is reached, so p5b's SMS is pointless.
    assert await record_read(
        gw.service.store, tenant_id, "p5a", message.id, gw.clock.now(), "inapp"
    )
    await gw.run()
    after = {
        d.recipient_id: (d.status, d.reason)
        for d in await gw.deliveries(tenant_id, message.id)
        if ESCALATION_KEY in d.context
    }
    assert after["p5b"] == (DeliveryStatus.cancelled, "reached")
    assert after["p5a"] == (DeliveryStatus.cancelled, "reached")
    assert after["p6"][0] is DeliveryStatus.sent


async def test_a_twilio_failure_callback_fails_over_at_once(
    settings: Settings, clock: ManualClock
) -> None:
    async with TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        with_sms = settings.model_copy(update={"twilio": twilio_settings(twilio.base_url)})
        async with running(with_sms, clock) as gw:
            tenant_id, key = await setup_tenant(gw)
            store = gw.service.store
            sms_only = Preferences.model_validate({"channels": {"general": ["sms"]}})
            await store.set_preferences(tenant_id, "p2", sms_only)
            message_id = await gw.post_event(key, event())  # no read receipt
            await gw.run()
            before = await channels(gw, tenant_id, message_id)
            assert before["p2"] == {"inapp", "sms"}
            [sid] = [s for s, m in twilio.messages.items() if m["to"] == "+4741000002"]

            result = await twilio.send_status(sid, "undelivered", error_code=30003, via=gw.url)
            assert result.status == 200
            await gw.run()  # no clock advance: the failover is due now
            found = {
                (d.recipient_id, d.channel): d for d in await gw.deliveries(tenant_id, message_id)
            }
            assert found[("p2", "sms")].status is DeliveryStatus.undelivered
            push = found[("p2", "push")]
            assert push.context[ESCALATION_KEY] == "failover:sms"
            assert push.status is DeliveryStatus.sent
            # A repeated callback changes nothing and plans nothing more.
            await twilio.send_status(sid, "failed", via=gw.url)
            await gw.run()
            assert len(await gw.deliveries(tenant_id, message_id)) == len(found)


async def test_staff_told_by_role_are_not_withheld_by_the_guardian_rules(rig: Rig) -> None:
    # An absence notice to a contact teacher names the child, but staff are told by role,
    # not by a relation: the re-check of a late (escalation) send leaves it alone.
    c1, p1, r1 = family(1)
    teacher = {"id": "t1", "role": "staff", "given_name": "Lærer", "email": "t1@example.no"}
    batch = directory((c1, p1, r1))
    batch["persons"].append(teacher)
    await rig.load(batch)
    message = await rig.post("e1", {"children": ["c1"]})
    now = rig.clock.now()
    late = Delivery(
        id="d-t1",
        tenant_id=rig.tenant_id,
        message_id=message.id,
        recipient_id="t1",
        recipient_role=Role.staff,
        channel="email",
        target="t1@example.no",
        language="nb",
        child_ids=["c1"],
        context={ESCALATION_KEY: "step:1"},
        created_at=now,
        updated_at=now,
    )
    assert await withheld(rig.store, message, late, now) is None
    blocked = late.model_copy(update={"recipient_id": "p1", "recipient_role": Role.guardian})
    await rig.store.set_relation_flag(rig.tenant_id, "c1", "p1", "blocked", True, "x", "s", now)
    assert await withheld(rig.store, message, blocked, now) == (
        DeliveryStatus.suppressed,
        "blocked",
    )
