"""GET /v1/messages/{id}: counts, per-delivery history, replies, tenant isolation."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.models import Delivery, DeliveryStatus, Reply, Role
from gateway.store import Store


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def accept(app_client: TestClient, tenant: Any, body: dict[str, Any]) -> str:
    resp = await app_client.post("/v1/events", json=body, headers=bearer(tenant.api_key))
    assert resp.status == 202, await resp.text()
    message_id: str = (await resp.json())["message_id"]
    return message_id


def delivery(
    tenant_id: str, message_id: str, channel: str, address: str | None, clock: ManualClock
) -> Delivery:
    now = clock.now()
    return Delivery(
        id=Delivery.make_id(tenant_id, "evt-1", "p1", channel),
        tenant_id=tenant_id,
        message_id=message_id,
        recipient_id="p1",
        recipient_role=Role.guardian,
        channel=channel,
        address=address,
        language="nb",
        child_ids=["c1"],
        context={"children": ["Kari"], "unit": "Solvang skole"},
        created_at=now,
        updated_at=now,
    )


async def test_status_shows_counts_history_and_replies_but_no_address(
    app_client: TestClient,
    tenant: Any,
    store: Store,
    clock: ManualClock,
    directory: Any,
    make_event: Any,
) -> None:
    message_id = await accept(app_client, tenant, make_event())
    resp = await app_client.get(f"/v1/messages/{message_id}", headers=bearer(tenant.api_key))
    assert resp.status == 200
    empty = await resp.json()
    assert empty["id"] == message_id and empty["event_id"] == "evt-1"
    assert (empty["category"], empty["subject"], empty["planned_at"]) == ("general", "Tur", None)
    assert empty["deliveries"] == [] and empty["replies"] == []
    assert not any(empty["counts"].values())

    tid = tenant.tenant.id
    sms = delivery(tid, message_id, "sms", "+4790012345", clock)
    email = delivery(tid, message_id, "email", "ola@example.no", clock)
    assert await store.add_deliveries([sms, email], []) == 2
    clock.advance(5)
    assert await store.transition(sms.id, DeliveryStatus.queued, clock.now())
    clock.advance(1)
    assert await store.transition(
        sms.id, DeliveryStatus.sent, clock.now(), detail="accepted", provider_id="SM1", segments=2
    )
    assert await store.add_reply(
        Reply(
            id="r1",
            tenant_id=tid,
            channel="sms",
            message_id=message_id,
            person_id="p1",
            body="Takk!",
            provider_id="SM9",
            received_at=clock.now(),
        )
    )

    resp = await app_client.get(f"/v1/messages/{message_id}", headers=bearer(tenant.api_key))
    assert resp.status == 200
    text = await resp.text()
    status = await resp.json()
    assert {k: v for k, v in status["counts"].items() if v} == {"planned": 1, "sent": 1}
    by_channel = {d["channel"]: d for d in status["deliveries"]}
    assert by_channel["sms"]["status"] == "sent"
    assert by_channel["sms"]["segments"] == 2
    assert by_channel["sms"]["recipient_id"] == "p1"
    assert by_channel["sms"]["recipient_role"] == "guardian"
    assert by_channel["sms"]["child_ids"] == ["c1"]
    assert [h["status"] for h in by_channel["sms"]["history"]] == ["planned", "queued", "sent"]
    assert by_channel["sms"]["history"][-1]["detail"] == "accepted"
    assert [h["status"] for h in by_channel["email"]["history"]] == ["planned"]
    assert status["replies"] == [
        {
            "id": "r1",
            "channel": "sms",
            "person_id": "p1",
            "body": "Takk!",
            "received_at": clock.now().isoformat(),
        }
    ]
    # never the address, the provider id, or names from the render context
    for secret in ("+4790012345", "90012345", "ola@example.no", "Kari", "SM1", "SM9"):
        assert secret not in text


async def test_other_tenant_and_unknown_ids_are_404(
    app_client: TestClient,
    tenant: Any,
    store: Store,
    clock: ManualClock,
    directory: Any,
    make_event: Any,
) -> None:
    message_id = await accept(app_client, tenant, make_event())
    _, other_key, _ = await create_tenant(store, "Bærum kommune", clock.now())
    for key, path in (
        (other_key, f"/v1/messages/{message_id}"),
        (tenant.api_key, "/v1/messages/nope"),
        (tenant.api_key, "/v1/messages/evt-1"),  # the event id is not the message id
    ):
        resp = await app_client.get(path, headers=bearer(key))
        assert resp.status == 404
        assert (await resp.json())["error"] == "not_found"
    resp = await app_client.get(f"/v1/messages/{message_id}")
    assert resp.status == 401
