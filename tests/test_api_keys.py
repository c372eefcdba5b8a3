"""Several API keys per tenant: scopes per route, expiry, revocation and rotation without
downtime, through the HTTP API and the CLI; the key's id (never the key) on the request."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.app import Handler, create_app
from gateway.api.context import AppContext
from gateway.auth import KEY_ID, create_api_key, hash_api_key
from gateway.clock import ManualClock
from gateway.models import Scope
from gateway.settings import Settings
from gateway.store import Store
from tests.test_cli import stored_bytes
from tests.test_crash_restart import gateway_env, run_cli


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_key(client: TestClient, admin: str, **body: Any) -> dict[str, Any]:
    resp = await client.post("/v1/keys", json=body, headers=bearer(admin))
    assert resp.status == 201, await resp.text()
    created: dict[str, Any] = await resp.json()
    return created


SEEN: list[object] = []


@web.middleware
async def record_key_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What an access log would read after the handler ran."""
    try:
        return await handler(request)
    finally:
        SEEN.append(request.get(KEY_ID, "unset"))


@pytest.fixture
async def client(settings: Settings, store: Store, clock: ManualClock) -> AsyncIterator[TestClient]:
    app = create_app(AppContext(settings=settings, store=store, clock=clock, secret=b"k" * 32))
    app.middlewares.insert(0, record_key_id)
    SEEN.clear()
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    try:
        yield test_client
    finally:
        await test_client.close()


async def test_a_teacher_app_key_gets_less_than_the_platform(
    client: TestClient, tenant: Any, directory: Any, make_event: Any
) -> None:
    teacher = await new_key(client, tenant.api_key, name="teacher app", scopes=["events", "status"])
    assert teacher["key"].startswith("bbk_") and teacher["id"].startswith("key_")
    assert teacher["scopes"] == ["events", "status"] and teacher["active"] is True
    resp = await client.post("/v1/events", json=make_event(), headers=bearer(teacher["key"]))
    assert resp.status == 202
    message_id = (await resp.json())["message_id"]
    resp = await client.get(f"/v1/messages/{message_id}", headers=bearer(teacher["key"]))
    assert resp.status == 200
    refused = {
        ("POST", "/v1/directory", "directory"),
        ("GET", "/v1/persons/p1", "directory"),
        ("POST", "/v1/guardians/p1/tokens", "directory"),
        ("GET", "/v1/webhooks/endpoints", "webhooks"),
        ("GET", "/v1/settings/escalation", "admin"),
        ("GET", "/v1/settings/absence", "admin"),
        ("GET", "/v1/keys", "admin"),
    }
    for method, path, scope in refused:
        resp = await client.request(method, path, json={}, headers=bearer(teacher["key"]))
        assert resp.status == 403, (path, await resp.text())
        assert (await resp.json())["message"] == f"this API key lacks the {scope} scope"
    # The platform's first key still reaches all of it.
    resp = await client.get("/v1/persons/p1", headers=bearer(tenant.api_key))
    assert resp.status == 200


async def test_rotation_without_downtime(
    client: TestClient, tenant: Any, directory: Any, make_event: Any, clock: ManualClock
) -> None:
    old = tenant.api_key
    clock.advance(60)  # keys are listed oldest first
    new = await new_key(client, old, scopes=["events", "directory", "status", "admin"])
    # Both work while the clients move over.
    for key in (old, new["key"]):
        resp = await client.post("/v1/directory", json={}, headers=bearer(key))
        assert resp.status == 200
    listed = await (await client.get("/v1/keys", headers=bearer(new["key"]))).json()
    first_id = listed["keys"][0]["id"]
    assert [k["id"] for k in listed["keys"]] == [first_id, new["id"]]
    text = json.dumps(listed)
    assert old not in text and new["key"] not in text and hash_api_key(old) not in text
    resp = await client.delete(f"/v1/keys/{first_id}", headers=bearer(new["key"]))
    assert resp.status == 204
    resp = await client.post("/v1/events", json=make_event(), headers=bearer(old))
    assert resp.status == 401
    assert (await resp.json())["message"] == "this API key has been revoked"
    resp = await client.post("/v1/events", json=make_event(), headers=bearer(new["key"]))
    assert resp.status == 202
    listed = await (await client.get("/v1/keys", headers=bearer(new["key"]))).json()
    assert listed["keys"][0]["active"] is False and listed["keys"][0]["revoked_at"]
    # Unknown, or another tenant's, key id: 404.
    resp = await client.delete("/v1/keys/key_nope", headers=bearer(new["key"]))
    assert resp.status == 404


async def test_an_expired_key_is_refused(
    client: TestClient, tenant: Any, clock: ManualClock, make_event: Any, directory: Any
) -> None:
    expires = clock.now() + timedelta(hours=1)
    short = await new_key(client, tenant.api_key, scopes=["events"], expires_at=expires.isoformat())
    assert short["expires_at"] == expires.isoformat()
    resp = await client.post("/v1/events", json=make_event("e1"), headers=bearer(short["key"]))
    assert resp.status == 202
    clock.advance(3600)
    resp = await client.post("/v1/events", json=make_event("e2"), headers=bearer(short["key"]))
    assert resp.status == 401
    assert (await resp.json())["message"] == "this API key has expired"


