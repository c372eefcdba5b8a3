"""The dispatcher end to end: a real SQLite store, real channels against real peers
(aiosmtpd, the Twilio-like and FCM-like servers) and a ManualClock. Time moves only
when a test moves it; ``run_until_idle`` does everything that is due now."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp.test_utils import TestClient, TestServer

from channels.base import Channel
from channels.email import EmailChannel
from channels.inapp import InAppChannel
from channels.push import PushChannel
from channels.sms import SmsChannel
from gateway.api.app import create_app
from gateway.api.context import AppContext
from gateway.clock import ManualClock
from gateway.constants import JOB_PLAN, JOB_SEND
from gateway.dispatcher import UNAVAILABLE_RECHECK, Dispatcher
from gateway.metrics import REGISTRY
from gateway.models import (
    Audience,
    Category,
    Delivery,
    DeliveryStatus,
    Device,
    DirectoryBatch,
    Job,
    Message,
    Receipt,
    Rendered,
    derive_id,
)
from gateway.planner import urgent_work
from gateway.render import Renderer
from gateway.service import TEMPLATES_DIR
from gateway.settings import DispatchSettings, FcmSettings, Settings, SmtpSettings, TwilioSettings
from gateway.store import Store
from tests.conftest import SECRET_KEY, TenantCreds
from tests.peers.fcm import FcmServer, write_service_account
from tests.peers.smtp import SmtpPeer
from tests.peers.twilio import TwilioPeer

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token-" + "x" * 16
PUBLIC_URL = "https://budbringer.test"
PROJECT = "budbringer-test"


# --------------------------------------------------------------------------- the rig


@dataclass
class Rig:
    store: Store
    clock: ManualClock
    tenant_id: str
    dispatcher: Dispatcher
    db_path: Path
    smtp: SmtpPeer
    twilio: TwilioPeer
    fcm: FcmServer

    async def load(self, batch: dict[str, Any]) -> None:
        await self.store.apply_directory(self.tenant_id, DirectoryBatch.model_validate(batch))

    async def post(
        self,
        event_id: str,
        audience: dict[str, list[str]],
        category: Category = Category.general,
    ) -> Message:
        """Accept a message the way POST /v1/events does: the message and its plan job."""
        now = self.clock.now()
        message = Message(
            id=derive_id(self.tenant_id, event_id),
            tenant_id=self.tenant_id,
            event_id=event_id,
            event_type="message.created",
            body_hash="h-" + event_id,
            category=category,
            subject="Foreldremøte",
            body="Velkommen til foreldremøte torsdag.",
            audience=Audience.model_validate(audience),
            created_at=now,
        )
        job = Job(
            id=f"{JOB_PLAN}:{message.id}",
            tenant_id=self.tenant_id,
            kind=JOB_PLAN,
            ref=message.id,
            due_at=now,
            urgent=urgent_work(category),  # as gateway/api/events.py queues it
        )
        return await self.store.accept_message(message, job)

    async def deliveries(self, message: Message, channel: str | None = None) -> list[Delivery]:
        found = await self.store.list_deliveries(self.tenant_id, message.id)
        return [d for d in found if channel is None or d.channel == channel]

    async def one(self, message: Message, channel: str) -> Delivery:
        [delivery] = await self.deliveries(message, channel)
        return delivery

    def jobs(self) -> list[tuple[str, str, int, int, int | None]]:
        """(id, kind, due_at µs, attempts, leased_until) straight from the SQLite file."""
        with sqlite3.connect(self.db_path) as db:
            return list(
                db.execute("SELECT id, kind, due_at, attempts, leased_until FROM jobs ORDER BY id")
            )

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.dispatcher.run_until_idle()


def _us(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000)


async def make_rig(
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    settings: Settings,
    smtp: SmtpPeer,
    twilio: TwilioPeer,
    fcm: FcmServer,
    tmp_path: Path,
    *,
    auth_token: str = AUTH_TOKEN,
    sms_timeout: float = 5.0,
    smtp_timeout: float = 30.0,
    **dispatch: Any,
) -> tuple[Rig, list[Channel]]:
    account = write_service_account(tmp_path / "sa.json", fcm.token_url, PROJECT)
    fcm.trust(account)
    email = EmailChannel(
        SmtpSettings(
            host=smtp.host,
            port=smtp.port,
            tls="none",
            sender="Skolen <skole@asker.test>",
            timeout=smtp_timeout,
        ),
        PUBLIC_URL,
    )
    sms = SmsChannel(
        TwilioSettings(
            account_sid=ACCOUNT_SID,
            auth_token=auth_token,
            base_url=twilio.base_url,
            default_sender="Skolen",
            timeout=sms_timeout,
        ),
        PUBLIC_URL,
    )
    push = PushChannel(
        FcmSettings(service_account_file=account, base_url=fcm.url, token_url=fcm.token_url),
        PUBLIC_URL,
        now=clock.now,
    )
    channels: dict[str, Channel] = {
        "inapp": InAppChannel(),
        "email": email,
        "sms": sms,
        "push": push,
    }
    for channel in channels.values():
        await channel.start()
    dispatcher = Dispatcher(
        store,
        channels,
        Renderer(TEMPLATES_DIR, PUBLIC_URL),
        clock,
        DispatchSettings(**{"concurrency": 8, **dispatch}),
    )
    rig = Rig(store, clock, tenant.tenant.id, dispatcher, settings.sqlite_path, smtp, twilio, fcm)
    return rig, list(channels.values())


@asynccontextmanager
async def peered_rig(
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    settings: Settings,
    tmp_path: Path,
    **dispatch: Any,
) -> AsyncIterator[Rig]:
    """A rig (make_rig) with peers of its own, for a test module's own ``rig`` fixture."""
    async with (
        SmtpPeer() as smtp,
        TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio,
        FcmServer(project_id=PROJECT) as fcm,
    ):
        built, channels = await make_rig(
            store, clock, tenant, settings, smtp, twilio, fcm, tmp_path, **dispatch
        )
        try:
            yield built
        finally:
            for channel in channels:
                await channel.aclose()


