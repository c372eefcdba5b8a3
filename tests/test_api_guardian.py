"""Parent-app API (/v1/me/...) through the real app and the real SQLite store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.clock import ManualClock
from gateway.constants import JOB_PLAN
from gateway.models import (
    Audience,
    Category,
    ChannelName,
    Delivery,
    DeliveryStatus,
    Job,
    Message,
    Role,
)
from gateway.settings import Settings
from gateway.store import Store

BATCH: dict[str, Any] = {
    "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
    "persons": [
        {"id": "c1", "role": "child", "given_name": "Kari", "birth_date": "2015-03-01"},
        {"id": "c2", "role": "child", "given_name": "Jon", "birth_date": "2016-04-02"},
        {"id": "ga", "role": "guardian", "given_name": "Ola", "phone": "90012345"},
        {"id": "gb", "role": "guardian", "given_name": "Eva"},
    ],
    "relations": [
        {"child_id": "c1", "guardian_id": "ga", "parental_responsibility": True},
        {"child_id": "c2", "guardian_id": "gb", "parental_responsibility": True},
    ],
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Guardians:
    """Tokens for guardian A and B of one tenant, issued through the API."""

    def __init__(self, a: str, b: str, api_key: str, tenant_id: str) -> None:
        self.a, self.b, self.api_key, self.tenant_id = a, b, api_key, tenant_id


@pytest.fixture
async def guardians(app_client: TestClient, tenant: Any) -> Guardians:
    resp = await app_client.post("/v1/directory", json=BATCH, headers=bearer(tenant.api_key))
    assert resp.status == 200, await resp.text()
    tokens = []
    for guardian_id in ("ga", "gb"):
        resp = await app_client.post(
            f"/v1/guardians/{guardian_id}/tokens", headers=bearer(tenant.api_key)
        )
        assert resp.status == 201
        tokens.append((await resp.json())["token"])
    return Guardians(tokens[0], tokens[1], tenant.api_key, tenant.tenant.id)


async def send_inapp(
    store: Store,
    clock: ManualClock,
    tenant_id: str,
    event_id: str,
    guardian_id: str,
    child: tuple[str, str],
    *,
    channel: str = ChannelName.inapp,
) -> str:
    """Store a message and one delivery to ``guardian_id`` as the planner would."""
    now = clock.now()
    message = Message(
        id=f"m-{event_id}",
        tenant_id=tenant_id,
        event_id=event_id,
        event_type="message.created",
        body_hash="0" * 64,
        category=Category.general,
        subject=f"Subject {event_id}",
        body=f"Body {event_id}",
        sender_name="Solvang skole",
        audience=Audience(children=[child[0]]),
        created_at=now,
    )
    await store.accept_message(
        message,
        Job(
            id=f"plan:{message.id}", tenant_id=tenant_id, kind=JOB_PLAN, ref=message.id, due_at=now
        ),
    )
    delivery = Delivery(
        id=Delivery.make_id(tenant_id, event_id, guardian_id, channel),
        tenant_id=tenant_id,
        message_id=message.id,
        recipient_id=guardian_id,
        recipient_role=Role.guardian,
        channel=channel,
        language="nb",
        child_ids=[child[0]],
        context={"children": [child[1]]},
        status=DeliveryStatus.delivered,
        created_at=now,
        updated_at=now,
    )
    assert await store.add_deliveries([delivery], []) == 1
    return message.id


# --------------------------------------------------------------------------- auth


async def test_guardian_token_expires_on_the_manual_clock(
    app_client, guardians: Guardians, clock: ManualClock, settings: Settings
) -> None:
    clock.advance(settings.guardian_token_ttl - 1)
    resp = await app_client.get("/v1/me/inbox", headers=bearer(guardians.a))
    assert resp.status == 200
    clock.advance(1)
    resp = await app_client.get("/v1/me/inbox", headers=bearer(guardians.a))
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/me/inbox"),
        ("GET", "/v1/me/inbox/m-1"),
        ("POST", "/v1/me/inbox/m-1/read"),
        ("GET", "/v1/me/preferences"),
        ("PUT", "/v1/me/preferences"),
        ("GET", "/v1/me/devices"),
        ("PUT", "/v1/me/devices/d1"),
        ("DELETE", "/v1/me/devices/d1"),
    ],
)
async def test_tenant_api_key_and_garbage_are_refused(
    app_client, guardians: Guardians, method: str, path: str
) -> None:
    for headers in (bearer(guardians.api_key), bearer("x.y"), {}, {"Authorization": "Basic a"}):
        resp = await app_client.request(method, path, json={}, headers=headers)
        assert resp.status == 401, headers


async def test_deleted_guardian_loses_access(app_client, guardians: Guardians) -> None:
    resp = await app_client.post(
        "/v1/directory/delete", json={"persons": ["ga"]}, headers=bearer(guardians.api_key)
    )
    assert resp.status == 200
    resp = await app_client.get("/v1/me/inbox", headers=bearer(guardians.a))
    assert resp.status == 401


# --------------------------------------------------------------------------- inbox


async def test_inbox_lists_only_own_messages(app_client, guardians, store, clock) -> None:
    mine = await send_inapp(store, clock, guardians.tenant_id, "e1", "ga", ("c1", "Kari"))
    clock.advance(60)
    await send_inapp(store, clock, guardians.tenant_id, "e2", "gb", ("c2", "Jon"))
    await send_inapp(
        store, clock, guardians.tenant_id, "e3", "ga", ("c1", "Kari"), channel=ChannelName.sms
    )

    resp = await app_client.get("/v1/me/inbox", headers=bearer(guardians.a))
    assert resp.status == 200
    body = await resp.json()
    [item] = body["items"]
    assert item["message_id"] == mine
    assert item["subject"] == "Subject e1"
    assert item["body"] == "Body e1"
    assert item["category"] == "general"
    assert item["sender_name"] == "Solvang skole"
    assert item["children"] == ["Kari"]
    assert item["status"] == "delivered"
    assert item["read_at"] is None
    assert body["next_before"] is None


async def test_inbox_pages_newest_first(app_client, guardians, store, clock) -> None:
    ids = []
    for n in range(3):
        ids.append(await send_inapp(store, clock, guardians.tenant_id, f"e{n}", "ga", ("c1", "K")))
        clock.advance(60)
    resp = await app_client.get("/v1/me/inbox", params={"limit": "2"}, headers=bearer(guardians.a))
    page = await resp.json()
    assert [i["message_id"] for i in page["items"]] == [ids[2], ids[1]]
    assert page["next_before"] is not None
    resp = await app_client.get(
        "/v1/me/inbox",
        params={"limit": "2", "before": page["next_before"]},
        headers=bearer(guardians.a),
    )
    assert [i["message_id"] for i in (await resp.json())["items"]] == [ids[0]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"before": "yesterday"}, "before"),
        ({"before": "2026-11-27T09:00:00"}, "before"),
        # real dates that lie outside what a date holds once in UTC: were a 500
        ({"before": "0001-01-01T00:00:00+14:00"}, "before"),
        ({"before": "9999-12-31T23:59:59-14:00"}, "before"),
    ],
)
async def test_inbox_query_is_validated(app_client, guardians, params, field) -> None:
    resp = await app_client.get("/v1/me/inbox", params=params, headers=bearer(guardians.a))
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["query", field]


async def test_fetch_and_mark_read(app_client, guardians, store, clock) -> None:
    mine = await send_inapp(store, clock, guardians.tenant_id, "e1", "ga", ("c1", "Kari"))
    resp = await app_client.get(f"/v1/me/inbox/{mine}", headers=bearer(guardians.a))
    assert resp.status == 200
    assert (await resp.json())["read_at"] is None

    clock.advance(30)
    resp = await app_client.post(f"/v1/me/inbox/{mine}/read", headers=bearer(guardians.a))
    assert resp.status == 200
    assert await resp.json() == {"read": True}
    item = await (await app_client.get(f"/v1/me/inbox/{mine}", headers=bearer(guardians.a))).json()
    assert item["status"] == "read"
    assert item["read_at"] is not None

    resp = await app_client.post("/v1/me/inbox/m-unknown/read", headers=bearer(guardians.a))
    assert resp.status == 404


async def test_guardian_cannot_fetch_or_mark_anothers_message(
    app_client, guardians, store, clock
) -> None:
    theirs = await send_inapp(store, clock, guardians.tenant_id, "e2", "gb", ("c2", "Jon"))
    resp = await app_client.get(f"/v1/me/inbox/{theirs}", headers=bearer(guardians.a))
    assert resp.status == 404
    resp = await app_client.post(f"/v1/me/inbox/{theirs}/read", headers=bearer(guardians.a))
    assert resp.status == 404
    item = await store.inbox_item(guardians.tenant_id, "gb", theirs)
    assert item is not None
    assert item.read_at is None
    assert item.status is DeliveryStatus.delivered


# --------------------------------------------------------------------------- preferences


async def test_preferences_round_trip(app_client, guardians, store) -> None:
    resp = await app_client.get("/v1/me/preferences", headers=bearer(guardians.a))
    assert resp.status == 200
    assert (await resp.json())["channels"] == {}

    prefs = {
        "language": "en",
        "channels": {"general": [], "absence": ["sms", "push"], "emergency": ["sms"]},
        "quiet_start": "21:00",
        "quiet_end": "07:00",
        "digest": {"general": "18:00"},  # a daily digest of general messages (issue 16)
    }
    resp = await app_client.put("/v1/me/preferences", json=prefs, headers=bearer(guardians.a))
    assert resp.status == 200
    resp = await app_client.get("/v1/me/preferences", headers=bearer(guardians.a))
    assert await resp.json() == prefs
    stored = await store.get_preferences(guardians.tenant_id, "ga")
    assert stored is not None
    assert stored.language == "en"
    assert await store.get_preferences(guardians.tenant_id, "gb") is None


@pytest.mark.parametrize("category", ["absence", "emergency"])
async def test_mandatory_categories_cannot_be_switched_off(
    app_client, guardians, store, category: str
) -> None:
    resp = await app_client.put(
        "/v1/me/preferences", json={"channels": {category: []}}, headers=bearer(guardians.a)
    )
    assert resp.status == 422
    [error] = (await resp.json())["errors"]
    assert error["loc"] == ["channels", category]
    assert await store.get_preferences(guardians.tenant_id, "ga") is None


async def test_invalid_preferences_are_422(app_client, guardians) -> None:
    for body, loc in (
        ({"channels": {"general": ["pigeon"]}}, ["channels", "general", 0]),
        ({"quiet_start": "25:00"}, ["quiet_start"]),
        ({"colour": "blue"}, ["colour"]),
        # half given or empty quiet hours, a channel twice: refused, not stored
        ({"quiet_start": "21:00"}, ["quiet_end"]),
        ({"quiet_end": "07:00"}, ["quiet_start"]),
        ({"channels": {"general": ["sms", "sms"]}}, ["channels", "general"]),
    ):
        resp = await app_client.put("/v1/me/preferences", json=body, headers=bearer(guardians.a))
        assert resp.status == 422
        assert (await resp.json())["errors"][0]["loc"] == loc


# --------------------------------------------------------------------------- devices


async def test_device_register_list_delete(app_client, guardians, clock) -> None:
    clock.advance(5)
    resp = await app_client.put(
        "/v1/me/devices/d1",
        json={"token": "fcm-token-1", "platform": "android", "app_version": "2.1.0"},
        headers=bearer(guardians.a),
    )
    assert resp.status == 200
    device = await resp.json()
    assert device["id"] == "d1"
    assert datetime.fromisoformat(device["last_seen"]) == clock.now()

    # updating the same id replaces it; an id in the body must match the path
    resp = await app_client.put(
        "/v1/me/devices/d1",
        json={"id": "d1", "fid": "fid-1", "platform": "ios"},
        headers=bearer(guardians.a),
    )
    assert resp.status == 200
    resp = await app_client.get("/v1/me/devices", headers=bearer(guardians.a))
    [listed] = (await resp.json())["devices"]
    assert listed["fid"] == "fid-1"
    assert listed["platform"] == "ios"

    resp = await app_client.get("/v1/me/devices", headers=bearer(guardians.b))
    assert (await resp.json())["devices"] == []
    resp = await app_client.delete("/v1/me/devices/d1", headers=bearer(guardians.b))
    assert resp.status == 404

    resp = await app_client.delete("/v1/me/devices/d1", headers=bearer(guardians.a))
    assert resp.status == 204
    resp = await app_client.delete("/v1/me/devices/d1", headers=bearer(guardians.a))
    assert resp.status == 404
    resp = await app_client.get("/v1/me/devices", headers=bearer(guardians.a))
    assert (await resp.json())["devices"] == []


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"id": "d2", "token": "t", "platform": "web"}, ["id"]),
        ({"token": "t", "fid": "f", "platform": "web"}, []),
        ({"platform": "web"}, []),
        ({"token": "t", "platform": "symbian"}, ["platform"]),
        (["token"], []),
    ],
)
async def test_invalid_device_is_422(app_client, guardians, body: Any, loc: list[str]) -> None:
    resp = await app_client.put("/v1/me/devices/d1", json=body, headers=bearer(guardians.a))
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == loc
    resp = await app_client.get("/v1/me/devices", headers=bearer(guardians.a))
    assert (await resp.json())["devices"] == []