async def test_key_requests_that_are_refused(client: TestClient, tenant: Any, clock: Any) -> None:
    narrow = await new_key(client, tenant.api_key, scopes=["events", "admin"])
    # A key cannot make a stronger key.
    resp = await client.post(
        "/v1/keys", json={"scopes": ["events", "directory"]}, headers=bearer(narrow["key"])
    )
    assert resp.status == 403
    assert "directory" in (await resp.json())["message"]
    # The first key lacks "protected", so it cannot hand it out either.
    resp = await client.post(
        "/v1/keys", json={"scopes": ["protected"]}, headers=bearer(tenant.api_key)
    )
    assert resp.status == 403
    bad = [
        ({"scopes": []}, ["scopes"]),
        ({"scopes": ["everything"]}, ["scopes", 0]),
        ({"scopes": ["events"], "expires_at": clock.now().isoformat()}, ["expires_at"]),
        ({"scopes": ["events"], "expires_at": "2030-01-01T00:00:00"}, ["expires_at"]),
        # year 10000 in UTC: stored, but every later listing of the keys failed with 503
        ({"scopes": ["events"], "expires_at": "9999-12-31T23:59:59-14:00"}, ["expires_at"]),
        ({"scopes": ["events"], "expires_at": "2046-12-01T00:00:00+00:00"}, ["expires_at"]),
        ({"scopes": ["events"], "secret": "x"}, ["secret"]),
    ]
    for body, loc in bad:
        resp = await client.post("/v1/keys", json=body, headers=bearer(tenant.api_key))
        assert resp.status == 422, body
        assert loc in [e["loc"] for e in (await resp.json())["errors"]], body
    resp = await client.get("/v1/keys", headers=bearer(tenant.api_key))
    assert resp.status == 200  # nothing unreadable was stored


async def test_the_key_id_never_the_key_is_on_the_request(
    client: TestClient, tenant: Any, store: Store
) -> None:
    resp = await client.get("/v1/keys", headers=bearer(tenant.api_key))
    (first,) = (await resp.json())["keys"]
    await client.get("/v1/keys", headers=bearer("bbk_unknown"))
    await client.get("/healthz")
    assert [first["id"], "unset", "unset"] == SEEN
    assert tenant.api_key not in repr(SEEN)


async def test_a_key_stored_with_an_expiry_past_year_9999_can_still_be_listed_and_revoked(
    client: TestClient, tenant: Any, store: Store, clock: ManualClock
) -> None:
    """An older version stored 9999-12-31T23:59:59-14:00 (year 10000 in UTC); from then
    on every listing of the tenant's keys was 503, and the key could not be revoked."""
    far = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))
    record, _ = await create_api_key(
        store, tenant.tenant.id, [Scope.events], clock.now(), expires_at=far
    )
    resp = await client.get("/v1/keys", headers=bearer(tenant.api_key))
    assert resp.status == 200
    [shown] = [k for k in (await resp.json())["keys"] if k["id"] == record.id]
    assert shown["expires_at"].startswith("9999-12-31T23:59:59") and shown["active"]
    resp = await client.delete(f"/v1/keys/{record.id}", headers=bearer(tenant.api_key))
    assert resp.status in (200, 204)


@pytest.mark.slow
async def test_keys_from_the_cli(tmp_path: Path) -> None:
    gw = gateway_env(tmp_path)
    code, out, err = await run_cli(gw, "tenants", "create", "Asker kommune")
    assert code == 0, err
    tenant_id = re.search(r"^tenant id:\s+(\S+)$", out, re.M).group(1)  # type: ignore[union-attr]
    code, out, err = await run_cli(
        gw, "keys", "create", "--tenant", tenant_id, "--scope", "events", "--scope", "status",
        "--name", "teacher app", "--expires-in-days", "90",
    )  # fmt: skip
    assert code == 0, err
    key_id = re.search(r"^key id:\s+(\S+)$", out, re.M).group(1)  # type: ignore[union-attr]
    api_key = re.search(r"^api key:\s+(\S+)$", out, re.M).group(1)  # type: ignore[union-attr]
    assert api_key.encode() not in stored_bytes(gw.db)
    code, listing, err = await run_cli(gw, "keys", "list", "--tenant", tenant_id)
    assert code == 0, err
    first, teacher = listing.splitlines()
    assert first.split("\t")[1:3] == ["active", "admin,directory,events,status,webhooks"]
    assert teacher.split("\t")[:3] == [key_id, "active", "events,status"]
    assert teacher.endswith("\tteacher app") and api_key not in listing
    code, out, err = await run_cli(gw, "keys", "revoke", "--tenant", tenant_id, key_id)
    assert code == 0, err
    code, listing, _ = await run_cli(gw, "keys", "list", "--tenant", tenant_id)
    assert listing.splitlines()[1].split("\t")[1] == "revoked"
    code, _, err = await run_cli(gw, "keys", "revoke", "--tenant", tenant_id, "key_nope")
    assert code == 2 and "no key with that id" in err
    code, _, err = await run_cli(gw, "keys", "list", "--tenant", "nobody")
    assert code == 2 and "unknown tenant" in err
    for days in ("0", "-5", "10000000"):  # an expired key, a traceback (overflow)
        code, _, err = await run_cli(
            gw, "keys", "create", "--tenant", tenant_id, "--scope", "events",
            "--expires-in-days", days,
        )  # fmt: skip
        assert code == 2 and "--expires-in-days must be 1 to 3660" in err, err
