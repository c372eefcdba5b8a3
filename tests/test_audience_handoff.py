"""The intake's audience snapshot goes on to the planner (issue 18): a broadcast's audience
is read once, and the 202 counts exactly the recipients that are planned."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from gateway.audience_handoff import MAX_HELD, AudienceHandoff
from gateway.clock import ManualClock
from gateway.models import Audience, DeliveryStatus, DirectoryBatch, DirectorySnapshot, Message
from gateway.settings import Settings
from tests.conftest import DIRECTORY
from tests.factories import message as audience_message
from tests.harness import Gateway, new_tenant, running

# c1 has two guardians with parental responsibility.
TWO_GUARDIANS: dict[str, Any] = copy.deepcopy(DIRECTORY)
TWO_GUARDIANS["persons"].append(
    {"id": "p2", "role": "guardian", "given_name": "Kari", "email": "kari@example.no"}
)
TWO_GUARDIANS["relations"].append(
    {"child_id": "c1", "guardian_id": "p2", "parental_responsibility": True}
)


def message(id: str) -> Message:
    return audience_message(Audience(groups=["g1"])).model_copy(update={"id": id})


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_snapshot_is_taken_once_and_only_for_the_same_body() -> None:
    ticks = Ticks()
    handoff = AudienceHandoff(max_age=2.0, clock=ticks)
    snapshot = DirectorySnapshot()
    first = message(id="m1")
    handoff.hand_over(first, snapshot, ticks())
    assert handoff.take(first.model_copy(update={"body_hash": "another body"})) is None
    handoff.hand_over(first, snapshot, ticks())
    assert handoff.take(first) is snapshot
    assert handoff.take(first) is None


def test_a_snapshot_too_old_is_not_used_and_not_kept() -> None:
    ticks = Ticks()
    handoff = AudienceHandoff(max_age=2.0, clock=ticks)
    old = message(id="m1")
    handoff.hand_over(old, DirectorySnapshot(), ticks())
    ticks.now += 2.5
    assert handoff.take(old) is None
    handoff.hand_over(old, DirectorySnapshot(), ticks() - 3)
    handoff.hand_over(message(id="m2"), DirectorySnapshot(), ticks())
    assert len(handoff) == 1  # the stale one went when the next came


def test_only_a_few_snapshots_are_held() -> None:
    ticks = Ticks()
    handoff = AudienceHandoff(clock=ticks)
    for n in range(MAX_HELD + 3):
        handoff.hand_over(message(id=f"m{n}"), DirectorySnapshot(), ticks())
    assert len(handoff) == MAX_HELD
    assert handoff.take(message(id="m0")) is None
    assert handoff.take(message(id=f"m{MAX_HELD + 2}")) is not None


async def post_and_block(gw: Gateway, key: str) -> dict[str, Any]:
    """Post a message to g1, then block p2 before it is planned."""
    event = {
        "id": "evt-1",
        "type": "message.created",
        "data": {"audience": {"groups": ["g1"]}, "subject": "Tur", "body": "Vi går på tur."},
    }
    async with gw.session.post(f"{gw.url}/v1/events", json=event, headers=gw.headers(key)) as resp:
        assert resp.status == 202
        answer: dict[str, Any] = await resp.json()
    block = {"value": True, "reason": "Court order", "actor": "rektor"}
    async with gw.session.put(
        f"{gw.url}/v1/relations/c1/p2/flags/blocked", json=block, headers=gw.headers(key)
    ) as resp:
        assert resp.status == 200
    return answer


def planned_recipients(deliveries: list[Any]) -> set[str]:
    return {d.recipient_id for d in deliveries if d.status is not DeliveryStatus.suppressed}


async def test_the_planner_plans_from_the_snapshot_the_202_counted(
    settings: Settings, clock: ManualClock
) -> None:
    ticks = Ticks()
    async with running(settings, clock) as gw:
        handoff = AudienceHandoff(clock=ticks)
        gw.service.ctx.audiences = gw.service.dispatcher.audiences = handoff
        tenant, key = await new_tenant(
            gw.service, clock, DirectoryBatch.model_validate(TWO_GUARDIANS)
        )
        answer = await post_and_block(gw, key)
        assert (answer["recipients"], answer["suppressed"]) == (2, {})
        assert len(handoff) == 1
        ticks.now += 1.5  # planned within MAX_AGE of the intake's read
        await gw.run()
        assert len(handoff) == 0
        deliveries = await gw.deliveries(tenant.id, answer["message_id"])
    # The block came after the intake's read: like one during planning, it is not in
    # this message (the plan reads one snapshot), and the 202 said exactly what went.
    assert planned_recipients(deliveries) == {"p1", "p2"}


async def test_a_planner_later_than_max_age_reads_the_audience_again(
    settings: Settings, clock: ManualClock
) -> None:
    ticks = Ticks()
    async with running(settings, clock) as gw:
        handoff = AudienceHandoff(clock=ticks)
        gw.service.ctx.audiences = gw.service.dispatcher.audiences = handoff
        tenant, key = await new_tenant(
            gw.service, clock, DirectoryBatch.model_validate(TWO_GUARDIANS)
        )
        answer = await post_and_block(gw, key)
        assert answer["recipients"] == 2
        ticks.now += 2.5
        await gw.run()
        deliveries = await gw.deliveries(tenant.id, answer["message_id"])
    assert planned_recipients(deliveries) == {"p1"}
    assert {d.recipient_id for d in deliveries if d.reason == "blocked"} == {"p2"}


async def test_a_scheduled_message_is_not_handed_over(
    settings: Settings, clock: ManualClock
) -> None:
    async with running(settings, clock) as gw:
        handoff = AudienceHandoff()
        gw.service.ctx.audiences = gw.service.dispatcher.audiences = handoff
        _, key = await new_tenant(gw.service, clock, DirectoryBatch.model_validate(TWO_GUARDIANS))
        event = {
            "id": "evt-later",
            "type": "message.created",
            "data": {
                "audience": {"groups": ["g1"]},
                "subject": "Tur",
                "body": "Vi går på tur.",
                "send_at": (clock.now() + timedelta(days=1)).isoformat(),
            },
        }
        async with gw.session.post(
            f"{gw.url}/v1/events", json=event, headers=gw.headers(key)
        ) as resp:
            assert resp.status == 202
            assert (await resp.json())["recipients"] == 2
    assert len(handoff) == 0  # resolved again when it is due


async def post_absence_and_block(gw: Gateway, key: str) -> str:
    """Record c1 absent, then block p2 before the alert is planned; the alert's id."""
    event = {
        "id": "abs-1",
        "type": "absence.recorded",
        "data": {"child_id": "c1", "date": "2026-11-27", "lesson": {"number": 2}},
    }
    async with gw.session.post(f"{gw.url}/v1/events", json=event, headers=gw.headers(key)) as resp:
        assert resp.status == 202, await resp.text()
        message_id: str = (await resp.json())["message_id"]
    block = {"value": True, "reason": "Court order", "actor": "rektor"}
    async with gw.session.put(
        f"{gw.url}/v1/relations/c1/p2/flags/blocked", json=block, headers=gw.headers(key)
    ) as resp:
        assert resp.status == 200
    return message_id


async def test_an_absence_alert_is_planned_from_the_childs_snapshot_its_intake_read(
    settings: Settings, clock: ManualClock
) -> None:
    """The alert's intake reads the child with its guardians; within MAX_AGE its plan
    uses that read instead of reading the audience again (issue 18: Redis commands), so
    a block made after it is, as for any message, not in this alert; after MAX_AGE the
    plan reads again and the block holds."""
    ticks = Ticks()
    planned_by_age: dict[float, set[str]] = {}
    for age in (1.5, 2.5):
        async with running(settings, clock) as gw:
            handoff = AudienceHandoff(clock=ticks)
            gw.service.ctx.audiences = gw.service.dispatcher.audiences = handoff
            gw.service.absences.audiences = handoff
            tenant, key = await new_tenant(
                gw.service, clock, DirectoryBatch.model_validate(TWO_GUARDIANS)
            )
            message_id = await post_absence_and_block(gw, key)
            assert len(handoff) == 1
            ticks.now += age
            await gw.run()
            assert len(handoff) == 0
            deliveries = await gw.deliveries(tenant.id, message_id)
        planned_by_age[age] = planned_recipients(deliveries)
    assert planned_by_age == {1.5: {"p1", "p2"}, 2.5: {"p1"}}