@pytest.fixture
async def rig(
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    settings: Settings,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Rig]:
    options: dict[str, Any] = getattr(request, "param", {})
    async with peered_rig(store, clock, tenant, settings, tmp_path, **options) as built:
        yield built


def family(
    n: int,
    *,
    email: bool = True,
    phone: bool = False,
    group: str = "g1",
    language: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A child in ``group`` and one guardian with parental responsibility."""
    child = {
        "id": f"c{n}",
        "role": "child",
        "given_name": f"Barn{n}",
        "birth_date": "2016-05-01",
        "unit_ids": ["u1"],
        "group_ids": [group],
    }
    guardian: dict[str, Any] = {"id": f"p{n}", "role": "guardian", "given_name": f"Forelder{n}"}
    if email:
        guardian["email"] = f"forelder{n}@example.no"
    if phone:
        guardian["phone"] = f"+4791{n:06d}"
    if language:
        guardian["language"] = language
    relation = {"child_id": f"c{n}", "guardian_id": f"p{n}", "parental_responsibility": True}
    return child, guardian, relation


def directory(*families: tuple[dict[str, Any], ...], **extra: Any) -> dict[str, Any]:
    persons = [p for fam in families for p in fam[:2]]
    relations = [fam[2] for fam in families]
    return {
        "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
        "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
        "persons": persons,
        "relations": relations,
        **extra,
    }


# --------------------------------------------------------------------------- retries


async def test_transient_error_waits_for_retry_after_then_succeeds(rig: Rig) -> None:
    await rig.load(directory(family(1, email=False, phone=True)))
    rig.twilio.fail_next(429, code=20429, retry_after=30)
    message = await rig.post("e1", {"groups": ["g1"]})

    await rig.dispatcher.run_until_idle()
    sms = await rig.one(message, "sms")
    assert sms.status is DeliveryStatus.sending  # tried, not given up
    assert len(rig.twilio.requests) == 1
    [(job_id, kind, due, attempts, leased)] = rig.jobs()
    assert (job_id, kind, attempts, leased) == (f"{JOB_SEND}:{sms.id}", JOB_SEND, 1, None)
    assert due >= _us(rig.clock.now() + timedelta(seconds=30))

    await rig.advance(29.9)  # not before Retry-After
    assert len(rig.twilio.requests) == 1
    await rig.advance(0.1)
    assert len(rig.twilio.requests) == 2
    sms = await rig.one(message, "sms")
    assert sms.status is DeliveryStatus.sent
    assert sms.provider_id in rig.twilio.messages
    assert rig.jobs() == []
    history = (await rig.store.history([sms.id]))[sms.id]
    assert [h.status for h in history] == [
        DeliveryStatus.queued,
        DeliveryStatus.sending,
        DeliveryStatus.sent,
    ]
    assert history[1].detail is not None and "twilio_20429" in history[1].detail


@pytest.mark.parametrize(
    "rig", [dict(max_attempts=3, backoff_base=1.0, backoff_max=1.0)], indirect=True
)
async def test_gives_up_after_max_attempts(rig: Rig) -> None:
    await rig.load(directory(family(1, email=False, phone=True)))
    rig.twilio.fail_next(503, message="Service Unavailable", times=10)
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    for _ in range(5):
        await rig.advance(1.0)

    sms = await rig.one(message, "sms")
    assert sms.status is DeliveryStatus.failed
    assert sms.reason == "gave_up:http_503"
    assert len(rig.twilio.requests) == 3
    # Every attempt is in the history: its number, the error and the next try (issue 12).
    history = (await rig.store.history([sms.id]))[sms.id]
    retries = [h.detail or "" for h in history if h.status is DeliveryStatus.sending]
    assert [r.split(";")[0] for r in retries] == [
        "attempt 1 failed: http_503",
        "attempt 2 failed: http_503",
    ]
    assert all("; next try at 20" in r for r in retries)
    assert history[-1].status is DeliveryStatus.failed
    # only the failover, committed with the failure (gateway/followups.py)
    assert [(job_id.split(":")[-2:], kind) for job_id, kind, *_ in rig.jobs()] == [
        (["failover", "sms"], "escalate")
    ]


async def test_permanent_error_fails_at_once_and_is_never_retried(rig: Rig) -> None:
    await rig.load(directory(family(1, email=True, phone=True)))
    rig.twilio.fail_next(400, code=21617, message="The concatenated message body is too long")
    rig.smtp.reply_to_data("554 5.6.0 Message content rejected")
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()

    sms = await rig.one(message, "sms")
    email = await rig.one(message, "email")
    assert (sms.status, sms.reason) == (DeliveryStatus.failed, "twilio_21617")
    assert (email.status, email.reason) == (DeliveryStatus.failed, "smtp_554")
    # only the failovers, committed with the failures (gateway/followups.py)
    assert sorted((job_id.split(":")[-2:], kind) for job_id, kind, *_ in rig.jobs()) == [
        (["failover", "email"], "escalate"),
        (["failover", "sms"], "escalate"),
    ]
    rig.smtp.reply_to_data(None)
    await rig.advance(7200)
    assert len(rig.twilio.requests) == 1
    assert rig.smtp.received == []
    # a permanent error says nothing about the address itself: the next message uses it
    second = await rig.post("e2", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    assert {d.channel for d in await rig.deliveries(second)} == {"inapp", "sms", "email"}


# --------------------------------------------------------------------------- dead addresses


async def test_dead_push_token_removes_the_device(rig: Rig) -> None:
    await rig.load(directory(family(1, email=False)))
    for device_id, token in (("d-old", "tok-dead"), ("d-new", "tok-live")):
        await rig.store.upsert_device(
            rig.tenant_id, "p1", Device(id=device_id, token=token, platform="android")
        )
    rig.fcm.dead["tok-dead"] = "UNREGISTERED"
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()

    push = {d.target: d for d in await rig.deliveries(message, "push")}
    assert push["d-old"].status is DeliveryStatus.failed
    assert push["d-old"].reason == "fcm_UNREGISTERED"
    assert push["d-new"].status is DeliveryStatus.sent
    assert [d.id for d in await rig.store.list_devices(rig.tenant_id, "p1")] == ["d-new"]
    assert [s.body["message"]["token"] for s in rig.fcm.sent] == ["tok-live"]
    # the pruned device is never planned again
    second = await rig.post("e2", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    assert [d.target for d in await rig.deliveries(second, "push")] == ["d-new"]


async def test_dead_number_marks_the_phone_failing_and_the_next_plan_skips_sms(rig: Rig) -> None:
    await rig.load(directory(family(1, email=True, phone=True), family(2, phone=True)))
    rig.twilio.mark_dead("+4791000001", 21614)
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()

    by_person = {d.recipient_id: d for d in await rig.deliveries(message, "sms")}
    assert (by_person["p1"].status, by_person["p1"].reason) == (
        DeliveryStatus.failed,
        "twilio_21614",
    )
    assert by_person["p2"].status is DeliveryStatus.sent

    second = await rig.post("e2", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    channels: dict[str, set[str]] = {}
    for d in await rig.deliveries(second):
        channels.setdefault(d.recipient_id, set()).add(d.channel)
    assert channels == {"p1": {"inapp", "email"}, "p2": {"inapp", "sms", "email"}}
    assert [r.field("To") for r in rig.twilio.requests].count("+4791000001") == 1


async def test_dead_mailbox_marks_the_email_failing(rig: Rig) -> None:
    await rig.load(directory(family(1, phone=True)))
    rig.smtp.reply_to_recipient("forelder1@example.no", "550 5.1.1 No such user")
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    email = await rig.one(message, "email")
    assert (email.status, email.reason) == (DeliveryStatus.failed, "smtp_550")
    second = await rig.post("e2", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    assert {d.channel for d in await rig.deliveries(second)} == {"inapp", "sms"}


# --------------------------------------------------------------------------- channel down


@pytest.mark.parametrize(
    "rig",
    [dict(auth_token="wrong-token-" + "y" * 20, concurrency=1, max_attempts=3)],
    indirect=True,
)
async def test_rejected_credentials_stop_the_channel_without_burning_jobs(
    rig: Rig, settings: Settings
) -> None:
    await rig.load(directory(*(family(n, email=False, phone=True) for n in range(1, 6))))
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()

    # one request found out; the other four were postponed without calling Twilio
    assert len(rig.twilio.requests) == 1
    assert rig.dispatcher.unavailable == {"sms": "twilio_20003"}
    sms = await rig.deliveries(message, "sms")
    assert len(sms) == 5
    assert all(d.status not in (DeliveryStatus.failed, DeliveryStatus.sent) for d in sms)
    jobs = rig.jobs()
    assert len(jobs) == 5
    recheck = _us(rig.clock.now() + timedelta(seconds=UNAVAILABLE_RECHECK))
    assert all(due >= recheck and leased is None for _, _, due, _, leased in jobs)

    ctx = AppContext(
        settings=settings,
        store=rig.store,
        clock=rig.clock,
        secret=SECRET_KEY.encode(),
        channel_health=rig.dispatcher.health,
    )
    async with TestClient(TestServer(create_app(ctx))) as client:
        # A refused credential shows in /readyz's body but never takes intake away.
        resp = await client.get("/readyz")
        assert resp.status == 200
        body = await resp.json()
        assert body["status"] == "ready" and "reasons" not in body
        assert body["channels"]["sms"] == {
            "state": "stopped",
            "since": rig.clock.now().isoformat(),
            "last_error": "twilio_20003",
        }
        assert body["channels"]["email"]["state"] == "ok"

        # Outages longer than max_attempts rechecks: still postponed, never failed.
        for _ in range(4):
            # held sends are due up to a second after the recheck (held_until)
            await rig.advance(UNAVAILABLE_RECHECK + 1)
        sms = await rig.deliveries(message, "sms")
        assert all(d.status is not DeliveryStatus.failed for d in sms)
        assert len(rig.twilio.requests) == 5  # one probe per recheck, not five
        assert [attempts for _, _, _, attempts, _ in rig.jobs()] == [0] * 5  # none used up

        # The operator fixes the credentials (here: the provider starts accepting them),
        # and the first send after that meets a 429: retried, not given up.
        rig.twilio.credentials[ACCOUNT_SID] = "wrong-token-" + "y" * 20
        rig.twilio.fail_next(429, retry_after=1)
        await rig.advance(UNAVAILABLE_RECHECK + 1)
        # The 429 holds the probe for its Retry-After and the breaker's pause (each held
        # send up to a second more), then the probe goes and the rest follow.
        for _ in range(4):
            await rig.advance(2)
        sms = await rig.deliveries(message, "sms")
        assert [d.status for d in sms] == [DeliveryStatus.sent] * 5
        assert len(rig.twilio.requests) == 5 + 1 + 5
        assert rig.dispatcher.unavailable == {}
        resp = await client.get("/readyz")
        assert resp.status == 200
        assert (await resp.json())["channels"]["sms"]["state"] == "ok"


# --------------------------------------------------------------------------- never twice


async def test_a_job_for_a_final_delivery_is_dropped_without_sending(rig: Rig) -> None:
    await rig.load(directory(family(1)))
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    email = await rig.one(message, "email")
    assert email.status is DeliveryStatus.sent
    assert len(rig.smtp.received) == 1

    # A stale copy of the send job turns up (a replay, a lease that ran out).
    stale = Job(
        id=f"{JOB_SEND}:{email.id}",
        tenant_id=rig.tenant_id,
        kind=JOB_SEND,
        ref=email.id,
        due_at=rig.clock.now(),
    )
    assert await rig.store.add_deliveries([email], [stale]) == 0
    assert len(rig.jobs()) == 1
    await rig.dispatcher.run_until_idle()
    assert len(rig.smtp.received) == 1
    assert rig.jobs() == []
    history = (await rig.store.history([email.id]))[email.id]
    assert [h.status for h in history].count(DeliveryStatus.sent) == 1


async def test_a_lease_that_runs_out_is_taken_again_but_never_resent(rig: Rig) -> None:
    await rig.load(directory(family(1)))
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    email = await rig.one(message, "email")
    # Simulate a worker that sent, recorded the outcome, then died before removing the job.
    stale = Job(
        id=f"{JOB_SEND}:{email.id}",
        tenant_id=rig.tenant_id,
        kind=JOB_SEND,
        ref=email.id,
        due_at=rig.clock.now(),
    )
    await rig.store.add_deliveries([], [stale])
    [claimed] = await rig.store.claim_jobs([JOB_SEND], 10, rig.clock.now(), 5.0)
    assert claimed.id == stale.id
    await rig.dispatcher.run_until_idle()  # leased: not visible yet
    assert len(rig.jobs()) == 1
    await rig.advance(5.0)
    assert rig.jobs() == []
    assert len(rig.smtp.received) == 1


# --------------------------------------------------------------------------- timing


async def test_quiet_hours_defer_noisy_channels_and_emergency_ignores_them(rig: Rig) -> None:
    # 09:00 UTC is 10:00 in Oslo: inside 08:00-12:00, which ends at 12:00 Oslo = 11:00 UTC.
    prefs = {"p1": {"quiet_start": "08:00", "quiet_end": "12:00"}}
    await rig.load(directory(family(1, phone=True), preferences=prefs))
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    by_channel = {d.channel: d for d in await rig.deliveries(message)}
    assert by_channel["inapp"].status is DeliveryStatus.delivered
    end = rig.clock.now() + timedelta(hours=2)
    for channel in ("email", "sms"):
        assert by_channel[channel].status is DeliveryStatus.queued
        assert by_channel[channel].not_before == end
    assert rig.smtp.received == [] and rig.twilio.requests == []

    emergency = await rig.post("e2", {"groups": ["g1"]}, Category.emergency)
    await rig.dispatcher.run_until_idle()
    assert {d.channel: d.status for d in await rig.deliveries(emergency)} == {
        "inapp": DeliveryStatus.delivered,
        "email": DeliveryStatus.sent,
        "sms": DeliveryStatus.sent,
    }

    await rig.advance(7199)
    assert len(rig.smtp.received) == 1 and len(rig.twilio.requests) == 1
    await rig.advance(1)
    assert len(rig.smtp.received) == 2 and len(rig.twilio.requests) == 2
    assert {d.status for d in await rig.deliveries(message)} == {
        DeliveryStatus.delivered,
        DeliveryStatus.sent,
    }


@pytest.mark.parametrize("rig", [dict(concurrency=64, batch=64)], indirect=True)
async def test_planning_streams_and_sends_start_before_it_ends(rig: Rig) -> None:
    # In-app deliveries are delivered when stored; the emails are what needs sending.
    families = [family(n) for n in range(1, 1301)]
    await rig.load(directory(*families))
    message = await rig.post("e1", {"groups": ["g1"]})

    assert await rig.dispatcher.run_once(wait=False) == 1  # the plan job, in the background
    sent_while_planning = 0
    for _ in range(10_000):
        stored = await rig.store.get_message(rig.tenant_id, message.id)
        assert stored is not None
        if stored.planned_at is not None:
            break
        claimed = await rig.dispatcher.run_once(wait=False)
        stored = await rig.store.get_message(rig.tenant_id, message.id)
        if claimed > 0 and stored is not None and stored.planned_at is None:
            sent_while_planning += claimed  # send jobs claimed while the plan still runs
        await asyncio.sleep(0)
    await rig.dispatcher.run_until_idle()
    assert sent_while_planning > 0
    counts = await rig.store.count_by_status(rig.tenant_id, message.id)
    assert counts == {"delivered": 1300, "sent": 1300}


# --------------------------------------------------------------------------- one recipient


async def test_every_delivery_goes_to_exactly_one_recipient(rig: Rig) -> None:
    # siblings with two shared guardians, and one guardian of a child in another family
    persons: list[dict[str, Any]] = [
        {
            "id": cid,
            "role": "child",
            "given_name": cid.upper(),
            "birth_date": "2016-01-01",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        }
        for cid in ("c1", "c2", "c3")
    ]
    persons += [
        {
            "id": gid,
            "role": "guardian",
            "given_name": gid,
            "email": f"{gid}@example.no",
            "phone": phone,
        }
        for gid, phone in (("p1", "+4791000001"), ("p2", "+4791000002"), ("p3", "+4791000003"))
    ]
    relations = [
        {"child_id": c, "guardian_id": g, "parental_responsibility": True}
        for c, g in (("c1", "p1"), ("c1", "p2"), ("c2", "p1"), ("c2", "p2"), ("c3", "p3"))
    ]
    batch = directory()
    batch.update(persons=persons, relations=relations)
    await rig.load(batch)
    await rig.store.upsert_device(
        rig.tenant_id, "p1", Device(id="d1", token="tok-1", platform="ios")
    )
    message = await rig.post("e1", {"groups": ["g1"]}, Category.emergency)
    await rig.dispatcher.run_until_idle()

    deliveries = await rig.deliveries(message)
    assert {d.status for d in deliveries} <= {DeliveryStatus.sent, DeliveryStatus.delivered}
    # one per (recipient, channel, target): siblings do not double a guardian's messages
    keys = [(d.recipient_id, d.channel, d.target) for d in deliveries]
    assert len(keys) == len(set(keys)) == 3 * 3 + 1
    assert sorted(tuple(r.rcpt_tos) for r in rig.smtp.received) == [
        ("p1@example.no",),
        ("p2@example.no",),
        ("p3@example.no",),
    ]
    for received in rig.smtp.received:
        assert received.message["To"].addresses[0].addr_spec == received.rcpt_tos[0]
        assert len(received.message["To"].addresses) == 1
        assert received.message["Cc"] is None and received.message["Bcc"] is None
    assert sorted(r.form["To"] for r in rig.twilio.requests) == [
        ["+4791000001"],
        ["+4791000002"],
        ["+4791000003"],
    ]
    assert [s.body["message"]["token"] for s in rig.fcm.sent] == ["tok-1"]


class _BrokenAdapter:
    """A provider adapter with a bug: it raises something outside our error tree."""

    name = "sms"
    max_body = None
    rate_per_second = None
    calls = 0

    async def start(self) -> None:
        return None

    async def send(self, delivery: Any, content: Any) -> Any:
        _BrokenAdapter.calls += 1
        raise RuntimeError("adapter bug")

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(
    "rig", [dict(max_attempts=3, backoff_base=1.0, backoff_max=1.0)], indirect=True
)
async def test_an_unexpected_error_fails_the_delivery_after_max_attempts(rig: Rig) -> None:
    rig.dispatcher.channels = {**rig.dispatcher.channels, "sms": _BrokenAdapter()}
    _BrokenAdapter.calls = 0
    await rig.load(directory(family(1, email=False, phone=True)))
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    for _ in range(6):
        await rig.advance(2.0)

    sms = await rig.one(message, "sms")
    assert sms.status is DeliveryStatus.failed
    assert sms.reason == "error:RuntimeError"
    assert _BrokenAdapter.calls == 3
    # only the failover, committed with the failure (gateway/followups.py)
    assert [(job_id.split(":")[-2:], kind) for job_id, kind, *_ in rig.jobs()] == [
        (["failover", "sms"], "escalate")
    ]


@pytest.mark.parametrize("rig", [dict(backoff_base=1.0, backoff_max=1.0)], indirect=True)
async def test_a_5xx_after_twilio_took_the_sms_does_not_send_it_twice(rig: Rig) -> None:
    """Issue 12: Twilio accepted the SMS but the answer was a 500. The retry first lists the
    account's recent messages to the number (as Twilio's API allows), finds it and records
    its SID instead of sending a second SMS."""
    await rig.load(directory(family(1, email=False, phone=True)))
    rig.twilio.fail_after_accept(500)
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    for _ in range(3):
        await rig.advance(1.0)

    sms = await rig.one(message, "sms")
    [sid] = rig.twilio.messages
    assert (sms.status, sms.provider_id) == (DeliveryStatus.sent, sid)
    assert len(rig.twilio.requests) == 1  # one POST: never sent again
    assert [q.get("To") for q in rig.twilio.list_requests] == [sms.address]


@pytest.mark.parametrize("rig", [dict(backoff_base=1.0, backoff_max=1.0)], indirect=True)
async def test_a_5xx_before_twilio_took_the_sms_sends_it_after_the_lookup(rig: Rig) -> None:
    await rig.load(directory(family(1, email=False, phone=True)))
    rig.twilio.fail_next(503, message="Service Unavailable")
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    for _ in range(3):
        await rig.advance(1.0)

    sms = await rig.one(message, "sms")
    [sid] = rig.twilio.messages
    assert (sms.status, sms.provider_id) == (DeliveryStatus.sent, sid)
    assert len(rig.twilio.requests) == 2
    assert len(rig.twilio.list_requests) == 1


async def test_a_send_job_left_behind_by_a_failed_send_queues_its_failover(rig: Rig) -> None:
    """On Redis a crash can end a failed send's commit after the move and before its job
    ends and its follow-ups are queued; the job comes back, and the dispatcher that drops
    it (the delivery is final) queues the failover again (issue 12)."""
    await rig.load(directory(family(1, email=False, phone=True)))
    message = await rig.post("e1", {"groups": ["g1"]})
    [plan] = await rig.store.claim_jobs([JOB_PLAN], 1, rig.clock.now(), 60)
    await rig.dispatcher.plan(plan)
    sms = await rig.one(message, "sms")
    assert await rig.store.transition(sms.id, DeliveryStatus.failed, rig.clock.now())
    await rig.dispatcher.run_until_idle()
    assert rig.twilio.requests == []  # never sent
    kinds = [(job_id.split(":")[-2:], kind) for job_id, kind, *_ in rig.jobs()]
    assert kinds == [(["failover", "sms"], "escalate")]


# --------------------------------------------------------------------------- channel limits


@pytest.mark.parametrize(
    "rig",
    # The SMS timeout at its most, half the lease (60 s): a request is made only while a
    # whole timeout of the lease is left (gateway/lease_left.py).
    [dict(concurrency=4, channel_concurrency={"sms": 2}, sms_timeout=30.0, shutdown_timeout=0.5)],
    indirect=True,
)
async def test_a_stalled_sms_provider_does_not_hold_back_email(rig: Rig) -> None:
    families = [family(n, phone=True) for n in range(1, 13)]
    await rig.load(directory(*families))
    rig.twilio.stall = True  # Twilio takes the requests and answers none
    message = await rig.post("e1", {"groups": ["g1"]}, Category.emergency)
    runner = asyncio.create_task(rig.dispatcher.run())
    try:
        # SMS: two in flight, two waiting; one more waits holding a slot until the
        # channel counts as stalled (channel_gate.STALL_WAIT), then the rest are put off.
        # Wait (not a timing assertion: the SMS client waits 30 s) for every email.
        for _ in range(3000):
            if len(rig.smtp.received) == len(families) or runner.done():
                break
            await asyncio.sleep(0.01)
        emails = await rig.deliveries(message, "email")
        assert len(rig.smtp.received) == len(emails) == len(families)
        sms = await rig.deliveries(message, "sms")
        # All SMS still wait: at most the channel's limit reached Twilio, none failed.
        assert len(sms) == len(families)
        assert 1 <= len(rig.twilio.requests) <= 2
        assert {d.status for d in sms} <= {DeliveryStatus.queued, DeliveryStatus.sending}
        # the ones put off are queued again, nothing is lost
        queued = {job_id for job_id, kind, *_ in rig.jobs() if kind == JOB_SEND}
        assert {f"{JOB_SEND}:{d.id}" for d in sms} <= queued
    finally:
        rig.dispatcher.stop()
        await runner


@pytest.mark.parametrize(
    "rig", [dict(concurrency=16, batch=64, channel_concurrency={"sms": 5})], indirect=True
)
async def test_a_slow_sms_provider_gets_every_send_the_channel_limit_allows(rig: Rig) -> None:
    """Throughput follows provider latency up to the setting: with every answer slow, the
    dispatcher keeps exactly the channel's limit in flight (never fewer, never more)
    while the other channels go on, and every SMS is sent once."""
    families = [family(n, phone=True) for n in range(1, 21)]
    await rig.load(directory(*families))
    rig.twilio.delay = 0.2
    message = await rig.post("e1", {"groups": ["g1"]}, Category.emergency)
    await rig.dispatcher.run_until_idle()
    sms = await rig.deliveries(message, "sms")
    assert len(sms) == len(families)
    assert {d.status for d in sms} == {DeliveryStatus.sent}
    assert len(rig.twilio.requests) == len(families)  # each once: none put off, none repeated
    assert rig.twilio.peak_in_flight == 5  # the limit was reached and held to
    assert len(rig.smtp.received) == len(families)


@pytest.mark.parametrize(
    "rig", [dict(concurrency=16, batch=64, channel_concurrency={"sms": 5})], indirect=True
)
async def test_a_slow_provider_keeps_its_channel_at_the_limit_the_settings_allow(rig: Rig) -> None:
    """No adaptive cut, checked by events, not by the clock: Twilio answers only when the
    test lets it, one request at a time; after each answer the next SMS goes out at once,
    so the channel holds exactly its limit in flight (never fewer while SMS wait, never
    more) until the backlog is gone, and the emails are not held back meanwhile."""
    limit, families = 5, [family(n, phone=True) for n in range(1, 21)]
    await rig.load(directory(*families))
    rig.twilio.hold()
    message = await rig.post("e1", {"groups": ["g1"]}, Category.emergency)
    runner = asyncio.create_task(rig.dispatcher.run())
    try:
        await until(lambda: rig.twilio.in_flight == limit, runner)
        await until(lambda: len(rig.smtp.received) == len(families), runner)
        assert len(rig.twilio.requests) == limit  # every email out, the SMS at the limit
        await answer_one_at_a_time(rig, runner, limit, len(families))
    finally:
        rig.dispatcher.stop()
        await runner
    sms = await rig.deliveries(message, "sms")
    assert {d.status for d in sms} == {DeliveryStatus.sent}
    assert len(rig.twilio.requests) == len(families)  # each once: none put off or repeated


@pytest.mark.parametrize(
    "rig", [dict(concurrency=4, batch=64, channel_concurrency={"sms": 1})], indirect=True
)
async def test_a_slow_channels_backlog_leaves_the_dispatch_slots_to_the_other_channels(
    rig: Rig,
) -> None:
    """Sends are claimed in one mixed order; the SMS beyond what the SMS gate holds
    (its limit in flight, as many waiting) are set aside unstarted, not parked in the
    dispatch slots: with Twilio answering nothing, every email still goes out, and no
    SMS is put off as if the channel had stalled. Checked by events, not by the clock."""
    limit, families = 1, [family(n, phone=True) for n in range(1, 21)]
    await rig.load(directory(*families))
    rig.twilio.hold()
    message = await rig.post("e1", {"groups": ["g1"]}, Category.emergency)
    runner = asyncio.create_task(rig.dispatcher.run())
    try:
        await until(lambda: len(rig.smtp.received) == len(families), runner)
        assert rig.twilio.in_flight == limit
        waiting = {f"{JOB_SEND}:{d.id}" for d in await rig.deliveries(message, "sms")}
        due = [due for job_id, _, due, *_ in rig.jobs() if job_id in waiting]
        assert len(due) == len(families)
        assert max(due) <= _us(rig.clock.now())  # none put off: each is due now, as planned
        await answer_one_at_a_time(rig, runner, limit, len(families))
    finally:
        rig.dispatcher.stop()
        await runner
    sms = await rig.deliveries(message, "sms")
    assert {d.status for d in sms} == {DeliveryStatus.sent}
    assert len(rig.twilio.requests) == len(families)  # each once


@pytest.mark.parametrize(
    "rig", [dict(concurrency=4, batch=64, channel_concurrency={"sms": 1})], indirect=True
)
async def test_an_urgent_sms_goes_first_when_a_broadcast_fills_the_sms_channel(
    rig: Rig,
) -> None:
    """A broadcast's SMS fill the channel (its limit in flight, as many waiting, more set
    aside); an emergency's SMS claimed meanwhile is not set aside behind them but takes
    the channel's next free slot (review of the ready buffer)."""
    families = [family(n, email=False, phone=True) for n in range(1, 11)]
    urgent = family(99, email=False, phone=True, group="g2")
    groups = [
        {"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"},
        {"id": "g2", "unit_id": "u1", "kind": "class", "name": "6B"},
    ]
    await rig.load(directory(*families, urgent, groups=groups))
    rig.twilio.hold()
    await rig.post("b1", {"groups": ["g1"]}, Category.general)
    runner = asyncio.create_task(rig.dispatcher.run())
    try:
        await until(lambda: len(rig.twilio.requests) == 1, runner)
        emergency = await rig.post("e1", {"groups": ["g2"]}, Category.emergency)
        rig.dispatcher.work_available.set()
        for _ in range(400):  # planned, then claimed and started within a few loop turns
            if await rig.deliveries(emergency, "sms"):
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)
        rig.twilio.release()
        await until(lambda: len(rig.twilio.requests) == 2, runner)
        assert rig.twilio.requests[-1].form["To"] == ["+4791000099"]
        rig.twilio.release(50)
        await until(lambda: len(rig.twilio.requests) == 11, runner)
    finally:
        rig.dispatcher.stop()
        await runner


