"""Issue 12 over HTTP: ``GET /v1/webhooks/messages`` pages by (created_at, id). Messages
of one fan-out share one ``created_at``; a client following ``next_before`` and
``next_before_id`` lists every message once, and ``before_id`` without ``before`` is a
clear 422."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.clock import ManualClock
from gateway.models import Job, WebhookMessage
from gateway.store import Store
from tests.conftest import TenantCreds

AppClient = TestClient[web.Request, web.Application]
COUNT = 31


async def outbox(store: Store, tenant_id: str, at: datetime) -> list[str]:
    ids = [f"msg_{n:04d}" for n in range(COUNT)]
    messages = [
        WebhookMessage(
            id=i,
            tenant_id=tenant_id,
            endpoint_id="ep1",
            event_type="message.read",
            body="{}",
            next_attempt_at=at,
            created_at=at,
            updated_at=at,
        )
        for i in ids
    ]
    jobs = [
        Job(id=f"webhook_send:{i}", tenant_id=tenant_id, kind="webhook_send", ref=i, due_at=at)
        for i in ids
    ]
    cursor = await store.webhook_cursor()
    await store.enqueue_webhooks(cursor, cursor, messages, jobs, "webhook_fanout")
    return ids


async def test_following_the_cursor_lists_every_message_once(
    app_client: AppClient, store: Store, tenant: TenantCreds, clock: ManualClock
) -> None:
    ids = await outbox(store, tenant.tenant.id, clock.now())
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    seen: list[str] = []
    params = {"limit": "7"}
    for _ in range(COUNT):
        resp = await app_client.get("/v1/webhooks/messages", params=params, headers=headers)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        seen.extend(m["id"] for m in page["messages"])
        if page["next_before"] is None:
            break
        params = {
            "limit": "7",
            "before": page["next_before"],
            "before_id": page["next_before_id"],
        }
    assert seen == sorted(ids, reverse=True)


async def test_before_id_needs_before(app_client: AppClient, tenant: TenantCreds) -> None:
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    resp = await app_client.get(
        "/v1/webhooks/messages", params={"before_id": "msg_0001"}, headers=headers
    )
    assert resp.status == 422
    body = await resp.json()
    assert [e["loc"] for e in body["errors"]] == [["query", "before_id"]]
