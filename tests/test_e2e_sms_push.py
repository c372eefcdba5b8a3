"""Issue 3, end to end: a running gateway with Twilio (the Twilio-like peer) and FCM (the
FCM-like peer with a throwaway service account) configured. Messages go in through the
HTTP API; the peer then posts SIGNED status callbacks and an inbound SMS back to the
gateway's public URL, which is the running server's own URL."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from channels.sms import INBOUND_PATH
from gateway.auth import create_tenant
from gateway.demo import DemoClient
from gateway.models import FINAL
from gateway.service import Service
from gateway.settings import load_settings
from tests.conftest import SECRET_KEY
from tests.peers.fcm import FcmServer, write_service_account
from tests.peers.twilio import TwilioPeer

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token-" + "z" * 16
PROJECT = "budbringer-test"
PHONES = {"p1": "+4791000001", "p2": "+4791000002", "p3": "+4791000003", "p4": "+4791000004"}
DEVICES = {"p1": {"d1a": "tok-p1-a", "d1b": "tok-p1-b"}, "p3": {"d3": "tok-p3-dead"}}
DEVICES["p4"] = {"d4": "tok-p4"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def directory() -> dict[str, Any]:
    persons: list[dict[str, Any]] = []
    relations: list[dict[str, Any]] = []
    for n in range(1, 5):
        persons.append(
            {
                "id": f"c{n}",
                "role": "child",
                "given_name": f"Barn{n}",
                "birth_date": "2014-02-02",
                "unit_ids": ["u1"],
                "group_ids": ["g1"],
            }
        )
        guardian: dict[str, Any] = {
            "id": f"p{n}",
            "role": "guardian",
            "given_name": f"Forelder{n}",
            "phone": PHONES[f"p{n}"],
        }
        if n == 4:
            guardian["email"] = "p4@familie.no"
        persons.append(guardian)
        relations.append(
            {"child_id": f"c{n}", "guardian_id": f"p{n}", "parental_responsibility": True}
        )
    return {
        "units": [{"id": "u1", "kind": "school", "name": "Solvang skole", "sms_sender": "Solvang"}],
        "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "6B"}],
        "persons": persons,
        "relations": relations,
    }


@dataclass
class Gateway:
    service: Service
    client: DemoClient
    twilio: TwilioPeer
    fcm: FcmServer
    public_url: str

    async def post(self, event_id: str, **data: Any) -> str:
        event = {
            "id": event_id,
            "type": "message.created",
            "data": {"subject": "Beskjed", "body": "Husk gymtøy i morgen.", **data},
        }
        accepted = await self.client.post_signed_event(event)
        return str(accepted["message_id"])

    async def status(self, message_id: str) -> Any:
        return await self.client.call("GET", f"/v1/messages/{message_id}")

    async def wait_final(self, message_id: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(message_id)
            deliveries = status["deliveries"]
            if status["planned_at"] and all(d["status"] in FINAL for d in deliveries):
                return status
            assert time.monotonic() < deadline, status["counts"]
            await asyncio.sleep(0.05)

    async def guardian_token(self, guardian_id: str) -> dict[str, str]:
        token = await self.client.call("POST", f"/v1/guardians/{guardian_id}/tokens")
        return {"Authorization": f"Bearer {token['token']}"}


def by_channel(status: Any) -> dict[tuple[str, str], list[Any]]:
    found: dict[tuple[str, str], list[Any]] = {}
    for d in status["deliveries"]:
        found.setdefault((d["recipient_id"], d["channel"]), []).append(d)
    return found


def peered_settings(tmp_path: Path, twilio: TwilioPeer, fcm: FcmServer, account: Path) -> Any:
    """A gateway on a free port with the Twilio and FCM peers and this service account."""
    port = free_port()
    return load_settings(
        store_url=f"sqlite:///{tmp_path / 'budbringer.db'}",
        outbox_dir=tmp_path / "outbox",
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        secret_key=SECRET_KEY,
        twilio={
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "base_url": twilio.base_url,
            "default_sender": "Budbringer",
        },
        fcm={"service_account_file": account, "base_url": fcm.url, "token_url": fcm.token_url},
        dispatch={"poll_interval": 0.05},
    )


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio, FcmServer(project_id=PROJECT) as fcm:
        account = write_service_account(tmp_path / "sa.json", fcm.token_url, PROJECT)
        fcm.trust(account)
        settings = peered_settings(tmp_path, twilio, fcm, account)
        public_url = settings.public_url
        service = Service(settings)
        await service.start()
        assert service.port == settings.port
        client: DemoClient | None = None
        try:
            tenant, api_key, whsec = await create_tenant(
                service.store, "Asker kommune", service.clock.now()
            )
            client = DemoClient(public_url, api_key, whsec, tenant.id)
            gw = Gateway(service, client, twilio, fcm, public_url)
            await client.call("POST", "/v1/directory", directory())
            for guardian_id, devices in DEVICES.items():
                headers = await gw.guardian_token(guardian_id)
                for device_id, token in devices.items():
                    await client.call(
                        "PUT",
                        f"/v1/me/devices/{device_id}",
                        {"token": token, "platform": "android"},
                        headers=headers,
                    )
            yield gw
        finally:
            if client is not None:
                await client.close()
            await service.stop()


async def test_push_per_device_sms_without_app_and_callbacks(gateway: Gateway) -> None:
    gateway.fcm.dead["tok-p3-dead"] = "UNREGISTERED"
    message_id = await gateway.post("evt-1", audience={"groups": ["g1"]})
    status = await gateway.wait_final(message_id)
    found = by_channel(status)

    # Guardians with the app get push, one delivery per device; without it, SMS.
    assert sorted(d["target"] for d in found[("p1", "push")]) == ["d1a", "d1b"]
    assert ("p1", "sms") not in found
    assert [d["status"] for d in found[("p2", "sms")]] == ["sent"]
    assert ("p2", "push") not in found
    assert {d["status"] for d in found[("p1", "push")]} == {"sent"}
    sent_tokens = sorted(s.body["message"]["token"] for s in gateway.fcm.sent)
    assert sent_tokens == ["tok-p1-a", "tok-p1-b", "tok-p4"]
    assert all(s.body["message"]["data"]["message_id"] == message_id for s in gateway.fcm.sent)
    # (p3's dead push may be escalated to SMS by gateway/escalation.py: not checked here)
    [sms_request] = [r for r in gateway.twilio.requests if r.field("To") != PHONES["p3"]]
    assert sms_request.field("To") == PHONES["p2"]
    assert sms_request.field("From") == "Solvang"
    [sms_delivery] = found[("p2", "sms")]
    status_url = f"{gateway.public_url}/v1/providers/twilio/status?d={sms_delivery['id']}"
    assert sms_request.field("StatusCallback") == status_url

    # The dead token: failed with the reason, and pruned from the registry.
    [dead] = found[("p3", "push")]
    assert (dead["status"], dead["reason"]) == ("failed", "fcm_UNREGISTERED")
    # (pruned by a job committed with the failure: wait for the worker to do it)
    deadline = time.monotonic() + 10
    while True:
        devices = await gateway.client.call(
            "GET", "/v1/me/devices", headers=await gateway.guardian_token("p3")
        )
        if devices == {"devices": []} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert devices == {"devices": []}
    still = await gateway.client.call(
        "GET", "/v1/me/devices", headers=await gateway.guardian_token("p1")
    )
    assert sorted(d["id"] for d in still["devices"]) == ["d1a", "d1b"]

    # Signed callbacks, out of order and repeated: delivered wins and stays.
    [sid] = [sid for sid, m in gateway.twilio.messages.items() if m["to"] == PHONES["p2"]]
    for twilio_status in ("delivered", "sent", "queued", "delivered", "sending", "delivered"):
        result = await gateway.twilio.send_status(sid, twilio_status)
        assert result.status == 200
    status = await gateway.status(message_id)
    [sms] = by_channel(status)[("p2", "sms")]
    assert sms["status"] == "delivered"
    assert [h["status"] for h in sms["history"]] == ["queued", "sent", "delivered"]

    # Unsigned or wrongly signed: 403 and nothing changes.
    assert (await gateway.twilio.send_status(sid, "failed", signed=False)).status == 403
    assert (await gateway.twilio.send_status(sid, "read", signature="bm90IGl0")).status == 403
    [sms] = by_channel(await gateway.status(message_id))[("p2", "sms")]
    assert sms["status"] == "delivered" and len(sms["history"]) == 3

    # An inbound SMS reply: stored, linked to the guardian and the message.
    inbound = await gateway.twilio.send_inbound(
        gateway.public_url + INBOUND_PATH, from_=PHONES["p2"], to="Solvang", body="Takk, ok!"
    )
    assert inbound.status == 200 and "<Response></Response>" in inbound.text
    replies = (await gateway.status(message_id))["replies"]
    assert [(r["person_id"], r["channel"], r["body"]) for r in replies] == [
        ("p2", "sms", "Takk, ok!")
    ]
    unsigned = await gateway.twilio.send_inbound(
        gateway.public_url + INBOUND_PATH, from_=PHONES["p2"], to="Solvang", body="x", signed=False
    )
    assert unsigned.status == 403
    assert len((await gateway.status(message_id))["replies"]) == 1


async def test_emergency_goes_on_every_channel(gateway: Gateway) -> None:
    message_id = await gateway.post(
        "evt-2", audience={"children": ["c4"]}, category="emergency", subject="Stengt skole"
    )
    status = await gateway.wait_final(message_id)
    channels = {(d["recipient_id"], d["channel"]): d["status"] for d in status["deliveries"]}
    assert channels == {
        ("p4", "inapp"): "delivered",
        ("p4", "push"): "sent",
        ("p4", "sms"): "sent",
        ("p4", "email"): "sent",  # no SMTP configured: the development outbox
    }
    [sent] = gateway.fcm.sent
    assert sent.body["message"]["android"]["priority"] == "high"
    [request] = gateway.twilio.requests
    assert request.field("To") == PHONES["p4"]


async def test_outbox_without_providers_shows_sms_and_push(tmp_path: Path) -> None:
    """With no provider configured (``make demo``) SMS and push go to the outbox."""
    settings = load_settings(
        store_url=f"sqlite:///{tmp_path / 'budbringer.db'}",
        outbox_dir=tmp_path / "outbox",
        port=0,
        secret_key=SECRET_KEY,
        dispatch={"poll_interval": 0.05},
    )
    service = Service(settings)
    await service.start()
    client: DemoClient | None = None
    try:
        tenant, api_key, whsec = await create_tenant(service.store, "Asker", service.clock.now())
        client = DemoClient(f"http://127.0.0.1:{service.port}", api_key, whsec, tenant.id)
        await client.call("POST", "/v1/directory", directory())
        token = await client.call("POST", "/v1/guardians/p1/tokens")
        await client.call(
            "PUT",
            "/v1/me/devices/d1",
            {"token": "tok-1", "platform": "ios"},
            headers={"Authorization": f"Bearer {token['token']}"},
        )
        gw = Gateway(service, client, None, None, "")  # type: ignore[arg-type]
        message_id = await gw.post("evt-3", audience={"children": ["c1", "c2"]})
        status = await gw.wait_final(message_id)
    finally:
        if client is not None:
            await client.close()
        await service.stop()
    channels = {(d["recipient_id"], d["channel"]): d["status"] for d in status["deliveries"]}
    assert channels == {
        ("p1", "inapp"): "delivered",
        ("p1", "push"): "sent",
        ("p2", "inapp"): "delivered",
        ("p2", "sms"): "sent",
    }
    push = [json.loads(x) for x in (tmp_path / "outbox" / "push.jsonl").read_text().splitlines()]
    sms = [json.loads(x) for x in (tmp_path / "outbox" / "sms.jsonl").read_text().splitlines()]
    assert [p["message_id"] for p in push] == [message_id]
    assert [s["message_id"] for s in sms] == [message_id]
    assert PHONES["p2"] not in json.dumps(sms)  # the outbox masks the number too


async def test_an_fcm_key_the_token_server_rejects_stops_push_not_the_gateway(
    tmp_path: Path,
) -> None:
    """A service account FCM's token server rejects (a revoked key) made `serve` exit:
    SMS, email and every event were down with it. Push is stopped now, and the SMS of the
    same emergency goes."""
    async with TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio, FcmServer(project_id=PROJECT) as fcm:
        revoked = write_service_account(tmp_path / "revoked.json", fcm.token_url, PROJECT)
        settings = peered_settings(tmp_path, twilio, fcm, revoked)  # never trusted
        public_url = settings.public_url
        service = Service(settings)
        await service.start()  # no longer raises
        try:
            tenant, api_key, whsec = await create_tenant(
                service.store, "Asker kommune", service.clock.now()
            )
            client = DemoClient(public_url, api_key, whsec, tenant.id)
            try:
                await client.call("POST", "/v1/directory", directory())
                async with client.http.get(f"{public_url}/readyz") as resp:
                    body = await resp.json()
                assert resp.status == 200
                assert body["channels"]["push"]["state"] == "stopped"
                assert body["channels"]["push"]["last_error"] == "fcm_token_rejected"
                accepted = await client.post_signed_event(
                    {
                        "id": "evt-storm",
                        "type": "message.created",
                        "data": {
                            "audience": {"groups": ["g1"]},
                            "category": "emergency",
                            "subject": "Stengt i dag",
                            "body": "Skolen er stengt.",
                        },
                    }
                )
                deadline = asyncio.get_running_loop().time() + 20
                while not twilio.requests and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.05)
                assert twilio.requests, "the SMS of the emergency went"
                assert fcm.sent == []
                assert accepted["message_id"]
            finally:
                await client.close()
        finally:
            await service.stop()