async def answer_one_at_a_time(
    rig: Rig, runner: asyncio.Task[None], limit: int, total: int
) -> None:
    """Twilio, held with ``limit`` SMS in flight, answers one at a time: each answer lets
    exactly one more in, never more than ``limit`` at once, until all ``total`` went."""
    for answered in range(1, total - limit + 1):
        rig.twilio.release()
        await until(lambda n=answered: len(rig.twilio.requests) == limit + n, runner)
        assert rig.twilio.in_flight == limit
    rig.twilio.release(limit)
    await until(lambda: rig.twilio.in_flight == 0, runner)
    assert rig.twilio.peak_in_flight == limit


async def until(state: Callable[[], bool], runner: asyncio.Task[None]) -> None:
    """Let the dispatcher run until ``state`` holds (bounded; fails if it never does)."""
    for _ in range(2000):
        if state() or runner.done():
            break
        await asyncio.sleep(0.005)
    assert state(), "the dispatcher never got there"


class StoreWatchingEmail:
    """An email channel that notes, at each send, how many emails of the message the
    store already holds as sent: the outcomes committed before this send began."""

    name: ClassVar[str] = "email"
    max_body: ClassVar[int | None] = None
    rate_per_second: ClassVar[float | None] = None

    def __init__(self, store: Store, tenant_id: str) -> None:
        self.store, self.tenant_id = store, tenant_id
        self.sent_before: list[int] = []

    async def start(self) -> None:
        return None

    async def send(self, delivery: Delivery, content: Rendered) -> Receipt:
        found = await self.store.list_deliveries(self.tenant_id, delivery.message_id)
        sent = [d for d in found if d.channel == "email" and d.status is DeliveryStatus.sent]
        self.sent_before.append(len(sent))
        return Receipt()

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("category", [Category.general, Category.emergency])
async def test_a_dispatch_slot_goes_to_the_next_job_only_once_the_outcome_is_stored(
    rig: Rig, category: Category
) -> None:
    """The crash bound with one slot: a task goes on to the next buffered job itself, and
    only after the job before it is stored as done, so each send finds every earlier
    send of the message stored (never two sends, or a send and an unstored outcome,
    at once)."""
    await rig.load(directory(*(family(n) for n in range(1, 7))))
    email = StoreWatchingEmail(rig.store, rig.tenant_id)
    dispatcher = Dispatcher(
        rig.store,
        {"inapp": InAppChannel(), "email": email},
        Renderer(TEMPLATES_DIR, PUBLIC_URL),
        rig.clock,
        DispatchSettings(concurrency=1, batch=64),
    )
    message = await rig.post("e1", {"groups": ["g1"]}, category)
    await dispatcher.run_until_idle()
    assert email.sent_before == [0, 1, 2, 3, 4, 5]
    assert {d.status for d in await rig.deliveries(message, "email")} == {DeliveryStatus.sent}


