"""Outbound webhooks end to end: the API, a real SQLite store, the dispatcher with a
ManualClock, and a local receiving aiohttp server that verifies every signature with
the ``standardwebhooks`` package (against wall time, as a real receiver would)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, get_args

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from channels.inapp import InAppChannel
from channels.outbox import OutboxChannel
from gateway.api.app import create_app
from gateway.api.context import CTX, AppContext
from gateway.api.webhooks import WebhookEventType
from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.constants import WEBHOOK_EVENT_TYPES
from gateway.dispatcher import Dispatcher
from gateway.models import DirectoryBatch, Reply, derive_id
from gateway.render import Renderer
from gateway.service import TEMPLATES_DIR, Service
from gateway.settings import Settings, WebhookSettings
from gateway.store import Store
from gateway.store.sqlite import SqliteStore
from gateway.webhooks import (
    WebhookService,
    retry_after_seconds,
    retry_delay,
    sign,
)
from tests.conftest import DIRECTORY, SECRET_KEY, TenantCreds

PUBLIC_URL = "http://127.0.0.1:8080"
INTERNAL = {"planned", "queued", "sending"}
REACHED = "message.reached"


# --------------------------------------------------------------------------- receiver


@dataclass
class Hit:
    endpoint: str
    webhook_id: str
    body: str
    answered: int


@dataclass
class Receiver:
    """The platform's webhook receiver. ``answer[name]`` is what it says now:
    (status, headers); it verifies every request before answering."""

    base: str = ""
    secrets: dict[str, list[str]] = field(default_factory=dict)
    answer: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    slow: dict[str, float] = field(default_factory=dict)  # seconds before answering
    bad: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"{self.base}/hook/{name}"

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.text()
        headers = dict(request.headers)
        secrets = self.secrets.get(name, [])
        if not secrets:
            self.bad.append("no secret")
        for secret in secrets:  # every secret in use must verify on its own
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError as exc:
                self.bad.append(f"{name}: {exc}")
        if name in self.slow:
            await asyncio.sleep(self.slow[name])
        status, extra = self.answer.get(name, (200, {}))
        self.hits.append(Hit(name, headers["webhook-id"], body, status))
        return web.Response(status=status, headers=extra)

    def delivered(self, name: str | None = None) -> list[Hit]:
        return [
            h for h in self.hits if 200 <= h.answered < 300 and (name is None or h.endpoint == name)
        ]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    box = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{name}", box.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    box.base = f"http://{host}:{port}"
    try:
        yield box
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- the rig


@dataclass
class Rig:
    client: TestClient
    store: Store
    clock: ManualClock
    settings: Settings
    tenant: TenantCreds
    receiver: Receiver
    dispatcher: Dispatcher
    webhooks: WebhookService
    tmp: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tenant.api_key}"}

    async def endpoint(self, name: str, creds: TenantCreds | None = None, **body: Any) -> str:
        creds = creds or self.tenant
        resp = await self.client.post(
            "/v1/webhooks/endpoints",
            json={"url": self.receiver.url(name), **body},
            headers={"Authorization": f"Bearer {creds.api_key}"},
        )
        assert resp.status == 201, await resp.text()
        data = await resp.json()
        self.receiver.secrets[name] = [data["secret"]]
        return str(data["id"])

    async def event(self, event_id: str = "evt-1") -> str:
        body = {
            "id": event_id,
            "type": "message.created",
            "data": {"audience": {"groups": ["g1"]}, "subject": "Tur", "body": "Vi går på tur."},
        }
        resp = await self.client.post("/v1/events", json=body, headers=self.auth)
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["message_id"])

    async def read_in_app(self, message_id: str, guardian: str = "p1") -> None:
        resp = await self.client.post(f"/v1/guardians/{guardian}/tokens", headers=self.auth)
        token = (await resp.json())["token"]
        resp = await self.client.post(
            f"/v1/me/inbox/{message_id}/read", headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 200, await resp.text()

    async def reply(self, message_id: str | None, body: str, n: int = 1) -> str:
        reply = Reply(
            id=derive_id("twilio", f"SM{n}"),
            tenant_id=self.tenant.tenant.id,
            channel="sms",
            message_id=message_id,
            person_id="p1",
            body=body,
            provider_id=f"SM{n}",
            received_at=self.clock.now(),
        )
        assert await self.store.add_reply(reply)
        return reply.id

    async def run(self, advance: float = 0) -> None:
        self.clock.advance(advance)
        await self.dispatcher.run_until_idle()

    async def messages(self, **query: str) -> list[dict[str, Any]]:
        resp = await self.client.get("/v1/webhooks/messages", params=query, headers=self.auth)
        assert resp.status == 200
        return list((await resp.json())["messages"])

    async def expected_events(self, message_ids: list[str]) -> set[tuple[str, ...]]:
        """What the platform must hear about, from the store's own records."""
        expected: set[tuple[str, ...]] = set()
        for message_id in message_ids:
            deliveries = await self.store.list_deliveries(self.tenant.tenant.id, message_id)
            history = await self.store.history([d.id for d in deliveries])
            for delivery_id, changes in history.items():
                expected |= {
                    ("delivery.updated", delivery_id, c.status.value)
                    for c in changes
                    if c.status.value not in INTERNAL
                }
        return expected


