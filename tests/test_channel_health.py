"""The per-channel circuit breaker and the channel state the operator sees, against a
real SMTP server (aiosmtpd) that refuses with 421 or is not there at all."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.app import create_app
from gateway.api.context import CTX, AppContext
from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.models import DeliveryStatus, DirectoryBatch
from gateway.service import Service
from gateway.settings import Settings
from gateway.store import Store
from tests.conftest import SECRET_KEY, TenantCreds
from tests.peers.smtp import SmtpPeer
from tests.test_dispatcher import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    Rig,
    directory,
    family,
    peered_rig,
)

FAMILIES = 100
STEP = 0.25  # seconds of (manual) time per dispatcher round


@pytest.fixture
async def rig(
    store: Store, clock: ManualClock, tenant: TenantCreds, settings: Settings, tmp_path: Path
) -> AsyncIterator[Rig]:
    async with peered_rig(store, clock, tenant, settings, tmp_path) as built:
        yield built


def breaker_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, Any, Any]]:
    return [
        (r.levelno, r.getMessage(), getattr(r, "channel", None), getattr(r, "code", None))
        for r in caplog.records
        if r.name == "gateway.channel_health"
    ]


async def test_a_relay_answering_421_for_30_s_is_probed_not_hammered(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: a relay refusing with 421 for 30 s got ~265 connections a second, every
    delivery retrying on its own. Now the channel pauses and one send probes it."""
    await rig.load(directory(*(family(n) for n in range(1, FAMILIES + 1))))
    rig.smtp.reply_to_mail("421 4.3.2 Service not available, closing transmission channel")
    message = await rig.post("e1", {"groups": ["g1"]})
    caplog.set_level(logging.INFO, logger="gateway.channel_health")

    window = 30.0
    for _ in range(int(window / STEP)):
        await rig.advance(STEP)
    during = rig.smtp.connections
    # At most a few attempts a second: the sends already in flight when the breaker
    # opened (the concurrency, 8), then one probe per pause (1, 2, 4, ... s).
    assert during <= 2 * window, during
    health = rig.dispatcher.health.snapshot()["email"]
    assert (health["state"], health["last_error"]) == ("degraded", "smtp_421")
    assert all(d.status is not DeliveryStatus.failed for d in await rig.deliveries(message))
    # One WARNING for the channel going bad (not one per delivery), no address in it.
    warnings = [line for line in breaker_lines(caplog) if line[0] == logging.WARNING]
    assert [(w[2], w[3]) for w in warnings] == [("email", "smtp_421")]
    assert "@" not in caplog.text

    # The relay takes mail again: the next probe finds out, the rest follows at once.
    rig.smtp.reply_to_mail(None)
    probed_at = None
    for _ in range(int(2 * 60 / STEP)):
        await rig.advance(STEP)
        if probed_at is None and rig.smtp.received:
            probed_at = rig.clock.now()
        if len(rig.smtp.received) == FAMILIES:
            break
    # The sends that waited go right after the probe that got through (manual time).
    assert probed_at is not None and (rig.clock.now() - probed_at).total_seconds() <= 6
    emails = await rig.deliveries(message, "email")
    assert [d.status for d in emails] == [DeliveryStatus.sent] * FAMILIES
    assert len(rig.smtp.received) == FAMILIES  # each exactly once
    assert rig.dispatcher.health.snapshot()["email"]["state"] == "ok"
    infos = [line for line in breaker_lines(caplog) if line[0] == logging.INFO]
    assert [(i[1], i[2]) for i in infos] == [("channel works again", "email")]