# --------------------------------------------------------------------------- urgent first


@pytest.mark.parametrize("rig", [dict(concurrency=2, batch=2, normal_share=0.0)], indirect=True)
async def test_an_emergency_posted_during_a_broadcast_is_sent_before_the_broadcast(
    rig: Rig,
) -> None:
    await rig.load(directory(*(family(n) for n in range(1, 21))))
    general = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_once(wait=True)  # plans the broadcast: 20 emails queued
    assert len(await rig.deliveries(general, "email")) == 20
    rig.clock.advance(1)  # the emergency comes later than every queued email
    emergency = await rig.post("e2", {"children": ["c7"]}, Category.emergency)
    await rig.dispatcher.run_until_idle()
    (alert,) = await rig.deliveries(emergency, "email")
    order = [str(r.message["Message-ID"]).strip("<>").split("@")[0] for r in rig.smtp.received]
    assert len(order) == 21
    # Claimed two at a time: its plan job comes first, then its send job: at most two
    # emails of the broadcast go before it, not the twenty.
    assert order.index(alert.id) <= 2, order.index(alert.id)


@pytest.mark.parametrize("rig", [dict(concurrency=1, batch=64)], indirect=True)
async def test_a_send_that_outlasts_its_lease_is_reported_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A send still going when its lease runs out (a slow provider, a stalled worker) may
    be taken over and sent again by another worker: the run loop reports it while it
    goes on, once, with its job id; its end reports nothing more. This process's own
    next claim gets the job back too, and leaves it to the send under way."""
    await rig.load(directory(family(1, email=False, phone=True)))
    rig.twilio.hold()
    message = await rig.post("e1", {"groups": ["g1"]}, Category.emergency)

    def reports() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("a job outlasted")]

    runner = asyncio.create_task(rig.dispatcher.run())
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.dispatcher"):
            await until(lambda: rig.twilio.in_flight == 1, runner)
            assert reports() == []
            rig.clock.advance(rig.dispatcher.settings.lease_seconds + 1)
            await until(lambda: len(reports()) == 1, runner)  # while the send goes on
            rig.twilio.release()
            await until(lambda: rig.twilio.in_flight == 0, runner)
            (sms,) = await rig.deliveries(message, "sms")
            await until(lambda: sms.id not in rig.dispatcher._prefetched, runner)
    finally:
        rig.dispatcher.stop()
        await runner
    assert [getattr(r, "job_id", None) for r in reports()] == [f"{JOB_SEND}:{sms.id}"]
    assert len(rig.twilio.requests) == 1  # not sent a second time by this process


async def test_a_job_taken_over_from_a_stopped_worker_is_reported(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A job whose lease ran out in another worker (killed, or stalled) comes to this one's
    claim saying so: reported with its job id and counted, since that worker may have
    done it already (the duplicate a crash can cause). The work itself goes on."""
    await rig.load(directory(family(1, email=False, phone=True)))
    message = await rig.post("e1", {"groups": ["g1"]}, Category.emergency)
    lease = rig.dispatcher.settings.lease_seconds
    # Claimed by a worker that then died: its lease runs out.
    (dead,) = await rig.dispatcher.store.claim_jobs([JOB_PLAN], 10, rig.clock.now(), lease)
    rig.clock.advance(lease + 1)

    def taken_over() -> float:
        return REGISTRY.get_sample_value("budbringer_lease_takeovers_total") or 0.0

    before = taken_over()
    with caplog.at_level(logging.WARNING, logger="gateway.dispatcher"):
        await rig.dispatcher.run_until_idle()
    reports = [r for r in caplog.records if r.getMessage().startswith("a job was taken over")]
    assert [getattr(r, "job_id", None) for r in reports] == [dead.id]
    assert taken_over() == before + 1
    (sms,) = await rig.deliveries(message, "sms")
    assert sms.status == DeliveryStatus.sent and len(rig.twilio.requests) == 1


