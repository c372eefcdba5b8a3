"""The access log and the HTTP, webhook, reach and process metrics."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.access import access_middleware
from gateway.api.app import create_app
from gateway.api.context import CTX
from gateway.auth import KEY_ID


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    keys = ("method", "route", "status", "duration_ms", "tenant_id", "key_id")
    return [
        {k: getattr(r, k) for k in keys if hasattr(r, k)}
        for r in caplog.records
        if r.name == "budbringer.access"
    ]


async def test_one_line_per_request_with_the_route_template_and_no_path_or_query(
    app_client: TestClient, tenant: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="budbringer.access")
    token = "SECRET-READ-TOKEN-abcdef"
    await app_client.get(f"/r/{token}?utm=guardian@example.no")
    resp = await app_client.get(
        "/v1/messages/msg-unknown?x=1", headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    assert resp.status == 404
    await app_client.get("/no/such/page")
    await app_client.get("/healthz")

    lines = access_lines(caplog)
    assert [(line["method"], line["route"]) for line in lines] == [
        ("GET", "/r/{token}"),
        ("GET", "/v1/messages/{id}"),
        ("GET", "(unmatched)"),
        ("GET", "/healthz"),
    ]
    assert [line["status"] for line in lines][1:] == [404, 404, 200]
    assert lines[1]["tenant_id"] == tenant.tenant.id
    assert "tenant_id" not in lines[0] and "tenant_id" not in lines[3]
    assert all(isinstance(line["duration_ms"], float) for line in lines)
    for secret in (token, "guardian@example.no", "msg-unknown", "utm", tenant.api_key):
        assert secret not in caplog.text


async def test_the_access_log_can_be_switched_off_and_metrics_still_count(
    app_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    settings = app_client.app[CTX].settings
    app_client.app[CTX].settings = settings.model_copy(update={"access_log": False})
    # the middleware reads the setting when the app is made: make one with it off
    async with TestClient(TestServer(create_app(app_client.app[CTX]))) as quiet:
        caplog.set_level(logging.INFO, logger="budbringer.access")
        await quiet.get("/healthz")
        assert access_lines(caplog) == []
        metrics = await (await quiet.get("/metrics")).text()
    assert 'budbringer_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics


async def test_metrics_have_http_webhook_reach_escalation_and_process_series(
    app_client: TestClient,
) -> None:
    await app_client.get("/r/some-token")
    metrics = await (await app_client.get("/metrics")).text()
    for series in (
        'budbringer_http_requests_total{method="GET",route="/r/{token}",status="404"}',
        "budbringer_http_request_duration_seconds_bucket",
        "budbringer_webhook_backlog 0.0",
        "# TYPE budbringer_webhook_attempts_total counter",
        "# TYPE budbringer_reached_total counter",
        "# TYPE budbringer_escalated_deliveries_total counter",
        "process_resident_memory_bytes",
        "python_info",
    ):
        assert series in metrics, series


async def test_an_api_key_id_set_by_authentication_is_logged(
    app_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(request: web.Request) -> web.Response:
        request[KEY_ID] = "key_7f3a"
        return web.json_response({})

    app = web.Application(middlewares=[access_middleware(True)])
    app.router.add_get("/v1/things/{id}", handler)
    async with TestClient(TestServer(app)) as client:
        caplog.set_level(logging.INFO, logger="budbringer.access")
        await client.get("/v1/things/42")
    [line] = access_lines(caplog)
    assert (line["route"], line["key_id"]) == ("/v1/things/{id}", "key_7f3a")
