"""Tenant credentials: API keys, Standard Webhooks signatures, tenant isolation."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook

from gateway.auth import create_tenant, hash_api_key, new_api_key, new_webhook_secret
from gateway.clock import ManualClock
from gateway.store import Store


def signed(whsec: str, tenant_id: str, body: bytes, msg_id: str, at: datetime) -> dict[str, str]:
    """Headers as a Standard Webhooks sender makes them (the library's own signer)."""
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(whsec).sign(msg_id, at, body.decode()),
        "X-Budbringer-Tenant": tenant_id,
    }


def test_key_and_secret_formats() -> None:
    key = new_api_key()
    assert key.startswith("bbk_") and len(key) > 40
    assert new_api_key() != key
    assert hash_api_key(key) == hash_api_key(key) != hash_api_key(new_api_key())
    assert len(hash_api_key(key)) == 64
    whsec = new_webhook_secret()
    assert whsec.startswith("whsec_")
    assert len(base64.b64decode(whsec.removeprefix("whsec_"))) == 24


async def test_create_tenant_stores_only_the_key_hash(store: Store, clock: ManualClock) -> None:
    tenant, api_key, whsec = await create_tenant(store, "Bærum kommune", clock.now())
    assert tenant.id.startswith("baerum-kommune-")
    stored = await store.get_tenant(tenant.id)
    assert stored is not None
    assert stored.api_key_hash == hash_api_key(api_key) != api_key
    assert stored.webhook_secret == whsec
    key = await store.api_key_by_hash(hash_api_key(api_key))
    assert key is not None and key.tenant_id == tenant.id and key.key_hash != api_key
    other, _, _ = await create_tenant(store, "Bærum kommune", clock.now())
    assert other.id != tenant.id


async def test_missing_or_wrong_key_is_401(app_client: TestClient, tenant: Any) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer bbk_wrong"},
        {"Authorization": tenant.api_key},
        {"Authorization": f"Basic {tenant.api_key}"},
    ):
        resp = await app_client.get("/v1/messages/whatever", headers=headers)
        assert resp.status == 401
        body = await resp.json()
        assert body["error"] == "unauthorized"
        assert tenant.api_key not in json.dumps(body)