@pytest.mark.parametrize(
    "rig", [dict(concurrency=2, batch=64, channel_concurrency={"sms": 1})], indirect=True
)
async def test_a_send_that_waited_at_its_channel_until_half_its_lease_went_is_given_back(
    rig: Rig,
) -> None:
    """A send started in time that then waits at its channel's gate (the provider was
    slow) until half its lease is gone is given back when the gate lets it in, not sent:
    sent so late, its lease could end mid-send and another worker send it too. Claimed
    again fresh, every SMS still goes once."""
    families = [family(n, email=False, phone=True) for n in range(1, 3)]
    await rig.load(directory(*families))
    rig.twilio.hold()
    store = rig.dispatcher.store
    given_back: list[tuple[str, str]] = []
    postpone = store.postpone_job

    async def noting(job_id: str, due_at: datetime, reason: str) -> None:
        given_back.append((job_id, reason))
        await postpone(job_id, due_at, reason)

    store.postpone_job = noting  # type: ignore[method-assign]
    message = await rig.post("e1", {"groups": ["g1"]}, Category.emergency)
    runner = asyncio.create_task(rig.dispatcher.run())
    try:
        gates = rig.dispatcher._gates
        await until(lambda: rig.twilio.in_flight == 1 and gates["sms"].waiting == 1, runner)
        rig.clock.advance(rig.dispatcher.settings.lease_seconds / 2 + 1)
        rig.twilio.release()  # the first answer: the send at the gate waited half its lease
        await until(lambda: len(rig.twilio.requests) == 2, runner)
        rig.twilio.release()
        await until(lambda: rig.twilio.in_flight == 0, runner)
    finally:
        rig.dispatcher.stop()
        await runner
    sms = await rig.deliveries(message, "sms")
    assert {d.status for d in sms} == {DeliveryStatus.sent}
    assert len(rig.twilio.requests) == len(families)
    sms_jobs = {f"{JOB_SEND}:{d.id}" for d in sms}
    # One, the send that waited at the gate; the first one's job ended as it was sent.
    assert [reason for job_id, reason in given_back if job_id in sms_jobs] == ["lease_half_gone"]


