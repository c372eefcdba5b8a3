"""Contract (issue 12): every failed attempt of a retried send leaves a history row; the
follow-up jobs of an outcome are stored with it."""

from __future__ import annotations

from datetime import timedelta

from gateway.models import DeliveryStatus, Job
from gateway.store import SendOutcome, Store

from .builders import T0, accepted, delivery, message

A = "tenant-a"


async def test_each_attempt_of_a_sending_delivery_is_a_history_row(store: Store) -> None:
    msg = await accepted(store, message(A, "ev1"))
    d = delivery(msg, "p1", "sms", address="+4741000001")
    await store.add_deliveries([d], [])
    assert not await store.note_attempt(d.id, T0, "attempt 1 failed")  # not sending yet
    assert await store.transition(d.id, DeliveryStatus.sending, T0, detail="attempt 1 failed")
    for n in (2, 3):
        assert await store.note_attempt(d.id, T0 + timedelta(seconds=n), f"attempt {n} failed")
    assert not await store.note_attempt("no-such-delivery", T0, "x")
    history = (await store.history([d.id]))[d.id]
    assert [(h.status, h.detail) for h in history[1:]] == [
        (DeliveryStatus.sending, "attempt 1 failed"),
        (DeliveryStatus.sending, "attempt 2 failed"),
        (DeliveryStatus.sending, "attempt 3 failed"),
    ]
    assert history[-1].at == T0 + timedelta(seconds=3)
    stored = await store.get_delivery(d.id)
    assert stored is not None and stored.status is DeliveryStatus.sending
    await store.transition(d.id, DeliveryStatus.sent, T0 + timedelta(seconds=4))
    assert not await store.note_attempt(d.id, T0, "late")  # only while sending


async def test_follow_up_jobs_are_stored_with_the_outcome(store: Store) -> None:
    """Jobs handed with a move (a failover) are stored with it, moved or not; they are due
    at most a short grace after their time (Redis queues them before the move)."""
    msg = await accepted(store, message(A, "ev2"))
    sms = delivery(msg, "p1", "sms", address="+4741000001")
    await store.add_deliveries([sms], [])

    def follow_up(name: str) -> Job:
        return Job(id=f"escalate:{name}", tenant_id=A, kind="escalate", ref=name, due_at=T0)

    assert await store.transition(
        sms.id, DeliveryStatus.undelivered, T0, jobs=[follow_up("by-callback")]
    )
    outcome = SendOutcome(
        "send:x", sms.id, DeliveryStatus.sent, T0, jobs=(follow_up("by-outcome"),)
    )
    assert await store.finish_sends([outcome]) == 0  # refused: undelivered stays
    claimed = await store.claim_jobs(["escalate"], 10, T0 + timedelta(seconds=5), 60)
    assert sorted(j.id for j in claimed) == ["escalate:by-callback", "escalate:by-outcome"]
