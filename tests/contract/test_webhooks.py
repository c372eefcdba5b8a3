"""Contract of the webhook part of the Store: endpoints, the change feed and the outbox.

Only the Protocol is used here; nothing may know which backend runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import Conflict
from gateway.models import (
    Audience,
    Category,
    Delivery,
    DeliveryStatus,
    Job,
    Message,
    Reply,
    Role,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    WebhookStatus,
    derive_id,
)
from gateway.store import Store

from .conftest import Backend

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
A = "tenant-a"
B = "tenant-b"
ALL = ["delivery.updated", "message.read", "message.reached", "reply.received"]
FANOUT = "webhook_fanout"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def endpoint(eid: str, tenant: str = A, **changes: object) -> WebhookEndpoint:
    base = WebhookEndpoint(
        id=eid,
        tenant_id=tenant,
        url=f"https://platform.example/{eid}",
        event_types=ALL,
        secret="whsec_" + "A" * 32,
        created_at=T0,
        updated_at=T0,
    )
    return base.model_copy(update=changes)


def message(tenant: str = A, event: str = "ev1") -> Message:
    return Message(
        id=derive_id(tenant, event),
        tenant_id=tenant,
        event_id=event,
        event_type="message.created",
        body_hash="h",
        category=Category.general,
        subject="Subject",
        body="Body",
        audience=Audience(groups=["g1"]),
        created_at=T0,
    )


def delivery(
    msg: Message,
    recipient: str,
    channel: str = "inapp",
    *,
    status: DeliveryStatus = DeliveryStatus.queued,
    reason: str | None = None,
) -> Delivery:
    return Delivery(
        id=Delivery.make_id(msg.tenant_id, msg.event_id, recipient, channel),
        tenant_id=msg.tenant_id,
        message_id=msg.id,
        recipient_id=recipient,
        recipient_role=Role.guardian,
        channel=channel,
        language="nb",
        status=status,
        reason=reason,
        created_at=T0,
        updated_at=T0,
    )


def outbox(mid: str, tenant: str = A, endpoint_id: str = "ep1") -> WebhookMessage:
    return WebhookMessage(
        id=mid,
        tenant_id=tenant,
        endpoint_id=endpoint_id,
        event_type="message.read",
        body='{"type":"message.read"}',
        next_attempt_at=T0,
        created_at=T0,
        updated_at=T0,
    )


def send_job(mid: str, tenant: str = A) -> Job:
    return Job(id=f"webhook_send:{mid}", tenant_id=tenant, kind="webhook_send", ref=mid, due_at=T0)


async def queued(store: Store, *mids: str, endpoint_id: str = "ep1") -> None:
    """Put messages in the outbox (with no feed to consume)."""
    cursor = await store.webhook_cursor()
    await store.enqueue_webhooks(
        cursor,
        cursor,
        [outbox(m, endpoint_id=endpoint_id) for m in mids],
        [send_job(m) for m in mids],
        FANOUT,
    )


def attempt(code: int | None, seconds: float = 0) -> WebhookAttempt:
    return WebhookAttempt(at=at(seconds), status_code=code, duration_ms=12)


# --------------------------------------------------------------------------- endpoints


async def test_endpoint_crud_and_tenant_isolation(store: Store) -> None:
    await store.create_webhook_endpoint(endpoint("ep1"))
    await store.create_webhook_endpoint(endpoint("ep2", description="second"))
    await store.create_webhook_endpoint(endpoint("ep3", tenant=B))

    assert [e.id for e in await store.list_webhook_endpoints(A)] == ["ep1", "ep2"]
    assert [e.id for e in await store.list_webhook_endpoints(B)] == ["ep3"]
    assert await store.get_webhook_endpoint(B, "ep1") is None
    stored = await store.get_webhook_endpoint(A, "ep2")
    assert stored == endpoint("ep2", description="second")

    with pytest.raises(Conflict):
        await store.create_webhook_endpoint(endpoint("ep1"))

    changed = endpoint(
        "ep1",
        url="https://platform.example/new",
        event_types=["reply.received"],
        enabled=False,
        disabled_reason="disabled",
        secret="whsec_" + "B" * 32,
        previous_secret="whsec_" + "A" * 32,
        previous_secret_until=at(60),
        updated_at=at(5),
    )
    assert await store.update_webhook_endpoint(changed) is True
    assert await store.get_webhook_endpoint(A, "ep1") == changed
    # Another tenant cannot change or delete it.
    assert await store.update_webhook_endpoint(changed.model_copy(update={"tenant_id": B})) is False
    assert await store.delete_webhook_endpoint(B, "ep1") is False
    assert await store.delete_webhook_endpoint(A, "ep1") is True
    assert await store.get_webhook_endpoint(A, "ep1") is None
    assert await store.delete_webhook_endpoint(A, "ep1") is False


async def test_deleting_an_endpoint_removes_its_messages(store: Store) -> None:
    await store.create_webhook_endpoint(endpoint("ep1"))
    await queued(store, "m1", "m2")
    assert await store.delete_webhook_endpoint(A, "ep1") is True
    assert await store.get_webhook_message("m1") is None
    assert await store.list_webhook_messages(A) == []
    assert await store.claim_jobs(["webhook_send"], 10, at(1), 60) == []


# --------------------------------------------------------------------------- change feed


async def test_changes_come_in_commit_order_with_a_growing_cursor(store: Store) -> None:
    await store.create_webhook_endpoint(endpoint("ep1"))
    msg = message()
    await store.accept_message(
        msg, Job(id="plan:x", tenant_id=A, kind="plan", ref=msg.id, due_at=T0)
    )
    inapp = delivery(msg, "p1")
    suppressed = delivery(msg, "p2", "none", status=DeliveryStatus.suppressed, reason="blocked")
    await store.add_deliveries([inapp, suppressed], [])
    assert await store.transition(inapp.id, DeliveryStatus.sending, at(1))
    assert await store.transition(inapp.id, DeliveryStatus.sent, at(2), provider_id="x")
    assert await store.mark_read(A, "p1", msg.id, at(3), "inapp")
    reply = Reply(
        id="r1",
        tenant_id=A,
        channel="sms",
        message_id=msg.id,
        person_id="p1",
        body="Takk!",
        received_at=at(4),
    )
    assert await store.add_reply(reply)
    assert await store.append_change(A, "message.reached", {"message_id": msg.id}, at(5))

    changes, cursor = await store.changes_since(0, 100)
    # planned/queued/sending are internal steps: not in the feed.
    assert [(c.type, c.data.get("status")) for c in changes] == [
        ("delivery.updated", "suppressed"),
        ("delivery.updated", "sent"),
        ("message.read", None),
        ("delivery.updated", "read"),
        ("reply.received", None),
        ("message.reached", None),
    ]
    seqs = [c.seq for c in changes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert cursor == seqs[-1]
    assert {c.tenant_id for c in changes} == {A}
    assert changes[0].data == {
        "message_id": msg.id,
        "delivery_id": suppressed.id,
        "recipient_id": "p2",
        "channel": "none",
        "status": "suppressed",
        "reason": "blocked",
        "at": T0.isoformat(),
    }
    assert changes[2].data == {
        "message_id": msg.id,
        "recipient_id": "p1",
        "via": "inapp",
        "at": at(3).isoformat(),
    }
    assert changes[4].data == {
        "reply_id": "r1",
        "message_id": msg.id,
        "recipient_id": "p1",
        "channel": "sms",
        "body": "Takk!",
        "received_at": at(4).isoformat(),
    }
    assert changes[5].data == {"message_id": msg.id, "at": at(5).isoformat()}
    assert changes[5].at == at(5)

    # Paging by cursor.
    first, mid = await store.changes_since(0, 2)
    rest, end = await store.changes_since(mid, 100)
    assert [c.seq for c in first + rest] == seqs
    assert end == cursor
    assert await store.changes_since(cursor, 100) == ([], cursor)


async def test_no_feed_for_a_tenant_without_an_enabled_endpoint(store: Store) -> None:
    await store.create_webhook_endpoint(endpoint("ep-b", tenant=B))
    await store.create_webhook_endpoint(endpoint("ep-a", enabled=False))
    msg = message()
    await store.add_deliveries([delivery(msg, "p1")], [])
    await store.transition(delivery(msg, "p1").id, DeliveryStatus.sent, at(1))
    assert await store.append_change(A, "message.reached", {}, at(2)) is None
    assert await store.changes_since(0, 100) == ([], 0)
    assert await store.claim_jobs([FANOUT], 10, at(10), 60) == []


async def test_a_change_queues_the_fanout_job_once(store: Store) -> None:
    await store.create_webhook_endpoint(endpoint("ep1"))
    assert await store.append_change(A, "message.reached", {"n": 1}, at(1))
    assert await store.append_change(A, "message.reached", {"n": 2}, at(2))
    jobs = await store.claim_jobs([FANOUT], 10, at(3), 60)
    assert [(j.id, j.kind, j.tenant_id) for j in jobs] == [(FANOUT, FANOUT, "")]


# --------------------------------------------------------------------------- fan-out


async def test_enqueue_moves_the_cursor_once_and_is_idempotent(store: Store) -> None:
    await store.create_webhook_endpoint(endpoint("ep1"))
    for n in range(3):
        await store.append_change(A, "message.reached", {"n": n}, at(n))
    assert await store.webhook_cursor() == 0
    _, cursor = await store.changes_since(0, 2)

    more = await store.enqueue_webhooks(0, cursor, [outbox("m1")], [send_job("m1")], FANOUT)
    assert more is True  # one change left
    assert await store.webhook_cursor() == cursor
    # A second fan-out that read the same batch writes nothing.
    again = await store.enqueue_webhooks(
        0, cursor, [outbox("m1"), outbox("m-dup")], [send_job("m-dup")], FANOUT
    )
    assert again is True
    assert [m.id for m in await store.list_webhook_messages(A)] == ["m1"]
    assert await store.webhook_cursor() == cursor

    rest, end = await store.changes_since(cursor, 10)
    assert [c.data["n"] for c in rest] == [2]
    assert (
        await store.enqueue_webhooks(cursor, end, [outbox("m2")], [send_job("m2")], FANOUT) is False
    )
    assert await store.changes_since(end, 10) == ([], end)
    # The fan-out job is gone with the feed empty; the send jobs are there.
    jobs = await store.claim_jobs([FANOUT, "webhook_send"], 10, at(100), 60)
    assert sorted(j.id for j in jobs) == ["webhook_send:m1", "webhook_send:m2"]
    # The same message id again (a restarted fan-out): still one row.
    await queued(store, "m1")
    assert sorted(m.id for m in await store.list_webhook_messages(A)) == ["m1", "m2"]


async def test_fanout_job_survives_a_change_made_while_it_runs(store: Store) -> None:
    await store.create_webhook_endpoint(endpoint("ep1"))
    await store.append_change(A, "message.reached", {"n": 0}, at(0))
    [fanout] = await store.claim_jobs([FANOUT], 1, at(1), 60)
    _, cursor = await store.changes_since(0, 10)
    await store.append_change(A, "message.reached", {"n": 1}, at(2))  # while leased
    assert await store.enqueue_webhooks(0, cursor, [], [], fanout.id) is True
    # The job stayed, so the change is not stranded.
    await store.retry_job(fanout.id, at(2), "more")
    assert [j.id for j in await store.claim_jobs([FANOUT], 1, at(3), 60)] == [FANOUT]


# --------------------------------------------------------------------------- outbox states


async def test_attempts_move_a_pending_message_and_its_job(store: Store) -> None:
    await store.create_webhook_endpoint(endpoint("ep1"))
    await queued(store, "m1")
    [job] = await store.claim_jobs(["webhook_send"], 1, at(0), 60)

    assert await store.record_webhook_attempt(
        "m1",
        job.id,
        attempt(500),
        WebhookStatus.pending,
        next_attempt_at=at(30),
        reason="http_500",
        at=at(0),
    )
    stored = await store.get_webhook_message("m1")
    assert stored is not None
    assert (stored.status, stored.attempts, stored.next_attempt_at, stored.reason) == (
        WebhookStatus.pending,
        1,
        at(30),
        "http_500",
    )
    assert stored.last_status_code == 500
    assert await store.claim_jobs(["webhook_send"], 1, at(29), 60) == []
    [job] = await store.claim_jobs(["webhook_send"], 1, at(30), 60)

    assert await store.record_webhook_attempt(
        "m1", job.id, attempt(200, 30), WebhookStatus.delivered, at=at(30)
    )
    stored = await store.get_webhook_message("m1")
    assert stored is not None
    assert (stored.status, stored.attempts, stored.last_status_code) == (
        WebhookStatus.delivered,
        2,
        200,
    )
    assert [a.status_code for a in await store.webhook_attempts("m1")] == [500, 200]
    assert await store.claim_jobs(["webhook_send"], 1, at(1000), 60) == []
    # A delivered message does not move again.
    assert not await store.record_webhook_attempt(
        "m1", job.id, attempt(500), WebhookStatus.failed, reason="x", at=at(40)
    )
    assert [a.status_code for a in await store.webhook_attempts("m1")] == [500, 200]


async def test_response_text_is_cut_to_200_characters(store: Store) -> None:
    await store.create_webhook_endpoint(endpoint("ep1"))
    await queued(store, "m1")
    long = attempt(400).model_copy(update={"response": "x" * 5000})
    await store.record_webhook_attempt(
        "m1", "webhook_send:m1", long, WebhookStatus.failed, reason="http_400", at=at(0)
    )
    [stored] = await store.webhook_attempts("m1")
    assert stored.response == "x" * 200


async def test_list_messages_filters_and_pages(store: Store) -> None:
    await store.create_webhook_endpoint(endpoint("ep1"))
    await store.create_webhook_endpoint(endpoint("ep2"))
    await queued(store, "m1", "m2")
    await queued(store, "m3", endpoint_id="ep2")
    await store.record_webhook_attempt(
        "m2", "webhook_send:m2", attempt(400), WebhookStatus.failed, reason="http_400", at=at(1)
    )
    assert [m.id for m in await store.list_webhook_messages(A, status=WebhookStatus.failed)] == [
        "m2"
    ]
    assert sorted(m.id for m in await store.list_webhook_messages(A, endpoint_id="ep2")) == ["m3"]
    assert len(await store.list_webhook_messages(A, limit=2)) == 2
    assert await store.list_webhook_messages(A, before=T0) == []
    assert await store.list_webhook_messages(B) == []


async def test_disable_fails_pending_messages_only(store: Store) -> None:
    await store.create_webhook_endpoint(endpoint("ep1"))
    await queued(store, "m1", "m2", "m3")
    await store.record_webhook_attempt(
        "m3", "webhook_send:m3", attempt(200), WebhookStatus.delivered, at=at(1)
    )
    assert await store.disable_webhook_endpoint(B, "ep1", "endpoint_gone", at(2)) == 0
    assert await store.disable_webhook_endpoint(A, "ep1", "endpoint_gone", at(2)) == 2
    ep = await store.get_webhook_endpoint(A, "ep1")
    assert ep is not None and (ep.enabled, ep.disabled_reason) == (False, "endpoint_gone")
    statuses = {m.id: (m.status, m.reason) for m in await store.list_webhook_messages(A)}
    assert statuses == {
        "m1": (WebhookStatus.failed, "endpoint_gone"),
        "m2": (WebhookStatus.failed, "endpoint_gone"),
        "m3": (WebhookStatus.delivered, None),
    }
    assert await store.claim_jobs(["webhook_send"], 10, at(100), 60) == []


async def test_replay_makes_a_failed_message_pending_again(store: Store) -> None:
    await store.create_webhook_endpoint(endpoint("ep1"))
    await queued(store, "m1")
    with pytest.raises(Conflict):
        await store.replay_webhook_message(A, "m1", at(1))  # still pending
    await store.record_webhook_attempt(
        "m1", "webhook_send:m1", attempt(400), WebhookStatus.failed, reason="http_400", at=at(1)
    )
    assert await store.claim_jobs(["webhook_send"], 10, at(2), 60) == []
    assert await store.replay_webhook_message(B, "m1", at(2)) is None
    assert await store.replay_webhook_message(A, "nope", at(2)) is None

    replayed = await store.replay_webhook_message(A, "m1", at(5))
    assert replayed is not None
    assert (replayed.id, replayed.status, replayed.attempts, replayed.next_attempt_at) == (
        "m1",
        WebhookStatus.pending,
        0,
        at(5),
    )
    [job] = await store.claim_jobs(["webhook_send"], 10, at(5), 60)
    assert (job.id, job.ref, job.tenant_id) == ("webhook_send:m1", "m1", A)
    # The earlier attempts are kept.
    assert [a.status_code for a in await store.webhook_attempts("m1")] == [400]


async def test_outbox_survives_reopening(backend: Backend) -> None:
    async with backend.open() as store:
        await store.create_webhook_endpoint(endpoint("ep1"))
        await store.append_change(A, "message.reached", {"n": 1}, at(1))
        await queued(store, "m1")
    async with backend.open() as store:
        assert await store.get_webhook_message("m1") is not None
        changes, _ = await store.changes_since(0, 10)
        assert [c.data["n"] for c in changes] == [1]
        # Changes keep being recorded after reopening.
        await store.append_change(A, "message.reached", {"n": 2}, at(2))
        changes, _ = await store.changes_since(0, 10)
        assert [c.data["n"] for c in changes] == [1, 2]