@pytest.mark.parametrize(
    "rig", [dict(concurrency=1, batch=64, channel_concurrency={"sms": 1})], indirect=True
)
async def test_a_send_that_waited_half_its_lease_is_given_back_not_taken_up_by_a_task(
    rig: Rig,
) -> None:
    """A task that finished its job goes on to the next buffered one itself, but not to
    one that waited half its lease (the provider was slow): started so late, another
    worker could take it over mid-send. It is given back, as the run loop does, and
    claimed again fresh; every SMS still goes once."""
    families = [family(n, phone=True) for n in range(1, 4)]
    await rig.load(directory(*families))
    rig.twilio.hold()
    message = await rig.post("e1", {"groups": ["g1"]}, Category.emergency)
    runner = asyncio.create_task(rig.dispatcher.run())
    try:
        await until(lambda: rig.twilio.in_flight == 1, runner)
        rig.clock.advance(rig.dispatcher.settings.lease_seconds / 2 + 1)
        rig.twilio.release()  # the first answer: the other two waited half their lease
        await until(lambda: len(rig.twilio.requests) == 2, runner)
        sms_jobs = {f"{JOB_SEND}:{d.id}" for d in await rig.deliveries(message, "sms")}
        with sqlite3.connect(rig.db_path) as db:
            given_back = {
                job_id
                for (job_id,) in db.execute(
                    "SELECT id FROM jobs WHERE last_error = 'lease_half_gone'"
                )
            }
        assert len(given_back & sms_jobs) == 2  # both, before the second request went
        rig.twilio.release(2)
        await until(lambda: len(rig.twilio.requests) == 3 and rig.twilio.in_flight == 0, runner)
    finally:
        rig.dispatcher.stop()
        await runner
    sms = await rig.deliveries(message, "sms")
    assert {d.status for d in sms} == {DeliveryStatus.sent}
    assert len(rig.twilio.requests) == len(families)