def event_key(body: str) -> tuple[str, ...]:
    payload = json.loads(body)
    data = payload["data"]
    if payload["type"] == "delivery.updated":
        return (payload["type"], data["delivery_id"], data["status"])
    if payload["type"] == "message.read":
        return (payload["type"], data["message_id"], data["recipient_id"])
    if payload["type"] == "reply.received":
        return (payload["type"], data["reply_id"])
    return (payload["type"], json.dumps(data, sort_keys=True))


def build_worker(
    rig_store: Store,
    clock: ManualClock,
    settings: Settings,
    tmp: Path,
    webhook_settings: WebhookSettings | None = None,
) -> Any:
    channels = {
        "inapp": InAppChannel(),
        "email": OutboxChannel("email", tmp / "outbox", PUBLIC_URL),
        "sms": OutboxChannel("sms", tmp / "outbox", PUBLIC_URL),
        "push": OutboxChannel("push", tmp / "outbox", PUBLIC_URL),
    }
    webhooks = WebhookService(rig_store, clock, webhook_settings or settings.webhooks)
    dispatcher = Dispatcher(
        rig_store,
        channels,  # type: ignore[arg-type]
        Renderer(TEMPLATES_DIR, PUBLIC_URL),
        clock,
        settings.dispatch,
        handlers=webhooks.handlers(),
    )
    return dispatcher, webhooks


@pytest.fixture
async def rig(
    settings: Settings,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    receiver: Receiver,
    tmp_path: Path,
) -> AsyncIterator[Rig]:
    await store.apply_directory(tenant.tenant.id, DirectoryBatch.model_validate(DIRECTORY))
    ctx = AppContext(settings=settings, store=store, clock=clock, secret=SECRET_KEY.encode())
    client = TestClient(TestServer(create_app(ctx)))
    await client.start_server()
    dispatcher, webhooks = build_worker(store, clock, settings, tmp_path)
    await webhooks.start()
    try:
        yield Rig(client, store, clock, settings, tenant, receiver, dispatcher, webhooks, tmp_path)
    finally:
        await webhooks.aclose()
        await client.close()


# --------------------------------------------------------------------------- the test


