"""The scenario of the tracking issue, end to end through the real HTTP API.

A message with a read receipt goes to a class. Some guardians read it in the parent
app (a guardian token, the inbox, "mark read"), some through the personal read link
in their email (the page, then the confirm button with its CSRF field), one never
reads. After the configured time (a ManualClock, no sleeps) it goes out by SMS to that
one guardian only, through the real SmsChannel to a Twilio-like server; nobody who
read is followed up, and nothing more goes out after. The status API and the
webhooks received by a local server tell the same story, and every webhook
signature verifies with the ``standardwebhooks`` package.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from email import policy
from email.parser import BytesParser
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from gateway.clock import ManualClock
from gateway.models import DeliveryStatus, Device, DirectoryBatch
from gateway.settings import Settings
from gateway.tracker import status_rank
from tests.harness import Gateway, new_tenant, running
from tests.peers.twilio import TwilioPeer
from tests.test_sms import ACCOUNT_SID, AUTH_TOKEN, twilio_settings

HOUR = 3600.0
PHONES = {"p1": "+4741100001", "p2": "+4741100002", "p3": "+4741100003"}
PHONES |= {"p4a": "+4741100041", "p4b": "+4741100042"}
FAMILIES = {"c1": ["p1"], "c2": ["p2"], "c3": ["p3"], "c4": ["p4a", "p4b"]}
IN_APP = ("p1", "p4a")
BY_LINK = ("p2", "p4b")
NEVER = "p3"


def directory() -> DirectoryBatch:
    return DirectoryBatch.model_validate(
        {
            "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
            "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
            "persons": [
                *(
                    {
                        "id": child,
                        "role": "child",
                        "given_name": f"Barn{child}",
                        "birth_date": "2015-03-01",
                        "unit_ids": ["u1"],
                        "group_ids": ["g1"],
                    }
                    for child in FAMILIES
                ),
                *(
                    {
                        "id": pid,
                        "role": "guardian",
                        "given_name": f"Forelder{pid}",
                        "phone": phone,
                        "email": f"{pid}@example.no",
                    }
                    for pid, phone in PHONES.items()
                ),
            ],
            "relations": [
                {"child_id": child, "guardian_id": pid, "parental_responsibility": True}
                for child, pids in FAMILIES.items()
                for pid in pids
            ],
        }
    )


class Receiver:
    """The platform's webhook endpoint: records every request as it arrived."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], str]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.text()))
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hooks"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioPeer]:
    async with TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as peer:
        yield peer


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def read_in_app(gw: Gateway, key: str, guardian_id: str, message_id: str) -> None:
    async with gw.session.post(
        f"{gw.url}/v1/guardians/{guardian_id}/tokens", headers=gw.headers(key)
    ) as resp:
        assert resp.status == 201, await resp.text()
        token = (await resp.json())["token"]
    app = gw.headers(token)
    async with gw.session.get(f"{gw.url}/v1/me/inbox", headers=app) as resp:
        assert [i["message_id"] for i in (await resp.json())["items"]] == [message_id]
    async with gw.session.post(f"{gw.url}/v1/me/inbox/{message_id}/read", headers=app) as resp:
        assert resp.status == 200 and await resp.json() == {"read": True}


def read_link_path(raw: bytes) -> str:
    """The path of the read link in an email (the text part)."""
    mail = BytesParser(policy=policy.default).parsebytes(raw)
    part = mail.get_body(preferencelist=("plain",))
    assert part is not None
    links = re.findall(r"https?://\S+?(/r/[A-Za-z0-9_-]+)", part.get_content())
    assert links, "the email carries a read link"
    return str(links[0])


