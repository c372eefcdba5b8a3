"""Twilio's status callbacks and inbound SMS through the real app, posted and signed by
the Twilio-like peer exactly as Twilio would, to a gateway "behind a proxy" (the
public URL the signature covers is not the address the request really goes to)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from channels.sms import SmsChannel
from gateway import sms_status
from gateway.api.app import create_app
from gateway.api.context import AppContext
from gateway.clock import ManualClock
from gateway.constants import JOB_CONTACT_FAILING, JOB_SMS_STATUS
from gateway.followups import run_contact_job
from gateway.metrics import CALLBACKS_PARKED
from gateway.models import (
    Audience,
    Category,
    Delivery,
    DeliveryStatus,
    DirectoryBatch,
    Job,
    Message,
    Person,
    Relation,
    Rendered,
    Role,
    Unit,
    UnitKind,
    derive_id,
)
from gateway.settings import Settings, TwilioSettings
from gateway.store import Store
from tests.conftest import TenantCreds
from tests.peers.twilio import TwilioPeer

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "callback-auth-token-" + "y" * 12
SHARED_KEY = "shared-key-secret-" + "z" * 14
PUBLIC_URL = "https://budbringer.asker.example"
STATUS_URL = f"{PUBLIC_URL}/v1/providers/twilio/status"
INBOUND_URL = f"{PUBLIC_URL}/v1/providers/twilio/inbound"
OUR_NUMBER = "+4722000000"
GUARDIAN_PHONE = "+4791234567"
AppClient = TestClient[web.Request, web.Application]
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@pytest.fixture
def settings(settings: Settings) -> Settings:
    twilio = TwilioSettings(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        default_sender="Solberg",
        webhook_signing_key=SHARED_KEY,
    )
    return settings.model_copy(update={"public_url": PUBLIC_URL, "twilio": twilio})


@pytest.fixture
async def peer() -> AsyncIterator[TwilioPeer]:
    async with TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        yield twilio


@pytest.fixture
async def sms(settings: Settings, peer: TwilioPeer) -> AsyncIterator[SmsChannel]:
    assert settings.twilio is not None
    channel = SmsChannel(
        settings.twilio.model_copy(update={"base_url": peer.base_url}), settings.public_url
    )
    await channel.start()
    try:
        yield channel
    finally:
        await channel.aclose()


def via(client: AppClient) -> str:
    """Where the app really listens (the peer signs for PUBLIC_URL but posts here)."""
    return str(client.make_url("/"))


async def seed_directory(store: Store, tenant_id: str) -> None:
    await store.apply_directory(
        tenant_id,
        DirectoryBatch(
            units=[Unit(id="u1", kind=UnitKind.school, name="Solberg skole")],
            persons=[
                Person(id="c1", role=Role.child, given_name="Emma", birth_date="2016-03-01"),
                Person(id="g1", role=Role.guardian, given_name="Kari", phone=GUARDIAN_PHONE),
            ],
            relations=[Relation(child_id="c1", guardian_id="g1", parental_responsibility=True)],
        ),
    )


async def reloaded(store: Store, delivery_id: str, status: DeliveryStatus) -> Delivery:
    """The delivery as stored now, asserting its status."""
    stored = await store.get_delivery(delivery_id)
    assert stored is not None
    assert stored.status is status
    return stored


async def sent_delivery(
    store: Store,
    clock: ManualClock,
    sms: SmsChannel,
    tenant_id: str,
    event_id: str = "e1",
    *,
    commit: bool = True,
) -> Delivery:
    """A message with one SMS delivery, handed to the peer and (``commit``) recorded as sent."""
    now = clock.now()
    message = Message(
        id=derive_id(tenant_id, event_id),
        tenant_id=tenant_id,
        event_id=event_id,
        event_type="message.created",
        body_hash="0" * 64,
        category=Category.general,
        subject="Foreldremøte",
        body="Foreldremøte tirsdag kl. 18.",
        audience=Audience(children=["c1"]),
        created_at=now,
    )
    job = Job(id=f"plan:{message.id}", tenant_id=tenant_id, kind="plan", ref=message.id, due_at=now)
    await store.accept_message(message, job)
    delivery = Delivery(
        id=Delivery.make_id(tenant_id, event_id, "g1", "sms"),
        tenant_id=tenant_id,
        message_id=message.id,
        recipient_id="g1",
        recipient_role=Role.guardian,
        channel="sms",
        address=GUARDIAN_PHONE,
        language="nb",
        child_ids=["c1"],
        created_at=now,
        updated_at=now,
    )
    await store.add_deliveries([delivery], [])
    receipt = await sms.send(delivery, Rendered(subject="s", text=message.body))
    if not commit:
        return delivery
    await store.transition(
        delivery.id,
        receipt.status,
        now,
        provider_id=receipt.provider_id,
        segments=receipt.segments,
    )
    stored = await reloaded(store, delivery.id, DeliveryStatus.sent)
    return stored


async def run_contact_jobs(store: Store, clock: ManualClock) -> int:
    """Do the ``contact_failing`` jobs that are due (the dispatcher's part); how many."""
    jobs = await store.claim_jobs([JOB_CONTACT_FAILING], 100, clock.now(), 60)
    for job in jobs:
        await run_contact_job(store, job)
    return len(jobs)


async def statuses(store: Store, delivery_id: str) -> list[DeliveryStatus]:
    history = await store.history([delivery_id])
    return [change.status for change in history[delivery_id]]


# ------------------------------------------------------------------ status callbacks


async def test_signed_callbacks_move_the_delivery_forward(
    app_client: AppClient,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    peer: TwilioPeer,
    sms: SmsChannel,
) -> None:
    delivery = await sent_delivery(store, clock, sms, tenant.tenant.id)
    assert peer.callback_urls[str(delivery.provider_id)] == f"{STATUS_URL}?d={delivery.id}"

    clock.advance(5)
    result = await peer.send_status(str(delivery.provider_id), "delivered", via=via(app_client))
    assert (result.status, result.text) == (200, "")

    stored = await reloaded(store, delivery.id, DeliveryStatus.delivered)
    assert stored.segments == 1
    assert await statuses(store, delivery.id) == [
        DeliveryStatus.planned,
        DeliveryStatus.sent,
        DeliveryStatus.delivered,
    ]


async def test_out_of_order_and_duplicate_callbacks_are_harmless(
    app_client: AppClient,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    peer: TwilioPeer,
    sms: SmsChannel,
) -> None:
    delivery = await sent_delivery(store, clock, sms, tenant.tenant.id)
    sid = str(delivery.provider_id)
    # delivered arrives first, then the late queued/sending/sent, then duplicates
    for status in ("delivered", "queued", "sending", "sent", "delivered", "delivered"):
        clock.advance(1)
        result = await peer.send_status(sid, status, via=via(app_client))
        assert result.status == 200
    # a late failure after delivery cannot undo it either
    result = await peer.send_status(sid, "undelivered", error_code=30003, via=via(app_client))
    assert result.status == 200

    stored = await reloaded(store, delivery.id, DeliveryStatus.delivered)
    assert stored.reason is None
    assert await statuses(store, delivery.id) == [
        DeliveryStatus.planned,
        DeliveryStatus.sent,
        DeliveryStatus.delivered,
    ]


async def test_read_status_from_twilio_is_applied(
    app_client: AppClient,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    peer: TwilioPeer,
    sms: SmsChannel,
) -> None:
    delivery = await sent_delivery(store, clock, sms, tenant.tenant.id)
    await peer.send_status(str(delivery.provider_id), "read", via=via(app_client))
    await reloaded(store, delivery.id, DeliveryStatus.read)


@pytest.mark.parametrize("signature", [None, "wrong", "forged-with-another-token"])
async def test_unsigned_or_wrongly_signed_callbacks_are_refused(
    app_client: AppClient,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    peer: TwilioPeer,
    sms: SmsChannel,
    signature: str | None,
) -> None:
    delivery = await sent_delivery(store, clock, sms, tenant.tenant.id)
    sid = str(delivery.provider_id)
    if signature is None:
        result = await peer.send_status(sid, "delivered", via=via(app_client), signed=False)
    elif signature == "wrong":
        result = await peer.send_status(sid, "delivered", via=via(app_client), signature="AAAA=")
    else:
        forger = TwilioPeer(ACCOUNT_SID, "another-token")
        params = peer.status_params(sid, "delivered")
        forged = forger.sign(STATUS_URL, params)["X-Twilio-Signature"]
        result = await peer.send_status(sid, "delivered", via=via(app_client), signature=forged)

    assert result.status == 403
    assert result.content_type.startswith("application/json")
    await reloaded(store, delivery.id, DeliveryStatus.sent)


async def test_a_signature_for_another_url_or_altered_params_is_refused(
    app_client: AppClient,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    peer: TwilioPeer,
    sms: SmsChannel,
) -> None:
    delivery = await sent_delivery(store, clock, sms, tenant.tenant.id)
    sid = str(delivery.provider_id)
    params = peer.status_params(sid, "delivered")
    # signed for the address the app really listens on, not the public URL
    local = f"{via(app_client).rstrip('/')}/v1/providers/twilio/status"
    signed_locally = peer.sign(local, params)["X-Twilio-Signature"]
    result = await peer.post_webhook(
        STATUS_URL, params, via=via(app_client), signature=signed_locally
    )
    assert result.status == 403
    # a valid signature, but the status was changed after signing
    genuine = peer.sign(STATUS_URL, peer.status_params(sid, "sent"))["X-Twilio-Signature"]
    result = await peer.post_webhook(STATUS_URL, params, via=via(app_client), signature=genuine)
    assert result.status == 403
    await reloaded(store, delivery.id, DeliveryStatus.sent)


async def test_dead_number_fails_the_delivery_and_marks_the_phone(
    app_client: AppClient,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    peer: TwilioPeer,
    sms: SmsChannel,
) -> None:
    tenant_id = tenant.tenant.id
    await seed_directory(store, tenant_id)
    delivery = await sent_delivery(store, clock, sms, tenant_id)
    result = await peer.send_status(
        str(delivery.provider_id), "undelivered", error_code=30006, via=via(app_client)
    )
    assert result.status == 200

    stored = await reloaded(store, delivery.id, DeliveryStatus.undelivered)
    assert stored.reason == "twilio_30006"
    assert await run_contact_jobs(store, clock) == 1
    snapshot = await store.load_audience(tenant_id, Audience(children=["c1"]))
    assert snapshot.failing == {"g1": ["phone"]}


async def test_other_failures_do_not_mark_the_phone(
    app_client: AppClient,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    peer: TwilioPeer,
    sms: SmsChannel,
) -> None:
    tenant_id = tenant.tenant.id
    await seed_directory(store, tenant_id)
    delivery = await sent_delivery(store, clock, sms, tenant_id)
    # 30003: handset unreachable (switched off) says nothing lasting about the number
    await peer.send_status(
        str(delivery.provider_id), "failed", error_code=30003, via=via(app_client)
    )
    stored = await reloaded(store, delivery.id, DeliveryStatus.failed)
    assert stored.reason == "twilio_30003"
    assert await run_contact_jobs(store, clock) == 0
    snapshot = await store.load_audience(tenant_id, Audience(children=["c1"]))
    assert snapshot.failing == {}


async def test_a_callback_for_an_unknown_sid_is_parked_until_the_sid_appears(
    app_client: AppClient,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    peer: TwilioPeer,
    sms: SmsChannel,
) -> None:
    """A callback whose URL names no delivery (sent before the URL did) and whose SID is not
    stored yet is acknowledged, kept as a durable job and applied once the SID is known."""
    delivery = await sent_delivery(store, clock, sms, tenant.tenant.id)
    early_sid = "SM" + "9" * 32
    params = {"AccountSid": ACCOUNT_SID, "MessageSid": early_sid, "MessageStatus": "delivered"}
    result = await peer.post_webhook(STATUS_URL, params, via=via(app_client))
    assert (result.status, result.text) == (200, "")
    wake = asyncio.Event()

    async def run_parked() -> int:
        jobs = await store.claim_jobs([JOB_SMS_STATUS], 10, clock.now(), 60)
        for job in jobs:
            await sms_status.run_parked(store, job, clock.now(), wake)
        return len(jobs)

    clock.advance(3)
    assert await run_parked() == 1  # still unknown: waits again
    await reloaded(store, delivery.id, DeliveryStatus.sent)
    # The send's outcome commits (here: the SID is stored on the delivery).
    await store.transition(delivery.id, DeliveryStatus.sent, clock.now(), provider_id=early_sid)
    clock.advance(3)
    assert await run_parked() == 1
    await reloaded(store, delivery.id, DeliveryStatus.delivered)
    clock.advance(3600)
    assert await run_parked() == 0  # done with


async def test_a_parked_callback_gives_up_after_its_wait(
    app_client: AppClient, store: Store, clock: ManualClock, peer: TwilioPeer
) -> None:
    params = {"AccountSid": ACCOUNT_SID, "MessageSid": "SM" + "8" * 32, "MessageStatus": "sent"}
    await peer.post_webhook(STATUS_URL, params, via=via(app_client))
    given_up = CALLBACKS_PARKED.labels("given_up")._value.get()
    clock.advance(sms_status.PARK_LIMIT.total_seconds() + 1)
    [job] = await store.claim_jobs([JOB_SMS_STATUS], 10, clock.now(), 60)
    await sms_status.run_parked(store, job, clock.now(), asyncio.Event())
    assert CALLBACKS_PARKED.labels("given_up")._value.get() == given_up + 1
    clock.advance(3600)
    assert await store.claim_jobs([JOB_SMS_STATUS], 10, clock.now(), 60) == []


async def test_a_callback_naming_its_delivery_applies_before_the_sid_is_stored(
    app_client: AppClient,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    peer: TwilioPeer,
    sms: SmsChannel,
) -> None:
    """The early callback: the send's outcome (with the SID) is not committed yet."""
    delivery = await sent_delivery(store, clock, sms, tenant.tenant.id, commit=False)
    [sid] = peer.messages
    result = await peer.send_status(sid, "delivered", via=via(app_client))
    assert result.status == 200
    stored = await reloaded(store, delivery.id, DeliveryStatus.delivered)
    assert stored.provider_id == sid
    # The late outcome of the send moves nothing back.
    assert not await store.finish_send(
        f"send:{delivery.id}", delivery.id, DeliveryStatus.sent, clock.now(), provider_id=sid
    )
    await reloaded(store, delivery.id, DeliveryStatus.delivered)


async def test_sha256_shared_key_signatures_are_accepted(
    app_client: AppClient,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    peer: TwilioPeer,
    sms: SmsChannel,
) -> None:
    delivery = await sent_delivery(store, clock, sms, tenant.tenant.id)
    peer.signing_key = SHARED_KEY
    peer.algorithm = "HMAC_SHA256"
    result = await peer.send_status(str(delivery.provider_id), "delivered", via=via(app_client))
    assert result.status == 200
    await reloaded(store, delivery.id, DeliveryStatus.delivered)


async def test_sha256_only_refuses_sha1_signatures(
    settings: Settings, store: Store, clock: ManualClock, tenant: TenantCreds, peer: TwilioPeer
) -> None:
    assert settings.twilio is not None
    strict = settings.model_copy(
        update={"twilio": settings.twilio.model_copy(update={"hmac_sha256_signatures": True})}
    )
    ctx = AppContext(settings=strict, store=store, clock=clock)
    async with TestClient(TestServer(create_app(ctx))) as client:
        params = {"AccountSid": ACCOUNT_SID, "MessageSid": "SM" + "1" * 32, "MessageStatus": "sent"}
        sha1 = await peer.post_webhook(STATUS_URL, params, via=via(client))
        peer.signing_key, peer.algorithm = SHARED_KEY, "HMAC_SHA256"
        sha256 = await peer.post_webhook(STATUS_URL, params, via=via(client))
    assert (sha1.status, sha256.status) == (403, 200)


async def test_routes_answer_404_when_twilio_is_not_configured(
    settings: Settings, store: Store, clock: ManualClock, peer: TwilioPeer
) -> None:
    ctx = AppContext(
        settings=settings.model_copy(update={"twilio": None}), store=store, clock=clock
    )
    async with TestClient(TestServer(create_app(ctx))) as client:
        for path in ("/v1/providers/twilio/status", "/v1/providers/twilio/inbound"):
            response = await client.post(path, data={"MessageSid": "SM1"})
            assert response.status == 404
            assert await response.json() == {
                "error": "not_found",
                "message": "twilio is not configured",
            }


# ------------------------------------------------------------------ inbound SMS


async def test_inbound_reply_is_stored_and_linked_to_the_latest_message(
    app_client: AppClient,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    peer: TwilioPeer,
    sms: SmsChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant_id = tenant.tenant.id
    older = await sent_delivery(store, clock, sms, tenant_id, event_id="e1")
    clock.advance(3600)
    latest = await sent_delivery(store, clock, sms, tenant_id, event_id="e2")
    clock.advance(60)
    body = "Emma kommer ikke i dag, hun er syk"

    with caplog.at_level(logging.DEBUG):
        result = await peer.send_inbound(
            INBOUND_URL,
            from_=GUARDIAN_PHONE,
            to=OUR_NUMBER,
            body=body,
            sid="SM" + "a" * 32,
            via=via(app_client),
        )
        # Twilio redelivers the same webhook: nothing new is stored
        again = await peer.send_inbound(
            INBOUND_URL,
            from_=GUARDIAN_PHONE,
            to=OUR_NUMBER,
            body=body,
            sid="SM" + "a" * 32,
            via=via(app_client),
        )

    for answer in (result, again):
        assert answer.status == 200
        assert answer.text == EMPTY_TWIML
        assert answer.content_type.startswith("text/xml")
    assert await store.list_replies(tenant_id, older.message_id) == []
    [reply] = await store.list_replies(tenant_id, latest.message_id)
    assert reply.body == body
    assert reply.person_id == "g1"
    assert reply.channel == "sms"
    assert reply.provider_id == "SM" + "a" * 32
    assert reply.received_at == clock.now()
    # replies and numbers are personal data: never in our logs, nor aiohttp's or twilio's
    # (aiosqlite's DEBUG log echoes SQL parameters: it must stay above DEBUG in production)
    logged = "\n".join(
        record.getMessage() + repr(record.__dict__)
        for record in caplog.records
        if not record.name.startswith("aiosqlite")
    )
    assert "syk" not in logged
    assert "91234567" not in logged


async def test_inbound_from_an_unknown_number_stores_nothing(
    app_client: AppClient,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    peer: TwilioPeer,
    sms: SmsChannel,
) -> None:
    delivery = await sent_delivery(store, clock, sms, tenant.tenant.id)
    result = await peer.send_inbound(
        INBOUND_URL, from_="+4741234567", to=OUR_NUMBER, body="Hvem er dette?", via=via(app_client)
    )
    assert (result.status, result.text) == (200, EMPTY_TWIML)
    assert await store.list_replies(tenant.tenant.id, delivery.message_id) == []


async def test_unsigned_inbound_is_refused(
    app_client: AppClient,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    peer: TwilioPeer,
    sms: SmsChannel,
) -> None:
    delivery = await sent_delivery(store, clock, sms, tenant.tenant.id)
    result = await peer.send_inbound(
        INBOUND_URL,
        from_=GUARDIAN_PHONE,
        to=OUR_NUMBER,
        body="Hei",
        via=via(app_client),
        signed=False,
    )
    assert result.status == 403
    assert await store.list_replies(tenant.tenant.id, delivery.message_id) == []


async def test_callbacks_with_another_account_sid_are_refused(
    app_client: AppClient, peer: TwilioPeer
) -> None:
    params: dict[str, Any] = {
        "AccountSid": "AC" + "f" * 32,
        "MessageSid": "SM" + "2" * 32,
        "MessageStatus": "delivered",
    }
    result = await peer.post_webhook(STATUS_URL, params, via=via(app_client))
    assert result.status == 403