async def test_receiver_down_for_a_while_gets_every_event_exactly_once(rig: Rig) -> None:
    rig.receiver.answer["platform"] = (500, {})
    await rig.endpoint("platform")
    message_id = await rig.event()
    await rig.run()
    await rig.read_in_app(message_id)
    reply_id = await rig.reply(message_id, "Vi kommer!")
    await rig.run()
    assert rig.receiver.hits and rig.receiver.delivered() == []
    first_round = {h.webhook_id for h in rig.receiver.hits}

    rig.receiver.answer["platform"] = (429, {"Retry-After": "120"})
    await rig.run(advance=7)  # past the first retry (5 s, stretched by at most 25 %)
    assert {h.webhook_id for h in rig.receiver.hits if h.answered == 429} == first_round

    rig.receiver.answer["platform"] = (200, {})
    hits_before = len(rig.receiver.hits)
    await rig.run(advance=60)
    assert len(rig.receiver.hits) == hits_before, "Retry-After: 120 was not honoured"
    await rig.run(advance=61)

    delivered = rig.receiver.delivered()
    ids = [h.webhook_id for h in delivered]
    assert len(ids) == len(set(ids)), "an event arrived twice"
    outbox = await rig.messages()
    assert {m["id"] for m in outbox} == set(ids) == first_round
    assert all(m["status"] == "delivered" and m["attempts"] == 3 for m in outbox)
    assert rig.receiver.bad == []

    expected = await rig.expected_events([message_id])
    expected |= {("message.read", message_id, "p1"), ("reply.received", reply_id)}
    got = [event_key(h.body) for h in delivered]
    assert len(got) == len(set(got))
    # message.reached comes from the tracker (with its reached rows); its shape is the tracker's.
    reached = [json.loads(h.body) for h in delivered if json.loads(h.body)["type"] == REACHED]
    assert all(r["data"]["message_id"] == message_id for r in reached)
    assert {key for key in got if key[0] != REACHED} == expected
    assert any(key[0] == "delivery.updated" and key[2] == "read" for key in got)

    detail = await rig.client.get(f"/v1/webhooks/messages/{ids[0]}", headers=rig.auth)
    history = (await detail.json())["history"]
    assert [a["status_code"] for a in history] == [500, 429, 200]
    assert all(a["duration_ms"] >= 0 and a["at"] for a in history)


# --------------------------------------------------------------------------- payloads, headers


async def test_payload_envelope_and_headers(rig: Rig) -> None:
    await rig.endpoint("platform")
    message_id = await rig.event()
    await rig.run()
    hit = rig.receiver.delivered()[0]
    payload = json.loads(hit.body)
    assert set(payload) == {"type", "timestamp", "data"}
    assert payload["type"] == "delivery.updated"
    assert datetime.fromisoformat(payload["timestamp"]) == rig.clock.now()
    data = payload["data"]
    assert set(data) == {
        "message_id",
        "delivery_id",
        "recipient_id",
        "channel",
        "status",
        "reason",
        "at",
    }
    assert data["message_id"] == message_id and data["recipient_id"] == "p1"
    assert hit.webhook_id.startswith("msg_")


async def test_event_types_filter(rig: Rig) -> None:
    await rig.endpoint("all")
    await rig.endpoint("replies", event_types=["reply.received"])
    message_id = await rig.event()
    await rig.run()
    await rig.reply(message_id, "Ok")
    await rig.run()
    assert {json.loads(h.body)["type"] for h in rig.receiver.delivered("replies")} == {
        "reply.received"
    }
    assert {json.loads(h.body)["type"] for h in rig.receiver.delivered("all")} == {
        "delivery.updated",
        "reply.received",
    }


async def test_a_change_in_the_feed_reaches_the_endpoint_that_wants_it(rig: Rig) -> None:
    await rig.endpoint("platform", event_types=["message.reached"])
    at = rig.clock.now()
    tenant_id = rig.tenant.tenant.id
    data = {"message_id": "m1"}
    assert await rig.store.append_change(tenant_id, "message.reached", data, at) is not None
    await rig.run()
    [hit] = rig.receiver.delivered()
    assert json.loads(hit.body)["data"] == {"message_id": "m1", "at": at.isoformat()}


