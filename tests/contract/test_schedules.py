"""Contract: scheduled messages keep their send_at and are cancelled only before planning
starts (the planning job is taken back atomically; a claimed one is not)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.models import Audience, Job, Message
from gateway.store import Store
from gateway.store.schedules import CancelResult, Schedule

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
SEND_AT = T0 + timedelta(hours=3)


async def scheduled(store: Store, message_id: str) -> Job:
    message = Message(
        id=message_id,
        tenant_id="t1",
        event_id=f"e-{message_id}",
        event_type="message.created",
        body_hash="h",
        category="general",
        subject="Tur",
        body="Vi går på tur.",
        audience=Audience(groups=["g1"]),
        created_at=T0,
    )
    job = Job(id=f"plan:{message_id}", tenant_id="t1", kind="plan", ref=message_id, due_at=SEND_AT)
    await store.schedules.add_schedule(Schedule("t1", message_id, SEND_AT))
    await store.accept_message(message, job)
    return job


async def test_the_schedule_is_kept_and_the_plan_job_waits_for_send_at(store: Store) -> None:
    await scheduled(store, "m1")
    await store.schedules.add_schedule(Schedule("t1", "m1", T0))  # again: the first stays
    found = await store.schedules.get_schedule("t1", "m1")
    assert found == Schedule("t1", "m1", SEND_AT, None)
    assert await store.schedules.get_schedule("t2", "m1") is None
    assert await store.claim_jobs(["plan"], 10, SEND_AT - timedelta(seconds=1), 60) == []
    (job,) = await store.claim_jobs(["plan"], 10, SEND_AT, 60)
    assert job.ref == "m1"


async def test_a_cancel_before_planning_takes_the_job_back(store: Store) -> None:
    await scheduled(store, "m1")
    at = T0 + timedelta(minutes=5)
    assert await store.schedules.cancel_scheduled("t1", "m1", "plan:m1", at) == "cancelled"
    assert await store.claim_jobs(["plan"], 10, SEND_AT + timedelta(days=1), 60) == []
    found = await store.schedules.get_schedule("t1", "m1")
    assert found is not None and found.cancelled_at == at
    later = at + timedelta(minutes=1)  # a second cancel keeps the first time
    assert await store.schedules.cancel_scheduled("t1", "m1", "plan:m1", later) == "cancelled"
    found = await store.schedules.get_schedule("t1", "m1")
    assert found is not None and found.cancelled_at == at


async def test_a_cancel_after_the_plan_job_was_claimed_is_refused(store: Store) -> None:
    await scheduled(store, "m1")
    (job,) = await store.claim_jobs(["plan"], 10, SEND_AT, 60)
    at = SEND_AT + timedelta(seconds=1)
    assert await store.schedules.cancel_scheduled("t1", "m1", job.id, at) == "started"
    await store.mark_planned("t1", "m1", at)
    await store.finish_job(job.id)
    assert await store.schedules.cancel_scheduled("t1", "m1", job.id, at) == "started"
    found = await store.schedules.get_schedule("t1", "m1")
    assert found is not None and found.cancelled_at is None


async def test_a_cancel_of_an_unknown_or_other_tenants_message_finds_nothing(
    store: Store,
) -> None:
    await scheduled(store, "m1")
    assert await store.schedules.cancel_scheduled("t2", "m1", "plan:m1", T0) == "unknown"
    assert await store.schedules.cancel_scheduled("t1", "nope", "plan:nope", T0) == "unknown"
    (job,) = await store.claim_jobs(["plan"], 10, SEND_AT, 60)  # untouched
    assert job.id == "plan:m1"
    assert CancelResult.unknown.value == "unknown"
