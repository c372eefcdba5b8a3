"""Nothing a caller sends causes a 500 (issue 11): charsets, depth, long numbers, forms,
loose types; and no token reaches a log line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.app import create_app
from gateway.api.context import AppContext
from gateway.clock import ManualClock
from gateway.errors import StoreError
from gateway.logs import JsonFormatter
from gateway.settings import Settings
from gateway.store import Store
from tests.conftest import SECRET_KEY
from tests.test_unsubscribe import Seeded, seed, token_for

MALFORMED_FORMS = [
    ("multipart/form-data", b"garbage"),
    ("multipart/form-data; boundary=x", b"garbage"),
    ("multipart/form-data; boundary=x", b"--x\r\nbad header line\r\n\r\nv\r\n--x--\r\n"),
    (
        "multipart/form-data; boundary=x",
        b"--x\r\nContent-Disposition: form-data; name=csrf\r\n"
        b"Content-Type: text/plain; charset=nope\r\n\r\nv\r\n--x--\r\n",
    ),
    (
        "multipart/form-data; boundary=x",
        b"--x\r\nContent-Disposition: form-data; name=csrf\r\n"
        b"Content-Transfer-Encoding: nope\r\n\r\nv\r\n--x--\r\n",
    ),
    (
        "multipart/form-data; boundary=x",
        b"--x\r\nContent-Disposition: form-data; name=csrf\r\n\r\n\xff\xfe\r\n--x--\r\n",
    ),
    ("application/x-www-form-urlencoded; charset=nope", b"csrf=b"),
    ("application/x-www-form-urlencoded", b"\xff=\xfe"),
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def answer(resp: Any) -> dict[str, Any]:
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    return body


@pytest.mark.parametrize("path", ["/v1/events", "/v1/directory", "/v1/settings/escalation"])
async def test_deep_json_and_long_numbers_are_400(
    app_client: TestClient, tenant: Any, path: str
) -> None:
    headers = bearer(tenant.api_key)
    method = app_client.put if path.startswith("/v1/settings") else app_client.post
    deep = b'{"id": ' + nested(1000) + b"}"  # 1,000 deep in about 2 KB
    long_int = b'{"id": "e1", "type": "message.created", "n": ' + b"9" * 5000 + b"}"
    for body, kind in ((deep, "json_too_deep"), (long_int, "json_number")):
        resp = await method(path, data=body, headers=headers)
        assert resp.status == 400, (path, kind)
        assert (await answer(resp))["errors"][0]["type"] == kind
    resp = await method(path, data=b'{"x": NaN}', headers=headers)
    assert resp.status == 400


async def test_bodies_are_utf8_only(app_client: TestClient, tenant: Any, make_event: Any) -> None:
    headers = bearer(tenant.api_key)
    text = json.dumps(make_event())
    for raw, kind in (
        (text.encode("utf-16"), "bom"),
        (text.encode("utf-16-le"), None),  # no BOM: NUL bytes are no JSON
        (b"\xef\xbb\xbf" + text.encode(), "bom"),
        (text.encode("latin-1", "replace")[:-1] + b"\xe6}", "not_utf8"),
    ):
        resp = await app_client.post("/v1/events", data=raw, headers=headers)
        assert resp.status in (400, 422), kind
        if kind is not None:
            assert resp.status == 400
            assert (await answer(resp))["errors"][0]["type"] == kind
    declared = {**headers, "Content-Type": "application/json; charset=utf-16"}
    resp = await app_client.post("/v1/events", data=text.encode("utf-16"), headers=declared)
    assert resp.status == 415
    assert (await answer(resp))["error"] == "unsupported_media_type"


@pytest.mark.parametrize(("content_type", "body"), MALFORMED_FORMS)
async def test_malformed_forms_on_the_link_pages_are_400(
    app_client: TestClient,
    store: Store,
    clock: ManualClock,
    tenant: Any,
    directory: Any,
    content_type: str,
    body: bytes,
) -> None:
    seeded: Seeded = await seed(store, clock, tenant.tenant.id)
    token = token_for(seeded.email_id, clock)
    for path in (f"/r/{token}", f"/u/{token}"):
        resp = await app_client.post(path, data=body, headers={"Content-Type": content_type})
        assert resp.status == 400, path
        assert (await answer(resp))["error"] == "malformed_body"


@pytest.mark.parametrize(
    ("person", "loc"),
    [
        ({"birth_date": 0}, ["persons", 0, "birth_date"]),
        ({"birth_date": "2015-03-01T00:00:00"}, ["persons", 0, "birth_date"]),
        ({"consent_guardians": 1}, ["persons", 0, "consent_guardians"]),
        ({"given_name": 7}, ["persons", 0, "given_name"]),
    ],
)
async def test_no_silent_coercion(
    app_client: TestClient, tenant: Any, person: dict[str, Any], loc: list[Any]
) -> None:
    base = {"id": "c9", "role": "child", "given_name": "Kari", "birth_date": "2015-03-01"}
    batch = {"persons": [{**base, **person}]}
    resp = await app_client.post("/v1/directory", json=batch, headers=bearer(tenant.api_key))
    assert resp.status == 422
    assert [e["loc"] for e in (await answer(resp))["errors"]] == [loc]
    ok = await app_client.post(
        "/v1/directory", json={"persons": [base]}, headers=bearer(tenant.api_key)
    )
    assert ok.status == 200


async def test_an_escalation_minute_must_be_an_integer_not_true(
    app_client: TestClient, tenant: Any
) -> None:
    headers = bearer(tenant.api_key)
    for value in (True, "30", 1.5):
        body = {"after_minutes": {"general": value}}
        resp = await app_client.put("/v1/settings/escalation", json=body, headers=headers)
        assert resp.status == 422, value
    body = {"after_minutes": {"general": 30}}
    resp = await app_client.put("/v1/settings/escalation", json=body, headers=headers)
    assert resp.status == 200


async def test_an_unhandled_error_logs_the_route_template_not_the_token(
    settings: Settings, store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    ctx = AppContext(settings=settings, store=store, clock=clock, secret=SECRET_KEY.encode())
    app = create_app(ctx)
    app.router.add_post("/x/{token}", boom)
    secret = "SeCrEtToKeN0123456789abcdef"
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.ERROR):
            resp = await client.post(f"/x/{secret}?key={secret}")
    assert resp.status == 500
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert lines and all(secret not in line for line in lines)
    assert json.loads(lines[-1])["route"] == "/x/{token}"


async def test_a_store_that_will_not_answer_is_a_503_to_retry_not_a_500(
    settings: Settings, store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """E.g. Redis load_audience while devices keep registering: transient, so 503."""

    async def torn(request: web.Request) -> web.Response:
        raise StoreError("the directory kept changing while it was read; key t1:dirv")

    ctx = AppContext(settings=settings, store=store, clock=clock, secret=SECRET_KEY.encode())
    app = create_app(ctx)
    app.router.add_post("/x/{token}", torn)
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.WARNING):
            resp = await client.post("/x/abc")
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"] == "unavailable"
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert lines and all("t1:dirv" not in line for line in lines)


def test_the_documents_rules_match_the_apis() -> None:
    spec = json.loads(
        (Path(__file__).resolve().parents[1] / "gateway" / "openapi.json").read_text("utf-8")
    )
    schemas = spec["components"]["schemas"]
    audience = schemas["Audience"]
    assert {tuple(option["required"]) for option in audience["anyOf"]} == {
        ("children",), ("groups",), ("units",), ("guardians",), ("staff",)
    }  # fmt: skip
    assert all(
        option["properties"][option["required"][0]]["minItems"] == 1 for option in audience["anyOf"]
    )
    patch = schemas["WebhookEndpointPatch"]
    assert patch["minProperties"] == 1
    assert "null" not in json.dumps(patch)
    events = spec["paths"]["/v1/events"]["post"]["responses"]
    assert {"400", "413", "415", "422"} <= set(events)