async def test_a_relay_down_for_20_minutes_loses_no_email(rig: Rig) -> None:
    """A failed probe is the channel's failure, not its delivery's: it used up one
    delivery's attempts after another (10 each), and an email whose probes failed ten
    times was given up for good, though the relay came back."""
    await rig.load(directory(*(family(n) for n in range(1, 6))))
    await rig.smtp.stop()  # connection refused
    message = await rig.post("e1", {"groups": ["g1"]})
    for _ in range(int(20 * 60 / 5)):
        await rig.advance(5)
    assert rig.dispatcher.health.snapshot()["email"]["state"] == "degraded"
    emails = await rig.deliveries(message, "email")
    assert DeliveryStatus.failed not in {d.status for d in emails}
    await rig.smtp.start()
    for _ in range(int(3 * 60 / STEP)):
        await rig.advance(STEP)
        if len(rig.smtp.received) == 5:
            break
    emails = await rig.deliveries(message, "email")
    assert [d.status for d in emails] == [DeliveryStatus.sent] * 5
    assert len(rig.smtp.received) == 5  # each exactly once


async def test_a_send_the_relay_keeps_refusing_does_not_hold_up_the_channel(rig: Rig) -> None:
    """A 452 after DATA for six mailboxes opens the breaker like a relay in trouble. The
    failed probe goes behind the sends the breaker holds, so another's probe gets
    through, the breaker closes, the other message goes, and the six use up their
    attempts then (the same one was the probe hundreds of times, and the next message
    waited for ever)."""
    bad = [family(n) for n in range(1, 7)]
    good = [family(n, group="g2") for n in range(7, 10)]
    batch = directory(*bad, *good)
    batch["groups"].append({"id": "g2", "unit_id": "u1", "kind": "class", "name": "5B"})
    await rig.load(batch)
    for n in range(1, 7):
        rig.smtp.reply_to_data_for(f"forelder{n}@example.no", "452 4.3.1 Insufficient storage")
    first = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    assert rig.dispatcher.health.snapshot()["email"]["state"] == "degraded"
    second = await rig.post("e2", {"groups": ["g2"]})
    # One probe a round, the rounds a minute apart at most, the six and the three in a
    # fresh order each round: within half an hour one of the three is a probe.
    for _ in range(int(30 * 60 / 5)):
        await rig.advance(5)
        emails = await rig.deliveries(second, "email")
        if all(d.status is DeliveryStatus.sent for d in emails):
            break
    assert [d.status for d in await rig.deliveries(second, "email")] == [DeliveryStatus.sent] * 3
    # Only the six are left, each refused for itself: after the outage grace (6 h)
    # their failures count again, and they give up (and fail over) as any send.
    for _ in range(int(9 * 3600 / 60)):
        await rig.advance(60)
    refused = await rig.deliveries(first, "email")
    assert {d.status for d in refused} == {DeliveryStatus.failed}
    assert {d.reason for d in refused} == {"gave_up:smtp_452"}


@pytest.fixture
async def client(rig: Rig, settings: Settings) -> AsyncIterator[TestClient]:
    """The HTTP API over the rig's store, showing the rig's channel states."""
    ctx = AppContext(
        settings=settings,
        store=rig.store,
        clock=rig.clock,
        secret=SECRET_KEY.encode(),
        channel_health=rig.dispatcher.health,
    )
    async with TestClient(TestServer(create_app(ctx))) as test_client:
        yield test_client


