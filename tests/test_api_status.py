"""GET /v1/messages/{id}: counts, per-delivery history, replies, tenant isolation; who was
reached (per child, per guardian, summary) and protected persons shown as pseudonyms."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.auth import create_api_key, create_tenant
from gateway.clock import ManualClock
from gateway.models import Delivery, DeliveryStatus, Reply, Role, Scope
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
    assert status["sms_segments"] == 2  # per message: the SMS budget
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
            "translation": None,  # in the message's own language: nothing to translate
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


# --------------------------------------------------------------------------- reached, protection


PROTECTED_FAMILY: dict[str, Any] = {
    "persons": [
        {
            "id": "c2",
            "role": "child",
            "given_name": "Per",
            "birth_date": "2015-04-01",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
            "protection": "strictly_confidential",
        },
        {"id": "p2", "role": "guardian", "given_name": "Anne", "protection": "confidential"},
        {"id": "p3", "role": "guardian", "given_name": "Nils"},
    ],
    "relations": [
        {"child_id": "c2", "guardian_id": "p2", "parental_responsibility": True},
        {"child_id": "c1", "guardian_id": "p3", "parental_responsibility": True},
    ],
}


def to(
    tenant_id: str,
    message_id: str,
    recipient: str,
    channel: str,
    children: list[str],
    status: DeliveryStatus,
    clock: ManualClock,
) -> Delivery:
    return Delivery(
        id=Delivery.make_id(tenant_id, "evt-1", recipient, channel),
        tenant_id=tenant_id,
        message_id=message_id,
        recipient_id=recipient,
        recipient_role=Role.guardian,
        channel=channel,
        language="nb",
        child_ids=children,
        status=status,
        created_at=clock.now(),
        updated_at=clock.now(),
    )


async def reached_story(store: Store, tenant_id: str, message_id: str, clock: ManualClock) -> None:
    """c1: p1 (reads by link) and p3 (nothing); c2 (protected): p2 (protected, reads in-app)."""
    from gateway.models import DirectoryBatch
    from gateway.tracker import record_read

    await store.apply_directory(tenant_id, DirectoryBatch.model_validate(PROTECTED_FAMILY))
    sent, failed = DeliveryStatus.sent, DeliveryStatus.failed
    rows = [
        to(tenant_id, message_id, "p1", "inapp", ["c1"], sent, clock),
        to(tenant_id, message_id, "p1", "sms", ["c1"], DeliveryStatus.delivered, clock),
        to(tenant_id, message_id, "p2", "inapp", ["c2"], sent, clock),
        to(tenant_id, message_id, "p2", "email", ["c2"], failed, clock),
        # the parent app chose a device id that says whose phone it is
        to(tenant_id, message_id, "p2", "push", ["c2"], sent, clock).model_copy(
            update={"target": "anne-p2-iphone"}
        ),
        to(tenant_id, message_id, "p3", "inapp", ["c1"], sent, clock),
        to(tenant_id, message_id, "p3", "email", ["c1"], failed, clock),
    ]
    assert await store.add_deliveries(rows, []) == len(rows)
    clock.advance(60)
    assert await record_read(store, tenant_id, "p2", message_id, clock.now(), "inapp")
    clock.advance(60)
    assert await record_read(store, tenant_id, "p1", message_id, clock.now(), "link")


async def test_status_says_who_was_reached_and_hides_protected_persons(
    app_client: TestClient,
    tenant: Any,
    store: Store,
    clock: ManualClock,
    directory: Any,
    make_event: Any,
) -> None:
    message_id = await accept(app_client, tenant, make_event(read_receipt=True))
    start = clock.now()
    await reached_story(store, tenant.tenant.id, message_id, clock)
    resp = await app_client.get(f"/v1/messages/{message_id}", headers=bearer(tenant.api_key))
    assert resp.status == 200
    text = await resp.text()
    status = await resp.json()
    assert status["read_receipt"] is True
    # protected persons (the child c2 and the guardian p2) appear only as pseudonyms,
    # and so does p2's push device
    for hidden in ('"p2"', '"c2"', "anne-p2-iphone"):
        assert hidden not in text
    (p2,) = [g for g in status["guardians"] if g["recipient_id"].startswith("protected-")]
    (c2,) = [c for c in status["children"] if c["child_id"].startswith("protected-")]
    assert c2["reached_by"] == [p2["recipient_id"]]  # the same pseudonym everywhere
    assert {d["recipient_id"] for d in status["deliveries"]} == {"p1", "p3", p2["recipient_id"]}
    (push,) = [d for d in status["deliveries"] if d["channel"] == "push"]
    assert push["target"].startswith("protected-")
    assert push["target"] not in (p2["recipient_id"], c2["child_id"])
    assert status["summary"] == {
        "guardians_total": 3,
        "guardians_read": 2,
        "children_total": 2,
        "children_reached": 2,
        "children_not_reached": [],
        "children_not_told": 0,
    }
    guardians = {g["recipient_id"]: g for g in status["guardians"]}
    assert guardians["p1"] == {
        "recipient_id": "p1",
        "role": "guardian",
        "best_status": "read",
        "channels": {"inapp": "read", "sms": "delivered"},  # a read marks the inbox entry
        "read_at": (start + timedelta(seconds=120)).isoformat(),
        "via": "link",
    }
    assert guardians["p3"]["best_status"] == "sent"
    assert guardians["p3"]["channels"] == {"inapp": "sent", "email": "failed"}
    assert guardians["p3"]["read_at"] is None
    (c1,) = [c for c in status["children"] if c["child_id"] == "c1"]
    assert c1 == {
        "child_id": "c1",
        "reached": True,
        "reached_by": ["p1"],
        "reached_at": (start + timedelta(seconds=120)).isoformat(),
        "reason": None,
    }

    # the same call again: the pseudonyms are stable
    again = await (
        await app_client.get(f"/v1/messages/{message_id}", headers=bearer(tenant.api_key))
    ).json()
    assert again["children"] == status["children"]

    # a key with the "protected" scope sees the ids
    _, key = await create_api_key(
        store, tenant.tenant.id, [Scope.status, Scope.protected], clock.now()
    )
    resp = await app_client.get(f"/v1/messages/{message_id}", headers=bearer(key))
    allowed = await resp.json()
    assert {g["recipient_id"] for g in allowed["guardians"]} == {"p1", "p2", "p3"}
    assert [d["target"] for d in allowed["deliveries"] if d["channel"] == "push"] == [
        "anne-p2-iphone"
    ]
    assert {c["child_id"]: c["reached_by"] for c in allowed["children"]} == {
        "c1": ["p1"],
        "c2": ["p2"],
    }


async def test_children_not_reached_for_an_unread_message(
    app_client: TestClient,
    tenant: Any,
    store: Store,
    clock: ManualClock,
    directory: Any,
    make_event: Any,
) -> None:
    message_id = await accept(app_client, tenant, make_event())
    tid = tenant.tenant.id
    blocked = Delivery(
        id=Delivery.make_id(tid, "evt-1", "p9", "none", "c9"),
        tenant_id=tid,
        message_id=message_id,
        recipient_id="p9",
        recipient_role=Role.guardian,
        channel="none",
        target="c9",
        language="nb",
        child_ids=["c9"],
        status=DeliveryStatus.suppressed,
        reason="blocked",
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    sent = to(tid, message_id, "p1", "inapp", ["c1"], DeliveryStatus.sent, clock)
    await store.add_deliveries([sent, blocked], [])
    resp = await app_client.get(f"/v1/messages/{message_id}", headers=bearer(tenant.api_key))
    status = await resp.json()
    # c9's only guardian is blocked: nobody may be told, so c9 is not reached either
    assert status["summary"] == {
        "guardians_total": 1,
        "guardians_read": 0,
        "children_total": 2,
        "children_reached": 0,
        "children_not_reached": ["c1", "c9"],
        "children_not_told": 1,
    }
    children = {c["child_id"]: c["reason"] for c in status["children"]}
    assert children == {"c1": None, "c9": "all_suppressed"}