async def test_another_tenants_key_cannot_read_a_message(
    app_client: TestClient,
    tenant: Any,
    store: Store,
    clock: ManualClock,
    directory: Any,
    make_event: Any,
) -> None:
    resp = await app_client.post(
        "/v1/events", json=make_event(), headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    assert resp.status == 202
    message_id = (await resp.json())["message_id"]
    _, other_key, _ = await create_tenant(store, "Bærum kommune", clock.now())

    own = await app_client.get(
        f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    assert own.status == 200
    other = await app_client.get(
        f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {other_key}"}
    )
    assert other.status == 404


async def test_signed_request_is_accepted_and_replay_is_a_duplicate(
    app_client: TestClient,
    tenant: Any,
    store: Store,
    clock: ManualClock,
    directory: Any,
    make_event: Any,
) -> None:
    body = json.dumps(make_event("evt-signed")).encode()
    headers = signed(tenant.whsec, tenant.tenant.id, body, "evt-signed", clock.now())
    first = await app_client.post("/v1/events", data=body, headers=headers)
    assert first.status == 202, await first.text()
    answer = await first.json()
    assert answer["duplicate"] is False and answer["event_id"] == "evt-signed"

    clock.advance(60)  # the same signed request again, still inside the tolerance
    replay = await app_client.post("/v1/events", data=body, headers=headers)
    assert replay.status == 202
    assert await replay.json() == {**answer, "duplicate": True}


async def test_signature_uses_our_clock_not_wall_time(
    app_client: TestClient,
    tenant: Any,
    store: Store,
    clock: ManualClock,
    directory: Any,
    make_event: Any,
) -> None:
    clock.set(datetime(2031, 5, 17, 12, 0, tzinfo=clock.now().tzinfo))
    body = json.dumps(make_event("evt-future-clock")).encode()
    headers = signed(tenant.whsec, tenant.tenant.id, body, "evt-future-clock", clock.now())
    resp = await app_client.post("/v1/events", data=body, headers=headers)
    assert resp.status == 202


async def failure(resp: Any) -> tuple[int, str, str]:
    body = await resp.json()
    return resp.status, body["error"], body["errors"][0]["type"]


async def test_wrong_secret_is_401_without_echoing_secrets(
    app_client: TestClient,
    tenant: Any,
    store: Store,
    clock: ManualClock,
    directory: Any,
    make_event: Any,
) -> None:
    body = json.dumps(make_event()).encode()
    wrong = new_webhook_secret()
    resp = await app_client.post(
        "/v1/events", data=body, headers=signed(wrong, tenant.tenant.id, body, "evt-1", clock.now())
    )
    assert await failure(resp) == (401, "unauthorized", "signature_mismatch")
    text = await resp.text()
    assert wrong not in text and tenant.whsec not in text
    assert await store.get_message(tenant.tenant.id, "evt-1") is None


async def test_body_changed_after_signing_is_401(
    app_client: TestClient,
    tenant: Any,
    store: Store,
    clock: ManualClock,
    directory: Any,
    make_event: Any,
) -> None:
    body = json.dumps(make_event()).encode()
    headers = signed(tenant.whsec, tenant.tenant.id, body, "evt-1", clock.now())
    tampered = body.replace(b"Tur", b"Tut")
    resp = await app_client.post("/v1/events", data=tampered, headers=headers)
    assert await failure(resp) == (401, "unauthorized", "signature_mismatch")


async def test_unknown_tenant_fails_like_a_wrong_signature(
    app_client: TestClient, tenant: Any, clock: ManualClock, make_event: Any
) -> None:
    body = json.dumps(make_event()).encode()
    headers = signed(tenant.whsec, "no-such-tenant", body, "evt-1", clock.now())
    resp = await app_client.post("/v1/events", data=body, headers=headers)
    assert await failure(resp) == (401, "unauthorized", "signature_mismatch")


async def test_stale_and_future_timestamps_are_401(
    app_client: TestClient,
    tenant: Any,
    store: Store,
    clock: ManualClock,
    directory: Any,
    make_event: Any,
) -> None:
    body = json.dumps(make_event()).encode()
    cases = [
        (clock.now() - timedelta(minutes=5, seconds=1), "timestamp_too_old"),
        (clock.now() + timedelta(minutes=5, seconds=1), "timestamp_too_new"),
    ]
    for at, check in cases:
        headers = signed(tenant.whsec, tenant.tenant.id, body, "evt-1", at)
        resp = await app_client.post("/v1/events", data=body, headers=headers)
        assert await failure(resp) == (401, "unauthorized", check)
    # just inside the window on both sides
    for at in (clock.now() - timedelta(minutes=4, seconds=59), clock.now() + timedelta(minutes=4)):
        headers = signed(tenant.whsec, tenant.tenant.id, body, "evt-1", at)
        assert (await app_client.post("/v1/events", data=body, headers=headers)).status == 202


async def test_missing_signature_headers_are_named(
    app_client: TestClient, tenant: Any, clock: ManualClock, make_event: Any
) -> None:
    body = json.dumps(make_event()).encode()
    headers = signed(tenant.whsec, tenant.tenant.id, body, "evt-1", clock.now())
    del headers["X-Budbringer-Tenant"], headers["webhook-timestamp"]
    resp = await app_client.post("/v1/events", data=body, headers=headers)
    assert resp.status == 401
    errors = (await resp.json())["errors"]
    assert {tuple(e["loc"]) for e in errors} == {
        ("header", "webhook-timestamp"),
        ("header", "X-Budbringer-Tenant"),
    }
    nothing = await app_client.post("/v1/events", data=body)
    assert nothing.status == 401


async def test_malformed_timestamp_is_401(
    app_client: TestClient, tenant: Any, clock: ManualClock, make_event: Any
) -> None:
    body = json.dumps(make_event()).encode()
    headers = signed(tenant.whsec, tenant.tenant.id, body, "evt-1", clock.now())
    headers["webhook-timestamp"] = "yesterday"
    resp = await app_client.post("/v1/events", data=body, headers=headers)
    assert await failure(resp) == (401, "unauthorized", "invalid_timestamp")


async def test_webhook_id_must_equal_the_event_id(
    app_client: TestClient,
    tenant: Any,
    store: Store,
    clock: ManualClock,
    directory: Any,
    make_event: Any,
) -> None:
    body = json.dumps(make_event("evt-1")).encode()
    headers = signed(tenant.whsec, tenant.tenant.id, body, "msg_other", clock.now())
    resp = await app_client.post("/v1/events", data=body, headers=headers)
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["header", "webhook-id"]
