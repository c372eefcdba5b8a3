"""Contract: purge_before removes messages, deliveries, history, reads and replies older
than the retention cutoff, absence records with their event ids and explanations, and
finished webhook outbox messages with their attempts, and nothing newer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.models import (
    AbsenceExplanation,
    AbsenceKind,
    AbsenceRecord,
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

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
A = "tenant-a"
DAY = 86_400


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def message(event: str, created: datetime) -> Message:
    return Message(
        id=derive_id(A, event),
        tenant_id=A,
        event_id=event,
        event_type="message.created",
        body_hash="h",
        category=Category.general,
        subject="Subject",
        body="Body",
        audience=Audience(groups=["g1"]),
        created_at=created,
    )


def delivery(msg: Message, recipient: str, channel: str, address: str | None = None) -> Delivery:
    return Delivery(
        id=Delivery.make_id(A, msg.event_id, recipient, channel),
        tenant_id=A,
        message_id=msg.id,
        recipient_id=recipient,
        recipient_role=Role.guardian,
        channel=channel,
        address=address,
        language="nb",
        created_at=msg.created_at,
        updated_at=msg.created_at,
    )


def reply(rid: str, msg: Message | None, received: datetime) -> Reply:
    return Reply(
        id=rid,
        tenant_id=A,
        channel="sms",
        message_id=None if msg is None else msg.id,
        person_id="p1",
        body="Ja",
        received_at=received,
    )


async def accept(store: Store, msg: Message) -> None:
    await store.accept_message(
        msg, Job(id=f"plan:{msg.id}", tenant_id=A, kind="plan", ref=msg.id, due_at=T0)
    )


async def test_purge_removes_only_what_is_older_than_the_cutoff(store: Store) -> None:
    old, new = message("old", T0), message("new", at(400 * DAY))
    await accept(store, old)
    await accept(store, new)
    old_inapp = delivery(old, "p1", "inapp")
    old_sms = delivery(old, "p1", "sms", "+4791234567")
    new_inapp = delivery(new, "p1", "inapp")
    await store.add_deliveries([old_inapp, old_sms, new_inapp], [])
    assert await store.transition(old_sms.id, DeliveryStatus.sent, at(1), provider_id="SM-old")
    assert await store.mark_read(A, "p1", old.id, at(2), "inapp")
    assert await store.mark_read(A, "p1", new.id, at(400 * DAY + 2), "inapp")
    assert await store.add_reply(reply("r-old", old, at(3)))
    assert await store.add_reply(reply("r-loose", None, at(4)))
    assert await store.add_reply(reply("r-new", new, at(400 * DAY + 3)))

    assert await store.purge_before(at(396 * DAY)) == 2

    assert await store.get_message(A, old.id) is None
    assert await store.get_deliveries([old_inapp.id, old_sms.id]) == {}
    assert await store.history([old_sms.id]) == {old_sms.id: []}
    assert await store.list_deliveries(A, old.id) == []
    assert await store.count_by_status(A, old.id) == {}
    assert await store.list_replies(A, old.id) == []
    assert await store.list_reads(A, old.id) == []
    assert await store.delivery_by_provider_id("sms", "SM-old") is None
    inbox = await store.list_inbox(A, "p1", now=at(401 * DAY))
    assert [i.message_id for i in inbox] == [new.id]
    # what is newer stays, counters included
    assert await store.get_message(A, new.id) is not None
    assert await store.get_delivery(new_inapp.id) is not None
    assert [r.id for r in await store.list_replies(A, new.id)] == ["r-new"]
    assert [r.person_id for r in await store.list_reads(A, new.id)] == ["p1"]
    assert await store.delivery_stats() == {("inapp", "read"): 1}
    assert await store.purge_before(at(396 * DAY)) == 0
    # a later cutoff takes the rest
    assert await store.purge_before(at(800 * DAY)) == 1
    assert await store.get_message(A, new.id) is None
    assert await store.delivery_stats() == {}


# --------------------------------------------------------------------------- absence


def absence(msg: Message, key: str) -> AbsenceRecord:
    return AbsenceRecord(
        tenant_id=A,
        message_id=msg.id,
        event_id=msg.event_id,
        kind="recorded",
        child_id="c1",
        key=key,
        data={"child_id": "c1", "date": key.split("|")[1]},
        marks=[msg.event_id],
        created_at=msg.created_at,
        updated_at=msg.created_at,
    )


def explanation(eid: str, msg: Message, given: datetime) -> AbsenceExplanation:
    return AbsenceExplanation(
        id=eid,
        tenant_id=A,
        message_id=msg.id,
        child_id="c1",
        person_id="p1",
        kind=AbsenceKind.sick,
        text="Hun har feber",
        via="sms",
        at=given,
    )


async def test_purge_removes_old_absence_records_with_event_ids_and_explanations(
    store: Store,
) -> None:
    old_key, new_key = "c1|2026-11-27|n2", "c1|2028-01-01|n2"
    old_msg, new_msg = message("abs-old", T0), message("abs-new", at(400 * DAY))
    await accept(store, old_msg)
    await accept(store, new_msg)
    old, new = absence(old_msg, old_key), absence(new_msg, new_key)
    assert (await store.claim_absence(old, "h", T0)).outcome == "new"
    repeated = absence(message("abs-old-2", at(600)), old_key)
    assert (await store.claim_absence(repeated, "h2", T0)).outcome == "merged"
    assert await store.cancel_absence(A, old.message_id, "abs-old-cancel", at(700)) is not None
    assert (await store.claim_absence(new, "h", at(400 * DAY))).outcome == "new"
    assert await store.add_absence_explanation(explanation("x-old", old_msg, at(800)))
    assert await store.add_absence_explanation(explanation("x-new", new_msg, at(400 * DAY + 9)))

    await store.purge_before(at(396 * DAY))

    assert await store.get_absence(A, old.message_id) is None
    for event_id in ("abs-old", "abs-old-2", "abs-old-cancel"):
        assert await store.find_absence(A, event_id=event_id) is None
    assert await store.find_absence(A, key=old_key) is None
    assert await store.list_absence_explanations(A, old.message_id) == []
    assert await store.absences_on(A, ["2026-11-27"]) == []
    # what is newer stays
    assert await store.absences_on(A, ["2028-01-01"]) == [new]
    assert await store.get_absence(A, new.message_id) == new
    assert await store.find_absence(A, event_id="abs-new") == new
    assert await store.find_absence(A, key=new_key) == new
    kept = await store.list_absence_explanations(A, new.message_id)
    assert [x.id for x in kept] == ["x-new"]
    # nothing remembers the purged event id: a replay of it is a new claim
    again = await store.claim_absence(old, "h", T0)
    assert (again.outcome, again.record.marks) == ("new", ["abs-old"])


# --------------------------------------------------------------------------- webhook outbox


def outbox(mid: str, created: datetime) -> WebhookMessage:
    return WebhookMessage(
        id=mid,
        tenant_id=A,
        endpoint_id="ep1",
        event_type="reply.received",
        body='{"type":"reply.received","data":{"body":"Ja, hun kommer"}}',
        next_attempt_at=created,
        created_at=created,
        updated_at=created,
    )


async def finish(store: Store, mid: str, code: int, status: WebhookStatus, when: datetime) -> None:
    attempt = WebhookAttempt(at=when, status_code=code, duration_ms=5, response="ok")
    due = when + timedelta(minutes=5) if status is WebhookStatus.pending else None
    assert await store.record_webhook_attempt(
        mid, f"webhook_send:{mid}", attempt, status, next_attempt_at=due, at=when
    )


async def test_purge_removes_finished_old_webhook_messages_with_their_attempts(
    store: Store,
) -> None:
    await accept(store, message("wh", T0))
    await store.create_webhook_endpoint(
        WebhookEndpoint(
            id="ep1",
            tenant_id=A,
            url="https://platform.example/hook",
            event_types=["reply.received"],
            secret="whsec_" + "A" * 32,
            created_at=T0,
            updated_at=T0,
        )
    )
    rows = [
        outbox("w-delivered", T0),
        outbox("w-failed", at(1)),
        outbox("w-pending", at(2)),
        outbox("w-new", at(400 * DAY)),
    ]
    jobs = [
        Job(id=f"webhook_send:{m.id}", tenant_id=A, kind="webhook_send", ref=m.id, due_at=T0)
        for m in rows
    ]
    cursor = await store.webhook_cursor()
    await store.enqueue_webhooks(cursor, cursor, rows, jobs, "webhook_fanout")
    await finish(store, "w-delivered", 200, WebhookStatus.delivered, at(10))
    await finish(store, "w-failed", 410, WebhookStatus.failed, at(11))
    await finish(store, "w-pending", 503, WebhookStatus.pending, at(12))
    await finish(store, "w-new", 200, WebhookStatus.delivered, at(400 * DAY + 1))

    await store.purge_before(at(396 * DAY))

    for gone in ("w-delivered", "w-failed"):
        assert await store.get_webhook_message(gone) is None
        assert await store.webhook_attempts(gone) == []
    # a message still being retried stays with its attempts, and so does what is newer
    pending = await store.get_webhook_message("w-pending")
    assert pending is not None and pending.status is WebhookStatus.pending
    assert [a.status_code for a in await store.webhook_attempts("w-pending")] == [503]
    assert [a.status_code for a in await store.webhook_attempts("w-new")] == [200]
    listed = await store.list_webhook_messages(A)
    assert [m.id for m in listed] == ["w-new", "w-pending"]
    assert await store.list_webhook_messages(A, status=WebhookStatus.failed) == []
    assert [m.id for m in await store.list_webhook_messages(A, endpoint_id="ep1")] == [
        "w-new",
        "w-pending",
    ]

    # once it finishes, the next purge takes it; the endpoint itself is kept
    await finish(store, "w-pending", 500, WebhookStatus.failed, at(396 * DAY))
    await store.purge_before(at(396 * DAY))
    assert await store.get_webhook_message("w-pending") is None
    assert await store.webhook_attempts("w-pending") == []
    assert [m.id for m in await store.list_webhook_messages(A)] == ["w-new"]
    assert [e.id for e in await store.list_webhook_endpoints(A)] == ["ep1"]