async def read_by_link(
    gw: Gateway, settings: Settings, tenant_id: str, guardian_id: str, message_id: str
) -> None:
    """Open the read link of the guardian's email, then press the confirm button."""
    (email,) = [
        d
        for d in await gw.deliveries(tenant_id, message_id)
        if d.recipient_id == guardian_id and d.channel == "email"
    ]
    raw = (settings.outbox_dir / "email" / f"{email.id}.eml").read_bytes()
    page_url = gw.url + read_link_path(raw)
    async with gw.session.get(page_url) as resp:
        assert resp.status == 200
        page = await resp.text()
    (csrf,) = re.findall(r'name="csrf" value="([^"]+)"', page)
    async with gw.session.post(page_url, data={"csrf": csrf}, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()


def rank(status: str) -> int:
    return status_rank(DeliveryStatus(status))


def verified_events(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every received webhook, each verified with the standardwebhooks package."""
    hook = Webhook(secret)
    events = []
    for headers, body in receiver.received:
        lowered = {k.lower(): v for k, v in headers.items()}
        payload = hook.verify(body, lowered)  # raises if the signature is wrong
        assert payload == json.loads(body)
        events.append(payload)
    assert len({h["webhook-id"] for h, _ in receiver.received}) == len(receiver.received)
    return events


async def test_read_receipts_escalation_status_and_webhooks_tell_one_story(
    settings: Settings, clock: ManualClock, twilio: TwilioPeer, receiver: Receiver
) -> None:
    configured = settings.model_copy(update={"twilio": twilio_settings(twilio.base_url)})
    async with running(configured, clock) as gw:
        tenant, key = await new_tenant(gw.service, clock, directory())
        for pid in PHONES:  # everyone has the app: the first round goes by push, not SMS
            device = Device(id=f"dev-{pid}", token=f"token-{pid}", platform="android")
            await gw.service.store.upsert_device(tenant.id, pid, device)
        async with gw.session.post(
            f"{gw.url}/v1/webhooks/endpoints", json={"url": receiver.url}, headers=gw.headers(key)
        ) as resp:
            assert resp.status == 201, await resp.text()
            secret = (await resp.json())["secret"]

        message_id = await gw.post_event(
            key,
            {
                "id": "evt-tur",
                "type": "message.created",
                "data": {
                    "audience": {"groups": ["g1"]},
                    "subject": "Tur til Vettakollen",
                    "body": "Husk matpakke og varme klær.",
                    "read_receipt": True,
                },
            },
        )
        await gw.run()
        assert twilio.requests == []

        clock.advance(HOUR)
        for guardian in IN_APP:
            await read_in_app(gw, key, guardian, message_id)
        for guardian in BY_LINK:
            await read_by_link(gw, configured, tenant.id, guardian, message_id)
        await gw.run()

        # the configured time (general: 24 hours after planning) has not passed yet
        clock.advance(23 * HOUR - 1)
        await gw.run()
        assert twilio.requests == []
        clock.advance(1)
        await gw.run()
        (sms,) = twilio.requests
        assert sms.field("To") == PHONES[NEVER]
        body = sms.field("Body") or ""
        assert "Tur til Vettakollen" in body
        assert not any(f"Forelder{p}" in body for p in PHONES)
        # nothing more: the unread guardian has no channel left, the others read
        clock.advance(72 * HOUR)
        await gw.run()
        assert len(twilio.requests) == 1

        status = await gw.status(key, message_id)
        events = verified_events(receiver, secret)

    assert status["read_receipt"] is True
    assert status["summary"] == {
        "guardians_total": 5,
        "guardians_read": 4,
        "children_total": 4,
        "children_reached": 3,
        "children_not_reached": ["c3"],
        "children_not_told": 0,
    }
    children = {c["child_id"]: c for c in status["children"]}
    assert children["c3"] == {
        "child_id": "c3",
        "reached": False,
        "reached_by": [],
        "reached_at": None,
        "reason": None,
    }
    assert sorted(children["c4"]["reached_by"]) == ["p4a", "p4b"]
    guardians = {g["recipient_id"]: g for g in status["guardians"]}
    assert {p: g["via"] for p, g in guardians.items()} == {
        "p1": "inapp",
        "p2": "link",
        "p3": None,
        "p4a": "inapp",
        "p4b": "link",
    }
    assert guardians[NEVER]["best_status"] == "delivered"  # in the inbox; never opened
    assert guardians[NEVER]["channels"] == {
        "inapp": "delivered",
        "push": "sent",
        "email": "sent",
        "sms": "sent",
    }
    assert all(guardians[p]["best_status"] == "read" for p in (*IN_APP, *BY_LINK))
    assert all("sms" not in guardians[p]["channels"] for p in (*IN_APP, *BY_LINK))

    # The webhooks say the same.
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event["data"])
    readers = {g["recipient_id"] for g in status["guardians"] if g["read_at"]}
    assert {e["recipient_id"] for e in by_type["message.read"]} == readers
    assert {e["via"] for e in by_type["message.read"] if e["recipient_id"] == "p2"} == {"link"}
    assert {(e["subject_kind"], e["subject_id"]) for e in by_type["message.reached"]} == {
        ("guardian", p) for p in readers
    }
    # Webhooks are sent concurrently, so they may arrive in any order; status only moves
    # forward, so the highest status announced per delivery is where it stands.
    last: dict[str, str] = {}
    for update in by_type["delivery.updated"]:
        assert update["message_id"] == message_id
        known = last.get(update["delivery_id"])
        if known is None or rank(update["status"]) > rank(known):
            last[update["delivery_id"]] = update["status"]
    shown = {d["id"]: d["status"] for d in status["deliveries"]}
    assert last == {i: s for i, s in shown.items() if i in last}
    escalated = [
        d for d in status["deliveries"] if d["recipient_id"] == NEVER and d["channel"] == "sms"
    ]
    assert [last.get(d["id"]) for d in escalated] == ["sent"]
    # every delivery that left the gateway was announced
    assert set(last) == {d["id"] for d in status["deliveries"] if d["status"] != "queued"}