async def test_reply_body_goes_to_the_platform_and_never_to_logs(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_text = "Kari har vondt i magen i dag"
    await rig.endpoint("platform")
    rig.receiver.answer["platform"] = (500, {})
    await rig.reply(None, secret_text)
    await rig.run()
    rig.receiver.answer["platform"] = (200, {})
    await rig.run(advance=10)
    [hit] = rig.receiver.delivered()
    assert json.loads(hit.body)["data"]["body"] == secret_text
    # aiosqlite's debug lines carry SQL parameters; gateway.logs keeps it at WARNING.
    records = [r for r in caplog.records if not r.name.startswith("aiosqlite")]
    assert any(r.name == "gateway.webhooks" for r in records)
    for record in records:
        assert secret_text not in record.getMessage()
        assert secret_text not in repr(record.__dict__)
        assert rig.receiver.secrets["platform"][0] not in repr(record.__dict__)


async def test_tenants_never_see_each_others_events_or_endpoints(rig: Rig) -> None:
    other, key_b, whsec_b = await create_tenant(rig.store, "Bærum kommune", rig.clock.now())
    creds_b = TenantCreds(other, key_b, whsec_b)
    await rig.endpoint("a")
    endpoint_b = await rig.endpoint("b", creds=creds_b)
    await rig.event()
    await rig.run()
    assert rig.receiver.delivered("a")
    assert rig.receiver.hits and all(h.endpoint == "a" for h in rig.receiver.hits)

    headers_b = {"Authorization": f"Bearer {key_b}"}
    resp = await rig.client.get("/v1/webhooks/endpoints", headers=headers_b)
    assert [e["id"] for e in (await resp.json())["endpoints"]] == [endpoint_b]
    endpoints_a = await (await rig.client.get("/v1/webhooks/endpoints", headers=rig.auth)).json()
    [endpoint_a] = endpoints_a["endpoints"]
    assert "secret" not in endpoint_a
    for method, path in (
        ("GET", f"/v1/webhooks/endpoints/{endpoint_a['id']}"),
        ("DELETE", f"/v1/webhooks/endpoints/{endpoint_a['id']}"),
        ("POST", f"/v1/webhooks/endpoints/{endpoint_a['id']}/rotate-secret"),
        ("GET", f"/v1/webhooks/messages/{rig.receiver.hits[0].webhook_id}"),
        ("POST", f"/v1/webhooks/messages/{rig.receiver.hits[0].webhook_id}/replay"),
    ):
        resp = await rig.client.request(method, path, headers=headers_b)
        assert resp.status == 404, (method, path)
    resp = await rig.client.get("/v1/webhooks/messages", headers=headers_b)
    assert (await resp.json())["messages"] == []


# --------------------------------------------------------------------------- failures


async def test_410_disables_the_endpoint_and_stops_its_messages(rig: Rig) -> None:
    rig.receiver.answer["platform"] = (410, {})
    endpoint_id = await rig.endpoint("platform")
    message_id = await rig.event()
    await rig.run()
    assert rig.receiver.hits
    resp = await rig.client.get(f"/v1/webhooks/endpoints/{endpoint_id}", headers=rig.auth)
    endpoint = await resp.json()
    assert (endpoint["enabled"], endpoint["disabled_reason"]) == (False, "endpoint_gone")
    outbox = await rig.messages()
    assert outbox and all((m["status"], m["reason"]) == ("failed", "endpoint_gone") for m in outbox)

    hits = len(rig.receiver.hits)
    await rig.reply(message_id, "Hei", n=1)
    await rig.run(advance=3600)
    assert len(rig.receiver.hits) == hits, "a disabled endpoint was called"
    # Replaying needs the endpoint enabled first.
    resp = await rig.client.post(
        f"/v1/webhooks/messages/{outbox[0]['id']}/replay", headers=rig.auth
    )
    assert resp.status == 409

    rig.receiver.answer["platform"] = (200, {})
    resp = await rig.client.patch(
        f"/v1/webhooks/endpoints/{endpoint_id}", json={"enabled": True}, headers=rig.auth
    )
    assert resp.status == 200
    assert (await resp.json())["disabled_reason"] is None
    await rig.reply(message_id, "Hei igjen", n=2)
    await rig.run()
    assert [json.loads(h.body)["data"]["reply_id"] for h in rig.receiver.delivered()] == [
        derive_id("twilio", "SM2")
    ]


async def test_4xx_is_retried_over_24_hours_then_failed_and_replay_delivers(rig: Rig) -> None:
    rig.receiver.answer["platform"] = (400, {})
    await rig.endpoint("platform", event_types=["reply.received"])
    await rig.reply(None, "Hei")
    await rig.run()
    schedule = rig.settings.webhooks.retry_schedule
    for delay in schedule:
        [message] = await rig.messages()
        assert message["status"] == "pending"
        await rig.run(advance=delay * 1.25 + 1)
    [message] = await rig.messages(status="failed")
    assert (message["attempts"], message["reason"]) == (len(schedule) + 1, "http_400")
    assert len(rig.receiver.hits) == len(schedule) + 1
    assert len({h.webhook_id for h in rig.receiver.hits}) == 1
    detail = await (
        await rig.client.get(f"/v1/webhooks/messages/{message['id']}", headers=rig.auth)
    ).json()
    first = datetime.fromisoformat(detail["history"][0]["at"])
    last = datetime.fromisoformat(detail["history"][-1]["at"])
    assert last - first >= timedelta(hours=24)
    await rig.run(advance=100_000)
    assert len(rig.receiver.hits) == len(schedule) + 1, "a failed message was sent again"

    rig.receiver.answer["platform"] = (200, {})
    resp = await rig.client.post(f"/v1/webhooks/messages/{message['id']}/replay", headers=rig.auth)
    assert resp.status == 200
    assert (await resp.json())["status"] == "pending"
    again = await rig.client.post(f"/v1/webhooks/messages/{message['id']}/replay", headers=rig.auth)
    assert again.status == 409  # only a failed message is replayed
    await rig.run()
    [hit] = rig.receiver.delivered()
    assert hit.webhook_id == message["id"]
    assert await rig.messages(status="failed") == []
    assert rig.receiver.bad == []


async def test_redirects_are_not_followed(rig: Rig) -> None:
    rig.receiver.answer["platform"] = (302, {"Location": rig.receiver.url("elsewhere")})
    await rig.endpoint("platform", event_types=["reply.received"])
    await rig.reply(None, "Hei")
    await rig.run()
    [message] = await rig.messages()
    assert (message["status"], message["reason"]) == ("pending", "http_302")
    assert [h.endpoint for h in rig.receiver.hits] == ["platform"]


async def test_connection_errors_are_retried(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.webhooks")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    resp = await rig.client.post(
        "/v1/webhooks/endpoints",
        json={"url": f"http://127.0.0.1:{port}/gone", "event_types": ["reply.received"]},
        headers=rig.auth,
    )
    assert resp.status == 201
    await rig.reply(None, "Hei")
    await rig.run()
    [message] = await rig.messages()
    assert (message["status"], message["reason"], message["attempts"]) == (
        "pending",
        "connection_error",
        1,
    )
    # A receiver that fails is visible at WARNING, with the reason and no address.
    [failed] = [r for r in caplog.records if r.getMessage() == "webhook attempt failed; retrying"]
    assert (failed.levelno, getattr(failed, "code", None)) == (logging.WARNING, "connection_error")


async def test_timeouts_are_retried(rig: Rig) -> None:
    await rig.endpoint("platform", event_types=["reply.received"])
    rig.dispatcher, quick = build_worker(
        rig.store, rig.clock, rig.settings, rig.tmp, WebhookSettings(timeout=0.2)
    )
    rig.receiver.slow["platform"] = 2.0
    try:
        await rig.reply(None, "Hei")
        await rig.run()
    finally:
        await quick.aclose()
    [message] = await rig.messages()
    assert (message["status"], message["reason"], message["attempts"]) == (
        "pending",
        "timeout",
        1,
    )


# --------------------------------------------------------------------------- restarts


async def test_restart_in_the_middle_loses_nothing(rig: Rig) -> None:
    rig.receiver.answer["platform"] = (503, {})
    await rig.endpoint("platform")
    message_id = await rig.event()
    await rig.run()
    pending = {m["id"] for m in await rig.messages()}
    assert pending
    # A send in flight when the process dies: leased, never finished.
    in_flight = await rig.store.claim_jobs(
        ["webhook_send"], 1, rig.clock.now() + timedelta(seconds=10), 60
    )
    assert in_flight
    # A change whose fan-out has not run yet.
    reply_id = await rig.reply(message_id, "Takk")
    await rig.store.close()

    store = SqliteStore(str(rig.settings.sqlite_path))
    await store.open()
    dispatcher, webhooks = build_worker(store, rig.clock, rig.settings, rig.tmp)
    await webhooks.start()
    try:
        rig.receiver.answer["platform"] = (200, {})
        rig.clock.advance(75)  # past the retries and the dead worker's lease
        await dispatcher.run_until_idle()
    finally:
        await webhooks.aclose()
        await store.close()

    delivered = rig.receiver.delivered()
    ids = [h.webhook_id for h in delivered]
    assert len(ids) == len(set(ids))
    assert pending < set(ids)
    keys = {event_key(h.body) for h in delivered}
    assert ("reply.received", reply_id) in keys
    assert len(ids) == len(pending) + 1
    assert rig.receiver.bad == []


# --------------------------------------------------------------------------- signatures


async def test_rotated_secret_signs_with_old_and_new_during_the_grace(rig: Rig) -> None:
    endpoint_id = await rig.endpoint("platform", event_types=["reply.received"])
    old = rig.receiver.secrets["platform"][0]
    resp = await rig.client.post(
        f"/v1/webhooks/endpoints/{endpoint_id}/rotate-secret", headers=rig.auth
    )
    assert resp.status == 200
    new = (await resp.json())["secret"]
    assert new.startswith("whsec_") and new != old
    rig.receiver.secrets["platform"] = [old, new]  # both must verify
    await rig.reply(None, "Hei", n=1)
    await rig.run()
    assert len(rig.receiver.delivered()) == 1

    rig.clock.advance(rig.settings.webhooks.rotation_grace + 1)
    rig.receiver.secrets["platform"] = [new]
    await rig.reply(None, "Hei igjen", n=2)
    await rig.run()
    assert len(rig.receiver.delivered()) == 2
    assert rig.receiver.bad == []
    with pytest.raises(WebhookVerificationError):
        last = rig.receiver.delivered()[-1]
        Webhook(old).verify(last.body, sign([new], last.webhook_id, datetime.now(UTC), last.body))


def test_signature_is_standard_webhooks() -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    now = datetime.now(UTC)
    headers = sign([secret], "msg_1", now, '{"a":1}')
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify('{"a":1}', headers) == {"a": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify('{"a":2}', headers)


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


def test_default_schedule_covers_a_day_and_never_shortens(settings: Settings) -> None:
    webhooks = settings.webhooks
    assert sum(webhooks.retry_schedule) >= 24 * 3600
    for attempt, scheduled in enumerate(webhooks.retry_schedule, start=1):
        delay = retry_delay(attempt, webhooks, None)
        assert delay is not None and scheduled <= delay <= scheduled * 1.25
    assert retry_delay(len(webhooks.retry_schedule) + 1, webhooks, None) is None
    assert retry_delay(1, webhooks, 600) == 600
    assert retry_delay(1, webhooks, 10**9) == webhooks.max_retry_after


def test_api_event_types_match_the_constants() -> None:
    assert get_args(WebhookEventType) == WEBHOOK_EVENT_TYPES


# --------------------------------------------------------------------------- API validation


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"url": "ftp://127.0.0.1/x"}, ["url"]),
        ({"url": "http://example.com/hook"}, ["url"]),
        ({"url": "https://user:pw@example.com/hook"}, ["url"]),
        ({"url": "not a url"}, ["url"]),
        ({"url": "https://example.com/hook", "event_types": []}, ["event_types"]),
        ({"url": "https://example.com/hook", "event_types": ["message.created"]}, None),
        ({"url": "https://example.com/hook", "secret": "whsec_mine"}, ["secret"]),
        ({}, ["url"]),
    ],
)
async def test_endpoint_bodies_are_validated(
    app_client: TestClient, tenant: TenantCreds, body: dict[str, Any], loc: list[str] | None
) -> None:
    resp = await app_client.post(
        "/v1/webhooks/endpoints", json=body, headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    assert resp.status == 422
    error = await resp.json()
    assert error["error"] == "validation_failed"
    if loc is not None:
        assert error["errors"][0]["loc"][: len(loc)] == loc


async def test_endpoint_crud_through_the_api(app_client: TestClient, tenant: TenantCreds) -> None:
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    resp = await app_client.post(
        "/v1/webhooks/endpoints",
        json={"url": "https://platform.example/hooks", "description": "IT"},
        headers=auth,
    )
    assert resp.status == 201
    created = await resp.json()
    assert created["secret"].startswith("whsec_")
    assert created["event_types"] == list(WEBHOOK_EVENT_TYPES)
    path = f"/v1/webhooks/endpoints/{created['id']}"

    got = await (await app_client.get(path, headers=auth)).json()
    assert "secret" not in got and got["description"] == "IT"
    resp = await app_client.patch(
        path, json={"event_types": ["message.read"], "enabled": False}, headers=auth
    )
    patched = await resp.json()
    assert (patched["event_types"], patched["enabled"], patched["disabled_reason"]) == (
        ["message.read"],
        False,
        "disabled",
    )
    for bad in ({}, {"url": None}, {"url": "http://example.com"}, {"enabled": "maybe"}):
        resp = await app_client.patch(path, json=bad, headers=auth)
        assert resp.status == 422, bad
    resp = await app_client.get("/v1/webhooks/messages?status=lost", headers=auth)
    assert resp.status == 422
    for limit in ("0", "%C2%B2", "%D9%A3"):  # 0, a superscript two, an Arabic-Indic three
        resp = await app_client.get(f"/v1/webhooks/messages?limit={limit}", headers=auth)
        assert resp.status == 422, limit
    assert (await app_client.delete(path, headers=auth)).status == 204
    assert (await app_client.get(path, headers=auth)).status == 404
    assert (await app_client.get("/v1/webhooks/endpoints")).status == 401


async def test_production_requires_https(
    settings: Settings, store: Store, clock: ManualClock, tenant: TenantCreds
) -> None:
    production = settings.model_copy(update={"environment": "production"})
    ctx = AppContext(settings=production, store=store, clock=clock, secret=SECRET_KEY.encode())
    client = TestClient(TestServer(create_app(ctx)))
    await client.start_server()
    try:
        assert client.app is not None and client.app[CTX].settings.environment == "production"
        auth = {"Authorization": f"Bearer {tenant.api_key}"}
        resp = await client.post(
            "/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/x"}, headers=auth
        )
        assert resp.status == 422
        assert (await resp.json())["errors"][0]["type"] == "url_https_required"
        resp = await client.post(
            "/v1/webhooks/endpoints", json={"url": "https://platform.example/x"}, headers=auth
        )
        assert resp.status == 201
    finally:
        await client.close()