@pytest.mark.parametrize("rig", [dict(sms_timeout=100.0, max_attempts=2)], indirect=True)
async def test_a_send_with_too_little_of_its_lease_left_is_put_off_not_tried(rig: Rig) -> None:
    """A channel makes a request only while a whole timeout of the job's lease is left
    (gateway/lease_left.py). Here the SMS timeout (100 s) is longer than any claim of the
    60 s lease leaves (a configuration the settings refuse, standing in for a send that
    started late): each send stops before its request, and the job is put off without
    using up an attempt; the delivery stays queued and the breaker learns nothing."""
    await rig.load(directory(family(1, email=False, phone=True)))
    message = await rig.post("e1", {"groups": ["g1"]})
    for _ in range(5):  # five claims: more than max_attempts, none counted
        await rig.dispatcher.run_once()
    sms = await rig.one(message, "sms")
    assert sms.status is DeliveryStatus.queued
    assert rig.twilio.requests == []
    [(_, _, due_at, attempts, leased_until)] = [j for j in rig.jobs() if j[1] == JOB_SEND]
    assert (due_at, attempts, leased_until) == (_us(rig.clock.now()), 0, None)
    assert "sms" not in rig.dispatcher.health.unavailable()
    assert rig.dispatcher._gate("sms").in_flight == 0