async def waiting(
    client: TestClient, tenant: TenantCreds, message_id: str
) -> dict[tuple[str, str], str | None]:
    """(recipient, channel) -> waiting_for, from GET /v1/messages/{id}."""
    resp = await client.get(
        f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    assert resp.status == 200
    return {
        (d["recipient_id"], d["channel"]): d["waiting_for"]
        for d in (await resp.json())["deliveries"]
    }


async def test_failures_below_the_threshold_keep_the_channel_ok(
    rig: Rig, client: TestClient, tenant: TenantCreds
) -> None:
    await rig.load(directory(family(1)))
    rig.smtp.reply_to_mail("421 4.3.2 Try later")
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    assert rig.smtp.connections == 1
    assert rig.dispatcher.health.snapshot()["email"]["state"] == "ok"
    [note] = [v for k, v in (await waiting(client, tenant, message.id)).items() if v]
    assert re.fullmatch(r"retry at 2026-11-27T09:00:0\d\+00:00, attempt 1: smtp_421", note)
    while rig.smtp.connections < 3:  # two more tries, each refused
        await rig.advance(STEP)
    [note] = [v for k, v in (await waiting(client, tenant, message.id)).items() if v]
    assert re.fullmatch(r"retry at 2026-11-27T09:00:\d\d\+00:00, attempt 3: smtp_421", note)
    assert rig.dispatcher.health.snapshot()["email"]["state"] == "ok"  # 3 < 5 in a row
    rig.smtp.reply_to_mail(None)
    await rig.advance(10)
    assert (await rig.one(message, "email")).status is DeliveryStatus.sent
    assert set((await waiting(client, tenant, message.id)).values()) == {None}


async def test_each_waiting_delivery_says_why(
    rig: Rig, client: TestClient, tenant: TenantCreds
) -> None:
    # p1 has quiet hours 08-12 Oslo (until 11:00 UTC); p6 also has a phone.
    prefs = {"p1": {"quiet_start": "08:00", "quiet_end": "12:00"}}
    families = [family(n, phone=n == 6) for n in range(1, 7)]
    await rig.load(directory(*families, preferences=prefs))
    rig.smtp.reply_to_mail("421 4.3.2 Try later")
    rig.twilio.credentials[ACCOUNT_SID] = "not-our-token-" + "z" * 20  # refuses ours
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()

    found = await waiting(client, tenant, message.id)
    assert found[("p1", "email")] == "quiet_hours until 2026-11-27T11:00:00+00:00"
    for n in range(2, 7):
        assert found[(f"p{n}", "email")] == "channel_degraded: email"
    assert found[("p6", "sms")] == "channel_stopped: sms"
    assert found[("p1", "inapp")] is None  # delivered

    rig.smtp.reply_to_mail(None)
    rig.twilio.credentials[ACCOUNT_SID] = AUTH_TOKEN
    for _ in range(int(120 / STEP)):
        await rig.advance(STEP)
    found = await waiting(client, tenant, message.id)
    assert found.pop(("p1", "email")) == "quiet_hours until 2026-11-27T11:00:00+00:00"
    assert set(found.values()) == {None}


async def test_the_staff_page_says_the_email_service_is_down_not_sending(
    rig: Rig, client: TestClient, tenant: TenantCreds
) -> None:
    """A teacher looking at who was not reached saw "e-post sendes" for as long as the
    relay was down: it reads as if it were on its way, or the guardian's fault."""
    batch = directory(*(family(n) for n in range(1, 7)))
    batch["persons"].append(
        {"id": "t1", "role": "staff", "given_name": "Tone", "unit_ids": ["u1"], "group_ids": ["g1"]}
    )
    await rig.load(batch)
    rig.smtp.reply_to_mail("421 4.3.2 Try later")
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    assert rig.dispatcher.health.snapshot()["email"]["state"] == "degraded"
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    resp = await client.post("/v1/staff/t1/tokens", json={}, headers=headers)
    assert resp.status == 201, await resp.text()
    link = (await resp.json())["link"]
    assert (await client.get(urlsplit(link).path)).status == 200  # signed in
    page = await (await client.get(f"/staff/messages/{message.id}")).text()
    assert "e-post venter: tjenesten svarer ikke nå, sendes når den gjør det" in page
    assert "e-post sendes" not in page
    # A process that sends nothing itself (the API alone) has no breaker: the jobs the
    # breaker put off say it (once each came round: its first try's retry says smtp_421).
    for _ in range(int(10 / STEP)):
        await rig.advance(STEP)
    ctx = client.server.app[CTX]
    ctx.channel_health, health = None, ctx.channel_health
    try:
        page = await (await client.get(f"/staff/messages/{message.id}")).text()
    finally:
        ctx.channel_health = health
    assert "e-post venter: tjenesten svarer ikke nå" in page and "e-post sendes" not in page
    rig.smtp.reply_to_mail(None)
    for _ in range(int(90 / STEP)):
        await rig.advance(STEP)
    page = await (await client.get(f"/staff/messages/{message.id}")).text()
    assert "tjenesten svarer ikke" not in page and "e-post sendt" in page


async def test_a_429_storm_keeps_the_breaker_open_for_retry_after(rig: Rig) -> None:
    """Twilio asked for 30 s: no probe comes earlier, and nothing is lost."""
    await rig.load(directory(*(family(n, email=False, phone=True) for n in range(1, 11))))
    rig.twilio.fail_next(429, code=20429, retry_after=30, times=7)
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    # The sends in flight, all 429: concurrency 8 less the slot kept for urgent work.
    assert len(rig.twilio.requests) == 7
    assert rig.dispatcher.health.snapshot()["sms"]["state"] == "degraded"
    for _ in range(int(29.5 / STEP)):
        await rig.advance(STEP)
    assert len(rig.twilio.requests) == 7  # not one request before Retry-After
    for _ in range(int(10 / STEP)):
        await rig.advance(STEP)
    sms = await rig.deliveries(message, "sms")
    assert [d.status for d in sms] == [DeliveryStatus.sent] * 10
    assert len(rig.twilio.requests) == 7 + 10
    assert rig.dispatcher.health.snapshot()["sms"]["state"] == "ok"


@pytest.mark.parametrize(
    ("when", "reply"),
    [("rcpt", "450 4.2.1 Mailbox busy"), ("data", "452 4.2.2 Mailbox full")],
)
async def test_a_refused_mailbox_does_not_count_against_the_channel(
    rig: Rig, when: str, reply: str
) -> None:
    """A 4xx for one mailbox (greylisting, a full mailbox) says the relay works, to RCPT
    and after DATA alike. After DATA it opened the breaker, so other families' email
    waited behind "the service does not answer" and the full mailbox's own retries kept
    it open."""
    await rig.load(directory(*(family(n) for n in range(1, 11))))
    refuse = rig.smtp.reply_to_recipient if when == "rcpt" else rig.smtp.reply_to_data_for
    for n in range(1, 11):
        refuse(f"forelder{n}@example.no", reply)
    await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    assert rig.dispatcher.health.snapshot()["email"]["state"] == "ok"


@pytest.mark.parametrize(
    "reply", ["530 5.7.0 Authentication required", "550 5.7.1 Not allowed to send as this sender"]
)
async def test_a_relay_refusing_our_sender_stops_the_channel_and_blames_no_family(
    rig: Rig, caplog: pytest.LogCaptureFixture, reply: str
) -> None:
    """A relay that refuses MAIL FROM (authentication required, our sender not allowed)
    failed every email at once as that family's problem ("the number or email does not
    work"), with the channel "ok" and nothing logged. It is our sender: the channel
    stops, IT sees why, and the mail goes once the relay takes it."""
    await rig.load(directory(*(family(n) for n in range(1, 6))))
    rig.smtp.reply_to_mail(reply)
    caplog.set_level(logging.INFO, logger="gateway.channel_health")
    message = await rig.post("e1", {"groups": ["g1"]})
    for _ in range(int(30 / STEP)):
        await rig.advance(STEP)
    health = rig.dispatcher.health.snapshot()["email"]
    code = f"smtp_{reply[:3]}"
    assert (health["state"], health["last_error"]) == ("stopped", code)
    emails = await rig.deliveries(message, "email")
    assert DeliveryStatus.failed not in {d.status for d in emails}
    assert [(w[2], w[3]) for w in breaker_lines(caplog) if w[0] >= logging.WARNING] == [
        ("email", code)
    ]
    rig.smtp.reply_to_mail(None)  # IT fixed the sender
    for _ in range(int(3 * 60 / STEP)):
        await rig.advance(STEP)
        if len(rig.smtp.received) == 5:
            break
    emails = await rig.deliveries(message, "email")
    assert [d.status for d in emails] == [DeliveryStatus.sent] * 5
    assert len(rig.smtp.received) == 5  # each once


async def test_a_relay_that_answers_too_late_gets_each_email_twice_at_most(
    store: Store, clock: ManualClock, tenant: TenantCreds, settings: Settings, tmp_path: Path
) -> None:
    """A relay that takes each email but answers after our timeout: every held send was
    sent again, so in under two minutes it had six copies of each, and would have had
    more for the six hours of the outage grace. A send that went out whole unanswered
    is tried once more at most (RFC 1047), then it is sent, unconfirmed."""
    async with peered_rig(store, clock, tenant, settings, tmp_path, smtp_timeout=0.3) as rig:
        await rig.load(directory(*(family(n) for n in range(1, 4))))
        rig.smtp.answer_slowly(0.6)
        message = await rig.post("e1", {"groups": ["g1"]})
        for _ in range(int(30 * 60 / 30)):
            await rig.advance(30)
            await asyncio.sleep(0.05)  # the relay's late takes, in real time
        await asyncio.sleep(1)
        copies: dict[str, int] = {}
        for mail in rig.smtp.received:
            copies[mail.rcpt_tos[0]] = copies.get(mail.rcpt_tos[0], 0) + 1
        assert sorted(copies.values()) == [2, 2, 2], copies
        emails = await rig.deliveries(message, "email")
        assert {(d.status, d.reason) for d in emails} == {
            (DeliveryStatus.sent, "unconfirmed:smtp_unanswered")
        }


# --------------------------------------------------------------------------- a real gateway


async def _readyz(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/readyz") as resp:
        assert resp.status == 200, await resp.text()  # never 503 for a channel
        body: dict[str, Any] = await resp.json()
    return body


async def _until_state(http: aiohttp.ClientSession, url: str, state: str) -> dict[str, Any]:
    while True:
        body = await _readyz(http, url)
        if body["channels"]["email"]["state"] == state:
            return body
        await asyncio.sleep(0.05)


async def test_a_relay_that_is_down_is_visible_within_seconds_and_readyz_stays_200(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    peer = SmtpPeer()
    await peer.start()
    await peer.stop()  # the port is known and nothing listens: connection refused
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 'bb.db'}",
        outbox_dir=tmp_path / "outbox",
        secret_key=SECRET_KEY,
        port=0,
        smtp={"host": peer.host, "port": peer.port, "tls": "none", "sender": "S <s@asker.test>"},
        dispatch={"poll_interval": 0.05, "backoff_base": 0.2},
    )
    caplog.set_level(logging.INFO, logger="gateway.channel_health")
    service = Service(settings)
    await service.start()
    try:
        tenant, key, _ = await create_tenant(service.store, "Asker kommune", service.clock.now())
        batch = directory(*(family(n) for n in range(1, 21)))
        await service.store.apply_directory(tenant.id, DirectoryBatch.model_validate(batch))
        url = f"http://127.0.0.1:{service.port}"
        async with aiohttp.ClientSession() as http:
            assert (await _readyz(http, url))["channels"]["email"]["state"] == "ok"
            event = {
                "id": "evt-1",
                "type": "message.created",
                "data": {"audience": {"groups": ["g1"]}, "subject": "Tur", "body": "Vi går."},
            }
            async with http.post(
                url + "/v1/events", json=event, headers={"Authorization": f"Bearer {key}"}
            ) as resp:
                assert resp.status == 202
                message_id = (await resp.json())["message_id"]

            body = await asyncio.wait_for(_until_state(http, url, "degraded"), timeout=5)
            assert body["status"] == "ready"
            assert body["channels"]["email"]["last_error"] == "smtp_connection"
            [warning] = [line for line in breaker_lines(caplog) if line[0] == logging.WARNING]
            assert warning[2:] == ("email", "smtp_connection")

            # Intake goes on while the relay is down.
            async with http.get(
                f"{url}/v1/messages/{message_id}", headers={"Authorization": f"Bearer {key}"}
            ) as resp:
                assert resp.status == 200

            await peer.start()  # the relay is back on the same port
            await asyncio.wait_for(_until_state(http, url, "ok"), timeout=90)
            infos = [line for line in breaker_lines(caplog) if line[0] == logging.INFO]
            assert infos[-1][1:3] == ("channel works again", "email")
            assert "@" not in caplog.text
    finally:
        await service.stop()
        await peer.stop()