# --------------------------------------------------------------------------- the service


async def test_service_wires_webhooks_into_its_workers(
    settings: Settings, receiver: Receiver
) -> None:
    service = Service(settings.model_copy(update={"port": 0}))
    await service.start()
    try:
        created, api_key, _ = await create_tenant(service.store, "Asker", service.clock.now())
        await service.store.apply_directory(created.id, DirectoryBatch.model_validate(DIRECTORY))
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{service.port}"
            auth = {"Authorization": f"Bearer {api_key}"}
            resp = await http.post(
                f"{base}/v1/webhooks/endpoints",
                json={"url": receiver.url("svc"), "event_types": ["delivery.updated"]},
                headers=auth,
            )
            assert resp.status == 201
            receiver.secrets["svc"] = [(await resp.json())["secret"]]
            event = {
                "id": "evt-svc",
                "type": "message.created",
                "data": {"audience": {"groups": ["g1"]}, "subject": "Tur", "body": "Tur."},
            }
            resp = await http.post(f"{base}/v1/events", json=event, headers=auth)
            assert resp.status == 202
        async with asyncio.timeout(10):
            while not receiver.delivered("svc"):
                await asyncio.sleep(0.05)  # waiting for real workers, not timing logic
    finally:
        await service.stop()
    assert receiver.bad == []
    assert {json.loads(h.body)["type"] for h in receiver.delivered("svc")} == {"delivery.updated"}
