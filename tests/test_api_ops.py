"""Operations endpoints: /healthz, /readyz, /metrics, /openapi.json and the link pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.api.context import CTX
from gateway.channel_health import ChannelHealth
from gateway.clock import ManualClock
from gateway.store import Store

ROOT_SPEC = Path(__file__).resolve().parents[1] / "gateway" / "openapi.json"


async def test_healthz(app_client: TestClient) -> None:
    resp = await app_client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_readyz_shows_a_stopped_channel_but_stays_ready(
    app_client: TestClient, clock: ManualClock
) -> None:
    resp = await app_client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ready"

    health = ChannelHealth(clock)
    health.watch(["email", "sms"])
    app_client.app[CTX].channel_health = health
    health.refused("sms", "twilio_20003", probe=False)
    resp = await app_client.get("/readyz")
    assert resp.status == 200  # intake (absence, email) goes on: alert on the channel state
    assert await resp.json() == {
        "status": "ready",
        "channels": {
            "email": {"state": "ok", "since": clock.now().isoformat(), "last_error": None},
            "sms": {
                "state": "stopped",
                "since": clock.now().isoformat(),
                "last_error": "twilio_20003",
            },
        },
    }
    metrics = await (await app_client.get("/metrics")).text()
    assert 'budbringer_channel_state{channel="sms",state="stopped"} 1.0' in metrics
    assert 'budbringer_channel_state{channel="sms",state="ok"} 0.0' in metrics


async def test_readyz_reports_a_closed_store(app_client: TestClient, store: Store) -> None:
    await store.close()
    try:
        resp = await app_client.get("/readyz")
        assert resp.status == 503
        assert "store_unavailable" in (await resp.json())["reasons"]
    finally:
        await store.open()


async def test_metrics_reads_queue_and_delivery_state_at_scrape_time(
    app_client: TestClient,
    tenant: Any,
    clock: ManualClock,
    directory: Any,
    make_event: Any,
) -> None:
    resp = await app_client.post(
        "/v1/events", json=make_event(), headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    assert resp.status == 202
    clock.advance(42)
    resp = await app_client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert "budbringer_events_total" in text
    assert 'budbringer_queue_depth{kind="plan"} 1.0' in text
    assert 'budbringer_queue_oldest_age_seconds{kind="plan"} 42.0' in text


async def test_openapi_is_served(app_client: TestClient) -> None:
    resp = await app_client.get("/openapi.json")
    assert resp.status == 200
    assert await resp.json() == json.loads(ROOT_SPEC.read_text(encoding="utf-8"))


async def test_link_pages_are_norwegian_html(app_client: TestClient) -> None:
    # Without a parent session (gateway/api/parent_pages.py), they say how to get one.
    for path in ("/preferences", "/app", "/app/messages/m1"):
        resp = await app_client.get(path, allow_redirects=False)
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
        assert '<html lang="nb" dir="ltr">' in page
        assert "<main>" in page and "<h1>" in page and "<title>" in page
        assert "Åpne lenken i meldingen" in page
        assert "Content-Security-Policy" in resp.headers
